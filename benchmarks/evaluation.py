"""Evaluation: every seed's policy plays its own episodes in Gymnasium vector environments.

For ``n_seeds`` policies and ``E`` episodes, ``n_seeds * E`` environments step together; episode
``j`` of every seed resets with seed ``protocol.env_seed + j`` (the same start states for every
seed, evaluation and agent). Returns are undiscounted; normalised scores are
``100 * (R - ref_min) / (ref_max - ref_min)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from benchmarks.tasks import Protocol


@dataclasses.dataclass
class ActionBox:
    """Maps between an environment's action box and the agents' normalised ``[-1, 1]``."""

    low: np.ndarray
    high: np.ndarray

    @property
    def is_unit(self) -> bool:
        return bool(np.all(self.low == -1.0) and np.all(self.high == 1.0))

    def normalise(self, actions: np.ndarray) -> np.ndarray:
        if self.is_unit:
            return actions
        return (2.0 * (actions - self.low) / (self.high - self.low) - 1.0).astype(actions.dtype)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Policy actions in [-1, 1] (clipped there first, as D4RL's ``NormalizedBoxEnv.step`` does) to the box."""
        actions = np.clip(actions, -1.0, 1.0)
        if self.is_unit:
            return actions
        return self.low + (actions + 1.0) * 0.5 * (self.high - self.low)


def normalised_score(returns: np.ndarray, ref_min: float, ref_max: float) -> np.ndarray:
    return 100.0 * (returns - ref_min) / (ref_max - ref_min)


@dataclasses.dataclass
class Evaluation:
    returns: np.ndarray  # [n_seeds, episodes]
    lengths: np.ndarray  # [n_seeds, episodes]
    scores: np.ndarray  # normalised, [n_seeds, episodes]

    def per_seed(self) -> dict[str, list[float]]:
        return {
            "return": self.returns.mean(1).tolist(),
            "score": self.scores.mean(1).tolist(),
        }


class Evaluator:
    def __init__(
        self,
        make_env: Callable[[], gym.Env],
        protocol: Protocol,
        n_seeds: int,
        ref_min: float,
        ref_max: float,
        device: torch.device,
    ):
        self.protocol = protocol
        self.n_seeds = n_seeds
        self.ref_min, self.ref_max = ref_min, ref_max
        self.device = device
        self.envs = gym.vector.SyncVectorEnv([make_env for _ in range(n_seeds * protocol.eval_episodes)])
        space = self.envs.single_action_space
        self.box = ActionBox(space.low.astype(np.float64), space.high.astype(np.float64))

    def close(self) -> None:
        self.envs.close()

    def run(self, act: Callable[[Tensor], Tensor]) -> Evaluation:
        """Play one episode per environment with ``act`` (``[n_seeds, E, obs] -> [n_seeds, E, act]``)."""
        n_envs = self.envs.num_envs
        episodes = self.protocol.eval_episodes
        obs, _ = self.envs.reset(seed=self.protocol.env_seeds() * self.n_seeds)
        returns = np.zeros(n_envs)
        lengths = np.zeros(n_envs, dtype=np.int64)
        running = np.ones(n_envs, dtype=bool)
        while running.any():
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
            actions = act(obs_t.reshape(self.n_seeds, episodes, -1)).reshape(n_envs, -1)
            obs, reward, terminated, truncated, _ = self.envs.step(self.box.to_env(actions.cpu().numpy()))
            returns += np.where(running, reward, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
        shape = (self.n_seeds, episodes)
        returns = returns.reshape(shape)
        return Evaluation(returns, lengths.reshape(shape), normalised_score(returns, self.ref_min, self.ref_max))
