"""Sweeps: every cell of a suite as submitit jobs, idempotently, with a manifest per submission.

``bench submit`` plans one job per (agent, task) with its seeds trained together (or one per seed),
skips cells that are finished (their ``final.json`` exists) or queued/running in an earlier sweep,
freezes the code (a copy of the git-tracked files, as submitit's ``RsyncSnapshot`` does) so that
editing the checkout cannot change waiting jobs, submits the rest as one Slurm job array, and writes
``results/sweeps/<sweep id>/manifest.json`` (cells, run ids, job ids, profile, code version).
Planning, submission and the manifest happen under one lock, so two racing submits never submit
a cell twice or lose a record. Local jobs start as slots free up (``--parallel``), which can take as
long as the sweep: their manifest is written first, with every cell queued and the launching
process recorded, and updated as each job starts, outside the lock, so that ``bench status`` and
``bench cancel`` work from the start and a second submit skips the queued cells.

Local processes are recorded by pid, the start time the kernel gives them and the machine's boot
id, so a pid the system has since given to another process is never taken for the job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import io
import json
import os
import pickle
import secrets
import shutil
import signal
import socket
import subprocess
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import submitit

from benchmarks import provenance
from benchmarks.errors import BenchError, ConfigError, RunInterrupted
from benchmarks.training import Cell, StopFlag, write_json_atomic
from slurm.jobs import CellJob
from slurm.profile import Profile

ACTIVE = {"queued", "pending", "running", "requeued", "unknown"}
# queued: a local cell waiting for a free slot; unstarted: one its launcher never started (submitted again as
# new); unknown: a local job on another machine, whose process cannot be looked at from here
SLURM_STATES = {  # sacct state -> what `bench status` shows
    "PENDING": "pending", "REQUEUED": "requeued", "REQUEUE_HOLD": "requeued", "REQUEUE_FED": "requeued",
    "RUNNING": "running", "COMPLETING": "running", "CONFIGURING": "running", "RESIZING": "running",
    "SUSPENDED": "running", "PREEMPTED": "requeued", "COMPLETED": "done", "FAILED": "failed",
    "CANCELLED": "cancelled", "TIMEOUT": "failed", "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed", "DEADLINE": "failed",
}
CANCEL_WAIT_S = 60  # how long `bench cancel` waits for local and debug jobs to stop


@dataclasses.dataclass
class PlannedJob:
    cell: Cell
    run_id: str
    steps: int
    state: str = "new"  # new, done, or the state of its job in an earlier sweep
    previous: dict[str, Any] | None = None  # that job's record


def plan(cells: list[Cell], results_root: Path) -> list[PlannedJob]:
    """Resolve every cell (bad agents/tasks/overrides fail here, before anything is submitted), once per run id."""
    by_run: dict[str, PlannedJob] = {}
    for cell in cells:
        spec = cell.spec()
        by_run.setdefault(spec.run_id, PlannedJob(cell, spec.run_id, spec.config.config.steps))
    planned = list(by_run.values())
    latest = latest_records(results_root)
    live = job_states([latest[p.run_id] for p in planned if p.run_id in latest], results_root)
    for job in planned:
        if (results_root / "runs" / job.run_id / "final.json").exists():
            job.state = "done"
        elif job.run_id in latest:
            job.previous = latest[job.run_id]
            job.state = "new" if live[job.run_id] in ("done", "unstarted") else live[job.run_id]  # done: run deleted
    return planned


def to_submit(planned: list[PlannedJob], retry_failed: bool) -> list[PlannedJob]:
    """The planned jobs a submission sends: new ones, and with ``retry_failed`` failed or cancelled ones."""
    return [p for p in planned if p.state == "new" or (retry_failed and p.state in ("failed", "cancelled"))]


# ------------------------------------------------------------------------------------ records


def sweeps_dir(results_root: Path) -> Path:
    return results_root / "sweeps"


def manifests(results_root: Path) -> list[dict[str, Any]]:
    paths = sorted(sweeps_dir(results_root).glob("*/manifest.json"))
    return [json.loads(p.read_text()) for p in paths]


def latest_records(results_root: Path) -> dict[str, dict[str, Any]]:
    """The most recent job record of every run id, over all sweeps."""
    latest: dict[str, dict[str, Any]] = {}
    for manifest in sorted(manifests(results_root), key=lambda m: m["created"]):
        for record in job_records(manifest):
            latest[record["run_id"]] = record
    return latest


def job_records(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The sweep's job records, each with what the sweep knows of where it runs (executor, machine, launcher)."""
    sweep_fields = {"sweep": manifest["sweep_id"], "executor": manifest["executor"],
                    **{k: manifest[k] for k in ("boot_id", "host", "launcher") if k in manifest}}
    return [{**record, **sweep_fields} for record in manifest["jobs"]]


def load_manifest(results_root: Path, sweep_id: str | None) -> dict[str, Any]:
    found = manifests(results_root)
    if not found:
        raise ConfigError(f"no sweep under {sweeps_dir(results_root)}", "submit one with `bench submit`")
    if sweep_id is None:
        return max(found, key=lambda m: m["created"])
    for manifest in found:
        if manifest["sweep_id"] == sweep_id:
            return manifest
    raise ConfigError(f"unknown sweep {sweep_id!r}", f"known: {', '.join(m['sweep_id'] for m in found)}")


@contextlib.contextmanager
def submission_lock(results_root: Path) -> Iterator[None]:
    sweeps_dir(results_root).mkdir(parents=True, exist_ok=True)
    with open(sweeps_dir(results_root) / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ------------------------------------------------------------------------------------ job states


def _result(record: dict[str, Any]) -> tuple[str, str] | None:
    """What submitit stored when the job ended: ("success", value) or ("error", traceback); None before."""
    path = submitit.core.utils.JobPaths(Path(record["log_folder"]), job_id=record["job_id"], task_id=0).result_pickle
    if not path.exists():
        return None
    with open(path, "rb") as f:
        return pickle.load(f)


def _ended_state(result: tuple[str, str]) -> str:
    if result[0] == "success":
        return "done"
    last = result[1].strip().splitlines()[-1] if result[1].strip() else ""
    return "cancelled" if f"{RunInterrupted.__name__}:" in last else "failed"  # SIGINT: `bench cancel`


def job_states(records: list[dict[str, Any]], results_root: Path) -> dict[str, str]:
    """Current state of each recorded job by run id: pending, running, requeued, done, failed or cancelled."""
    states: dict[str, str] = {}
    ask_slurm = []
    for record in records:
        run_id = record["run_id"]
        if (results_root / "runs" / run_id / "final.json").exists():
            states[run_id] = "done"
        elif "job_id" not in record:  # a local cell its launcher has not started (yet)
            launcher = process_state(record, record.get("launcher"))
            states[run_id] = {"alive": "queued", "unknown": "unknown"}.get(launcher, "unstarted")
        elif (result := _result(record)) is not None:
            states[run_id] = _ended_state(result)
        elif record["executor"] == "slurm":
            ask_slurm.append(record)
        else:  # local: the job's controller process; debug: the process that runs the jobs
            states[run_id] = {"alive": "running", "unknown": "unknown"}.get(process_state(record, record), "failed")
    sacct = _sacct_states([r["job_id"] for r in ask_slurm]) if ask_slurm else {}
    for record in ask_slurm:
        job_id = record["job_id"]
        unknown = "pending" if job_id not in sacct else "failed"  # not in sacct yet / a state not listed
        states[record["run_id"]] = SLURM_STATES.get(sacct.get(job_id, ""), unknown)
    return states


def boot_id() -> str:
    """This boot of this machine (Linux); a pid and start time identify a process only within one boot."""
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: [state, ppid, ...]; field 22 (start time) is index 19."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_identity(pid: int) -> dict[str, int]:
    """What tells this process from a later one given the same pid: {"pid", "pid_start"} (clock ticks after boot)."""
    fields = _stat_fields(pid)
    return {"pid": pid, **({"pid_start": int(fields[19])} if fields else {})}


def _pid_alive(pid: int, start: int | None = None) -> bool:
    """The process runs (not a zombie) and, where ``start`` is given, is the one that started then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if fields is None:
        return not Path("/proc").is_dir()  # no procfs: the kill test is all there is
    return fields[0] != "Z" and (start is None or int(fields[19]) == start)


def process_state(record: dict[str, Any], identity: dict[str, int] | None) -> str:
    """alive, gone, or unknown (recorded on another machine or boot: its processes cannot be looked at here)."""
    if identity is None or "pid" not in identity:
        return "gone"
    if record.get("boot_id", boot_id()) != boot_id():
        return "unknown"
    return "alive" if _pid_alive(identity["pid"], identity.get("pid_start")) else "gone"


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc/<pid>/stat``: "pid (name) state ppid ...")."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(int(stat.parent.name))
        if fields is not None and int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _slurm_command(args: list[str], hint: str) -> str:
    """Run a Slurm client command and return its output; missing, hanging or failing, one clear error."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise BenchError(f"{args[0]} is not on the PATH, and this sweep ran on Slurm",
                         "run this where Slurm's client commands are, e.g. on the cluster's login node") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{args[0]} did not answer within 60 s", hint) from None
    if out.returncode != 0:
        raise BenchError(f"{args[0]} failed: {' '.join(out.stderr.split())}", hint)
    return out.stdout


def _sacct_states(job_ids: list[str]) -> dict[str, str]:
    """``sacct`` states of jobs (array tasks as ``ARRAY_TASK``); empty where sacct has no record yet."""
    arrays = ",".join(sorted({j.split("_")[0] for j in job_ids}))
    output = _slurm_command(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", arrays],
                            "is Slurm accounting (slurmdbd) running?")
    states = {}
    for line in output.splitlines():
        job_id, state = line.split("|")[:2]
        states[job_id] = state.split()[0]  # "CANCELLED by 0" -> CANCELLED
    return states


# ------------------------------------------------------------------------------------ submission


def snapshot_code(destination: Path) -> dict[str, Any]:
    """Copy the checkout's files as they are now (tracked, and untracked but not ignored) to ``destination``."""
    root = provenance.CODE_ROOT
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                capture_output=True, timeout=60)
    except FileNotFoundError:
        raise BenchError("git is not installed, so the checkout's code cannot be listed and frozen for the jobs",
                         "install git") from None
    if listed.returncode != 0:
        raise BenchError(f"{root} is not a git checkout, so its code cannot be frozen for the jobs")
    for name in listed.stdout.decode().split("\0"):
        if name and (root / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, destination / name)
    version = {**provenance.git_state(root), "snapshot": str(destination)}
    write_json_atomic(destination / provenance.CODE_VERSION_FILE, version)
    return version


@contextlib.contextmanager
def running_from(code: Path) -> Iterator[None]:
    """Submit with the snapshot as working directory and first on PYTHONPATH: jobs import it."""
    cwd, pythonpath = os.getcwd(), os.environ.get("PYTHONPATH")
    os.chdir(code)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), pythonpath]))
    try:
        yield
    finally:
        os.chdir(cwd)
        if pythonpath is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = pythonpath


def make_executor(kind: str, folder: Path, profile: Profile) -> submitit.Executor:
    if kind == "slurm":
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.max_requeues)
        executor.update_parameters(**profile.submitit_parameters(), job_name="bench")
    elif kind == "local":  # sets CUDA_VISIBLE_DEVICES to GPUs 0..gpus_per_node-1 ("" for none: see local_environment)
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=profile.max_requeues)
        executor.update_parameters(timeout_min=profile.time_min, signal_delay_s=profile.signal_delay_s,
                                   gpus_per_node=profile.gpus_per_node)
    elif kind == "debug":
        executor = submitit.DebugExecutor(folder=folder)
    else:
        raise ConfigError(f"unknown executor {kind!r}", "use slurm, local or debug")
    return executor


def local_environment(executor_kind: str, profile: Profile) -> tuple[tuple[str, str | None], ...]:
    """Variables a job restores first: local jobs that ask for no GPU see the GPUs this shell sees, not none."""
    if executor_kind == "local" and not profile.gpus_per_node:
        return (("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES")),)
    return ()


def launch(executor: submitit.Executor, executor_kind: str, calls: list[CellJob]) -> list[submitit.Job]:
    """Submit the calls as one Slurm job array (one sbatch: all or nothing), or as debug jobs (they run in
    :func:`wait`). Local jobs start one by one in :func:`launch_local`."""
    if executor_kind == "slurm":
        try:
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():  # submitit echoes sbatch's errors
                return [executor.submit(call) for call in calls]
        except submitit.core.utils.FailedJobError as err:
            lines = [line.removeprefix("sbatch: error: ").strip() for line in str(err).splitlines()]
            reason = "; ".join(filter(None, lines))
            raise ConfigError(f"sbatch refused the jobs: {reason}", "check the profile's partition, account, qos, "
                              "constraint and extra_sbatch; `sinfo` lists the partitions") from None
    return [executor.submit(call) for call in calls]


@dataclasses.dataclass
class Submission:
    manifest: dict[str, Any]
    jobs: list[submitit.Job]
    folder: Path  # results/sweeps/<sweep id>
    executor: submitit.Executor
    queued: list[CellJob]  # local calls not started yet: launch_local starts them


def cell_fields(planned: PlannedJob) -> dict[str, Any]:
    return {"run_id": planned.run_id, "agent": planned.cell.agent, "variant": planned.cell.variant(),
            "task": planned.cell.task, "seeds": list(planned.cell.seeds), "steps": planned.steps,
            "reproduce": planned.cell.command()}


def job_fields(job: submitit.Job, executor_kind: str) -> dict[str, Any]:
    return {
        "job_id": str(job.job_id), "log_folder": str(job.paths.folder),
        "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
        **(process_identity(int(job.job_id)) if executor_kind == "local" else {}),  # the job's controller
        **(process_identity(os.getpid()) if executor_kind == "debug" else {}),  # this process runs debug jobs
    }


def submit(
    planned: list[PlannedJob],
    *,
    executor_kind: str,
    profile: Profile,
    results_root: Path,
    retry_failed: bool,
    parallel: int,
    command: list[str],
) -> Submission | None:
    """Submit what is new (and failed, with ``retry_failed``); None when there is nothing to submit. Local jobs
    are only recorded as queued here: :func:`launch_local` starts them. If submission fails, the sweep's folder
    (code snapshot, logs) is removed: nothing is left half made."""
    todo = to_submit(planned, retry_failed)
    if not todo:
        return None
    if executor_kind == "slurm" and not shutil.which("sbatch"):
        raise ConfigError("executor slurm, but sbatch is not on the PATH",
                          "load Slurm's client commands, or use --executor local")
    sweep_id = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    sweep = sweeps_dir(results_root) / sweep_id
    code, logs = sweep / "code", sweep / "logs"
    code.mkdir(parents=True)
    try:
        version = snapshot_code(code)
        executor = make_executor(executor_kind, logs / "%j", profile)
        if executor_kind == "slurm":
            executor.update_parameters(setup=[f"export PYTHONPATH={code}:$PYTHONPATH", *profile.setup])
        threads = profile.cpus_per_task if executor_kind == "slurm" else max(1, (os.cpu_count() or 1) // parallel)
        environment = local_environment(executor_kind, profile)
        calls = [CellJob(p.cell, p.run_id, str(results_root.resolve()), threads, environment) for p in todo]
        jobs = []
        if executor_kind != "local":
            with running_from(code):
                jobs = launch(executor, executor_kind, calls)
        manifest = {
            "sweep_id": sweep_id,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command,
            "executor": executor_kind,
            "profile": dataclasses.asdict(profile),
            "code": version,
            "results_root": str(results_root.resolve()),
            "host": socket.gethostname(),
            "boot_id": boot_id(),
            **({"launcher": process_identity(os.getpid())} if executor_kind == "local" else {}),
            "jobs": [cell_fields(p) for p in todo],  # local: queued until launch_local starts them
            "skipped": [{"run_id": p.run_id, "state": p.state} for p in planned if p not in todo],
        }
        for record, job in zip(manifest["jobs"], jobs):
            record.update(job_fields(job, executor_kind))
        write_json_atomic(sweep / "manifest.json", manifest)
    except BaseException:
        shutil.rmtree(sweep, ignore_errors=True)
        raise
    return Submission(manifest, jobs, sweep, executor, calls if executor_kind == "local" else [])


class LaunchStopped(Exception):
    """SIGTERM (``bench cancel`` sends it) or SIGINT reached the process that starts a sweep's local jobs."""


def launch_local(submission: Submission, results_root: Path, parallel: int) -> None:
    """Start the queued local jobs, at most ``parallel`` at once, recording each in the manifest as it starts.
    Stopped (SIGTERM from ``bench cancel``, Ctrl-C, an error), it cancels the jobs it started, records the rest
    as never started (a later submit starts them) and raises; with none started the sweep's folder goes. The
    signals are recorded, and acted on between starts and every 0.5 s while it waits for a free slot."""
    manifest, path = submission.manifest, submission.folder / "manifest.json"
    interactive = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # `bench submit ... &` ignores SIGINT
    stop = StopFlag((signal.SIGTERM, *([signal.SIGINT] if interactive else [])))  # signals are only recorded ...
    try:
        with stop.installed(True), running_from(submission.folder / "code"):
            for i, call in enumerate(submission.queued):
                while not stop and sum(not j.done() for j in submission.jobs) >= parallel:
                    time.sleep(0.5)
                if stop:
                    raise LaunchStopped
                job = submission.executor.submit(call)  # ... so no job is started and left unrecorded
                submission.jobs.append(job)
                manifest["jobs"][i].update(job_fields(job, "local"))
                write_json_atomic(path, manifest)
            if stop:
                raise LaunchStopped
    except BaseException as err:
        del manifest["launcher"]
        started = len(submission.jobs)
        if started:
            write_json_atomic(path, manifest)
            cancel(manifest, results_root)
        else:
            shutil.rmtree(submission.folder, ignore_errors=True)
        if isinstance(err, LaunchStopped):
            raise RunInterrupted(
                f"sweep {manifest['sweep_id']}: stopped after starting {started} of {len(manifest['jobs'])} job(s)"
                + ("; those were cancelled after their checkpoint" if started else ", so the sweep was removed"),
                "the same `bench submit`" + (" with --retry-failed resumes them and starts the rest" if started
                                             else " starts them")) from None
        raise
    del manifest["launcher"]
    write_json_atomic(path, manifest)


def wait(jobs: list[submitit.Job], poll_s: float = 5.0) -> None:
    """Block until every job has ended (its result or error is known). Debug jobs run here, one after another;
    a failed one's error is stored where submitit stores a job's, and SIGINT (`bench cancel`) stops them all."""
    for job in jobs:
        if isinstance(job, submitit.DebugJob):
            try:
                job.results()
            except Exception as err:
                with open(job.paths.result_pickle, "wb") as f:
                    pickle.dump(("error", traceback.format_exc()), f)
                if isinstance(err, RunInterrupted):
                    return
    while not all(job.done() for job in jobs):
        time.sleep(poll_s)


# ------------------------------------------------------------------------------------ status, cancel


def progress(results_root: Path, run_id: str) -> tuple[int, float | None]:
    """Last logged step and last mean evaluation score of a run (from its metrics.jsonl)."""
    path = results_root / "runs" / run_id / "metrics.jsonl"
    step, score = 0, None
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            step = max(step, record["step"])
            if record["kind"] == "eval":
                score = sum(record["score"]) / len(record["score"])
    return step, score


def error_tail(record: dict[str, Any], lines: int = 3) -> str:
    result = _result(record)
    text = result[1] if result is not None and result[0] == "error" else ""
    if not text and Path(record["stderr"]).exists():
        text = Path(record["stderr"]).read_text(errors="replace")
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def starts(results_root: Path, run_id: str) -> int:
    """How many times the run has been started (1 + restarts after preemption, timeout or crash)."""
    path = results_root / "runs" / run_id / "starts.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def manifest_states(manifest: dict[str, Any], results_root: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The sweep's job records (with the sweep's fields) and the current state of each job."""
    records = job_records(manifest)
    return records, job_states(records, results_root)


def status_rows(manifest: dict[str, Any], results_root: Path) -> list[dict[str, Any]]:
    records, states = manifest_states(manifest, results_root)
    rows = []
    for record in records:
        state = states[record["run_id"]]
        step, score = progress(results_root, record["run_id"])
        restarts = max(starts(results_root, record["run_id"]) - 1, 0)
        if state == "pending" and restarts:
            state = "requeued"
        rows.append({
            **record, "state": state, "step": step, "score": score, "restarts": restarts,
            "error": error_tail(record) if state in ("failed", "cancelled") else "",
        })
    return rows


def cancel(manifest: dict[str, Any], results_root: Path) -> tuple[list[str], int]:
    """Cancel the sweep's jobs that are still queued, pending or running; returns the ids of the jobs cancelled
    and how many queued cells will not start. Local and debug jobs get SIGINT, as submitit's ``LocalJob.cancel``
    sends (the run checkpoints and stops), and are waited for; a local sweep still starting its jobs has its
    launcher stopped first (SIGTERM: it cancels what it started)."""
    records, states = manifest_states(manifest, results_root)
    if "unknown" in states.values():
        raise BenchError(f"sweep {manifest['sweep_id']} runs local processes on {manifest.get('host')} (another "
                         "machine or boot), which cannot be signalled from here", "run `bench cancel` there")
    queued = sum(state == "queued" for state in states.values())
    launcher = manifest.get("launcher")
    if queued and process_state(manifest, launcher) == "alive":
        with contextlib.suppress(ProcessLookupError):
            os.kill(launcher["pid"], signal.SIGTERM)
        _wait_for_exit([launcher], 2 * CANCEL_WAIT_S)
        path = sweeps_dir(results_root) / manifest["sweep_id"] / "manifest.json"
        if not path.exists():  # it had started nothing: the sweep is gone
            return [], queued
        manifest = json.loads(path.read_text())
        records, states = manifest_states(manifest, results_root)
        cancelled = [r["job_id"] for r in records if states[r["run_id"]] == "cancelled"]
        queued = sum(state == "unstarted" for state in states.values())
    else:
        cancelled = []
    active = [r for r in records if states[r["run_id"]] in ACTIVE and "job_id" in r]
    if active and manifest["executor"] == "slurm":
        _slurm_command(["scancel", *(r["job_id"] for r in active)], "is slurmctld running?")
    processes = [r for r in active if "pid" in r and _pid_alive(r["pid"], r.get("pid_start"))]
    if manifest["executor"] == "local":  # the task too: a controller started in the background ignores SIGINT
        processes += [process_identity(child) for r in processes for child in _children(r["pid"])]
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process["pid"], signal.SIGINT)
    _wait_for_exit(processes, CANCEL_WAIT_S)
    return cancelled + [r["job_id"] for r in active], queued


def _wait_for_exit(processes: list[dict[str, int]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (still := sorted(p["pid"] for p in processes if _pid_alive(p["pid"], p.get("pid_start")))) and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    if still:
        raise BenchError(f"process(es) {' '.join(map(str, still))} still running {timeout_s} s after the signal",
                         "stop them with kill -INT (kill -KILL loses their current checkpoint interval)")
