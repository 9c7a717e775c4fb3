"""Results tables as data, rendered to LaTeX (booktabs, paper style), Markdown and CSV from the same numbers.

The score table has one row per task (grouped by suite, with an average row per suite) and one
column per agent: mean ± sample std over seeds. Bold marks the best mean of a row only when its 95%
interval overlaps no other agent's; otherwise the top agent and every agent whose interval overlaps
it are underlined (statistically tied). The comparison table puts each cell beside the published
number it reproduces, with the difference and a verdict (rule in ``statistics.VERDICT_RULE``).
Every table cell is also a LaTeX macro, so a paper's text can cite numbers that stay in sync.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pandas as pd

from analysis import published as published_scores
from analysis.statistics import VERDICT_RULE, Estimate, estimate, rank_row, verdict
from benchmarks.tasks import SUITES, TASKS

AGENT_ORDER = ("ofql", "dql", "dtql", "cpql", "cql", "iql", "bc")
SUITE_TITLES = {"d4rl-locomotion": "D4RL MuJoCo locomotion", "minari-mujoco": "Minari MuJoCo",
                "quickstart-all": "Quick-start", "ad hoc": "Other datasets"}


def ordered_labels(labels) -> list[str]:
    def key(label: str) -> tuple:
        agent = label.split(" ")[0]
        return (AGENT_ORDER.index(agent) if agent in AGENT_ORDER else len(AGENT_ORDER), label)

    return sorted(set(labels), key=key)


def ordered_tasks(tasks) -> list[str]:
    order = [t for suite in SUITES.values() for t in suite]
    return sorted(set(tasks), key=lambda t: (order.index(t) if t in order else len(order), t))


@dataclasses.dataclass
class ScoreTable:
    protocol: str
    labels: list[str]
    sections: list[tuple[str, list[str]]]  # (suite, tasks)
    cells: dict[tuple[str, str], Estimate]  # (task, label) -> estimate; a missing key is a missing cell
    averages: dict[tuple[str, str], float]  # (suite, label) -> mean over the suite's tasks (all present)
    marks: dict[tuple[str, str], str]  # (task, label) -> "best" | "tie"
    caption: str
    partial: frozenset[tuple[str, str]] = frozenset()  # (task, label) with seeds left out (diverged, unfinished, not run)

    def average_title(self, suite: str, tasks: list[str]) -> str:
        """``Average``, or ``Average (2 of 9 tasks)`` where the suite is not covered."""
        planned = len(SUITES.get(suite, ()))
        return "Average" if len(tasks) >= planned else f"Average ({len(tasks)} of {planned} tasks)"


def score_table(scores: pd.DataFrame, protocol: str, description: str,
                partial: frozenset[tuple[str, str]] = frozenset()) -> ScoreTable:
    """``scores``: :func:`analysis.results.cell_scores` output (one row per label, task, seed);
    ``partial``: cells (task, label) some of whose seeds are left out (marked in the table)."""
    labels = ordered_labels(scores["label"])
    cells = {(task, label): estimate(group["score"].to_numpy())
             for (task, label), group in scores.groupby(["task", "label"])}
    sections = [(suite, ordered_tasks(group["task"])) for suite, group in scores.groupby("suite")]
    sections.sort(key=lambda s: list(SUITE_TITLES).index(s[0]) if s[0] in SUITE_TITLES else len(SUITE_TITLES))
    averages = {}
    for suite, tasks in sections:
        for label in labels:
            if all((task, label) in cells for task in tasks):
                averages[(suite, label)] = float(np.mean([cells[(task, label)].mean for task in tasks]))
    marks = {}
    for _, tasks in sections:
        for task in tasks:
            row = {label: cells[(task, label)] for label in labels if (task, label) in cells}
            marks.update({(task, label): mark for label, mark in rank_row(row).items()})
    return ScoreTable(protocol, labels, sections, cells, averages, marks, description,
                      frozenset(k for k in partial if k in cells))


@dataclasses.dataclass
class Comparison:
    rows: list[dict]
    caption: str


def comparison_table(scores: pd.DataFrame, published: pd.DataFrame, description: str, protocol: str) -> Comparison:
    """Each of our cells (scored under ``protocol``) beside its published number, with a verdict where that
    number reports the same score rule; Minari/quick-start tasks are never compared."""
    rows = []
    comparable = scores[scores["comparable"] & (scores["variant"] == "")]
    for (agent, task), group in comparable.groupby(["agent", "task"]):
        ours = estimate(group["score"].to_numpy())
        ref = published_scores.reference(published, agent, task)
        row = {"agent": agent, "task": task, "ours": ours, "published": None, "spread": None, "source": None,
               "provenance": None, "difference": None, "verdict": "no published number"}
        if ref is not None:
            row.update(published=float(ref["score"]), spread=None if pd.isna(ref["spread"]) else float(ref["spread"]),
                       source=ref["source"], provenance=ref["provenance"], difference=ours.mean - float(ref["score"]),
                       verdict=verdict(ours, float(ref["score"])) if ref["protocol"] == protocol
                       else f"published as {ref['protocol']}")
        rows.append(row)
    agents, tasks = ordered_labels(r["agent"] for r in rows), ordered_tasks(r["task"] for r in rows)
    rows.sort(key=lambda r: (agents.index(r["agent"]), tasks.index(r["task"])))
    environments = ", ".join(sorted({TASKS[r["task"]].env_id for r in rows}))
    return Comparison(rows, f"{description} Ours: the original D4RL data, evaluated on Gymnasium's {environments} (the "
                            "papers: gym's -v2 on mujoco-py, the same MuJoCo models), normalised with D4RL's reference "
                            "returns (d4rl/infos.py). A published ± is the source's own spread (std, or not defined; see "
                            f"published_scores_notes.md). Verdict: {VERDICT_RULE}; given only where the published number "
                            "reports the same score rule (final or best evaluation), else it says which rule that number "
                            "used. Only tasks on the original D4RL data are compared; Minari and quick-start data differ "
                            "from the papers' and are never compared.")


# ------------------------------------------------------------------------------------ formatting


LATEX_PM = " $\\pm$ "
MACRO_PM = " \\ensuremath{\\pm} "


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def cell_text(e: Estimate, plus_minus: str) -> str:
    return fmt(e.mean) if e.n < 2 else f"{fmt(e.mean)}{plus_minus}{fmt(e.std)}"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}",
                  **{c: "\\" + c for c in "{}_%&#$"}}


def latex_escape(text: str) -> str:
    """``text`` as LaTeX prints it: TeX's ten special characters escaped."""
    return re.sub(r"[\\^~{}_%&#$]", lambda m: _LATEX_SPECIAL[m.group()], text)


FOOTNOTES = {"a": "no finished run for this cell", "b": "not every task of the suite has a finished run",
             "c": "some seeds left out (diverged, unfinished or not run; see completeness.md)"}


def _latex_cell(table: ScoreTable, task: str, label: str) -> str:
    if (task, label) not in table.cells:
        return "--\\textsuperscript{a}"
    text = cell_text(table.cells[(task, label)], LATEX_PM)
    mark = table.marks.get((task, label))
    text = f"\\textbf{{{text}}}" if mark == "best" else f"\\underline{{{text}}}" if mark == "tie" else text
    return text + "\\textsuperscript{c}" if (task, label) in table.partial else text


def _latex_footnotes(body: str) -> list[str]:
    """The footnotes whose marks appear in ``body``."""
    used = [k for k in FOOTNOTES if f"\\textsuperscript{{{k}}}" in body]
    notes = "; ".join(f"\\textsuperscript{{{k}}}\\,{FOOTNOTES[k]}" for k in used)
    return [f"\\par\\smallskip\\footnotesize{{}}{notes}."] if notes else []


def score_latex(table: ScoreTable, label: str) -> str:
    columns = "l" + "c" * len(table.labels)
    lines = [
        "\\begin{table}[t]", "\\centering", "\\small",
        f"\\caption{{{latex_escape(table.caption)}}}", f"\\label{{{label}}}",
        f"\\begin{{tabular}}{{{columns}}}", "\\toprule",
        "Task & " + " & ".join(latex_escape(lab) for lab in table.labels) + " \\\\", "\\midrule",
    ]
    for index, (suite, tasks) in enumerate(table.sections):
        if index:
            lines.append("\\midrule")
        lines.append(f"\\multicolumn{{{len(table.labels) + 1}}}{{l}}{{\\emph{{{latex_escape(SUITE_TITLES.get(suite, suite))}}}}} \\\\")
        for task in tasks:
            cells = [_latex_cell(table, task, lab) for lab in table.labels]
            lines.append(f"{latex_escape(task)} & " + " & ".join(cells) + " \\\\")
        averages = [fmt(table.averages.get((suite, lab))) for lab in table.labels]
        lines.append("\\midrule")
        lines.append(f"{table.average_title(suite, tasks)} & "
                     + " & ".join(a if a != "–" else "--\\textsuperscript{b}" for a in averages) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += _latex_footnotes("\n".join(lines))
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def markdown_table(frame: pd.DataFrame) -> str:
    """A plain Markdown table of a DataFrame (empty cells as a dash)."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) if v != "" else "–" for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def score_markdown(table: ScoreTable) -> str:
    lines = [f"**{table.caption}**", "", "| Task | " + " | ".join(table.labels) + " |",
             "|---|" + "---|" * len(table.labels)]
    for suite, tasks in table.sections:
        lines.append(f"| *{SUITE_TITLES.get(suite, suite)}* |" + " |" * len(table.labels))
        for task in tasks:
            cells = []
            for lab in table.labels:
                if (task, lab) not in table.cells:
                    cells.append("– (a)")
                    continue
                text = cell_text(table.cells[(task, lab)], " ± ")
                mark = table.marks.get((task, lab))
                text = f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "tie" else text
                cells.append(text + " (c)" if (task, lab) in table.partial else text)
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        lines.append(f"| {table.average_title(suite, tasks)} | "
                     + " | ".join(fmt(table.averages.get((suite, lab))) for lab in table.labels) + " |")
    body = "\n".join(lines)
    notes = "".join(f"({k}) {FOOTNOTES[k]}. " for k in ("a", "c") if f" ({k})" in body)
    lines += ["", "Bold: best, interval overlaps no other; underlined: tied with the best. " + notes
              + "Average: over the suite's tasks shown, only where all are present."]
    return "\n".join(lines) + "\n"


def score_frame(table: ScoreTable) -> pd.DataFrame:
    rows = []
    for suite, tasks in table.sections:
        for task in tasks:
            for lab in table.labels:
                e = table.cells.get((task, lab))
                rows.append({"protocol": table.protocol, "suite": suite, "task": task, "label": lab,
                             "mean": e.mean if e else None, "std": e.std if e else None, "n_seeds": e.n if e else 0,
                             "ci_low": e.low if e else None, "ci_high": e.high if e else None,
                             "mark": table.marks.get((task, lab), ""), "partial": (task, lab) in table.partial})
        for lab in table.labels:
            rows.append({"protocol": table.protocol, "suite": suite, "task": "Average", "label": lab,
                         "mean": table.averages.get((suite, lab)), "std": None, "n_seeds": None,
                         "ci_low": None, "ci_high": None, "mark": "", "partial": False})
    return pd.DataFrame(rows)


def comparison_frame(comparison: Comparison) -> pd.DataFrame:
    return pd.DataFrame([{
        "agent": r["agent"], "task": r["task"], "ours_mean": r["ours"].mean, "ours_std": r["ours"].std,
        "n_seeds": r["ours"].n, "ci_low": r["ours"].low, "ci_high": r["ours"].high, "published": r["published"],
        "published_spread": r["spread"], "source": r["source"], "provenance": r["provenance"],
        "difference": r["difference"], "verdict": r["verdict"],
    } for r in comparison.rows])


def comparison_latex(comparison: Comparison, label: str) -> str:
    lines = ["\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{latex_escape(comparison.caption)}}}",
             f"\\label{{{label}}}", "\\begin{tabular}{llcclcl}", "\\toprule",
             "Agent & Task & Ours & Published & Source & $\\Delta$ & Verdict \\\\", "\\midrule"]
    for r in comparison.rows:
        published = "--" if r["published"] is None else fmt(r["published"]) + (
            LATEX_PM + fmt(r["spread"]) if r["spread"] is not None else "")
        source = "--" if r["source"] is None else f"{latex_escape(r['source'])} ({latex_escape(r['provenance'])})"
        delta = "--" if r["difference"] is None else f"{r['difference']:+.1f}"
        ours = cell_text(r["ours"], LATEX_PM)
        lines.append(f"{latex_escape(r['agent'])} & {latex_escape(r['task'])} & {ours} ({r['ours'].n}) & {published} "
                     f"& {source} & {delta} & {r['verdict']} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def comparison_markdown(comparison: Comparison) -> str:
    lines = [f"**{comparison.caption}**", "", "| Agent | Task | Ours (n) | Published | Source | Δ | Verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in comparison.rows:
        published = "–" if r["published"] is None else fmt(r["published"]) + (
            f" ± {fmt(r['spread'])}" if r["spread"] is not None else "")
        source = "–" if r["source"] is None else f"{r['source']} ({r['provenance']})"
        delta = "–" if r["difference"] is None else f"{r['difference']:+.1f}"
        lines.append(f"| {r['agent']} | {r['task']} | {cell_text(r['ours'], ' ± ')} ({r['ours'].n}) | {published} "
                     f"| {source} | {delta} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ macros

_DIGITS = "Zero One Two Three Four Five Six Seven Eight Nine".split()


def macro_name(*parts: str) -> str:
    """``("final", "ofql", "hopper-medium-v2")`` -> ``\\benchFinalOfqlHopperMediumVTwo`` (letters only; a
    decimal point is spelled, so that ``eta=1.0`` and ``eta=10`` name different macros)."""
    words = re.split(r"[^A-Za-z0-9]+", re.sub(r"(?<=\d)\.(?=\d)", " Point ", " ".join(parts)))
    spelled = "".join(_DIGITS[int(ch)] if ch.isdigit() else ch for ch in "".join(w[:1].upper() + w[1:] for w in words))
    return "\\bench" + spelled


def macros(tables: list[ScoreTable], comparisons: dict[str, Comparison] | None = None) -> str:
    """One ``\\newcommand`` per table cell: score cells and averages (``\\benchFinalOfqlHopperMediumVTwo``,
    ``...DFourrlLocomotionAverage``), and per compared cell the published number, the difference and
    the verdict (``...Published``, ``...Delta``, ``...Verdict``); ``comparisons`` by protocol."""
    lines = ["% One macro per table cell (mean \\pm std over seeds); generated by `bench report`."]
    values: dict[str, str] = {}
    ambiguous: set[str] = set()

    def add(value: str, *parts: str) -> None:
        name = macro_name(*parts)
        if values.get(name, value) != value:  # two numbers, one name: defining either would cite the wrong one
            ambiguous.add(name)
        values[name] = value

    for table in tables:
        for (task, label), e in sorted(table.cells.items()):
            add(cell_text(e, MACRO_PM), table.protocol, label, task)
        for (suite, label), value in sorted(table.averages.items()):
            add(fmt(value), table.protocol, label, suite, "average")
    for protocol, comparison in (comparisons or {}).items():
        for r in comparison.rows:
            add("--" if r["published"] is None else fmt(r["published"]), protocol, r["agent"], r["task"], "published")
            add("--" if r["difference"] is None else f"{r['difference']:+.1f}", protocol, r["agent"], r["task"], "delta")
            add(r["verdict"], protocol, r["agent"], r["task"], "verdict")
    lines += [f"\\newcommand{{{name}}}{{{value}}}" for name, value in values.items() if name not in ambiguous]
    lines += [f"% {name} is not defined: it would name more than one cell" for name in sorted(ambiguous)]
    return "\n".join(lines) + "\n"
