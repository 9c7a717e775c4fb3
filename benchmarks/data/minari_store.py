"""Datasets in Minari's format, written and read through Minari's own API.

Every dataset the suite trains on lives in the Minari root (``$MINARI_DATASETS_PATH``, default
``~/.minari/datasets``): Minari's own downloads, the original D4RL files after
``bench data import-d4rl``, and the quick-start data ``bench data make quickstart`` generates.
One loader turns any of them into transitions: episode ``i`` with ``T`` steps stores ``T + 1``
observations, and gives transitions ``(o_t, a_t, r_t, o_{t+1}, terminated_t)``, ``t < T``.

Writes are atomic: a dataset is built under a hidden folder of the root and renamed into place
under a lock (a dataset it replaces is renamed away first and deleted after), so two jobs that
need the same dataset never see half of one, and an interrupted rebuild leaves the old one whole.
The SHA-256 of the data file is recorded in the dataset's metadata and checked on every load.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from benchmarks.errors import DataError
from benchmarks.tasks import D4RL_URL, TASKS

DATA_FILE = "main_data.hdf5"
BENCH_METADATA_KEY = "bench"  # our own metadata, one JSON object inside Minari's metadata.json


def minari_root() -> Path:
    """Minari's dataset root, as Minari itself resolves it."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def dataset_dir(dataset_id: str) -> Path:
    return minari_root() / dataset_id


def dataset_exists(dataset_id: str) -> bool:
    return (dataset_dir(dataset_id) / "data" / "metadata.json").is_file()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def dataset_lock(dataset_id: str) -> Iterator[None]:
    """An exclusive lock per dataset id, shared by every process using this Minari root."""
    lock_dir = minari_root() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / (dataset_id.replace("/", "__") + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclasses.dataclass
class Episodes:
    """Episodes as flat arrays in Minari's layout: ``T_i + 1`` observations per episode."""

    observations: np.ndarray  # [sum(T_i + 1), obs_dim]
    actions: np.ndarray  # [sum(T_i), act_dim]
    rewards: np.ndarray  # [sum(T_i)]
    terminations: np.ndarray  # [sum(T_i)] bool
    truncations: np.ndarray  # [sum(T_i)] bool
    lengths: np.ndarray  # [n_episodes] T_i >= 1

    @classmethod
    def concatenate(cls, parts: list[Episodes]) -> Episodes:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))

    @property
    def num_episodes(self) -> int:
        return len(self.lengths)

    def returns(self) -> np.ndarray:
        starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        return np.add.reduceat(self.rewards.astype(np.float64), starts) if len(starts) else np.zeros(0)

    def buffers(self) -> list:
        """Minari ``EpisodeBuffer`` views, one per episode (no copies)."""
        from minari.data_collector import EpisodeBuffer

        step_ends = np.cumsum(self.lengths)[:-1]
        obs_ends = step_ends + np.arange(1, len(self.lengths))
        split = lambda x, ends: np.split(x, ends)  # noqa: E731
        return [
            EpisodeBuffer(id=i, observations=o, actions=a, rewards=r, terminations=te, truncations=tr, infos={})
            for i, (o, a, r, te, tr) in enumerate(
                zip(
                    split(self.observations, obs_ends),
                    split(self.actions, step_ends),
                    split(self.rewards, step_ends),
                    split(self.terminations, step_ends),
                    split(self.truncations, step_ends),
                )
            )
        ]


@dataclasses.dataclass
class DatasetInfo:
    """What the harness needs to know about a stored dataset, and what provenance records."""

    dataset_id: str
    path: Path  # the Minari data folder
    sha256: str  # of main_data.hdf5
    env_spec: gym.envs.registration.EnvSpec | None  # evaluation environment
    ref_min_score: float | None
    ref_max_score: float | None
    num_episodes: int
    num_transitions: int
    reward_min: float
    reward_max: float
    num_terminals: int
    extra: dict[str, Any]  # the suite's own metadata (source file, checksums, invariants)

    def summary(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id,
            "path": str(self.path),
            "sha256": self.sha256,
            "eval_env": self.env_spec.id if self.env_spec else None,
            "ref_min_score": self.ref_min_score,
            "ref_max_score": self.ref_max_score,
            "episodes": self.num_episodes,
            "transitions": self.num_transitions,
            "reward_range": [self.reward_min, self.reward_max],
            "terminals": self.num_terminals,
            **({"source": self.extra} if self.extra else {}),
        }


@dataclasses.dataclass
class DatasetArrays:
    """Transitions as numpy arrays (float32), ready to move to a device."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    episode_index: np.ndarray  # int64


def write_dataset(
    dataset_id: str,
    episodes: Episodes,
    *,
    env_id: str,
    ref_min_score: float,
    ref_max_score: float,
    description: str,
    algorithm_name: str,
    extra: dict[str, Any],
    overwrite: bool = False,
) -> DatasetInfo:
    """Write ``episodes`` as Minari dataset ``dataset_id`` (``minari.create_dataset_from_buffers``).

    ``env_id`` is both the collection and the evaluation environment; the reference scores go
    into Minari's ``ref_min_score``/``ref_max_score``. ``extra`` is stored under ``"bench"``,
    with the dataset's statistics (counts, reward and return ranges) and the data file's SHA-256.
    """
    import minari

    if episodes.num_episodes == 0:
        raise DataError(f"dataset {dataset_id} would be empty: no complete transition to write")
    root = minari_root()
    target = root / dataset_id
    if target.exists() and not overwrite:  # checked again under the lock; this saves the work
        raise _exists_error(dataset_id, target)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        with _minari_root_at(staging), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=episodes.buffers(),
                env=env_id,
                algorithm_name=algorithm_name,
                author="ofql-bench",
                author_email="ofql-bench@localhost",
                code_permalink="https://example.invalid/ofql-bench (see provenance)",
                ref_min_score=float(ref_min_score),
                ref_max_score=float(ref_max_score),
                description=description,
            )
        data = staging / dataset_id / "data"
        bench = {**extra, "statistics": _statistics(episodes), "sha256": sha256_file(data / DATA_FILE)}
        _update_raw_metadata(data, {BENCH_METADATA_KEY: bench})
        with dataset_lock(dataset_id):  # the old dataset stays whole until the new one is complete
            if target.exists():
                if not overwrite:
                    raise _exists_error(dataset_id, target)
                os.replace(target, staging / ".replaced")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / dataset_id, target)
            _copy_namespace_metadata(staging, root, dataset_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_info(dataset_id)


def _exists_error(dataset_id: str, target: Path) -> DataError:
    return DataError(f"dataset {dataset_id} already exists at {target}", "pass --force to rebuild it")


def _statistics(episodes: Episodes) -> dict[str, Any]:
    returns = episodes.returns()
    return {
        "episodes": int(episodes.num_episodes),
        "transitions": int(episodes.lengths.sum()),
        "reward_min": float(episodes.rewards.min()),
        "reward_max": float(episodes.rewards.max()),
        "terminals": int(episodes.terminations.sum()),
        "truncations": int(episodes.truncations.sum()),
        "return_min": float(returns.min()),
        "return_mean": float(returns.mean()),
        "return_max": float(returns.max()),
    }


def _update_raw_metadata(data: Path, updates: dict[str, Any]) -> None:
    path = data / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata.update(updates)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metadata))
    os.replace(tmp, path)


def _copy_namespace_metadata(staging: Path, root: Path, dataset_id: str) -> None:
    """Minari keeps a ``namespace_metadata.json`` in each namespace folder; keep it with the data."""
    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        name = Path(*parts[:depth]) / "namespace_metadata.json"
        if (staging / name).exists() and not (root / name).exists():
            shutil.copyfile(staging / name, root / name)


@contextlib.contextmanager
def _minari_root_at(path: Path) -> Iterator[None]:
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def missing_dataset_error(dataset_id: str) -> DataError:
    """The error for a dataset missing from the Minari root, with the way to get it from its source."""
    root = minari_root()
    task = next((t for t in TASKS.values() if t.dataset_id == dataset_id), None)
    if task is not None and task.source == "d4rl":
        return DataError(
            f"D4RL dataset {dataset_id} has not been imported into the Minari root {root}",
            f"download {D4RL_URL.format(file=task.d4rl_file)} and run `bench data import-d4rl FILE`, "
            "or put it in $D4RL_DATASET_DIR, from where `bench run` imports it",
        )
    if task is not None and task.source == "quickstart":
        return DataError(f"quick-start dataset {dataset_id} has not been generated in {root}", "run `bench data make quickstart`")
    return DataError(
        f"Minari dataset {dataset_id} is not in {root}",
        f"run `bench data download {dataset_id}` (needs internet) or set MINARI_DATASETS_PATH; "
        "`bench data list` shows what is there",
    )


def _read_metadata(dataset_id: str) -> tuple[Path, dict[str, Any]]:
    data = dataset_dir(dataset_id) / "data"
    meta_path = data / "metadata.json"
    if not meta_path.is_file():
        raise missing_dataset_error(dataset_id)
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{meta_path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(metadata, dict):
        raise _metadata_error(data, "not a JSON object")
    return data, metadata


def _metadata_error(data: Path, problem: str) -> DataError:
    return DataError(f"{data / 'metadata.json'}: {problem}", "rebuild or re-download the dataset")


def _metadata_number(data: Path, mapping: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """``mapping[key]`` as an int or a float (``kind``); ``default`` when absent or null."""
    value = mapping.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        raise _metadata_error(data, f"{key} is {value!r:.40}, expected {'a whole number' if kind is int else 'a number'}")
    return kind(value)


def _metadata_object(data: Path, mapping: dict[str, Any], key: str) -> dict[str, Any]:
    value = mapping.get(key, {})
    if not isinstance(value, dict):
        raise _metadata_error(data, f"{key!r} is {type(value).__name__} {value!r:.40}, expected a JSON object")
    return dict(value)


def _env_spec(data: Path, metadata: dict[str, Any]) -> gym.envs.registration.EnvSpec | None:
    key = "eval_env_spec" if metadata.get("eval_env_spec") else "env_spec"
    spec_json = metadata.get(key)
    if not spec_json:
        return None
    if not isinstance(spec_json, str):
        raise _metadata_error(data, f"{key} is {type(spec_json).__name__}, expected an EnvSpec as a JSON string")
    try:
        return gym.envs.registration.EnvSpec.from_json(spec_json)
    except json.JSONDecodeError as err:
        raise _metadata_error(data, f"{key} is not valid JSON ({err.msg} at character {err.pos})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        cause = f"missing field {err}" if isinstance(err, KeyError) else str(err.__cause__ or err)
        raise DataError(
            f"{data / 'metadata.json'}: {key} is not an EnvSpec gymnasium {gym.__version__} can read ({cause:.120})",
            "was it written by another gymnasium version? rebuild or re-download the dataset",
        ) from None


def read_info(dataset_id: str, *, verify: bool = True) -> DatasetInfo:
    """Metadata of a stored dataset, checked field by field, with its data file's checksum verified."""
    data, metadata = _read_metadata(dataset_id)
    data_file = data / DATA_FILE
    if not data_file.is_file():
        raise DataError(f"{data_file}: missing; the dataset folder is incomplete", "rebuild or re-download it")
    extra = _metadata_object(data, metadata, BENCH_METADATA_KEY)
    stats = _metadata_object(data, extra, "statistics")
    recorded = extra.pop("sha256", None)
    if recorded is not None and not isinstance(recorded, str):
        raise _metadata_error(data, f"{BENCH_METADATA_KEY}.sha256 is {recorded!r}, expected a hex string")
    actual = sha256_file(data_file) if verify or recorded is None else recorded
    if recorded is not None and actual != recorded:
        raise DataError(
            f"{data_file}: SHA-256 {actual[:12]}… differs from the {recorded[:12]}… recorded when it was written",
            "the file was modified or is corrupt; rebuild it",
        )
    return DatasetInfo(
        dataset_id=dataset_id,
        path=data,
        sha256=actual,
        env_spec=_env_spec(data, metadata),
        ref_min_score=_metadata_number(data, metadata, "ref_min_score", float, None),
        ref_max_score=_metadata_number(data, metadata, "ref_max_score", float, None),
        num_episodes=_metadata_number(data, metadata, "total_episodes", int, 0),
        num_transitions=_metadata_number(data, metadata, "total_steps", int, 0),
        reward_min=_metadata_number(data, stats, "reward_min", float, np.nan),
        reward_max=_metadata_number(data, stats, "reward_max", float, np.nan),
        num_terminals=_metadata_number(data, stats, "terminals", int, -1),
        extra=extra,
    )


def is_flattenable(space: gym.Space) -> bool:
    """A Box, or a Dict of them, nested or not (AntMaze: a Dict of Boxes; Kitchen: its achieved_goal and
    desired_goal are Dicts of Boxes)."""
    if isinstance(space, gym.spaces.Dict):
        return all(is_flattenable(s) for s in space.values())
    return isinstance(space, gym.spaces.Box)


def flatten_observations(space: gym.Space, observations: np.ndarray | dict[str, Any]) -> np.ndarray:
    """``[n, flatdim]`` observations of a Dict space: its parts side by side in the space's key order (sorted),
    nested Dicts flattened in place, the layout of ``gym.spaces.flatten`` and so of the ``FlattenObservation``
    wrapper the evaluation environment gets (``benchmarks.data.make_flat_env``); AntMaze: achieved_goal (x, y),
    desired_goal (x, y), the ant's 27. A Box's observations are returned as they are."""
    if not isinstance(space, gym.spaces.Dict):
        return np.asarray(observations)
    parts = [flatten_observations(s, observations[key]) for key, s in space.items()]
    return np.concatenate([part.reshape(len(part), -1) for part in parts], axis=1)


def load_dataset(dataset_id: str) -> tuple[DatasetArrays, DatasetInfo]:
    """All transitions of a stored dataset (``minari.load_dataset``), checked and counted."""
    import minari

    info = read_info(dataset_id)
    data_file = info.path / DATA_FILE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = minari.load_dataset(dataset_id)
            episodes = list(dataset.iterate_episodes())
    except Exception as err:  # h5py/minari errors are not user-facing; name the file instead
        raise DataError(f"{data_file}: cannot be read as a Minari dataset ({type(err).__name__}: {err})") from None
    if not episodes:
        raise DataError(f"{data_file}: holds no episodes")
    obs_space, act_space = dataset.observation_space, dataset.action_space
    for role, space, supported in (("observation", obs_space, is_flattenable(obs_space)),
                                   ("action", act_space, isinstance(act_space, gym.spaces.Box))):
        if not supported:
            raise DataError(
                f"{data_file}: {role} space {space} is not supported",
                "the suite trains on Box actions, and on Box observations or Dicts of them, nested or not "
                "(flattened, e.g. AntMaze's and Kitchen's)",
            )
    obs_shape = obs_space.shape if isinstance(obs_space, gym.spaces.Box) else (gym.spaces.flatdim(obs_space),)
    act_shape = act_space.shape
    observations = []
    for ep in episodes:
        steps = len(ep.actions)
        flat = flatten_observations(obs_space, ep.observations)
        if flat.shape != (steps + 1, *obs_shape):
            raise DataError(
                f"{data_file}: episode {ep.id} has observations of shape {flat.shape}, "
                f"expected {(steps + 1, *obs_shape)} ({steps} actions + 1, observation space {obs_shape})"
            )
        if ep.actions.shape[1:] != act_shape:
            raise DataError(f"{data_file}: episode {ep.id} has actions of shape {ep.actions.shape[1:]}, expected {act_shape}")
        observations.append(flat)
    lengths = np.array([len(ep.actions) for ep in episodes])
    arrays = DatasetArrays(
        observations=np.concatenate([obs[:-1] for obs in observations]).astype(np.float32),
        actions=np.concatenate([ep.actions for ep in episodes]).astype(np.float32),
        rewards=np.concatenate([ep.rewards for ep in episodes]).astype(np.float32),
        next_observations=np.concatenate([obs[1:] for obs in observations]).astype(np.float32),
        terminals=np.concatenate([ep.terminations for ep in episodes]).astype(np.float32),
        episode_index=np.repeat(np.arange(len(episodes)), lengths),
    )
    for name in ("observations", "actions", "rewards", "next_observations"):
        bad = ~np.isfinite(getattr(arrays, name))
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DataError(f"{data_file}: {name} contain NaN or infinite values (first at transition {row})")
    info.num_episodes = len(episodes)
    info.num_transitions = int(lengths.sum())
    info.reward_min = float(arrays.rewards.min())
    info.reward_max = float(arrays.rewards.max())
    info.num_terminals = int(arrays.terminals.sum())
    return arrays, info
