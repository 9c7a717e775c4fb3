"""The statistics a report states: per-cell intervals, the reproduction verdict, and rliable aggregates.

Per cell (agent x task, n seeds): mean, sample standard deviation (ddof = 1) and the Student-t 95%
confidence interval of the mean. Across tasks and seeds: rliable (Agarwal et al., 2021) IQM, mean,
median and optimality gap of normalised scores / 100 with stratified-bootstrap 95% intervals,
performance profiles, and the probability of improvement of one agent over another.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
MIN_SEEDS_FOR_VERDICT = 3
MAX_HALF_WIDTH_FOR_VERDICT = 10.0  # normalised points: a wider interval cannot tell reproduced from not

VERDICT_RULE = (
    f"reproduced if the published mean lies inside our {int(CONFIDENCE * 100)}% Student-t interval of the mean over "
    f"seeds; below/above if it lies above/below that interval; inconclusive with fewer than "
    f"{MIN_SEEDS_FOR_VERDICT} seeds or an interval half-width over {MAX_HALF_WIDTH_FOR_VERDICT:g} points"
)


@dataclasses.dataclass(frozen=True)
class Estimate:
    mean: float
    std: float  # ddof = 1; nan for one seed
    n: int
    low: float  # 95% Student-t interval of the mean (nan for one seed)
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def overlaps(self, other: Estimate) -> bool:
        if math.isnan(self.low) or math.isnan(other.low):
            return True  # no interval: cannot be told apart
        return self.low <= other.high and other.low <= self.high


def estimate(scores: np.ndarray) -> Estimate:
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    mean = float(scores.mean())
    if n < 2:
        return Estimate(mean, math.nan, n, math.nan, math.nan)
    std = float(scores.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(mean, std, n, mean - half, mean + half)


def verdict(ours: Estimate, published: float) -> str:
    """``reproduced``, ``below`` (ours below the published number), ``above`` or ``inconclusive``."""
    if ours.n < MIN_SEEDS_FOR_VERDICT or ours.half_width > MAX_HALF_WIDTH_FOR_VERDICT:
        return "inconclusive"
    if ours.low <= published <= ours.high:
        return "reproduced"
    return "below" if published > ours.high else "above"


def rank_row(estimates: dict[str, Estimate]) -> dict[str, str]:
    """Marks for one table row: ``best`` when the top mean's interval overlaps no other agent's,
    else ``tie`` for the top agent and every agent whose interval overlaps it."""
    if not estimates:
        return {}
    top_label = max(estimates, key=lambda k: estimates[k].mean)
    top = estimates[top_label]
    tied = [k for k, e in estimates.items() if k != top_label and e.overlaps(top)]
    if not tied and len(estimates) > 1 and not math.isnan(top.low):
        return {top_label: "best"}
    if len(estimates) == 1:
        return {}
    return {k: "tie" for k in (top_label, *tied)}


# ------------------------------------------------------------------------------------ rliable


def score_matrices(scores_by_label: dict[str, dict[str, np.ndarray]], tasks: list[str]) -> dict[str, np.ndarray]:
    """``{label: [n_runs, n_tasks]}`` of normalised scores / 100 on ``tasks``, with the same number
    of runs for every task of a label (its smallest seed count: rliable needs a full matrix per
    label; labels may differ in their number of runs)."""
    matrices = {}
    for label, by_task in scores_by_label.items():
        runs = min(len(by_task[task]) for task in tasks)
        matrices[label] = np.stack([np.asarray(by_task[task][:runs], dtype=float) / 100.0 for task in tasks], axis=1)
    return matrices


AGGREGATES = ("IQM", "Mean", "Median", "Optimality Gap")


def aggregate_intervals(matrices: dict[str, np.ndarray], reps: int, seed: int = 0):
    """Point estimates and stratified-bootstrap 95% intervals of the four aggregates, per label."""
    from rliable import library as rly
    from rliable import metrics

    def aggregates(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x), metrics.aggregate_median(x),
                         metrics.aggregate_optimality_gap(x)])

    np.random.seed(seed)  # rliable draws its bootstrap from numpy's global generator
    return rly.get_interval_estimates(matrices, aggregates, reps=reps)


PAIR_SEPARATOR = "\x1f"  # between the labels of a pair; labels hold commas ("iql (tau=0.9, steps=1000)")


def improvement_probabilities(matrices: dict[str, np.ndarray], reference: str, reps: int, seed: int = 0):
    """P(reference > other) with 95% intervals, for every other label; keys ``reference + PAIR_SEPARATOR + other``."""
    from rliable import library as rly
    from rliable import metrics

    pairs = {f"{reference}{PAIR_SEPARATOR}{other}": (matrices[reference], matrices[other]) for other in matrices if other != reference}
    np.random.seed(seed)
    return rly.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps)


def performance_profiles(matrices: dict[str, np.ndarray], thresholds: np.ndarray, reps: int, seed: int = 0):
    from rliable import library as rly

    np.random.seed(seed)
    return rly.create_performance_profile(matrices, thresholds, reps=reps)
