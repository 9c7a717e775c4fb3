"""What every agent shares: the data it learns from, its random streams, its config and its shape.

An agent is pure PyTorch. It is built from ``(obs_dim, act_dim, config, seeds, device)`` and
trains all its seeds at once: every network carries a leading seed dimension, losses are per-seed
means summed over seeds (so seeds never share a gradient), and every random number comes from a
per-seed :class:`SeedStreams`, so that seed ``k`` in a group draws exactly what seed ``k`` run
alone would draw.

Actions live in the normalised box ``[-1, 1]^act_dim`` (the harness maps the environment's box
onto it), as in the D4RL code of every agent here (``max_action = 1``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import typing
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn


@dataclasses.dataclass
class Batch:
    """One minibatch per seed: every tensor is ``[n_seeds, batch_size, ...]``."""

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    next_observations: Tensor
    terminals: Tensor  # 1.0 where the environment terminated (not at time limits)


@dataclasses.dataclass
class Transitions:
    """An offline dataset as flat tensors on one device, in ``d4rl.qlearning_dataset``'s layout.

    ``next_observations[i]`` follows ``observations[i]``; ``terminals[i]`` is 1.0 only for true
    terminations; ``episode_index[i]`` says which stored episode transition ``i`` came from
    (used by return-based reward scaling).
    """

    observations: Tensor  # [N, obs_dim] float32
    actions: Tensor  # [N, act_dim] float32 in [-1, 1]
    rewards: Tensor  # [N] float32
    next_observations: Tensor  # [N, obs_dim] float32
    terminals: Tensor  # [N] float32
    episode_index: Tensor  # [N] int64

    def __len__(self) -> int:
        return self.observations.shape[0]

    @property
    def num_episodes(self) -> int:
        return int(self.episode_index[-1]) + 1 if len(self) else 0

    def replace(self, **changes: Tensor) -> Transitions:
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> Transitions:
        return Transitions(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})

    def episode_returns(self) -> Tensor:
        """Undiscounted return of every stored episode (sum of its transitions' rewards)."""
        returns = torch.zeros(self.num_episodes, dtype=torch.float64, device=self.rewards.device)
        return returns.index_add_(0, self.episode_index, self.rewards.double())

    def gather(self, indices: Tensor) -> Batch:
        """The transitions at ``indices`` (``[n_seeds, batch_size]``) as a :class:`Batch`."""
        flat = indices.reshape(-1)

        def take(x: Tensor) -> Tensor:
            return x.index_select(0, flat).reshape(*indices.shape, *x.shape[1:])

        return Batch(
            observations=take(self.observations),
            actions=take(self.actions),
            rewards=take(self.rewards),
            next_observations=take(self.next_observations),
            terminals=take(self.terminals),
        )


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit generator seed for one (training seed, purpose) pair, stable across machines."""
    digest = hashlib.sha256(f"{purpose}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class SeedStreams:
    """One ``torch.Generator`` per training seed for one purpose (init, batches, noise, acting).

    Draws are made per seed and stacked, so seed ``k``'s numbers never depend on which other
    seeds share the process. The generators live on ``device`` and never sync with the host.
    """

    def __init__(self, seeds: Sequence[int], purpose: str, device: torch.device | str):
        self.device = torch.device(device)
        self.generators = []
        for seed in seeds:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(derive_seed(seed, purpose))
            self.generators.append(generator)

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int) -> Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in self.generators])

    def rand(self, *shape: int) -> Tensor:
        return torch.stack([torch.rand(shape, generator=g, device=self.device) for g in self.generators])

    def randint(self, high: int, *shape: int) -> Tensor:
        return torch.stack(
            [torch.randint(high, shape, generator=g, device=self.device) for g in self.generators]
        )

    def state_dict(self) -> dict[str, Any]:
        return {"states": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["states"]) != len(self.generators):
            raise ValueError("checkpoint holds random streams for a different number of seeds")
        for generator, saved in zip(self.generators, state["states"]):
            generator.set_state(saved)


@dataclasses.dataclass
class AgentConfig:
    """Settings every agent has. Values come from ``benchmarks/configs/<agent>.toml``."""

    steps: int  # gradient steps of one run
    batch_size: int  # transitions per seed per step
    reward_transform: str  # see REWARD_TRANSFORMS

    def __post_init__(self) -> None:
        """Choices are checked when a config is made: ``reward_transform`` names one of
        :data:`REWARD_TRANSFORMS`, and every field typed ``Literal[...]`` holds one of its values."""
        choices = {"reward_transform": tuple(REWARD_TRANSFORMS)}
        for name, hint in typing.get_type_hints(type(self)).items():
            if typing.get_origin(hint) is Literal:
                choices[name] = typing.get_args(hint)
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {getattr(self, name)!r}")


def _scale_by_return_range(data: Transitions) -> Tensor:
    returns = data.episode_returns()
    spread = returns.max() - returns.min()
    if not spread > 0:
        raise ValueError(f"every episode returns {returns.max().item():.6g}, so rewards cannot be scaled by "
                         "1000 / (max return - min return)")
    return (data.rewards.double() * (1000.0 / spread)).float()


REWARD_TRANSFORMS = {
    # ikostrikov/implicit_q_learning train_offline.py normalize(): r * 1000 / (max return - min return)
    "iql_locomotion": _scale_by_return_range,
    # ikostrikov/implicit_q_learning train_offline.py (AntMaze): r - 1
    "iql_antmaze": lambda data: data.rewards - 1.0,
    # aviralkumar2907/CQL cql_antmaze_new.py, used by DQL/CPQL/OFQL on AntMaze: (r - 0.5) * 4
    "cql_antmaze": lambda data: (data.rewards - 0.5) * 4.0,
    # tinkoff-ai/CORL configs/offline/cql/antmaze/*.yaml: reward_scale 10, reward_bias -5 -> r * 10 - 5
    "corl_antmaze": lambda data: data.rewards * 10.0 - 5.0,
    # Diffusion-Policies-for-Offline-RL utils/data_sampler.py 'normalize' (Adroit): (r - mean) / std
    "normalize": lambda data: (data.rewards - data.rewards.mean()) / data.rewards.std(),
    "none": lambda data: data.rewards,
}


class Agent:
    """Base of the six agents. Subclasses set ``name`` and ``Config`` and implement ``learn`` (with
    ``control_key`` where it branches) and ``act``; ``state_dict`` collects every module, optimiser,
    scheduler and random stream they hold, plus the step counter."""

    name: ClassVar[str]
    Config: ClassVar[type[AgentConfig]]

    def __init__(self, obs_dim: int, act_dim: int, config: AgentConfig, seeds: Sequence[int], device):
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.config = config
        self.seeds = list(seeds)
        self.n_seeds = len(self.seeds)
        self.device = torch.device(device)
        self.step = 0  # gradient steps taken

    def preprocess(self, data: Transitions) -> Transitions:
        """Reward convention of the agent's official code, applied once before training; a ValueError
        where the data does not admit it."""
        return data.replace(rewards=REWARD_TRANSFORMS[self.config.reward_transform](data))

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One gradient step for every seed (:meth:`learn`, then :meth:`advance`); returns per-seed metrics
        (``[n_seeds]`` tensors)."""
        metrics = self.learn(batch)
        self.advance()
        return metrics

    def learn(self, batch: Batch) -> dict[str, Tensor]:
        """The device work of one update: losses, backward passes, optimiser and target-network steps.

        It reads Python state only through :meth:`control_key` and changes none (the step counter and the
        learning rates move in :meth:`advance`), so that one CUDA graph captured per key replays every update
        with that key (``benchmarks/stepping.py``; ``tests/test_graph_safety.py`` checks it on the CPU).
        """
        raise NotImplementedError

    def control_key(self) -> tuple[Any, ...]:
        """The Python-level branches :meth:`learn` takes at the current step (EMA due, training phase)."""
        return ()

    def advance(self) -> None:
        """The host side of an update: count it, then step every learning-rate schedule, which writes its new
        rate (a float computed on the host) into the optimiser's lr tensor (see ``agents.nets.adam``)."""
        self.step += 1
        for schedule in self._schedules:
            if schedule.last_epoch > 0:
                schedule.step()
            else:
                _first_schedule_step(schedule)

    def act(self, observations: Tensor) -> Tensor:
        """Evaluation actions ``[n_seeds, n, act_dim]`` in [-1, 1] for ``[n_seeds, n, obs_dim]``; like
        :meth:`learn`, the same operators for every call with one shape (replayed from a CUDA graph)."""
        raise NotImplementedError

    @property
    def candidates_per_state(self) -> int:
        """Actions :meth:`act` samples per state before choosing one: the config's ``num_candidates`` in agents
        that rank samples by Q (DQL, OFQL, DTQL, CPQL), else 1 (the policy gives the action itself)."""
        return getattr(self.config, "num_candidates", 1)

    def random_streams(self) -> list[SeedStreams]:
        return [s for s in self._stateful().values() if isinstance(s, SeedStreams)]

    @functools.cached_property
    def _schedules(self) -> list[torch.optim.lr_scheduler.LRScheduler]:
        return [s for s in self._stateful().values() if isinstance(s, torch.optim.lr_scheduler.LRScheduler)]

    def _stateful(self) -> dict[str, Any]:
        kinds = (nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, SeedStreams)
        return {k: v for k, v in vars(self).items() if isinstance(v, kinds)}

    def state_dict(self) -> dict[str, Any]:
        state = {name: obj.state_dict() for name, obj in self._stateful().items()}
        state["step"] = self.step
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, obj in self._stateful().items():
            if isinstance(obj, torch.optim.Optimizer):
                _load_optimizer_state(obj, state[name])
            else:
                obj.load_state_dict(state[name])
        self.step = state["step"]


def _first_schedule_step(schedule: torch.optim.lr_scheduler.LRScheduler) -> None:
    """A schedule's first step, without PyTorch's warning when it comes before its optimiser's first step (the
    rate meant for the first update would be lost): every rate here is a factor of the update count, so a schedule
    stepped first (DTQL's actor, through pre-training) loses nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
        schedule.step()


def _load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping what belongs to this process in each parameter group: the lr
    tensor that the fused kernel (and a CUDA graph captured from it) reads, into which the saved rate is copied (a
    tensor, or a float in checkpoints written before rates were tensors), and the flags that say how the step runs
    on this device (``agents.nets.adam``)."""
    kept = [{key: group[key] for key in ("lr", "fused", "foreach", "capturable") if key in group}
            for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, kept):
        own["lr"].copy_(torch.as_tensor(group["lr"]))
        group.update(own)
