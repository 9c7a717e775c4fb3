"""``bench report``: whatever results exist -> completeness check, tables, macros, rliable figures.

Writes into the output folder (default ``results/report/``):

- ``completeness.md``/``.csv``: per agent x task, seeds finished, incomplete, diverged, missing;
- ``scores_<protocol>.{tex,md,csv}``: the score table for each protocol (``final``, ``best``); cells
  with seeds left out (diverged, unfinished, not run) are marked;
- ``published_<protocol>.{tex,md,csv}``: our D4RL cells beside the published numbers, with verdicts;
- ``macros.tex``: one ``\\newcommand`` per table cell (score tables and comparisons);
- ``figures/``: per suite and protocol, rliable interval estimates, performance profiles and the
  probability of improvement of the reference agent (OFQL) over each other agent (numbers as CSV
  beside them); learning curves (PDF and PNG);
- ``report.tex``: a document that inputs all of the above (``pdflatex report.tex`` compiles it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import compute, figures, published, statistics, tables
from analysis.results import cell_scores, completeness, load_results
from benchmarks.errors import BenchError, ConfigError, DataError
from benchmarks.tasks import D4RL_LOCOMOTION_PROTOCOL, SUITES

PROTOCOLS = {"final": "final evaluation (last evaluation of each run)",
             "best": "best evaluation during training (DQL's online model selection; on D4RL locomotion among the "
                     f"evaluations every {D4RL_LOCOMOTION_PROTOCOL.best_interval:,} steps, as DQL's code evaluates)"}


def expected_cells(results_root: Path) -> list[dict[str, Any]]:
    """Cells planned by every sweep under the results root (``results/sweeps/*/manifest.json``)."""
    cells = []
    for path in sorted((results_root / "sweeps").glob("*/manifest.json")):
        try:
            cells += [{"run_id": j["run_id"], "agent": j["agent"], "variant": j.get("variant", ""), "task": j["task"],
                       "seeds": j["seeds"]} for j in json.loads(path.read_text())["jobs"]]  # no variant: older sweeps
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}: unreadable sweep manifest ({type(err).__name__})",
                            "delete that sweep's folder if it is not needed") from None
    return cells


def describe(scores: pd.DataFrame, protocol: str) -> str:
    """The caption's statement of the protocol, seeds, steps and evaluation episodes."""
    seeds = sorted(scores.groupby(["label", "task"])["seed"].count().unique())
    steps = scores.groupby("label")["steps"].unique()  # per-task overrides can differ within a label
    steps_text = ", ".join(f"{label} {'/'.join(f'{int(s):,}' for s in sorted(v))}" for label, v in steps.items())
    episodes = sorted(scores["eval_episodes"].unique())
    return (f"Normalised score, {PROTOCOLS[protocol]}: mean ± std over {'/'.join(map(str, seeds))} seeds; "
            f"gradient steps: {steps_text}; {'/'.join(map(str, episodes))} evaluation episodes per seed. "
            "Bold: best mean whose 95% Student-t interval overlaps no other; underlined: statistically tied with the best.")


@dataclasses.dataclass
class ReportFiles:
    out: Path
    written: list[Path]
    completeness: pd.DataFrame


def write(path: Path, text: str, written: list[Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    written.append(path)


def build_report(results_root: Path, out: Path, *, reps: int = 2000, reference: str = "ofql",
                 pdf: bool = False) -> ReportFiles:
    """Writes the report into a temporary folder beside ``out`` and moves its files into ``out`` only once
    all are written, so that a failure (a damaged perf CSV, say) leaves the previous report as it was."""
    results = load_results(results_root)
    if results.empty:
        raise ConfigError(f"no run with evaluations under {results_root / 'runs'}", "train some with `bench run` or `bench submit`")
    missing = completeness(results, expected_cells(results_root))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as staging:
        written = publish(Path(staging), out, write_report(results, results_root, missing, Path(staging), reps, reference))
    if out / "report.tex" not in written:
        raise ConfigError("no finished run to report yet", f"see {out / 'completeness.md'} for what is running or missing")
    if pdf:
        written.append(compile_pdf(out / "report.tex"))
        list_files(out, written)
    return ReportFiles(out, written, missing)


FILE_LIST = ".report-files"  # in the report's folder: what the last report wrote there, one relative path a line


def publish(staging: Path, out: Path, files: list[Path]) -> list[Path]:
    """Moves ``files`` from ``staging`` to the same places under ``out`` and removes what the previous report
    wrote there and this one does not (a table of an agent since dropped, a PDF of older tables); files it
    never wrote are left alone. Returns the new paths."""
    moved = []
    for path in files:
        target = out / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        moved.append(target)
    listed = out / FILE_LIST
    for name in set(listed.read_text().splitlines() if listed.exists() else []) - {str(p.relative_to(out)) for p in moved}:
        if (out / name).resolve().is_relative_to(out.resolve()):
            (out / name).unlink(missing_ok=True)
    list_files(out, moved)
    return moved


def list_files(out: Path, files: list[Path]) -> None:
    (out / FILE_LIST).write_text("".join(f"{p.relative_to(out)}\n" for p in files))


def write_report(results: pd.DataFrame, results_root: Path, missing: pd.DataFrame, out: Path, reps: int,
                 reference: str) -> list[Path]:
    """Every file of the report, written into ``out``; only the completeness files where nothing finished."""
    written: list[Path] = []
    frame = missing.assign(**{k: missing[k].map(lambda s: ",".join(map(str, s))) for k in
                              ("finished", "incomplete", "diverged", "missing")})
    frame.to_csv(out / "completeness.csv", index=False)
    written.append(out / "completeness.csv")
    write(out / "completeness.md", tables.markdown_table(frame), written)

    published_table = published.load()
    gaps = missing[missing[["incomplete", "diverged", "missing"]].map(len).sum(axis=1) > 0]
    partial = frozenset(zip(gaps["task"], gaps["label"]))
    score_tables, comparisons, inputs = [], {}, []
    for protocol in PROTOCOLS:
        scores = cell_scores(results, protocol)
        if scores.empty:
            continue
        table = tables.score_table(scores, protocol, describe(scores, protocol), partial)
        score_tables.append(table)
        write(out / f"scores_{protocol}.tex", tables.score_latex(table, f"tab:scores-{protocol}"), written)
        write(out / f"scores_{protocol}.md", tables.score_markdown(table), written)
        tables.score_frame(table).to_csv(out / f"scores_{protocol}.csv", index=False)
        written.append(out / f"scores_{protocol}.csv")
        inputs.append(f"scores_{protocol}.tex")
        comparison = tables.comparison_table(scores, published_table, describe(scores, protocol).split(" Bold")[0], protocol)
        if comparison.rows:
            comparisons[protocol] = comparison
            write(out / f"published_{protocol}.tex", tables.comparison_latex(comparison, f"tab:published-{protocol}"), written)
            write(out / f"published_{protocol}.md", tables.comparison_markdown(comparison), written)
            tables.comparison_frame(comparison).to_csv(out / f"published_{protocol}.csv", index=False)
            written.append(out / f"published_{protocol}.csv")
            inputs.append(f"published_{protocol}.tex")
        written += rliable_figures(scores, results, out / "figures", protocol, reps, reference)
    if not score_tables:
        return written
    write(out / "macros.tex", tables.macros(score_tables, comparisons), written)
    compute_files = compute.write_compute_report(results_root, out)  # bench perf's latest CSVs, if any
    written += compute_files
    inputs += [p.name for p in compute_files if p.suffix == ".tex"]
    figure_files = sorted(p.relative_to(out) for p in written if p.suffix == ".pdf")
    write(out / "report.tex", document(inputs, figure_files), written)
    return written


def aggregated(in_suite: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The tasks and labels of one suite's rliable aggregates: the tasks that every agent run with its
    default config has finished (every label, where none is), and the labels finished on all of them. So an
    ablation run on one task is left out of the aggregates instead of cutting them down to that task."""
    labels = tables.ordered_labels(in_suite["label"])
    finished = {lab: set(in_suite.loc[in_suite["label"] == lab, "task"]) for lab in labels}
    defaults = [lab for lab in labels if (in_suite.loc[in_suite["label"] == lab, "variant"] == "").all()] or labels
    tasks = [t for t in tables.ordered_tasks(in_suite["task"]) if all(t in finished[lab] for lab in defaults)]
    return tasks, [lab for lab in labels if set(tasks) <= finished[lab]]


def rliable_figures(scores: pd.DataFrame, results: pd.DataFrame, out: Path, protocol: str, reps: int,
                    reference: str) -> list[Path]:
    """Per suite (scores of different suites are never pooled): aggregates over the tasks and labels of
    :func:`aggregated`, each label with as many seeds as it has on all of those tasks; each figure's title
    says which tasks of the suite it covers and which labels it leaves out."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for suite, in_suite in scores.groupby("suite"):
        tasks, labels = aggregated(in_suite)
        if not tasks:
            continue
        left_out = [lab for lab in tables.ordered_labels(in_suite["label"]) if lab not in labels]
        title = (f"{suite}, {protocol} score: {len(tasks)} of {len(SUITES.get(suite, tasks))} tasks"
                 + (f"; left out (not every task finished): {', '.join(left_out)}" if left_out else ""))
        name = f"{re.sub(r'[^A-Za-z0-9]+', '-', suite)}_{protocol}"
        by_label = {lab: {t: in_suite[(in_suite["label"] == lab) & (in_suite["task"] == t)].sort_values("seed")["score"].to_numpy()
                          for t in tasks} for lab in labels}
        matrices = statistics.score_matrices(by_label, tasks)
        points, intervals = statistics.aggregate_intervals(matrices, reps)
        pd.DataFrame([{"suite": suite, "label": lab, "metric": m, "estimate": points[lab][i], "ci_low": intervals[lab][0][i],
                       "ci_high": intervals[lab][1][i], "tasks": " ".join(tasks), "runs": matrices[lab].shape[0]}
                      for lab in labels for i, m in enumerate(statistics.AGGREGATES)]).to_csv(
            out / f"aggregates_{name}.csv", index=False)
        written.append(out / f"aggregates_{name}.csv")
        written += figures.interval_estimates(points, intervals, labels, title, out / f"interval_estimates_{name}")
        thresholds = np.linspace(0.0, 1.2, 61)
        distributions, cis = statistics.performance_profiles(matrices, thresholds, reps)
        written += figures.performance_profiles(distributions, cis, thresholds, labels, title,
                                                out / f"performance_profiles_{name}")
        if reference in matrices and len(matrices) > 1:
            probs, prob_cis = statistics.improvement_probabilities(matrices, reference, reps)
            pd.DataFrame([{"suite": suite, "reference": reference, "other": pair.split(statistics.PAIR_SEPARATOR, 1)[1],
                           "probability": float(probs[pair]), "ci_low": float(np.ravel(prob_cis[pair])[0]),
                           "ci_high": float(np.ravel(prob_cis[pair])[1]),
                           "tasks": " ".join(tasks)} for pair in probs]).to_csv(
                out / f"probability_of_improvement_{name}.csv", index=False)
            written.append(out / f"probability_of_improvement_{name}.csv")
            written += figures.improvement_probabilities(probs, prob_cis, title, out / f"probability_of_improvement_{name}")
    if protocol == "final":
        # the evaluations of the runs the tables use: a seed also run in a superseded run counts once
        used = results.merge(scores[["run_id", "seed"]], on=["run_id", "seed"])
        labels = tables.ordered_labels(used["label"])
        written += figures.learning_curves(used, labels, tables.ordered_tasks(used["task"]), out / "learning_curves")
    return written


def document(inputs: list[str], figure_files: list[Path]) -> str:
    body = "\n".join(f"\\input{{{name}}}" for name in inputs)
    graphics = "\n".join(
        f"\\begin{{figure}}[h]\\centering\\includegraphics[width=0.9\\linewidth]{{{path.with_suffix('')}}}"
        f"\\caption{{{tables.latex_escape(path.stem.replace('_', ' '))}}}\\end{{figure}}" for path in figure_files)
    return ("\\documentclass{article}\n\\usepackage[margin=2cm,landscape]{geometry}\n\\usepackage{booktabs}\n"
            "\\usepackage{graphicx}\n"
            "\\input{macros.tex}\n\\begin{document}\n" + body + "\n\\clearpage\n" + graphics + "\n\\end{document}\n")


def compile_pdf(tex: Path) -> Path:
    if shutil.which("pdflatex") is None:
        raise BenchError("pdflatex is not installed", "install TeX Live (Debian: texlive-latex-recommended) or drop --pdf")
    for _ in range(2):  # twice, for references
        out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tex.parent,
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            tail = " | ".join(line for line in out.stdout.splitlines()[-8:] if line.strip())
            raise BenchError(f"pdflatex failed on {tex}: {tail}")
    return tex.with_suffix(".pdf")


def cell_report(results_root: Path, agent: str, task: str) -> dict[str, Any]:
    """Everything about one cell: per-seed scores under both protocols, runs, provenance, command."""
    results = load_results(results_root)
    rows = results[(results["agent"] == agent) & (results["task"] == task)]
    if rows.empty:
        cells = sorted({f"{a}/{t}" for a, t in zip(results["agent"], results["task"])})
        hint = (f"cells with runs: {', '.join(cells[:8])}{', ...' if len(cells) > 8 else ''}" if cells
                else "train some with `bench run` or `bench submit`")
        raise ConfigError(f"no run of {agent!r} on {task!r} under {results_root / 'runs'}", hint)
    runs = []
    for run_id, group in rows.groupby("run_id"):
        run_dir = results_root / "runs" / run_id
        final = json.loads((run_dir / "final.json").read_text()) if (run_dir / "final.json").exists() else None
        config = json.loads((run_dir / "config.json").read_text())
        last = group[group["step"] == group["step"].max()].sort_values("seed")
        # an unfinished run shows its latest evaluation (no protocol applies yet)
        scores = final["scores"] if final else {f"step {int(last['step'].iloc[0])}": dict(zip(last["seed"].astype(str), last["score"]))}
        runs.append({
            "run_id": run_id, "variant": config.get("variant", ""), "complete": final is not None,
            "diverged": bool(group["diverged"].any()), "last_step": int(group["step"].max()), "steps": int(group["steps"].iloc[0]),
            "scores": scores, "reproduce": config.get("reproduce"),
            "dataset_sha256": config["dataset"]["sha256"],
            "provenance": {k: final["provenance"].get(k) for k in ("git", "device_name", "packages", "hostname", "time")} if final else None,
        })
    reference = published.reference(published.load(), agent, task)
    return {"agent": agent, "task": task, "runs": runs,
            "published": None if reference is None else {k: (None if pd.isna(v) else v) for k, v in reference.to_dict().items()}}
