"""`bench submit` against a real single-node Slurm cluster (slurm/cluster.sh: slurmctld, slurmd,
slurmdbd + MariaDB, munge), and the same sweep on submitit's local executor.

The cluster is started once for this module with a preemptable partition (`debug`), a partition
that preempts it (`high`) and two fake GPUs. Without Slurm's Debian packages (or root) the cluster
tests are skipped, unless BENCH_REQUIRE_SLURM=1 (set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from benchmarks.training import Cell, Run, RunOptions
from slurm import sweep

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
                            timeout=timeout, env=env)
    print(result.stdout, result.stderr)
    return result


def latest_manifest(results: Path) -> dict:
    return max(sweep.manifests(results), key=lambda m: m["created"])


def final(results: Path, run_id: str) -> dict:
    return json.loads((results / "runs" / run_id / "final.json").read_text())


def sacct(job_id: str, field: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", field, "-j", job_id], capture_output=True, text=True)
    return out.stdout.strip()


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
        assert result["provenance"]["slurm"]["SLURM_ARRAY_JOB_ID"] in array_ids
        assert result["provenance"]["git"]["snapshot"] == str(tmp_path / "sweeps" / manifest["sweep_id"] / "code")
        assert sacct(job["job_id"], "State") == "COMPLETED"
    assert manifest["code"]["commit"] and Path(manifest["code"]["snapshot"], "benchmarks", "training.py").exists()
    status = bench("status", "--results", str(tmp_path))
    assert status.stdout.count(" done ") == 4 and "4 done" in status.stdout
    again = bench(*args)
    assert again.returncode == 0 and "nothing to submit" in again.stdout and again.stdout.count("skip   done") == 4
    assert len(sweep.manifests(tmp_path)) == 1


def test_preempted_job_resumes_from_its_checkpoint_to_the_same_result(cluster, tmp_path):
    cell = ["--agents", "iql", "--tasks", "quickstart/reacher/mixed-v0", "--seeds", "0,1",
            "--steps", "800", "--eval-every", "100", "--eval-episodes", "3"]
    (tmp_path / "whole-node.toml").write_text('partition = "debug"\ncpus_per_task = 2\ntime_min = 30\nsignal_delay_s = 30\n')
    submitted = bench("submit", "--suite", "quickstart", *cell, "--profile", str(tmp_path / "whole-node.toml"),
                      "--results", str(tmp_path / "slurm"))
    assert submitted.returncode == 0
    job = latest_manifest(tmp_path / "slurm")["jobs"][0]
    metrics = tmp_path / "slurm" / "runs" / job["run_id"] / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and any('"step": 300' in line for line in metrics.read_text().splitlines())):
        assert time.time() < deadline, "the job never reached step 300"
        time.sleep(0.5)
    blocker = subprocess.run(["sbatch", "--parsable", "-p", "high", "-c", "2", "-o", "/dev/null", "--wrap", "sleep 5"],
                             capture_output=True, text=True, check=True).stdout.strip()
    states = set()
    deadline = time.time() + 600
    while not (tmp_path / "slurm" / "runs" / job["run_id"] / "final.json").exists():
        assert time.time() < deadline, "the preempted job never finished"
        states.add(sacct(job["job_id"], "State"))
        time.sleep(0.5)
    assert sacct(blocker, "State") == "COMPLETED"
    starts = (tmp_path / "slurm" / "runs" / job["run_id"] / "starts.jsonl").read_text().splitlines()
    assert len(starts) == 2 and json.loads(starts[1])["from_step"] >= 300  # resumed from the SIGUSR2 checkpoint
    assert states & {"REQUEUED", "PENDING", "PREEMPTED"}

    # the same cell, uninterrupted, in this process
    reference = Run(Cell("iql", "quickstart/reacher/mixed-v0", (0, 1), (("steps", 800),),
                         (("eval_episodes", 3), ("eval_interval", 100))).spec(),
                    RunOptions(results_root=tmp_path / "local", device=torch.device("cpu"), progress=False))
    expected = reference.train()
    resumed = final(tmp_path / "slurm", job["run_id"])
    assert resumed["run_id"] == expected["run_id"]
    assert resumed["scores"] == expected["scores"]
    metrics_lines = [(d / "metrics.jsonl").read_text() for d in (tmp_path / "slurm" / "runs" / job["run_id"], reference.dir)]
    assert metrics_lines[0] == metrics_lines[1]


def test_failed_cell_is_reported_and_only_it_is_retried(cluster, quickstart, tmp_path):
    partial = tmp_path / "minari"  # the pendulum data is missing here, so its cell fails
    shutil.copytree(quickstart / "quickstart" / "reacher", partial / "quickstart" / "reacher")
    shutil.copy(quickstart / "quickstart" / "namespace_metadata.json", partial / "quickstart")
    args = ["submit", "--suite", "quickstart-all", "--agents", "bc", "--seeds", "0", *SHORT,
            "--profile", "local-cluster", "--results", str(tmp_path / "results")]
    first = bench(*args, "--wait", env={**os.environ, "MINARI_DATASETS_PATH": str(partial)})
    assert first.returncode == 0
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
    cancelled = bench("cancel", "--results", str(tmp_path))
    assert cancelled.returncode == 0 and "cancelled 2 job(s)" in cancelled.stdout
    deadline = time.time() + 120
    while any(not sacct(j["job_id"], "State").startswith("CANCELLED") for j in jobs):
        assert time.time() < deadline
        time.sleep(0.5)
    assert "2 cancelled" in bench("status", "--results", str(tmp_path)).stdout


def test_local_executor_runs_the_same_sweep_without_slurm(quickstart, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    # the same PATH less sbatch: folders holding it are replaced by one of links to their other programs
    without_sbatch = tmp_path / "bin"
    without_sbatch.mkdir()
    folders = []
    for folder in env["PATH"].split(os.pathsep):
        if Path(folder, "sbatch").exists():
            for program in Path(folder).iterdir():
                if program.name != "sbatch" and not (without_sbatch / program.name).exists():
                    (without_sbatch / program.name).symlink_to(program)
            folder = str(without_sbatch)
        folders.append(folder)
    env["PATH"] = os.pathsep.join(folders)
    result = bench("submit", "--suite", "quickstart-all", "--agents", "iql,bc", "--seeds", "0,1", *SHORT,
                   "--parallel", "2", "--results", str(tmp_path), env=env)
    assert result.returncode == 0 and "executor: local (no sbatch on PATH)" in result.stdout
    manifest = latest_manifest(tmp_path)
    assert manifest["executor"] == "local" and len(manifest["jobs"]) == 4
    for job in manifest["jobs"]:
        assert final(tmp_path, job["run_id"])["provenance"]["slurm"] is None
    assert "4 done" in result.stdout
