"""``bench``: the suite's one command.

Exit codes: 0 success; 1 unexpected failure (a bug: the traceback is printed); 2 bad usage,
unknown agent/task/suite or bad hyperparameter; 3 missing or corrupt data; 4 a run stopped by a
signal after checkpointing (run the same command again to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path

import torch

from agents import AGENTS
from benchmarks.errors import BenchError, ConfigError
from benchmarks.provenance import CODE_ROOT
from benchmarks.tasks import SUITES, TASKS, Task, get_task, task_for_dataset

EPILOG = """\
examples:
  bench data make quickstart
  bench run --agent iql --task quickstart/reacher/mixed-v0 --seeds 0,1,2
  bench data import-d4rl ~/.d4rl/datasets/hopper_medium-v2.hdf5
  bench run --agent iql --task hopper-medium-v2 --seeds 0,1,2,3,4 --device cuda
  bench config --agent iql --task hopper-medium-v2
"""


def default_results_root() -> Path:
    if env := os.environ.get("BENCH_RESULTS_DIR"):
        return Path(env)
    if (CODE_ROOT / "pyproject.toml").exists():
        return CODE_ROOT / "results"
    return Path.cwd() / "results"


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` or ``"0-4"`` or a mix: ``"0-2,7"``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds {text!r} is not a list of integers", "e.g. --seeds 0,1,2 or --seeds 0-4") from None
    if len(set(seeds)) != len(seeds) or not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds {text!r} must be distinct non-negative integers")
    return tuple(seeds)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: this machine has no CUDA device", "use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a torch device", "use cpu, cuda or cuda:N") from None


def task_from_args(args: argparse.Namespace) -> Task:
    if args.task and args.dataset:
        raise ConfigError("give --task or --dataset, not both")
    if args.task:
        return get_task(args.task)
    if args.dataset:
        return task_for_dataset(args.dataset)
    raise ConfigError("no task given", "pass --task NAME (`bench list tasks`) or --dataset MINARI_ID")


# ------------------------------------------------------------------------------------ commands


def cmd_list(args: argparse.Namespace) -> None:
    what = args.what
    if what in ("agents", "all"):
        print("agents:")
        for name, cls in AGENTS.items():
            doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
            print(f"  {name:<6} {doc}")
    if what in ("suites", "all"):
        print("suites:")
        for name, tasks in SUITES.items():
            print(f"  {name:<16} {len(tasks)} tasks: {', '.join(tasks)}")
    if what in ("tasks", "all"):
        from benchmarks.data.minari_store import dataset_exists

        print("tasks:  (* = data present in the Minari root)")
        for task in TASKS.values():
            mark = "*" if dataset_exists(task.dataset_id) else " "
            print(f"  {mark} {task.name:<34} {task.source:<10} {task.env_id or '(from dataset)':<16} {task.notes}")


def cmd_data_make(args: argparse.Namespace) -> None:
    from benchmarks.data.quickstart import make_quickstart

    for info in make_quickstart(force=args.force, progress=print):
        print(f"{info.dataset_id}: {info.num_episodes} episodes, {info.num_transitions} transitions, sha256 {info.sha256[:16]}")


def cmd_data_import(args: argparse.Namespace) -> None:
    from benchmarks.data.d4rl import import_path

    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always", UserWarning)
        infos = import_path(Path(args.path).expanduser(), force=args.force)
    for note in notes:
        print(f"bench: note: {note.message}", file=sys.stderr)
    for info in infos:
        print(f"{info.dataset_id}: {info.num_episodes} episodes, {info.num_transitions} transitions, sha256 {info.sha256[:16]}")


def cmd_data_download(args: argparse.Namespace) -> None:
    import minari

    from benchmarks.errors import DataError

    try:
        minari.download_dataset(args.dataset_id, force_download=args.force)
    except Exception as err:  # network or hub errors: say what failed, in one line
        raise DataError(f"downloading {args.dataset_id} failed: {type(err).__name__}: {err}", "check the id and the network") from None
    print(f"{args.dataset_id}: downloaded to the Minari root")


def cmd_data_list(args: argparse.Namespace) -> None:
    import minari

    from benchmarks.data.minari_store import minari_root

    datasets = minari.list_local_datasets()
    print(f"Minari root: {minari_root()}")
    for dataset_id, meta in datasets.items():
        print(f"  {dataset_id:<40} {meta.get('total_episodes', '?'):>6} episodes {meta.get('total_steps', '?'):>9} steps")


def cmd_data_info(args: argparse.Namespace) -> None:
    from benchmarks.data.minari_store import read_info

    dataset_id = TASKS[args.name].dataset_id if args.name in TASKS else args.name
    print(json.dumps(read_info(dataset_id).summary(), indent=2, default=str))


def cmd_config(args: argparse.Namespace) -> None:
    from benchmarks.config import parse_overrides, resolve_config

    resolved = resolve_config(args.agent, task_from_args(args), parse_overrides(args.set or []))
    print(f"# {args.agent} on {resolved.task}  (config hash {resolved.digest()[:10]})")
    width = max(map(len, resolved.sources))
    for key, value in resolved.values().items():
        print(f"{key:<{width}} = {json.dumps(value):<14} # {resolved.sources[key]}")


def cmd_run(args: argparse.Namespace) -> None:
    from benchmarks.config import parse_overrides, resolve_config
    from benchmarks.training import Run, RunOptions, RunSpec

    task = task_from_args(args)
    overrides = parse_overrides(args.set or [])
    if args.steps is not None:
        overrides["steps"] = args.steps
    resolved = resolve_config(args.agent, task, overrides)
    if args.eval_every is not None or args.eval_episodes is not None:
        protocol = dataclasses.replace(
            task.protocol,
            eval_interval=args.eval_every or task.protocol.eval_interval,
            eval_episodes=args.eval_episodes or task.protocol.eval_episodes,
        )
        task = dataclasses.replace(task, protocol=protocol)
    spec = RunSpec(agent=args.agent, task=task, seeds=parse_seeds(args.seeds), config=resolved)
    options = RunOptions(
        results_root=Path(args.results).expanduser() if args.results else default_results_root(),
        device=resolve_device(args.device),
        log_interval=args.log_every,
        checkpoint_interval=args.checkpoint_every,
        progress=not args.no_progress,
        force=args.force,
    )
    run = Run(spec, options)
    if run.finished() is not None:
        print(f"run {spec.run_id} already finished; showing its result (--force retrains)")
    final = run.train()
    print_result(final, run.dir)


def print_result(final: dict, run_dir: Path) -> None:
    score = final["score"]
    protocol = final["protocol"]
    print(
        f"\n{final['agent']} on {final['task']}: {final['config']['steps']} steps, "
        f"score = {score['protocol']} evaluation ({protocol['eval_episodes']} episodes per seed)"
    )
    for seed, value in score["per_seed"].items():
        print(f"  seed {seed:>3}: {value:7.2f}")
    print(f"  mean    : {score['mean']:7.2f} ± {score['std']:.2f} (std over {len(score['per_seed'])} seeds)")
    print(f"results: {run_dir}")


# ------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Offline-RL benchmark reproduction: train agents on D4RL/Minari data, one cell or whole suites.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="show agents, suites and tasks", description="Show the agents, suites and tasks the suite knows.")
    p.add_argument("what", nargs="?", default="all", choices=["all", "agents", "suites", "tasks"])
    p.set_defaults(func=cmd_list)

    data = sub.add_parser("data", help="make, import, download and inspect datasets",
                          description="Datasets live in the Minari root ($MINARI_DATASETS_PATH, default ~/.minari/datasets).")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = dsub.add_parser("make", help="generate the quick-start datasets",
                        description="Generate the quick-start datasets on Gymnasium MuJoCo with scripted controllers.")
    p.add_argument("which", choices=["quickstart"])
    p.add_argument("--force", action="store_true", help="regenerate datasets that already exist")
    p.set_defaults(func=cmd_data_make)
    p = dsub.add_parser("import-d4rl", help="import original D4RL HDF5 files",
                        description="Import original D4RL HDF5 files (a file, or every D4RL file in a folder) into Minari format, "
                                    "with D4RL's reference scores; transitions are those of d4rl.qlearning_dataset.")
    p.add_argument("path", help="an .hdf5 file such as hopper_medium-v2.hdf5, or a folder of them")
    p.add_argument("--force", action="store_true", help="re-import datasets that already exist")
    p.set_defaults(func=cmd_data_import)
    p = dsub.add_parser("download", help="download a Minari dataset (needs internet)",
                        description="Download a dataset from Minari's remote (minari.download_dataset).")
    p.add_argument("dataset_id", help="e.g. mujoco/hopper/medium-v0")
    p.add_argument("--force", action="store_true", help="download again even if present")
    p.set_defaults(func=cmd_data_download)
    p = dsub.add_parser("list", help="list datasets in the Minari root")
    p.set_defaults(func=cmd_data_list)
    p = dsub.add_parser("info", help="show a dataset's metadata, statistics and checksum")
    p.add_argument("name", help="a task name or a Minari dataset id")
    p.set_defaults(func=cmd_data_info)

    def add_cell_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--agent", required=True, help=f"one of: {', '.join(AGENTS)}")
        p.add_argument("--task", help="a task name (`bench list tasks`)")
        p.add_argument("--dataset", help="any local Minari dataset id (environment and reference scores from its metadata)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a hyperparameter (repeatable)")

    p = sub.add_parser("config", help="show an agent's resolved hyperparameters for a task, with sources")
    add_cell_arguments(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "run",
        help="train one cell (agent x task x seeds) and print its scores",
        description="Train one cell: all seeds in one process, evaluated on the task's protocol. "
        "Results go to RESULTS/runs/<run id>/; rerunning a finished cell shows its result, "
        "rerunning an interrupted one resumes it from its checkpoint.",
    )
    add_cell_arguments(p)
    p.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0-4 (trained together; default 0)")
    p.add_argument("--steps", type=int, help="gradient steps (default: the agent's config for the task)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    p.add_argument("--eval-every", type=int, help="steps between evaluations (default: the task's protocol; recorded in the run id)")
    p.add_argument("--eval-episodes", type=int, help="episodes per seed per evaluation (default: the task's protocol)")
    p.add_argument("--results", help="results root (default: $BENCH_RESULTS_DIR or the checkout's results/)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: the evaluation interval)")
    p.add_argument("--log-every", type=int, default=1000, help="steps between training-metric lines (default 1000)")
    p.add_argument("--force", action="store_true", help="retrain even if the run already finished")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=r".*is out of date.*", module="gymnasium")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BenchError as err:
        print(f"bench: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
