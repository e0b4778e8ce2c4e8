"""Time and peak memory of `scaling fit` on per-checkpoint tables of 1k to 1M rows (target: 1M rows in <= 60 s, <= 2 GB).

    python benchmarks/bench_fit_size.py [--rows 1000,10000,100000,1000000] [--law all] [--checkpoints 100]
                                        [--n-boot N] [--no-backtest] [--direct]

Each table is drawn from a known surface (analysis.simulate.Surface): `rows / checkpoints` runs spread over 8 FLOP
budgets (model sizes log-spaced +-0.6 decades around each budget's optimum), each run logged at `checkpoints`
steps (run_id, step, N, D = tokens so far, loss; no C column), the way a W&B history export arrives. `analysis.load_runs` turns
the checkpoints of a run into one row (its last) and keeps the curves in df.attrs["metrics"]. Every size runs in
a fresh Python process (`scaling fit FILE --law LAW --json OUT`: every law and scaling fit's default options, i.e.
1,000 bootstrap draws and the backtest, unless --law, --n-boot or --no-backtest say otherwise), so the peak resident
memory (getrusage ru_maxrss of that process) and CPU seconds are its own (CPU seconds tell more than wall seconds
when others share the machine; the fit runs torch on one thread). Also prints each size's time and peak memory relative to
the smallest size, which is what tells linear from quadratic on a busy machine.

--direct measures analysis.isoflop.fit_isoflop alone, in this process (tracemalloc peak), on one-row-per-run tables
of the same sizes (every row a distinct run: 8 budgets, sizes uniform in +-0.6 decades, 0.5% noise, 200 draws),
which isolates the isoFLOP fit from reading and collapsing the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.simulate import Surface

N_BUDGETS = 8
TARGET_S, TARGET_GB = 60.0, 2.0

_CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from scaling.cli import main
rc = main(sys.argv[1:])
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t0, "cpu_s": use.ru_utime + use.ru_stime,
                  "peak_mb": use.ru_maxrss / 1024}))
"""


def checkpoint_table(n_rows: int, checkpoints: int, seed: int = 0) -> pd.DataFrame:
    """A per-checkpoint table of about n_rows rows: run_id, step, N, D (tokens so far), loss. No C column: the
    loader derives C = 6 N D, which at a run's last checkpoint is its budget."""
    s = Surface()
    rng = np.random.default_rng(seed)
    n_runs = max(N_BUDGETS * 3, n_rows // checkpoints)
    budgets = np.geomspace(1e17, 1e19, N_BUDGETS)
    run_budget = budgets[np.arange(n_runs) % N_BUDGETS]
    per_budget = int(np.ceil(n_runs / N_BUDGETS))
    position = np.arange(n_runs) // N_BUDGETS
    logN = np.log10(s.optimum(run_budget)["N_opt"]) + np.linspace(-0.6, 0.6, per_budget)[position]
    N = 10 ** logN
    D_final = run_budget / (s.k * N)
    step = np.tile(np.arange(1, checkpoints + 1), n_runs)
    run = np.repeat(np.arange(n_runs), checkpoints)
    D = D_final[run] * step / checkpoints
    loss = s.loss(N[run], D) * np.exp(0.004 * rng.standard_normal(run.size))
    return pd.DataFrame({"run_id": np.char.add("r", run.astype(str)), "step": step, "N": N[run], "D": D,
                         "loss": loss})


def measure(path: Path, law: str, out: Path, options: list[str]) -> dict:
    """Run `scaling fit` on `path` (with extra CLI `options`) in a fresh process; its wall seconds and peak resident
    memory."""
    argv = [sys.executable, "-c", _CHILD, "fit", str(path), "--law", law, *options, "--json", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        return {"rc": proc.returncode, "seconds": float("nan"), "cpu_s": float("nan"), "peak_mb": float("nan"),
                "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    if result["rc"]:
        result["error"] = proc.stderr.strip().splitlines()[-1:]
    return result


def one_row_per_run(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """n_rows distinct runs (N, D, C, budget, loss) over N_BUDGETS budgets from the known surface."""
    s = Surface()
    rng = np.random.default_rng(seed)
    C = np.geomspace(1e17, 1e19, N_BUDGETS)[np.arange(n_rows) % N_BUDGETS]
    N = 10 ** (np.log10(s.optimum(C)["N_opt"]) + rng.uniform(-0.6, 0.6, n_rows))
    D = C / (s.k * N)
    return pd.DataFrame({"N": N, "D": D, "C": C, "budget": C,
                         "loss": s.loss(N, D) * np.exp(0.005 * rng.standard_normal(n_rows))})


def measure_direct(sizes: list[int]) -> None:
    """fit_isoflop alone on one-row-per-run tables: seconds, tracemalloc peak, and time relative to the smallest."""
    import time
    import tracemalloc

    from analysis.isoflop import fit_isoflop

    print(f"fit_isoflop alone, one row per run, {N_BUDGETS} budgets, 200 draws")
    print(f"{'rows':>9s} {'seconds':>8s} {'peak MB':>8s} {'s / s(smallest)':>16s} {'rows ratio':>10s}")
    base = None
    for n in sizes:
        table = one_row_per_run(n)
        tracemalloc.start()
        t0 = time.perf_counter()
        fit_isoflop(table, n_boot=200)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
        base = base or (seconds, n)
        print(f"{n:9d} {seconds:8.2f} {peak:8.0f} {seconds / base[0]:16.2f} {n / base[1]:10.0f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1000,10000,100000,1000000", help="comma-separated table sizes")
    ap.add_argument("--law", default="all", help="the --law given to scaling fit (all, isoflop, ...)")
    ap.add_argument("--n-boot", type=int, default=None, help="bootstrap draws (default: scaling fit's own default)")
    ap.add_argument("--no-backtest", action="store_true", help="pass --no-backtest to scaling fit")
    ap.add_argument("--checkpoints", type=int, default=100, help="checkpoints (rows) per run")
    ap.add_argument("--direct", action="store_true", help="time fit_isoflop alone on one-row-per-run tables")
    args = ap.parse_args(argv)
    sizes = [int(float(v)) for v in args.rows.split(",") if v]
    if args.direct:
        measure_direct(sizes)
        return 0
    options = ([] if args.n_boot is None else ["--n-boot", str(args.n_boot)]) + (["--no-backtest"] if args.no_backtest
                                                                                  else [])
    print(f"scaling fit --law {args.law} {' '.join(options) or '(default options)'}: per-checkpoint CSV, "
          f"{args.checkpoints} rows per run, {N_BUDGETS} budgets; target {TARGET_S:g} s and {TARGET_GB:g} GB at 1M rows")
    print(f"{'rows':>9s} {'runs':>7s} {'seconds':>8s} {'CPU s':>7s} {'peak MB':>8s} {'s / s(smallest)':>16s} "
          f"{'MB / MB(smallest)':>18s} {'rows ratio':>10s}")
    base = None
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            table = checkpoint_table(n, args.checkpoints)
            path = Path(tmp) / f"runs_{n}.csv"
            table.to_csv(path, index=False)
            r = measure(path, args.law, Path(tmp) / f"fit_{n}.json", options)
            base = base or (r["seconds"], r["peak_mb"], len(table))
            print(f"{len(table):9d} {table['run_id'].nunique():7d} {r['seconds']:8.2f} {r['cpu_s']:7.1f} "
                  f"{r['peak_mb']:8.0f} "
                  f"{r['seconds'] / base[0]:16.2f} {r['peak_mb'] / base[1]:18.2f} {len(table) / base[2]:10.1f}"
                  + (f"  error: {r['error']}" if r.get("error") else ""))
            if n >= 1_000_000 and not (r["seconds"] <= TARGET_S and r["peak_mb"] <= TARGET_GB * 1024):
                ok = False
    print("target met" if ok else "target NOT met at 1M rows")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
