"""How the harness runs one training step, ``agent.update(transitions.gather(batches.randint(n, B)))``:
eagerly, with ``agent.learn`` compiled by ``torch.compile``, and on CUDA replayed from CUDA graphs.

The algorithm stays in the agent's file, in eager PyTorch; this module only wraps it.

**CUDA graphs** (``--cuda-graphs``, default on for CUDA). On a GPU these small networks are bound by the
host: each of an update's few hundred operators costs a kernel launch and its Python and dispatcher
overhead (about 40 µs each on the H100 machine measured, see the README), far more than its arithmetic.
:class:`CapturedSteps` records the whole device side of a step (batch sampling, forward and backward
passes, clipping, fused Adam, target updates) once as a CUDA graph and then replays it with one launch.
What an agent does on the host stays on the host: :meth:`Agent.advance` counts the step and writes the
learning rates into the optimisers' lr tensors. ``Agent.learn`` reads Python state only through
``Agent.control_key`` (EMA due, training phase), so one graph is captured per key (at most two per agent)
after two eager warm-up steps with that key, which are real steps. The per-seed generators are
registered with every graph, so each replay draws what the eager step would have drawn. The same holds
for ``act``, which :class:`CapturedActions` replays from one graph per observation shape.

**torch.compile** (``--compile``, default off). Dynamo splits ``learn`` wherever it cannot trace (every
draw from a per-seed ``torch.Generator``, ``zero_grad``, ``backward``): 7 graphs per update for IQL, 19
for OFQL, 23 for DQL. In ``reduce-overhead`` mode on the H100 each piece became its own CUDA graph with
its own Python-side replay, and the updates were slower than eager (OFQL at five seeds: 43.6 against
70.7 updates/s), so compilation now runs in Inductor's default mode, fusing kernels, and the CUDA
graphs above capture the compiled step whole. Python-level state is guarded, not baked in: a branch on
``agent.step`` gives one graph per side of the branch; the recompile limit is raised per call so that
these variants never push a frame back to eager mode. An update must back-propagate each compiled graph
once: AOTAutograd gives a compiled region one backward node, whose saved tensors the first backward pass
frees (CQL's temperature gradient is therefore set in closed form, not by a second backward pass).

``tests/test_perf.py`` checks that compiled steps give the eager losses and weights (IQL through
Inductor, OFQL and CQL through Dynamo + AOTAutograd on the CPU; every agent through Inductor on CUDA)
and, on CUDA, that replayed steps and actions give the eager ones; ``tests/test_graph_safety.py`` checks
on the CPU that ``learn`` depends on Python state only through ``control_key`` (and ``act`` only on the
observations' shape).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor

from agents.base import Agent, Batch, SeedStreams, Transitions
from benchmarks.errors import BenchError

RECOMPILE_LIMIT = 64  # per frame: control-key branches x grad modes
WARMUP_STEPS = 2  # eager steps per control key before its capture: lazy initialisation, compilation


def cuda_graphs_wanted(flag: bool | None, device: torch.device) -> bool:
    """``--cuda-graphs``/``--no-cuda-graphs`` as given, else on for CUDA; refused elsewhere."""
    if flag and device.type != "cuda":
        raise BenchError(f"--cuda-graphs needs a CUDA device, not {device}", "leave it out on the CPU")
    return device.type == "cuda" if flag is None else flag


def first_line(err: Exception) -> str:
    """The first line of an exception's message, for a one-line :class:`BenchError`."""
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def compile_learn(agent: Agent, backend: str = "inductor") -> str:
    """Replace ``agent.learn`` by its compiled version (in place); return the mode used.

    The eager method stays reachable as ``type(agent).learn(agent, batch)``. Compilation happens on the
    first call (and on the few recompiles described above); a failure there raises a :class:`BenchError`
    that says to rerun with ``--no-compile``. ``backend="aot_eager"`` (Dynamo's capture and AOTAutograd
    without Inductor's code generation) helps to locate a difference.
    """
    compiled: Callable[[Batch], dict[str, Tensor]] = torch.compile(agent.learn, backend=backend)
    mode = "default" if backend == "inductor" else backend
    # Dynamo's name for the limit: ``recompile_limit`` in recent PyTorch, ``cache_size_limit`` (an alias since) in
    # older ones; looked up here, because ``torch._dynamo`` takes seconds to import and only compiling needs it
    limit_setting = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"

    def learn(batch: Batch) -> dict[str, Tensor]:
        try:
            with torch._dynamo.config.patch(**{limit_setting: RECOMPILE_LIMIT}):
                return compiled(batch)
        except torch._dynamo.exc.TorchDynamoException as err:
            raise BenchError(f"torch.compile ({mode}) of {agent.name}'s update failed: {type(err).__name__}: "
                             f"{first_line(err)}",
                             "rerun with --no-compile") from err

    agent.learn = learn  # an instance attribute: not part of the agent's state dict
    return mode


class CapturedGraphs:
    """A piece of device work captured as one CUDA graph per key and replayed: :meth:`run` ``(key, work)`` runs
    ``work()`` eagerly (on a side stream) the first ``WARMUP_STEPS`` times a key comes, then captures it, then
    replays it. ``work`` must dispatch the same kernels, with the same arguments, every time its key comes.

    The outputs of a replayed graph live in its memory and are overwritten by its next replay.
    """

    def __init__(self, agent: Agent, streams: list[SeedStreams], what: str):
        self.agent, self.what = agent, what
        self.generators = [g for s in streams for g in s.generators if g.device.type == "cuda"]
        self.stream = torch.cuda.Stream(agent.device)  # warm-up and capture: never the default stream
        self.graphs: dict[Hashable, tuple[torch.cuda.CUDAGraph, Any]] = {}
        self.eager_runs: Counter[Hashable] = Counter()

    def run(self, key: Hashable, work: Callable[[], Any]) -> Any:
        if key in self.graphs:
            graph, outputs = self.graphs[key]
            graph.replay()
            return outputs
        if self.eager_runs[key] < WARMUP_STEPS:
            self.eager_runs[key] += 1
            self.stream.wait_stream(torch.cuda.current_stream(self.agent.device))
            with torch.cuda.stream(self.stream):
                outputs = work()
            torch.cuda.current_stream(self.agent.device).wait_stream(self.stream)
            return outputs
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                outputs = work()
        except RuntimeError as err:
            raise BenchError(f"CUDA graph capture of {self.agent.name}'s {self.what} failed: {first_line(err)}",
                             "rerun with --no-cuda-graphs") from err
        graph.replay()  # capturing recorded the work without running it
        self.graphs[key] = (graph, outputs)
        return outputs


class CapturedSteps:
    """Training steps: ``agent.learn(sample())`` replayed from one graph per ``agent.control_key()``, then
    ``agent.advance()`` on the host. Returns the step's metrics (read them before the next step)."""

    def __init__(self, agent: Agent, sample: Callable[[], Batch], streams: list[SeedStreams]):
        self.agent, self.sample = agent, sample
        self.graphs = CapturedGraphs(agent, streams, "update")

    def __call__(self) -> dict[str, Tensor]:
        metrics = self.graphs.run(self.agent.control_key(), lambda: self.agent.learn(self.sample()))
        self.agent.advance()
        return metrics


class CapturedActions:
    """``agent.act`` replayed from one graph per observation shape (evaluation and ``bench perf`` call it with
    one shape): the observations are copied into the graph's input, and the actions copied out."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self.graphs = CapturedGraphs(agent, agent.random_streams(), "act")
        self.inputs: dict[tuple, Tensor] = {}

    def __call__(self, observations: Tensor) -> Tensor:
        key = (tuple(observations.shape), observations.dtype)
        if key not in self.inputs:
            self.inputs[key] = torch.empty_like(observations)
        static = self.inputs[key]
        static.copy_(observations)
        return self.graphs.run(key, lambda: self.agent.act(static)).clone()


class TrainingStep:
    """One training step of ``agent`` on ``transitions`` with batches from ``batches``, run as asked:
    ``learn`` compiled or not, replayed from CUDA graphs or not; and :attr:`act`, the agent's ``act`` run
    the same way (replayed from CUDA graphs with them). ``mode`` names the step ("eager", "default",
    "eager+cuda-graphs", ...) for provenance and ``bench perf``."""

    def __init__(self, agent: Agent, transitions: Transitions, batches: SeedStreams,
                 compile: bool | None = None, cuda_graphs: bool | None = None):
        self.agent = agent
        n, batch_size = len(transitions), agent.config.batch_size
        self.sample: Callable[[], Batch] = lambda: transitions.gather(batches.randint(n, batch_size))
        compile_mode = compile_learn(agent) if compile else "eager"  # off by default: see the module's docstring
        self.captured = None
        self.act: Callable[[Tensor], Tensor] = agent.act
        if cuda_graphs_wanted(cuda_graphs, agent.device):
            self.captured = CapturedSteps(agent, self.sample, [batches, *agent.random_streams()])
            self.act = CapturedActions(agent)
        self.mode = compile_mode + ("+cuda-graphs" if self.captured else "")

    def __call__(self) -> dict[str, Tensor]:
        return self.captured() if self.captured else self.agent.update(self.sample())
