"""Benchmark the approach-3 fit on Epoch's Chinchilla data: our batched fitter vs a per-start scipy L-BFGS-B loop.

    python benchmarks/bench_parametric.py [--starts 500] [--n-boot 1000] [--repeat 3]

(a) analysis.parametric.fit_parametric over the full 4,500-start grid; (b) the reference the issue describes, written
here independently: scipy L-BFGS-B with an analytic gradient, one start at a time, over `--starts` evenly spaced grid
starts (all 4,500 with --starts 4500), its time extrapolated to 4,500 starts; (c) the fit with --n-boot bootstrap
refits. Prints wall and CPU seconds (the CPU may be shared: quote the ratios, measured in this one process, not the
seconds), the speed ratio of medians and both best objectives, and (c)'s intervals with their resample counts.
"""

from __future__ import annotations

import os

# One BLAS thread, set before numpy loads: scipy's L-BFGS-B makes many tiny BLAS calls, and with the default thread
# pool they cost ~10x more on a shared 2-core machine. Both fitters run under the same setting (ours uses torch on one
# thread and batched 5x5 solves).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

CSV = Path(__file__).resolve().parents[1] / "tests" / "data" / "chinchilla_epoch.csv"  # see tests/data/README.md
DELTA = 1e-3


def load_chinchilla(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N (params), D = C / (6 N) (tokens), loss; the 5 highest-loss runs dropped as Epoch did (240 remain)."""
    import pandas as pd

    df = pd.read_csv(path).sort_values("loss").iloc[:-5]
    N = df["Model Size"].to_numpy()
    return N, df["Training FLOP"].to_numpy() / (6 * N), df["loss"].to_numpy()


def reference_grid() -> np.ndarray:
    """Hoffmann/Epoch starts, columns (log A, log B, log E, alpha, beta)."""
    ab, e, ex = np.arange(0, 26, 5.0), np.arange(-1, 1.01, 0.5), np.arange(0, 2.01, 0.5)
    return np.array([(a, b, ee, al, be) for a in ab for b in ab for ee in e for al in ex for be in ex])


def huber_sum_and_grad(theta, x1, x2, y):
    """Sum of Huber(DELTA) of log L - logsumexp(a - alpha x1, b - beta x2, e) and its gradient."""
    a, b, e, alpha, beta = theta
    t1, t2 = a - alpha * x1, b - beta * x2
    top = np.maximum(np.maximum(t1, t2), e)
    z1, z2, z3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(e - top)
    s = z1 + z2 + z3
    r = y - top - np.log(s)
    psi = np.clip(r, -DELTA, DELTA)
    f = (psi * (r - 0.5 * psi)).sum()  # Huber(r) = psi (r - psi / 2)
    w1, w2 = psi * z1 / s, psi * z2 / s
    grad = np.array([-w1.sum(), -w2.sum(), -(psi * z3 / s).sum(), w1 @ x1, w2 @ x2])
    return f, grad


def run_reference(starts, x1, x2, y) -> tuple[float, np.ndarray]:
    best_f, best_x = np.inf, None
    for x0 in starts:
        res = minimize(huber_sum_and_grad, x0, args=(x1, x2, y), jac=True, method="L-BFGS-B")
        if res.fun < best_f:
            best_f, best_x = res.fun, res.x
    return best_f, best_x


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=500, help="starts for the scipy reference (4500 = all)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap refits to time")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of our full-grid fit (median is reported)")
    args = parser.parse_args(argv)
    if not CSV.exists():
        print(f"{CSV} not found: nothing to benchmark")
        return 0
    from analysis.parametric import fit_parametric

    N, D, L = load_chinchilla(CSV)
    print(f"Chinchilla (Epoch) data: {len(N)} runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")

    runs = [timed(lambda: fit_parametric(N, D, L)) for _ in range(max(1, args.repeat))]
    fit = runs[0][0]
    wall_a, cpu_a = float(np.median([r[1] for r in runs])), float(np.median([r[2] for r in runs]))
    p = fit.params
    print(f"(a) ours, {fit.diagnostics['n_starts']} starts: {wall_a:.2f} s wall ({cpu_a:.2f} s CPU), median of "
          f"{len(runs)}; objective {fit.diagnostics['objective']:.8e}, converged={fit.success}")
    print(f"    E={p['E']:.4f} A={p['A']:.1f} B={p['B']:.1f} alpha={p['alpha']:.4f} beta={p['beta']:.4f} "
          f"a={p['a']:.4f} (Epoch: E=1.8172 A=477.8 B=2143 alpha=0.3473 beta=0.3672, objective 1.01827e-3)")

    grid = reference_grid()
    n = min(max(1, args.starts), len(grid))
    subset = grid[np.unique(np.linspace(0, len(grid) - 1, n).round().astype(int))]
    (best_f, best_x), wall_b, cpu_b = timed(lambda: run_reference(subset, np.log(N), np.log(D), np.log(L)))
    scale = len(grid) / len(subset)
    label = "all starts" if len(subset) == len(grid) else f"{len(subset)} evenly spaced starts, x{scale:.1f} " \
                                                         f"extrapolated to {len(grid)}"
    print(f"(b) scipy L-BFGS-B loop, analytic gradient ({label}): {wall_b * scale:.1f} s wall "
          f"({cpu_b * scale:.1f} s CPU) for {len(grid)} starts; measured {wall_b:.1f} s; best objective {best_f:.8e}"
          f" (A={np.exp(best_x[0]):.1f} B={np.exp(best_x[1]):.1f} E={np.exp(best_x[2]):.4f} alpha={best_x[3]:.4f}"
          f" beta={best_x[4]:.4f})")
    print(f"    speed ratio (b)/(a): {wall_b * scale / wall_a:.0f}x wall, {cpu_b * scale / cpu_a:.0f}x CPU")

    if args.n_boot > 0:
        boot, wall_c, cpu_c = timed(lambda: fit_parametric(N, D, L, n_boot=args.n_boot))
        se = {name: float(np.nanstd(v, ddof=1)) for name, v in boot.draws.items()}
        print(f"(c) fit + {args.n_boot} bootstrap refits: {wall_c:.2f} s wall ({cpu_c:.2f} s CPU); bootstrap part "
              f"(c) - (a) ~ {cpu_c - cpu_a:.2f} s CPU ({(cpu_c - cpu_a) / cpu_a:.1f}x the fit); "
              f"{boot.diagnostics['n_boot_failed']} of {boot.n_draws} failed ({boot.diagnostics['bootstrap']})")
        for name in ("E", "A", "B", "alpha", "beta", "a", "b"):
            print(f"    {name:>5s} = {boot.params[name]:.4g}  95% {boot.intervals[name].describe()}")
        print(f"    bootstrap SE: E={se['E']:.3f} A={se['A']:.1f} B={se['B']:.0f} alpha={se['alpha']:.4f} "
              f"beta={se['beta']:.4f} (Epoch: E 0.03, A 124.6, B 1293, alpha 0.02, beta 0.02)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
