"""``torch.compile`` of an agent's update step (``bench run --compile``, ``bench perf --compile``).

What is compiled is the agent's whole ``update`` method, unchanged: the algorithm stays in the agent's
file, in eager PyTorch, and this module only wraps the bound method. Dynamo splits the step where it
cannot trace, and only there:

- every draw from a per-seed ``torch.Generator`` (:class:`agents.base.SeedStreams`), so every random
  stream draws exactly what it draws in eager mode;
- ``optimizer.zero_grad`` and ``Tensor.backward``.

The pieces between (network forwards, OFQL's chain-rule JVP, losses, per-seed clipping, the
optimiser steps, Polyak/EMA updates) become graphs that Inductor fuses; their backward passes are
compiled by AOTAutograd. Python-level state is guarded, not baked in: a branch on ``agent.step``
(EMA every 5 steps, DTQL's pre-training phase, CQL's BC warm-up) gives one graph per side of the
branch, and integers or learning rates that change every step become symbolic after one recompile.
The recompile limit is raised (per call, not globally) so that these variants never push a frame
back to eager mode.

On CUDA the default mode is ``"reduce-overhead"``: the batch size is fixed, so every graph has
static shapes and is replayed as a CUDA graph (``cudagraph_mark_step_begin`` marks each update as a
new step; the returned metrics are cloned out of the graphs' memory, which the next replay reuses).
On the CPU the default mode is Inductor's ``"default"``; compilation is off by default there (it made
the updates slower on the 2-core development machines, see the README's performance section) and on
by default on CUDA.

An update must back-propagate each graph once: AOTAutograd gives a compiled region one backward node,
whose saved tensors the first backward pass frees (CQL's temperature gradient is therefore set in
closed form, not by a second backward pass through the actor's sample).

``tests/test_perf.py`` checks that the compiled update gives the eager update's losses (IQL through
Inductor, OFQL and CQL through Dynamo + AOTAutograd; BC through ``bench run --compile``). By hand, on the
CPU with Inductor, 6 updates of every agent at its hopper config on one fixed batch agreed with eager
mode to a relative 3e-5 in every metric (OFQL 2e-7, DQL 3e-6, CPQL 2e-5, DTQL 2e-6, BC 3e-7, CQL 3e-5,
growing from 3e-7 after one update as float differences compound through its log-sum-exp).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from agents.base import Agent, Batch
from benchmarks.errors import BenchError

DEFAULT_MODES = {"cuda": "reduce-overhead"}  # anything else: "default"
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
RECOMPILE_LIMIT = 64  # per frame: EMA/phase branches x grad modes x the learning rate going symbolic


def compile_wanted(flag: bool | None, device: torch.device) -> bool:
    """``--compile``/``--no-compile`` as given, else on for CUDA and off elsewhere."""
    return device.type == "cuda" if flag is None else flag


def default_mode(device: torch.device) -> str:
    return DEFAULT_MODES.get(device.type, "default")


def compile_update(agent: Agent, mode: str | None = None, backend: str = "inductor") -> str:
    """Replace ``agent.update`` by its compiled version (in place); return the mode used.

    The eager method stays reachable as ``type(agent).update(agent, batch)``. Compilation happens on
    the first call (and on the few recompiles described above); a failure there raises a
    :class:`BenchError` that says to rerun with ``--no-compile``. ``backend="aot_eager"`` (Dynamo's
    capture and AOTAutograd without Inductor's code generation; no mode) helps to locate a difference.
    """
    if backend != "inductor":
        mode = backend
        compiled: Callable[[Batch], dict[str, Tensor]] = torch.compile(agent.update, backend=backend)
    else:
        mode = mode or default_mode(agent.device)
        compiled = torch.compile(agent.update, mode=mode)
    cuda_graphs = agent.device.type == "cuda" and mode in CUDA_GRAPH_MODES

    def update(batch: Batch) -> dict[str, Tensor]:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                metrics = compiled(batch)
        except torch._dynamo.exc.TorchDynamoException as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise BenchError(f"torch.compile ({mode}) of {agent.name}'s update failed: {type(err).__name__}: {first}",
                             "rerun with --no-compile") from err
        return {k: v.clone() for k, v in metrics.items()} if cuda_graphs else metrics

    agent.update = update  # an instance attribute: not part of the agent's state dict
    return mode
