"""`bench submit` against a real single-node Slurm cluster (slurm/cluster.sh: slurmctld, slurmd,
slurmdbd + MariaDB, munge), the same sweep on submitit's local and debug executors, and bad input.

The cluster is started once for this module with a preemptable partition (`debug`), a partition
that preempts it (`high`) and two fake GPUs. Without Slurm's Debian packages (or root) the cluster
tests are skipped, unless BENCH_REQUIRE_SLURM=1 (set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from benchmarks.errors import BenchError, ConfigError, DataError
from benchmarks.training import Cell, Run, RunOptions
from slurm import sweep
from slurm.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "slurm" / "cluster.sh"
SHORT = ["--steps", "200", "--eval-every", "100", "--eval-episodes", "3"]


def cluster_available() -> str | None:
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root"
    missing = [p for p in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch") if not shutil.which(p)
               and not Path(f"/usr/sbin/{p}").exists()]
    return f"Slurm packages missing: {', '.join(missing)} (slurm/cluster.sh start installs them)" if missing else None


@pytest.fixture(scope="module")
def cluster(quickstart):
    reason = cluster_available()
    if reason:
        if os.environ.get("BENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"BENCH_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    # munged wants every folder above its socket to be world-searchable, which pytest's tmp is not
    directory = Path(tempfile.mkdtemp(prefix="bench-slurm-test-", dir="/tmp"))
    directory.chmod(0o755)
    env = {**os.environ, "BENCH_SLURM_DIR": str(directory), "PREEMPT": "1", "FAKE_GPUS": "2", "INSTALL": "0"}
    subprocess.run([str(CLUSTER), "stop"], env=env, capture_output=True)
    started = subprocess.run([str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(directory / "etc" / "slurm.conf"))
        yield directory
    subprocess.run([str(CLUSTER), "stop"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(directory, ignore_errors=True)


def bench(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "benchmarks.cli", *args], capture_output=True, text=True,
                            timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    print(result.stdout, result.stderr)
    return result


def one_line_error(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert result.returncode == code and result.stderr.count("\n") == 1 and result.stderr.startswith("bench: error:")
    assert all(word in result.stderr for word in words), result.stderr


def sweep_folders(results: Path) -> list[Path]:
    return [p for p in (results / "sweeps").glob("*") if p.is_dir()]


def env_without(program: str, folder: Path) -> dict:
    """The environment with PATH less ``program``: folders holding it are replaced by ``folder``, of links
    to their other programs."""
    env = dict(os.environ)
    folder.mkdir()
    folders = []
    for entry in env["PATH"].split(os.pathsep):
        if Path(entry, program).exists():
            for path in Path(entry).iterdir():
                if path.name != program and not (folder / path.name).exists():
                    (folder / path.name).symlink_to(path)
            entry = str(folder)
        folders.append(entry)
    env["PATH"] = os.pathsep.join(folders)
    return env


def job_result(job: dict) -> tuple:
    with open(Path(job["log_folder"]) / f"{job['job_id']}_0_result.pkl", "rb") as f:
        return pickle.load(f)


@pytest.fixture
def one_thread():
    """Torch on one thread in this process (as in the jobs): many threads crawl on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def latest_manifest(results: Path) -> dict:
    return max(sweep.manifests(results), key=lambda m: m["created"])


def final(results: Path, run_id: str) -> dict:
    return json.loads((results / "runs" / run_id / "final.json").read_text())


def sacct(job_id: str, field: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", field, "-j", job_id], capture_output=True, text=True)
    return out.stdout.strip()


def final_state(job_id: str, timeout_s: float = 60) -> str:
    """The state Slurm's accounting ends a job in. A job's result file is written before its process exits,
    and slurmdbd records the end a moment later, so a job just seen done may still read RUNNING here."""
    deadline = time.time() + timeout_s
    while (state := sacct(job_id, "State")) in {"", "PENDING", "RUNNING", "COMPLETING", "REQUEUED"}:
        assert time.time() < deadline, f"Slurm still reports job {job_id} as {state or 'unknown'}"
        time.sleep(0.5)
    return state


def test_sweep_runs_as_arrays_and_a_second_submit_submits_nothing(cluster, tmp_path):
    args = ["submit", "--suite", "quickstart-all", "--agents", "iql,bc", "--seeds", "0,1", *SHORT,
            "--profile", "local-cluster", "--results", str(tmp_path)]
    first = bench(*args, "--wait")
    assert first.returncode == 0 and "executor: slurm (sbatch found)" in first.stdout
    manifest = latest_manifest(tmp_path)
    assert len(manifest["jobs"]) == 4 and manifest["executor"] == "slurm"
    array_ids = {job["job_id"].split("_")[0] for job in manifest["jobs"]}
    assert len(array_ids) == 1 and all("_" in job["job_id"] for job in manifest["jobs"])  # one job array
    for job in manifest["jobs"]:
        result = final(tmp_path, job["run_id"])
        assert result["seeds"] == [0, 1] and set(result["score"]["per_seed"]) == {"0", "1"}
        assert Path(job["log_folder"]) == Path(job["stdout"]).parent and job_result(job)[0] == "success"
        assert result["provenance"]["slurm"]["SLURM_ARRAY_JOB_ID"] in array_ids
        assert result["provenance"]["git"]["snapshot"] == str(tmp_path / "sweeps" / manifest["sweep_id"] / "code")
        assert final_state(job["job_id"]) == "COMPLETED"
    assert manifest["code"]["commit"] and Path(manifest["code"]["snapshot"], "benchmarks", "training.py").exists()
    status = bench("status", "--results", str(tmp_path))
    assert status.stdout.count(" done ") == 4 and "4 done" in status.stdout
    again = bench(*args)
    assert again.returncode == 0 and "nothing to submit" in again.stdout and again.stdout.count("skip   done") == 4
    assert len(sweep.manifests(tmp_path)) == 1


def test_sbatch_refusing_the_jobs_is_one_line_and_leaves_no_sweep(cluster, tmp_path):
    (tmp_path / "bad.toml").write_text('partition = "no-such-partition"\n')
    refused = bench("submit", "--suite", "quickstart", "--agents", "bc", "--seeds", "0", *SHORT,
                    "--profile", str(tmp_path / "bad.toml"), "--results", str(tmp_path / "results"))
    one_line_error(refused, 2, "sbatch refused the jobs", "nvalid partition")
    assert sweep_folders(tmp_path / "results") == []


def test_preempted_job_resumes_from_its_checkpoint_to_the_same_result(cluster, tmp_path, one_thread):
    # one evaluation, at the end: checkpoints come only from SIGUSR2 and the end, so resuming from a
    # step between 0 and the end shows that the loop checkpointed where the signal found it
    steps = 2000
    cell = ["--agents", "iql", "--tasks", "quickstart/reacher/mixed-v0", "--seeds", "0,1",
            "--steps", str(steps), "--eval-every", str(steps), "--eval-episodes", "3"]
    submitted = bench("submit", "--suite", "quickstart", *cell, "--profile", "local-cluster",
                      "--results", str(tmp_path / "slurm"))
    assert submitted.returncode == 0
    job = latest_manifest(tmp_path / "slurm")["jobs"][0]
    run_dir = tmp_path / "slurm" / "runs" / job["run_id"]
    deadline = time.time() + 300
    while not (run_dir / "starts.jsonl").exists():  # written as the training loop starts
        assert time.time() < deadline, "the job never started training"
        time.sleep(0.2)
    node_cpus = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%c"], capture_output=True, text=True,
                               check=True).stdout.split()[0]  # the whole node, whatever its core count
    blocker = subprocess.run(["sbatch", "--parsable", "-p", "high", "-c", node_cpus, "-o", "/dev/null",
                              "--wrap", "sleep 5"], capture_output=True, text=True, check=True).stdout.strip()
    states = set()
    deadline = time.time() + 600
    while not (tmp_path / "slurm" / "runs" / job["run_id"] / "final.json").exists():
        assert time.time() < deadline, "the preempted job never finished"
        states.add(sacct(job["job_id"], "State"))
        time.sleep(0.5)
    assert final_state(blocker) == "COMPLETED"
    starts = (run_dir / "starts.jsonl").read_text().splitlines()
    assert len(starts) == 2 and 0 < json.loads(starts[1])["from_step"] < steps, "not resumed from a SIGUSR2 checkpoint"
    assert states & {"REQUEUED", "PENDING", "PREEMPTED"}
    log = Path(job["stdout"]).read_text()
    assert "Caught signal SIGUSR2" in log and "Calling checkpoint method" in log and "Requeued job" in log

    # the same cell, uninterrupted, in this process
    reference = Run(Cell("iql", "quickstart/reacher/mixed-v0", (0, 1), (("steps", steps),),
                         (("eval_episodes", 3), ("eval_interval", steps))).spec(),
                    RunOptions(results_root=tmp_path / "local", device=torch.device("cpu"), progress=False))
    expected = reference.train()
    resumed = final(tmp_path / "slurm", job["run_id"])
    assert resumed["run_id"] == expected["run_id"]
    assert resumed["scores"] == expected["scores"]
    metrics_lines = [(d / "metrics.jsonl").read_text() for d in (run_dir, reference.dir)]
    assert metrics_lines[0] == metrics_lines[1]


def test_failed_cell_is_reported_and_only_it_is_retried(cluster, quickstart, tmp_path):
    partial = tmp_path / "minari"  # the pendulum data is missing here, so its cell fails
    shutil.copytree(quickstart / "quickstart" / "reacher", partial / "quickstart" / "reacher")
    shutil.copy(quickstart / "quickstart" / "namespace_metadata.json", partial / "quickstart")
    args = ["submit", "--suite", "quickstart-all", "--agents", "bc", "--seeds", "0", *SHORT,
            "--profile", "local-cluster", "--results", str(tmp_path / "results")]
    first = bench(*args, "--wait", env={**os.environ, "MINARI_DATASETS_PATH": str(partial)})
    failed = [j["run_id"] for j in latest_manifest(tmp_path / "results")["jobs"] if "pendulum" in j["task"]]
    one_line_error(first, 5, "1 of 2 cell(s) did not finish", *failed, "bench status", "--retry-failed")
    status = bench("status", "--results", str(tmp_path / "results"))
    assert "1 done" in status.stdout and "1 failed" in status.stdout
    assert "has not been generated" in status.stdout and "_log.err" in status.stdout
    plain = bench(*args)
    assert "nothing to submit" in plain.stdout and "--retry-failed" in plain.stdout
    retried = bench(*args, "--retry-failed", "--wait")
    assert retried.returncode == 0
    manifest = latest_manifest(tmp_path / "results")
    assert [j["task"] for j in manifest["jobs"]] == ["quickstart/invertedpendulum/mixed-v0"]
    assert "1 done" in bench("status", "--results", str(tmp_path / "results")).stdout  # the retry sweep
    for job in manifest["jobs"]:
        assert (tmp_path / "results" / "runs" / job["run_id"] / "final.json").exists()


def test_gpus_per_node_reaches_slurm_and_cancel_stops_jobs(cluster, tmp_path):
    (tmp_path / "gpu.toml").write_text('partition = "debug"\ngpus_per_node = 1\ntime_min = 30\n')
    dry = bench("submit", "--suite", "quickstart-all", "--agents", "bc", "--seeds", "0", "--profile", str(tmp_path / "gpu.toml"),
                "--results", str(tmp_path), "--dry-run")
    assert '"gpus_per_node": 1' in dry.stdout and "nothing submitted" in dry.stdout
    submitted = bench("submit", "--suite", "quickstart-all", "--agents", "bc", "--seeds", "0", "--steps", "100000",
                      "--profile", str(tmp_path / "gpu.toml"), "--results", str(tmp_path))
    assert submitted.returncode == 0
    jobs = latest_manifest(tmp_path)["jobs"]
    deadline = time.time() + 120
    while any(sacct(j["job_id"], "State") != "RUNNING" for j in jobs):
        assert time.time() < deadline
        time.sleep(0.5)
    for job in jobs:
        assert "gres/gpu=1" in sacct(job["job_id"], "AllocTRES")
    status = bench("status", "--results", str(tmp_path), env=env_without("sacct", tmp_path / "no-sacct"))
    one_line_error(status, 2, "sacct is not on the PATH")
    cancel = bench("cancel", "--results", str(tmp_path), env=env_without("scancel", tmp_path / "no-scancel"))
    one_line_error(cancel, 2, "scancel is not on the PATH")
    cancelled = bench("cancel", "--results", str(tmp_path))
    assert cancelled.returncode == 0 and "cancelled 2 job(s)" in cancelled.stdout
    deadline = time.time() + 120
    while any(not sacct(j["job_id"], "State").startswith("CANCELLED") for j in jobs):
        assert time.time() < deadline
        time.sleep(0.5)
    assert "2 cancelled" in bench("status", "--results", str(tmp_path)).stdout


def test_local_executor_runs_the_same_sweep_without_slurm(quickstart, tmp_path):
    env = env_without("sbatch", tmp_path / "bin")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    args = ["submit", "--suite", "quickstart-all", "--agents", "iql,bc", "--seeds", "0,1", *SHORT,
            "--parallel", "2", "--results", str(tmp_path / "results")]
    result = bench(*args, env=env)
    assert result.returncode == 0 and "executor: local (no sbatch on PATH)" in result.stdout
    assert "local jobs see this shell's GPUs (CUDA_VISIBLE_DEVICES=unset)" in result.stdout
    manifest = latest_manifest(tmp_path / "results")
    assert manifest["executor"] == "local" and len(manifest["jobs"]) == 4
    for job in manifest["jobs"]:
        assert final(tmp_path / "results", job["run_id"])["provenance"]["slurm"] is None
        assert job_result(job)[1]["cuda_visible_devices"] is None  # submitit's local executor would set ""
    assert "4 done" in result.stdout

    # a finished cell whose run folder was deleted is submitted again
    shutil.rmtree(tmp_path / "results" / "runs" / manifest["jobs"][0]["run_id"])
    again = bench(*args, env=env)
    assert again.returncode == 0 and again.stdout.count("submit new") == 1 and "1 done" in again.stdout
    assert [j["run_id"] for j in latest_manifest(tmp_path / "results")["jobs"]] == [manifest["jobs"][0]["run_id"]]


LONG_BC_CELLS = ["--suite", "quickstart-all", "--agents", "bc", "--seeds", "0", "--steps", "1000000",
                 "--eval-every", "1000000"]  # invertedpendulum, then reacher


def start_local_sweep(results: Path, env: dict, parallel: int, ignore_sigint: bool = True) -> subprocess.Popen:
    """Two long BC cells on the local executor, submitted as `bench submit ... &` in a script does (SIGINT
    ignored) or from a terminal. Its output goes to a file (the jobs inherit it: a pipe would stay open as
    long as they run); :func:`stderr_of` reads it."""
    results.mkdir(parents=True, exist_ok=True)
    with open(results / f"submit-{time.monotonic_ns()}.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.cli", "submit", *LONG_BC_CELLS, "--parallel", str(parallel),
             "--retry-failed", "--results", str(results)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=log, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else signal.SIG_DFL))
    process.log = Path(log.name)
    return process


def stderr_of(process: subprocess.Popen) -> str:
    process.wait(timeout=120)
    return process.log.read_text()


def wait_for_starts(results: Path, submit: subprocess.Popen, minimum: int) -> dict:
    """The latest sweep's manifest once its started jobs' runs count ``minimum`` starts (lines of starts.jsonl,
    written as training begins or resumes) in all."""
    deadline = time.time() + 300
    while True:
        assert time.time() < deadline and submit.poll() is None, "the local jobs never started training"
        manifest = latest_manifest(results) if sweep.manifests(results) else {"jobs": []}
        if sum(sweep.starts(results, job["run_id"]) for job in manifest["jobs"] if "job_id" in job) >= minimum:
            return manifest
        time.sleep(0.2)


def test_local_sweep_can_be_watched_stopped_and_cancelled_while_it_starts_and_while_it_waits(quickstart, tmp_path):
    env = env_without("sbatch", tmp_path / "bin")
    results = tmp_path / "results"
    processes = []
    try:
        # one slot for two cells: status shows the second queued, a racing submit skips it, cancel stops the launcher
        processes.append(submit := start_local_sweep(results, env, parallel=1))
        manifest = wait_for_starts(results, submit, minimum=1)
        status = bench("status", "--results", str(results), env=env).stdout
        assert "1 running, 1 queued" in status and re.search(r"queued .* - +bc__quickstart--reacher", status)
        racing = bench("submit", *LONG_BC_CELLS, "--dry-run", "--results", str(results), env=env).stdout
        assert "skip   running" in racing and "skip   queued" in racing
        first = manifest["jobs"][0]
        cancelled = bench("cancel", "--results", str(results), env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        assert f"cancelled 1 job(s) {first['job_id']}; 1 queued job(s) will not start" in cancelled.stdout
        assert not sweep._pid_alive(first["pid"], first["pid_start"])  # `bench cancel` waited for it
        err = stderr_of(submit)
        assert submit.returncode == 4 and "stopped after starting 1 of 2 job(s)" in err
        assert "1 cancelled, 1 unstarted" in bench("status", "--results", str(results), env=env).stdout

        # the same command from a terminal: the cancelled cell resumes, the unstarted one starts; Ctrl-C (to the
        # submit alone) stops the waiting, not the jobs; then they are cancelled
        processes.append(submit := start_local_sweep(results, env, parallel=2, ignore_sigint=False))
        manifest = wait_for_starts(results, submit, minimum=3)  # 2 + 1
        assert "launcher" not in manifest
        submit.send_signal(signal.SIGINT)
        err = stderr_of(submit)
        assert submit.returncode == 4 and err.startswith("bench: error: sweep") and "stopped waiting" in err
        assert err.count("\n") == 1 and "2 running" in bench("status", "--results", str(results), env=env).stdout
        cancelled = bench("cancel", "--results", str(results), env=env)
        assert cancelled.returncode == 0 and "cancelled 2 job(s)" in cancelled.stdout
    finally:  # whatever failed, leave no job behind: it would slow every test after this one
        for manifest in sweep.manifests(results):
            for job in manifest["jobs"]:
                if "pid" in job and sweep._pid_alive(job["pid"], job["pid_start"]):
                    for process in (*sweep._children(job["pid"]), job["pid"]):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(process, signal.SIGKILL)
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert "2 cancelled" in bench("status", "--results", str(results), env=env).stdout
    resumed = json.loads((results / "runs" / first["run_id"] / "starts.jsonl").read_text().splitlines()[1])
    assert resumed["from_step"] > 0  # from the checkpoint the first cancel left
    for job in manifest["jobs"]:
        run_dir = results / "runs" / job["run_id"]
        assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "final.json").exists()


def test_a_reused_pid_or_another_machines_process_is_not_taken_for_a_local_job(tmp_path):
    process = subprocess.Popen(["sleep", "60"])
    try:
        identity = sweep.process_identity(process.pid)
        record = {"run_id": "r", "job_id": str(process.pid), "log_folder": str(tmp_path), "executor": "local",
                  "boot_id": sweep.boot_id(), **identity}
        assert sweep.job_states([record], tmp_path) == {"r": "running"}
        reused = {**record, "pid_start": identity["pid_start"] - 1}  # the same pid, started at another time
        assert sweep.job_states([reused], tmp_path) == {"r": "failed"}
        elsewhere = {**record, "boot_id": "another-machine-or-boot"}
        assert sweep.job_states([elsewhere], tmp_path) == {"r": "unknown"}
        manifest = {"sweep_id": "s", "executor": "local", "host": "node7", "boot_id": "another-machine-or-boot",
                    "jobs": [{k: v for k, v in record.items() if k not in ("executor", "boot_id")}]}
        with pytest.raises(BenchError) as refused:
            sweep.cancel(manifest, tmp_path)
        assert "local processes on node7" in refused.value.one_line() and "run `bench cancel` there" in refused.value.hint
        assert process.poll() is None  # nothing was signalled
    finally:
        process.kill()
        process.wait()
    assert sweep.job_states([record], tmp_path) == {"r": "failed"}  # ended without a result


def test_debug_executor_sweep_then_status_and_submit(quickstart, tmp_path):
    args = ["submit", "--suite", "quickstart", "--agents", "bc,bc", "--seeds", "0", *SHORT, "--executor", "debug",
            "--results", str(tmp_path)]
    first = bench(*args)
    assert first.returncode == 0 and "1 job(s), 1 to submit" in first.stdout  # bc asked for twice, planned once
    assert len(latest_manifest(tmp_path)["jobs"]) == 1
    status = bench("status", "--results", str(tmp_path))
    assert status.returncode == 0 and "1 done" in status.stdout
    again = bench(*args)
    assert again.returncode == 0 and "nothing to submit" in again.stdout


@pytest.mark.parametrize("args, words", [
    (["--parallel", "0"], ["--parallel 0"]),
    (["--parallel", "-1"], ["--parallel -1"]),
    (["--profile", "."], ["profile . is a folder"]),
    (["--executor", "slurm"], ["sbatch is not on the PATH"]),
])
def test_bad_submit_input_is_one_line_and_leaves_nothing(tmp_path, args, words):
    result = bench("submit", "--suite", "quickstart", "--agents", "bc", "--seeds", "0", *args,
                   "--results", str(tmp_path / "results"), env=env_without("sbatch", tmp_path / "bin"))
    one_line_error(result, 2, *words)
    assert not (tmp_path / "results" / "sweeps").exists() or sweep_folders(tmp_path / "results") == []


@pytest.mark.parametrize("text, words", [
    ("cpus_per_task = 0", "cpus_per_task = 0 should be at least 1"),
    ("gpus_per_node = -1", "gpus_per_node = -1 should be at least 0"),
    ("mem_gb = 0", "mem_gb = 0 should be at least"),
    ("time_min = 1\nsignal_delay_s = 60", "signal_delay_s = 60 is not shorter than time_min = 1"),
    ("array_parallelism = 0", "array_parallelism = 0 should be at least 1"),
])
def test_profile_numbers_are_range_checked(tmp_path, text, words):
    (tmp_path / "p.toml").write_text(text + "\n")
    with pytest.raises(ConfigError, match=words):
        load_profile(tmp_path / "p.toml")


def test_metrics_shorter_than_the_checkpoint_says_is_refused(quickstart, tmp_path, one_thread):
    """After a node crash metrics.jsonl may have lost lines the checkpoint counts: resuming must not pad it."""
    spec = Cell("bc", "quickstart/reacher/mixed-v0", (0,), (("steps", 200),),
                (("eval_episodes", 2), ("eval_interval", 100))).spec()
    options = RunOptions(results_root=tmp_path, device=torch.device("cpu"), progress=False)
    run = Run(spec, options)
    run.train()
    run.final_path.unlink()  # as if the node died after the last checkpoint
    metrics = run.dir / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:10])
    with pytest.raises(DataError, match="metrics.jsonl"):
        Run(spec, options).train()
    assert metrics.stat().st_size == 10
