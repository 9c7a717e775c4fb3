"""Evaluation in real Gymnasium MuJoCo vector environments."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch

from benchmarks.evaluation import ActionBox, Evaluator, normalised_score
from benchmarks.tasks import D4RL_REFERENCE, Protocol, get_task


def test_action_box_round_trip_and_unit_box_is_exact():
    box = ActionBox(np.array([-3.0, 0.0]), np.array([3.0, 2.0]))
    actions = np.array([[-3.0, 0.0], [0.0, 1.0], [3.0, 2.0]])
    np.testing.assert_allclose(box.normalise(actions), [[-1, -1], [0, 0], [1, 1]])
    np.testing.assert_allclose(box.to_env(box.normalise(actions)), actions)
    unit = ActionBox(-np.ones(3), np.ones(3))
    odd = np.array([0.1234567], dtype=np.float32)
    assert unit.normalise(odd) is odd
    assert unit.to_env(odd).dtype == np.float32 and np.array_equal(unit.to_env(odd), odd)
    # actions outside [-1, 1] are clipped first, as D4RL's NormalizedBoxEnv does
    np.testing.assert_array_equal(unit.to_env(np.array([1.5, -2.0, 0.5])), [1.0, -1.0, 0.5])
    np.testing.assert_allclose(box.to_env(np.array([[-7.0, 4.0]])), [[-3.0, 2.0]])


def test_normalised_score_uses_d4rl_reference_returns():
    low, high = D4RL_REFERENCE["hopper"]
    assert normalised_score(np.array(high), low, high) == pytest.approx(100.0)
    assert normalised_score(np.array(low), low, high) == pytest.approx(0.0)
    assert normalised_score(np.array(1607.0), low, high) == pytest.approx(100 * (1607.0 + 20.272305) / (3234.3 + 20.272305))


def manual_returns(env_id: str, action: np.ndarray, seeds: list[int]) -> list[float]:
    returns = []
    for seed in seeds:
        env = gym.make(env_id)
        env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
        returns.append(total)
    return returns


def test_evaluator_matches_plain_rollouts_per_seed():
    protocol = Protocol(eval_interval=1, eval_episodes=3, env_seed=7)
    make_env = functools.partial(gym.make, "InvertedPendulum-v5")
    evaluator = Evaluator(make_env, protocol, n_seeds=2, ref_min=0.0, ref_max=1000.0, device=torch.device("cpu"))
    # seed 0 pushes right with 0.5 (env units 1.5), seed 1 pushes left with -1.0 (env units -3.0)
    constant = torch.tensor([0.5, -1.0]).view(2, 1, 1)
    result = evaluator.run(lambda obs: constant.expand(2, obs.shape[1], 1))
    evaluator.close()
    np.testing.assert_allclose(result.returns[0], manual_returns("InvertedPendulum-v5", np.array([1.5]), [7, 8, 9]))
    np.testing.assert_allclose(result.returns[1], manual_returns("InvertedPendulum-v5", np.array([-3.0]), [7, 8, 9]))
    np.testing.assert_allclose(result.scores, result.returns / 10.0)
    assert (result.lengths == result.returns + 1).all()  # +1 per step, 0 on the step the pole falls (v5)


def test_d4rl_tasks_evaluate_on_gymnasium_v4_with_1000_steps():
    task = get_task("walker2d-medium-expert-v2")
    assert task.env_id == "Walker2d-v4" and task.max_episode_steps == 1000 and task.comparable_to_published
    env = gym.make(task.env_id, max_episode_steps=task.max_episode_steps)
    assert env.observation_space.shape == (17,) and env.action_space.shape == (6,)
    assert (task.ref_min_score, task.ref_max_score) == D4RL_REFERENCE["walker2d"]
