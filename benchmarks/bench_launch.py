"""Runs per CPU-minute of a small local sweep: one worker process per run (the old mode) against long-lived workers
that train their slot's runs one after another in one process (the default), measured in one process.

    python benchmarks/bench_launch.py              # 8 tiny runs, 1 slot, 5 rounds per mode
    python benchmarks/bench_launch.py --quick      # 4 runs, 1 round per mode (checks that it works)

Each round launches the same sweep (byte-level GPT-2 2x32, seq 32, batch 8, one torch thread per run; distinct
seeds) into a fresh results folder with `sweeps.launch.launch` and a `LocalExecutor(reuse_workers=...)`. Rounds
alternate (old, new) and (new, old). CPU time is the workers' user + system time (getrusage of the reaped children);
wall time is the launch call's. The report gives the median runs per CPU-minute and per wall-minute of each mode and
their ratio (new / old); the gain is the import of torch and the packages that each run no longer pays.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sweeps.executors.local import LocalExecutor
from sweeps.launch import launch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' tiny sweep spec (tests/helpers.py), so both time the same runs
from helpers import tiny_spec_text


def bench_spec_text(budget: float, runs: int, slots: int) -> str:
    """`runs` seeds of the tests' tiny GPT-2 run at `budget` FLOPs, `slots` local slots of one thread each."""
    return tiny_spec_text(name="bench", budgets=[budget], train=f"seeds = {list(range(runs))}\ncheckpoint_every = 1000",
                          sections=f"[eval]\nevery = 1000\ntokens = 2048\n[resources]\ncpus = 1\n"
                                   f"[backend.local]\nmax_concurrent = {slots}\nthreads_per_run = 1")


def children_cpu_s() -> float:
    """User + system CPU seconds of every reaped child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_round(spec_path: Path, results: Path, reuse_workers: bool, slots: int) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, runs) of one launch of the sweep in `spec_path` into `results`."""
    executor = LocalExecutor(max_concurrent=slots, threads_per_run=1, reuse_workers=reuse_workers)
    cpu0, wall0 = children_cpu_s(), time.perf_counter()
    result = launch(spec_path, backend="local", results=results, executor=executor, progress=False)
    wall = time.perf_counter() - wall0
    executor.shutdown(grace_s=60)  # idle long-lived workers exit at the end of their input: reap them to count them
    cpu = children_cpu_s() - cpu0
    states = set(result.run_states.values())
    if states != {"completed"}:
        raise SystemExit(f"bench: a run did not complete ({states}); see {results}")
    return cpu, wall, len(result.submitted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="runs per sweep (distinct seeds; default 8)")
    parser.add_argument("--slots", type=int, default=1, help="local slots (max_concurrent; default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode (default 5)")
    parser.add_argument("--budget", type=float, default=1.5e9, help="FLOPs per run (default 1.5e9: 35 steps)")
    parser.add_argument("--quick", action="store_true", help="4 runs, 1 round per mode")
    args = parser.parse_args()
    runs, rounds = (4, 1) if args.quick else (args.runs, args.rounds)

    measured: dict[str, list[tuple[float, float]]] = {"one process per run": [], "long-lived workers": []}
    with tempfile.TemporaryDirectory(prefix="bench_launch_") as tmp:
        spec_path = Path(tmp) / "bench.toml"
        spec_path.write_text(bench_spec_text(args.budget, runs, args.slots))
        launch(spec_path, backend="local", results=Path(tmp) / "warmup", progress=False)  # corpus cache, page cache
        for i in range(rounds):
            order = [False, True] if i % 2 == 0 else [True, False]
            for reuse in order:
                cpu, wall, n = one_round(spec_path, Path(tmp) / f"r{i}-{int(reuse)}", reuse, args.slots)
                name = "long-lived workers" if reuse else "one process per run"
                measured[name].append((n / (cpu / 60), n / (wall / 60)))

    print(f"{runs} runs of {args.budget:.2g} FLOPs (6N), {args.slots} slot(s), 1 thread each; "
          f"median of {rounds} round(s) per mode")
    print(f"{'mode':<22} {'runs / CPU-min':>15} {'runs / wall-min':>16}")
    medians = {}
    for name, rows in measured.items():
        medians[name] = (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))
        print(f"{name:<22} {medians[name][0]:>15.1f} {medians[name][1]:>16.1f}")
    old, new = medians["one process per run"], medians["long-lived workers"]
    print(f"{'ratio new / old':<22} {new[0] / old[0]:>14.2f}x {new[1] / old[1]:>15.2f}x")


if __name__ == "__main__":
    main()
