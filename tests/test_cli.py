"""The ``bench`` command: help that teaches, and one clear line with a hint for every bad input."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import pytest
import torch

from benchmarks.cli import build_parser, main, parse_seeds
from benchmarks.errors import ConfigError


def bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.cli", *args], capture_output=True, text=True, timeout=300, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def subcommand_paths(parser) -> list[list[str]]:
    paths = []
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            paths.append([name])
            if sub._subparsers is not None:
                paths += [[name, *rest] for rest in subcommand_paths(sub)]
    return paths


@pytest.mark.parametrize("path", [[]] + subcommand_paths(build_parser()), ids=lambda p: " ".join(p) or "bench")
def test_every_command_has_help(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: bench") and len(out.splitlines()) > 3


def test_list_shows_agents_suites_and_tasks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for expected in ("iql", "bc", "d4rl-locomotion", "minari-mujoco", "quickstart", "hopper-medium-replay-v2",
                     "mujoco/walker2d/expert-v0", "quickstart/reacher/mixed-v0"):
        assert expected in out


def test_config_shows_values_with_their_sources(capsys):
    assert main(["config", "--agent", "iql", "--task", "hopper-medium-v2"]) == 0
    out = capsys.readouterr().out
    assert "expectile" in out and "0.7" in out and "configs/mujoco_config.py" in out


def test_parse_seeds():
    assert parse_seeds("0,1,2") == (0, 1, 2)
    assert parse_seeds("0-3,7") == (0, 1, 2, 3, 7)
    for bad in ("a", "1,1", "-1", ""):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["run", "--agent", "sac", "--task", "hopper-medium-v2"], ["unknown agent 'sac'", "known agents: iql, bc"]),
        (["run", "--agent", "iql", "--task", "hopper-mediocre-v2"], ["unknown task", "bench list tasks"]),
        (["run", "--agent", "iql"], ["no task given"]),
        (["run", "--agent", "iql", "--task", "hopper-medium-v2", "--set", "expectil=0.8"], ["unknown iql hyperparameter(s) expectil", "known: "]),
        (["run", "--agent", "iql", "--task", "hopper-medium-v2", "--set", "expectile=high"], ["IQLConfig.expectile must be float"]),
        (["run", "--agent", "iql", "--task", "hopper-medium-v2", "--set", "noequals"], ["is not key=value"]),
        (["run", "--agent", "cql", "--task", "hopper-medium-v2", "--set", "target_backup=max"],
         ["cql config for task hopper-medium-v2: target_backup must be one of 'sample', 'min_of_max', 'max_of_min'"]),
        (["run", "--agent", "bc", "--task", "hopper-medium-v2", "--set", "reward_transform=scaled"],
         ["reward_transform must be one of", "'iql_locomotion'", "got 'scaled'"]),
        (["run", "--agent", "dtql", "--task", "hopper-medium-v2", "--steps", "100"], ["pretrain_steps (50000) must be in [0, steps = 100)"]),
        (["submit", "--suite", "quickstart", "--agents", "cpql", "--set", "sampler=euler", "--executor", "debug"],
         ["sampler must be one of 'onestep', 'multistep'"]),
        (["run", "--agent", "iql", "--task", "hopper-medium-v2", "--seeds", "0,x"], ["--seeds", "e.g. --seeds 0,1,2"]),
        pytest.param(["run", "--agent", "iql", "--task", "hopper-medium-v2", "--device", "cuda"], ["no CUDA device", "--device cpu"],
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, fragments):
    assert_one_line_error(bench(*args), 2, *fragments)


def test_missing_datasets_say_how_to_get_them(tmp_path):
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "empty"), "D4RL_DATASET_DIR": str(tmp_path / "d4rl")}
    result = bench("run", "--agent", "iql", "--task", "quickstart/reacher/mixed-v0", env=env)
    assert_one_line_error(result, 3, "has not been generated", "bench data make quickstart")
    result = bench("run", "--agent", "iql", "--task", "hopper-medium-v2", env=env)
    assert_one_line_error(result, 3, "hopper_medium-v2.hdf5", "bench data import-d4rl", "rail.eecs.berkeley.edu")
    result = bench("run", "--agent", "iql", "--dataset", "mujoco/hopper/medium-v0", env=env)
    assert_one_line_error(result, 3, "bench data download mujoco/hopper/medium-v0")
    assert not (tmp_path / "results").exists()


def test_corrupted_dataset_is_refused_with_its_path(quickstart, tmp_path):
    root = tmp_path / "minari"
    shutil.copytree(quickstart / "quickstart" / "reacher", root / "quickstart" / "reacher")
    shutil.copy(quickstart / "quickstart" / "namespace_metadata.json", root / "quickstart")
    data_file = root / "quickstart/reacher/mixed-v0/data/main_data.hdf5"
    content = bytearray(data_file.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data_file.write_bytes(bytes(content))
    env = {**os.environ, "MINARI_DATASETS_PATH": str(root), "BENCH_RESULTS_DIR": str(tmp_path / "results")}
    result = bench("run", "--agent", "iql", "--task", "quickstart/reacher/mixed-v0", env=env)
    assert_one_line_error(result, 3, str(data_file), "SHA-256", "differs")
    assert not (tmp_path / "results").exists()


def test_data_an_agents_reward_convention_cannot_use_is_refused(quickstart, tmp_path):
    """IQL scales locomotion rewards by 1000 / (max - min episode return): undefined where every episode
    of the expert data balances the pendulum to the end."""
    env = {**os.environ, "BENCH_RESULTS_DIR": str(tmp_path / "results")}
    result = bench("run", "--agent", "iql", "--task", "quickstart/invertedpendulum/expert-v0", "--steps", "10", env=env)
    assert_one_line_error(result, 3, "quickstart/invertedpendulum/expert-v0", "reward_transform 'iql_locomotion'",
                          "every episode returns 1000", "--set reward_transform=none")
    assert not (tmp_path / "results").exists()


def test_import_of_a_non_hdf5_file_names_the_file(tmp_path):
    bad = tmp_path / "hopper_medium-v2.hdf5"
    bad.write_text("this is not HDF5\n")
    assert_one_line_error(bench("data", "import-d4rl", str(bad)), 3, str(bad), "not an HDF5 file")


def test_data_info_and_list(quickstart, capsys):
    assert main(["data", "info", "quickstart/reacher/mixed-v0"]) == 0
    out = capsys.readouterr().out
    assert '"sha256"' in out and '"eval_env": "Reacher-v5"' in out
    assert main(["data", "list"]) == 0
    assert "quickstart/invertedpendulum/expert-v0" in capsys.readouterr().out


def test_named_grid_gives_one_cell_per_value(tmp_path):
    """OFQL's eta grid (the paper's App. B values, unpublished per task) as a named sweep of `bench submit`."""
    args = ["submit", "--suite", "d4rl-locomotion", "--tasks", "hopper-medium-v2", "--agents", "ofql", "--grid", "eta",
            "--seeds", "0-4", "--executor", "local", "--dry-run", "--results", str(tmp_path)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    lines = [line for line in out.getvalue().splitlines() if "submit new" in line]
    assert [line.split("[")[1].rstrip("]") for line in lines] == [f"eta={v}" for v in ("0.001", "0.01", "0.1", "0.3", "0.5")]
    assert len({line.split()[2] for line in lines}) == 5  # five run ids
    assert main([*args[:6], "iql", *args[7:]]) == 2  # IQL has no eta grid
