"""Calibration of the LR law: do the nominal 95% intervals of lr_opt contain the truth 95% of the time?

    python benchmarks/bench_calibration_hparams.py [--sweeps 200] [--n-boot 300] [--designs a,b] [--seed 0]

Each design draws `--sweeps` synthetic sweeps (analysis.simulate: Chinchilla's surface, alpha != beta, with the
Step-Law LR optimum lr*(N, D) = 1.79 N^-0.713 D^0.307, which drifts with C and N) in which every (budget, model)
cell scans the LR, fits them with analysis.hyperparams.fit_hyperparams, and prints, for lr_opt at 100x the largest
budget and for the exponent of lr_opt(C): the fraction of determined 95% intervals that contain the truth, the
median width (hi / lo for lr_opt, hi - lo for the exponent), and how many intervals were undetermined or whose fit
refused. Truth: lr* at the surface's compute-optimal (N, D); the exponent a p + b q of lr*(N_opt(C), D_opt(C)).
Target: coverage in [0.90, 0.99] in every design.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from bench_calibration import study_arguments  # the sibling script (benchmarks/ is on sys.path when run)

from analysis.hyperparams import fit_hyperparams
from analysis.result import interval_from_draws
from analysis.simulate import EXTRAPOLATION, Surface, SweepDesign, simulate_sweep
from scaling.errors import ConfigError

# The grid: 3-6 budgets over 10-1000x, 3-7 models per budget, on- and off-centre, noise 0.3-1%, 1-3 seeds;
# 5-7 learning rates per cell.
DESIGNS = {
    "centred-5x5-5lr": SweepDesign("centred-5x5-5lr", n_budgets=5, span=100, n_per_budget=5, half_width=0.5,
                                   noise=0.005, n_seeds=1, n_lr=5),
    "off-centre-4x3-3seeds": SweepDesign("off-centre-4x3-3seeds", n_budgets=4, span=100, n_per_budget=3,
                                         half_width=0.5, max_offset=0.3, noise=0.003, n_seeds=3, n_lr=5),
    "small-3x3-10x": SweepDesign("small-3x3-10x", n_budgets=3, span=10, n_per_budget=3, half_width=0.6,
                                 max_offset=0.1, noise=0.005, n_seeds=2, n_lr=6),
    "large-6x7-1000x-noisy": SweepDesign("large-6x7-1000x-noisy", n_budgets=6, span=1000, n_per_budget=7,
                                         half_width=0.6, max_offset=0.25, noise=0.01, n_seeds=2, n_lr=6),
    "off-centre-4x7-7lr": SweepDesign("off-centre-4x7-7lr", n_budgets=4, span=100, n_per_budget=7, half_width=0.5,
                                      max_offset=0.3, noise=0.007, n_seeds=1, n_lr=7),
}
TARGET = (0.90, 0.99)


@dataclass
class Tally:
    """Coverage bookkeeping of one quantity over the sweeps of one design."""

    covered: int = 0
    determined: int = 0
    undetermined: int = 0
    failed: int = 0
    widths: list | None = None

    def add(self, draws: np.ndarray, truth: float, ratio: bool) -> None:
        iv = interval_from_draws(draws, method="prediction")
        if not iv.determined:
            self.undetermined += 1
            return
        self.determined += 1
        self.covered += int(iv.lo <= truth <= iv.hi)
        self.widths = (self.widths or []) + [iv.hi / iv.lo if ratio else iv.hi - iv.lo]

    def row(self, name: str) -> str:
        cov = self.covered / self.determined if self.determined else float("nan")
        width = float(np.median(self.widths)) if self.widths else float("nan")
        ok = "ok" if TARGET[0] <= cov <= TARGET[1] else "OFF TARGET"
        return (f"  {name:22s} coverage {cov:5.3f} ({self.covered}/{self.determined})  median width {width:7.3g}  "
                f"undetermined {self.undetermined}  refused {self.failed}  {ok}")


def lr_calibration(n_sweeps: int, seed: int, *, designs: list[str] | None = None, n_boot: int = 300) -> dict:
    """Print, per design, coverage and median width of the 95% intervals of lr_opt at EXTRAPOLATION x the largest
    budget and of the lr_opt(C) exponent over `n_sweeps` simulated sweeps; return {design: {quantity: Tally}}."""
    surface = Surface()
    results = {}
    for name in designs or list(DESIGNS):
        design = DESIGNS[name]
        target = EXTRAPOLATION * float(design.budgets[-1])
        truth_lr = float(surface.optimum(target)["lr_opt"])
        truth_exp = surface.a * surface.lr_n_exp + surface.b * surface.lr_d_exp
        tallies = {"lr_opt@100x (hi/lo)": Tally(), "lr exponent (hi-lo)": Tally()}
        for i in range(n_sweeps):
            sweep_seed = seed * 1_000_003 + i
            try:
                fit = fit_hyperparams(simulate_sweep(design, surface, seed=sweep_seed), n_boot=n_boot, seed=sweep_seed)
            except ConfigError:
                for t in tallies.values():
                    t.failed += 1
                continue
            tallies["lr_opt@100x (hi/lo)"].add(fit.predict_samples(np.array(target))["lr_opt"], truth_lr, True)
            tallies["lr exponent (hi-lo)"].add(fit.draws["lr_exponent"], truth_exp, False)
        print(f"{name}: {n_sweeps} sweeps, truth lr_opt({target:.3g}) = {truth_lr:.4g}, exponent {truth_exp:.4f}")
        for q, t in tallies.items():
            print(t.row(q))
        sys.stdout.flush()
        results[name] = tallies
    return results


def main(argv: list[str] | None = None) -> int:
    args, names = study_arguments(__doc__.splitlines()[0], DESIGNS, 300, argv)
    lr_calibration(args.sweeps, args.seed, designs=names, n_boot=args.n_boot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
