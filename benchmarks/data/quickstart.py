"""Quick-start datasets: scripted controllers on Gymnasium MuJoCo, stored as Minari datasets.

``bench data make quickstart`` writes ``quickstart/{invertedpendulum,reacher}/{expert,medium,mixed}-v0``
into the Minari root. Each is collected in the environment it is evaluated in (``InvertedPendulum-v5``,
``Reacher-v5``, their default time limits) by scripted behaviours:

* ``expert``: the good controller (LQR balance; inverse kinematics + joint PD) with a little Gaussian
  action noise, normalised return ~96-100;
* ``medium``: a *systematically* wrong controller with moderate noise on top, not the expert plus
  zero-mean noise (whose noise a cloning policy would simply average away):

  - pendulum: the LQR with a wrong-signed cart-position gain (``DetunedPendulum``). The pole stays up,
    but the cart drifts away from the centre ever faster until it hits the end of its rail and the
    pole falls, after ~125 of 1000 steps (normalised ~12);
  - reacher: the IK + PD controller aiming at the target's mirror image through the shoulder, with a
    4x too stiff gain whose torques saturate (normalised ~45 without noise, ~42 with it);

* ``mixed``: mostly medium episodes, a minority of expert ones and a few uniform-random ones.

What ``mixed`` is for: separating "imitates the average behaviour" from "picks the best actions in the
data". Behaviour cloning regresses onto the mean action at each state, so on data that is mostly
medium it inherits the medium's systematic error (measured: ~18 on the pendulum, whose cloned policy
drifts off the rail like the medium, ~71 on the reacher, against ~96-100 for the expert). An offline-RL
agent that weights the data's actions by their value can recover the expert behaviour from the same
data (measured: IQL 100 and ~85; see ``RECIPES`` for the settings). The proportions, noise levels and the measurements behind them are
given with ``RECIPES``.

Reference scores are measured here, over 100 seeded episodes each: ``ref_min_score`` is the mean
return of uniform-random actions, ``ref_max_score`` that of the noise-free expert controller. Everything
is seeded (episode ``j`` of a part resets with ``seed + j``; its noise comes from
``np.random.default_rng(seed)``), so regenerating gives identical data on the same software stack.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import gymnasium as gym
import mujoco
import numpy as np

from benchmarks.data.minari_store import (
    DatasetInfo,
    Episodes,
    dataset_exists,
    dataset_lock,
    read_info,
    write_dataset,
)
from benchmarks.tasks import QUICKSTART_ENVS, QUICKSTART_LEVELS

REFERENCE_EPISODES = 100
REFERENCE_SEED = 0  # reference episodes reset with seeds 0..99, which include the evaluation protocol's seeds
BATCH = 25  # environments stepped in lockstep; the controller sees one [BATCH, obs_dim] array per step


def dataset_id_for(env: str, level: str) -> str:
    return f"quickstart/{env}/{level}-v0"


# ---------------------------------------------------------------------------------------------
# Controllers: [n, obs_dim] observations -> [n, act_dim] actions in the environment's units


class Controller(Protocol):
    def __call__(self, obs: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class PendulumLQR:
    """Balance controller for ``InvertedPendulum-v5``: ``a = -K s``, ``s = obs = [x, theta, xdot, thetadot]``.

    ``K`` is the discrete-time LQR gain for ``Q = diag(q)``, ``R = r`` on the environment's own
    MuJoCo model linearised at the upright rest state: ``A = ds'/ds``, ``B = ds'/da`` by central
    finite differences of one environment step (``frame_skip`` RK4 steps of ``dt = 0.02 s``,
    action in the actuator's units, ``ctrlrange [-3, 3]``, gear 100), then the Riccati recursion
    iterated to its fixed point. With the defaults, ``K ~ [-0.741, -6.02, -0.868, -1.01]``.
    """

    gain: np.ndarray  # [4]
    q: tuple[float, ...]
    r: float

    @classmethod
    def from_env(
        cls, env: gym.Env, q: tuple[float, ...] = (1.0, 1.0, 0.1, 0.1), r: float = 1.0
    ) -> PendulumLQR:
        a, b = _linearise(env.unwrapped.model, env.unwrapped.frame_skip, eps=1e-6)
        gain = _dlqr(a, b, np.diag(q), np.array([[r]]))[0]
        # rounded so that last-bit differences in the linearisation cannot change the data
        return cls(gain=np.round(gain, 6), q=q, r=r)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return -(obs @ self.gain)[:, None]

    def detuned(self, position_gain: float) -> DetunedPendulum:
        """The same law with the cart-position gain ``K[0]`` replaced by ``position_gain``."""
        gain = self.gain.copy()
        gain[0] = position_gain
        return DetunedPendulum(gain=gain, lqr_gain=self.gain)

    def describe(self) -> dict[str, Any]:
        return {
            "name": "LQR balance controller",
            "law": "a = -K @ [x, theta, xdot, thetadot]",
            "K": self.gain.tolist(),
            "Q": list(self.q),
            "R": self.r,
            "derivation": "discrete LQR on the env's MuJoCo model, linearised at upright rest by central "
            "finite differences (eps 1e-6) of one env step",
        }


@dataclasses.dataclass(frozen=True)
class DetunedPendulum:
    """The LQR law ``a = -K s`` with a wrong-signed cart-position gain: the medium pendulum behaviour.

    The LQR's position gain is negative (``K[0] ~ -0.74``): to bring the cart back to the centre it
    first pushes it *outwards*, which tilts the pole inwards, and then follows the pole. A positive
    ``K[0]`` pushes the cart straight back towards the centre instead, the intuitive but wrong way
    round for a cart-pole: the pole is still balanced (the angle and rate gains are the LQR's), but
    the centring mode becomes unstable, the cart drifts away from the centre faster and faster, hits
    the end of its rail (``|x| = 1``) and the pole falls. With ``K[0] = +1.0`` that happens after
    ~160 steps without noise (130-270, depending on the initial state), ~125 with the medium noise.

    A blend ``w K_lqr + (1 - w) K`` of the two laws only balances (linearised) for ``w`` above ~0.57,
    where the averaged ``K[0]`` turns negative, so a policy that averages the actions of data made
    mostly of this behaviour drifts off too.
    """

    gain: np.ndarray  # [4]
    lqr_gain: np.ndarray  # [4], the expert's

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return -(obs @ self.gain)[:, None]

    def describe(self) -> dict[str, Any]:
        return {
            "name": "detuned LQR balance controller",
            "law": "a = -K @ [x, theta, xdot, thetadot]",
            "K": self.gain.tolist(),
            "detuning": "the LQR gain with its cart-position entry K[0] replaced by a positive one: the cart is "
            "pushed straight back to the centre, which destabilises the centring mode; the cart drifts to the "
            "end of the rail and the pole falls",
            "lqr_K": self.lqr_gain.tolist(),
        }


def _linearise(model: mujoco.MjModel, frame_skip: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``A``, ``B`` of ``s' = f(s, a)`` at ``s = 0``, ``a = 0``, with ``s = [qpos, qvel]`` and one env step."""
    data = mujoco.MjData(model)
    nq, nv, nu = model.nq, model.nv, model.nu

    def step(s: np.ndarray, a: np.ndarray) -> np.ndarray:
        mujoco.mj_resetData(model, data)
        data.qpos[:], data.qvel[:], data.ctrl[:] = s[:nq], s[nq:], a
        mujoco.mj_step(model, data, nstep=frame_skip)
        return np.concatenate([data.qpos, data.qvel])

    s0, a0 = np.zeros(nq + nv), np.zeros(nu)
    ds, da = eps * np.eye(nq + nv), eps * np.eye(nu)
    a = np.stack([(step(s0 + d, a0) - step(s0 - d, a0)) / (2 * eps) for d in ds], axis=1)
    b = np.stack([(step(s0, a0 + d) - step(s0, a0 - d)) / (2 * eps) for d in da], axis=1)
    return a, b


def _dlqr(a: np.ndarray, b: np.ndarray, q: np.ndarray, r: np.ndarray, iters: int = 10_000) -> np.ndarray:
    """Gain ``K`` of ``u = -K s`` minimising ``sum s'Qs + u'Ru``: Riccati recursion to its fixed point."""
    p = q
    for _ in range(iters):
        k = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        p_next = q + a.T @ p @ (a - b @ k)
        if np.allclose(p_next, p, rtol=1e-12, atol=1e-12):
            break
        p = p_next
    if np.abs(np.linalg.eigvals(a - b @ k)).max() >= 1:
        raise RuntimeError("LQR design for the quick-start pendulum did not give a stable closed loop")
    return k


@dataclasses.dataclass(frozen=True)
class ReacherIKPD:
    """Reaching controller for ``Reacher-v5``: analytic 2-link inverse kinematics + joint PD.

    Observation (Gymnasium ``reacher_v5.py``): ``[cos q0, cos q1, sin q0, sin q1, target_x, target_y,
    qdot0, qdot1, fingertip - target (x, y)]``. Link lengths come from ``reacher.xml`` (``body1`` at
    ``L1 = 0.1`` from the shoulder, ``fingertip`` at ``L2 = 0.11`` from the elbow; read from the model).
    For target ``p``: elbow ``q1* = s * arccos((|p|^2 - L1^2 - L2^2) / (2 L1 L2))`` with ``s`` the sign
    of the current elbow angle, shoulder ``q0* = atan2(p_y, p_x) - atan2(L2 sin q1*, L1 + L2 cos q1*)``;
    torque ``a = kp * wrap(q* - q) - kd * qdot`` (action 1 = 200 N m through the gear). ``kp = 0.25``,
    ``kd = 0.05`` are the best of a grid search (kp in 0.1..4, kd in 0.02..0.2) on mean return over
    100 episodes, and again on 100 held-out ones: about -3.9, against about -43 for random actions.

    ``mirrored = True`` aims at ``-p``, the target's mirror image through the shoulder, instead: with
    ``kp = 1.0`` this is the medium reacher behaviour (see ``RECIPES``).
    """

    link1: float
    link2: float
    kp: float = 0.25
    kd: float = 0.05
    mirrored: bool = False  # aim at -target instead of target

    @classmethod
    def from_env(cls, env: gym.Env) -> ReacherIKPD:
        model = env.unwrapped.model
        return cls(link1=float(model.body("body1").pos[0]), link2=float(model.body("fingertip").pos[0]))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        l1, l2 = self.link1, self.link2
        q = np.arctan2(obs[:, 2:4], obs[:, 0:2])
        px, py = (-obs[:, 4], -obs[:, 5]) if self.mirrored else (obs[:, 4], obs[:, 5])
        cos_elbow = np.clip((px**2 + py**2 - l1**2 - l2**2) / (2 * l1 * l2), -1.0, 1.0)
        elbow = np.where(q[:, 1] >= 0, 1.0, -1.0) * np.arccos(cos_elbow)
        shoulder = np.arctan2(py, px) - np.arctan2(l2 * np.sin(elbow), l1 + l2 * np.cos(elbow))
        error = (np.stack([shoulder, elbow], axis=1) - q + np.pi) % (2 * np.pi) - np.pi
        return self.kp * error - self.kd * obs[:, 6:8]

    def describe(self) -> dict[str, Any]:
        return {
            "name": "2-link inverse kinematics + joint PD"
            + (", aiming at the target's mirror image" if self.mirrored else ""),
            "law": "a = kp * wrap(q_target - q) - kd * qdot, q_target by analytic IK (elbow keeps its sign)",
            "kp": self.kp,
            "kd": self.kd,
            "link_lengths": [self.link1, self.link2],
            "aims_at": "-target (mirror image through the shoulder)" if self.mirrored else "target",
        }


# ---------------------------------------------------------------------------------------------
# Behaviours and rollouts


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """``a = clip(controller(o) + noise_std * h * N(0, I), low, high)``, ``h`` the action box's half-width;
    without a controller, ``a ~ U(low, high)``."""

    controller: Controller | None
    noise_std: float = 0.0

    def act(self, obs: np.ndarray, rng: np.random.Generator, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        shape = (len(obs), len(low))
        if self.controller is None:
            return rng.uniform(low, high, shape)
        noise = self.noise_std * (high - low) / 2 * rng.standard_normal(shape)
        return np.clip(self.controller(obs) + noise, low, high)

    def name(self) -> str:
        return "uniform random actions" if self.controller is None else self.controller.describe()["name"]

    def describe(self) -> dict[str, Any]:
        if self.controller is None:
            return {"controller": "uniform random over the action box"}
        return {"controller": self.controller.describe(), "gaussian_noise_std_per_half_range": self.noise_std}


def rollout(envs: Sequence[gym.Env], behaviour: Behaviour, seeds: Sequence[int], rng: np.random.Generator) -> Episodes:
    """One episode per seed (``env.reset(seed=...)``), ``len(envs)`` at a time in lockstep, until each
    terminates or is truncated; flags and rewards stored exactly as the environment returned them."""
    space = envs[0].action_space
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    parts = []
    for start in range(0, len(seeds), len(envs)):
        chunk = seeds[start : start + len(envs)]
        obs = [[env.reset(seed=int(seed))[0]] for env, seed in zip(envs, chunk)]
        steps: list[list[tuple[np.ndarray, float, bool, bool]]] = [[] for _ in chunk]
        active = list(range(len(chunk)))
        while active:
            actions = behaviour.act(np.stack([obs[i][-1] for i in active]), rng, low, high).astype(space.dtype)
            still = []
            for i, action in zip(active, actions):
                o, reward, terminated, truncated, _ = envs[i].step(action)
                obs[i].append(o)
                steps[i].append((action, float(reward), bool(terminated), bool(truncated)))
                if not (terminated or truncated):
                    still.append(i)
            active = still
        for o, s in zip(obs, steps):
            actions_, rewards, terminations, truncations = zip(*s)
            parts.append(
                Episodes(
                    observations=np.stack(o),
                    actions=np.stack(actions_),
                    rewards=np.array(rewards),
                    terminations=np.array(terminations),
                    truncations=np.array(truncations),
                    lengths=np.array([len(s)]),
                )
            )
    return Episodes.concatenate(parts)


# ---------------------------------------------------------------------------------------------
# Recipes


@dataclasses.dataclass(frozen=True)
class Part:
    """``episodes`` episodes of one behaviour; resets with ``seed + j``, noise from ``default_rng(seed)``."""

    behaviour: str  # "expert", "medium" or "random"
    episodes: int
    seed: int


@dataclasses.dataclass(frozen=True)
class Recipe:
    env_id: str
    make_controller: Callable[[gym.Env], Controller]  # the expert controller
    make_medium: Callable[[Controller], Controller]  # the medium controller, from the expert's
    noise: dict[str, float]  # behaviour -> Gaussian noise std per half-range
    levels: dict[str, tuple[Part, ...]]

    def behaviours(self, controller: Controller) -> dict[str, Behaviour]:
        controllers = {"expert": controller, "medium": self.make_medium(controller)}
        return {
            **{name: Behaviour(controllers[name], std) for name, std in self.noise.items()},
            "random": Behaviour(None),
        }


# Noise levels (std per half-range of the action box):
# - pendulum: the LQR with noise 0.1 never drops the pole (0.2 would, after ~540 of 1000 steps); the
#   detuned medium law drops it after ~160 steps without noise, ~125 with 0.15. The medium noise gives
#   an RL agent actions to compare around the medium's states: in the tuning runs, with medium noise
#   0.05-0.1 IQL found the balancing behaviour in only some seeds, with 0.15-0.2 in all of them.
# - reacher: 0.1 costs the expert ~4 points; the medium's shortfall (~58 points) is nearly all
#   systematic (~55 without noise): the wrong aim and the over-stiff gain's saturating torques.
#
# Mixed proportions. A behaviour-cloning policy regresses onto the mean action at each state, so on
# data that is mostly medium it inherits the medium's systematic error (noise averages out, a bias does
# not); an RL agent that weights actions by their value can pick the expert (and the better noisy)
# actions out of the same data. Measured while tuning, with the suite's BC (3000 steps) and IQL (5000
# steps), seeds 0-2, final evaluation (with today's quick-start configs, BC 2000 steps and IQL 2000 on
# the reacher / 5000 on the pendulum: pendulum BC 31.7, IQL 100.0; reacher BC 72.7, IQL 82.2):
# - pendulum: 50 medium + 5 expert + 2 random episodes, ~11k transitions, 44% of them expert (an expert
#   episode lasts 1000 steps, a medium one ~125). Data average ~19, BC ~18 (its policy drifts off the
#   rail like the medium), IQL 100. The data average cannot go much higher: it only rises with the
#   share of (long) expert episodes, and with 6 expert per 25-30 medium episodes (average 26-28,
#   55-65% expert transitions) BC recovered the expert in 2 or 3 of 3 seeds. The 2 random episodes
#   (~5 steps each) add quick failures.
# - reacher: 300 medium + 75 expert + 125 random episodes, 25k transitions. Data average ~40, BC ~71
#   (above the medium's ~42, well below the expert's ~96), IQL ~85.
RECIPES: dict[str, Recipe] = {
    "invertedpendulum": Recipe(
        env_id="InvertedPendulum-v5",
        make_controller=PendulumLQR.from_env,
        make_medium=lambda lqr: lqr.detuned(position_gain=1.0),
        noise={"expert": 0.1, "medium": 0.15},
        levels={
            "expert": (Part("expert", 20, 10_000),),
            "medium": (Part("medium", 100, 20_000),),
            "mixed": (Part("medium", 50, 30_000), Part("expert", 5, 31_000), Part("random", 2, 32_000)),
        },
    ),
    "reacher": Recipe(
        env_id="Reacher-v5",
        make_controller=ReacherIKPD.from_env,
        make_medium=lambda ik: dataclasses.replace(ik, kp=1.0, mirrored=True),
        noise={"expert": 0.1, "medium": 0.1},
        levels={
            "expert": (Part("expert", 400, 10_000),),
            "medium": (Part("medium", 400, 20_000),),
            "mixed": (Part("medium", 300, 30_000), Part("expert", 75, 31_000), Part("random", 125, 32_000)),
        },
    ),
}
assert set(RECIPES) == set(QUICKSTART_ENVS)
assert all(set(recipe.levels) == set(QUICKSTART_LEVELS) for recipe in RECIPES.values())


def _reference(envs: Sequence[gym.Env], behaviour: Behaviour) -> float:
    seeds = range(REFERENCE_SEED, REFERENCE_SEED + REFERENCE_EPISODES)
    return float(rollout(envs, behaviour, seeds, np.random.default_rng(REFERENCE_SEED)).returns().mean())


def make_quickstart(force: bool = False, progress: Callable[[str], None] | None = None) -> list[DatasetInfo]:
    """Generate the six quick-start datasets (existing ones are kept unless ``force``)."""
    say = progress or (lambda _: None)
    infos = []
    for env_name, recipe in RECIPES.items():
        # one generator per environment at a time; the per-dataset locks are taken by write_dataset
        with dataset_lock(f"quickstart/{env_name}.generate"):
            todo = [lvl for lvl in recipe.levels if force or not dataset_exists(dataset_id_for(env_name, lvl))]
            for level in recipe.levels:
                if level not in todo:
                    say(f"{dataset_id_for(env_name, level)}: exists, kept (--force rebuilds it)")
            made = _make_env_datasets(env_name, recipe, todo, force, say) if todo else {}
            infos += [made[lvl] if lvl in made else read_info(dataset_id_for(env_name, lvl)) for lvl in recipe.levels]
    return infos


def _make_env_datasets(
    env_name: str, recipe: Recipe, levels: list[str], force: bool, say: Callable[[str], None]
) -> dict[str, DatasetInfo]:
    envs = [gym.make(recipe.env_id) for _ in range(BATCH)]
    try:
        controller = recipe.make_controller(envs[0])
        behaviours = recipe.behaviours(controller)
        ref_min = _reference(envs, behaviours["random"])
        ref_max = _reference(envs, Behaviour(controller))
        say(f"{recipe.env_id}: reference returns {ref_min:.2f} (random) / {ref_max:.2f} (expert controller)")
        reference = {
            "episodes": REFERENCE_EPISODES,
            "reset_seeds": [REFERENCE_SEED, REFERENCE_SEED + REFERENCE_EPISODES - 1],
            "rng_seed": REFERENCE_SEED,
            "ref_min_score": {"value": ref_min, "behaviour": "uniform random actions, mean return"},
            "ref_max_score": {"value": ref_max, "behaviour": "noise-free expert controller, mean return"},
        }
        normalise = lambda r: 100.0 * (r - ref_min) / (ref_max - ref_min)  # noqa: E731
        infos = {}
        for level in levels:
            dataset_id = dataset_id_for(env_name, level)
            parts, records = [], []
            names = [behaviours[part.behaviour].name() for part in recipe.levels[level]]
            for part in recipe.levels[level]:
                seeds = range(part.seed, part.seed + part.episodes)
                episodes = rollout(envs, behaviours[part.behaviour], seeds, np.random.default_rng(part.seed))
                parts.append(episodes)
                records.append(
                    {
                        **dataclasses.asdict(part),
                        "reset_seeds": [part.seed, part.seed + part.episodes - 1],
                        **behaviours[part.behaviour].describe(),
                        "transitions": int(episodes.lengths.sum()),
                        "normalized_return_mean": float(normalise(episodes.returns().mean())),
                    }
                )
            episodes = Episodes.concatenate(parts)
            extra = {
                "generator": "benchmarks.data.quickstart",
                "env_id": recipe.env_id,
                "level": level,
                "parts": records,
                "normalized_return_mean": float(normalise(episodes.returns().mean())),
                "reference": reference,
                "lockstep_envs": BATCH,
                "versions": {pkg: importlib.metadata.version(pkg) for pkg in ("gymnasium", "mujoco", "numpy")},
            }
            summary = ", ".join(f"{p.episodes} {p.behaviour}" for p in recipe.levels[level])
            infos[level] = write_dataset(
                dataset_id,
                episodes,
                env_id=recipe.env_id,
                ref_min_score=ref_min,
                ref_max_score=ref_max,
                description=f"Quick-start {level} data on {recipe.env_id} from scripted behaviours ({summary} "
                f"episodes); generated by benchmarks/data/quickstart.py, see the 'bench' metadata.",
                algorithm_name=f"scripted {level}: " + " + ".join(dict.fromkeys(names)),
                extra=extra,
                overwrite=force,
            )
            say(
                f"{dataset_id}: {episodes.num_episodes} episodes, {int(episodes.lengths.sum())} transitions, "
                f"normalised return {extra['normalized_return_mean']:.1f}"
            )
        return infos
    finally:
        for env in envs:
            env.close()
