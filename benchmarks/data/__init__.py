"""Data for one cell: the task's transitions on the device, its evaluation environment and scores.

Sources (all end up in the Minari root and go through one loader, ``minari_store.load_dataset``):
original D4RL HDF5 files (``d4rl.py``, imported once), Minari datasets (downloaded only by
``bench data download``) and the quick-start datasets generated here (``quickstart.py``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from agents.base import Transitions
from benchmarks.data import minari_store
from benchmarks.errors import DataError
from benchmarks.evaluation import ActionBox
from benchmarks.tasks import Task


@dataclasses.dataclass
class TaskData:
    transitions: Transitions  # on the device, actions mapped from the env's box onto [-1, 1]
    info: minari_store.DatasetInfo
    make_env: Callable[[], gym.Env]
    ref_min_score: float
    ref_max_score: float

    @property
    def obs_dim(self) -> int:
        return self.transitions.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.transitions.actions.shape[1]


def ensure_available(task: Task) -> None:
    """Make sure the task's dataset is in the Minari root, importing an original D4RL file if found."""
    if minari_store.dataset_exists(task.dataset_id):
        return
    if task.source != "d4rl":
        raise minari_store.missing_dataset_error(task.dataset_id)
    from benchmarks.data.d4rl import ensure_imported

    ensure_imported(task)


def make_flat_env(env: str | gym.envs.registration.EnvSpec, **kwargs) -> gym.Env:
    """``gym.make``, with Dict observations flattened as the dataset's are (``minari_store.flatten_observations``)."""
    made = gym.make(env, **kwargs)
    return gym.wrappers.FlattenObservation(made) if isinstance(made.observation_space, gym.spaces.Dict) else made


def environment_factory(task: Task, info: minari_store.DatasetInfo) -> Callable[[], gym.Env]:
    """The task's evaluation environment: its own id, or the dataset's recorded evaluation spec (Minari's AntMaze
    datasets: a Gymnasium-Robotics maze with fixed start and goal cells)."""
    if task.env_id is not None:
        kwargs = dict(task.env_kwargs)
        if task.max_episode_steps is not None:
            kwargs["max_episode_steps"] = task.max_episode_steps
        return functools.partial(make_flat_env, task.env_id, **kwargs)
    if info.env_spec is None:
        raise DataError(f"{info.path}: the dataset records no environment to evaluate in (no env_spec in metadata.json)")
    return functools.partial(make_flat_env, info.env_spec)


def load_task_data(task: Task, device: torch.device) -> TaskData:
    ensure_available(task)
    arrays, info = minari_store.load_dataset(task.dataset_id)
    make_env = environment_factory(task, info)
    try:
        env = make_env()
    except ModuleNotFoundError as err:  # an entry point in a package that is not installed
        raise DataError(f"{info.path}: its evaluation environment needs the Python package {err.name!r}",
                        "install it (Minari's AntMaze and Adroit environments: pip install gymnasium-robotics)") from None
    except Exception as err:  # an environment that cannot be built here, e.g. a package made for another MuJoCo
        raise DataError(f"{info.path}: its evaluation environment cannot be made here ({type(err).__name__}: {str(err):.200})",
                        "check that the versions of gymnasium, gymnasium-robotics and mujoco installed suit it") from None
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if arrays.observations.shape[1:] != obs_space.shape:
        raise DataError(
            f"{info.path}: observations have shape {arrays.observations.shape[1:]} but {env.spec.id} expects {obs_space.shape}"
        )
    if arrays.actions.shape[1:] != act_space.shape:
        raise DataError(f"{info.path}: actions have shape {arrays.actions.shape[1:]} but {env.spec.id} expects {act_space.shape}")
    ref_min = task.ref_min_score if task.ref_min_score is not None else info.ref_min_score
    ref_max = task.ref_max_score if task.ref_max_score is not None else info.ref_max_score
    if ref_min is None or ref_max is None:
        raise DataError(f"{info.path}: no ref_min_score/ref_max_score in metadata.json, so scores cannot be normalised")
    box = ActionBox(act_space.low.astype(np.float64), act_space.high.astype(np.float64))
    actions = box.normalise(arrays.actions.astype(np.float64)).astype(np.float32)
    as_tensor = functools.partial(torch.as_tensor, device=device)
    transitions = Transitions(
        observations=as_tensor(arrays.observations),
        actions=as_tensor(actions),
        rewards=as_tensor(arrays.rewards),
        next_observations=as_tensor(arrays.next_observations),
        terminals=as_tensor(arrays.terminals),
        episode_index=as_tensor(arrays.episode_index, dtype=torch.int64),
    )
    return TaskData(transitions, info, make_env, float(ref_min), float(ref_max))
