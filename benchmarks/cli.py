"""``bench``: the suite's one command.

Exit codes: 0 success; 1 unexpected failure (a bug: the traceback is printed); 2 bad usage,
unknown agent/task/suite or bad hyperparameter; 3 missing or corrupt data; 4 a run stopped by a
signal after checkpointing (run the same command again to resume); 5 a sweep waited for ended with
cells unfinished (failed or cancelled).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import torch

from agents import AGENTS
from benchmarks.errors import BenchError, ConfigError, RunInterrupted, SweepFailed
from benchmarks.provenance import CODE_ROOT
from benchmarks.config import named_grid, parse_overrides
from benchmarks.tasks import SUITES, TASKS, Task, get_task, task_for_dataset
from benchmarks.training import Cell

EPILOG = """\
examples:
  bench data make quickstart
  bench run --agent iql --task quickstart/reacher/mixed-v0 --seeds 0,1,2
  bench data import-d4rl ~/.d4rl/datasets/hopper_medium-v2.hdf5
  bench run --agent iql --task hopper-medium-v2 --seeds 0,1,2,3,4 --device cuda
  bench config --agent iql --task hopper-medium-v2
  bench perf --agents dql,ofql --seeds 1,5 --device cuda
"""


def results_root(given: str | None) -> Path:
    """``--results`` if given, else ``$BENCH_RESULTS_DIR``, else the checkout's (or the working folder's) results/."""
    if given:
        return Path(given).expanduser()
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
        infos = import_path(Path(args.path).expanduser(), force=args.force, task_name=args.task)
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
    from benchmarks.config import resolve_config

    resolved = resolve_config(args.agent, task_from_args(args), parse_overrides(args.set or []))
    print(f"# {args.agent} on {resolved.task}  (config hash {resolved.digest()[:10]})")
    width = max(map(len, resolved.sources))
    for key, value in resolved.values().items():
        print(f"{key:<{width}} = {json.dumps(value):<14} # {resolved.sources[key]}")


def overrides_from_args(args: argparse.Namespace) -> tuple[tuple, tuple]:
    """(hyperparameter overrides, protocol overrides) from --set/--steps and --eval-every/--eval-episodes."""
    overrides = parse_overrides(args.set or [])
    if args.steps is not None:
        overrides["steps"] = args.steps
    protocol = {key: value for key, value in (("eval_interval", args.eval_every), ("eval_episodes", args.eval_episodes))
                if value is not None}
    return tuple(sorted(overrides.items())), tuple(sorted(protocol.items()))


def cell_from_args(args: argparse.Namespace) -> Cell:
    task_from_args(args)  # validates --task/--dataset
    overrides, protocol = overrides_from_args(args)
    return Cell(args.agent, args.task or args.dataset, parse_seeds(args.seeds), overrides, protocol, args.dataset is not None)


def cmd_run(args: argparse.Namespace) -> None:
    from benchmarks.training import Run, RunOptions

    spec = cell_from_args(args).spec()
    options = RunOptions(
        results_root=results_root(args.results),
        device=resolve_device(args.device),
        log_interval=args.log_every,
        checkpoint_interval=args.checkpoint_every,
        progress=not args.no_progress,
        force=args.force,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
    )
    run = Run(spec, options)
    if run.finished() is not None:
        print(f"run {spec.run_id} already finished; showing its result (--force retrains)")
    final = run.train()
    print_result(final, run.dir)


def split_list(text: str | None) -> list[str] | None:
    return [item.strip() for item in text.split(",") if item.strip()] if text else None


def agents_from(text: str | None) -> list[str]:
    """``--agents a,b`` (default: every agent), each checked against the registry."""
    agents = split_list(text) or list(AGENTS)
    for agent in agents:
        if agent not in AGENTS:
            raise ConfigError(f"unknown agent {agent!r}", f"known agents: {', '.join(AGENTS)}")
    return agents


def sweep_cells(args: argparse.Namespace) -> list[Cell]:
    from benchmarks.tasks import get_suite

    tasks = get_suite(args.suite)
    if wanted := split_list(args.tasks):
        unknown = sorted(set(wanted) - {t.name for t in tasks})
        if unknown:
            raise ConfigError(f"task(s) {', '.join(unknown)} not in suite {args.suite}", f"its tasks: {', '.join(t.name for t in tasks)}")
        tasks = [t for t in tasks if t.name in wanted]
    agents = agents_from(args.agents)
    seeds = parse_seeds(args.seeds)
    groups = [(s,) for s in seeds] if args.per_seed else [seeds]
    overrides, protocol = overrides_from_args(args)

    def variants(agent: str) -> list[tuple]:
        """One override set, or one per value of the agent's named sweep (--grid)."""
        if not args.grid:
            return [overrides]
        return [tuple(sorted({**dict(overrides), args.grid: value}.items())) for value in named_grid(agent, args.grid)]

    return [Cell(agent, task.name, group, variant, protocol)
            for agent in agents for task in tasks for variant in variants(agent) for group in groups]


def cmd_submit(args: argparse.Namespace) -> None:
    import shutil

    from slurm import sweep
    from slurm.profile import load_profile

    root = results_root(args.results)
    executor = args.executor or ("slurm" if shutil.which("sbatch") else "local")
    why = "given" if args.executor else ("sbatch found" if executor == "slurm" else "no sbatch on PATH")
    if args.parallel < 1:
        raise ConfigError(f"--parallel {args.parallel}: at least one job must run at a time", "e.g. --parallel 2")
    profile = load_profile(args.profile)
    cells = sweep_cells(args)
    with sweep.submission_lock(root):
        planned = sweep.plan(cells, root)
        todo = sweep.to_submit(planned, args.retry_failed)
        print(f"executor: {executor} ({why}); {len(planned)} job(s), {len(todo)} to submit; results: {root}")
        if executor == "local" and profile.gpus_per_node:
            print(f"  local jobs see GPUs 0-{profile.gpus_per_node - 1} (the profile's gpus_per_node)")
        elif executor == "local":
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
            print(f"  local jobs see this shell's GPUs (CUDA_VISIBLE_DEVICES={visible})")
        for p in planned:
            action = "submit" if p in todo else "skip"
            job = f"job {p.previous['job_id']}" if p.previous and "job_id" in p.previous else "not started"
            note = f" ({job} in sweep {p.previous['sweep']})" if p.previous else ""
            variant = f" [{p.cell.variant()}]" if p.cell.variant() else ""
            print(f"  {action:<6} {p.state:<9} {p.run_id}{variant}{note}")
        if any(p.state in ("failed", "cancelled") for p in planned) and not args.retry_failed:
            print("  (failed cells are not resubmitted without --retry-failed)")
        if args.dry_run:
            if executor == "slurm":
                print("sbatch parameters:", json.dumps(profile.submitit_parameters()))
            print("dry run: nothing submitted")
            return
        submission = sweep.submit(planned, executor_kind=executor, profile=profile, results_root=root,
                                  retry_failed=args.retry_failed, parallel=args.parallel, command=sys.argv)
    if submission is None:
        print("nothing to submit")
        return
    manifest = submission.manifest
    if executor == "local":
        print(f"sweep {manifest['sweep_id']}: {len(manifest['jobs'])} local job(s), at most {args.parallel} at once")
    else:
        print(f"sweep {manifest['sweep_id']}: {len(submission.jobs)} job(s) {', '.join(j['job_id'] for j in manifest['jobs'])}")
    print(f"manifest: {sweeps_manifest_path(root, manifest['sweep_id'])}; `bench status --sweep {manifest['sweep_id']}`",
          flush=True)
    if executor == "local":  # outside the lock: starting every job can take as long as the sweep
        sweep.launch_local(submission, root, args.parallel)
    if args.wait or executor != "slurm":
        try:
            sweep.wait(submission.jobs)
        except KeyboardInterrupt:
            raise RunInterrupted(
                f"sweep {manifest['sweep_id']}: stopped waiting for its jobs",
                f"`bench status --sweep {manifest['sweep_id']}` shows them; jobs that got the Ctrl-C too (local ones "
                "started from this terminal) checkpointed, and the same `bench submit` with --retry-failed resumes "
                "them") from None
        unfinished = [row["run_id"] for row in print_status(manifest, root) if row["state"] != "done"]
        if unfinished:
            raise SweepFailed(
                f"sweep {manifest['sweep_id']}: {len(unfinished)} of {len(manifest['jobs'])} cell(s) did not finish: "
                f"{', '.join(unfinished)}",
                f"`bench status --sweep {manifest['sweep_id']}` shows why; the same `bench submit` with --retry-failed "
                "reruns them",
            )


def sweeps_manifest_path(results_root: Path, sweep_id: str) -> Path:
    return results_root / "sweeps" / sweep_id / "manifest.json"


def print_status(manifest: dict, results_root: Path) -> list[dict]:
    """Print the sweep's table and return its rows."""
    from slurm import sweep

    rows = sweep.status_rows(manifest, results_root)
    print(f"sweep {manifest['sweep_id']} ({manifest['executor']}, code {str(manifest['code'].get('commit'))[:10]}):")
    print(f"  {'state':<10} {'progress':>15} {'score':>7}  {'job':<12} run")
    for row in rows:
        score = f"{row['score']:.1f}" if row["score"] is not None else "-"
        progress = f"{row['step']}/{row['steps']}"
        print(f"  {row['state']:<10} {progress:>15} {score:>7}  {row.get('job_id', '-'):<12} {row['run_id']}")
        if row["restarts"]:
            print(f"  {'':<10} restarted {row['restarts']} time(s)")
        if row["state"] in ("failed", "cancelled"):
            print(f"  {'':<10} error: {row['error']}")
            print(f"  {'':<10} log: {row['stderr']}")
    counts = {state: sum(r["state"] == state for r in rows) for state in dict.fromkeys(r["state"] for r in rows)}
    print("  " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    return rows


def cmd_status(args: argparse.Namespace) -> None:
    from slurm import sweep

    root = results_root(args.results)
    print_status(sweep.load_manifest(root, args.sweep), root)


def cmd_cancel(args: argparse.Namespace) -> None:
    from slurm import sweep

    root = results_root(args.results)
    manifest = sweep.load_manifest(root, args.sweep)
    cancelled, unstarted = sweep.cancel(manifest, root)
    print(f"sweep {manifest['sweep_id']}: cancelled {' '.join([f'{len(cancelled)} job(s)', *cancelled])}"
          + (f"; {unstarted} queued job(s) will not start" if unstarted else ""))


def cmd_report(args: argparse.Namespace) -> None:
    from analysis import report

    root = results_root(args.results)
    if args.cell:
        agent, _, task = args.cell.partition("/")
        if not task:
            raise ConfigError(f"--cell {args.cell!r} is not AGENT/TASK", "e.g. --cell ofql/hopper-medium-v2")
        print_cell(report.cell_report(root, agent, task))
        return
    out = Path(args.out).expanduser() if args.out else root / "report"
    files = report.build_report(root, out, reps=args.reps, pdf=args.pdf)
    gaps = files.completeness[files.completeness[["incomplete", "diverged", "missing"]].map(len).sum(axis=1) > 0]
    print(f"completeness: {len(files.completeness)} agent x task cells, {len(gaps)} with missing, incomplete or diverged seeds")
    for row in gaps.itertuples():
        print(f"  {row.label:<12} {row.task:<36} finished {list(row.finished)} incomplete {list(row.incomplete)} "
              f"diverged {list(row.diverged)} missing {list(row.missing)}")
    print(f"report: {len(files.written)} files in {out}")
    for path in files.written:
        if path.suffix in (".md", ".pdf") and path.parent == out:
            print(f"  {path}")


def cmd_perf(args: argparse.Namespace) -> None:
    from benchmarks import perf

    agents = agents_from(args.agents)
    try:
        seed_counts = tuple(int(n) for n in split_list(args.seeds) or ())
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r} is not a list of seed counts", "e.g. --seeds 1,5") from None
    counts = (args.warmup, args.repeats, args.action_batch, args.steps or 1, *seed_counts)
    if not seed_counts or min(counts) < 1:
        raise ConfigError("--seeds, --warmup, --repeats, --steps and --action-batch must be positive integers")
    get_task(args.task)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = perf.PerfSettings(
        agents=tuple(agents), task=args.task, device=resolve_device(args.device), seed_counts=seed_counts,
        warmup=args.warmup, steps=args.steps, window_seconds=args.window, repeats=args.repeats,
        action_batch=args.action_batch, compile=args.compile, cuda_graphs=args.cuda_graphs,
        overrides=tuple(sorted(parse_overrides(args.set or []).items())),
    )
    frame = perf.run_perf(settings, progress=print)
    print(perf.format_table(frame))
    root = results_root(args.results)
    for path in perf.write_results(frame, root, settings):
        print(f"wrote {path}")


def print_cell(cell: dict) -> None:
    print(f"{cell['agent']} on {cell['task']}")
    ref = cell["published"]
    if ref:
        spread = f" ± {ref['spread']}" if ref.get("spread") is not None else ""
        print(f"  published: {ref['score']}{spread} ({ref['source']}, {ref['provenance']})")
    for run in cell["runs"]:
        state = "finished" if run["complete"] else f"incomplete ({run['last_step']}/{run['steps']} steps)"
        print(f"  run {run['run_id']} [{state}{', diverged' if run['diverged'] else ''}]")
        if run["scores"]:
            for protocol, per_seed in run["scores"].items():
                print(f"    {protocol:<7} " + "  ".join(f"seed {s}: {v:.2f}" for s, v in per_seed.items()))
        if run["provenance"]:
            git = run["provenance"]["git"] or {}
            print(f"    code {git.get('commit')} (dirty: {git.get('dirty')}), {run['provenance']['device_name']}, "
                  f"{run['provenance']['time']}")
        print(f"    data sha256 {run['dataset_sha256']}")
        print(f"    reproduce: {run['reproduce']}")


def print_result(final: dict, run_dir: Path) -> None:
    score = final["score"]
    protocol = final["protocol"]
    print(
        f"\n{final['agent']} on {final['task']}: {final['config']['steps']} steps, "
        f"score = {score['protocol']} evaluation ({protocol['eval_episodes']} episodes per seed)"
    )
    for seed, value in score["per_seed"].items():
        print(f"  seed {seed:>3}: {value:7.2f}")
    n = len(score["per_seed"])
    print(f"  mean    : {score['mean']:7.2f}" + (f" ± {score['std']:.2f} (sample std over {n} seeds)" if n > 1 else ""))
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
    p.add_argument("--task", metavar="TASK", help="the task of a single file not named as D4RL names it, e.g. hopper-medium-v2")
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

    def add_results_argument(p: argparse.ArgumentParser) -> None:
        p.add_argument("--results", help="results root (default: $BENCH_RESULTS_DIR or the checkout's results/)")

    def add_device_argument(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")

    def add_step_arguments(p: argparse.ArgumentParser, verb: str) -> None:
        p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help=f"{verb} agent.learn compiled by torch.compile (Inductor); same losses as eager up to float "
                       "rounding, not part of the run id (default: off)")
        p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                       help=f"{verb} the update step captured as CUDA graphs and replayed; same results as eager, not "
                       "part of the run id (default: on for CUDA)")

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
    add_device_argument(p)
    p.add_argument("--eval-every", type=int, help="steps between evaluations (default: the task's protocol; recorded in the run id)")
    p.add_argument("--eval-episodes", type=int, help="episodes per seed per evaluation (default: the task's protocol)")
    add_results_argument(p)
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: the evaluation interval)")
    p.add_argument("--log-every", type=int, default=1000, help="steps between training-metric lines (default 1000)")
    p.add_argument("--force", action="store_true", help="retrain even if the run already finished")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_step_arguments(p, "train with")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "submit",
        help="train every cell of a suite as submitit jobs (Slurm, or locally)",
        description="Plan one job per agent x task (its seeds trained together; --per-seed for one job per seed), "
        "skip cells that are finished or queued, freeze the code, submit the rest as a Slurm job array "
        "(or local processes), and write a sweep manifest under RESULTS/sweeps/. Jobs checkpoint and requeue "
        "themselves on preemption and near their time limit. Running the same command again submits only "
        "what is missing (and, with --retry-failed, what failed).",
    )
    p.add_argument("--suite", required=True, help=f"one of: {', '.join(SUITES)}")
    p.add_argument("--agents", help="comma-separated agents (default: all)")
    p.add_argument("--tasks", help="comma-separated tasks of the suite (default: all)")
    p.add_argument("--seeds", default="0-4", help="e.g. 0-4 (default) or 0,1,2")
    p.add_argument("--per-seed", action="store_true", help="one job per seed instead of one per agent x task")
    p.add_argument("--grid", metavar="NAME", help="one cell per value of the agents' named sweep [sweeps.NAME] in "
                   "their config, e.g. --agents ofql --grid eta: the OFQL paper's eta grid")
    p.add_argument("--executor", choices=["slurm", "local", "debug"], help="default: slurm where sbatch is found, else local")
    p.add_argument("--profile", help="cluster profile TOML (slurm/profiles/example.toml documents the fields)")
    p.add_argument("--steps", type=int, help="gradient steps (default: each agent's config)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="hyperparameter override for every agent (repeatable)")
    p.add_argument("--eval-every", type=int, help="override the suite's evaluation interval")
    p.add_argument("--eval-episodes", type=int, help="override the suite's evaluation episodes")
    p.add_argument("--retry-failed", action="store_true", help="also resubmit cells whose last job failed or was cancelled")
    p.add_argument("--dry-run", action="store_true", help="print the jobs and sbatch parameters, submit nothing")
    p.add_argument("--wait", action="store_true", help="wait until every job has ended (always for local/debug); "
                   "exit 5 if a cell did not finish")
    p.add_argument("--parallel", type=int, default=os.cpu_count() or 1,
                   help="local executor: jobs at once, each with cores/parallel torch threads (default: one job per core)")
    add_results_argument(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="progress of a sweep's cells",
                       description="A table of a sweep's cells: state (queued or pending, running, requeued, done, failed, cancelled; "
                       "local: unstarted, unknown from another machine), "
                       "progress, last score, job id, and for failed cells the last lines of the error and the log path.")
    p.add_argument("--sweep", help="sweep id (default: the latest)")
    add_results_argument(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "report",
        help="tables, figures and published-number comparisons from whatever results exist",
        description="Load every run under RESULTS/runs, check completeness, and write score tables (LaTeX, Markdown, "
        "CSV) for both protocols (final, best), our D4RL cells beside the published numbers with a verdict, one LaTeX "
        "macro per cell, and rliable figures (interval estimates, performance profiles, probability of improvement, "
        "learning curves) to OUT (default RESULTS/report).",
    )
    add_results_argument(p)
    p.add_argument("--out", help="output folder (default: RESULTS/report)")
    p.add_argument("--cell", metavar="AGENT/TASK", help="show one cell: per-seed scores, runs, provenance, the command")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap repetitions for rliable intervals (default 2000)")
    p.add_argument("--pdf", action="store_true", help="also compile report.tex with pdflatex")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "perf",
        help="updates/s, decision frequency and peak memory of each agent at a task's real sizes",
        description="Time each agent's update at the task's observation/action sizes and its resolved config for "
        "the task, on random transitions made on the device (no dataset needed): updates per second (process and "
        "per seed, min and median over timed windows after warm-up, seeds vectorised), ms per update, hours per 1M "
        "updates; decision frequency = action batches of --action-batch sampled actions (states x the agent's "
        "candidates per state) per second through the agent's own act (OFQL paper App. D), and the latency of one "
        "action; the matmul GFLOP of one update and the GFLOP/s reached; the aten operators one eager update and one "
        "action batch dispatch (about one kernel launch each on a GPU); peak memory. Prints a table and writes "
        "RESULTS/perf/perf-<task>-<device>-<time>.csv with a figure (PNG, PDF); `bench report` adds a compute "
        "table from the latest CSVs. A benchmark: close other work on the machine for numbers worth quoting.",
    )
    p.add_argument("--agents", help=f"comma-separated agents (default: all: {','.join(AGENTS)})")
    p.add_argument("--task", default="hopper-medium-v2", help="whose sizes and config to use (default hopper-medium-v2)")
    add_device_argument(p)
    p.add_argument("--seeds", default="1,5", help="seed counts to time, each vectorised in one process (default 1,5)")
    p.add_argument("--warmup", type=int, default=20, help="updates before timing (default 20)")
    p.add_argument("--steps", type=int, help="updates per timed window (default: as many as fill --window seconds)")
    p.add_argument("--window", type=float, default=2.0, help="seconds per timed window when --steps is not given (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed windows (default 5); min and median are reported")
    p.add_argument("--action-batch", type=int, default=2500,
                   help="sampled actions per act call for the decision frequency, states x the agent's candidates per "
                   "state (default 2500: the OFQL paper's 50 states x 50 candidates)")
    add_step_arguments(p, "time")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="hyperparameter override for every agent (repeatable)")
    add_results_argument(p)
    p.set_defaults(func=cmd_perf)

    p = sub.add_parser("cancel", help="cancel a sweep's queued and running jobs")
    p.add_argument("--sweep", help="sweep id (default: the latest)")
    add_results_argument(p)
    p.set_defaults(func=cmd_cancel)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=r".*is out of date.*", module="gymnasium")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BenchError as err:
        print(f"bench: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
