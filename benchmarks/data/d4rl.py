"""Import the original D4RL HDF5 files into the Minari root, once, so the suite has one loader.

A D4RL file (``d4rl/offline_env.py`` ``OfflineEnv.get_dataset``) holds ``N`` consecutive steps of
concatenated episodes: ``observations``, ``actions``, ``rewards``, ``terminals`` and, in v1/v2
files, ``timeouts`` and ``next_observations``. Every paper in this suite trains on
``d4rl.qlearning_dataset(env)`` (``d4rl/__init__.py``, ``terminate_on_end=False``), which rebuilds
transitions from consecutive rows and never reads the stored ``next_observations``:

* for ``i`` in ``0 .. N-2``: ``next_obs = observations[i + 1]``; row ``N - 1`` is always dropped;
* a row with ``timeouts[i]`` is dropped; files without ``timeouts`` drop the row where a step
  counter reaches ``max_episode_steps - 1`` instead (see :func:`_step_limit_keep`);
* every kept row is a transition with ``done = terminals[i]``.

:func:`qlearning_episodes` cuts the kept rows into Minari episodes (at terminals and at every
dropped row) so that :func:`benchmarks.data.minari_store.load_dataset` returns exactly
``qlearning_dataset``'s five arrays, in its order.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from benchmarks.data.minari_store import (
    DatasetInfo,
    Episodes,
    dataset_exists,
    dataset_lock,
    minari_root,
    missing_dataset_error,
    read_info,
    sha256_file,
    write_dataset,
)
from benchmarks.errors import ConfigError, DataError
from benchmarks.tasks import TASKS, Task, d4rl_file_name, get_task

CONVENTION = "d4rl.qlearning_dataset, terminate_on_end=False"
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
OPTIONAL_KEYS = ("timeouts", "next_observations")
FLAT_KEYS = ("rewards", "terminals", "timeouts")  # D4RL squeezes (N, 1) rewards and terminals to (N,)
FLOAT32_KEYS = ("observations", "actions", "rewards", "next_observations")  # the import stores these as float32


def d4rl_dataset_dir() -> Path:
    """Where D4RL keeps its downloads: ``$D4RL_DATASET_DIR``, default ``~/.d4rl/datasets``."""
    return Path(os.environ.get("D4RL_DATASET_DIR") or Path.home() / ".d4rl" / "datasets").expanduser()


def _known_files() -> dict[str, str]:
    return {d4rl_file_name(t.name): t.name for t in TASKS.values() if t.source == "d4rl"}


def task_name_for_file(path: str | Path) -> str:
    """``.../hopper_medium_replay-v2.hdf5`` -> ``hopper-medium-replay-v2`` (inverse of ``d4rl_file_name``)."""
    name = Path(path).name
    known = _known_files()
    if name not in known:
        raise DataError(
            f"{path}: {name!r} is not the download name of a known D4RL dataset",
            f"known names: {', '.join(sorted(known))}; or name its task: `bench data import-d4rl {path} --task TASK`",
        )
    return known[name]


@functools.cache
def _env_shapes(env_id: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(env_id)
    try:
        return env.observation_space.shape, env.action_space.shape
    finally:
        env.close()


def _check_source(path: Path) -> None:
    """One line for a path that cannot be a D4RL file: missing, a folder, empty, not HDF5."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file")


def _first_bad_row(bad: np.ndarray) -> int | None:
    rows = bad.any(axis=1) if bad.ndim == 2 else bad
    return int(rows.argmax()) if rows.any() else None


def read_d4rl_file(path: str | Path, env_id: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of a D4RL file, checked like ``OfflineEnv.get_dataset`` (``d4rl/offline_env.py``) and more.

    Returns ``observations``, ``actions``, ``rewards``, ``terminals`` and, when present,
    ``timeouts`` and ``next_observations``; ``(N, 1)`` rewards/terminals/timeouts become ``(N,)``,
    and floating-point ``FLOAT32_KEYS`` become float32, as the import stores them.
    Observation and action shapes are checked against ``env_id`` (default: the environment of
    the task the file name belongs to). Any problem raises a one-line :class:`DataError`.
    """
    path = Path(path)
    _check_source(path)
    if env_id is None:
        env_id = get_task(task_name_for_file(path)).env_id
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_KEYS if not isinstance(f.get(k), h5py.Dataset)]
            if missing:
                present = ", ".join(f.keys()) or "none"
                raise DataError(f"{path}: missing key(s) {', '.join(missing)} (top-level keys: {present})")
            keys = [k for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS) if isinstance(f.get(k), h5py.Dataset)]
            arrays = {k: np.asarray(f[k][()]) for k in keys}
    except (DataError, MemoryError):
        raise
    except Exception as err:  # a damaged file: h5py raises OSError, RuntimeError, KeyError, ValueError, ...
        raise DataError(f"{path}: cannot be read as HDF5, the file is damaged ({type(err).__name__}: {str(err):.200})",
                        "download it again") from None
    for key, value in arrays.items():
        if value.dtype.kind not in "biuf":
            raise DataError(f"{path}: {key} has non-numeric dtype {value.dtype}")
        if key in FLAT_KEYS and value.ndim == 2 and value.shape[1] == 1:
            arrays[key] = value = value[:, 0]
        expected_ndim = 1 if key in FLAT_KEYS else 2
        if value.ndim != expected_ndim:
            raise DataError(f"{path}: {key} has shape {value.shape}, expected {expected_ndim} dimension(s)")
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{path}: length mismatch: " + ", ".join(f"{k} has {n} rows" for k, n in lengths.items()))
    if lengths["observations"] == 0:
        raise DataError(f"{path}: zero rows")
    obs_shape, act_shape = _env_shapes(env_id)
    for key, expected in (("observations", obs_shape), ("next_observations", obs_shape), ("actions", act_shape)):
        if key in arrays and arrays[key].shape[1:] != expected:
            raise DataError(
                f"{path}: {key} have dimension {arrays[key].shape[1:]}, but {env_id} expects {expected}",
                "is the file for another environment?",
            )
    for key, value in arrays.items():
        if value.dtype.kind != "f":
            continue
        if (row := _first_bad_row(~np.isfinite(value))) is not None:
            raise DataError(f"{path}: {key} contain NaN or inf (first at row {row})")
        if key in FLOAT32_KEYS:
            with np.errstate(over="ignore"):
                arrays[key] = value = value.astype(np.float32, copy=False)
            if (row := _first_bad_row(~np.isfinite(value))) is not None:
                raise DataError(f"{path}: {key} contain values beyond float32's range (first at row {row})",
                                "the import stores them as float32, whose largest value is 3.4e38")
    return arrays


def _step_limit_keep(terminals: np.ndarray, rows: int, max_episode_steps: int) -> np.ndarray:
    """Which of rows ``0 .. rows-1`` ``qlearning_dataset`` keeps in a file without ``timeouts``.

    D4RL counts ``episode_step``: a row is dropped when ``episode_step == max_episode_steps - 1``
    and the counter resets to 0; a kept terminal resets it to 0 and the increment after every
    kept row then makes it 1; any other kept row increments it. So, from a start with counter
    ``c``, rows ``start + (max_episode_steps - 1 - c) + k * max_episode_steps`` are dropped until
    the first terminal that is not itself dropped; after it the counter is 1. One iteration per
    terminal row.
    """
    keep = np.ones(rows, dtype=bool)
    terminal_rows = np.flatnonzero(terminals[:rows])
    start, counter, t = 0, 0, 0
    while start < rows:
        first_drop = start + max_episode_steps - 1 - counter
        while t < len(terminal_rows) and (
            terminal_rows[t] >= first_drop and (terminal_rows[t] - first_drop) % max_episode_steps == 0
        ):
            t += 1  # this terminal row falls on a dropped step: dropped, counter reset, no new segment
        end = int(terminal_rows[t]) if t < len(terminal_rows) else rows
        keep[first_drop:end:max_episode_steps] = False
        start, counter, t = end + 1, 1, t + 1
    return keep


def qlearning_episodes(arrays: dict[str, np.ndarray], max_episode_steps: int = 1000) -> tuple[Episodes, dict[str, Any]]:
    """``d4rl.qlearning_dataset(env, terminate_on_end=False)`` (``d4rl/__init__.py``) as Minari episodes.

    Kept rows are cut into episodes at terminals and at every dropped row; an episode of rows
    ``a..b`` stores ``observations[a..b]`` plus ``observations[b + 1]``, so the generic loader's
    ``next_observations`` are D4RL's ``observations[i + 1]`` (also after a terminal, as in D4RL).
    Episodes that do not end with a terminal are truncated on their last step. Returns the
    episodes and the counts checked on the way (all plain ints/floats/bools, JSON-ready).
    """
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
    obs = arrays["observations"]
    n = len(obs)
    terminals = arrays["terminals"].astype(bool)
    timeouts = arrays["timeouts"].astype(bool) if "timeouts" in arrays else None
    if timeouts is not None:
        keep = ~timeouts[: n - 1]
        dropped_timeouts, dropped_step_limit = int(timeouts[: n - 1].sum()), 0
    else:
        keep = _step_limit_keep(terminals, n - 1, max_episode_steps)
        dropped_timeouts, dropped_step_limit = 0, int((~keep).sum())
    rows = np.flatnonzero(keep)
    ends = np.ones(len(rows), dtype=bool)  # last kept row of its episode
    ends[:-1] = np.diff(rows) != 1
    ends |= terminals[rows]
    end_positions = np.flatnonzero(ends)
    obs_rows = np.insert(rows, end_positions + 1, rows[end_positions] + 1)
    terminations = terminals[rows]
    episodes = Episodes(
        observations=obs[obs_rows].astype(np.float32, copy=False),
        actions=arrays["actions"][rows].astype(np.float32, copy=False),
        rewards=arrays["rewards"][rows].astype(np.float32, copy=False),
        terminations=terminations,
        truncations=ends & ~terminations,
        lengths=np.diff(end_positions + 1, prepend=0),
    )
    invariants: dict[str, Any] = {
        "rows": n,
        "transitions": len(rows),
        "episodes": len(end_positions),
        "episodes_terminated": int(terminations.sum()),
        "episodes_truncated": int(episodes.truncations.sum()),
        "dropped_timeouts": dropped_timeouts,
        "dropped_last_row": 1,
        "dropped_step_limit": dropped_step_limit,
        "has_timeouts": timeouts is not None,
        "max_episode_steps": None if timeouts is not None else max_episode_steps,
        "terminal_rows": int(terminals.sum()),
        "terminal_and_timeout_rows": int((terminals & timeouts).sum()) if timeouts is not None else 0,
        "has_next_observations": "next_observations" in arrays,
        "reward_min": float(episodes.rewards.min()) if len(rows) else None,
        "reward_max": float(episodes.rewards.max()) if len(rows) else None,
    }
    if "next_observations" in arrays:
        checked = rows[~terminations]
        differ = (arrays["next_observations"][checked] != obs[checked + 1]).any(axis=1)
        invariants["next_observations_mismatch"] = int(differ.sum())  # informational: D4RL never reads them
    return episodes, invariants


def _import(path: Path, task: Task, force: bool) -> DatasetInfo:
    if dataset_exists(task.dataset_id) and not force:
        raise DataError(f"dataset {task.dataset_id} already exists in {minari_root()}", "pass --force to rebuild it")
    arrays = read_d4rl_file(path, task.env_id)
    episodes, invariants = qlearning_episodes(arrays, task.max_episode_steps or 1000)
    if episodes.num_episodes == 0:
        rows = invariants["rows"]
        raise DataError(f"{path}: no transition left after dropping the last row and timeouts ({rows} rows)")
    extra = {
        "format": "d4rl-hdf5",
        "task": task.name,
        "source_file": path.name,
        "source_sha256": sha256_file(path),
        "source_bytes": path.stat().st_size,
        "convention": CONVENTION,
        "invariants": invariants,
    }
    return write_dataset(
        task.dataset_id,
        episodes,
        env_id=task.env_id,
        ref_min_score=task.ref_min_score,
        ref_max_score=task.ref_max_score,
        description=f"Original D4RL {task.name} ({path.name}) as transitions of {CONVENTION}.",
        algorithm_name=f"D4RL {task.name}",
        extra=extra,
        overwrite=force,
    )


def _import_lock(task: Task) -> contextlib.AbstractContextManager[None]:
    """Serialises imports of one task; not write_dataset's own lock, which it takes inside (flock does not nest)."""
    return dataset_lock(f"import/{task.dataset_id}")


def _d4rl_task(task_name: str) -> Task:
    task = get_task(task_name)
    if task.source != "d4rl":
        raise DataError(f"task {task_name} does not use an original D4RL file (its data source is {task.source})")
    return task


def import_d4rl(path: str | Path, task_name: str | None = None, force: bool = False) -> DatasetInfo:
    """Validate, convert and write one D4RL file as Minari dataset ``d4rl-hdf5/<task>``.

    The task comes from the file name (D4RL's download name) unless ``task_name`` is given. The
    dataset's metadata holds D4RL's reference scores, the evaluation environment, and under
    ``bench`` the source file's name, SHA-256 and size, the conversion convention and the
    invariants of :func:`qlearning_episodes`.
    """
    path = Path(path)
    _check_source(path)
    task = _d4rl_task(task_name or task_name_for_file(path))
    with _import_lock(task):
        return _import(path, task, force)


def import_path(path: str | Path, force: bool = False, task_name: str | None = None) -> list[DatasetInfo]:
    """Import one D4RL file (as task ``task_name`` if given), or every ``*.hdf5`` of a directory named like a
    D4RL download.

    In a directory, files with other names are reported with a ``UserWarning`` (and not
    imported), and datasets already imported are kept (with a warning) unless ``force``.
    """
    path = Path(path)
    if not path.is_dir():
        return [import_d4rl(path, task_name, force=force)]
    if task_name is not None:
        raise ConfigError(f"{path}: a folder; --task names the task of one file", "import the file on its own")
    files = sorted(path.glob("*.hdf5"))
    known = _known_files()
    recognised = [f for f in files if f.name in known]
    if not recognised:
        found = ", ".join(f.name for f in files) or "none"
        raise DataError(
            f"{path}: no D4RL dataset file in this directory (*.hdf5 found: {found})",
            f"expected D4RL download names such as {d4rl_file_name('hopper-medium-v2')}",
        )
    for f in files:
        if f.name not in known:
            warnings.warn(f"{f}: not the download name of a known D4RL dataset; not imported", stacklevel=2)
    infos = []
    for f in recognised:
        task = _d4rl_task(known[f.name])
        if dataset_exists(task.dataset_id) and not force:
            warnings.warn(f"{f}: {task.dataset_id} is already imported; kept (force to rebuild)", stacklevel=2)
            infos.append(read_info(task.dataset_id))
        else:
            infos.append(import_d4rl(f, task.name, force=force))
    return infos


def ensure_imported(task: Task) -> None:
    """Make sure ``task``'s D4RL data is in the Minari root, importing ``$D4RL_DATASET_DIR/<file>`` if needed."""
    if dataset_exists(task.dataset_id):
        return
    if task.source != "d4rl" or task.d4rl_file is None:
        raise DataError(f"dataset {task.dataset_id} is not in the Minari root {minari_root()} (not a D4RL task)")
    source = d4rl_dataset_dir() / task.d4rl_file
    if not source.is_file():
        missing = missing_dataset_error(task.dataset_id)
        raise DataError(f"{missing.message} and {source} does not exist", missing.hint)
    with _import_lock(task):
        if not dataset_exists(task.dataset_id):  # another job may have imported it while we waited
            _import(source, task, force=False)
