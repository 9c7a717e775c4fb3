"""Published numbers: ``results/published/published_scores.csv``, built from the reference data.

The source is ``../shared/reference/published_scores.csv`` (its notes: ``published_scores_notes.md``).
:func:`build` copies every row, keeping the ``source``, ``provenance`` and ``where`` columns, and adds
``agent_id``, our name for the agent (empty for methods the suite does not implement). Which
published number a reproduced cell is compared with is :data:`PREFERENCE`, per agent, with reasons,
and with the score rule (``final`` or ``best``) that number reports: a verdict is given only under it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.provenance import CODE_ROOT

SOURCE = CODE_ROOT.parent / "shared" / "reference" / "published_scores.csv"
PUBLISHED = CODE_ROOT / "results" / "published" / "published_scores.csv"
AGENT_IDS = {"OFQL": "ofql", "DQL": "dql", "DTQL": "dtql", "CPQL": "cpql", "CQL": "cql", "IQL": "iql", "BC": "bc"}

# Which source a cell is compared with, best first (see published_scores_notes.md), and the score rule of
# its numbers: "final" (the last evaluation) or "best" (the best evaluation during training).
PREFERENCE = {
    "ofql": [("ofql-iclr2026-table", "final")],  # the paper itself: CleanDiffuser's protocol, ckpt "latest"
    # DQL's own text was not available; OFQL's Table 1 reprints DQL's numbers, which are DQL's online model
    # selection (its README: "for reproducing the optimal results ... --ms online", main.py argmax of the scores)
    "dql": [("ofql-iclr2026-table", "best")],
    "iql": [("iql-paper-via-copy", "final"), ("ofql-iclr2026-table", "final"),  # IQL Table 1 (copied), then others
            ("corl-readme-last", "final")],
    "cql": [("corl-readme-last", "final"), ("iql-paper-table1-cql-column", "final")],  # CORL's -v2 re-runs first
    "dtql": [("dtql-neurips2024-quoted", "final")],  # tertiary; DTQL reports the score "by the end of training"
    "cpql": [("cpql-aamas2024-quoted", "final")],  # tertiary; cccedric/cpql main.py has no model selection
    "bc": [("ofql-iclr2026-table", "final")],
}


def build(source: Path = SOURCE, destination: Path = PUBLISHED) -> pd.DataFrame:
    table = pd.read_csv(source, dtype={"spread": "float64"})
    table.insert(3, "agent_id", table["agent"].map(AGENT_IDS).fillna(""))
    destination.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(destination, index=False)
    return table


def load(path: Path = PUBLISHED) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"spread": "float64", "agent_id": "string"}).fillna({"agent_id": ""})


def reference(published: pd.DataFrame, agent: str, task: str) -> pd.Series | None:
    """The published number a cell (agent, task) is compared with, its row with the score rule it
    reports added as ``protocol``; None if there is none."""
    rows = published[(published["agent_id"] == agent) & (published["task"] == task)]
    for source, protocol in PREFERENCE.get(agent, []):
        candidates = rows[rows["source"] == source]
        if not candidates.empty:  # a row that also gives the spread is preferred over a bare copy
            return pd.concat([candidates.sort_values("spread", na_position="last").iloc[0], pd.Series({"protocol": protocol})])
    return None
