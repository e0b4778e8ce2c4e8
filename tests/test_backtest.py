"""Backtests on synthetic runs from a known law: small errors on clean data, flags on a deliberately wrong case."""

import json
import math

import numpy as np
import pytest

from analysis.backtest import backtest, select_size_runs, synthetic_runs, true_optimal_n
from scaling.errors import ConfigError


def test_clean_synthetic_backtest_has_small_errors():
    runs = synthetic_runs(noise=0.002, seed=1)
    bt = backtest(runs, n_boot=100, seed=0)
    assert bt.diagnostics["cutoff"] == pytest.approx(3e16)
    assert bt.diagnostics["heldout_budgets"] == [pytest.approx(1e17)]
    row = bt.table.iloc[0]
    # 0.2% loss noise moves each parabola vertex by a few % in N; 4 budgets extrapolated 3.3x keep that below 10%.
    # Approach 2's own bias (off-centre grids, alpha != beta) is shared by the held-out budget's measurement.
    assert abs(row["N_opt_rel_error"]) < 0.10
    assert abs(row["D_opt_rel_error"]) < 0.10
    # L_opt(C) of this law is exactly E + K C^-gamma, so the saturating fit extrapolates to well within 2%.
    assert abs(row["loss_rel_error"]) < 0.02
    assert row["loss_log_ratio"] == pytest.approx(math.log(1 + row["loss_rel_error"]))
    assert row["N_opt_lo"] <= row["N_opt_pred"] <= row["N_opt_hi"]
    assert bt.diagnostics["passed"], bt.summary()
    # the measured held-out optimum itself lies near the law's true optimum
    assert row["N_opt_measured"] == pytest.approx(true_optimal_n(1e17), rel=0.1)
    json.dumps(bt.to_dict(), allow_nan=False)


def test_wrong_largest_budget_is_flagged():
    runs = synthetic_runs(noise=0.002, seed=2)
    top = runs["budget"] == runs["budget"].max()
    # the largest budget follows another law: its best model is 4x smaller and its loss 10% higher
    runs.loc[top, "N"] = runs.loc[top, "N"] / 4
    runs.loc[top, "loss"] = runs.loc[top, "loss"] * 1.10
    bt = backtest(runs, n_boot=100, seed=0)
    flags = bt.table.iloc[0]["flags"]
    assert "N_opt_error" in flags and "N_opt_outside_interval" in flags
    assert "loss_error" in flags
    assert bt.params["N_opt_rel_error"] > 1.0  # predicted ~4x the measured optimum
    assert not bt.diagnostics["passed"]


def test_explicit_cutoff_holds_out_two_budgets():
    bt = backtest(synthetic_runs(seed=3), cutoff=1e16, n_boot=50)
    assert len(bt.table) == 2
    assert list(bt.table["extrapolation"]) == pytest.approx([3.0, 10.0])
    # the loss law falls back to the isoflop L_opt power law with only 3 training budgets
    assert "power law" in bt.diagnostics["loss_source"]


def test_backtest_rejects_too_few_budgets_and_bad_cutoff():
    runs = synthetic_runs(budgets=(1e15, 1e16), seed=0)
    with pytest.raises(ConfigError, match="at least 3 FLOP budgets"):
        backtest(runs, n_boot=10)
    with pytest.raises(ConfigError, match="cutoff"):
        backtest(synthetic_runs(seed=0), cutoff=1e15, n_boot=10)


def test_select_size_runs_keeps_best_of_lr_scan():
    runs = synthetic_runs(budgets=(1e15, 1e16, 1e17), hparam_grid=(3, 2), seed=0)
    size = select_size_runs(runs)
    assert (size["kind"] == "isoflop").all()
    no_kind = runs.drop(columns="kind")
    collapsed = select_size_runs(no_kind)
    assert not collapsed.duplicated(["budget", "N"]).any()
    # the kept run of a scanned size is that size's lowest loss
    n_star = no_kind[no_kind["run_id"].str.startswith("hp0")]["N"].iloc[0]
    group = no_kind[(no_kind["budget"] == 1e15) & np.isclose(no_kind["N"], n_star)]
    kept = collapsed[(collapsed["budget"] == 1e15) & np.isclose(collapsed["N"], n_star)]
    assert kept["loss"].iloc[0] == group["loss"].min()
