"""The training loop shared by every agent: one cell (agent x task x seeds) from data to score.

A run lives in ``results/runs/<run id>/``; the run id is derived from what defines the result
(agent, task, dataset, seeds, resolved config, evaluation protocol), so the same cell always lands
in the same place. The folder holds

- ``config.json``: the run's identity, each hyperparameter's source, the dataset summary;
- ``metrics.jsonl``: one line per training log (every ``log_interval`` steps) and per evaluation;
- ``checkpoint.pt``: everything needed to continue (agent modules, optimisers, schedules, target
  and EMA networks, random streams, step, evaluations so far), written atomically every
  ``checkpoint_interval`` steps and when SIGTERM, SIGUSR2 or SIGINT arrives;
- ``final.json``: per-seed scores under every protocol and full provenance;
- ``starts.jsonl``: one line per start of the process (resumes after preemption or crash included).

A restarted run resumes from its checkpoint and ends with the same result as an uninterrupted
one: metrics written after the checkpoint are cut away and every random stream is restored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agents.base import Agent, SeedStreams, Transitions
from benchmarks import provenance
from benchmarks.stepping import TrainingStep, cuda_graphs_wanted
from benchmarks.cpu_memory import keep_freed_memory
from benchmarks.config import ResolvedConfig, canonical_json, get_agent_class, resolve_config
from benchmarks.data import TaskData, load_task_data
from benchmarks.errors import BenchError, DataError, RunInterrupted
from benchmarks.evaluation import Evaluator
from benchmarks.tasks import TASKS, Protocol, Task, get_task, task_for_dataset, on_best_grid

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What defines a cell's result. Everything here goes into the run id."""

    agent: str
    task: Task
    seeds: tuple[int, ...]
    config: ResolvedConfig

    def identity(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "agent": self.agent,
            "task": self.task.name,
            "dataset": self.task.dataset_id,
            "seeds": list(self.seeds),
            "config": self.config.values(),
            "protocol": dataclasses.asdict(self.task.protocol),
        }

    def cell(self) -> Cell:
        """The smallest :class:`Cell` that resolves to this spec (overrides = what differs from defaults)."""
        dataset = self.task.name not in TASKS
        base = Cell(self.agent, self.task.name, self.seeds, dataset=dataset).spec()
        defaults = base.config.values()
        overrides = tuple((k, v) for k, v in self.config.values().items() if defaults[k] != v)
        base_protocol = dataclasses.asdict(base.task.protocol)
        protocol = tuple((k, v) for k, v in dataclasses.asdict(self.task.protocol).items() if base_protocol[k] != v)
        return Cell(self.agent, self.task.name, self.seeds, overrides, protocol, dataset)

    def build_agent(self, obs_dim: int, act_dim: int, device: torch.device) -> Agent:
        """The cell's agent, untrained, for data of these sizes."""
        return get_agent_class(self.agent)(obs_dim, act_dim, self.config.config, self.seeds, device)

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()[:10]
        seeds = "-".join(str(s) for s in self.seeds)
        return f"{self.agent}__{self.task.name.replace('/', '--')}__seeds-{seeds}__{digest}"


@dataclasses.dataclass(frozen=True)
class Cell:
    """What a user asks for: an agent on a task for some seeds, with overrides. Plain data (it is what
    a Slurm job carries); :meth:`spec` resolves it against the code that runs it."""

    agent: str
    task: str  # a task name, or a Minari dataset id when ``dataset`` is true
    seeds: tuple[int, ...]
    overrides: tuple[tuple[str, Any], ...] = ()  # hyperparameters (--set, --steps)
    protocol: tuple[tuple[str, Any], ...] = ()  # evaluation protocol overrides (--eval-every, ...)
    dataset: bool = False

    def task_object(self) -> Task:
        task = task_for_dataset(self.task) if self.dataset else get_task(self.task)
        if self.protocol:
            task = dataclasses.replace(task, protocol=dataclasses.replace(task.protocol, **dict(self.protocol)))
        return task

    def spec(self) -> RunSpec:
        task = self.task_object()
        return RunSpec(self.agent, task, self.seeds, resolve_config(self.agent, task, dict(self.overrides)))

    def variant(self) -> str:
        """What this cell changes from the defaults, e.g. ``"eta=0.1, steps=5000"`` ("" for the defaults)."""
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in (*self.overrides, *self.protocol))

    def command(self) -> str:
        """The ``bench run`` command that reproduces this cell."""
        words = ["bench", "run", "--agent", self.agent, "--dataset" if self.dataset else "--task", self.task,
                 "--seeds", ",".join(map(str, self.seeds))]
        flags = {"eval_interval": "--eval-every", "eval_episodes": "--eval-episodes"}
        for key, value in self.protocol:
            words += [flags[key], str(value)]
        for key, value in self.overrides:
            words += ["--steps", str(value)] if key == "steps" else ["--set", f"{key}={json.dumps(value)}"]
        return shlex.join(words)


@dataclasses.dataclass
class RunOptions:
    """How to run a cell; nothing here changes its result (beyond the device's arithmetic)."""

    results_root: Path
    device: torch.device
    log_interval: int = 1000
    checkpoint_interval: int | None = None  # default: the protocol's evaluation interval
    progress: bool = True
    handle_signals: bool = True
    force: bool = False  # retrain a finished run from scratch
    compile: bool | None = None  # torch.compile agent.learn (benchmarks/stepping.py); None: off
    cuda_graphs: bool | None = None  # replay each step from CUDA graphs (benchmarks/stepping.py); None: on for CUDA

    def __post_init__(self) -> None:
        cuda_graphs_wanted(self.cuda_graphs, self.device)  # refused before anything is written


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def save_atomic(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Refuse to train a run that another process is training right now."""
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError(f"run {run_dir.name} is being trained by another process", f"see {run_dir}") from None
        yield


class StopFlag:
    """Defers SIGTERM/SIGUSR2/SIGINT to the end of the current step.

    The handler only records the signal; the loop then writes a checkpoint and calls
    :meth:`deliver`, which hands the signal to whoever handled it before us: under submitit that is
    its requeue logic (USR2: call the job's ``checkpoint``, ``scontrol requeue``, exit) or its
    bypass (SIGTERM: training goes on); otherwise the run stops with :class:`RunInterrupted`.
    A signal handled mid-step would checkpoint half an update; this never does.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)

    def __init__(self, signals: tuple[int, ...] = SIGNALS) -> None:
        self.signals = signals
        self.signal: int | None = None
        self.previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signal is not None

    @contextlib.contextmanager
    def installed(self, enabled: bool) -> Iterator[StopFlag]:
        if not enabled:
            yield self
            return
        self.previous = {s: signal.signal(s, self._handle) for s in self.signals}
        try:
            yield self
        finally:
            for s, handler in self.previous.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def deliver(self, run_id: str, step: int) -> None:
        signum, self.signal = self.signal, None
        handler = self.previous.get(signum)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signum, None)  # may exit (submitit requeue) or return (bypass): then keep training
            return
        raise RunInterrupted(
            f"run {run_id} stopped by signal {signal.Signals(signum).name} at step {step}; checkpoint written",
            "run the same command again to resume",
        )


def seed_scores(evaluations: list[dict[str, Any]], protocol: Protocol) -> dict[str, list[float]]:
    """Per-seed normalised score under each rule: final, mean of the last k, best (on the protocol's grid)."""
    scores = np.array([e["score"] for e in evaluations])  # [n_evals, n_seeds]
    candidates = on_best_grid(np.array([e["step"] for e in evaluations]), protocol.best_interval)
    return {
        "final": scores[-1].tolist(),
        "last_k": scores[-protocol.last_k:].mean(0).tolist(),
        "best": scores[candidates].max(0).tolist(),
    }


class Run:
    """One cell being trained: owns its folder, data, agent, sampler and evaluator."""

    def __init__(self, spec: RunSpec, options: RunOptions):
        self.spec = spec
        self.options = options
        self.dir = options.results_root / "runs" / spec.run_id
        self.protocol = spec.task.protocol
        self.steps = spec.config.config.steps
        self.checkpoint_interval = options.checkpoint_interval or self.protocol.eval_interval

    @property
    def final_path(self) -> Path:
        return self.dir / "final.json"

    def finished(self) -> dict[str, Any] | None:
        if self.final_path.exists() and not self.options.force:
            return json.loads(self.final_path.read_text())
        return None

    def train(self) -> dict[str, Any]:
        if (done := self.finished()) is not None:
            return done
        # bad data, and data the agent's reward convention does not admit, fail before anything is written
        data = load_task_data(self.spec.task, self.options.device)
        agent = self.spec.build_agent(data.obs_dim, data.act_dim, self.options.device)
        try:
            transitions = agent.preprocess(data.transitions)
        except ValueError as err:
            raise DataError(f"{self.spec.task.dataset_id}: reward_transform {agent.config.reward_transform!r}: {err}",
                            "train with another one, e.g. --set reward_transform=none") from None
        if self.options.device.type == "cpu":
            keep_freed_memory()
        self.dir.mkdir(parents=True, exist_ok=True)
        with run_lock(self.dir):
            if self.options.force:
                for name in ("final.json", "checkpoint.pt", "metrics.jsonl", "starts.jsonl"):
                    (self.dir / name).unlink(missing_ok=True)
            return self._train_locked(data, agent, transitions)

    def _train_locked(self, data: TaskData, agent: Agent, transitions: Transitions) -> dict[str, Any]:
        spec, device = self.spec, self.options.device
        batches = SeedStreams(spec.seeds, "batches", device)
        evaluator = Evaluator(data.make_env, self.protocol, len(spec.seeds), data.ref_min_score, data.ref_max_score, device)
        state = {"step": 0, "evaluations": [], "train_seconds": 0.0, "eval_seconds": 0.0, "segments": []}
        checkpoint_path = self.dir / "checkpoint.pt"
        metrics_path = self.dir / "metrics.jsonl"
        if checkpoint_path.exists():
            state = self._resume(checkpoint_path, metrics_path, agent, batches, data)
        else:
            self._start(data)
            metrics_path.write_text("")
        training_step = TrainingStep(agent, transitions, batches, self.options.compile, self.options.cuda_graphs)
        segment = {"from_step": state["step"], "step_mode": training_step.mode, **provenance.collect(device)}
        state["segments"].append(segment)
        with open(self.dir / "starts.jsonl", "a") as f:  # one line per (re)start, never cut back
            f.write(json.dumps(segment) + "\n")

        stop = StopFlag()
        bar = tqdm(
            total=self.steps, initial=state["step"], disable=not self.options.progress, unit="step",
            desc=f"{spec.agent} {spec.task.name}", mininterval=1.0, dynamic_ncols=True,
        )
        try:
            with stop.installed(self.options.handle_signals), open(metrics_path, "a") as metrics_file:
                tick = time.perf_counter()
                for step in range(state["step"] + 1, self.steps + 1):
                    metrics = training_step()
                    bar.update(1)
                    if step % self.options.log_interval == 0:
                        line = {"kind": "train", "step": step, **{k: v.tolist() for k, v in metrics.items()}}
                        metrics_file.write(json.dumps(line) + "\n")
                    if step % self.protocol.eval_interval == 0 or step == self.steps:
                        state["train_seconds"] += time.perf_counter() - tick
                        tick = time.perf_counter()
                        evaluation = evaluator.run(training_step.act)
                        state["eval_seconds"] += time.perf_counter() - tick
                        record = {"kind": "eval", "step": step, **evaluation.per_seed(),
                                  "episode_returns": evaluation.returns.tolist()}
                        state["evaluations"].append(record)
                        metrics_file.write(json.dumps(record) + "\n")
                        bar.set_postfix(score=f"{np.mean(record['score']):.1f}")
                        tick = time.perf_counter()
                    if step % self.checkpoint_interval == 0 or stop or step == self.steps:
                        state["step"] = step
                        state["train_seconds"] += time.perf_counter() - tick
                        tick = time.perf_counter()
                        metrics_file.flush()
                        os.fsync(metrics_file.fileno())  # on disk before the checkpoint that counts its bytes
                        self._checkpoint(checkpoint_path, metrics_file.tell(), state, agent, batches, data)
                    if stop:
                        stop.deliver(spec.run_id, step)
        finally:
            bar.close()
            evaluator.close()
        return self._finish(state, data)

    def _start(self, data: TaskData) -> None:
        cell = self.spec.cell()  # resolves the default config: once for both fields
        write_json_atomic(
            self.dir / "config.json",
            {
                "run_id": self.spec.run_id,
                **self.spec.identity(),
                "reproduce": cell.command(),
                "variant": cell.variant(),
                "config_sources": self.spec.config.sources,
                "task_info": dataclasses.asdict(self.spec.task),
                "dataset": data.info.summary(),
            },
        )

    def _checkpoint(self, path: Path, metrics_offset: int, state: dict, agent, batches: SeedStreams, data: TaskData) -> None:
        save_atomic(
            path,
            {
                "run_id": self.spec.run_id,
                "dataset_sha256": data.info.sha256,
                "metrics_offset": metrics_offset,
                "state": state,
                "agent": agent.state_dict(),
                "batches": batches.state_dict(),
            },
        )

    def _resume(self, path: Path, metrics_path: Path, agent, batches: SeedStreams, data: TaskData) -> dict[str, Any]:
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)  # load_state_dict moves each piece
        except Exception as err:  # a truncated or foreign file; say which and what to do
            raise DataError(f"{path}: unreadable checkpoint ({type(err).__name__})", "delete it to restart the run") from None
        if saved["run_id"] != self.spec.run_id:
            raise DataError(f"{path}: checkpoint belongs to run {saved['run_id']}", "delete it to restart the run")
        if saved["dataset_sha256"] != data.info.sha256:
            raise DataError(
                f"{path}: the dataset {self.spec.task.dataset_id} changed since this run started",
                "restore the original data, or pass --force to retrain from scratch",
            )
        written_on = torch.device(saved["state"]["segments"][-1]["device"]).type
        if written_on != self.options.device.type:  # a CPU and a CUDA generator draw different numbers
            raise DataError(
                f"{path}: checkpoint written on {written_on}, whose random streams do not continue on {self.options.device.type}",
                f"resume with --device {written_on}, or pass --force to retrain from scratch",
            )
        written = metrics_path.stat().st_size if metrics_path.exists() else 0
        if written < saved["metrics_offset"]:  # lost in a crash: cutting back to the offset would pad it with NULs
            raise DataError(
                f"{metrics_path}: {written} bytes, shorter than the {saved['metrics_offset']} its checkpoint recorded",
                f"delete {path} to retrain the run from scratch (bench run: --force)",
            )
        agent.load_state_dict(saved["agent"])
        batches.load_state_dict(saved["batches"])
        with open(metrics_path, "r+") as f:
            f.truncate(saved["metrics_offset"])
        return saved["state"]

    def _finish(self, state: dict[str, Any], data: TaskData) -> dict[str, Any]:
        evaluations = state["evaluations"]
        per_protocol = seed_scores(evaluations, self.protocol)
        reported = per_protocol[self.protocol.score]
        total_seconds = state["train_seconds"] + state["eval_seconds"]
        final = {
            "run_id": self.spec.run_id,
            **self.spec.identity(),
            "reproduce": self.spec.cell().command(),
            "score": {
                "protocol": self.protocol.score,
                "per_seed": dict(zip(map(str, self.spec.seeds), reported)),
                "mean": float(np.mean(reported)),
                "std": float(np.std(reported, ddof=1)) if len(reported) > 1 else None,  # sample std, as the report
            },
            "scores": {name: dict(zip(map(str, self.spec.seeds), values)) for name, values in per_protocol.items()},
            "final_return": dict(zip(map(str, self.spec.seeds), evaluations[-1]["return"])),
            "evaluations": len(evaluations),
            "compute": {
                "train_seconds": state["train_seconds"],
                "eval_seconds": state["eval_seconds"],
                "updates_per_second": self.steps / state["train_seconds"] if state["train_seconds"] else None,
                "total_seconds": total_seconds,
            },
            "config_sources": self.spec.config.sources,
            "dataset": data.info.summary(),
            "provenance": {**state["segments"][-1], "segments": state["segments"]},
        }
        write_json_atomic(self.final_path, final)
        return final
