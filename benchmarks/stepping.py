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
registered with every graph, so each replay draws what the eager step would have drawn.

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
and, on CUDA, that replayed steps give the eager ones; ``tests/test_graph_safety.py`` checks on the CPU
that ``learn`` depends on Python state only through ``control_key``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable

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


def compile_learn(agent: Agent, backend: str = "inductor") -> str:
    """Replace ``agent.learn`` by its compiled version (in place); return the mode used.

    The eager method stays reachable as ``type(agent).learn(agent, batch)``. Compilation happens on the
    first call (and on the few recompiles described above); a failure there raises a :class:`BenchError`
    that says to rerun with ``--no-compile``. ``backend="aot_eager"`` (Dynamo's capture and AOTAutograd
    without Inductor's code generation) helps to locate a difference.
    """
    compiled: Callable[[Batch], dict[str, Tensor]] = torch.compile(agent.learn, backend=backend)
    mode = "default" if backend == "inductor" else backend

    def learn(batch: Batch) -> dict[str, Tensor]:
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                return compiled(batch)
        except torch._dynamo.exc.TorchDynamoException as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise BenchError(f"torch.compile ({mode}) of {agent.name}'s update failed: {type(err).__name__}: {first}",
                             "rerun with --no-compile") from err

    agent.learn = learn  # an instance attribute: not part of the agent's state dict
    return mode


class CapturedSteps:
    """``agent.learn(sample())`` captured as one CUDA graph per ``agent.control_key()``, then replayed.

    Each call is one training step and returns its metrics; a replayed step's metrics live in its graph's
    memory and are overwritten by the next replay of that graph (read them before the next step).
    """

    def __init__(self, agent: Agent, sample: Callable[[], Batch], streams: list[SeedStreams]):
        self.agent, self.sample = agent, sample
        self.generators = [g for s in streams for g in s.generators if g.device.type == "cuda"]
        self.stream = torch.cuda.Stream(agent.device)  # warm-up and capture: never the default stream
        self.graphs: dict[Hashable, tuple[torch.cuda.CUDAGraph, dict[str, Tensor]]] = {}
        self.eager_steps: Counter[Hashable] = Counter()

    def __call__(self) -> dict[str, Tensor]:
        key = self.agent.control_key()
        if key in self.graphs:
            graph, metrics = self.graphs[key]
            graph.replay()
        elif self.eager_steps[key] < WARMUP_STEPS:
            self.eager_steps[key] += 1
            metrics = self._on_side_stream(lambda: self.agent.learn(self.sample()))
        else:
            metrics = self._capture(key)
        self.agent.advance()
        return metrics

    def _on_side_stream(self, work: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        self.stream.wait_stream(torch.cuda.current_stream(self.agent.device))
        with torch.cuda.stream(self.stream):
            metrics = work()
        torch.cuda.current_stream(self.agent.device).wait_stream(self.stream)
        return metrics

    def _capture(self, key: Hashable) -> dict[str, Tensor]:
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                metrics = self.agent.learn(self.sample())
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise BenchError(f"CUDA graph capture of {self.agent.name}'s update failed: {first}",
                             "rerun with --no-cuda-graphs") from err
        graph.replay()  # capturing recorded the step without running it
        self.graphs[key] = (graph, metrics)
        return metrics


class TrainingStep:
    """One training step of ``agent`` on ``transitions`` with batches from ``batches``, run as asked:
    ``learn`` compiled or not, replayed from CUDA graphs or not. ``mode`` names it ("eager", "default",
    "eager+cuda-graphs", ...) for provenance and ``bench perf``."""

    def __init__(self, agent: Agent, transitions: Transitions, batches: SeedStreams,
                 compile: bool | None = None, cuda_graphs: bool | None = None):
        self.agent = agent
        n, batch_size = len(transitions), agent.config.batch_size
        self.sample: Callable[[], Batch] = lambda: transitions.gather(batches.randint(n, batch_size))
        compile_mode = compile_learn(agent) if compile else "eager"  # off by default: see the module's docstring
        self.captured = None
        if cuda_graphs_wanted(cuda_graphs, agent.device):
            self.captured = CapturedSteps(agent, self.sample, [batches, *agent.random_streams()])
        self.mode = compile_mode + ("+cuda-graphs" if self.captured else "")

    def __call__(self) -> dict[str, Tensor]:
        return self.captured() if self.captured else self.agent.update(self.sample())
