"""Importing original D4RL files: exactly ``d4rl.qlearning_dataset``'s transitions, their metadata, clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import minari
import numpy as np
import pytest

from benchmarks.cli import main
from benchmarks.data import d4rl
from benchmarks.data.minari_store import Episodes, dataset_exists, load_dataset, minari_root, read_info
from benchmarks.errors import DataError
from benchmarks.tasks import D4RL_REFERENCE, D4RL_URL, TASKS, d4rl_file_name

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals")


@pytest.fixture(autouse=True)
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    (tmp_path / "d4rl").mkdir()
    (tmp_path / "files").mkdir()


def reference_qlearning(data: dict[str, np.ndarray], max_episode_steps: int = 1000) -> dict[str, np.ndarray]:
    """A plain loop over rows, as d4rl.qlearning_dataset(env, terminate_on_end=False) does it."""
    out: dict[str, list] = {k: [] for k in FIELDS}
    step = 0
    for i in range(len(data["rewards"]) - 1):
        if "timeouts" in data:
            final_timestep = bool(data["timeouts"][i])
        else:
            final_timestep = step == max_episode_steps - 1
        if final_timestep:
            step = 0
            continue
        done = bool(data["terminals"][i])
        if done:
            step = 0
        out["observations"].append(data["observations"][i].astype(np.float32))
        out["actions"].append(data["actions"][i].astype(np.float32))
        out["rewards"].append(np.float32(data["rewards"][i]))
        out["next_observations"].append(data["observations"][i + 1].astype(np.float32))
        out["terminals"].append(done)
        step += 1
    obs_dim, act_dim = data["observations"].shape[1], data["actions"].shape[1]
    return {
        "observations": np.array(out["observations"], dtype=np.float32).reshape(-1, obs_dim),
        "actions": np.array(out["actions"], dtype=np.float32).reshape(-1, act_dim),
        "rewards": np.array(out["rewards"], dtype=np.float32),
        "next_observations": np.array(out["next_observations"], dtype=np.float32).reshape(-1, obs_dim),
        "terminals": np.array(out["terminals"], dtype=np.float32),
    }


def transitions(episodes: Episodes) -> dict[str, np.ndarray]:
    """What the generic loader makes of episodes: T + 1 observations per episode -> T transitions."""
    obs_ends = np.cumsum(episodes.lengths + 1)
    first = np.delete(np.arange(len(episodes.observations)), obs_ends - 1)
    return {
        "observations": episodes.observations[first],
        "actions": episodes.actions,
        "rewards": episodes.rewards,
        "next_observations": episodes.observations[first + 1],
        "terminals": episodes.terminations.astype(np.float32),
    }


def assert_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    for key in FIELDS:
        assert actual[key].dtype == expected[key].dtype, key
        assert np.array_equal(actual[key], expected[key]), key


def random_arrays(rng: np.random.Generator, n: int, obs_dim: int = 11, act_dim: int = 3) -> dict[str, np.ndarray]:
    observations = rng.standard_normal((n, obs_dim)).astype(np.float32)
    next_observations = np.concatenate([observations[1:], rng.standard_normal((1, obs_dim))]).astype(np.float32)
    return {
        "observations": observations,
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": np.zeros(n, dtype=bool),
        "timeouts": np.zeros(n, dtype=bool),
        "next_observations": next_observations,
    }


def awkward_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Hopper-shaped rows with terminals and timeouts in every awkward place."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, size=8)  # several episodes of random length after the crafted part
    n = 45 + int(lengths.sum()) + 4
    data = random_arrays(rng, n)
    terminals, timeouts = data["terminals"], data["timeouts"]
    timeouts[0] = True  # timeout at row 0
    timeouts[5:8] = True  # consecutive timeouts
    terminals[12] = timeouts[12] = True  # both terminal and timeout
    timeouts[20] = True
    terminals[21] = True  # terminal right after a timeout: a one-step terminated episode
    terminals[30:32] = True  # consecutive terminals: another one-step episode
    timeouts[40] = timeouts[42] = True  # row 41: a one-step truncated episode
    ends = 45 + np.cumsum(lengths) - 1
    flags = rng.integers(0, 2, size=len(ends)).astype(bool)
    terminals[ends[flags]] = True
    timeouts[ends[~flags]] = True
    terminals[n - 2] = terminals[n - 1] = True  # terminal at row N-2 and at the last row
    # Stored next_observations: the true successor, as the real files do (not the next episode's start).
    for row in np.flatnonzero(terminals | timeouts):
        data["next_observations"][row] = rng.standard_normal(11)
    data["next_observations"][3] += 1.0  # one kept non-terminal row that disagrees with observations[4]
    return data


def no_timeout_arrays(n: int, terminal_rows: list[int], seed: int = 1) -> dict[str, np.ndarray]:
    """An old (v0-style) file: no timeouts and no next_observations."""
    data = random_arrays(np.random.default_rng(seed), n)
    del data["timeouts"], data["next_observations"]
    data["terminals"][terminal_rows] = True
    return data


def write_d4rl(path: Path, data: dict[str, np.ndarray]) -> Path:
    """A file in D4RL's layout: flat arrays at the top level, plus infos/* and metadata/* like the real ones."""
    n = len(data["observations"])
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            f.create_dataset(key, data=value)
        f.create_dataset("infos/qpos", data=np.zeros((n, 6)))
        f.create_dataset("infos/qvel", data=np.zeros((n, 6)))
        f.create_dataset("infos/action_log_probs", data=np.zeros(n, dtype=np.float32))
        f.create_dataset("metadata/algorithm", data="SAC")
        f.create_dataset("metadata/iteration", data=1000)
    return path


def loaded(dataset_id: str) -> dict[str, np.ndarray]:
    arrays, _ = load_dataset(dataset_id)
    return {key: getattr(arrays, key) for key in FIELDS}


def test_awkward_fixture_covers_the_cases():
    data = awkward_arrays()
    te, to, n = data["terminals"], data["timeouts"], len(data["terminals"])
    assert to[0] and to[5] and to[6] and (te & to).any() and te[n - 2] and te[n - 1]
    assert to[20] and te[21] and not to[21] and to[40] and to[42] and not (te[41] or to[41])


def test_import_matches_qlearning_dataset_exactly(tmp_path):
    data = awkward_arrays()
    path = write_d4rl(tmp_path / "files" / "hopper_medium-v2.hdf5", data)
    info = d4rl.import_d4rl(path)
    expected = reference_qlearning(data)
    assert_same(loaded("d4rl-hdf5/hopper-medium-v2"), expected)

    assert info.dataset_id == "d4rl-hdf5/hopper-medium-v2"
    assert (info.ref_min_score, info.ref_max_score) == D4RL_REFERENCE["hopper"]
    assert info.env_spec is not None and info.env_spec.id == "Hopper-v4"
    assert info.num_transitions == len(expected["rewards"])
    extra = info.extra
    assert extra["source_file"] == "hopper_medium-v2.hdf5"
    assert extra["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert extra["source_bytes"] == path.stat().st_size
    assert extra["convention"] == "d4rl.qlearning_dataset, terminate_on_end=False"
    inv = extra["invariants"]
    n = len(data["rewards"])
    assert inv["rows"] == n
    assert inv["transitions"] == len(expected["rewards"])
    assert inv["dropped_timeouts"] == int(data["timeouts"][: n - 1].sum())
    assert inv["dropped_last_row"] == 1 and inv["dropped_step_limit"] == 0
    assert inv["rows"] == inv["transitions"] + inv["dropped_timeouts"] + inv["dropped_last_row"]
    assert inv["terminal_rows"] == int(data["terminals"].sum())
    assert inv["terminal_and_timeout_rows"] == 1
    assert inv["has_next_observations"] and inv["next_observations_mismatch"] == 1
    assert inv["reward_min"] == float(expected["rewards"].min())
    assert inv["reward_max"] == float(expected["rewards"].max())
    assert inv["episodes"] == info.num_episodes == inv["episodes_terminated"] + inv["episodes_truncated"]
    assert inv["episodes_terminated"] == int(expected["terminals"].sum())


def test_import_without_timeouts_uses_the_step_counter(tmp_path):
    # max_episode_steps 1000: row 999 dropped; terminal 1500 kept, so the next drop is 1501 + 998 = 2499,
    # which is also a terminal (dropped, counter reset): next drop 3499; terminal 3600 kept; terminal at N - 2.
    data = no_timeout_arrays(3700, [1500, 2499, 3600, 3698])
    path = write_d4rl(tmp_path / "files" / "hopper_random-v2.hdf5", data)
    info = d4rl.import_d4rl(path)
    expected = reference_qlearning(data, max_episode_steps=1000)
    assert_same(loaded("d4rl-hdf5/hopper-random-v2"), expected)
    inv = info.extra["invariants"]
    assert inv["dropped_step_limit"] == 3 and not inv["has_timeouts"] and not inv["has_next_observations"]
    assert inv["transitions"] == 3700 - 3 - 1 == len(expected["rewards"])
    assert inv["episodes_terminated"] == 3
    assert "next_observations_mismatch" not in inv


@pytest.mark.parametrize("max_steps", [1, 2, 3, 5])
def test_step_counter_rule_small_limit(max_steps):
    data = no_timeout_arrays(40, [0, 1, 3, 4, 9, 10, 11, 17, 25, 37, 38, 39])
    episodes, inv = d4rl.qlearning_episodes(data, max_episode_steps=max_steps)
    expected = reference_qlearning(data, max_episode_steps=max_steps)
    if len(expected["rewards"]):
        assert_same(transitions(episodes), expected)
    assert inv["transitions"] == len(expected["rewards"]) == int(episodes.lengths.sum())
    assert inv["dropped_step_limit"] == 39 - inv["transitions"]


def test_random_files_match_reference():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(2, 60))
        data = random_arrays(rng, n)
        data["terminals"][:] = rng.random(n) < rng.uniform(0, 0.4)
        max_steps = int(rng.integers(1, 9))
        if rng.random() < 0.5:
            data["timeouts"][:] = rng.random(n) < rng.uniform(0, 0.4)
        else:
            del data["timeouts"]
        episodes, inv = d4rl.qlearning_episodes(data, max_episode_steps=max_steps)
        expected = reference_qlearning(data, max_episode_steps=max_steps)
        assert inv["transitions"] == len(expected["rewards"])
        if len(expected["rewards"]):
            assert_same(transitions(episodes), expected)
            assert (episodes.lengths >= 1).all()
            last = np.cumsum(episodes.lengths) - 1
            assert np.array_equal(np.flatnonzero(episodes.truncations), last[~episodes.terminations[last]])
            assert np.array_equal(np.flatnonzero(episodes.terminations), last[episodes.terminations[last]])


def test_read_squeezes_column_rewards_and_terminals(tmp_path):
    data = awkward_arrays()
    expected = reference_qlearning(data)
    data["rewards"] = data["rewards"][:, None]
    data["terminals"] = data["terminals"][:, None]
    path = write_d4rl(tmp_path / "files" / "hopper_medium-v2.hdf5", data)
    arrays = d4rl.read_d4rl_file(path)
    assert arrays["rewards"].shape == arrays["terminals"].shape == (len(data["observations"]),)
    assert_same(transitions(d4rl.qlearning_episodes(arrays)[0]), expected)


def _drop(key):
    return lambda d: d.pop(key)


def _set(key, make):
    return lambda d: d.__setitem__(key, make(d))


def _nan(d):
    d["observations"][7, 3] = np.nan


def _inf(d):
    d["rewards"][9] = np.inf


def _beyond_float32(d):
    d["rewards"] = d["rewards"].astype(np.float64)
    d["rewards"][9] = 1e39  # finite in the file, inf once stored as float32


BAD_DATA = {
    "missing key": (_drop("terminals"), ["missing key", "terminals"]),
    "length mismatch": (_set("actions", lambda d: d["actions"][:-1]), ["length mismatch", "actions has"]),
    "nan": (_nan, ["observations", "NaN", "row 7"]),
    "inf": (_inf, ["rewards", "inf", "row 9"]),
    "beyond float32": (_beyond_float32, ["rewards", "beyond float32's range", "row 9"]),
    "string scalar": (_set("rewards", lambda d: "abc"), ["rewards", "non-numeric dtype"]),
    "number scalar": (_set("rewards", lambda d: 1.5), ["rewards", "shape ()"]),
    "zero rows": (lambda d: d.update({k: v[:0] for k, v in d.items()}), ["zero rows"]),
    "one row": (lambda d: d.update({k: v[:1] for k, v in d.items()}), ["no transition left"]),
    "obs dim": (
        lambda d: d.update(observations=np.zeros((len(d["rewards"]), 17), np.float32)),
        ["observations", "(17,)", "Hopper-v4", "(11,)"],
    ),
    "action dim": (
        _set("actions", lambda d: np.zeros((len(d["rewards"]), 6), np.float32)),
        ["actions", "(6,)", "Hopper-v4", "(3,)"],
    ),
}


def assert_nothing_written() -> None:
    root = minari_root()
    assert not dataset_exists("d4rl-hdf5/hopper-medium-v2")
    assert not (root / "d4rl-hdf5" / "hopper-medium-v2").exists()
    assert not list(root.glob(".staging-*")) if root.exists() else True


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_refused(tmp_path, case):
    mutate, words = BAD_DATA[case]
    data = awkward_arrays()
    mutate(data)
    path = write_d4rl(tmp_path / "files" / "hopper_medium-v2.hdf5", data)
    with pytest.raises(DataError) as err:
        d4rl.import_d4rl(path)
    line = err.value.one_line()
    assert "\n" not in line and str(path) in line
    for word in words:
        assert word in line, (word, line)
    assert_nothing_written()


def test_bad_files_are_refused(tmp_path):
    files = tmp_path / "files"
    text = files / "hopper_medium-v2.hdf5"
    text.write_text("observations,actions\n1,2\n")
    cases = [(text, "not an HDF5 file")]
    empty = files / "empty" / "hopper_medium-v2.hdf5"
    empty.parent.mkdir()
    empty.touch()
    cases.append((empty, "empty file (0 bytes)"))
    truncated = files / "truncated" / "hopper_medium-v2.hdf5"
    truncated.parent.mkdir()
    write_d4rl(truncated, awkward_arrays())
    truncated.write_bytes(truncated.read_bytes()[:3000])
    cases.append((truncated, "cannot be read as HDF5"))
    folder = files / "folder" / "hopper_medium-v2.hdf5"
    folder.mkdir(parents=True)
    cases.append((folder, "not a file"))
    cases.append((files / "absent" / "hopper_medium-v2.hdf5", "no such file"))
    for path, problem in cases:
        with pytest.raises(DataError) as err:
            d4rl.import_d4rl(path)
        assert str(path) in err.value.one_line() and problem in err.value.one_line(), err.value.one_line()
    assert_nothing_written()


def test_damaged_files_give_one_line_naming_the_file(tmp_path):
    """Random bytes overwritten, mostly in the headers: h5py then raises OSError, RuntimeError, KeyError or
    ValueError from deep inside; each must become one DataError line (or the file still reads)."""
    path = tmp_path / "files" / "hopper_medium-v2.hdf5"
    original = write_d4rl(path, awkward_arrays()).read_bytes()
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(250):
        damaged = bytearray(original)
        for _ in range(int(rng.integers(1, 4))):
            damaged[int(rng.integers(0, 4096 if rng.random() < 0.7 else len(damaged)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(damaged))
        try:
            d4rl.read_d4rl_file(path)
        except DataError as err:
            line = err.one_line()
            assert "\n" not in line and line.startswith(str(path)), line
            refused += "cannot be read as HDF5" in line
    assert refused >= 10  # the damage did reach h5py's parsing


def test_task_name_for_file():
    for task in TASKS.values():
        if task.source == "d4rl":
            assert d4rl.task_name_for_file(Path("/x") / d4rl_file_name(task.name)) == task.name
    assert d4rl.task_name_for_file("hopper_medium_replay-v2.hdf5") == "hopper-medium-replay-v2"
    with pytest.raises(DataError) as err:
        d4rl.task_name_for_file("/data/ant_maze_v2.hdf5")
    assert "ant_maze_v2.hdf5" in err.value.one_line() and "hopper_medium_replay-v2.hdf5" in err.value.one_line()


def test_explicit_task_name_and_force(tmp_path):
    data = awkward_arrays()
    path = write_d4rl(tmp_path / "files" / "my-hopper.hdf5", data)
    d4rl.import_d4rl(path, task_name="hopper-expert-v2")
    with pytest.raises(DataError, match="already exists"):
        d4rl.import_d4rl(path, task_name="hopper-expert-v2")
    data["rewards"] += 1.0
    write_d4rl(path, data)
    info = d4rl.import_d4rl(path, task_name="hopper-expert-v2", force=True)
    assert info.extra["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert_same(loaded("d4rl-hdf5/hopper-expert-v2"), reference_qlearning(data))


def test_a_renamed_file_is_imported_with_the_task_option_its_hint_names(tmp_path, capsys):
    path = write_d4rl(tmp_path / "files" / "my-hopper.hdf5", awkward_arrays())
    with pytest.raises(DataError) as err:
        d4rl.import_d4rl(path)
    assert f"bench data import-d4rl {path} --task TASK" in err.value.one_line()
    assert main(["data", "import-d4rl", str(path), "--task", "hopper-medium-v2"]) == 0
    assert "d4rl-hdf5/hopper-medium-v2:" in capsys.readouterr().out
    assert read_info("d4rl-hdf5/hopper-medium-v2").extra["source_file"] == "my-hopper.hdf5"
    assert main(["data", "import-d4rl", str(path.parent), "--task", "hopper-medium-v2"]) == 2  # a folder
    assert "--task names the task of one file" in capsys.readouterr().err


def test_a_missing_path_is_reported_as_missing(tmp_path, capsys):
    for name in ("my-hopper.hdf5", "hopper_medium-v2.hdf5", "no-such-folder"):
        path = tmp_path / "files" / name
        with pytest.raises(DataError) as err:
            d4rl.import_path(path)
        assert err.value.one_line() == f"{path}: no such file"
    assert main(["data", "import-d4rl", str(tmp_path / "absent.hdf5"), "--task", "hopper-medium-v2"]) == 3
    assert capsys.readouterr().err == f"bench: error: {tmp_path / 'absent.hdf5'}: no such file\n"


@pytest.mark.parametrize(
    ("name", "says", "hint"),
    [
        ("hopper-medium-v2", "has not been imported", f"download {D4RL_URL.format(file='hopper_medium-v2.hdf5')} and run "
                                                      "`bench data import-d4rl FILE`"),
        ("quickstart/reacher/mixed-v0", "has not been generated", "run `bench data make quickstart`"),
        ("mujoco/hopper/medium-v0", "is not in", "run `bench data download mujoco/hopper/medium-v0`"),
    ],
)
def test_data_info_of_a_missing_dataset_says_how_to_get_it_from_its_source(name, says, hint, capsys):
    assert main(["data", "info", name]) == 3
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and says in line and hint in line, line
    assert ("bench data download" in line) == name.startswith("mujoco/"), line


def test_interrupted_force_reimport_keeps_the_old_dataset(tmp_path, monkeypatch):
    path = write_d4rl(tmp_path / "files" / "hopper_medium-v2.hdf5", awkward_arrays())
    old = d4rl.import_d4rl(path)
    write_d4rl(path, awkward_arrays(seed=1))
    write = minari.create_dataset_from_buffers

    def interrupted(*args, **kwargs):  # Ctrl-C once Minari has written the new dataset
        write(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["data", "import-d4rl", str(path), "--force"])
    assert read_info(old.dataset_id).sha256 == old.sha256
    assert_same(loaded(old.dataset_id), reference_qlearning(awkward_arrays()))
    assert sorted(p.name for p in minari_root().iterdir()) == [".locks", "d4rl-hdf5"]  # no staging folder left


def _spec_of_another_version(m):
    spec = json.loads(m["env_spec"])
    del spec["additional_wrappers"]  # as gymnasium 0.26-0.28 wrote it
    m["env_spec"] = json.dumps(spec)


BAD_METADATA = {
    "env_spec not JSON": (lambda m: m.update(env_spec="{not json"), ["env_spec is not valid JSON"]),
    "env_spec of another gymnasium": (_spec_of_another_version, ["env_spec", "missing field 'additional_wrappers'",
                                                                 "another gymnasium version"]),
    "env_spec not a string": (lambda m: m.update(env_spec=7), ["env_spec is int"]),
    "bench not an object": (lambda m: m.update(bench="x"), ["'bench' is str", "expected a JSON object"]),
    "statistics not an object": (lambda m: m["bench"].update(statistics=[1]), ["'statistics' is list"]),
    "total_episodes not a number": (lambda m: m.update(total_episodes="many"), ["total_episodes is 'many'",
                                                                                 "expected a whole number"]),
    "reward_min not a number": (lambda m: m["bench"]["statistics"].update(reward_min="low"), ["reward_min is 'low'"]),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_bad_metadata_gives_one_line_naming_the_dataset_folder(tmp_path, case, capsys):
    mutate, words = BAD_METADATA[case]
    info = d4rl.import_d4rl(write_d4rl(tmp_path / "files" / "hopper_medium-v2.hdf5", awkward_arrays()))
    meta_path = info.path / "metadata.json"
    metadata = json.loads(meta_path.read_text())
    mutate(metadata)
    meta_path.write_text(json.dumps(metadata))
    assert main(["data", "info", "hopper-medium-v2"]) == 3
    line = capsys.readouterr().err
    assert line.startswith(f"bench: error: {meta_path}: ") and line.count("\n") == 1, line
    for word in words:
        assert word in line, (word, line)


def test_import_path_directory(tmp_path):
    folder = tmp_path / "files"
    write_d4rl(folder / "hopper_medium-v2.hdf5", awkward_arrays(1))
    write_d4rl(folder / "walker2d_medium_replay-v2.hdf5", random_arrays(np.random.default_rng(2), 30, 17, 6))
    write_d4rl(folder / "Ant_maze_big-maze_noisy_multistart_True_multigoal_True_sparse.hdf5", awkward_arrays(3))
    with pytest.warns(UserWarning, match="Ant_maze_big-maze.*not imported"):
        infos = d4rl.import_path(folder)
    assert [i.dataset_id for i in infos] == ["d4rl-hdf5/hopper-medium-v2", "d4rl-hdf5/walker2d-medium-replay-v2"]
    assert infos[1].env_spec.id == "Walker2d-v4"
    assert infos[1].ref_min_score == D4RL_REFERENCE["walker2d"][0]
    with pytest.warns(UserWarning) as caught:
        again = d4rl.import_path(folder)
    messages = [str(w.message) for w in caught]
    assert sum("already imported" in m for m in messages) == 2 and sum("not imported" in m for m in messages) == 1
    assert [i.sha256 for i in again] == [i.sha256 for i in infos]
    with pytest.raises(DataError, match="no D4RL dataset file"):
        d4rl.import_path(tmp_path / "d4rl")


def test_ensure_imported_finds_the_file_in_d4rl_dataset_dir(tmp_path):
    task = TASKS["hopper-medium-replay-v2"]
    assert d4rl.d4rl_dataset_dir() == tmp_path / "d4rl"
    data = awkward_arrays()
    write_d4rl(tmp_path / "d4rl" / "hopper_medium_replay-v2.hdf5", data)
    d4rl.ensure_imported(task)
    assert dataset_exists(task.dataset_id)
    (tmp_path / "d4rl" / "hopper_medium_replay-v2.hdf5").unlink()
    d4rl.ensure_imported(task)  # already there: nothing to read
    assert_same(loaded(task.dataset_id), reference_qlearning(data))


def test_ensure_imported_missing_file_says_where_and_how(tmp_path):
    task = TASKS["walker2d-medium-v2"]
    with pytest.raises(DataError) as err:
        d4rl.ensure_imported(task)
    line = err.value.one_line()
    assert str(tmp_path / "d4rl" / "walker2d_medium-v2.hdf5") in line
    assert "bench data import-d4rl FILE" in line
    assert D4RL_URL.format(file="walker2d_medium-v2.hdf5") in line
    assert not dataset_exists(task.dataset_id)


def test_two_jobs_ensure_imported_at_once(tmp_path):
    data = awkward_arrays()
    write_d4rl(tmp_path / "d4rl" / "hopper_medium_replay-v2.hdf5", data)
    code = (
        "from benchmarks.data.d4rl import ensure_imported; from benchmarks.tasks import TASKS; "
        "ensure_imported(TASKS['hopper-medium-replay-v2'])"
    )
    jobs = [subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy(), stderr=subprocess.PIPE) for _ in "ab"]
    for job in jobs:
        _, err = job.communicate(timeout=120)
        assert job.returncode == 0, err.decode()[-2000:]
    assert_same(loaded("d4rl-hdf5/hopper-medium-replay-v2"), reference_qlearning(data))
    assert not list(minari_root().glob(".staging-*"))
