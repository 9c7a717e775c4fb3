"""``bench perf``: what one gradient update and one decision cost, per agent, at a task's real sizes.

For each agent, at the task's observation/action sizes and the agent's resolved config for that task
(the same :class:`~benchmarks.training.Cell` -> :class:`~benchmarks.training.RunSpec` path as
``bench run``, so the same networks, batch size, candidates and diffusion steps):

- **updates per second**, for the process and per seed, for each seed count (seeds vectorised in one
  process, as ``bench run`` trains them), timed over ``repeats`` windows after a warm-up, min and
  median over the windows; the milliseconds per update and the implied hours per 1M updates;
- **decision frequency** as the OFQL paper defines it (App. D): action batches of ``action_batch`` = 2500
  sampled actions answered per second by the agent's own ``act`` (its candidates, chains and Q ranking).
  A batch holds ``action_batch // candidates`` states: 50 states x 50 candidates for DQL, OFQL and CPQL
  (the paper's 2500 = 50 environments x 50 candidates, ``shared/reference/compute.md``), 2 x 1024 for
  DTQL, 2500 states for the agents that sample one action per state. Also the latency of one action
  (``act`` on a single state);
- **arithmetic**: the floating-point operations of one update in matmuls (``torch.utils.flop_counter``,
  forward and backward, counted on one eager update after the timed windows) and the rate the timed
  updates reach with them (GFLOP/s), to hold against what the device's matmuls can do;
- **operators**: the aten operators one eager update and one action batch dispatch, views left out. On a
  GPU in eager mode each is about one kernel launch, and at these sizes a launch costs about as much as
  its work, so this count, not the arithmetic, is what bounds an eager update there;
- **peak memory** above what the process held before the agent was built: CUDA
  ``max_memory_allocated``, or on the CPU the resident-set high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs``; ``ru_maxrss`` where that is unavailable, which cannot be reset).

No dataset is needed: the sizes come from the task's Gymnasium environment, and the transitions are
random tensors made on the device, passed through the agent's own ``preprocess`` and sampled by the
training loop's per-seed ``"batches"`` streams, on the device. Timed windows contain nothing but
training steps exactly as ``bench run`` takes them (``benchmarks/stepping.py``: sampling and update, replayed
from CUDA graphs on CUDA unless ``--no-cuda-graphs``, compiled with ``--compile``), or acting (``agent.act``, also
replayed from a CUDA graph on CUDA): no host
read or synchronisation inside; the device is synchronised only at the ends of a window. Updates are timed
in the agent's main phase: ``agent.step`` starts past DTQL's pre-training, CQL's BC warm-up and the EMA
start, so cheap warm-up phases cannot flatter the numbers. Compilation and graph capture happen during the
warm-up; the first update's time is reported separately. The ``compile`` column names the step's mode
(``eager``, ``default`` for Inductor, either with ``+cuda-graphs``).

Results: a table on stdout, ``results/perf/perf-<task>-<device>-<time>.csv`` and a figure beside it
(PNG, PDF); ``bench report`` renders the latest CSV rows as a compute table (``analysis/compute.py``).
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from agents.base import Agent, SeedStreams, Transitions
from benchmarks import provenance
from benchmarks.stepping import WARMUP_STEPS, TrainingStep, cuda_graphs_wanted
from benchmarks.cpu_memory import keep_freed_memory, release_freed_memory
from benchmarks.errors import DataError
from benchmarks.tasks import Task, get_task
from benchmarks.training import Cell

PHASE_FIELDS = ("pretrain_steps", "bc_steps", "ema_start")  # config fields that end a cheaper warm-up phase
SYNTHETIC_TRANSITIONS = 100_000
CALIBRATION_UPDATES = 5  # timed after the warm-up to size a window of --window seconds
PAPER_ACTION_BATCH = 2500  # OFQL App. D: decision frequency over action batches of 2500 (50 envs x 50 candidates)


@dataclasses.dataclass(frozen=True)
class PerfSettings:
    agents: tuple[str, ...]
    task: str = "hopper-medium-v2"
    device: torch.device = torch.device("cpu")
    seed_counts: tuple[int, ...] = (1, 5)
    warmup: int = 20  # updates before timing (compilation, allocator, caches)
    steps: int | None = None  # updates per timed window; None: enough for window_seconds
    window_seconds: float = 2.0
    repeats: int = 5  # timed windows of updates (and of action batches)
    action_batch: int = PAPER_ACTION_BATCH
    compile: bool | None = None  # torch.compile agent.learn; None: off (as bench run)
    cuda_graphs: bool | None = None  # replay the step from CUDA graphs; None: on for CUDA (as bench run)
    overrides: tuple[tuple[str, Any], ...] = ()  # hyperparameter overrides (--set), applied to every agent

    def __post_init__(self) -> None:
        cuda_graphs_wanted(self.cuda_graphs, self.device)  # refused before any agent is timed


# ------------------------------------------------------------------------------------------------ inputs


def task_sizes(task: Task) -> tuple[int, int]:
    """``(obs_dim, act_dim)`` of the task's evaluation environment, without loading its data."""
    from benchmarks.data import environment_factory
    from benchmarks.data.minari_store import dataset_exists, read_info

    info = None
    if task.env_id is None:  # a Minari/quick-start dataset: its environment is recorded in its metadata
        if not dataset_exists(task.dataset_id):
            raise DataError(f"task {task.name} takes its environment from its dataset, which is not present",
                            "pick a task with a fixed environment, e.g. --task hopper-medium-v2")
        info = read_info(task.dataset_id, verify=False)
    env = environment_factory(task, info)()
    try:
        return int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    finally:
        env.close()


def synthetic_transitions(obs_dim: int, act_dim: int, device: torch.device, n: int = SYNTHETIC_TRANSITIONS,
                          seed: int = 0) -> Transitions:
    """Random transitions made on ``device``: normal states and rewards, actions uniform in [-1, 1], 1% terminals,
    episodes of 1000 steps, or 10 episodes where ``n`` is smaller (IQL's reward scaling needs returns that differ)."""
    g = torch.Generator(device=device).manual_seed(seed)

    def draw(fn: Callable[..., torch.Tensor], *shape: int) -> torch.Tensor:
        return fn(*shape, generator=g, device=device)

    return Transitions(
        observations=draw(torch.randn, n, obs_dim),
        actions=draw(torch.rand, n, act_dim) * 2.0 - 1.0,
        rewards=draw(torch.randn, n),
        next_observations=draw(torch.randn, n, obs_dim),
        terminals=(draw(torch.rand, n) < 0.01).float(),
        episode_index=torch.arange(n, device=device) // min(1000, max(n // 10, 1)),
    )


def skip_warmup_phases_(agent: Agent) -> None:
    """Put ``agent.step`` where the agent's main phase runs (after pre-training, BC warm-up, EMA start)."""
    agent.step = max([agent.step, *(getattr(agent.config, f) for f in PHASE_FIELDS if hasattr(agent.config, f))])


# ------------------------------------------------------------------------------------------------ measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], n: int, device: torch.device) -> float:
    """Seconds for ``n`` calls of ``fn``; the device is synchronised only before the first and after the last."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    synchronize(device)
    return time.perf_counter() - start


def calls_per_window(seconds_per_call: float, window_seconds: float) -> int:
    return max(1, math.ceil(window_seconds / max(seconds_per_call, 1e-9)))


class MemoryMeter:
    """Peak memory above a baseline taken at :meth:`start` (CUDA allocations or CPU resident set)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_allocated" if device.type == "cuda" else "cpu_rss"
        self.baseline = 0

    @staticmethod
    def _rss_peak_bytes(reset: bool) -> int:
        try:
            if reset:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux; cannot be reset

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:  # memory an earlier measurement freed (and the process kept) goes back first, or it would be reused unseen
            release_freed_memory()
            self.baseline = self._rss_peak_bytes(reset=True)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            release_freed_memory()
            self._rss_peak_bytes(reset=True)

    def peak_mib(self) -> float:
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else self._rss_peak_bytes(False)
        return max(0, peak - self.baseline) / 2**20


class OperatorCounter(TorchDispatchMode):
    """Counts the aten operators dispatched inside the block that compute something (views and ``detach`` only
    make a new tensor header, and launch nothing; the profiler's markers are not aten operators)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.namespace == "aten" and not func.is_view
        return func(*args, **(kwargs or {}))


def window_stats(rates: Sequence[float]) -> dict[str, float]:
    return {"min": min(rates), "median": statistics.median(rates), "max": max(rates)}


def measure(agent_name: str, n_seeds: int, settings: PerfSettings, sizes: tuple[int, int]) -> dict[str, Any]:
    """One row: the agent at ``n_seeds`` vectorised seeds."""
    device = settings.device
    obs_dim, act_dim = sizes
    spec = Cell(agent_name, settings.task, tuple(range(n_seeds)), settings.overrides).spec()
    memory = MemoryMeter(device)
    memory.start()
    agent = spec.build_agent(obs_dim, act_dim, device)
    data = agent.preprocess(synthetic_transitions(obs_dim, act_dim, device))
    batches = SeedStreams(spec.seeds, "batches", device)
    step = TrainingStep(agent, data, batches, settings.compile, settings.cuda_graphs)
    skip_warmup_phases_(agent)

    # warm-up: the first call (compilation, if any) timed alone, then the rest (graph captures); then a few updates
    # as the windows will run them size the windows (warm-up updates, eager and capturing, would make them too short)
    first = time_calls(step, 1, device)
    time_calls(step, max(1, settings.warmup - 1), device)
    steps = settings.steps or calls_per_window(time_calls(step, CALIBRATION_UPDATES, device) / CALIBRATION_UPDATES,
                                               settings.window_seconds)
    rates = [steps / time_calls(step, steps, device) for _ in range(settings.repeats)]
    peak_train = memory.peak_mib()
    with FlopCounterMode(display=False) as flops, OperatorCounter() as update_ops:  # eager: every op dispatched
        type(agent).learn(agent, step.sample())
    agent.advance()
    gflop = flops.get_total_flops() / 1e9

    # decision frequency: act on batches of action_batch sampled actions per seed, the paper's protocol; and the
    # latency of one state
    memory.reset_peak()
    g = torch.Generator(device=device).manual_seed(1)
    states_per_batch = max(1, settings.action_batch // agent.candidates_per_state)
    states = torch.randn(n_seeds, states_per_batch, obs_dim, generator=g, device=device)
    single = states[:, :1].contiguous()
    for observations in (states, single):  # warm-up (graph captures); then calibration
        time_calls(lambda: step.act(observations), WARMUP_STEPS + 1, device)
    per_batch = time_calls(lambda: step.act(states), 1, device)
    calls = calls_per_window(per_batch, settings.window_seconds / 2)
    act_rates = [calls / time_calls(lambda: step.act(states), calls, device) for _ in range(settings.repeats)]
    peak_act = memory.peak_mib()
    with OperatorCounter() as act_ops:  # eager
        agent.act(states)
    per_action = time_calls(lambda: step.act(single), 3, device) / 3
    action_calls = calls_per_window(per_action, settings.window_seconds / 4)
    latencies = [time_calls(lambda: step.act(single), action_calls, device) / action_calls
                 for _ in range(settings.repeats)]

    ups = window_stats(rates)
    hz = window_stats(act_rates)
    return {
        "agent": agent_name,
        "task": settings.task,
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "batch_size": agent.config.batch_size,
        "n_seeds": n_seeds,
        "device": str(device),
        "device_name": provenance.device_description(device),
        "threads": torch.get_num_threads(),
        "compile": step.mode,
        "warmup": settings.warmup,
        "steps_per_window": steps,
        "repeats": settings.repeats,
        "updates_per_s_min": ups["min"],
        "updates_per_s_median": ups["median"],
        "updates_per_s_max": ups["max"],
        "seed_updates_per_s_median": ups["median"] * n_seeds,
        "ms_per_update_median": 1000.0 / ups["median"],
        "hours_per_1m_median": 1e6 / ups["median"] / 3600.0,
        "hours_per_1m_per_seed": 1e6 / ups["median"] / 3600.0 / n_seeds,
        "gflop_per_update": gflop,
        "gflop_per_s": gflop * ups["median"],
        "ops_per_update": update_ops.count,
        "first_update_s": first,
        "action_batch": settings.action_batch,
        "candidates_per_state": agent.candidates_per_state,
        "states_per_batch": states_per_batch,
        "decision_hz_min": hz["min"],
        "decision_hz_median": hz["median"],
        "ops_per_action_batch": act_ops.count,
        "ms_per_action_median": 1000.0 * statistics.median(latencies),
        "peak_train_mib": peak_train,
        "peak_act_mib": peak_act,
        "memory_kind": memory.kind,
        "load_avg_1m": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "host": platform.node(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def prime(agent_name: str, settings: PerfSettings, sizes: tuple[int, int]) -> None:
    """A few eager updates and actions of a throwaway agent, so that one-time costs of the process (kernel
    libraries loading, allocator pools) are not charged to the first agent measured."""
    agent = Cell(agent_name, settings.task, (0,), settings.overrides).spec().build_agent(*sizes, settings.device)
    data = agent.preprocess(synthetic_transitions(*sizes, settings.device, n=1000))
    batches = SeedStreams(agent.seeds, "batches", settings.device)
    for _ in range(2):
        agent.update(data.gather(batches.randint(len(data), agent.config.batch_size)))
    agent.act(data.observations[None, :8])
    synchronize(settings.device)


def run_perf(settings: PerfSettings, progress: Callable[[str], None] = lambda _: None) -> pd.DataFrame:
    """Every (agent, seed count) of ``settings``, one row each."""
    sizes = task_sizes(get_task(settings.task))
    if settings.device.type == "cpu":
        keep_freed_memory()  # as bench run trains on the CPU
    prime(settings.agents[0], settings, sizes)
    rows = []
    for agent_name in settings.agents:
        for n_seeds in settings.seed_counts:
            progress(f"{agent_name}: {n_seeds} seed(s) on {settings.device}, obs {sizes[0]}, act {sizes[1]} ...")
            rows.append(measure(agent_name, n_seeds, settings, sizes))
            progress(format_row(rows[-1]))
            torch._dynamo.reset()  # compiled code of one agent never counts against another's recompile limits
            gc.collect()
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ output

def format_row(row: dict[str, Any]) -> str:
    return (f"  {row['updates_per_s_median']:.1f} updates/s (min {row['updates_per_s_min']:.1f}), "
            f"{row['ms_per_update_median']:.2f} ms/update, {row['decision_hz_median']:.2f} decisions/s, "
            f"{row['ms_per_action_median']:.2f} ms/action")


def format_table(frame: pd.DataFrame) -> str:
    from analysis.compute import compute_table

    table = compute_table(frame)
    header = f"{frame['task'].iloc[0]} (obs {frame['obs_dim'].iloc[0]}, act {frame['act_dim'].iloc[0]}) on {table['device'].iloc[0]}"
    return header + "\n" + table.drop(columns=["task", "device"]).to_string(index=False)


def write_results(frame: pd.DataFrame, results_root: Path, settings: PerfSettings) -> list[Path]:
    """The CSV (written atomically) and the figure, under ``results_root/perf/``."""
    from analysis.compute import compute_figure

    out = results_root / "perf"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = out / f"perf-{settings.task.replace('/', '--')}-{settings.device.type}-{stamp}"
    csv = stem.with_suffix(".csv")
    tmp = csv.with_name(f".{csv.name}.{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    return [csv, *compute_figure(frame, stem)]
