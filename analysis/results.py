"""Every run under a results root as one pandas DataFrame, one row per evaluation.

Runs are read from ``results/runs/<run id>/`` (``config.json``, ``metrics.jsonl``, ``final.json``).
Nothing is dropped: a run without ``final.json`` is kept with ``complete = False``; a seed whose
scores or training metrics are not finite is kept with ``diverged = True`` (per seed: the seeds of a
run train independently). Tables and statistics decide what to use, and say so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.errors import DataError
from benchmarks.tasks import SUITES, TASKS, on_best_grid

COLUMNS = [
    "run_id", "agent", "variant", "label", "task", "suite", "dataset", "comparable", "seed", "step", "return",
    "score", "steps", "complete", "diverged", "eval_episodes", "eval_interval", "best_interval", "commit", "dirty", "device",
    "device_name", "train_seconds", "updates_per_second", "finished", "reproduce",
]


def suite_of(task: str) -> str:
    """The widest suite listing the task, so that one domain's tasks share a table section and an
    rliable aggregate ("ad hoc" for a dataset run outside every suite)."""
    listing = [name for name, tasks in SUITES.items() if task in tasks]
    return max(listing, key=lambda name: len(SUITES[name])) if listing else "ad hoc"


def _label(agent: str, variant: str) -> str:
    return agent if not variant else f"{agent} ({variant})"


def _records(path: Path, finished: bool) -> list[dict[str, Any]]:
    """The lines of ``metrics.jsonl``. Only the last line of an unfinished run may be cut (by a crash:
    the rest of the run still counts); a bad line anywhere else means the file was damaged."""
    lines = path.read_text().splitlines() if path.exists() else []
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not finished:
                break
            raise DataError(f"{path}: line {number} is not JSON", "delete the run folder or rerun the cell with --force") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number} is not a JSON object", "delete the run folder or rerun the cell with --force")
        records.append(record)
    return records


def _finite(value: Any) -> bool:
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return isinstance(value, (int, float)) and math.isfinite(value)


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable ({type(err).__name__})", "delete the run folder or rerun the cell") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: not a JSON object", "delete the run folder or rerun the cell")
    return value


def diverged_seeds(records: list[dict[str, Any]], n_seeds: int) -> list[bool]:
    """Per seed: a non-finite training metric or evaluation score. Seeds train independently (no
    shared gradient), so one seed's divergence leaves the others' results valid; a metric that is not
    per seed (not a list of ``n_seeds`` values) counts for every seed."""
    diverged = [False] * n_seeds
    for record in records:
        if record.get("kind") == "eval":
            values = {"score": record["score"]}
        elif record.get("kind") == "train":
            values = {k: v for k, v in record.items() if k not in ("kind", "step")}
        else:
            continue
        for value in values.values():
            if isinstance(value, list) and len(value) == n_seeds:
                diverged = [d or not _finite(v) for d, v in zip(diverged, value)]
            elif not _finite(value):
                diverged = [True] * n_seeds
    return diverged


def load_run(run_dir: Path) -> pd.DataFrame:
    try:
        return _load_run(run_dir)
    except (KeyError, TypeError, ValueError) as err:  # a file of another format, or edited by hand
        raise DataError(f"{run_dir}: not a run of this version ({type(err).__name__}: {err})",
                        "delete the run folder or rerun the cell with --force") from None


def _check_evaluations(run_dir: Path, config: dict[str, Any], final: dict[str, Any] | None,
                       evaluations: list[dict[str, Any]]) -> None:
    """Every evaluation holds one score and return per seed; a finished run's file holds every evaluation
    ``final.json`` counted, the last at the run's last step (else "final" would silently be an earlier one)."""
    n_seeds = len(config["seeds"])
    for evaluation in evaluations:
        if len(evaluation["score"]) != n_seeds or len(evaluation["return"]) != n_seeds:
            raise DataError(f"{run_dir / 'metrics.jsonl'}: the evaluation at step {evaluation['step']} does not hold "
                            f"one score per seed ({n_seeds})", "delete the run folder or rerun the cell with --force")
    if final is not None and (len(evaluations) != final["evaluations"]
                              or not evaluations or evaluations[-1]["step"] != config["config"]["steps"]):
        raise DataError(f"{run_dir / 'metrics.jsonl'}: {len(evaluations)} evaluations, the last at step "
                        f"{evaluations[-1]['step'] if evaluations else '-'}, but final.json counts {final['evaluations']} "
                        f"ending at step {config['config']['steps']}", "rerun the cell with --force")


def _load_run(run_dir: Path) -> pd.DataFrame:
    config = _json(run_dir / "config.json")
    final_path = run_dir / "final.json"
    final = _json(final_path) if final_path.exists() else None
    records = _records(run_dir / "metrics.jsonl", finished=final is not None)
    evaluations = [r for r in records if r.get("kind") == "eval"]
    _check_evaluations(run_dir, config, final, evaluations)
    diverged = dict(zip(config["seeds"], diverged_seeds(records, len(config["seeds"]))))
    provenance = (final or {}).get("provenance", {})
    task = TASKS.get(config["task"])
    variant = config.get("variant", "")
    rows = []
    for evaluation in evaluations:
        for seed, ret, score in zip(config["seeds"], evaluation["return"], evaluation["score"]):
            rows.append({
                "run_id": config["run_id"], "agent": config["agent"], "variant": variant,
                "label": _label(config["agent"], variant), "task": config["task"], "suite": suite_of(config["task"]),
                "dataset": config["dataset"], "comparable": bool(task and task.comparable_to_published),
                "seed": seed, "step": evaluation["step"], "return": ret, "score": score,
                "steps": config["config"]["steps"], "complete": final is not None, "diverged": diverged[seed],
                "eval_episodes": config["protocol"]["eval_episodes"], "eval_interval": config["protocol"]["eval_interval"],
                "best_interval": config["protocol"].get("best_interval"),
                "commit": (provenance.get("git") or {}).get("commit"), "dirty": (provenance.get("git") or {}).get("dirty"),
                "device": provenance.get("device"), "device_name": provenance.get("device_name"),
                "train_seconds": (final or {}).get("compute", {}).get("train_seconds"),
                "updates_per_second": (final or {}).get("compute", {}).get("updates_per_second"),
                "finished": final_path.stat().st_mtime if final else np.nan,
                "reproduce": config.get("reproduce", ""),
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def load_results(root: str | Path) -> pd.DataFrame:
    """One row per (run, seed, evaluation) of every run under ``root/runs``."""
    runs = sorted(p for p in (Path(root) / "runs").glob("*") if (p / "config.json").exists())
    return pd.DataFrame([row for p in runs for row in load_run(p).to_dict("records")], columns=COLUMNS)


def cell_scores(results: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """One score per (label, task, seed) under ``protocol``: ``final`` (the last evaluation of a
    finished run) or ``best`` (the best evaluation during training, DQL's online model selection, among
    the evaluations on its protocol's ``best_interval`` grid and the last).

    Incomplete and diverged runs are left out (``completeness`` lists them); where several finished
    runs cover the same seed (a grouped and a per-seed run, say), the most recently finished counts.
    """
    if protocol not in ("final", "best"):
        raise ValueError(f"protocol must be 'final' or 'best', got {protocol!r}")
    usable = results[results["complete"] & ~results["diverged"]]
    if usable.empty:
        return pd.DataFrame(columns=["label", "agent", "variant", "task", "suite", "comparable", "seed", "score",
                                     "steps", "eval_episodes", "run_id"])
    ordered = usable.sort_values("finished", kind="stable")
    latest = ordered.groupby(["label", "task", "seed"])["run_id"].transform("last")
    usable = ordered[ordered["run_id"] == latest]
    keys = ["label", "agent", "variant", "task", "suite", "comparable", "seed", "steps", "eval_episodes", "run_id"]
    if protocol == "final":
        last = usable.loc[usable.groupby(["run_id", "seed"])["step"].idxmax()]
        return last[[*keys, "score"]].reset_index(drop=True)
    on_grid = usable.groupby(["run_id", "seed"])["step"].transform(
        lambda steps: on_best_grid(steps.to_numpy(), _interval(usable.loc[steps.index[0], "best_interval"])))
    return usable[on_grid.astype(bool)].groupby(keys, as_index=False)["score"].max()


def _interval(value: Any) -> int | None:
    """A run's ``best_interval`` as stored (None, or NaN in a column where other runs have one)."""
    return None if value is None or pd.isna(value) else int(value)


def completeness(results: pd.DataFrame, expected: list[dict[str, Any]]) -> pd.DataFrame:
    """Per (label, task): finished, incomplete and diverged seeds, and expected seeds not run at all.

    ``expected`` lists planned cells (``run_id``, ``agent``, ``variant``, ``task``, ``seeds``), e.g. from sweep
    manifests; each counts under its label (a sweep with ``--set``, ``--steps`` or ``--grid`` plans variants).
    """
    rows = {}
    for (label, agent, task), group in results.groupby(["label", "agent", "task"]):
        # per seed, as cell_scores sees it: finished if some run of it finished without diverging
        # (that one is used), else diverged if some run diverged, else incomplete
        seeds = group.assign(usable=group["complete"] & ~group["diverged"]).groupby("seed").agg(
            usable=("usable", "any"), diverged=("diverged", "any"))
        rows[(label, task)] = {
            "label": label, "agent": agent, "task": task,
            "finished": sorted(int(s) for s in seeds.index[seeds["usable"]]),
            "incomplete": sorted(int(s) for s in seeds.index[~seeds["usable"] & ~seeds["diverged"]]),
            "diverged": sorted(int(s) for s in seeds.index[~seeds["usable"] & seeds["diverged"]]),
            "missing": [],
        }
    labels = dict(zip(results["run_id"], results["label"]))
    for cell in expected:
        label = labels.get(cell["run_id"], _label(cell["agent"], cell["variant"]))
        row = rows.setdefault((label, cell["task"]), {
            "label": label, "agent": cell["agent"], "task": cell["task"],
            "finished": [], "incomplete": [], "diverged": [], "missing": [],
        })
        seen = set(row["finished"]) | set(row["incomplete"]) | set(row["diverged"])
        row["missing"] = sorted(set(row["missing"]) | (set(cell["seeds"]) - seen))
    return pd.DataFrame(list(rows.values()), columns=["label", "agent", "task", "finished", "incomplete", "diverged", "missing"])
