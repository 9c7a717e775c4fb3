"""Figures, each written as PDF and PNG: rliable interval estimates, performance profiles and
probability of improvement, and learning curves per task."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.statistics import AGGREGATES, PAIR_SEPARATOR  # noqa: E402


def save(fig: plt.Figure, path: Path) -> list[Path]:
    paths = [path.with_suffix(".pdf"), path.with_suffix(".png")]
    for p in paths:
        fig.savefig(p, bbox_inches="tight", dpi=150)
    plt.close(fig)
    return paths


def colors(labels: list[str]) -> dict[str, tuple]:
    return dict(zip(labels, sns.color_palette("colorblind", len(labels))))


def interval_estimates(points: dict, intervals: dict, labels: list[str], title: str, path: Path) -> list[Path]:
    from rliable import plot_utils

    fig, _ = plot_utils.plot_interval_estimates(points, intervals, metric_names=list(AGGREGATES), algorithms=labels,
                                                colors=colors(labels), xlabel="Normalised score / 100", max_ticks=3,
                                                xlabel_y_coordinate=-0.5 / max(1, len(labels)) - 0.2)
    fig.suptitle(title, fontsize="small", y=1 + 0.3 / fig.get_figheight(), va="bottom")  # above the metric names
    return save(fig, path)


def performance_profiles(distributions: dict, cis: dict, thresholds: np.ndarray, labels: list[str], title: str,
                         path: Path) -> list[Path]:
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(distributions, thresholds, performance_profile_cis=cis,
                                         colors=colors(labels), xlabel=r"Normalised score / 100 ($\tau$)", ax=ax)
    ax.legend(loc="lower left", fontsize="small")  # rliable labels its lines; bare labels would name the CI bands
    ax.set_title(title, fontsize="small")
    return save(fig, path)


def improvement_probabilities(points: dict, intervals: dict, title: str, path: Path) -> list[Path]:
    from rliable import plot_utils

    ax = plot_utils.plot_probability_of_improvement(points, intervals, pair_separator=PAIR_SEPARATOR,
                                                    figsize=(5, 0.6 * len(points) + 1))
    ax.figure.suptitle(title, fontsize="small")
    return save(ax.figure, path)  # rliable returns the axes, not the figure


def learning_curves(results: pd.DataFrame, labels: list[str], tasks: list[str], path: Path) -> list[Path]:
    """Mean normalised score over seeds against gradient steps, shaded +- one std, one panel per task."""
    columns = min(3, len(tasks))
    rows = -(-len(tasks) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    palette = colors(labels)
    for ax, task in zip(axes.flat, tasks):
        for label in labels:
            curve = results[(results["task"] == task) & (results["label"] == label)]
            if curve.empty:
                continue
            stats = curve.groupby("step")["score"].agg(["mean", "std"]).fillna(0.0)
            ax.plot(stats.index, stats["mean"], label=label, color=palette[label])
            ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                            color=palette[label], alpha=0.2)
        ax.set_title(task, fontsize="small")
        ax.set_xlabel("gradient steps")
        ax.set_ylabel("normalised score")
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    legend = {}  # every label once, also those that appear on later panels only
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    handles, names = list(legend.values()), list(legend)
    fig.tight_layout()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 7), bbox_to_anchor=(0.5, 1.0))
    return save(fig, path)
