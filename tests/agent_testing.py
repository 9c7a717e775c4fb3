"""Helpers the agent unit tests share: tiny random batches and data, parameter perturbations, the
seeds-trained-together and checkpoint-continuation checks, and each agent in a window across its branches.

The random helpers draw from their own seeded ``torch.Generator`` where they take a ``seed``, else from
torch's global generator, always in the order written here: changing that order changes every test's numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from agents.base import Agent, Batch, SeedStreams, Transitions
from benchmarks.training import Cell

# Per agent, a short run that crosses each side of its Python-level branch (EMA due every 5 steps, CQL's BC
# warm-up, DTQL's pre-training) with its learning-rate schedules moving: config overrides, and the step to start
# from as (config field, offset). Within 14 steps each side comes at least three times; within 24, five.
BRANCH_WINDOWS = {
    "ofql": ({}, "ema_start", -3),
    "dql": ({"lr_decay": True, "lr_decay_every": 2}, "ema_start", -3),
    "cpql": ({"lr_decay": True, "lr_decay_t_max": 8}, "ema_start", -3),
    "dtql": ({"pretrain_steps": 6, "lr_decay": True, "steps": 30}, None, 0),
    "cql": ({"bc_steps": 6}, None, 0),
    "iql": ({"actor_lr_schedule": "cosine", "steps": 30}, None, 0),
    "bc": ({}, None, 0),
}
HOPPER_SIZES = (11, 3)  # Hopper-v4's observation and action sizes


def learning_rates(agent: Agent) -> list[torch.Tensor]:
    """The lr of every parameter group of every optimiser the agent holds (0-dim tensors, ``agents.nets.adam``)."""
    return [group["lr"] for opt in vars(agent).values() if isinstance(opt, torch.optim.Optimizer) for group in opt.param_groups]


def agent_in_window(name: str, seeds: tuple[int, ...], device: torch.device | str) -> Agent:
    """``name`` with its hopper-medium-v2 config and :data:`BRANCH_WINDOWS`' overrides, at its window's first step."""
    overrides, field, offset = BRANCH_WINDOWS[name]
    agent = Cell(name, "hopper-medium-v2", seeds, tuple(overrides.items())).spec().build_agent(*HOPPER_SIZES, device)
    agent.step = (getattr(agent.config, field) if field else 0) + offset
    return agent


def random_batch(n_seeds: int, batch: int = 8, obs_dim: int = 3, act_dim: int = 2, seed: int = 0,
                 action_bound: float = 1.0) -> Batch:
    """A :class:`Batch` of ``[n_seeds, batch, ...]`` tensors from ``torch.Generator().manual_seed(seed)``:
    standard normal observations and rewards, actions uniform in ``[-action_bound, action_bound)``, about
    30% terminals."""
    g = torch.Generator().manual_seed(seed)
    return Batch(
        observations=torch.randn(n_seeds, batch, obs_dim, generator=g),
        actions=torch.rand(n_seeds, batch, act_dim, generator=g) * (2 * action_bound) - action_bound,
        rewards=torch.randn(n_seeds, batch, generator=g),
        next_observations=torch.randn(n_seeds, batch, obs_dim, generator=g),
        terminals=(torch.rand(n_seeds, batch, generator=g) < 0.3).float(),
    )


def random_transitions(n: int = 64, obs_dim: int = 3, act_dim: int = 2, episode_length: int = 8) -> Transitions:
    """``n`` random transitions from torch's global generator (actions in [-1, 1), about 10% terminals), in
    episodes of ``episode_length``."""
    return Transitions(
        observations=torch.randn(n, obs_dim), actions=torch.rand(n, act_dim) * 2 - 1, rewards=torch.randn(n),
        next_observations=torch.randn(n, obs_dim), terminals=(torch.rand(n) < 0.1).float(),
        episode_index=torch.arange(n) // episode_length,
    )


def perturb_(module: nn.Module, scale: float = 0.1, seed: int = 1) -> None:
    """Add ``scale * N(0, 1)`` noise from ``torch.Generator().manual_seed(seed)`` to every parameter, in
    ``module.parameters()`` order: moves a module away from its initialisation (or its copy), as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def q_min(critic: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``min(Q_1, Q_2)`` of a twin critic returning ``(q1, q2)``."""
    return torch.minimum(*critic(obs, actions))


def train_group_and_alone(group: Agent, alone: Agent, data: Transitions, steps: int,
                          batch_size: int = 8) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Train ``group`` (seeds 0, 1, 2) and ``alone`` (seed 1) for ``steps`` updates on batches of ``data`` drawn
    from each one's own ``"batches"`` streams, checking that seed 1 draws the same indices in both; return the
    last update's metrics of each."""
    group_batches, alone_batches = SeedStreams([0, 1, 2], "batches", "cpu"), SeedStreams([1], "batches", "cpu")
    for _ in range(steps):
        group_idx = group_batches.randint(len(data), batch_size)
        alone_idx = alone_batches.randint(len(data), batch_size)
        torch.testing.assert_close(group_idx[1], alone_idx[0], rtol=0, atol=0)  # the same random stream
        group_metrics, alone_metrics = group.update(data.gather(group_idx)), alone.update(data.gather(alone_idx))
    return group_metrics, alone_metrics


def trained_and_restored(make_agent: Callable[[], Agent], steps: int,
                         make_batch: Callable[..., Batch] = random_batch) -> tuple[Agent, Agent]:
    """An agent from ``make_agent()`` after ``steps`` updates on ``make_batch(2, seed=i)`` (i = 0, 1, ...), and a
    fresh one that loaded a deep copy of its state dict."""
    trained = make_agent()
    for i in range(steps):
        trained.update(make_batch(2, seed=i))
    restored = make_agent()
    restored.load_state_dict(copy.deepcopy(trained.state_dict()))
    return trained, restored


def assert_same_update(a: Agent, b: Agent, batch: Batch) -> None:
    """``a`` and ``b`` (one restored from the other's checkpoint) report bit-identical metrics for ``batch``, and
    are bit-identical afterwards: weights, optimiser moments and steps, schedules, random streams."""
    ma, mb = a.update(batch), b.update(batch)
    for key in ma:
        torch.testing.assert_close(ma[key], mb[key], rtol=0, atol=0)
    assert_same_state(a.state_dict(), b.state_dict())


def assert_same_state(a, b, where: str = "state") -> None:
    """Two nested state dicts hold the same keys, bit-identical tensors and equal other values."""
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{where}: {m}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
