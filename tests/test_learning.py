"""Learning on CPU: each agent, trained by the real harness with its quick-start config on a
quick-start mixed dataset, must beat the average normalised return of the data it learned from, over
3 seeds (IQL also on the pendulum's, with one seed); OFQL's one-step policy must also beat behaviour cloning on the same data.

The mixed datasets are mostly a systematically wrong ("medium") behaviour with a minority of expert
episodes (see benchmarks/data/quickstart.py), so cloning them recovers only part of the expert's
score; the margin below is far above the seed-to-seed spread measured for every agent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from agents import AGENTS
from benchmarks.cli import main
from benchmarks.data import load_task_data
from benchmarks.data.minari_store import read_info
from benchmarks.tasks import get_task

SEEDS = "0,1,2"
REACHER = "quickstart/reacher/mixed-v0"
PENDULUM = "quickstart/invertedpendulum/mixed-v0"
MARGIN = 5.0  # normalised points


@pytest.fixture(scope="module")
def results(tmp_path_factory, quickstart) -> Path:
    """The README's main job: every agent on the `quickstart` suite (Reacher), 3 seeds, as a sweep on
    submitit's local executor (one job per core), in a results root of this module's."""
    root = tmp_path_factory.mktemp("learning")
    assert main(["submit", "--suite", "quickstart", "--seeds", SEEDS, "--executor", "local", "--results", str(root)]) == 0
    return root


def final_of(agent: str, task: str, results: Path) -> dict:
    paths = list(results.glob(f"runs/{agent}__{task.replace('/', '--')}__*/final.json"))
    assert len(paths) == 1, f"no finished run of {agent} on {task} in {results} (logs: {results}/sweeps/*/logs)"
    final = json.loads(paths[0].read_text())
    print(f"{agent} on {task}: seeds {[round(s, 1) for s in final['score']['per_seed'].values()]}, "
          f"mean {final['score']['mean']:.1f}")
    return final


def data_score(task: str) -> float:
    """Average normalised return of the dataset's episodes, summed from its stored rewards."""
    data = load_task_data(get_task(task), torch.device("cpu"))
    mean_return = data.transitions.episode_returns().mean().item()
    assert mean_return == pytest.approx(read_info(task).extra["statistics"]["return_mean"])  # the metadata agrees
    return 100.0 * (mean_return - data.ref_min_score) / (data.ref_max_score - data.ref_min_score)


@pytest.mark.parametrize("agent", list(AGENTS))
def test_agent_beats_its_data(agent, results):
    final = final_of(agent, REACHER, results)
    assert len(final["score"]["per_seed"]) == 3
    assert final["score"]["mean"] > data_score(REACHER) + MARGIN


def test_ofql_beats_behaviour_cloning(results):
    ofql, bc = final_of("ofql", REACHER, results), final_of("bc", REACHER, results)
    assert ofql["score"]["mean"] > bc["score"]["mean"] + MARGIN


def test_iql_beats_the_pendulum_data(results):
    """The pendulum's medium behaviour drives the cart off its rail; cloning the mixed data does too. One seed (0):
    5,000 steps of batch 256 and up to 1,000-step episodes; three seeds cost a CI machine about 3 minutes."""
    assert main(["run", "--agent", "iql", "--task", PENDULUM, "--seeds", "0", "--no-progress", "--results", str(results)]) == 0
    final = final_of("iql", PENDULUM, results)
    assert final["score"]["mean"] > data_score(PENDULUM) + MARGIN
