"""Calibration study: do the nominal 95% intervals of approach 2 (and of the LR law) contain the truth 95% of the time?

    python benchmarks/bench_calibration.py [--sweeps 200] [--n-boot 400] [--designs centred,wide-off] [--seed 0]

Each design draws `--sweeps` synthetic sweeps from a known approach-3 surface (Chinchilla's E, A, B, alpha != beta;
analysis.simulate.Surface) with an LR optimum that drifts with N and D, fits them with analysis.isoflop.fit_isoflop
(and analysis.hyperparams.fit_hyperparams where the design scans LRs), and prints per quantity: the fraction of
determined 95% intervals that contain the truth, the median interval width, and how many intervals were
undetermined or whose fit refused. Truth: a, b of the surface and its compute-optimal N, D, L, lr at 100x the
largest budget. Target: coverage in [0.90, 0.99] for every quantity in every design.
"""

from __future__ import annotations

import argparse
import sys
import time

from analysis.simulate import EXTRAPOLATION, WIDTH_UNITS, SweepDesign, calibration_study

# Designs span the brief: 3-6 budgets over 10-1000x, 3-7 models per budget, grids on and off centre, noise 0.3-1% with
# 1-3 seeds. Each is a sweep a researcher might actually run.
# name: (budgets, span [x], models per budget, grid half-width [decades of N], largest centre offset [decades],
#        relative noise, seeds, LRs scanned per cell (0: no scan))
DESIGN_TABLE = {
    "centred-5x5": (5, 100, 5, 0.5, 0.0, 0.005, 1, 5),
    "off-centre-wide-4x7": (4, 1000, 7, 0.8, 0.3, 0.003, 1, 0),
    "small-3x3-3seeds": (3, 10, 3, 0.6, 0.1, 0.005, 3, 0),
    "large-6x6-2seeds": (6, 1000, 6, 0.6, 0.25, 0.007, 2, 5),
    "noisy-5x6-2seeds-off": (5, 100, 6, 0.6, 0.25, 0.01, 2, 0),
    "marginal-5x5-1pct": (5, 100, 5, 0.5, 0.25, 0.01, 1, 0),
    "very-wide-3x7": (3, 100, 7, 1.0, 0.4, 0.003, 1, 0),
}
DESIGNS = {name: SweepDesign(name, n_budgets=b, span=span, n_per_budget=m, half_width=hw, max_offset=off,
                             noise=noise, n_seeds=seeds, n_lr=lrs)
           for name, (b, span, m, hw, off, noise, seeds, lrs) in DESIGN_TABLE.items()}
TARGET = (0.90, 0.99)


def study_arguments(description: str, designs: dict, n_boot: int, argv: list[str] | None):
    """The command line of a calibration study: --sweeps, --n-boot, --designs (names checked against `designs`),
    --seed; returns (args, the chosen design names)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--sweeps", type=int, default=200, help="synthetic sweeps per design (>= 200 for the study)")
    ap.add_argument("--n-boot", type=int, default=n_boot, help="bootstrap draws per fit")
    ap.add_argument("--designs", default=",".join(designs), help=f"comma-separated subset of {list(designs)}")
    ap.add_argument("--seed", type=int, default=0, help="study seed (sweep i of a design uses a seed derived from it)")
    args = ap.parse_args(argv)
    names = [n for n in args.designs.split(",") if n]
    unknown = [n for n in names if n not in designs]
    if unknown:
        ap.error(f"unknown designs {unknown}; choose from {list(designs)}")
    return args, names


def main(argv: list[str] | None = None) -> int:
    args, names = study_arguments(__doc__.splitlines()[0], DESIGNS, 400, argv)
    print(f"calibration: {args.sweeps} sweeps per design, {args.n_boot} draws per fit, truth at "
          f"{EXTRAPOLATION:g}x the largest budget; target coverage {TARGET[0]:.2f}-{TARGET[1]:.2f}")
    print(f"{'design':22s} {'quantity':8s} {'coverage':>8s} {'determined':>10s} {'undet.':>6s} {'refused':>7s} "
          f"{'median width':>13s}  width unit")
    misses = []
    for name in names:
        t0 = time.perf_counter()
        study = calibration_study(DESIGNS[name], args.sweeps, n_boot=args.n_boot, seed=args.seed)
        for q, c in study.items():
            ok = TARGET[0] <= c.coverage <= TARGET[1]
            if not ok:
                misses.append(f"{name}/{q}")
            print(f"{name:22s} {q:8s} {c.coverage:8.3f} {c.n_determined:10d} {c.n_undetermined:6d} {c.n_failed:7d} "
                  f"{c.median_width:13.4g}  {WIDTH_UNITS[q]}{'' if ok else '   <- outside target'}")
        print(f"{'':22s} ({time.perf_counter() - t0:.0f} s)")
    print("all quantities within target" if not misses else f"outside target: {', '.join(misses)}")
    return 0 if not misses else 1


if __name__ == "__main__":
    sys.exit(main())
