"""What runs on a compute node: one cell as an idempotent, checkpointable submitit callable.

A :class:`CellJob` holds only plain data (agent, task, seeds, overrides, results root); calling it
resolves the config from the code snapshot it runs in, checks that the run id is the one planned
at submission, and trains through :class:`benchmarks.training.Run`, which resumes from the run's
checkpoint if there is one and returns the stored result if the run already finished. So calling
it again, after a crash, a requeue or in a second sweep, never redoes finished work.

On preemption or near the time limit Slurm sends SIGUSR2; the training loop finishes its step,
writes its checkpoint, and hands the signal to submitit, which calls :meth:`CellJob.checkpoint`
(the same callable again: the state is in the run folder), requeues the job and exits.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import submitit
import torch

from benchmarks.errors import BenchError
from benchmarks.training import Cell

PACKAGES = ("agents", "benchmarks", "slurm", "analysis")


def check_code_origin() -> None:
    """Every module of the suite must come from the code the job was given (a snapshot falls back
    to the original checkout for files it lacks, through the editable install's finder)."""
    from benchmarks.provenance import CODE_ROOT

    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] in PACKAGES and path and not Path(path).resolve().is_relative_to(CODE_ROOT):
            raise BenchError(f"module {name} was imported from {path}, outside the job's code {CODE_ROOT}",
                             "the code snapshot is incomplete; resubmit")


@dataclasses.dataclass(frozen=True)
class CellJob:
    cell: Cell
    run_id: str  # planned at submission; the job refuses to train anything else
    results_root: str
    threads: int | None = None
    environment: tuple[tuple[str, str | None], ...] = ()  # set (None: unset) before CUDA starts

    def __call__(self) -> dict[str, Any]:
        from benchmarks.cli import resolve_device
        from benchmarks.training import Run, RunOptions

        for name, value in self.environment:
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self.threads:
            torch.set_num_threads(self.threads)
        spec = self.cell.spec()
        check_code_origin()
        if spec.run_id != self.run_id:
            raise BenchError(
                f"job planned run {self.run_id} but its code resolves run {spec.run_id}",
                "the code snapshot differs from the one the sweep was planned with; resubmit",
            )
        options = RunOptions(results_root=Path(self.results_root), device=resolve_device("auto"), progress=False)
        final = Run(spec, options).train()
        return {"run_id": final["run_id"], "score": final["score"], "slurm_restarts": os.environ.get("SLURM_RESTART_COUNT"),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Called by submitit after the loop has written its checkpoint: requeue the same job."""
        return submitit.helpers.DelayedSubmission(self)
