"""Test-wide setup: every test writes to temporary Minari and results roots, never to the user's.

The quick-start datasets are generated once per session (``quickstart`` fixture) with the real
generator on the real MuJoCo environments.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    roots = {
        "MINARI_DATASETS_PATH": tmp_path_factory.mktemp("minari"),
        "BENCH_RESULTS_DIR": tmp_path_factory.mktemp("results"),
        "D4RL_DATASET_DIR": tmp_path_factory.mktemp("d4rl"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, path in roots.items():
            patch.setenv(name, str(path))
        yield roots


@pytest.fixture(scope="session")
def quickstart(isolated_roots: dict[str, Path]) -> Path:
    """The quick-start datasets in the session's Minari root (generated once)."""
    from benchmarks.data.quickstart import make_quickstart

    assert os.environ["MINARI_DATASETS_PATH"] == str(isolated_roots["MINARI_DATASETS_PATH"])
    make_quickstart()
    return isolated_roots["MINARI_DATASETS_PATH"]
