"""Compute cost of the agents, from ``bench perf``'s CSVs (``results/perf/*.csv``): a table (LaTeX,
Markdown, CSV) and a figure, for ``bench report`` and for ``bench perf`` itself.

Each CSV row is one agent at one seed count on one device (see ``benchmarks/perf.py`` for how each
number is measured). The report uses the latest measurement of every (agent, task, device, seed count,
compile mode); older rows stay in their files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.tables import latex_escape, markdown_table
from benchmarks.errors import DataError

KEY = ["agent", "task", "device_name", "n_seeds", "compile"]
REQUIRED = [*KEY, "time", "repeats", "action_batch", "seed_updates_per_s_median", "decision_hz_median"]  # caption, figure
TABLE_COLUMNS = {  # column -> (header, digits)
    "n_seeds": ("seeds", 0),
    "updates_per_s_median": ("updates/s", 1),
    "updates_per_s_min": ("min", 1),
    "seed_updates_per_s_median": ("per seed", 1),
    "ms_per_update_median": ("ms/update", 2),
    "hours_per_1m_median": ("h/1M updates", 2),
    "gflop_per_update": ("GFLOP/update", 2),
    "gflop_per_s": ("GFLOP/s", 0),
    "ops_per_update": ("ops/update", 0),
    "states_per_batch": ("states/batch", 0),
    "decision_hz_median": ("decisions/s", 2),
    "ops_per_action_batch": ("ops/batch", 0),
    "ms_per_action_median": ("ms/action", 2),
    "peak_train_mib": ("MiB train", 0),
    "peak_act_mib": ("MiB act", 0),
}


def perf_files(results_root: Path) -> list[Path]:
    return sorted((Path(results_root) / "perf").glob("perf-*.csv"))


def load_perf(results_root: Path) -> pd.DataFrame:
    """The latest row of every (agent, task, device, seed count, compile mode) over all perf CSVs."""
    files = perf_files(results_root)
    if not files:
        return pd.DataFrame()
    frames = []
    for path in files:
        try:
            frames.append(pd.read_csv(path))
        except (OSError, ValueError) as err:  # pandas' parser and empty-file errors are ValueErrors
            raise DataError(f"{path}: unreadable ({type(err).__name__})", "delete it or rerun `bench perf`") from None
        if missing := [c for c in REQUIRED if c not in frames[-1].columns]:
            raise DataError(f"{path}: not a bench perf CSV (no column {', '.join(missing)})", "delete it or rerun `bench perf`")
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values("time", kind="stable").drop_duplicates(KEY, keep="last").reset_index(drop=True)


def compute_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per agent x device x mode x seed count, the numbers rounded for display."""
    rows = frame.sort_values(["task", "device_name", "compile", "agent", "n_seeds"])
    table = pd.DataFrame({"agent": rows["agent"], "task": rows["task"], "device": rows["device_name"],
                          "mode": rows["compile"]})
    for column, (header, digits) in TABLE_COLUMNS.items():
        # a CSV of an older bench perf lacks the columns added since: those cells stay empty
        values = rows[column] if column in rows else pd.Series(float("nan"), index=rows.index)
        table[header] = ["" if pd.isna(v) else int(round(v)) if digits == 0 else round(float(v), digits) for v in values]
    return table.reset_index(drop=True)


def caption(frame: pd.DataFrame) -> str:
    batches = "/".join(str(b) for b in sorted(frame["action_batch"].unique()))
    return (f"Compute per agent at the task's sizes and each agent's config: gradient updates per second of the "
            f"process, median and min of {'/'.join(map(str, sorted(frame['repeats'].unique())))} timed windows after "
            "warm-up, and per seed (seeds vectorised in one process); hours per 1M updates of the whole cell; "
            "matmul GFLOP of one update (forward and backward, all seeds) and the GFLOP/s the timed updates reach; "
            "ops/update and ops/batch: aten operators one eager update and one action batch dispatch, views left "
            "out (about one kernel launch each on a GPU in eager mode); "
            f"decisions/s = action batches of {batches} sampled actions (per seed; states/batch states times the "
            "agent's candidates per state) per second with the agent's own inference procedure (OFQL paper App. D); "
            "latency of one action; peak memory above the process baseline "
            "(CUDA allocations or CPU resident set) while training and while acting.")


def compute_markdown(frame: pd.DataFrame) -> str:
    return f"{caption(frame)}\n\n" + markdown_table(compute_table(frame))


def compute_latex(frame: pd.DataFrame, label: str = "tab:compute") -> str:

    table = compute_table(frame)
    header = " & ".join(latex_escape(c) for c in table.columns)
    body = "\n".join(" & ".join(latex_escape(str(v)) for v in row) + r" \\" for row in table.itertuples(index=False))
    return (f"\\begin{{table}}[h]\\centering\\small\n\\caption{{{latex_escape(caption(frame))}}}\\label{{{label}}}\n"
            f"\\begin{{tabular}}{{llll{'r' * len(TABLE_COLUMNS)}}}\n\\toprule\n{header} \\\\\n\\midrule\n{body}\n"
            "\\bottomrule\n\\end{tabular}\n\\end{table}\n")


def compute_figure(frame: pd.DataFrame, path: Path) -> list[Path]:
    """Updates/s per seed (one bar per seed count) and decision frequency per agent, log scale; PDF and PNG."""
    from analysis.figures import plt, save

    frame = frame.sort_values(["agent", "n_seeds"])
    agents = list(dict.fromkeys(frame["agent"]))
    seed_counts = sorted(frame["n_seeds"].unique())
    x = np.arange(len(agents))
    width = 0.8 / len(seed_counts)
    fig, (left, right) = plt.subplots(1, 2, figsize=(2.5 + 1.1 * len(agents), 3.2))
    for i, n in enumerate(seed_counts):
        rows = frame[frame["n_seeds"] == n].set_index("agent").reindex(agents)
        bars = left.bar(x + (i - (len(seed_counts) - 1) / 2) * width, rows["seed_updates_per_s_median"], width,
                        label=f"{n} seed{'s' if n > 1 else ''}")
        left.bar_label(bars, fmt="%.3g", fontsize="x-small")
    left.set(xticks=x, xticklabels=agents, yscale="log", ylabel="updates/s per seed", title="training")
    left.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(0, -0.12), ncol=len(seed_counts), frameon=False)
    single = frame.sort_values("n_seeds").drop_duplicates("agent").set_index("agent").reindex(agents)
    right.bar_label(right.bar(x, single["decision_hz_median"], 0.6, color="tab:gray"), fmt="%.3g", fontsize="x-small")
    batch = int(single["action_batch"].iloc[0])
    right.set(xticks=x, xticklabels=agents, yscale="log", ylabel=f"batches of {batch} actions / s",
              title=f"inference ({int(single['n_seeds'].iloc[0])} seed)")
    for ax, values in ((left, frame["seed_updates_per_s_median"]), (right, single["decision_hz_median"])):
        low, high = np.log10(values.min()), np.log10(values.max())
        ax.set_ylim(10 ** np.floor(low - 0.3), 10 ** np.ceil(high + 0.3))  # whole decades, bars from the one below
    device = frame["device_name"].iloc[0]
    fig.suptitle(f"{frame['task'].iloc[0]} on {device} ({frame['compile'].iloc[0]})", fontsize="small")
    fig.tight_layout()
    return save(fig, Path(path))


def write_compute_report(results_root: Path, out: Path) -> list[Path]:
    """``compute.{tex,md,csv}`` and ``figures/compute.{pdf,png}`` in ``out`` if any perf CSV exists; else nothing."""
    frame = load_perf(results_root)
    if frame.empty:
        return []
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("compute.tex", compute_latex(frame)), ("compute.md", compute_markdown(frame))):
        (out / name).write_text(text)
        written.append(out / name)
    compute_table(frame).to_csv(out / "compute.csv", index=False)
    written.append(out / "compute.csv")
    (out / "figures").mkdir(exist_ok=True)
    groups = list(frame.groupby(["task", "device_name", "compile"]))  # one figure per task x device x mode
    for i, (_, group) in enumerate(groups):
        written += compute_figure(group, out / "figures" / (f"compute_{i + 1}" if len(groups) > 1 else "compute"))
    return written
