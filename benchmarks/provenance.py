"""What a result needs beside it to be trusted: code version, environment, machine, command."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

CODE_ROOT = Path(__file__).resolve().parent.parent
CODE_VERSION_FILE = "CODE_VERSION.json"  # written into code snapshots, which have no .git
PACKAGES = ("torch", "numpy", "gymnasium", "mujoco", "minari", "h5py", "ofql-bench")


def git_state(root: Path = CODE_ROOT) -> dict[str, Any]:
    """Commit of the code that runs and whether the working tree differs from it (for a code
    snapshot made by ``bench submit``: the commit it was copied from, recorded in the snapshot)."""
    if (root / CODE_VERSION_FILE).exists() and not (root / ".git").exists():
        return json.loads((root / CODE_VERSION_FILE).read_text())

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def collect(device: torch.device) -> dict[str, Any]:
    slurm = {k: v for k, v in os.environ.items() if k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")}
    return {
        "command": sys.argv,
        "git": git_state(),
        "packages": package_versions(),
        "device": str(device),
        "device_name": device_description(device),
        "hostname": socket.gethostname(),
        "slurm": slurm or None,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
