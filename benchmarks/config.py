"""Hyperparameters as data: one TOML file per agent, resolved per task, every value traced to a source.

``benchmarks/configs/<agent>.toml`` has a ``[defaults]`` table, ``[family.<family>]`` tables (mujoco,
antmaze, kitchen, adroit, quickstart) and ``[task."<task name>"]`` tables. A table's ``source``
string is the source of every value in it; a single value can carry its own as
``key = { value = ..., source = "..." }``. Resolution order: defaults, then the task's family, then
the task, then ``--set key=value`` from the command line. The result must fill every field of the
agent's config dataclass: a missing value or an unknown key is an error, never a silent default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from agents import AGENTS
from agents.base import Agent
from benchmarks.errors import ConfigError
from benchmarks.tasks import Task

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclasses.dataclass
class ResolvedConfig:
    agent: str
    task: str
    config: Any  # the agent's Config dataclass instance
    sources: dict[str, str]  # field -> where its value came from

    def values(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.values()).encode()).hexdigest()


def get_agent_class(name: str) -> type[Agent]:
    try:
        return AGENTS[name]
    except KeyError:
        raise ConfigError(f"unknown agent {name!r}", f"known agents: {', '.join(AGENTS)}") from None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=list)


def load_agent_table(agent: str) -> dict[str, Any]:
    path = CONFIG_DIR / f"{agent}.toml"
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"agent {agent!r} has no config file {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML ({err})") from None


def named_grid(agent: str, name: str) -> list[Any]:
    """The values of the agent's named sweep ``[sweeps.<name>]`` (e.g. OFQL's eta grid)."""
    grids = load_agent_table(agent).get("sweeps", {})
    if name not in grids:
        known = ", ".join(grids) or "none"
        raise ConfigError(f"agent {agent!r} has no sweep {name!r}", f"its sweeps: {known}")
    return list(grids[name]["values"])


def _layers(table: dict[str, Any], task: Task) -> list[tuple[str, dict[str, Any]]]:
    layers = [("defaults", table.get("defaults", {}))]
    if task.family in table.get("family", {}):
        layers.append((f"family.{task.family}", table["family"][task.family]))
    if task.name in table.get("task", {}):
        layers.append((f'task."{task.name}"', table["task"][task.name]))
    return layers


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["expectile=0.9", "hidden_dims=[256,256]"]`` -> values parsed as TOML (bare words as strings)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r} is not key=value", "e.g. --set expectile=0.9")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        overrides[key.strip()] = value
    return overrides


def _coerce(cls_name: str, name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{cls_name}.{name} must be a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(cls_name, name, item, v) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
            raise ConfigError(f"{cls_name}.{name} must be {hint.__name__}, got {value!r}")
    return value


def resolve_config(agent: str, task: Task, overrides: dict[str, Any] | None = None) -> ResolvedConfig:
    """The agent's config for ``task``: defaults < family < task < overrides, fully checked."""
    config_cls = get_agent_class(agent).Config
    table = load_agent_table(agent)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer_name, layer in _layers(table, task):
        layer_source = layer.get("source", f"{agent}.toml [{layer_name}]")
        for key, value in layer.items():
            if key == "source":
                continue
            if isinstance(value, dict):
                if "value" not in value:
                    raise ConfigError(f"{agent}.toml [{layer_name}] {key}: an inline table needs value = ...")
                values[key], sources[key] = value["value"], value.get("source", layer_source)
            else:
                values[key], sources[key] = value, layer_source
    for key, value in (overrides or {}).items():
        values[key], sources[key] = value, "command line --set"

    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {agent} hyperparameter(s) {', '.join(unknown)}", f"known: {', '.join(sorted(fields))}"
        )
    missing = sorted(set(fields) - set(values))
    if missing:
        raise ConfigError(
            f"{agent} config for task {task.name} lacks {', '.join(missing)}",
            f"set it in benchmarks/configs/{agent}.toml or with --set",
        )
    hints = typing.get_type_hints(config_cls)
    checked = {k: _coerce(config_cls.__name__, k, hints[k], v) for k, v in values.items()}
    try:
        config = config_cls(**checked)
    except ValueError as err:  # a choice or range the config checks itself (AgentConfig.__post_init__)
        raise ConfigError(f"{agent} config for task {task.name}: {err}",
                          f"fix it in benchmarks/configs/{agent}.toml or with --set") from None
    return ResolvedConfig(agent=agent, task=task.name, config=config, sources=sources)
