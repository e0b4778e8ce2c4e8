"""analysis.hyperparams: optimal lr / batch-size laws from simulated LR x batch grids."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.hyperparams import fit_hyperparams, fit_steplaw
from scaling.errors import ConfigError

# DeepSeek-LLM-like laws: lr*(C) = 0.3118·C^-0.125, B*(C) = 0.292·C^0.3271 (tokens)
LR_COEF, LR_EXP, B_COEF, B_EXP = 0.3118, -0.125, 0.292, 0.3271
BUDGETS = np.geomspace(1e17, 1e20, 4)
C1, C2 = 0.02, 0.01  # loss curvature per (ln lr)^2 and per (ln B)^2


def grid(noise=0.002, seed=0, lr_shift=(0, 0, 0, 0), b_shift=(0, 0, 0, 0), n_batch=5):
    """Runs on a 7 x n_batch (lr x batch) grid per budget, factor-2 spacing; grid centres are offset from the
    optimum by a random fraction of a step (plus lr_shift / b_shift decades) so optima fall between grid points."""
    rng = np.random.default_rng(seed)
    rows = []
    for C, ls, bs in zip(BUDGETS, lr_shift, b_shift):
        lr_star, b_star = LR_COEF * C ** LR_EXP, B_COEF * C ** B_EXP
        lr_c = lr_star * 10 ** (ls + rng.uniform(-0.15, 0.15))
        b_c = b_star * 10 ** (bs + rng.uniform(-0.15, 0.15))
        b_factors = 2.0 ** (np.arange(n_batch) - n_batch // 2)
        for lr in lr_c * 2.0 ** np.arange(-3, 4):
            for B in b_c * b_factors:
                L = 2.5 + C1 * np.log(lr / lr_star) ** 2 + C2 * np.log(B / b_star) ** 2 + rng.normal(0, noise)
                rows.append({"budget": C, "lr": lr, "batch_size": B, "loss": L})
    return pd.DataFrame(rows)


def test_quadratic_recovers_lr_and_batch_exponents():
    fit = fit_hyperparams(grid(), n_boot=500)
    # Noise 0.002 on 35-run grids: per-budget optima are located to ~0.01 decades (bootstrap), so over 3 decades
    # of C the exponents have SE ~0.003; 0.01 is ~3-4 SE. Intervals must cover the truth.
    assert fit.params["lr_exponent"] == pytest.approx(LR_EXP, abs=0.01)
    assert fit.params["batch_exponent"] == pytest.approx(B_EXP, abs=0.015)
    for name, true in (("lr_exponent", LR_EXP), ("batch_exponent", B_EXP)):
        lo, hi = fit.intervals[name]
        assert lo < true < hi, name
    assert fit.lr_opt.samples.shape == (500, 2) and fit.samples.shape == (500, 4)
    assert all(f == [] for f in fit.budgets["flags"])
    pred = fit.predict(1e22)
    assert pred["lr"] == pytest.approx(LR_COEF * 1e22 ** LR_EXP, rel=0.1)
    assert pred["batch_size"] == pytest.approx(B_COEF * 1e22 ** B_EXP, rel=0.25)


def test_within_tolerance_rule():
    fit = fit_hyperparams(grid(noise=0.0005), method="within", tolerance=0.003, n_boot=200)
    # The rule averages the grid points within 0.3% of the best loss; with factor-2 grids this is a coarse,
    # quantised estimate (per budget within ~0.15 decades), so the exponent is recovered to ~0.05.
    assert fit.params["lr_exponent"] == pytest.approx(LR_EXP, abs=0.05)
    assert fit.params["batch_exponent"] == pytest.approx(B_EXP, abs=0.05)
    assert fit.diagnostics["method"] == "within"


def test_one_dimensional_lr_scan():
    fit = fit_hyperparams(grid(n_batch=1), n_boot=200)
    assert fit.batch_opt is None and fit.predict(1e21)["batch_size"] is None
    assert fit.params["lr_exponent"] == pytest.approx(LR_EXP, abs=0.015)
    assert "batch_exponent" not in fit.params


def test_edge_lr_and_edge_batch_flags():
    # budget 2's lr grid sits 1.2 decades below its optimum; budget 3's batch grid 1 decade above its optimum
    fit = fit_hyperparams(grid(lr_shift=(0, 0, -1.2, 0), b_shift=(0, 0, 0, 1.0)), n_boot=100)
    flags = list(fit.budgets["flags"])
    assert "edge_lr" in flags[2] and "edge_batch" in flags[3]
    assert flags[0] == [] and flags[1] == []
    assert "edge_lr" not in flags[3]
    assert fit.diagnostics["n_used_lr"] == 3 and fit.diagnostics["n_used_batch"] == 3
    assert fit.params["lr_exponent"] == pytest.approx(LR_EXP, abs=0.015)


def test_steplaw_form_recovered_when_N_and_D_vary_independently():
    # Step-Law-like lr*(N, D) = 1.79·N^-0.713·D^0.307 on a 3 x 3 grid of (N, D)
    rng = np.random.default_rng(4)
    rows = []
    for N in (1e7, 1e8, 1e9):
        for D in (1e9, 1e10, 1e11):
            lr_star = 1.79 * N ** -0.713 * D ** 0.307
            for lr in lr_star * 10 ** rng.uniform(-0.05, 0.05) * 2.0 ** np.arange(-3, 4):
                rows.append({"N": N, "D": D, "budget": 6 * N * D, "lr": lr, "batch_size": 2 ** 20,
                             "loss": 3.0 + C1 * np.log(lr / lr_star) ** 2 + rng.normal(0, 0.0005)})
    df = pd.DataFrame(rows)
    step = fit_steplaw(df, tolerance=0.01, n_boot=200)
    # Near-optimal runs are within one factor-2 step of the optimum, symmetric up to the random grid offset
    # (+-0.05 decades); across 2 decades of N and D that gives exponents within ~0.05.
    assert step.params["p"] == pytest.approx(-0.713, abs=0.05)
    assert step.params["q"] == pytest.approx(0.307, abs=0.05)
    fit = fit_hyperparams(df, tolerance=0.01, n_boot=100)
    assert fit.steplaw is not None and fit.steplaw.params["p"] == pytest.approx(step.params["p"])
    assert fit.steplaw.predict(1e8, 1e10) == pytest.approx(1.79 * 1e8 ** -0.713 * 1e10 ** 0.307, rel=0.3)


def test_steplaw_not_identifiable_is_reported():
    df = grid()
    df["N"] = 0.1 * df["budget"] ** 0.5
    df["D"] = df["budget"] / (6 * df["N"])  # one (N, D) per budget: N and D collinear
    fit = fit_hyperparams(df, n_boot=0)
    assert fit.steplaw is None and "not fitted" in fit.diagnostics["steplaw"]


def test_errors_and_serialization():
    df = grid()
    with pytest.raises(ConfigError, match="lr"):
        fit_hyperparams(df.drop(columns="lr"))
    with pytest.raises(ConfigError, match="at least 2 distinct FLOP budgets"):
        fit_hyperparams(df[df["budget"] == BUDGETS[0]])
    with pytest.raises(ConfigError, match="method"):
        fit_hyperparams(df, method="best")
    with pytest.raises(ConfigError, match="at least 2 budgets"):
        fit_hyperparams(grid(lr_shift=(-1.2, -1.2, -1.2, 0)), n_boot=0)
    fit = fit_hyperparams(df, n_boot=50)
    d = json.loads(json.dumps(fit.to_dict()))
    assert len(d["lr_opt"]["samples"]) == 50 and d["batch_opt"]["exponent"] == pytest.approx(
        fit.params["batch_exponent"])
    assert "tokens" in fit.summary() and "FLOPs" in fit.summary()
