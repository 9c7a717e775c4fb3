"""Every agent's ``learn`` (and ``act``) can be captured as CUDA graphs and replayed: checked on the CPU.

A CUDA graph replays the kernels, with the arguments, that one call recorded; the Python around them does not
run again. So ``learn`` must (1) change no Python state (the step counter and the learning rates move in
``advance``) and (2) dispatch the same operators with the same non-tensor arguments at every step with the
same ``control_key``. Both are checked here on every agent at its hopper config, over steps that cross each
of its branches (EMA due every 5 steps, CQL's BC warm-up, DTQL's pre-training) with its learning-rate
schedules on, so that a rate passed to Adam as a Python float, or a branch missing from ``control_key``,
would show as two operator sequences for one key. Every generator ``learn`` draws from must be one of the
agent's ``random_streams``, the ones registered with each graph. As in ``benchmarks/stepping.py``, the first steps with each
key are warm-up (Adam makes its state at its first step) and are not compared. ``tests/test_perf.py`` replays real graphs on CUDA.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from torch.utils._pytree import tree_flatten
from torch.utils._python_dispatch import TorchDispatchMode

from agents import AGENTS
from agents.base import Agent, SeedStreams
from benchmarks.perf import synthetic_transitions
from benchmarks.stepping import WARMUP_STEPS
from benchmarks.training import Cell

from agent_testing import BRANCH_WINDOWS, HOPPER_SIZES, agent_in_window, learning_rates

OBS, ACT = HOPPER_SIZES
STEPS = 14


class OperatorRecorder(TorchDispatchMode):
    """The operators dispatched in the block, each with its tensors' shapes and dtypes and its other arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []
        self.generators: set[int] = set()  # seeds of the generators drawn from (each stream's is its own)
        self.global_draws: list[str] = []  # random operators given no generator: they draw from torch's global one

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        leaves, _ = tree_flatten((args, kwargs or {}))
        self.calls.append((str(func), tuple(describe(x) for x in leaves)))
        generators = [x for x in leaves if isinstance(x, torch.Generator)]
        self.generators.update(g.initial_seed() for g in generators)
        if torch.Tag.nondeterministic_seeded in func.tags and not generators:
            self.global_draws.append(str(func))
        return func(*args, **(kwargs or {}))


def describe(x):
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), x.dtype)
    if isinstance(x, torch.Generator):
        return ("generator",)
    if isinstance(x, torch.ScriptObject):  # the profiler's markers, a new handle each call
        return ("script object",)
    return x  # a value a captured kernel would keep: it must not change between steps with one key


def python_state(agent: Agent) -> dict:
    plain = {k: v for k, v in vars(agent).items() if isinstance(v, (bool, int, float, str, tuple, type(None)))}
    schedules = {k: v.last_epoch for k, v in vars(agent).items() if isinstance(v, torch.optim.lr_scheduler.LRScheduler)}
    return {**plain, **schedules}


def test_the_recorder_sees_draws_from_the_global_generator():
    own = torch.Generator().manual_seed(3)
    with OperatorRecorder() as recorder:
        torch.randn(3, generator=own)
        torch.zeros(2).bernoulli_(0.5, generator=own)
    assert recorder.global_draws == [] and recorder.generators == {3}
    with OperatorRecorder() as recorder:
        torch.randn(3)
        torch.nn.functional.dropout(torch.ones(4), 0.5, training=True)
        torch.multinomial(torch.ones(4), 1)
    assert len(recorder.global_draws) == 3, recorder.global_draws


def test_every_agent_has_a_window():
    assert BRANCH_WINDOWS.keys() == AGENTS.keys()


@pytest.mark.parametrize("name", list(AGENTS))
def test_learn_is_one_operator_sequence_per_control_key(name):
    agent = agent_in_window(name, (0, 1), "cpu")
    data = agent.preprocess(synthetic_transitions(OBS, ACT, torch.device("cpu"), n=1024))
    batches = SeedStreams(agent.seeds, "batches", "cpu")
    rates = learning_rates(agent)
    assert all(isinstance(lr, torch.Tensor) for lr in rates), "a learning rate a graph would bake in"
    sequences, seen, rate_values = defaultdict(set), defaultdict(int), set()
    registered = {g.initial_seed() for streams in agent.random_streams() for g in streams.generators}
    for _ in range(STEPS):
        key, before = agent.control_key(), python_state(agent)
        batch = data.gather(batches.randint(len(data), agent.config.batch_size))
        with OperatorRecorder() as recorder:
            agent.learn(batch)
        assert python_state(agent) == before, f"{name}.learn changed Python state"
        assert recorder.generators <= registered, f"{name}.learn draws from a generator outside random_streams()"
        assert not recorder.global_draws, f"{name}.learn draws from torch's global generator: {recorder.global_draws}"
        seen[key] += 1
        if seen[key] > WARMUP_STEPS:
            sequences[key].add(tuple(recorder.calls))
        agent.advance()
        rate_values.add(tuple(float(lr) for lr in rates))
    assert all(len(calls) == 1 for calls in sequences.values()), f"{name}: a branch outside control_key"
    assert len(sequences) == (1 if name in ("iql", "bc") else 2), "the window should replay each side of the branch"
    assert learning_rates(agent) == rates  # written in place, never replaced
    if name in ("dql", "cpql", "dtql", "iql"):
        assert len(rate_values) > 2, "the schedule should move within the window"


@pytest.mark.parametrize("name", list(AGENTS))
def test_act_is_one_operator_sequence_per_observation_shape(name):
    """``act``, replayed from one graph per observation shape on CUDA, likewise: one operator sequence for
    observations of one shape, no Python state changed, only registered generators drawn from."""
    agent = Cell(name, "hopper-medium-v2", (0, 1), ()).spec().build_agent(OBS, ACT, "cpu")
    registered = {g.initial_seed() for streams in agent.random_streams() for g in streams.generators}
    g = torch.Generator().manual_seed(0)
    sequences = set()
    for call in range(WARMUP_STEPS + 3):
        before, observations = python_state(agent), torch.randn(2, 4, OBS, generator=g)
        with OperatorRecorder() as recorder:
            agent.act(observations)
        assert python_state(agent) == before, f"{name}.act changed Python state"
        assert recorder.generators <= registered, f"{name}.act draws from a generator outside random_streams()"
        assert not recorder.global_draws, f"{name}.act draws from torch's global generator: {recorder.global_draws}"
        if call >= WARMUP_STEPS:
            sequences.add(tuple(recorder.calls))
    assert len(sequences) == 1


@pytest.mark.parametrize("name", ["dql", "cpql", "dtql", "iql"])
@pytest.mark.parametrize("saved_rates", ["tensors", "floats"])
def test_a_restored_agent_keeps_its_lr_tensors(name, saved_rates):
    """Loading a checkpoint copies the saved rates into the agent's own lr tensors (the ones a graph reads) and keeps
    its own step flags; checkpoints written before rates were tensors hold floats. The schedule then goes on."""
    data = synthetic_transitions(OBS, ACT, torch.device("cpu"), n=1024)
    trained, restored = agent_in_window(name, (0, 1), "cpu"), agent_in_window(name, (0, 1), "cpu")
    batches = SeedStreams(trained.seeds, "batches", "cpu")
    for _ in range(5):
        trained.update(data.gather(batches.randint(len(data), trained.config.batch_size)))
    state = trained.state_dict()
    optimizers = [k for k, v in vars(trained).items() if isinstance(v, torch.optim.Optimizer)]
    for group in (group for key in optimizers for group in state[key]["param_groups"]):
        group["capturable"] = True  # as written on CUDA
        if saved_rates == "floats":
            group["lr"] = float(group["lr"])
    own = learning_rates(restored)
    restored.load_state_dict(state)
    assert all(a is b for a, b in zip(learning_rates(restored), own, strict=True))
    assert [float(lr) for lr in own] == [float(lr) for lr in learning_rates(trained)]
    assert not any(getattr(restored, key).param_groups[0]["capturable"] for key in optimizers)
    rates_seen = set()
    for _ in range(4):
        trained.advance(), restored.advance()
        assert [float(lr) for lr in own] == [float(lr) for lr in learning_rates(trained)]
        rates_seen.add(tuple(float(lr) for lr in own))
    assert len(rates_seen) > 1, "the schedule should move after the restore"
