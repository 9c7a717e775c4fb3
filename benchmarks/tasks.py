"""Tasks and suites: what data a cell trains on, where it is evaluated, and how it is scored.

A :class:`Task` names its data source (original D4RL file, Minari dataset or quick-start data),
its evaluation environment, the reference returns that normalise its score, its reward
convention, episode length and evaluation protocol. Where the data is a Minari dataset, the
evaluation environment and reference scores come from the dataset's own metadata.

D4RL reference scores: Farama-Foundation/D4RL ``d4rl/infos.py`` (REF_MIN_SCORE/REF_MAX_SCORE; every
Gym-MuJoCo dataset of a robot shares its robot's pair). D4RL's environments, where the papers evaluate,
wrap gym's mujoco-py ``*-v2`` classes (``d4rl/gym_mujoco/gym_envs.py``: ``gym.envs.mujoco.HopperEnv``
in ``NormalizedBoxEnv``); we evaluate on Gymnasium's ``*-v4``, the same MuJoCo models, observations
and reward functions on the ``mujoco`` bindings (mujoco-py does not install on current Python).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np

from benchmarks.errors import ConfigError

Source = Literal["d4rl", "minari", "quickstart"]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a cell is evaluated and which score it reports; the same for every agent on a task.

    Every evaluation is stored, so any score rule can be recomputed afterwards; ``score`` is the
    one ``bench run`` prints and ``final.json`` reports.
    """

    eval_interval: int  # gradient steps between evaluations (and one at the last step)
    eval_episodes: int  # episodes per seed per evaluation
    env_seed: int = 0  # episode j of every evaluation resets with seed env_seed + j, for every seed and agent
    score: Literal["final", "last_k", "best"] = "final"  # last evaluation / mean of the last k / best
    last_k: int = 10
    best_interval: int | None = None  # "best" picks among evaluations at multiples of this step count
    # (and the last one), the grid a paper's model selection saw; None: among every evaluation

    def env_seeds(self) -> list[int]:
        return [self.env_seed + j for j in range(self.eval_episodes)]


def on_best_grid(steps: np.ndarray, best_interval: int | None) -> np.ndarray:
    """Which of one run's evaluations, at ``steps``, the ``best`` score picks from: those at multiples
    of ``best_interval`` and the last one (all of them for None)."""
    steps = np.asarray(steps)
    if best_interval is None:
        return np.ones(steps.shape, bool)
    return (steps % best_interval == 0) | (steps == steps.max())


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    source: Source
    dataset_id: str  # where the transitions live in the Minari root
    family: str  # selects per-family hyperparameters: "mujoco", "antmaze", "kitchen", "adroit", "quickstart"
    protocol: Protocol
    env_id: str | None = None  # evaluation environment; None: the dataset's own (Minari metadata)
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    ref_min_score: float | None = None  # None: the dataset's own reference scores
    ref_max_score: float | None = None
    reward: Literal["dense", "sparse"] = "dense"
    max_episode_steps: int | None = None  # None: the environment's own limit
    comparable_to_published: bool = False  # only the original D4RL data matches the papers' tables
    d4rl_file: str | None = None  # original file name, for import and the download hint
    notes: str = ""


# ---------------------------------------------------------------------------------------------
# D4RL Gym-MuJoCo (the data every paper in this suite reports on)

D4RL_REFERENCE = {  # robot: (REF_MIN_SCORE, REF_MAX_SCORE) from d4rl/infos.py
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
}
D4RL_ENVS = {"halfcheetah": "HalfCheetah-v4", "hopper": "Hopper-v4", "walker2d": "Walker2d-v4"}
D4RL_LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert", "full-replay")
D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{file}"

# Evaluation of D4RL locomotion: 10 episodes (IQL train_offline.py, DQL/DTQL/CPQL main.py for -v2
# tasks) every 10k steps (between IQL's 5k and DQL's 50k), the final evaluation reported. The "best"
# score (DQL's online model selection) picks among the evaluations every 50k steps only, the ones DQL's
# main.py makes (eval_freq 50 epochs x 1000 steps): the best of 200 noisy 10-episode means would be
# biased upwards against the best of DQL's 40.
D4RL_LOCOMOTION_PROTOCOL = Protocol(eval_interval=10_000, eval_episodes=10, best_interval=50_000)


def d4rl_file_name(task_name: str) -> str:
    """``hopper-medium-replay-v2`` -> ``hopper_medium_replay-v2.hdf5`` (D4RL's download name)."""
    stem, version = task_name.rsplit("-", 1)
    robot, level = stem.split("-", 1)
    return f"{robot}_{level.replace('-', '_')}-{version}.hdf5"


def _d4rl_task(robot: str, level: str) -> Task:
    name = f"{robot}-{level}-v2"
    ref_min, ref_max = D4RL_REFERENCE[robot]
    return Task(
        name=name,
        source="d4rl",
        dataset_id=f"d4rl-hdf5/{name}",
        family="mujoco",
        protocol=D4RL_LOCOMOTION_PROTOCOL,
        env_id=D4RL_ENVS[robot],
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        max_episode_steps=1000,
        comparable_to_published=True,
        d4rl_file=d4rl_file_name(name),
        notes="original D4RL HDF5 (import with `bench data import-d4rl`); evaluated on Gymnasium MuJoCo v4",
    )


# ---------------------------------------------------------------------------------------------
# Minari's MuJoCo datasets (Gymnasium v5 environments, SB3 policies): new data, own reference scores

MINARI_MUJOCO_PROTOCOL = Protocol(eval_interval=10_000, eval_episodes=10)


def _dataset_task(dataset_id: str, source: Source, family: str, protocol: Protocol, notes: str) -> Task:
    """A task named by its Minari dataset id; environment and reference scores from the dataset."""
    return Task(name=dataset_id, source=source, dataset_id=dataset_id, family=family, protocol=protocol, notes=notes)


def _minari_task(robot: str, level: str) -> Task:
    notes = "Minari data (`bench data download`); not comparable with published D4RL numbers"
    return _dataset_task(f"mujoco/{robot}/{level}-v0", "minari", "mujoco", MINARI_MUJOCO_PROTOCOL, notes)


# ---------------------------------------------------------------------------------------------
# Minari's AntMaze datasets (`D4RL/antmaze/<maze>-v1`, regenerated in Gymnasium-Robotics mazes): sparse
# reward, goal-conditioned Dict observations (flattened by the loader), their own evaluation spec and
# reference scores; 100 evaluation episodes, as in every AntMaze protocol here (DQL/CPQL main.py, CORL),
# every 50k steps (CORL). Other AntMaze datasets run ad hoc under the same protocol.

ANTMAZE_PROTOCOL = Protocol(eval_interval=50_000, eval_episodes=100)
ANTMAZE_MAZES = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")


def _antmaze_task(dataset_id: str, notes: str) -> Task:
    return dataclasses.replace(_dataset_task(dataset_id, "minari", "antmaze", ANTMAZE_PROTOCOL, notes), reward="sparse")


# ---------------------------------------------------------------------------------------------
# Kitchen and Adroit datasets run ad hoc: 100 evaluation episodes (DQL/DTQL main.py: `10 if 'v2' in env_name
# else 100`, i.e. 100 for kitchen-*-v0 and pen-*-v1), every 50k steps (their eval_freq 50 epochs x 1000 steps).
MANIPULATION_PROTOCOL = Protocol(eval_interval=50_000, eval_episodes=100)

# ---------------------------------------------------------------------------------------------
# Quick-start data generated here by scripted controllers (benchmarks/data/quickstart.py)

QUICKSTART_ENVS = ("invertedpendulum", "reacher")
QUICKSTART_LEVELS = ("expert", "medium", "mixed")
QUICKSTART_PROTOCOL = Protocol(eval_interval=1_000, eval_episodes=10)


def _quickstart_task(env: str, level: str) -> Task:
    notes = "generated by `bench data make quickstart` on Gymnasium MuJoCo; for tests and smoke runs"
    return _dataset_task(f"quickstart/{env}/{level}-v0", "quickstart", "quickstart", QUICKSTART_PROTOCOL, notes)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        *(_d4rl_task(robot, level) for robot in D4RL_REFERENCE for level in D4RL_LEVELS),
        *(_minari_task(robot, level) for robot in D4RL_REFERENCE for level in ("simple", "medium", "expert")),
        *(_antmaze_task(f"D4RL/antmaze/{maze}-v1", "Minari's regenerated AntMaze (`bench data download`); not "
                        "comparable with published D4RL AntMaze numbers") for maze in ANTMAZE_MAZES),
        *(_quickstart_task(env, level) for env in QUICKSTART_ENVS for level in QUICKSTART_LEVELS),
    )
}

SUITES: dict[str, tuple[str, ...]] = {
    "d4rl-locomotion": tuple(
        f"{robot}-{level}-v2" for robot in D4RL_REFERENCE for level in ("medium", "medium-replay", "medium-expert")
    ),
    "minari-mujoco": tuple(
        f"mujoco/{robot}/{level}-v0" for robot in D4RL_REFERENCE for level in ("simple", "medium", "expert")
    ),
    "minari-antmaze": tuple(f"D4RL/antmaze/{maze}-v1" for maze in ANTMAZE_MAZES),
    # the README's main job: every agent in a few CPU-minutes (the pendulum's long good episodes and
    # slow value propagation make its cells several times dearer)
    "quickstart": ("quickstart/reacher/mixed-v0",),
    "quickstart-all": tuple(f"quickstart/{env}/mixed-v0" for env in QUICKSTART_ENVS),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(
            f"unknown task {name!r}", "`bench list tasks` shows them; any local Minari dataset runs with --dataset ID"
        ) from None


def get_suite(name: str) -> list[Task]:
    try:
        return [TASKS[t] for t in SUITES[name]]
    except KeyError:
        raise ConfigError(f"unknown suite {name!r}", f"known suites: {', '.join(SUITES)}") from None


def family_of_dataset(dataset_id: str) -> str:
    """Hyperparameter family of an ad-hoc Minari dataset, from its id."""
    lowered = dataset_id.lower()
    for key, family in (("antmaze", "antmaze"), ("kitchen", "kitchen"), ("quickstart/", "quickstart")):
        if key in lowered:
            return family
    if any(hand in lowered for hand in ("/pen/", "/door/", "/hammer/", "/relocate/")):
        return "adroit"
    return "mujoco"


def task_for_dataset(dataset_id: str) -> Task:
    """An ad-hoc task for any local Minari dataset: environment and reference scores from its metadata."""
    if dataset_id in TASKS:
        return TASKS[dataset_id]
    family = family_of_dataset(dataset_id)
    if family == "antmaze":
        return _antmaze_task(dataset_id, "ad-hoc Minari dataset")
    protocol = {"quickstart": QUICKSTART_PROTOCOL, "kitchen": MANIPULATION_PROTOCOL,
                "adroit": MANIPULATION_PROTOCOL}.get(family, MINARI_MUJOCO_PROTOCOL)
    return _dataset_task(dataset_id, "minari", family, protocol, "ad-hoc Minari dataset")
