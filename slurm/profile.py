"""Cluster profiles: what a lab's Slurm needs to know, in one TOML file (see profiles/example.toml)."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from benchmarks.errors import ConfigError

PROFILE_DIR = Path(__file__).parent / "profiles"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Resources of one job (one cell: an agent x task with its seeds, or one seed)."""

    partition: str | None = None  # --partition
    gpus_per_node: int = 0  # --gpus-per-node (submitit gpus_per_node)
    cpus_per_task: int = 1  # --cpus-per-task; also torch's thread count in the job
    mem_gb: float | None = None  # --mem
    time_min: int = 240  # --time; the job checkpoints and requeues itself before it
    account: str | None = None  # --account
    qos: str | None = None  # --qos
    constraint: str | None = None  # --constraint, e.g. "a100|h100"
    array_parallelism: int = 256  # at most this many array tasks of one submission run at once
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: checkpoint, requeue
    max_requeues: int = 10  # time-limit requeues allowed per job (preemptions do not count)
    extra_sbatch: dict[str, Any] = dataclasses.field(default_factory=dict)  # any other sbatch option
    setup: tuple[str, ...] = ()  # shell lines before the job starts (module load, activate env)

    def submitit_parameters(self) -> dict[str, Any]:
        """Parameters for ``submitit.SlurmExecutor.update_parameters``."""
        params: dict[str, Any] = {
            "time": self.time_min,
            "cpus_per_task": self.cpus_per_task,
            "signal_delay_s": self.signal_delay_s,
            "array_parallelism": self.array_parallelism,
            "setup": list(self.setup),
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb * 1024)}MB"
        for key in ("partition", "account", "qos", "constraint"):
            if (value := getattr(self, key)) is not None:
                params[key] = value
        if self.extra_sbatch:
            params["additional_parameters"] = dict(self.extra_sbatch)
        return params


MINIMA = {"gpus_per_node": 0, "cpus_per_task": 1, "time_min": 1, "array_parallelism": 1, "signal_delay_s": 0,
          "max_requeues": 0}  # the smallest value of each integer field


def _accepted(hint: Any) -> tuple[type, ...]:
    """The TOML value types a field accepts (an int where a float goes; a list where a tuple goes)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) if arg is not type(None) for t in _accepted(arg))
    if origin is tuple:
        return (list,)
    if origin is not None:
        return (origin,)
    return (float, int) if hint is float else (hint,)


def load_profile(path: str | Path | None) -> Profile:
    """A profile from a TOML file (a path, or a name in slurm/profiles/); None: the defaults."""
    if path is None:
        return Profile()
    candidate = Path(path)
    if not candidate.exists() and (PROFILE_DIR / f"{path}.toml").exists():
        candidate = PROFILE_DIR / f"{path}.toml"
    known = ", ".join(p.stem for p in sorted(PROFILE_DIR.glob("*.toml")))
    try:
        table = tomllib.loads(candidate.read_text())
    except FileNotFoundError:
        raise ConfigError(f"profile {path} not found", f"give a TOML file, or one of: {known}") from None
    except IsADirectoryError:
        raise ConfigError(f"profile {path} is a folder", f"give a TOML file, or one of: {known}") from None
    except OSError as err:
        raise ConfigError(f"profile {candidate} cannot be read ({err.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{candidate}: invalid TOML ({err})") from None
    fields = {f.name: f for f in dataclasses.fields(Profile)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{candidate}: unknown profile field(s) {', '.join(unknown)}", f"known: {', '.join(fields)}")
    hints = typing.get_type_hints(Profile)
    for key, value in table.items():
        expected = _accepted(hints[key])
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            raise ConfigError(f"{candidate}: {key} = {value!r} should be {' or '.join(t.__name__ for t in expected)}")
    if "setup" in table:
        table["setup"] = tuple(table["setup"])
    profile = Profile(**table)
    for key, low in MINIMA.items():
        if getattr(profile, key) < low:
            raise ConfigError(f"{candidate}: {key} = {getattr(profile, key)} should be at least {low}")
    if profile.mem_gb is not None and profile.mem_gb * 1024 < 1:
        raise ConfigError(f"{candidate}: mem_gb = {profile.mem_gb} should be at least 1 MB (0.001)")
    if profile.signal_delay_s >= profile.time_min * 60:
        raise ConfigError(f"{candidate}: signal_delay_s = {profile.signal_delay_s} is not shorter than time_min = "
                          f"{profile.time_min} minutes", "jobs get SIGUSR2 this long before their time limit")
    return profile
