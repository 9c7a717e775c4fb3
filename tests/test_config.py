"""Per-task hyperparameters as data: resolution order, sources, and loud failures."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from agents import AGENTS
from agents.base import REWARD_TRANSFORMS, Transitions
from benchmarks import config as config_module
from benchmarks.config import parse_overrides, resolve_config
from benchmarks.errors import ConfigError
from benchmarks.tasks import SUITES, get_task, task_for_dataset


def test_iql_families_follow_the_official_configs():
    mujoco = resolve_config("iql", get_task("hopper-medium-v2"))
    antmaze = resolve_config("iql", task_for_dataset("D4RL/antmaze/umaze-v1"))
    kitchen = resolve_config("iql", task_for_dataset("D4RL/kitchen/mixed-v2"))
    assert (mujoco.config.expectile, mujoco.config.temperature, mujoco.config.reward_transform) == (0.7, 3.0, "iql_locomotion")
    assert (antmaze.config.expectile, antmaze.config.temperature, antmaze.config.reward_transform) == (0.9, 10.0, "iql_antmaze")
    assert (kitchen.config.temperature, kitchen.config.actor_dropout, kitchen.config.reward_transform) == (0.5, 0.1, "none")
    assert mujoco.config.hidden_dims == (256, 256) and mujoco.config.steps == 1_000_000
    assert "antmaze_config.py" in antmaze.sources["expectile"]
    assert "mujoco_config.py" in antmaze.sources["discount"] or "learner.py" in antmaze.sources["discount"]


def test_reward_transforms_on_known_numbers():
    """Each official reward convention on rewards 1, 2, 3, 4 in two episodes (returns 3 and 7)."""
    data = Transitions(observations=torch.zeros(4, 1), actions=torch.zeros(4, 1), rewards=torch.tensor([1.0, 2.0, 3.0, 4.0]),
                       next_observations=torch.zeros(4, 1), terminals=torch.zeros(4), episode_index=torch.tensor([0, 0, 1, 1]))
    expected = {
        "iql_locomotion": [250.0, 500.0, 750.0, 1000.0],  # r * 1000 / (7 - 3)
        "iql_antmaze": [0.0, 1.0, 2.0, 3.0],  # r - 1
        "cql_antmaze": [2.0, 6.0, 10.0, 14.0],  # (r - 0.5) * 4
        "corl_antmaze": [5.0, 15.0, 25.0, 35.0],  # 10 r - 5
        "normalize": [-1.161895, -0.387298, 0.387298, 1.161895],  # (r - 2.5) / 1.290994 (sample std)
        "none": [1.0, 2.0, 3.0, 4.0],
    }
    assert expected.keys() == REWARD_TRANSFORMS.keys()
    for name, values in expected.items():
        torch.testing.assert_close(REWARD_TRANSFORMS[name](data), torch.tensor(values), rtol=1e-6, atol=1e-6)


# ad-hoc datasets of the families that no built-in suite covers
AD_HOC = ["D4RL/antmaze/medium-diverse-v1", "D4RL/kitchen/mixed-v2", "D4RL/pen/human-v2"]


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_every_task_and_family_resolves_for_every_agent(agent):
    tasks = [get_task(name) for suite in SUITES.values() for name in suite] + [task_for_dataset(d) for d in AD_HOC]
    for task in tasks:
        resolved = resolve_config(agent, task)
        assert set(resolved.sources) == {f.name for f in dataclasses.fields(resolved.config)}
        assert resolved.config.reward_transform in REWARD_TRANSFORMS, (task.name, resolved.config.reward_transform)


def test_ad_hoc_protocols_follow_each_domains_official_evaluation():
    """Kitchen and Adroit: 100 episodes every 50k steps (DQL/DTQL main.py); AntMaze: 100 every 50k; the rest 10."""
    protocols = {d: task_for_dataset(d).protocol for d in [*AD_HOC, "mujoco/ant/medium-v0"]}
    assert [(p.eval_interval, p.eval_episodes) for p in protocols.values()] == [(50_000, 100)] * 3 + [(10_000, 10)]
    assert {task_for_dataset(d).family for d in AD_HOC} == {"antmaze", "kitchen", "adroit"}


def test_overrides_win_and_are_typed():
    task = get_task("hopper-medium-v2")
    resolved = resolve_config("iql", task, parse_overrides(["expectile=0.9", "hidden_dims=[64, 64, 64]", "steps=10", "tau=1"]))
    assert resolved.config.expectile == 0.9 and resolved.config.hidden_dims == (64, 64, 64)
    assert resolved.config.tau == 1.0 and isinstance(resolved.config.tau, float)
    assert resolved.sources["expectile"] == "command line --set"
    assert resolved.digest() != resolve_config("iql", task).digest()
    with pytest.raises(ConfigError, match="steps must be int"):
        resolve_config("iql", task, {"steps": 1.5})
    with pytest.raises(ConfigError, match="must be a list"):
        resolve_config("iql", task, {"hidden_dims": 256})
    assert parse_overrides(["actor_lr_schedule=constant"]) == {"actor_lr_schedule": "constant"}


def test_task_table_and_inline_sources(tmp_path, monkeypatch):
    (tmp_path / "bc.toml").write_text(
        """
[defaults]
source = "paper"
steps = 100
batch_size = 32
lr = 1e-3
hidden_dims = [8]
reward_transform = "none"

[family.mujoco]
source = "family table"
lr = 2e-3

[task."hopper-medium-v2"]
source = "task table"
batch_size = { value = 64, source = "a footnote" }
steps = 7
"""
    )
    monkeypatch.setattr(config_module, "CONFIG_DIR", tmp_path)
    hopper = resolve_config("bc", get_task("hopper-medium-v2"))
    walker = resolve_config("bc", get_task("walker2d-medium-v2"))
    assert (hopper.config.lr, hopper.config.batch_size, hopper.config.steps) == (2e-3, 64, 7)
    assert hopper.sources == {"lr": "family table", "batch_size": "a footnote", "steps": "task table",
                              "hidden_dims": "paper", "reward_transform": "paper"}
    assert (walker.config.batch_size, walker.config.steps) == (32, 100)


def test_missing_values_fail_loudly(tmp_path, monkeypatch):
    (tmp_path / "bc.toml").write_text('[defaults]\nsteps = 1\nbatch_size = 2\nreward_transform = "none"\n')
    monkeypatch.setattr(config_module, "CONFIG_DIR", tmp_path)
    with pytest.raises(ConfigError, match="lacks hidden_dims, lr") as err:
        resolve_config("bc", get_task("hopper-medium-v2"))
    assert "benchmarks/configs/bc.toml" in err.value.one_line()


def test_unknown_agent_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        resolve_config("td3", get_task("hopper-medium-v2"))
    assert f"known agents: {', '.join(AGENTS)}" in err.value.one_line() and len(AGENTS) == 7
