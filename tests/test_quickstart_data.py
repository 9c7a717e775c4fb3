"""Quick-start data: the six scripted-behaviour datasets, written to a temporary Minari root and read back."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import minari
import numpy as np
import pytest

from benchmarks.cli import main
from benchmarks.data.minari_store import DATA_FILE, DatasetArrays, DatasetInfo, load_dataset, minari_root, read_info
from benchmarks.data.quickstart import (
    BATCH,
    RECIPES,
    REFERENCE_EPISODES,
    Behaviour,
    _linearise,
    dataset_id_for,
    make_quickstart,
    rollout,
)
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


# normalised-return ranges per level (measured: pendulum 100 / ~12 / ~19, reacher ~96 / ~42 / ~40)
LEVEL_RANGES = {
    "invertedpendulum": {"expert": (99.0, 100.0), "medium": (5.0, 25.0), "mixed": (12.0, 30.0)},
    "reacher": {"expert": (90.0, 100.0), "medium": (30.0, 55.0), "mixed": (30.0, 50.0)},
}


@pytest.mark.parametrize("env", QUICKSTART_ENVS)
def test_levels_are_ordered(store: dict[str, Any], env: str) -> None:
    score = {}
    for level in QUICKSTART_LEVELS:
        arrays, info = store["loaded"][dataset_id_for(env, level)]
        score[level] = normalised_returns(arrays, info).mean()
        assert score[level] == pytest.approx(info.extra["normalized_return_mean"], abs=0.1)
        low, high = LEVEL_RANGES[env][level]
        assert low <= score[level] <= high, (level, score[level])
    assert score["mixed"] < score["expert"] - 50.0
    # the mixed data holds expert behaviour to learn from
    arrays, info = store["loaded"][dataset_id_for(env, "mixed")]
    assert normalised_returns(arrays, info).max() > 90.0


@pytest.mark.parametrize("env", QUICKSTART_ENVS)
def test_mixed_is_mostly_medium(store: dict[str, Any], env: str) -> None:
    _, info = store["loaded"][dataset_id_for(env, "mixed")]
    episodes = {p["behaviour"]: p["episodes"] for p in info.extra["parts"]}
    assert set(episodes) == {"medium", "expert", "random"}
    assert episodes["medium"] > 0.5 * sum(episodes.values())
    assert 0 < episodes["expert"] < 0.2 * sum(episodes.values())
    transitions = {p["behaviour"]: p["transitions"] for p in info.extra["parts"]}
    assert transitions["expert"] < 0.5 * info.num_transitions  # a mean-action fit is not the expert's


@pytest.mark.parametrize("env", QUICKSTART_ENVS)
def test_medium_is_systematically_suboptimal(store: dict[str, Any], env: str) -> None:
    """The medium controller falls short without any noise: its error is a bias, which averaging
    the data's actions does not remove (zero-mean noise on the expert would be averaged away)."""
    _, info = store["loaded"][dataset_id_for(env, "medium")]
    recipe = RECIPES[env]
    envs = [gym.make(recipe.env_id) for _ in range(BATCH)]
    try:
        expert = recipe.make_controller(envs[0])
        medium = recipe.make_medium(expert)
        described = [p["controller"] for p in info.extra["parts"]]
        assert described == [medium.describe()]
        episodes = rollout(envs, Behaviour(medium), range(500, 525), np.random.default_rng(0))
    finally:
        for e in envs:
            e.close()
    score = 100.0 * (episodes.returns().mean() - info.ref_min_score) / (info.ref_max_score - info.ref_min_score)
    if env == "invertedpendulum":
        assert described[0]["K"][0] > 0 > described[0]["lqr_K"][0]  # the position gain's sign is flipped
        assert 8.0 < score < 30.0
        # every episode ends with the cart at the end of its rail (|x| = 1) and the pole down
        ends = np.cumsum(episodes.lengths + 1) - 1
        assert episodes.terminations.sum() == episodes.num_episodes
        assert np.all(np.abs(episodes.observations[ends, 0]) > 0.95)
    else:
        assert described[0]["aims_at"].startswith("-target") and described[0]["kp"] == 4 * expert.kp
        assert 35.0 < score < 55.0


def test_averaging_the_pendulum_behaviours_does_not_balance() -> None:
    """The linearised closed loop under a blend ``w K_lqr + (1 - w) K_medium`` of the two laws, what a
    mean-action (cloning) fit of mixed data gives where both occur: unstable unless the LQR's weight
    is above ~0.57. The mixed pendulum data has ~45% expert transitions."""
    env = gym.make(RECIPES["invertedpendulum"].env_id)
    try:
        lqr = RECIPES["invertedpendulum"].make_controller(env)
        medium = RECIPES["invertedpendulum"].make_medium(lqr)
        a, b = _linearise(env.unwrapped.model, env.unwrapped.frame_skip, eps=1e-6)
    finally:
        env.close()

    def spectral_radius(w: float) -> float:
        gain = w * lqr.gain + (1 - w) * medium.gain
        return float(np.abs(np.linalg.eigvals(a - b @ gain[None, :])).max())

    assert spectral_radius(1.0) < 0.95
    assert spectral_radius(0.0) > 1.02  # the medium law itself diverges
    assert all(spectral_radius(w) > 1.0 for w in (0.2, 0.35, 0.5))
    assert spectral_radius(0.65) < 1.0


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


def test_interrupted_force_keeps_the_old_datasets(store: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in `bench data make quickstart --force` once Minari has written the first new dataset."""
    write = minari.create_dataset_from_buffers

    def interrupted(*args: Any, **kwargs: Any) -> None:
        write(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["data", "make", "quickstart", "--force"])
    for info in store["infos"]:
        assert read_info(info.dataset_id).sha256 == info.sha256
    assert not list(minari_root().glob(".staging-*"))


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
