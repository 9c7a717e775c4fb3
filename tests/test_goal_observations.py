"""Goal-conditioned Dict observations, as in Minari's AntMaze datasets (``D4RL/antmaze/*-v1``).

A real AntMaze dataset is recorded here, written by Minari's own writer, in Gymnasium-Robotics'
``AntMaze_UMaze-v4`` (the maze of ``D4RL/antmaze/umaze-v1``; uniform random actions, short episodes), with
that environment as its evaluation spec. The loader flattens its observations (achieved_goal, desired_goal,
observation: 2 + 2 + 27) and the evaluation environment's in the same layout; ``bench run`` trains and evaluates
a cell on it. Kitchen's observations, whose goals are themselves Dicts, are flattened the same way (recursively).
"""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from benchmarks.cli import main
from benchmarks.data import load_task_data
from benchmarks.data.minari_store import is_flattenable
from benchmarks.errors import DataError
from benchmarks.tasks import get_suite, task_for_dataset

ANTMAZE = "test/antmaze/umaze-v0"
MAZE = "AntMaze_UMaze-v4"
MAZE_KWARGS = {"continuing_task": True, "reset_target": False, "max_episode_steps": 30}  # as Minari's eval spec, shorter
EPISODE_SEEDS = (0, 1, 2)
NESTED = "test/reacher/nested-goals-v0"
NESTED_ENV = "test/NestedGoalReacher-v0"


def stack(items: list) -> np.ndarray | dict:
    """Per-step observations as one array per (nested) Dict key."""
    return {k: stack([o[k] for o in items]) for k in items[0]} if isinstance(items[0], dict) else np.stack(items)


def record(dataset_id: str, env: gym.Env, eval_env: gym.Env, seeds: tuple[int, ...]) -> None:
    """Uniform random actions, one episode per reset seed, written by ``minari.create_dataset_from_buffers``
    (Minari's ``DataCollector`` would need JAX, ``minari[create]``)."""
    import minari
    from minari.data_collector import EpisodeBuffer

    buffers = []
    rng = np.random.default_rng(0)
    for i, seed in enumerate(seeds):
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
        while not (terminations and (terminations[-1] or truncations[-1])):
            action = (rng.uniform(env.action_space.low, env.action_space.high).astype(env.action_space.dtype)
                      if isinstance(env.action_space, gym.spaces.Box) else env.action_space.sample())
            obs, reward, terminated, truncated, _ = env.step(action)
            for store, value in ((observations, obs), (actions, action), (rewards, reward),
                                 (terminations, terminated), (truncations, truncated)):
                store.append(value)
        buffers.append(EpisodeBuffer(id=i, observations=stack(observations), actions=np.stack(actions),
                                     rewards=np.array(rewards), terminations=np.array(terminations),
                                     truncations=np.array(truncations), infos={}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(dataset_id, buffers, env=env, eval_env=eval_env,
                                           algorithm_name="uniform random actions", ref_min_score=0.0,
                                           ref_max_score=30.0, description="test data")
    env.close()


@pytest.fixture(scope="module")
def antmaze(isolated_roots):
    import gymnasium_robotics
    import minari

    gym.register_envs(gymnasium_robotics)  # the ids; the dataset's eval spec names the entry point itself
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "AntMaze_UMaze-v4 is out of date": v4 is what Minari's datasets record
        record(ANTMAZE, gym.make(MAZE, **MAZE_KWARGS), gym.make(MAZE, **MAZE_KWARGS), EPISODE_SEEDS)
    return minari.load_dataset(ANTMAZE)


class NestedGoals(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Reacher-v5 observed as FrankaKitchen is: a Dict whose achieved_goal and desired_goal are Dicts of Boxes
    (keys given out of sorted order; ``gym.spaces.Dict`` sorts them)."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float64)  # noqa: E731
        self.observation_space = gym.spaces.Dict({
            "observation": box(2), "desired_goal": gym.spaces.Dict({"target": box(2)}),
            "achieved_goal": gym.spaces.Dict({"fingertip_offset": box(2), "arm": box(4)})})

    def observation(self, obs: np.ndarray) -> dict:
        return {"observation": obs[6:8], "desired_goal": {"target": obs[4:6]},
                "achieved_goal": {"fingertip_offset": obs[8:10], "arm": obs[:4]}}


@pytest.fixture(scope="module")
def nested(isolated_roots):
    """A Minari dataset with Kitchen's kind of nested Dict observations (FrankaKitchen-v1 itself cannot be made
    here), recorded in a registered environment that is also its evaluation spec."""
    import minari

    wrapper = gym.envs.registration.WrapperSpec("NestedGoals", f"{__name__}:NestedGoals", {})
    gym.register(NESTED_ENV, entry_point="gymnasium.envs.mujoco.reacher_v5:ReacherEnv", max_episode_steps=12,
                 additional_wrappers=(wrapper,))
    try:
        record(NESTED, gym.make(NESTED_ENV), gym.make(NESTED_ENV), EPISODE_SEEDS)
        yield minari.load_dataset(NESTED)
    finally:
        del gym.registry[NESTED_ENV]


def test_the_antmaze_suite_is_minari_antmaze_under_the_antmaze_protocol():
    tasks = get_suite("minari-antmaze")
    assert [t.name for t in tasks] == [f"D4RL/antmaze/{m}-v1" for m in ("umaze", "umaze-diverse", "medium-play",
                                                                        "medium-diverse", "large-play", "large-diverse")]
    for task in (*tasks, task_for_dataset(ANTMAZE)):
        assert (task.family, task.reward, task.source, task.comparable_to_published) == ("antmaze", "sparse", "minari", False)
        assert (task.protocol.eval_interval, task.protocol.eval_episodes) == (50_000, 100)


def test_dict_observations_are_flattened_as_the_evaluation_environment_flattens_them(antmaze):
    task = task_for_dataset(ANTMAZE)
    assert task.family == "antmaze" and task.reward == "sparse"
    data = load_task_data(task, torch.device("cpu"))
    space = antmaze.observation_space
    assert list(space.keys()) == ["achieved_goal", "desired_goal", "observation"]
    assert data.obs_dim == 2 + 2 + 27 == gym.spaces.flatdim(space)
    episodes = list(antmaze.iterate_episodes())
    assert len(data.transitions.observations) == sum(len(ep.actions) for ep in episodes)
    # o_t and o_{t+1} of every transition are gym.spaces.flatten of the recorded dicts
    first = episodes[0]
    flat = lambda t: gym.spaces.flatten(space, {k: v[t] for k, v in first.observations.items()}).astype(np.float32)  # noqa: E731
    for t in (0, 7, len(first.actions) - 1):
        np.testing.assert_array_equal(data.transitions.observations[t].numpy(), flat(t))
        np.testing.assert_array_equal(data.transitions.next_observations[t].numpy(), flat(t + 1))
    # the evaluation environment (the dataset's eval spec) starts where the recorded episode with that seed started
    env = data.make_env()
    try:
        obs, _ = env.reset(seed=EPISODE_SEEDS[0])
        assert env.observation_space.shape == (data.obs_dim,)
        np.testing.assert_allclose(obs.astype(np.float32), data.transitions.observations[0].numpy(), rtol=1e-6)
    finally:
        env.close()


def test_nested_dict_observations_are_flattened_as_gymnasium_flattens_them(nested):
    space = nested.observation_space
    assert isinstance(space["achieved_goal"], gym.spaces.Dict) and isinstance(space["desired_goal"], gym.spaces.Dict)
    data = load_task_data(task_for_dataset(NESTED), torch.device("cpu"))
    assert data.obs_dim == gym.spaces.flatdim(space) == 10
    at = lambda obs, t: {k: at(v, t) for k, v in obs.items()} if isinstance(obs, dict) else obs[t]  # noqa: E731
    episodes = list(nested.iterate_episodes())
    flat = lambda ep, t: gym.spaces.flatten(space, at(ep.observations, t)).astype(np.float32)  # noqa: E731
    observations = [flat(ep, t) for ep in episodes for t in range(len(ep.actions))]
    next_observations = [flat(ep, t + 1) for ep in episodes for t in range(len(ep.actions))]
    np.testing.assert_array_equal(data.transitions.observations.numpy(), np.stack(observations))
    np.testing.assert_array_equal(data.transitions.next_observations.numpy(), np.stack(next_observations))
    # the evaluation environment gets FlattenObservation: the same layout, from the same start
    env = data.make_env()
    try:
        assert isinstance(env, gym.wrappers.FlattenObservation)
        obs, _ = env.reset(seed=EPISODE_SEEDS[0])
        np.testing.assert_array_equal(obs.astype(np.float32), data.transitions.observations[0].numpy())
    finally:
        env.close()


def test_bench_run_trains_and_evaluates_an_antmaze_cell(antmaze, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["run", "--agent", "iql", "--dataset", ANTMAZE, "--seeds", "0,1", "--steps", "20", "--eval-every", "20",
                 "--eval-episodes", "2", "--no-progress", "--results", str(results)]) == 0
    (final_path,) = (results / "runs").glob("*/final.json")
    final = json.loads(final_path.read_text())
    assert final["dataset"]["dataset_id"] == ANTMAZE
    scores = final["score"]["per_seed"]
    assert set(scores) == {"0", "1"} and all(np.isfinite(s) for s in scores.values())
    config = json.loads((final_path.parent / "config.json").read_text())
    assert config["config"]["reward_transform"] != "none"  # the AntMaze family's reward shaping applies


def test_observation_spaces_the_loader_cannot_flatten_are_refused(isolated_roots):
    box = gym.spaces.Box(-1.0, 1.0, (2,))
    assert is_flattenable(gym.spaces.Dict({"a": box, "b": gym.spaces.Dict({"c": box})}))
    for space in (gym.spaces.Discrete(3), gym.spaces.Tuple((box, box)),
                  gym.spaces.Dict({"a": box, "b": gym.spaces.Dict({"c": gym.spaces.Discrete(3)})})):
        assert not is_flattenable(space), space
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record("test/frozenlake/random-v0", gym.make("FrozenLake-v1"), gym.make("FrozenLake-v1"), (0,))
    with pytest.raises(DataError, match="observation space Discrete") as err:
        load_task_data(task_for_dataset("test/frozenlake/random-v0"), torch.device("cpu"))
    assert "Box observations or Dicts of them, nested or not" in err.value.hint


def test_action_spaces_other_than_box_are_refused(isolated_roots):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record("test/cartpole/random-v0", gym.make("CartPole-v1"), gym.make("CartPole-v1"), (0,))
    with pytest.raises(DataError, match="action space Discrete") as err:
        load_task_data(task_for_dataset("test/cartpole/random-v0"), torch.device("cpu"))
    assert "Box actions" in err.value.hint
