"""Speed work that must not change results: the compiled update gives the eager losses, steps replayed from
CUDA graphs give the eager steps, vectorised seeds give each seed its single-seed result, no update reads the
device from the host; and ``bench perf`` runs (tiny step counts; its numbers and figure are not asserted:
speed is a benchmark, not a test).

The update checks run on the CPU and, where PyTorch sees a GPU, again on CUDA (skipped, and reported so, where
it does not: CI has no GPU). On CUDA every agent is compiled with Inductor, and every agent's steps are
replayed from CUDA graphs, eager and compiled."""

from __future__ import annotations

import csv
import json
import traceback
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from agents import AGENTS
from agents.base import Agent, Batch, SeedStreams
from analysis import compute
from benchmarks.cli import main
from benchmarks.errors import BenchError
from benchmarks.stepping import CapturedActions, TrainingStep, compile_learn, cuda_graphs_wanted
from benchmarks.cpu_memory import keep_freed_memory
from benchmarks.perf import MemoryMeter, skip_warmup_phases_, synthetic_transitions, task_sizes
from benchmarks.tasks import get_task
from benchmarks.training import Cell

from agent_testing import agent_in_window, learning_rates

TASK = "hopper-medium-v2"
OBS, ACT = 11, 3  # Hopper-v4
CPU = torch.device("cpu")
CUDA = pytest.param(torch.device("cuda"), id="cuda",
                    marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))
DEVICES = [pytest.param(CPU, id="cpu"), CUDA]


def hopper_agent(name: str, seeds: tuple[int, ...], device: torch.device = CPU, **overrides) -> Agent:
    """The agent with its real hopper-medium-v2 config (``bench run``'s resolution), at Hopper's sizes."""
    return Cell(name, TASK, seeds, tuple(overrides.items())).spec().build_agent(OBS, ACT, device)


def fixed_batch(n_seeds: int, batch_size: int, seed: int = 0, device: torch.device = CPU) -> Batch:
    data = synthetic_transitions(OBS, ACT, device, n=4096, seed=seed)
    return data.gather(SeedStreams(range(n_seeds), "batches", device).randint(len(data), batch_size))


def test_task_sizes_come_from_the_environment_without_data():
    assert task_sizes(get_task(TASK)) == (OBS, ACT)
    assert task_sizes(get_task("walker2d-medium-v2")) == (17, 6)


# ------------------------------------------------------------------------------------------------ compile


def test_cuda_graphs_default_on_for_cuda_and_are_refused_elsewhere(tmp_path, capsys):
    for command in (["run", "--agent", "bc", "--task", "hopper-medium-v2"], ["perf", "--agents", "bc"]):
        assert main([*command, "--cuda-graphs", "--device", "cpu", "--results", str(tmp_path)]) == 2
        assert "--cuda-graphs needs a CUDA device" in capsys.readouterr().err and not any(tmp_path.iterdir())
    cuda = torch.device("cuda")
    assert cuda_graphs_wanted(None, cuda) and not cuda_graphs_wanted(False, cuda)
    assert not cuda_graphs_wanted(None, CPU)
    with pytest.raises(BenchError, match="--cuda-graphs needs a CUDA device"):
        cuda_graphs_wanted(True, CPU)
    agent = hopper_agent("bc", (0,))
    data, batches = synthetic_transitions(OBS, ACT, CPU, n=64), SeedStreams((0,), "batches", CPU)
    assert TrainingStep(agent, data, batches).mode == "eager"
    assert TrainingStep(agent, data, batches, compile=True).mode == "default"


@pytest.mark.parametrize(("name", "backend", "device"), [
    *[pytest.param(name, backend, CPU, id=f"{name}-{backend}-cpu")
      for name, backend in (("iql", "inductor"), ("ofql", "aot_eager"), ("cql", "aot_eager"))],
    *[pytest.param(name, "inductor", *CUDA.values, marks=CUDA.marks, id=f"{name}-inductor-cuda")
      for name in AGENTS],
])
def test_compiled_update_gives_the_eager_losses(name, backend, device):
    """From the EMA's start on (both sides of the every-5-steps branch), on one fixed batch, for 6 steps.

    IQL goes through Inductor's CPU code generation (about 30 s cold). OFQL goes through everything that is
    particular to it (Dynamo's capture of the update around its random draws and of its chain-rule JVP, and
    AOTAutograd's forward/backward graphs of the JVP) with ``aot_eager``: Inductor's C++ code generation for
    its graphs takes over a minute cold on 2 cores; checked by hand to agree to 3e-7 (see benchmarks/stepping.py).
    CQL (past its BC warm-up) checks that each of its graphs is back-propagated once. On CUDA: every agent,
    Inductor's GPU code.
    """
    torch._dynamo.reset()
    eager, compiled = hopper_agent(name, (0, 1), device), hopper_agent(name, (0, 1), device)
    for agent in (eager, compiled):
        agent.step = getattr(agent.config, "ema_start", getattr(agent.config, "bc_steps", 0))
    assert compile_learn(compiled, backend=backend) == ("default" if backend == "inductor" else backend)
    batch = fixed_batch(2, eager.config.batch_size, device=device)
    for _ in range(6):
        expected, got = eager.update(batch), compiled.update(batch)
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5,
                                       msg=lambda m, key=key: f"{name} {key}: {m}")
    assert compiled.step == eager.step
    assert_same_parameters(eager, compiled, steps=6)


def assert_same_parameters(eager: Agent, compiled: Agent, steps: int) -> None:
    """Every network, target and EMA copy agrees to 1e-4 (relative) + 1e-5, on CUDA up to Adam's sign flips.

    Adam's first steps move each weight by about ``lr * sign(gradient)``: a weight whose gradient is rounding
    noise (a batch sum that cancels) can step the other way when Triton sums in another order than cuBLAS.
    On CUDA up to 0.1% of a network's weights may differ, each by at most ``2 * lr`` per step.
    """
    lr = max(float(rate) for rate in learning_rates(eager))
    for key, module in vars(eager).items():
        if not isinstance(module, nn.Module):  # networks, targets and EMA copies
            continue
        a = torch.cat([t.flatten() for t in module.state_dict().values()])
        b = torch.cat([t.flatten() for t in getattr(compiled, key).state_dict().values()])
        off = ~torch.isclose(b, a, rtol=1e-4, atol=1e-5)
        if eager.device.type == "cuda" and off.any():
            gap = (b - a).abs().max().item()
            print(f"{eager.name} {key}: {int(off.sum())} of {a.numel()} weights differ, at most {gap:.2e} "
                  f"(Adam step {lr:.1e})")
            assert off.float().mean() <= 1e-3 and gap <= 2 * lr * steps, f"{eager.name} {key}"
        else:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m, key=key: f"{eager.name} {key}: {m}")


def test_bench_run_compile_flag_trains_the_same_cell(quickstart, tmp_path):
    """``--compile`` is a run option: the same run id, the same losses as eager, the mode in the provenance."""
    cell = ["--agent", "bc", "--task", "quickstart/reacher/mixed-v0", "--seeds", "0,1", "--no-progress", "--device", "cpu",
            "--steps", "30", "--eval-every", "30", "--eval-episodes", "1", "--log-every", "10"]
    runs = {}
    for flag in ("--no-compile", "--compile"):
        assert main(["run", *cell, flag, "--results", str(tmp_path / flag)]) == 0
        (run,) = (tmp_path / flag / "runs").glob("*")
        runs[flag] = run
    assert runs["--compile"].name == runs["--no-compile"].name
    train = {flag: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                    if json.loads(line)["kind"] == "train"] for flag, run in runs.items()}
    assert [t["step"] for t in train["--compile"]] == [10, 20, 30]
    for a, b in zip(train["--no-compile"], train["--compile"]):
        torch.testing.assert_close(torch.tensor(b["bc_loss"]), torch.tensor(a["bc_loss"]), rtol=1e-4, atol=1e-6)
    starts = [json.loads(line) for line in (runs["--compile"] / "starts.jsonl").read_text().splitlines()]
    assert starts[-1]["step_mode"] == "default"
    assert json.loads((runs["--no-compile"] / "starts.jsonl").read_text().splitlines()[-1])["step_mode"] == "eager"


# ------------------------------------------------------------------------------------------------ CUDA graphs

@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "inductor"])
@pytest.mark.parametrize("name", list(AGENTS))
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_steps_replayed_from_cuda_graphs_equal_eager_steps(name, compiled):
    """24 training steps (sampling included) replayed from CUDA graphs against the same steps run eagerly: the
    same metrics at every step, the same weights and the same random streams after. The steps cross each side
    of the agent's branch with its learning-rate schedules moving (``agent_testing.BRANCH_WINDOWS``), so the
    replays must also follow the rates that ``advance`` writes between them."""
    cuda = torch.device("cuda")
    agents, steps = [], []
    for graphs in (False, True):
        agent = agent_in_window(name, (0, 1), cuda)
        data = agent.preprocess(synthetic_transitions(OBS, ACT, cuda, n=4096))
        batches = SeedStreams(agent.seeds, "batches", cuda)
        agents.append((agent, batches))
        steps.append(TrainingStep(agent, data, batches, compile=compiled and graphs, cuda_graphs=graphs))
    assert steps[1].mode == ("default" if compiled else "eager") + "+cuda-graphs"
    for _ in range(24):
        expected = steps[0]()
        got = {k: v.clone() for k, v in steps[1]().items()}
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5,
                                       msg=lambda m, key=key: f"{name} {key}: {m}")
    (eager, eager_batches), (graphed, graphed_batches) = agents
    assert graphed.step == eager.step and len(steps[1].captured.graphs.graphs) == (1 if name in ("iql", "bc") else 2)
    assert_same_parameters(eager, graphed, steps=24)
    for a, b in ((eager_batches, graphed_batches), *zip(eager.random_streams(), graphed.random_streams())):
        assert all(torch.equal(x.get_state(), y.get_state()) for x, y in zip(a.generators, b.generators))


@pytest.mark.parametrize("name", list(AGENTS))
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_actions_replayed_from_a_cuda_graph_equal_eager_actions(name):
    """Six action batches (two eager warm-ups, the capture, three replays) against the same calls run eagerly."""
    cuda = torch.device("cuda")
    eager, graphed = hopper_agent(name, (0, 1), cuda), hopper_agent(name, (0, 1), cuda)
    act = CapturedActions(graphed)
    g = torch.Generator(device=cuda).manual_seed(0)
    for _ in range(6):
        observations = torch.randn(2, 50, OBS, generator=g, device=cuda)
        torch.testing.assert_close(act(observations), eager.act(observations), rtol=1e-5, atol=1e-6)
    assert len(act.graphs.graphs) == 1


# ------------------------------------------------------------------------------------------------ seeds


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(AGENTS))
def test_five_vectorised_seeds_each_match_the_seed_alone(name, device):
    """At the real hopper config, in the main phase: seed k of a 5-seed update = seed k updated alone."""
    group = hopper_agent(name, (0, 1, 2, 3, 4), device)
    skip_warmup_phases_(group)
    batches = [fixed_batch(5, group.config.batch_size, seed=i, device=device) for i in range(2)]
    group_metrics = [group.update(b) for b in batches]
    for k in (0, 2, 4):
        alone = hopper_agent(name, (k,), device)
        skip_warmup_phases_(alone)
        for batch, expected in zip(batches, group_metrics):
            got = alone.update(Batch(**{f: getattr(batch, f)[k : k + 1] for f in Batch.__dataclass_fields__}))
            for key in expected:
                torch.testing.assert_close(got[key][0], expected[key][k], rtol=1e-4, atol=1e-5, msg=f"{name} seed {k} {key}")


# ------------------------------------------------------------------------------------------------ no host sync

# aten ops that copy a value from the device to the host (``.item()``, ``bool(t)``, ``int(t)`` all end in
# ``_local_scalar_dense``) or whose output shape depends on the data (a CUDA sync)
# (boolean-mask indexing, found by its argument types below, is one too)
HOST_READS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
              "unique_consecutive", "repeat_interleave", "equal", "is_nonzero"}


class HostReads(TorchDispatchMode):
    """Records every host read inside the block, with the project's source lines that made it."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[str]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        op = func._schema.name.split("::")[-1]
        masks = op in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()) or ())
        if op in HOST_READS or masks:
            root = str(Path(__file__).resolve().parent.parent) + "/"
            where = [f"{f.filename.removeprefix(root)}:{f.lineno}" for f in traceback.extract_stack()
                     if f.filename.startswith(root) and "/.venv/" not in f.filename and not f.filename.endswith("test_perf.py")]
            self.found.append((func._schema.name, where[-2:]))
        return func(*args, **(kwargs or {}))


def test_host_read_detector_sees_item_bool_and_masks():
    x = torch.randn(8)
    with HostReads() as reads:
        x.sum().item()
        bool(x[0] > 0)
        x[x > 0]
    assert len(reads.found) == 3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(AGENTS))
def test_training_step_never_reads_the_device(name, device):
    """Sampling and updating, from step 0 (pre-training / BC warm-up phases) and in the main phase, EMA steps included."""
    agent = hopper_agent(name, (0, 1), device)
    data = agent.preprocess(synthetic_transitions(OBS, ACT, device, n=2048))
    batches = SeedStreams(agent.seeds, "batches", device)
    with HostReads() as reads:
        for phase in range(2):
            for _ in range(2 if phase == 0 else 6):
                agent.update(data.gather(batches.randint(len(data), agent.config.batch_size)))
            skip_warmup_phases_(agent)
    assert reads.found == []


# ------------------------------------------------------------------------------------------------ bench perf


def test_bench_perf_runs_on_cpu_and_feeds_the_report(tmp_path, capsys):
    results = tmp_path / "results"
    args = ["perf", "--agents", ",".join(AGENTS), "--seeds", "1,2", "--device", "cpu", "--warmup", "2", "--steps", "2",
            "--repeats", "2", "--action-batch", "100", "--window", "0.01", "--results", str(results)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "updates/s" in out and "decisions/s" in out and "hopper-medium-v2 (obs 11, act 3)" in out
    (path,) = (results / "perf").glob("perf-hopper-medium-v2-cpu-*.csv")
    rows = list(csv.DictReader(path.open()))
    assert [(r["agent"], int(r["n_seeds"])) for r in rows] == [(a, n) for a in AGENTS for n in (1, 2)]
    for row in rows:
        assert (row["obs_dim"], row["act_dim"], row["compile"], row["action_batch"]) == ("11", "3", "eager", "100")
        # an action batch is 100 sampled actions: 2 states x 50 candidates (DQL, OFQL, CPQL), 1 x 1024 (DTQL),
        # 100 states for the agents that sample one action per state
        candidates = {"dql": 50, "ofql": 50, "cpql": 50, "dtql": 1024}.get(row["agent"], 1)
        assert (int(row["candidates_per_state"]), int(row["states_per_batch"])) == (candidates, max(1, 100 // candidates))
        for key in ("updates_per_s_min", "updates_per_s_median", "decision_hz_median", "ms_per_action_median"):
            assert float(row[key]) > 0, key
        assert float(row["updates_per_s_min"]) <= float(row["updates_per_s_median"])
        assert float(row["seed_updates_per_s_median"]) == pytest.approx(float(row["updates_per_s_median"]) * int(row["n_seeds"]))
    # the matmul arithmetic of an update: per seed independent of the seed count, DQL's chain costs more than OFQL's
    # single network call with its JVP, and nothing is left uncounted
    gflop = {(r["agent"], int(r["n_seeds"])): float(r["gflop_per_update"]) for r in rows}
    for agent in AGENTS:
        assert gflop[(agent, 1)] > 0 and gflop[(agent, 2)] == pytest.approx(2 * gflop[(agent, 1)], rel=1e-9)
    assert gflop[("dql", 1)] > 1.3 * gflop[("ofql", 1)]
    # the operators (kernel launches on a GPU in eager mode): DQL's five-step chain dispatches far more than OFQL's
    # one network call, in the update and in acting
    ops = {(r["agent"], int(r["n_seeds"])): (int(r["ops_per_update"]), int(r["ops_per_action_batch"])) for r in rows}
    assert all(o > 0 for pair in ops.values() for o in pair)
    assert ops[("dql", 1)][0] > 1.5 * ops[("ofql", 1)][0] and ops[("dql", 1)][1] > 2.5 * ops[("ofql", 1)][1]
    assert {p.suffix for p in (results / "perf").iterdir()} == {".csv", ".png", ".pdf"}

    written = compute.write_compute_report(results, tmp_path / "report")
    assert {p.name for p in written} >= {"compute.tex", "compute.md", "compute.csv"}
    table = (tmp_path / "report" / "compute.md").read_text()
    assert "| ofql | hopper-medium-v2 |" in table and "\\toprule" in (tmp_path / "report" / "compute.tex").read_text()
    assert compute.write_compute_report(tmp_path / "empty", tmp_path / "report2") == []

    # a CSV written by an older bench perf, without the columns added since, still renders (empty cells)
    old = results / "perf" / "perf-hopper-medium-v2-cpu-20200101-000000.csv"
    with path.open() as src, old.open("w", newline="") as dst:
        kept = [c for c in csv.DictReader(src).fieldnames if not c.startswith(("gflop", "ops_"))]
        writer = csv.DictWriter(dst, kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, "task": "walker2d-medium-v2", "time": "2020-01-01T00:00:00+00:00"} for r in rows)
    compute.write_compute_report(results, tmp_path / "report3")
    table = (tmp_path / "report3" / "compute.md").read_text()
    assert "| ofql | walker2d-medium-v2 |" in table and "| ofql | hopper-medium-v2 |" in table and "| – |" in table


def test_cpu_peak_memory_is_counted_when_freed_memory_is_kept():
    """bench run and bench perf keep freed memory in the process on the CPU (glibc, as on these machines); the
    perf meter hands it back before its baseline, so an allocation that could reuse it is still counted."""
    assert keep_freed_memory()
    kept = torch.ones(32 * 2**20)  # 128 MiB, freed below: kept by the process
    del kept
    meter = MemoryMeter(CPU)
    meter.start()
    measured = torch.ones(16 * 2**20)  # 64 MiB
    assert meter.peak_mib() >= 60
    del measured


def test_bench_perf_refuses_bad_arguments(capsys):
    assert main(["perf", "--agents", "nope"]) == 2
    assert main(["perf", "--seeds", "0"]) == 2
    assert "bench: error" in capsys.readouterr().err
