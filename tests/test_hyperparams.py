"""analysis.hyperparams: LR / batch optima located per (N, D) cell, and their laws across cells, on simulated scans."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis.hyperparams import HyperparamFit, StepLawFit, cell_ids, fit_hyperparams
from analysis.plots import plot_hyperparams
from analysis.result import FitResult
from scaling.errors import ConfigError

# lr*(N, D) = 1.79 N^-0.713 D^0.307 (Step Law, Li et al. 2025); B*(C) = 0.292 C^0.3271 tokens (DeepSeek LLM, 2024)
LR_C, LR_P, LR_Q = 1.79, -0.713, 0.307
B_C, B_E = 0.292, 0.3271
N0 = 0.1  # the simulated budgets' compute-optimal size: N_opt = N0 * C^0.5 (C = 6 N D)
LR_EXP = 0.5 * (LR_P + LR_Q)  # lr_opt(C) along that path: -0.203
BUDGETS = np.geomspace(1e17, 1e19, 4)
LR_CURV, B_CURV = 0.05, 0.03  # relative loss increase per squared decade off the optimal lr / batch size


def lr_star(N, D):
    return LR_C * N ** LR_P * D ** LR_Q


def true_lr_opt(C):
    N = N0 * np.asarray(C, float) ** 0.5
    return lr_star(N, C / (6 * N))


def scan_sweep(seed=0, *, budgets=BUDGETS, sizes=(-0.4, 0.0, 0.4), n_lr=7, n_seeds=1, noise=0.004, n_batch=0,
               scanned_sizes=None, lr_shift=None, batch_size=2 ** 20):
    """Runs of an LR (x batch) scan in every (budget, size) cell. Sizes are decades off N_opt = N0 C^0.5, which is
    the loss-optimal size of each budget (the loss is 2.5 + 0.3 s^2 at the optimal lr). Each cell's lr grid spans
    +-0.75 decades around lr*(N, D) shifted by U(-0.15, 0.15) (+ lr_shift[(budget index, size index)] decades);
    scanned_sizes: size indices that get a scan (the others train once, at lr*); n_batch > 0 adds a batch grid
    (+-0.6 decades around B*(C)). Noise: relative (log-normal) sd `noise`, n_seeds replicates per point."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, C in enumerate(budgets):
        b_star = B_C * C ** B_E
        for j, s in enumerate(sizes):
            N = N0 * C ** 0.5 * 10 ** s
            D = C / (6 * N)
            lr0 = lr_star(N, D)
            scanned = scanned_sizes is None or j in scanned_sizes
            shift = rng.uniform(-0.15, 0.15) + (lr_shift or {}).get((i, j), 0.0)
            lrs = lr0 * 10 ** (shift + np.linspace(-0.75, 0.75, n_lr)) if scanned else [lr0]
            bs = (b_star * 10 ** (rng.uniform(-0.1, 0.1) + np.linspace(-0.6, 0.6, n_batch)) if n_batch and scanned
                  else [b_star if n_batch else batch_size])
            for lr in lrs:
                for B in bs:
                    clean = (2.5 + 0.3 * s * s) * (1 + LR_CURV * np.log10(lr / lr0) ** 2
                                                   + (B_CURV * np.log10(B / b_star) ** 2 if n_batch else 0.0))
                    for r in range(n_seeds):
                        rows.append({"N": N, "D": D, "C": C, "budget": C, "lr": lr, "batch_size": B, "seed": r,
                                     "kind": "hparam" if scanned else "isoflop",
                                     "loss": clean * np.exp(noise * rng.standard_normal())})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_recovers_lr_law_that_drifts_with_C_and_N(n_seeds):
    fit = fit_hyperparams(scan_sweep(seed=n_seeds, n_seeds=n_seeds), n_boot=400)
    # 4 budgets x 3 sizes, 7 lrs per cell, 0.4% noise: per-cell optima within ~0.05 decades, so over 2 decades of C
    # the exponent of lr_opt(C) is within ~0.05 and the Step-Law exponents (12 cells) within ~0.06.
    assert fit.params["lr_exponent"] == pytest.approx(LR_EXP, abs=0.05)
    assert fit.intervals["lr_exponent"].contains(LR_EXP)
    assert fit.steplaw is not None
    assert fit.params["steplaw_p"] == pytest.approx(LR_P, abs=0.06)
    assert fit.params["steplaw_q"] == pytest.approx(LR_Q, abs=0.06)
    for name, true in (("steplaw_p", LR_P), ("steplaw_q", LR_Q)):
        assert fit.intervals[name].contains(true), name
    # compute-optimal cells are the centre size of each budget; every cell's optimum is near its own lr*(N, D)
    cells = fit.cells
    assert list(cells.loc[cells["compute_optimal"], "N"]) == pytest.approx(list(N0 * BUDGETS ** 0.5))
    located = cells[cells["used_steplaw"]]
    err = np.log10(located["lr_opt"] / lr_star(located["N"], located["D"]))
    assert np.abs(err).max() < 0.12 and len(located) >= 10
    assert fit.predict(1e21)["lr_opt"] == pytest.approx(true_lr_opt(1e21), rel=0.6)
    assert fit.predict(1e21)["batch_opt"] is None and fit.batch_opt is None
    assert fit.noise["source"] == ("replicates" if n_seeds > 1 else "residuals")


def test_batch_grid_gives_batch_laws():
    fit = fit_hyperparams(scan_sweep(seed=5, n_lr=6, n_batch=5), n_boot=300)
    assert fit.batch_opt is not None and fit.batch_D is not None
    assert fit.params["batch_exponent"] == pytest.approx(B_E, abs=0.06)
    assert fit.intervals["batch_exponent"].contains(B_E)
    assert fit.params["lr_exponent"] == pytest.approx(LR_EXP, abs=0.05)
    pred = fit.predict(np.array([1e20, 1e21]))
    assert pred["batch_opt"] == pytest.approx(B_C * np.array([1e20, 1e21]) ** B_E, rel=0.5)
    samples = fit.predict_samples(np.array([1e20, 1e21]))
    assert samples["lr_opt"].shape == samples["batch_opt"].shape == (300, 2)
    assert fit.cells["two_d"].all() and fit.cells["method"].eq("bootstrap:runs").all()  # 30 runs per cell


def test_one_size_per_budget_has_no_step_law():
    # the pipeline's sweep: isoFLOP runs (one lr each) plus an lr x batch grid at each budget's optimal size, so the
    # scanned cells lie on one path where N and D move together: lr(N, D) is not identifiable, lr_opt(C) is
    from analysis.simulate import synthetic_runs

    runs = synthetic_runs(hparam_grid=(5, 3), seed=0)
    fit = fit_hyperparams(runs.drop(columns="kind"), n_boot=100)
    assert fit.steplaw is None and fit.diagnostics["steplaw"].startswith("not fitted")
    assert fit.cells["scanned"].sum() == 5 and fit.cells.loc[fit.cells["scanned"], "two_d"].all()
    assert fit.params["lr_exponent"] == pytest.approx(-0.125, abs=0.05)  # lr* = 0.94 C^-0.125 in that simulator
    assert fit.batch_opt is not None


def test_implausible_exponent_is_marked_unreliable():
    runs = scan_sweep(seed=12, n_seeds=2)
    runs["lr"] *= (runs["C"] / BUDGETS[0]) ** -1.3  # moves every cell's optimum: lr_opt ~ C^-1.5, outside [-1, 1]
    fit = fit_hyperparams(runs, n_boot=100)
    assert fit.params["lr_exponent"] == pytest.approx(LR_EXP - 1.3, abs=0.05)
    assert "outside" in fit.unreliable["lr_exponent"] and "UNRELIABLE" in fit.summary()
    assert "batch_exponent" not in fit.unreliable and "lr_opt_at_largest_budget" not in fit.unreliable


def test_no_lr_scan_is_refused():
    one_lr = scan_sweep(n_lr=1)
    with pytest.raises(ConfigError, match="no LR scan: one LR per cell"):
        fit_hyperparams(one_lr, n_boot=0)
    with pytest.raises(ConfigError, match="no LR scan: at most 2 learning rates per cell"):
        fit_hyperparams(scan_sweep(n_lr=2), n_boot=0)
    # runs whose C coincide within a tolerance are not a scan either: 3 sizes per budget, one lr each
    assert one_lr.groupby("budget")["lr"].nunique().min() == 3


@pytest.mark.slow  # importing the report pulls in torch (~5 s)
def test_no_lr_scan_is_refused_through_fit_all():
    from analysis.report import fit_all

    runs = scan_sweep(n_lr=1).drop(columns="kind")
    rep = fit_all(runs, laws=["hyperparams"], n_boot=0)
    assert "no LR scan: one LR per cell" in rep.skipped["hyperparams"]


def test_law_point_is_interpolated_to_the_budget_optimum():
    # sizes -0.3, +0.1, +0.5 decades off the loss-optimal N: the nearest cell (+0.1) alone would put lr_opt 0.1
    # decades (x 1.02 at fixed C) off; interpolating towards the -0.3 cell lands on the optimum
    fit = fit_hyperparams(scan_sweep(seed=11, sizes=(-0.3, 0.1, 0.5), n_seeds=3, noise=0.003), n_boot=200)
    points = pd.DataFrame(fit.diagnostics["lr_law_points"])
    assert len(points) == 4 and points["cells"].map(len).eq(2).all()
    assert points["weights"].map(lambda w: w[0]).between(0.6, 0.9).all()  # mostly the nearest (+0.1) cell
    err = np.log10(points["lr_opt"] / true_lr_opt(points["C"]))
    assert np.abs(err).max() < 0.06
    nearest = fit.cells[fit.cells["compute_optimal"]]
    assert np.abs(np.log10(nearest["lr_opt"] / true_lr_opt(nearest["C"]))).min() > 0.06
    assert fit.intervals["lr_exponent"].contains(LR_EXP)


def test_cells_without_kind_are_the_same():
    runs = scan_sweep(seed=2, n_seeds=2, scanned_sizes=(1,))  # a scan at the centre size; others train once
    with_kind = fit_hyperparams(runs, n_boot=100, seed=1)
    without = fit_hyperparams(runs.drop(columns="kind"), n_boot=100, seed=1)
    assert len(without.cells) == 12 and without.cells["scanned"].sum() == 4
    assert without.params == with_kind.params
    scanned = without.cells[without.cells["scanned"]]
    assert list(scanned["N"]) == pytest.approx(list(N0 * BUDGETS ** 0.5))
    assert (scanned["n_lr"] == 7).all()
    # every size at a budget is its own cell: same C, different (N, D)
    assert without.cells.groupby("budget").size().eq(3).all()
    # runs whose batch size is unknown (empty) are kept, as their own batch size
    runs.loc[runs["kind"] == "isoflop", "batch_size"] = np.nan
    unknown_batch = fit_hyperparams(runs.drop(columns="kind"), n_boot=100, seed=1)
    assert unknown_batch.params == without.params
    runs.loc[0, "batch_size"] = -5.0
    with pytest.raises(ConfigError, match="batch_size"):
        fit_hyperparams(runs, n_boot=0)


def test_cells_are_n_d_pairs_not_c_groups():
    runs = scan_sweep(seed=3)
    ids = cell_ids(runs)
    assert len(np.unique(ids)) == 12
    # a C within 1% of another cell's never joins it: cells follow (N, D), however close their C
    runs.loc[runs["N"] == runs["N"].min(), "C"] *= 1.01
    assert (cell_ids(runs) == ids).all()


def test_edge_cell_is_flagged_and_left_out_of_the_law():
    # the compute-optimal cell of budget 2 scans 1.2 decades above its optimum; budget 0's scan has three runs tied
    # at the lowest loss around an interior optimum, which must not flag it
    runs = scan_sweep(seed=4, n_seeds=2, lr_shift={(2, 1): 1.2})
    cell0 = runs[np.isclose(runs["N"], N0 * BUDGETS[0] ** 0.5)]
    centre = np.sort(cell0["lr"].unique())[2:5]
    runs.loc[cell0.index[cell0["lr"].isin(centre)], "loss"] = cell0["loss"].min()
    fit = fit_hyperparams(runs, n_boot=200)
    cells = fit.cells.set_index(["budget", "N"])
    edge = cells.loc[(BUDGETS[2], N0 * BUDGETS[2] ** 0.5)]
    assert "edge_lr" in edge["flags"] and not edge["used_lr_C"] and not edge["used_steplaw"]
    tied = cells.loc[(BUDGETS[0], N0 * BUDGETS[0] ** 0.5)]
    assert tied["flags"] == [] and tied["used_lr_C"]
    assert fit.diagnostics["n_used_lr"] == 3
    assert fit.params["lr_exponent"] == pytest.approx(LR_EXP, abs=0.08)


def test_small_cells_use_the_residual_bootstrap_and_failures_are_counted():
    fit = fit_hyperparams(scan_sweep(seed=6, n_lr=5), n_boot=200)
    assert fit.cells["method"].eq("bootstrap:residual").all()  # 5 runs per cell: resampling runs is degenerate
    assert fit.intervals["lr_exponent"].method == "bootstrap:residual"
    for r in fit.cells.itertuples():
        assert r.lr_n_total == 200 and r.lr_n_ok <= 200
        if r.lr_n_ok >= 180:
            assert r.lr_lo < r.lr_opt < r.lr_hi
        else:  # optima of too many draws fell outside the scan: undetermined, not clipped
            assert np.isnan(r.lr_lo) and "lr_undetermined" in r.flags and r.lr_reason
    fit3 = fit_hyperparams(scan_sweep(seed=6, n_lr=7, n_seeds=2), n_boot=50)
    assert fit3.cells["method"].eq("bootstrap:runs").all() and fit3.noise["dof"] == 12 * 7


def test_without_resamples_intervals_are_undetermined():
    fit = fit_hyperparams(scan_sweep(seed=7).drop(columns="batch_size"), n_boot=0)
    assert all(not iv.determined and "n_boot = 0" in iv.reason for iv in fit.intervals.values())
    assert "undetermined" in fit.summary()
    assert fit.cells["lr_lo"].isna().all()
    back = FitResult.from_dict(json.loads(json.dumps(fit.to_dict())))  # all-null columns come back as NaN
    assert back.cells["lr_lo"].isna().all() and back.summary() == fit.summary()
    assert len(plot_hyperparams(back).axes) == 2


def test_round_trip_through_json():
    fit = fit_hyperparams(scan_sweep(seed=8, n_lr=6, n_batch=4), n_boot=100)
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["kind"] == "hyperparams" and set(d["draws"]) == set(fit.params)
    back = FitResult.from_dict(d)
    assert isinstance(back, HyperparamFit) and isinstance(back.steplaw, StepLawFit)
    C = np.array([1e19, 1e21])
    for key in ("lr_opt", "batch_opt"):
        assert back.predict(C)[key] == pytest.approx(fit.predict(C)[key])
        np.testing.assert_allclose(back.predict_samples(C)[key], fit.predict_samples(C)[key], rtol=1e-12)
    assert back.intervals == fit.intervals and back.params == fit.params
    assert back.cells[["N", "D", "lr_opt"]].equals(fit.cells[["N", "D", "lr_opt"]])
    assert back.summary() == fit.summary()
    bad = json.loads(json.dumps(d))
    bad["params"]["batch_coef"] = -1.0
    with pytest.raises(ConfigError, match="batch_coef"):
        FitResult.from_dict(bad)
    bad = json.loads(json.dumps(d))
    del bad["cells"][0]["flags"]
    bad["cells"] = [{k: v for k, v in r.items() if k != "flags"} for r in bad["cells"]]
    with pytest.raises(ConfigError, match="cells"):
        FitResult.from_dict(bad)


@pytest.mark.slow  # 50 fits, ~10 s
def test_interval_coverage_on_simulated_sweeps():
    # 50 sweeps (4 budgets, a 6-lr scan at each budget's optimal size, 1-3 seeds, noise 0.3-1%): the 95% interval of
    # lr_opt at 100x the largest budget must cover the truth in 84-100% of them (5 binomial SEs below 95% is 0.84 at
    # n = 50) and stay narrow enough to use (median width < 0.6 decades, i.e. a factor of 4).
    rng = np.random.default_rng(0)
    target = 100 * BUDGETS[-1]
    hits, widths = [], []
    for i in range(50):
        runs = scan_sweep(seed=100 + i, n_lr=6, n_seeds=int(rng.integers(1, 4)), noise=float(rng.uniform(0.003, 0.01)),
                          sizes=(-0.4, 0.0, 0.4), scanned_sizes=(1,))
        fit = fit_hyperparams(runs, n_boot=200, seed=i)
        draws = fit.predict_samples(np.array(target))["lr_opt"]
        lo, hi = np.nanpercentile(np.log10(draws), [2.5, 97.5])
        hits.append(lo <= np.log10(true_lr_opt(target)) <= hi)
        widths.append(hi - lo)
    assert 0.84 <= np.mean(hits) <= 1.0
    assert np.median(widths) < 0.6


def test_figure_shows_cells_and_law_and_keeps_axes_on_the_data():
    fit = fit_hyperparams(scan_sweep(seed=9, n_seeds=2), n_boot=100)
    for source in (fit, fit.to_dict()):
        fig = plot_hyperparams(source)
        assert isinstance(fig, Figure) and len(fig.axes) == 2
    scans, law = fig.axes
    # one star per compute-optimal cell, at its located optimum
    stars = [line for line in scans.get_lines() if line.get_marker() == "*"]
    assert sorted(s.get_xdata()[0] for s in stars) == pytest.approx(
        sorted(fit.cells.loc[fit.cells["compute_optimal"], "lr_opt"]))
    lo, hi = law.get_xlim()
    assert lo >= BUDGETS[0] / 2 and hi <= BUDGETS[-1] * 2
    ylo, yhi = law.get_ylim()
    located = fit.cells["lr_opt"]
    assert ylo >= located.min() / 10 and yhi <= located.max() * 10
    two_d = fit_hyperparams(scan_sweep(seed=10, n_lr=6, n_batch=4), n_boot=50)
    assert len(plot_hyperparams(two_d).axes) == 3


def test_bad_input():
    runs = scan_sweep()
    with pytest.raises(ConfigError, match="lr"):
        fit_hyperparams(runs.drop(columns="lr"))
    with pytest.raises(ConfigError, match="N"):
        fit_hyperparams(runs.drop(columns="N"))
    bad = runs.copy()
    bad.loc[0, "lr"] = -1.0
    with pytest.raises(ConfigError, match="positive"):
        fit_hyperparams(bad)
    with pytest.raises(ConfigError, match="cell_bootstrap"):
        fit_hyperparams(runs, cell_bootstrap="cells")
    edge = scan_sweep(lr_shift={(i, 1): 1.2 for i in range(len(BUDGETS))})  # every compute-optimal scan misses
    with pytest.raises(ConfigError, match="0 usable of 4 budgets.*edge_lr"):
        fit_hyperparams(edge, n_boot=0)


def test_a_scan_at_one_budget_gives_its_cells_and_no_law_in_C():
    fit = fit_hyperparams(scan_sweep(seed=3, n_seeds=2).query(f"budget == {BUDGETS[1]}"), n_boot=100)
    assert fit.lr_opt is None and not any(k.startswith("lr_") for k in fit.params)
    assert fit.predict(1e20) == {"lr_opt": None, "batch_opt": None}
    assert fit.diagnostics["lr_opt"].startswith("not fitted: expected compute-optimal cells at >= 2 budgets")
    best = fit.cells[fit.cells["compute_optimal"].astype(bool)]
    assert len(best) == 1 and best["lr_lo"].item() < best["lr_opt"].item() < best["lr_hi"].item()
    back = FitResult.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert back.lr_opt is None and back.summary() == fit.summary()
    fig = plot_hyperparams(back)  # the scans and the located cell, with the reason in place of the law
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert not [line for line in fig.axes[1].get_lines() if len(line.get_xdata()) > 2]  # no law curve
    assert any("no law in C" in t.get_text() for t in fig.axes[1].texts)


def test_a_law_through_two_budgets_is_fitted_but_not_trusted_to_extrapolate():
    sweep = scan_sweep(seed=3, n_seeds=2)
    two = fit_hyperparams(sweep[sweep["budget"].isin(BUDGETS[:2])], n_boot=100)
    assert two.lr_opt is not None and two.lr_opt.diagnostics["n_distinct_x"] == 2
    assert "fitted through 2 budgets" in two.unreliable["lr_exponent"]  # two points fix a power law exactly
    assert "UNRELIABLE: fitted through 2 budgets" in two.summary()
    back = FitResult.from_dict(json.loads(json.dumps(two.to_dict())))
    assert back.unreliable["lr_exponent"] == two.unreliable["lr_exponent"]
    three = fit_hyperparams(sweep[sweep["budget"].isin(BUDGETS[:3])], n_boot=100)
    assert three.lr_opt.diagnostics["n_distinct_x"] == 3 and "lr_exponent" not in three.unreliable


def _isoflop_runs(lr_of_width) -> pd.DataFrame:
    rows = [(budget, d, lr_of_width(d, budget), "isoflop") for budget in (1e10, 1e11) for d in (8, 10, 13, 17, 22)]
    return pd.DataFrame(rows, columns=["budget", "d_model", "lr", "kind"])


def test_width_lr_exponent_reads_the_sweeps_width_rule_from_its_runs():
    from analysis.hyperparams import width_lr_exponent

    mup = _isoflop_runs(lambda d, c: float(f"{0.04 * 12 / d:.4g}"))  # lr ~ 1/d, rounded as the planner rounds
    assert width_lr_exponent(mup) == pytest.approx(1.0, abs=1e-3)
    half = _isoflop_runs(lambda d, c: 0.3 * d ** -0.5 * (c / 1e10) ** -0.1)  # its own level at every budget
    assert width_lr_exponent(half) == pytest.approx(0.5, abs=1e-3)
    assert width_lr_exponent(_isoflop_runs(lambda d, c: 0.04)) is None  # one LR for every width: nothing to move
    rng = np.random.default_rng(0)
    tuned = _isoflop_runs(lambda d, c: 0.04 * 12 / d * float(np.exp(rng.normal(0, 0.2))))
    assert width_lr_exponent(tuned) is None  # LRs tuned per model follow no rule
    mixed = _isoflop_runs(lambda d, c: 0.04 * (12 / d) ** (1.0 if c < 5e10 else 0.5))
    assert width_lr_exponent(mixed) is None  # two budgets, two rules
    assert width_lr_exponent(mup.drop(columns="d_model")) is None
    scan = pd.concat([mup, mup.assign(lr=mup["lr"] * 2, kind="hparam")])  # LR-scan runs do not blur the rule
    assert width_lr_exponent(scan) == pytest.approx(1.0, abs=1e-3)
