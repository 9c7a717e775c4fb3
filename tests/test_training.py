"""The shared training loop on real quick-start data: results, provenance, resume after a kill."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.cli import main, print_result
from benchmarks.data.minari_store import read_info

TASK = "quickstart/reacher/mixed-v0"
CELL = ["--agent", "iql", "--task", TASK, "--seeds", "0,2", "--no-progress", "--device", "cpu"]  # also where a GPU is
SHORT = [*CELL, "--steps", "240", "--eval-every", "80", "--eval-episodes", "3", "--log-every", "40"]


def run_dirs(results: Path) -> list[Path]:
    return sorted((results / "runs").glob("*"))


def bench(*args: str, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "run", *args, "--results", str(results)],
        capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def reference_run(quickstart, tmp_path_factory) -> Path:
    """One uninterrupted short run, the reference for the resume tests."""
    results = tmp_path_factory.mktemp("uninterrupted")
    assert main(["run", *SHORT, "--results", str(results)]) == 0
    (run,) = run_dirs(results)
    return run


def test_run_writes_scores_and_provenance(reference_run, capsys):
    final = json.loads((reference_run / "final.json").read_text())
    config = json.loads((reference_run / "config.json").read_text())
    assert final["run_id"] == reference_run.name == config["run_id"]
    assert final["agent"] == "iql" and final["task"] == TASK and final["seeds"] == [0, 2]
    assert final["protocol"] == {"eval_interval": 80, "eval_episodes": 3, "env_seed": 0, "score": "final", "last_k": 10,
                                 "best_interval": None}
    assert set(final["score"]["per_seed"]) == {"0", "2"}
    evals = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals if e["kind"] == "eval"] == [80, 160, 240]
    assert [e["step"] for e in evals if e["kind"] == "train"] == [40, 80, 120, 160, 200, 240]
    last = [e for e in evals if e["kind"] == "eval"][-1]
    assert final["score"]["per_seed"]["0"] == last["score"][0] == final["scores"]["final"]["0"]
    # mean and sample std (n - 1), as the report's tables give them
    assert final["score"]["mean"] == pytest.approx(np.mean(last["score"]))
    assert final["score"]["std"] == pytest.approx(np.std(last["score"], ddof=1))
    print_result(final, reference_run)
    assert f"± {final['score']['std']:.2f} (sample std over 2 seeds)" in capsys.readouterr().out
    assert final["scores"]["best"]["2"] == max(e["score"][1] for e in evals if e["kind"] == "eval")
    # last_k (10) over 3 evaluations: the mean of all of them
    assert final["scores"]["last_k"]["2"] == pytest.approx(np.mean([e["score"][1] for e in evals if e["kind"] == "eval"]))
    # the normalised score is 100 * (R - min) / (max - min) of the episode returns
    info = read_info(final["dataset"]["dataset_id"])
    returns = np.array(last["episode_returns"][1])
    expected = 100 * (returns.mean() - info.ref_min_score) / (info.ref_max_score - info.ref_min_score)
    assert final["score"]["per_seed"]["2"] == pytest.approx(expected)
    prov = final["provenance"]
    assert final["dataset"]["sha256"] == info.sha256 and len(info.sha256) == 64
    assert prov["packages"]["torch"] == importlib.metadata.version("torch")
    assert prov["device"] == "cpu" and "CPU" in prov["device_name"]
    assert "commit" in prov["git"] and "dirty" in prov["git"]
    assert config["config"]["expectile"] == 0.7 and "mujoco_config.py" in config["config_sources"]["expectile"]
    assert config["config_sources"]["steps"] == "command line --set"
    assert final["compute"]["updates_per_second"] > 0


def test_same_cell_lands_in_the_same_place_and_is_not_retrained(reference_run, capsys):
    results = reference_run.parent.parent
    before = (reference_run / "final.json").read_text()
    assert main(["run", *SHORT, "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and reference_run.name in out
    assert (reference_run / "final.json").read_text() == before
    assert run_dirs(results) == [reference_run]


def test_run_id_changes_with_what_defines_the_result(reference_run, tmp_path):
    assert main(["run", *SHORT, "--set", "expectile=0.8", "--steps", "10", "--results", str(tmp_path)]) == 0
    (other,) = run_dirs(tmp_path)
    assert other.name != reference_run.name


def assert_same_result(run: Path, reference: Path) -> None:
    final, ref = (json.loads((d / "final.json").read_text()) for d in (run, reference))
    assert run.name == reference.name
    assert final["scores"] == ref["scores"]
    assert final["final_return"] == ref["final_return"]
    metrics = [line for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics == (reference / "metrics.jsonl").read_text().splitlines()
    a = torch.load(run / "checkpoint.pt", weights_only=False)["agent"]
    b = torch.load(reference / "checkpoint.pt", weights_only=False)["agent"]
    for name in ("actor", "critic", "value", "target_critic"):
        for key in a[name]:
            torch.testing.assert_close(a[name][key], b[name][key], rtol=0, atol=0)


def wait_for_step(metrics: Path, step: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists() and any(f'"step": {step}' in line for line in metrics.read_text().splitlines()):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise TimeoutError(f"step {step} never logged")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_same_result(reference_run, tmp_path, how):
    """SIGKILL loses work since the last periodic checkpoint; SIGTERM checkpoints first."""
    cmd = [sys.executable, "-m", "benchmarks.cli", "run", *SHORT, "--results", str(tmp_path), "--checkpoint-every", "40"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "runs" / reference_run.name
    wait_for_step(run / "metrics.jsonl", 120, process)
    process.send_signal(getattr(signal, how))
    _, err = process.communicate(timeout=120)
    if how == "SIGTERM":
        assert process.returncode == 4, err
        assert err.strip().splitlines()[-1].startswith("bench: error: run ") and "checkpoint written" in err
    else:
        assert process.returncode == -signal.SIGKILL
    assert not (run / "final.json").exists()
    saved = torch.load(run / "checkpoint.pt", weights_only=False)
    step = saved["state"]["step"]
    # SIGTERM checkpoints the step it interrupts; SIGKILL leaves the last periodic checkpoint
    assert 120 <= step < 240 if how == "SIGTERM" else (40 <= step < 240 and step % 40 == 0)
    resumed = bench(*SHORT, "--checkpoint-every", "40", results=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(run, reference_run)
    final = json.loads((run / "final.json").read_text())
    assert [s["from_step"] for s in final["provenance"]["segments"]] == [0, step]


def test_a_second_process_cannot_train_the_same_run(reference_run, tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.cli", "run", *SHORT, "--results", str(tmp_path)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(tmp_path / "runs" / reference_run.name / "metrics.jsonl", 40, first)
        second = bench(*SHORT, results=tmp_path)
        assert second.returncode == 2
        assert "is being trained by another process" in second.stderr
    finally:
        first.kill()
        first.communicate()


def test_changed_dataset_refuses_to_resume(reference_run, tmp_path, monkeypatch):
    run = tmp_path / "runs" / reference_run.name
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")
    state = torch.load(reference_run / "checkpoint.pt", weights_only=False)
    state["dataset_sha256"] = "0" * 64
    torch.save(state, run / "checkpoint.pt")
    result = bench(*SHORT, results=tmp_path)
    assert result.returncode == 3
    assert "changed since this run started" in result.stderr
    assert not (run / "final.json").exists()
    assert os.path.getsize(run / "metrics.jsonl") == 0


def test_checkpoint_from_another_device_refuses_to_resume(reference_run, tmp_path):
    """A CUDA generator draws other numbers than a CPU one, so a run resumes only on the kind of device it began on."""
    run = tmp_path / "runs" / reference_run.name
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")
    state = torch.load(reference_run / "checkpoint.pt", weights_only=False)
    state["state"]["segments"][-1]["device"] = "cuda:0"
    torch.save(state, run / "checkpoint.pt")
    result = bench(*SHORT, "--device", "cpu", results=tmp_path)
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "checkpoint written on cuda" in line and "resume with --device cuda" in line
    assert not (run / "final.json").exists()
    assert os.path.getsize(run / "metrics.jsonl") == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_interrupted_cuda_run_resumes_to_the_same_result(quickstart, tmp_path):
    """The resume test on CUDA, where each training step and action batch is replayed from a CUDA graph: the
    resumed process loads the checkpoint onto the GPU and captures its graphs afresh. The run is long enough
    (2000 steps) for the signal to land while it trains, as replayed steps are fast."""
    cuda = [*CELL, "--steps", "2000", "--eval-every", "1000", "--eval-episodes", "3", "--log-every", "40",
            "--device", "cuda", "--checkpoint-every", "40"]
    assert main(["run", *cuda, "--results", str(tmp_path / "reference")]) == 0
    (reference,) = run_dirs(tmp_path / "reference")
    cmd = [sys.executable, "-m", "benchmarks.cli", "run", *cuda, "--results", str(tmp_path / "interrupted")]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "interrupted" / "runs" / reference.name
    wait_for_step(run / "metrics.jsonl", 120, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 4, err
    resumed = bench(*cuda, results=tmp_path / "interrupted")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(run, reference)
    final = json.loads((run / "final.json").read_text())
    assert {s["step_mode"] for s in final["provenance"]["segments"]} == {"eager+cuda-graphs"}
