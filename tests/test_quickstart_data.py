"""Quick-start data: the six scripted-controller datasets, written to a temporary Minari root and read back."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import minari
import numpy as np
import pytest

from benchmarks.data.minari_store import DATA_FILE, DatasetArrays, DatasetInfo, load_dataset
from benchmarks.data.quickstart import RECIPES, REFERENCE_EPISODES, dataset_id_for, make_quickstart
from benchmarks.tasks import QUICKSTART_ENVS, QUICKSTART_LEVELS, TASKS

DATASETS = [(env, level) for env in QUICKSTART_ENVS for level in QUICKSTART_LEVELS]
EXPECTED = {  # env: (obs_dim, act_dim, action bound, time limit)
    "invertedpendulum": (4, 1, 3.0, 1000),
    "reacher": (10, 2, 1.0, 50),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """All six datasets generated once into a fresh Minari root, and loaded back."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        messages: list[str] = []
        infos = make_quickstart(progress=messages.append)
        loaded = {info.dataset_id: load_dataset(info.dataset_id) for info in infos}
        yield {"infos": infos, "loaded": loaded, "messages": messages}


def normalised_returns(arrays: DatasetArrays, info: DatasetInfo) -> np.ndarray:
    returns = np.bincount(arrays.episode_index, weights=arrays.rewards.astype(np.float64))
    return 100.0 * (returns - info.ref_min_score) / (info.ref_max_score - info.ref_min_score)


def test_make_returns_the_six_datasets(store: dict[str, Any]) -> None:
    assert [info.dataset_id for info in store["infos"]] == [dataset_id_for(e, lvl) for e, lvl in DATASETS]
    assert all(dataset_id_for(e, lvl) in TASKS for e, lvl in DATASETS)
    assert not any("exists" in m for m in store["messages"])


@pytest.mark.parametrize(("env", "level"), DATASETS)
def test_dataset_loads_with_metadata(store: dict[str, Any], env: str, level: str) -> None:
    arrays, info = store["loaded"][dataset_id_for(env, level)]
    obs_dim, act_dim, bound, time_limit = EXPECTED[env]
    assert info.env_spec is not None and info.env_spec.id == RECIPES[env].env_id
    assert info.env_spec.max_episode_steps == time_limit
    reference = info.extra["reference"]
    assert info.ref_min_score == pytest.approx(reference["ref_min_score"]["value"])
    assert info.ref_max_score == pytest.approx(reference["ref_max_score"]["value"])
    assert reference["episodes"] == REFERENCE_EPISODES
    assert info.extra["level"] == level and info.extra["parts"]
    n = info.num_transitions
    assert 10_000 <= n <= 50_000
    assert n == sum(p["transitions"] for p in info.extra["parts"])
    assert info.num_episodes == sum(p["episodes"] for p in info.extra["parts"]) == arrays.episode_index[-1] + 1
    assert arrays.observations.shape == arrays.next_observations.shape == (n, obs_dim)
    assert arrays.actions.shape == (n, act_dim)
    assert np.abs(arrays.actions).max() <= bound
    # consecutive transitions of an episode chain: o_{t+1} of one is o_t of the next
    same_episode = arrays.episode_index[1:] == arrays.episode_index[:-1]
    np.testing.assert_array_equal(arrays.next_observations[:-1][same_episode], arrays.observations[1:][same_episode])


@pytest.mark.parametrize("env", QUICKSTART_ENVS)
def test_reference_scores_are_measured(store: dict[str, Any], env: str) -> None:
    infos = [store["loaded"][dataset_id_for(env, level)][1] for level in QUICKSTART_LEVELS]
    assert len({(i.ref_min_score, i.ref_max_score) for i in infos}) == 1  # one pair per environment
    ref_min, ref_max = infos[0].ref_min_score, infos[0].ref_max_score
    if env == "invertedpendulum":  # 1 per step alive: random drops the pole in a few steps, LQR never does
        assert 1.0 < ref_min < 20.0
        assert ref_max == 1000.0
    else:  # minus fingertip distance minus 0.1 |a|^2 per step, 50 steps
        assert -60.0 < ref_min < -30.0
        assert -6.0 < ref_max < -2.0
    # uniform-random episodes in the mixed data (other seeds than the reference's) score ~0
    arrays, info = store["loaded"][dataset_id_for(env, "mixed")]
    counts = [p["episodes"] for p in info.extra["parts"]]
    random_part = [i for i, p in enumerate(info.extra["parts"]) if p["behaviour"] == "random"]
    assert random_part
    start = sum(counts[: random_part[0]])
    scores = normalised_returns(arrays, info)[start : start + counts[random_part[0]]]
    assert abs(scores.mean()) < 5.0


@pytest.mark.parametrize("env", QUICKSTART_ENVS)
def test_levels_are_ordered(store: dict[str, Any], env: str) -> None:
    score = {}
    for level in QUICKSTART_LEVELS:
        arrays, info = store["loaded"][dataset_id_for(env, level)]
        score[level] = normalised_returns(arrays, info).mean()
        assert score[level] == pytest.approx(info.extra["normalized_return_mean"], abs=0.1)
    assert score["expert"] > 90.0
    assert 20.0 < score["medium"] < 80.0
    assert 25.0 < score["mixed"] < 65.0 and score["mixed"] < score["expert"] - 30.0
    # the mixed data holds expert behaviour to learn from
    arrays, info = store["loaded"][dataset_id_for(env, "mixed")]
    assert normalised_returns(arrays, info).max() > 90.0


@pytest.mark.parametrize(("env", "level"), DATASETS)
def test_episode_ends_match_the_environment(store: dict[str, Any], env: str, level: str) -> None:
    dataset_id = dataset_id_for(env, level)
    arrays, info = store["loaded"][dataset_id]
    time_limit = EXPECTED[env][3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        episodes = list(minari.load_dataset(dataset_id).iterate_episodes())
    terminated = 0
    for ep in episodes:
        steps = len(ep.actions)
        assert not ep.terminations[:-1].any() and not ep.truncations[:-1].any()
        assert ep.terminations[-1] or ep.truncations[-1]
        assert steps <= time_limit
        assert bool(ep.truncations[-1]) == (steps == time_limit)  # TimeLimit truncates at the limit only
        if env == "invertedpendulum":  # terminated exactly when |theta| > 0.2 (inverted_pendulum_v5.py)
            assert bool(ep.terminations[-1]) == (abs(ep.observations[-1, 1]) > 0.2)
            assert np.abs(ep.observations[:-1, 1]).max() <= 0.2
            np.testing.assert_array_equal(ep.rewards, 1.0 - ep.terminations)
        else:  # Reacher never terminates
            assert not ep.terminations.any()
        terminated += int(ep.terminations[-1])
    # the flat transitions mark terminals at those episodes' last steps only
    last = np.r_[arrays.episode_index[1:] != arrays.episode_index[:-1], True]
    assert arrays.terminals.sum() == terminated == info.num_terminals
    assert not arrays.terminals[~last].any()
    if level == "expert" and env == "invertedpendulum":
        assert terminated == 0


def test_existing_datasets_are_kept(store: dict[str, Any]) -> None:
    files = [info.path / DATA_FILE for info in store["infos"]]
    before = [f.stat().st_mtime_ns for f in files]
    messages: list[str] = []
    infos = make_quickstart(progress=messages.append)
    assert [f.stat().st_mtime_ns for f in files] == before
    assert [i.sha256 for i in infos] == [i.sha256 for i in store["infos"]]
    assert sum("exists" in m for m in messages) == len(DATASETS) == len(messages)


def test_force_regenerates_identical_data(store: dict[str, Any]) -> None:
    """Runs last: rewrites every dataset, then compares it with what the fixture loaded."""
    files = [info.path / DATA_FILE for info in store["infos"]]
    before = [f.stat().st_mtime_ns for f in files]
    infos = make_quickstart(force=True)
    assert all(f.stat().st_mtime_ns != t for f, t in zip(files, before))  # really rewritten
    for info in infos:
        old_arrays, old_info = store["loaded"][info.dataset_id]
        new_arrays, new_info = load_dataset(info.dataset_id)
        for name in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_index"):
            assert getattr(new_arrays, name).tobytes() == getattr(old_arrays, name).tobytes(), (info.dataset_id, name)
        assert (new_info.ref_min_score, new_info.ref_max_score) == (old_info.ref_min_score, old_info.ref_max_score)
        assert new_info.extra == old_info.extra
