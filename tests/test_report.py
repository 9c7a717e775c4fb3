"""``bench report``: results tree -> DataFrame -> score and comparison tables (LaTeX compiled by pdflatex,
Markdown, CSV), one macro per cell, rliable aggregates and figures, and ``bench report --cell``.

One real tiny run (BC, 20 steps on the quick-start Reacher data) fixes the on-disk format; every other
run is written by copying that run's files and changing only keys they already have, so a change of
format in the training loop fails here instead of leaving the report reading stale keys. The
synthetic runs carry known scores (D4RL, Minari and quick-start tasks), a seed that diverged, an
unfinished run, seeds and a cell that a sweep planned but never ran, and a cell with no published number.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import published, report, statistics, tables
from analysis.results import cell_scores, completeness, diverged_seeds, load_results
from benchmarks.cli import build_parser, cell_from_args, main
from benchmarks.tasks import Protocol, get_task
from benchmarks.training import Cell, seed_scores

REPS = 100  # bootstrap repetitions: enough to run rliable's code paths, small enough to be quick
NAN = math.nan
REAL_LABEL = "bc (steps=20, eval_interval=10, eval_episodes=1)"
REAL_RUN = ["run", "--agent", "bc", "--task", "quickstart/reacher/mixed-v0", "--seeds", "0,1", "--steps", "20", "--device", "cpu",
            "--eval-every", "10", "--eval-episodes", "1", "--log-every", "10", "--no-progress"]

# final-evaluation scores per seed (seeds 0, 1, ...); the evaluation halfway is BEST_BONUS higher for seed 0
# and 1 lower for the others, so the best-during-training protocol differs from the final one
KNOWN = {
    ("ofql", "hopper-medium-v2"): [103.0, 104.0, 103.5, 104.5, 103.0],  # published 103.6: reproduced, bold
    ("dql", "hopper-medium-v2"): [80.0, 81.0, 79.0, 80.0, 80.0],  # published 90.5: below
    ("bc", "hopper-medium-v2"): [60.0, 61.0, 59.0, 60.0, 60.0],  # published 52.9: above
    ("dtql", "hopper-medium-v2"): [90.0, 91.0],  # two seeds: inconclusive
    ("ofql", "walker2d-medium-v2"): [88.0, 86.0, 90.0, 87.0, 89.0],  # tied with dtql
    ("dtql", "walker2d-medium-v2"): [86.0, 87.0, 85.0, 88.0, 89.0],  # no published number
    ("dql", "walker2d-medium-v2"): [70.0, NAN, 72.0],  # seed 1 diverged; the sweep planned seeds 0-4
    ("ofql", "mujoco/hopper/medium-v0"): [50.0, 52.0, 54.0],  # Minari: never beside D4RL numbers
    ("bc", "mujoco/hopper/medium-v0"): [40.0, 41.0, 42.0],
    ("ofql", "quickstart/reacher/mixed-v0"): [95.0, 96.0, 97.0],
    ("bc", "quickstart/reacher/mixed-v0"): [80.0, 82.0, 84.0],
}
UNFINISHED = ("bc", "walker2d-medium-v2", [55.0, 56.0, 57.0])  # stopped halfway: no final.json
PLANNED = [("dql", "walker2d-medium-v2", [0, 1, 2, 3, 4]), ("cpql", "hopper-medium-v2", [0, 1, 2])]
BEST_BONUS = 2.0
STEPS = {"quickstart/reacher/mixed-v0": 20_000}  # others: 1,000,000
COMMIT = "5ca1ab1e" * 5


def steps_of(task: str) -> int:
    return STEPS.get(task, 1_000_000)


def returns_of(scores: list[float]) -> list[float]:
    return [s - 100.0 for s in scores]


def known_scores(protocol: str, agent: str, task: str) -> list[float]:
    """The usable (finite) per-seed scores of a synthetic cell under ``protocol``."""
    finals = KNOWN[(agent, task)]
    if protocol == "best":
        finals = [f + BEST_BONUS if seed == 0 else f for seed, f in enumerate(finals)]
    return [f for f in finals if not math.isnan(f)]


# ------------------------------------------------------------------------------------ the results tree


def put(record: dict, key: str, value) -> None:
    """Set a key the training loop writes; fail if it no longer writes it (the format changed)."""
    assert key in record, f"the training loop no longer writes {key!r}: update analysis/results.py and this test"
    record[key] = value


class Template:
    """The files of the real run, to be copied with changed values."""

    def __init__(self, run_dir: Path):
        self.config = json.loads((run_dir / "config.json").read_text())
        self.final = json.loads((run_dir / "final.json").read_text())
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        self.train_line = next(r for r in lines if r["kind"] == "train")
        self.eval_line = next(r for r in lines if r["kind"] == "eval")


def write_run(root: Path, template: Template, agent: str, task: str, finals: list[float], complete: bool = True) -> str:
    seeds = list(range(len(finals)))
    steps = steps_of(task)
    run_id = f"{agent}__{task.replace('/', '--')}__seeds-{'-'.join(map(str, seeds))}__synthetic"
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True)
    halfway = [f + BEST_BONUS if seed == 0 else f - 1.0 for seed, f in enumerate(finals)]
    halfway = [60.0 if math.isnan(h) else h for h in halfway]  # the diverged seed was fine halfway
    evaluations = []
    for step, scores in [(steps // 2, halfway), (steps, finals)][: 2 if complete else 1]:
        line = copy.deepcopy(template.eval_line)
        put(line, "step", step)
        put(line, "score", scores)
        put(line, "return", returns_of(scores))
        put(line, "episode_returns", [[r] * 10 for r in returns_of(scores)])
        evaluations.append(line)
    train = copy.deepcopy(template.train_line)
    put(train, "step", evaluations[-1]["step"])
    for key in train.keys() - {"kind", "step"}:
        train[key] = [NAN if math.isnan(f) else 0.5 for f in finals]  # the diverged seed's loss too
    with open(run_dir / "metrics.jsonl", "w") as f:
        for line in [train, *evaluations]:
            f.write(json.dumps(line) + "\n")

    config = copy.deepcopy(template.config)
    reproduce = Cell(agent, task, tuple(seeds)).command()
    for key, value in {"run_id": run_id, "agent": agent, "task": task, "seeds": seeds, "reproduce": reproduce,
                       "variant": ""}.items():
        put(config, key, value)
    put(config["config"], "steps", steps)
    put(config["protocol"], "eval_interval", steps // 2)
    put(config["protocol"], "eval_episodes", 10)
    put(config["dataset"], "dataset_id", task)
    put(config["dataset"], "sha256", hashlib.sha256(task.encode()).hexdigest())
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    if not complete:
        return run_id

    final = copy.deepcopy(template.final)
    for key in ("run_id", "agent", "task", "seeds", "reproduce", "config", "protocol", "dataset"):
        put(final, key, config[key])
    per_protocol = seed_scores(evaluations, Protocol(**config["protocol"]))
    put(final, "scores", {name: dict(zip(map(str, seeds), values)) for name, values in per_protocol.items()})
    put(final, "score", {"protocol": "final", "per_seed": final["scores"]["final"], "mean": float(np.mean(finals)),
                         "std": float(np.std(finals, ddof=1))})
    put(final, "final_return", dict(zip(map(str, seeds), returns_of(finals))))
    put(final, "evaluations", len(evaluations))
    put(final["provenance"]["git"], "commit", COMMIT)
    (run_dir / "final.json").write_text(json.dumps(final, indent=2))
    return run_id


@pytest.fixture(scope="module")
def tree(quickstart, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report-results")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*REAL_RUN, "--results", str(root)]) == 0
    (real,) = (root / "runs").iterdir()
    template = Template(real)
    for (agent, task), finals in KNOWN.items():
        write_run(root, template, agent, task, finals)
    write_run(root, template, *UNFINISHED, complete=False)
    manifest = root / "sweeps" / "20260101-000000-000000" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"sweep_id": manifest.parent.name, "jobs": [
        {"run_id": f"{a}-planned", "agent": a, "task": t, "seeds": s} for a, t, s in PLANNED]}))
    return root


@pytest.fixture(scope="module")
def built(tree: Path) -> tuple[Path, str]:
    """``bench report`` on the tree: its output folder and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", "--results", str(tree), "--reps", str(REPS)]) == 0
    return tree / "report", out.getvalue()


def real_run_dir(tree: Path) -> Path:
    return next(p for p in (tree / "runs").iterdir() if not p.name.endswith("__synthetic"))


# ------------------------------------------------------------------------------------ loading


def test_results_frame_holds_every_evaluation_with_provenance(tree):
    results = load_results(tree)
    for column in ("agent", "task", "suite", "seed", "step", "return", "score", "run_id", "commit", "dirty",
                   "device", "reproduce", "complete", "diverged", "label"):
        assert column in results.columns
    for (agent, task), finals in KNOWN.items():
        rows = results[(results["label"] == agent) & (results["task"] == task)]
        assert len(rows) == 2 * len(finals)  # two evaluations per seed
        last = rows[rows["step"] == steps_of(task)].sort_values("seed")
        np.testing.assert_array_equal(last["score"], finals)
        np.testing.assert_array_equal(last["return"], returns_of(finals))
        assert (rows["commit"] == COMMIT).all() and rows["complete"].all()
        assert (rows["reproduce"] == Cell(agent, task, tuple(range(len(finals)))).command()).all()
    assert results.loc[results["task"] == "hopper-medium-v2", "suite"].eq("d4rl-locomotion").all()
    assert results.loc[results["task"] == "mujoco/hopper/medium-v0", "suite"].eq("minari-mujoco").all()
    assert results.loc[results["task"].str.startswith("quickstart/"), "suite"].eq("quickstart-all").all()
    assert results.loc[results["task"] == "hopper-medium-v2", "comparable"].all()
    assert not results.loc[results["task"] == "mujoco/hopper/medium-v0", "comparable"].any()

    # the real run: what the DataFrame says is what final.json says
    real = real_run_dir(tree)
    final = json.loads((real / "final.json").read_text())
    rows = results[results["run_id"] == real.name]
    assert set(rows["label"]) == {REAL_LABEL} and rows["complete"].all() and not rows["diverged"].any()
    last = rows[rows["step"] == 20].sort_values("seed")
    np.testing.assert_allclose(last["score"], [final["scores"]["final"][s] for s in ("0", "1")])
    assert rows["commit"].iloc[0] == final["provenance"]["git"]["commit"]


def test_unfinished_and_diverged_runs_are_kept_marked_and_left_out(tree):
    results = load_results(tree)
    dql = results[(results["agent"] == "dql") & (results["task"] == "walker2d-medium-v2")]
    assert set(dql.loc[dql["diverged"], "seed"]) == {1}  # only the seed that diverged: seeds train independently
    unfinished = results[(results["agent"] == "bc") & (results["task"] == "walker2d-medium-v2")]
    assert len(unfinished) == 3 and not unfinished["complete"].any()

    for protocol in ("final", "best"):
        scores = cell_scores(results, protocol)
        cell = scores[(scores["agent"] == "dql") & (scores["task"] == "walker2d-medium-v2")]
        assert sorted(cell["seed"]) == [0, 2]
        assert cell["score"].mean() == pytest.approx(np.mean(known_scores(protocol, "dql", "walker2d-medium-v2")))
        assert not ((scores["agent"] == "bc") & (scores["task"] == "walker2d-medium-v2")).any()
        assert scores["score"].notna().all()


def test_divergence_is_per_seed():
    records = [{"kind": "train", "step": 10, "loss": [0.1, NAN, 0.3], "q": [1.0, 2.0, math.inf]},
               {"kind": "eval", "step": 10, "score": [50.0, 60.0, 70.0], "return": [NAN, NAN, NAN]}]
    assert diverged_seeds(records, 3) == [False, True, True]  # returns are not checked; scores are
    assert diverged_seeds([{"kind": "eval", "step": 10, "score": [50.0, NAN]}], 2) == [False, True]
    assert diverged_seeds([{"kind": "train", "step": 10, "lr": NAN}], 2) == [True, True]  # not per seed: all
    assert diverged_seeds([{"kind": "train", "step": 10, "loss": [[0.1, 0.2], [0.3, NAN]]}], 2) == [False, True]


def test_best_score_picks_among_the_protocols_grid():
    """D4RL locomotion evaluates every 10k steps, but DQL's online model selection saw its 50k grid:
    ``best`` must not pick an off-grid evaluation, in final.json nor in the report's frame."""
    protocol = get_task("hopper-medium-v2").protocol
    assert (protocol.eval_interval, protocol.best_interval) == (10_000, 50_000)
    steps = list(range(10_000, 120_001, 10_000))  # a run of 120k steps: the last evaluation is off the grid
    scores = {step: [50.0 + step / 10_000, 40.0] for step in steps}
    scores[30_000] = [99.0, 99.0]  # off the grid: never the best
    scores[50_000][1] = 70.0  # on the grid
    scores[120_000][1] = 80.0  # the last evaluation always counts
    evaluations = [{"step": step, "score": scores[step]} for step in steps]
    assert seed_scores(evaluations, protocol)["best"] == [62.0, 80.0]
    assert seed_scores(evaluations, Protocol(eval_interval=10_000, eval_episodes=10))["best"] == [99.0, 99.0]

    rows = [{"run_id": "r", "agent": "dql", "variant": "", "label": "dql", "task": "hopper-medium-v2",
             "suite": "d4rl-locomotion", "comparable": True, "seed": seed, "step": step, "score": scores[step][seed],
             "steps": 120_000, "complete": True, "diverged": False, "eval_episodes": 10,
             "best_interval": protocol.best_interval, "finished": 0.0} for step in steps for seed in (0, 1)]
    frame = pd.DataFrame(rows)
    assert cell_scores(frame, "best").sort_values("seed")["score"].tolist() == [62.0, 80.0]
    every = cell_scores(frame.assign(best_interval=np.nan), "best")  # runs written before the grid existed
    assert every.sort_values("seed")["score"].tolist() == [99.0, 99.0]


def test_completeness_lists_every_gap(built):
    out, printed = built
    frame = pd.read_csv(out / "completeness.csv", dtype=str).fillna("").set_index(["label", "task"])
    assert frame.loc[("dql", "walker2d-medium-v2"), ["finished", "incomplete", "diverged", "missing"]].tolist() == [
        "0,2", "", "1", "3,4"]
    assert frame.loc[("bc", "walker2d-medium-v2"), ["finished", "incomplete"]].tolist() == ["", "0,1,2"]
    assert frame.loc[("cpql", "hopper-medium-v2"), ["finished", "missing"]].tolist() == ["", "0,1,2"]
    assert frame.loc[("ofql", "hopper-medium-v2"), "finished"] == "0,1,2,3,4"
    assert "cpql" in (out / "completeness.md").read_text()
    gap_lines = [line for line in printed.splitlines() if line.startswith("  ") and "missing [" in line]
    assert len(gap_lines) == 3 and "completeness: " in printed
    assert any("dql" in line and "diverged [1]" in line and "missing [3, 4]" in line for line in gap_lines)


def test_completeness_counts_a_planned_variant_under_its_own_label(tree, tmp_path):
    """A sweep with --steps/--set plans runs whose label is not the agent's name: finished, not missing."""
    real = real_run_dir(tree)
    shutil.copytree(real, tmp_path / "runs" / real.name)
    manifest = tmp_path / "sweeps" / "20260101-000000-000000" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"sweep_id": manifest.parent.name, "jobs": [
        {"run_id": real.name, "agent": "bc", "variant": REAL_LABEL[4:-1], "task": "quickstart/reacher/mixed-v0",
         "seeds": [0, 1]},
        {"run_id": "bc-never-started", "agent": "bc", "variant": REAL_LABEL[4:-1], "task": "quickstart/reacher/mixed-v0",
         "seeds": [2]},
        {"run_id": "bc-of-an-older-sweep", "task": "quickstart/reacher/mixed-v0", "agent": "bc", "seeds": [3]}]}))
    frame = completeness(load_results(tmp_path), report.expected_cells(tmp_path)).set_index("label")
    assert frame.loc[REAL_LABEL, ["finished", "missing"]].tolist() == [[0, 1], [2]]
    assert frame.loc["bc", ["finished", "missing"]].tolist() == [[], [3]]  # manifests without variants


# ------------------------------------------------------------------------------------ score tables


def latex_rows(tex: str) -> tuple[list[str], dict[str, list[str]], list[list[str]]]:
    """Column labels, task rows and average rows of a score table."""
    labels, rows, averages = [], {}, []
    for line in tex.splitlines():
        if not line.endswith("\\\\") or " & " not in line:
            continue
        cells = [c.strip() for c in line[:-2].split(" & ")]
        if cells[0] == "Task":
            labels = [c.replace("\\_", "_") for c in cells[1:]]
        elif cells[0].startswith("Average"):
            averages.append(cells)
        else:
            rows[cells[0]] = cells[1:]
    return labels, rows, averages


def parse_cell(text: str) -> tuple[str, list[str], str]:
    """``(mark, numbers, footnotes)`` of a LaTeX cell like ``\\underline{88.0 $\\pm$ 1.6}\\textsuperscript{c}``."""
    footnotes = "".join(re.findall(r"\\textsuperscript\{(\w)\}", text))
    mark = "best" if text.startswith("\\textbf") else "tie" if text.startswith("\\underline") else ""
    return mark, re.findall(r"-?\d+\.\d", text), footnotes


@pytest.mark.parametrize("protocol", ["final", "best"])
def test_latex_score_table_states_the_dataframe_numbers(built, tree, protocol):
    out, _ = built
    tex = (out / f"scores_{protocol}.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    labels, rows, averages = latex_rows(tex)
    assert labels == ["ofql", "dql", "dtql", "bc", REAL_LABEL]  # the paper's agent order
    expected = cell_scores(load_results(tree), protocol).groupby(["task", "label"])["score"].agg(["mean", "std", "count"])
    for (task, label), e in expected.iterrows():
        _, numbers, _ = parse_cell(rows[task][labels.index(label)])
        assert numbers == ([f"{e['mean']:.1f}"] if e["count"] < 2 else [f"{e['mean']:.1f}", f"{e['std']:.1f}"])
    # ... and the DataFrame holds the known values
    for (agent, task) in KNOWN:
        values = known_scores(protocol, agent, task)
        assert expected.loc[(task, agent), "mean"] == pytest.approx(np.mean(values))
        assert expected.loc[(task, agent), "std"] == pytest.approx(np.std(values, ddof=1))

    marks = {(task, label): parse_cell(rows[task][i]) for task in rows for i, label in enumerate(labels)}
    assert marks[("hopper-medium-v2", "ofql")][0] == "best"  # its interval overlaps no other
    assert {label for (task, label), m in marks.items() if task == "hopper-medium-v2" and m[0]} == {"ofql"}
    assert {label for (task, label), m in marks.items() if task == "walker2d-medium-v2" and m[0]} == {"ofql", "dtql"}
    assert all(m[0] == "tie" for (task, label), m in marks.items() if task == "walker2d-medium-v2" and m[0])
    assert marks[("mujoco/hopper/medium-v0", "ofql")][0] == "best"
    # gaps: no finished run (a), seeds left out (c), an average over an incomplete row (b)
    assert rows["walker2d-medium-v2"][labels.index("bc")] == "--\\textsuperscript{a}"
    assert marks[("walker2d-medium-v2", "dql")][2] == "c"
    assert all(m[2] == "" for key, m in marks.items() if key not in {("walker2d-medium-v2", "dql"), ("walker2d-medium-v2", "bc")}
               and not rows[key[0]][labels.index(key[1])].startswith("--"))
    for note in ("\\textsuperscript{a}\\,no finished run", "\\textsuperscript{b}\\,not every task",
                 "\\textsuperscript{c}\\,some seeds left out"):
        assert note in tex

    # averages: one row per suite, over the suite's tasks, only where all are present
    assert [a[0] for a in averages] == ["Average (2 of 9 tasks)", "Average (1 of 9 tasks)", "Average (1 of 2 tasks)"]
    d4rl = dict(zip(labels, averages[0][1:]))
    ofql = np.mean([np.mean(known_scores(protocol, "ofql", t)) for t in ("hopper-medium-v2", "walker2d-medium-v2")])
    assert d4rl["ofql"] == f"{ofql:.1f}" and d4rl["bc"] == "--\\textsuperscript{b}"

    # the caption states the protocol, seeds, steps and evaluation episodes
    caption = re.search(r"\\caption\{(.*)\}", tex).group(1)
    assert ("final evaluation" if protocol == "final" else "best evaluation during training") in caption
    assert "2/3/5 seeds" in caption and "ofql 20,000/1,000,000" in caption and "1/10 evaluation episodes" in caption

    # Markdown and CSV carry the same numbers
    markdown = (out / f"scores_{protocol}.md").read_text()
    frame = pd.read_csv(out / f"scores_{protocol}.csv")
    for (task, label), e in expected.iterrows():
        row = frame[(frame["task"] == task) & (frame["label"] == label)].iloc[0]
        assert row["mean"] == pytest.approx(e["mean"]) and row["n_seeds"] == e["count"] and row["protocol"] == protocol
        assert f"{e['mean']:.1f}" in markdown
    assert frame.loc[frame["partial"], ["task", "label"]].values.tolist() == [["walker2d-medium-v2", "dql"]]


def test_macros_one_per_cell_and_expand_in_latex(built, tree):
    out, _ = built
    text = (out / "macros.tex").read_text()
    defined = dict(re.findall(r"\\newcommand\{(\\\w+)\}\{(.*)\}", text))
    assert "is not defined" not in text  # no two cells share a name
    final = cell_scores(load_results(tree), "final")
    n_cells = sum(len(cell_scores(load_results(tree), p).groupby(["task", "label"])) for p in ("final", "best"))
    cell_macros = [n for n in defined if not n.endswith(("Average", "Published", "Delta", "Verdict"))]
    assert len(cell_macros) == n_cells
    ofql = final[(final["label"] == "ofql") & (final["task"] == "hopper-medium-v2")]["score"]
    assert defined["\\benchFinalOfqlHopperMediumVTwo"] == f"{ofql.mean():.1f} \\ensuremath{{\\pm}} {ofql.std():.1f}"
    assert defined["\\benchFinalDqlHopperMediumVTwoVerdict"] == "published as best"  # DQL reports its best
    assert defined["\\benchBestDqlHopperMediumVTwoVerdict"] == "below"
    assert defined["\\benchFinalDqlHopperMediumVTwoDelta"] == "-10.5"
    assert defined["\\benchFinalDtqlWalkerTwodMediumVTwoPublished"] == "--"
    assert "\\benchFinalOfqlDFourrlLocomotionAverage" in defined

    if not pdflatex_available():
        return
    # TeX itself expands them to the same text
    probe = out / "macro_probe.tex"
    names = ["\\benchFinalOfqlHopperMediumVTwo", "\\benchBestBcMujocoHopperMediumVZero", "\\benchBestDqlHopperMediumVTwoVerdict"]
    probe.write_text("\\documentclass{article}\n\\input{macros.tex}\n\\newwrite\\probe\n\\immediate\\openout\\probe=probe.txt\n"
                     + "".join(f"\\immediate\\write\\probe{{{n}}}\n" for n in names)
                     + "\\immediate\\closeout\\probe\n\\begin{document}x\\end{document}\n")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", probe.name], cwd=out, check=True,
                   capture_output=True, timeout=120)
    written = (out / "probe.txt").read_text().splitlines()
    bc = known_scores("best", "bc", "mujoco/hopper/medium-v0")
    assert written[0].startswith(f"{ofql.mean():.1f} ") and written[0].endswith(f" {ofql.std():.1f}")
    assert written[1].startswith(f"{np.mean(bc):.1f} ") and written[2] == "below"


def test_macro_names_tell_decimals_apart_and_ambiguous_names_stay_undefined():
    scores = pd.DataFrame([{"label": f"cql ({v})", "task": "hopper-medium-v2", "suite": "d4rl-locomotion", "seed": 0,
                            "score": score} for v, score in (("alpha=5.0", 60.0), ("alpha=50", 40.0),
                                                              ("lr=3e-4", 70.0), ("lr=3e4", 10.0))])
    text = tables.macros([tables.score_table(scores, "final", "")])
    defined = dict(re.findall(r"\\newcommand\{(\\\w+)\}\{(.*)\}", text))
    assert defined["\\benchFinalCqlAlphaFivePointZeroHopperMediumVTwo"] == "60.0"
    assert defined["\\benchFinalCqlAlphaFiveZeroHopperMediumVTwo"] == "40.0"
    # "3e-4" and "3e4" spell alike: neither may cite the other's number
    assert not any("Threee" in name for name in defined)
    assert "% \\benchFinalCqlLrThreeeFourHopperMediumVTwo is not defined: it would name more than one cell" in text


def test_latex_escape_compiles_every_special_character(tmp_path):
    text = "a_b%c&d#e$f~g^h{i}j\\k"
    escaped = tables.latex_escape(text)
    assert escaped == "a\\_b\\%c\\&d\\#e\\$f\\textasciitilde{}g\\textasciicircum{}h\\{i\\}j\\textbackslash{}k"
    if not pdflatex_available():
        return
    (tmp_path / "escape.tex").write_text(f"\\documentclass{{article}}\\begin{{document}}{escaped}\\end{{document}}\n")
    out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "escape.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-500:]


def pdflatex_available() -> bool:
    if shutil.which("pdflatex"):
        return True
    if os.environ.get("BENCH_REQUIRE_PDFLATEX"):
        pytest.fail("pdflatex is not installed (BENCH_REQUIRE_PDFLATEX is set)")
    return False


def test_report_compiles_with_pdflatex(built):
    if not pdflatex_available():
        pytest.skip("pdflatex is not installed (Debian: texlive-latex-recommended)")
    out, _ = built
    document = (out / "report.tex").read_text()
    for name in ("scores_final.tex", "scores_best.tex", "published_final.tex", "published_best.tex"):
        assert f"\\input{{{name}}}" in document
    pdf = report.compile_pdf(out / "report.tex")
    assert pdf.read_bytes().startswith(b"%PDF")
    log = (out / "report.log").read_text(errors="replace")
    pages = int(re.search(r"Output written on report\.pdf \((\d+) pages?", log).group(1))
    assert pages >= 3 and "undefined" not in log.lower()


# ------------------------------------------------------------------------------------ published numbers


def test_verdict_rule_on_constructed_cases():
    e = statistics.estimate
    assert statistics.verdict(e([99.0, 100.0, 101.0]), 100.0) == "reproduced"
    ours = e([99.0, 100.0, 101.0])
    assert statistics.verdict(ours, ours.high) == "reproduced" and statistics.verdict(ours, ours.low) == "reproduced"
    assert statistics.verdict(ours, ours.high + 0.01) == "below"  # the published number is higher than ours
    assert statistics.verdict(ours, ours.low - 0.01) == "above"
    assert statistics.verdict(e([80.0, 81.0, 79.0]), 90.0) == "below"
    assert statistics.verdict(e([80.0, 81.0, 79.0]), 70.0) == "above"
    assert statistics.verdict(e([99.0, 101.0]), 100.0) == "inconclusive"  # fewer than 3 seeds
    wide = e([50.0, 90.0, 70.0])  # contains the published number, but too wide to tell
    assert wide.low < 70.0 < wide.high and wide.half_width > statistics.MAX_HALF_WIDTH_FOR_VERDICT
    assert statistics.verdict(wide, 70.0) == "inconclusive"
    ours = e([10.0, 11.0, 12.0])
    assert ours.mean == 11.0 and ours.std == 1.0
    assert ours.half_width == pytest.approx(4.302652729911275 / math.sqrt(3))  # Student t(2), 97.5%


@pytest.mark.parametrize("protocol", ["final", "best"])
def test_comparison_with_published_numbers(built, protocol):
    out, _ = built
    frame = pd.read_csv(out / f"published_{protocol}.csv").set_index(["agent", "task"])
    assert not frame.index.get_level_values("task").str.contains("/").any()  # Minari and quick-start never
    assert set(frame.index.get_level_values("task")) == {"hopper-medium-v2", "walker2d-medium-v2"}
    assert ("bc", "walker2d-medium-v2") not in frame.index  # nothing finished there
    # a verdict only under the score rule of the published number: DQL's is its best evaluation (online model
    # selection), the others' their final one
    expected = {("ofql", "hopper-medium-v2"): ("reproduced", 103.6), ("dql", "hopper-medium-v2"): ("below", 90.5),
                ("bc", "hopper-medium-v2"): ("above", 52.9), ("dtql", "hopper-medium-v2"): ("inconclusive", 99.6),
                ("dql", "walker2d-medium-v2"): ("inconclusive", 87.0), ("ofql", "walker2d-medium-v2"): ("reproduced", 87.4)}
    for agent, task in expected:
        if (agent == "dql") != (protocol == "best"):
            expected[(agent, task)] = ("published as " + ("best" if agent == "dql" else "final"), expected[(agent, task)][1])
    for (agent, task), (verdict, number) in expected.items():
        row = frame.loc[(agent, task)]
        ours = np.mean(known_scores(protocol, agent, task))
        assert (row["verdict"], row["published"], row["n_seeds"]) == (verdict, number, len(known_scores(protocol, agent, task)))
        assert row["ours_mean"] == pytest.approx(ours) and row["difference"] == pytest.approx(ours - number)
    missing = frame.loc[("dtql", "walker2d-medium-v2")]
    assert missing["verdict"] == "no published number" and pd.isna(missing["published"]) and pd.isna(missing["difference"])

    tex = (out / f"published_{protocol}.tex").read_text()
    assert "mujoco/" not in tex and "quickstart" not in tex
    assert "reproduced if the published mean lies inside our 95\\%" in tex  # the rule, stated
    row = next(line for line in tex.splitlines() if line.startswith("dtql & walker2d-medium-v2"))
    assert " & -- & -- & -- & no published number" in row
    row = next(line for line in tex.splitlines() if line.startswith("dql & hopper-medium-v2"))
    diff = np.mean(known_scores(protocol, "dql", "hopper-medium-v2")) - 90.5
    assert f"& {diff:+.1f} & {expected[('dql', 'hopper-medium-v2')][0]}" in row and "ofql-iclr2026-table (paper)" in row
    assert "given only where the published number reports the same score rule" in tex
    assert "evaluated on Gymnasium's Hopper-v4, Walker2d-v4 (the papers: gym's -v2 on mujoco-py" in tex
    assert "normalised with D4RL's reference returns (d4rl/infos.py)" in tex
    assert "no published number" in (out / f"published_{protocol}.md").read_text()


def test_minari_is_never_compared_even_with_a_published_row(tree):
    scores = cell_scores(load_results(tree), "final")
    table = published.load()
    fake = table.iloc[[0]].assign(agent_id="ofql", task="mujoco/hopper/medium-v0", source="ofql-iclr2026-table", score=52.0)
    comparison = tables.comparison_table(scores, pd.concat([table, fake]), "", "final")
    assert {r["task"] for r in comparison.rows} == {"hopper-medium-v2", "walker2d-medium-v2"}
    assert "never compared" in comparison.caption


# ------------------------------------------------------------------------------------ rliable


def test_rliable_aggregates_on_known_values():
    a = np.array([[0.0, 10.0, 80.0], [20.0, 30.0, 90.0], [40.0, 50.0, 100.0], [60.0, 70.0, 1000.0]]) / 100  # 4 runs x 3 tasks
    b = a - 0.05  # worse on every run of every task
    points, intervals = statistics.aggregate_intervals({"a": a, "b": b}, reps=REPS)
    iqm, mean, median, gap = points["a"]
    assert iqm == pytest.approx((30 + 40 + 50 + 60 + 70 + 80) / 6 / 100)  # the middle half of the 12 scores
    assert mean == pytest.approx((30 + 40 + 317.5) / 3 / 100)  # mean of the task means
    assert median == pytest.approx(0.40)  # median of the task means
    assert gap == pytest.approx(1 - 650 / 12 / 100)  # scores capped at 1 (100 points)
    assert points["b"][:3] == pytest.approx(points["a"][:3] - 0.05)
    low, high = intervals["a"]
    assert np.all(low <= points["a"] + 1e-12) and np.all(points["a"] <= high + 1e-12)

    better = np.array([[0.9, 0.8], [0.95, 0.85], [0.92, 0.9]])
    worse = np.array([[0.5, 0.3], [0.6, 0.4], [0.55, 0.35]])
    probs, cis = statistics.improvement_probabilities({"ofql": better, "bc": worse}, "ofql", reps=REPS)
    (pair,) = probs
    assert pair.split(statistics.PAIR_SEPARATOR) == ["ofql", "bc"]
    assert probs[pair] == pytest.approx(1.0) and np.min(cis[pair]) > 0.99
    probs, _ = statistics.improvement_probabilities({"bc": worse, "ofql": better}, "bc", reps=REPS)
    assert list(probs.values()) == pytest.approx([0.0])

    matrices = statistics.score_matrices({"x": {"t1": np.array([10.0, 20, 30]), "t2": np.array([40.0, 50])},
                                          "y": {"t1": np.array([1.0, 2, 3, 4]), "t2": np.array([5.0, 6, 7, 8])}}, ["t1", "t2"])
    assert matrices["x"].shape == (2, 2) and matrices["y"].shape == (4, 2)  # per label: its smallest seed count
    np.testing.assert_allclose(matrices["x"], [[0.1, 0.4], [0.2, 0.5]])


def trimmed_mean(values: list[float]) -> float:
    """IQM by hand: sort, drop the lowest and highest quarter (rounded down), average the rest."""
    values, cut = sorted(values), len(values) // 4
    return float(np.mean(values[cut:len(values) - cut]))


@pytest.mark.parametrize("protocol", ["final", "best"])
def test_report_rliable_aggregates_per_suite(built, protocol):
    figures = built[0] / "figures"
    d4rl = pd.read_csv(figures / f"aggregates_d4rl-locomotion_{protocol}.csv").set_index(["label", "metric"])
    # bc has no finished walker2d run, so the D4RL aggregates use hopper alone, for every label
    assert set(d4rl["tasks"]) == {"hopper-medium-v2"}
    for agent in ("ofql", "dql", "bc", "dtql"):
        values = [v / 100 for v in known_scores(protocol, agent, "hopper-medium-v2")]
        assert d4rl.loc[(agent, "IQM"), "estimate"] == pytest.approx(trimmed_mean(values))
        assert d4rl.loc[(agent, "Mean"), "estimate"] == pytest.approx(np.mean(values))
        assert d4rl.loc[(agent, "IQM"), "runs"] == len(values)
        assert d4rl.loc[(agent, "IQM"), "ci_low"] <= d4rl.loc[(agent, "IQM"), "estimate"] <= d4rl.loc[(agent, "IQM"), "ci_high"]
    minari = pd.read_csv(figures / f"aggregates_minari-mujoco_{protocol}.csv")
    assert set(minari["label"]) == {"ofql", "bc"}  # suites are never pooled
    for suite, others in (("d4rl-locomotion", {"dql", "dtql", "bc"}), ("minari-mujoco", {"bc"})):
        probs = pd.read_csv(figures / f"probability_of_improvement_{suite}_{protocol}.csv")
        assert set(probs["other"]) == others and (probs["reference"] == "ofql").all()
        assert (probs["probability"] > 0.99).all() and (probs["ci_low"] > 0.99).all()  # better on every seed
    for stem in (f"interval_estimates_d4rl-locomotion_{protocol}", f"performance_profiles_quickstart-all_{protocol}",
                 f"probability_of_improvement_minari-mujoco_{protocol}", "learning_curves"):
        assert (figures / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
        assert (figures / f"{stem}.png").read_bytes().startswith(b"\x89PNG")


def test_an_ablation_on_one_task_does_not_cut_the_suite_aggregates_down():
    rows = [("ofql", "", t) for t in ("hopper-medium-v2", "walker2d-medium-v2")]
    rows += [("bc", "", t) for t in ("hopper-medium-v2", "walker2d-medium-v2")]
    rows += [("ofql (eta=2.0)", "eta=2.0", "walker2d-medium-v2")]
    frame = pd.DataFrame([{"label": lab, "variant": var, "task": t} for lab, var, t in rows])
    assert report.aggregated(frame) == (["hopper-medium-v2", "walker2d-medium-v2"], ["ofql", "bc"])
    # an agent with its default config that lacks a task still cuts them down: compare on the same tasks
    assert report.aggregated(frame[~((frame["label"] == "bc") & (frame["task"] == "hopper-medium-v2"))]) == (
        ["walker2d-medium-v2"], ["ofql", "ofql (eta=2.0)", "bc"])
    only_variants = frame[frame["variant"] != ""]  # e.g. quick runs with --steps: every label counts
    assert report.aggregated(only_variants) == (["walker2d-medium-v2"], ["ofql (eta=2.0)"])


def test_learning_curves_use_each_seed_once(tree, tmp_path, monkeypatch):
    """A seed rerun alone (a per-seed job after a grouped one) is drawn from the run the tables use, not twice."""
    results = load_results(tree)
    older = results[(results["label"] == "ofql") & (results["task"] == "hopper-medium-v2")]
    newer = older[older["seed"] == 0].assign(run_id="ofql-seed-0-again", finished=older["finished"].max() + 1,
                                              score=older.loc[older["seed"] == 0, "score"] + 1.0)
    results = pd.concat([results, newer], ignore_index=True)
    drawn = []
    monkeypatch.setattr(report.figures, "learning_curves", lambda frame, labels, tasks, path: drawn.append(frame) or [])
    report.rliable_figures(cell_scores(results, "final"), results, tmp_path, "final", REPS, "ofql")
    (frame,) = drawn
    cell = frame[(frame["label"] == "ofql") & (frame["task"] == "hopper-medium-v2")]
    assert not cell.duplicated(["seed", "step"]).any() and len(cell) == 2 * 5
    assert set(cell.loc[cell["seed"] == 0, "run_id"]) == {"ofql-seed-0-again"}
    assert not frame["run_id"].isin(results.loc[~results["complete"], "run_id"]).any()  # unfinished runs neither


# ------------------------------------------------------------------------------------ bench report --cell


def test_cell_shows_seeds_runs_provenance_and_the_command(tree, capsys):
    real = real_run_dir(tree)
    final = json.loads((real / "final.json").read_text())
    assert main(["report", "--results", str(tree), "--cell", "bc/quickstart/reacher/mixed-v0"]) == 0
    out = capsys.readouterr().out
    assert real.name in out and "bc__quickstart--reacher--mixed-v0__seeds-0-1-2__synthetic" in out
    for protocol in ("final", "best"):
        line = next(line for line in out.splitlines() if line.strip().startswith(protocol) and "seed 0" in line
                    and f"{final['scores'][protocol]['0']:.2f}" in line)
        assert f"seed 1: {final['scores'][protocol]['1']:.2f}" in line
    assert final["provenance"]["git"]["commit"] in out and final["dataset"]["sha256"] in out
    (command,) = [line.split("reproduce: ", 1)[1] for line in out.splitlines()
                  if "reproduce: " in line and "--steps 20" in line]
    assert command == final["reproduce"]
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert cell_from_args(args).spec().run_id == real.name  # the command reproduces this very run

    assert main(["report", "--results", str(tree), "--cell", "ofql/hopper-medium-v2"]) == 0
    out = capsys.readouterr().out
    assert "published: 103.6 ± 0.1 (ofql-iclr2026-table, paper)" in out
    assert "final   seed 0: 103.00  seed 1: 104.00  seed 2: 103.50  seed 3: 104.50  seed 4: 103.00" in out
    assert "best    seed 0: 105.00" in out and COMMIT in out
    assert "reproduce: bench run --agent ofql --task hopper-medium-v2 --seeds 0,1,2,3,4" in out

    assert main(["report", "--results", str(tree), "--cell", "bc/walker2d-medium-v2"]) == 0
    out = capsys.readouterr().out
    assert "incomplete (500000/1000000 steps)" in out and "step 500000 seed 0: 57.00  seed 1: 55.00  seed 2: 56.00" in out

    assert main(["report", "--results", str(tree), "--cell", "dql/walker2d-medium-v2"]) == 0
    assert "diverged" in capsys.readouterr().out


def assert_one_line_error(capsys, *fragments: str) -> None:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("cell, fragments", [
    ("nosuch/hopper-medium-v2", ("'nosuch'", "cells with runs: bc/hopper-medium-v2")),
    ("ofql/halfcheetah-medium-v2", ("'halfcheetah-medium-v2'", "cells with runs")),
    ("hopper-medium-v2", ("is not AGENT/TASK",)),
])
def test_bad_cell_is_one_clear_line(tree, capsys, cell, fragments):
    assert main(["report", "--results", str(tree), "--cell", cell]) == 2
    assert_one_line_error(capsys, *fragments)


def test_only_unfinished_runs_give_completeness_and_one_clear_line(tree, tmp_path, capsys):
    unfinished = tree / "runs" / "bc__walker2d-medium-v2__seeds-0-1-2__synthetic"
    shutil.copytree(unfinished, tmp_path / "runs" / unfinished.name)
    assert main(["report", "--results", str(tmp_path), "--reps", str(REPS)]) == 2
    assert_one_line_error(capsys, "no finished run to report yet", "completeness.md")
    completeness = (tmp_path / "report" / "completeness.md").read_text()
    assert "| bc | bc | walker2d-medium-v2 | – | 0,1,2 | – | – |" in completeness


def test_empty_or_corrupt_results_are_one_clear_line(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path)]) == 2
    assert_one_line_error(capsys, "no run with evaluations", "bench run")
    assert main(["report", "--results", str(tmp_path), "--cell", "ofql/hopper-medium-v2"]) == 2
    assert_one_line_error(capsys, "no run of 'ofql'")
    run = tmp_path / "runs" / "ofql__hopper-medium-v2__seeds-0__cut"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"run_id": "ofql__hop')
    assert main(["report", "--results", str(tmp_path)]) == 3
    assert_one_line_error(capsys, "config.json", "unreadable")


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def cut_last_evaluation(run: Path) -> None:
    lines = lines_of(run / "metrics.jsonl")
    (run / "metrics.jsonl").write_text("\n".join([*lines[:-1], lines[-1][:40]]) + "\n")


def drop_last_evaluation(run: Path) -> None:
    (run / "metrics.jsonl").write_text("\n".join(lines_of(run / "metrics.jsonl")[:-1]) + "\n")


def damage_middle_line(run: Path) -> None:
    lines = lines_of(run / "metrics.jsonl")
    (run / "metrics.jsonl").write_text("\n".join([lines[0][:40], *lines[1:]]) + "\n")


def one_score_for_two_seeds(run: Path) -> None:
    lines = [json.loads(line) for line in lines_of(run / "metrics.jsonl")]
    lines[-1]["score"] = lines[-1]["score"][:1]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def final_not_an_object(run: Path) -> None:
    (run / "final.json").write_text("[]")


def config_of_another_format(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    del config["protocol"]
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("damage, fragment", [
    (cut_last_evaluation, "line 4 is not JSON"),  # a finished run's file is complete: no line may be cut
    (drop_last_evaluation, "1 evaluations, the last at step 10, but final.json counts 2 ending at step 20"),
    (damage_middle_line, "line 1 is not JSON"),
    (one_score_for_two_seeds, "the evaluation at step 20 does not hold one score per seed (2)"),
    (final_not_an_object, "final.json: not a JSON object"),
    (config_of_another_format, "not a run of this version (KeyError: 'protocol')"),
])
def test_a_damaged_finished_run_is_one_clear_line_not_a_wrong_final_score(tree, tmp_path, capsys, damage, fragment):
    """Left unchecked, each of these made the report take an earlier evaluation as the final one, count a run
    as finished, or end in a traceback."""
    real = real_run_dir(tree)
    assert [json.loads(line)["kind"] for line in lines_of(real / "metrics.jsonl")] == ["train", "eval", "train", "eval"]
    run = tmp_path / "runs" / real.name
    shutil.copytree(real, run)
    damage(run)
    assert main(["report", "--results", str(tmp_path), "--reps", str(REPS)]) == 3
    assert_one_line_error(capsys, real.name, fragment)
    assert not (tmp_path / "report").exists()


def test_an_unfinished_run_cut_by_a_crash_keeps_its_earlier_evaluations(tree, tmp_path):
    run = tmp_path / "runs" / real_run_dir(tree).name
    shutil.copytree(real_run_dir(tree), run)
    (run / "final.json").unlink()
    cut_last_evaluation(run)
    results = load_results(tmp_path)
    assert results["step"].tolist() == [10, 10] and not results["complete"].any()


def test_a_failing_report_leaves_the_previous_one_as_it_was(tree, tmp_path, capsys):
    """The report is written beside its folder and moved in once complete: a damaged perf CSV found after
    the tables are written must leave the previous report whole, not half replaced."""
    shutil.copytree(tree / "runs", tmp_path / "runs")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", "--results", str(tmp_path), "--reps", str(REPS)]) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "report").rglob("*") if p.is_file()}
    shutil.rmtree(tmp_path / "runs" / "ofql__hopper-medium-v2__seeds-0-1-2-3-4__synthetic")  # the tables would change
    (tmp_path / "perf").mkdir()
    (tmp_path / "perf" / "perf-hopper-medium-v2-cpu-1.csv").write_text('agent,"task\n')
    assert main(["report", "--results", str(tmp_path), "--reps", str(REPS)]) == 3
    assert_one_line_error(capsys, "perf-hopper-medium-v2-cpu-1.csv: unreadable", "bench perf")
    assert {p: p.read_bytes() for p in (tmp_path / "report").rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["perf", "report", "runs"]  # no staging folder left


def test_a_damaged_sweep_manifest_is_one_clear_line(tree, tmp_path, capsys):
    shutil.copytree(tree / "runs", tmp_path / "runs")
    manifest = tmp_path / "sweeps" / "20260101-000000-000000" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"jobs": [{"agent": "ofql"')
    assert main(["report", "--results", str(tmp_path), "--reps", str(REPS)]) == 3
    assert_one_line_error(capsys, "manifest.json: unreadable sweep manifest")


def test_a_new_report_removes_what_the_previous_one_wrote_and_it_does_not(tree, tmp_path):
    """Files of an older report would sit beside the new tables as if current (a suite's figures, a PDF of
    the older tables); files the report never wrote stay."""
    shutil.copytree(tree / "runs", tmp_path / "runs")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", "--results", str(tmp_path), "--reps", str(REPS)]) == 0
    out = tmp_path / "report"
    minari = out / "figures" / "aggregates_minari-mujoco_final.csv"
    assert minari.exists()
    (out / "notes.txt").write_text("mine")
    for run in (tmp_path / "runs").glob("*__mujoco--hopper--medium-v0__*"):
        shutil.rmtree(run)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", "--results", str(tmp_path), "--reps", str(REPS)]) == 0
    assert not minari.exists() and (out / "notes.txt").read_text() == "mine"
    listed = (out / report.FILE_LIST).read_text().splitlines()
    assert listed and all((out / name).is_file() for name in listed) and "notes.txt" not in listed
    assert (out / "figures" / "aggregates_d4rl-locomotion_final.csv").exists()
