"""analysis.isoflop (approach 2) on synthetic isoFLOP grids drawn from a known L(N, D)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from analysis.isoflop import IsoflopFit, fit_isoflop, parabola_batch
from analysis.result import FitResult
from analysis.simulate import Surface, SweepDesign, simulate_sweep
from scaling.errors import ConfigError

# Chinchilla-like law with alpha != beta, so the isoFLOP curve is not a parabola in log N.
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
A_TRUE = BETA / (ALPHA + BETA)  # N_opt ∝ C^a with a = beta / (alpha + beta) ≈ 0.4516
BUDGETS = np.geomspace(1e17, 1e21, 5)
OFFSETS = (0.3, -0.25, 0.1, -0.35, 0.2)  # grid centres off the true optimum by this many decades of N


def loss(N, D):
    return E + A * N ** -ALPHA + B * D ** -BETA


def exact_log10_nopt(C):
    """The isoFLOP minimiser found numerically (C = 6ND)."""
    res = minimize_scalar(lambda x: loss(10 ** x, C / (6 * 10 ** x)), bounds=(3, 14), method="bounded",
                          options={"xatol": 1e-10})
    return res.x


def isoflop_grid(noise, seed=0, offsets=OFFSETS, budgets=BUDGETS, half_width=0.8, n=9):
    rng = np.random.default_rng(seed)
    rows = []
    for C, off in zip(budgets, offsets):
        for x in exact_log10_nopt(C) + off + np.linspace(-half_width, half_width, n):
            N = 10 ** x
            D = C / (6 * N)
            rows.append({"N": N, "D": D, "C": C, "loss": loss(N, D) * np.exp(rng.normal(0, noise))})
    return pd.DataFrame(rows)


def test_noiseless_offcentre_grids_match_exact_minimiser():
    fit = fit_isoflop(isoflop_grid(0.0), n_boot=0)
    exact = np.array([exact_log10_nopt(C) for C in BUDGETS])
    err = np.log10(fit.budgets["N_opt"].to_numpy()) - exact
    # The parabola is only approximate for alpha != beta; with grids +-0.8 decades wide and off-centre by up to
    # 0.35 decades the vertex bias is <= 0.01 decades (measured), so 0.02 leaves a 2x margin.
    assert np.abs(err).max() < 0.02
    assert not np.allclose(err, 0, atol=1e-4)  # the approximation is visible: this is not a tautology
    assert fit.params["a"] == pytest.approx(A_TRUE, abs=0.005)
    assert fit.params["a"] + fit.params["b"] == pytest.approx(1.0, abs=1e-6)  # C = 6ND exactly on each grid
    # n_boot = 0: no interval is faked; every one says why it is missing
    assert all(not iv.determined and "n_boot = 0" in iv.reason for iv in fit.intervals.values())


def test_noisy_recovery_with_residual_bootstrap():
    fit = fit_isoflop(isoflop_grid(0.003, seed=0), n_boot=1000, seed=0)
    # 0.3% multiplicative noise, no replicates: sigma comes from the parabolas' residuals (45 points - 15 coefficients)
    assert fit.noise["source"] == "residuals" and fit.noise["dof"] == 30
    assert fit.noise["sigma"] == pytest.approx(0.003, rel=0.5)
    assert fit.diagnostics["bootstrap"] == "bootstrap:residual"
    assert fit.params["a"] == pytest.approx(A_TRUE, abs=0.02)
    iv = fit.intervals["a"]
    assert iv.determined and iv.lo < A_TRUE < iv.hi and iv.method == "bootstrap:residual"
    assert (iv.n_ok, iv.n_total) == (1000, 1000)
    assert fit.draws["a"].shape == (1000,) and fit.N_opt.draws["exponent"].shape == (1000,)
    table = fit.budgets
    assert (table["N_opt_lo"] < table["N_opt"]).all() and (table["N_opt"] < table["N_opt_hi"]).all()
    assert table["used"].all()
    pred = fit.predict(1e23)
    assert np.log10(pred["N_opt"]) == pytest.approx(exact_log10_nopt(1e23), abs=0.1)
    assert pred["D_opt"] * pred["N_opt"] * 6 == pytest.approx(1e23, rel=0.1)


def test_replicates_are_averaged_and_give_sigma_with_dof():
    design = SweepDesign(n_budgets=4, n_per_budget=5, noise=0.006, n_seeds=3)
    df = simulate_sweep(design, seed=4)
    fit = fit_isoflop(df, n_boot=200, seed=0)
    assert fit.noise["source"] == "replicates"
    assert fit.noise["dof"] == 4 * 5 * (3 - 1)  # 20 points, 3 seeds each
    assert fit.noise["sigma"] == pytest.approx(0.006, rel=0.3)
    assert (fit.budgets["n_runs"] == 15).all() and (fit.budgets["n_points"] == 5).all()
    one_seed = fit_isoflop(df[df["seed"] == 0], n_boot=200, seed=0)
    assert one_seed.noise["source"] == "residuals"


def test_budget_bootstrap_and_window_options():
    df = isoflop_grid(0.003, seed=1)
    fit = fit_isoflop(df, n_boot=300, bootstrap="budgets", window=0.6)
    assert fit.diagnostics["bootstrap"] == "bootstrap:budgets"
    assert fit.intervals["a"].determined
    assert (fit.budgets["n_fit"] < fit.budgets["n_points"]).all()  # the window dropped far points
    assert fit.params["a"] == pytest.approx(A_TRUE, abs=0.03)
    runs = fit_isoflop(df, n_boot=300, bootstrap="runs")
    assert runs.intervals["a"].method == "bootstrap:runs" and runs.intervals["a"].determined
    with pytest.raises(ConfigError, match="bootstrap"):
        fit_isoflop(df, bootstrap="seeds")


def test_three_points_per_budget_never_fakes_an_interval():
    # 3 models, 1 seed: no replicates, no residual dof, runs resampling degenerate; 3 budgets: budgets degenerate
    df = simulate_sweep(SweepDesign(n_budgets=3, span=10, n_per_budget=3, half_width=0.6, noise=0.004), seed=0)
    fit = fit_isoflop(df, n_boot=200)
    assert fit.noise == {} and "no replicates" in fit.diagnostics["noise"]
    for iv in fit.intervals.values():
        assert not iv.determined and "degenerate" in iv.reason
    assert math.isnan(fit.intervals["a"].lo)
    assert "undetermined" in fit.summary()
    # 5 budgets: resampling budgets is possible and used
    df5 = simulate_sweep(SweepDesign(n_budgets=5, n_per_budget=3, half_width=0.6, noise=0.004), seed=0)
    fit5 = fit_isoflop(df5, n_boot=200)
    assert fit5.intervals["a"].method == "bootstrap:budgets" and fit5.intervals["a"].determined


def test_far_vertex_draws_fail_and_are_counted():
    # 3 models on a narrow grid with 2% noise: many draws put the vertex far outside the grid. Every budget's own
    # interval says how many of its draws succeeded; with fewer than 2 determined vertices the laws are undetermined.
    design = SweepDesign(n_budgets=3, span=10, n_per_budget=3, half_width=0.25, noise=0.02, n_seeds=2)
    fit = fit_isoflop(simulate_sweep(design, seed=2), n_boot=300)
    b = fit.budgets
    assert (b["n_total"] == 300).all() and (b["n_ok"] < 300).all()
    weak = b["n_ok"] < 0.9 * b["n_total"]
    assert weak.all() and all("resamples succeeded" in r for r in b.loc[weak, "N_opt_reason"])
    iv = fit.intervals["a"]
    assert not iv.determined and "determined vertex interval" in iv.reason
    assert "determined vertex interval" in fit.diagnostics["bootstrap_reason"]


def _sweep_with_one_weak_budget() -> tuple[pd.DataFrame, float]:
    """A 5-budget sweep whose middle budget's grid is 0.1 decade wide (its vertex is poorly located)."""
    good = SweepDesign(n_budgets=5, span=100, n_per_budget=5, half_width=0.5, noise=0.003)
    df, narrow = simulate_sweep(good, seed=3), simulate_sweep(good.with_(half_width=0.1), seed=4)
    weak_budget = float(good.budgets[2])
    return pd.concat([df[df["budget"] != weak_budget], narrow[narrow["budget"] == weak_budget]]), weak_budget


def test_budget_with_undetermined_vertex_is_flagged_and_left_out_of_the_laws():
    df, weak_budget = _sweep_with_one_weak_budget()
    fit = fit_isoflop(df, n_boot=300, seed=0)
    b = fit.budgets.set_index("budget")
    assert b.loc[weak_budget, "flags"] == ["vertex_undetermined"] and not b.loc[weak_budget, "used"]
    assert b.loc[weak_budget, "n_ok"] < 0.9 * 300 and "resamples succeeded" in b.loc[weak_budget, "N_opt_reason"]
    assert f"budget {weak_budget:.4g}" in fit.unreliable
    assert fit.diagnostics["n_used"] == 4 and "bootstrap_reason" not in fit.diagnostics
    # the laws come from the 4 other budgets: determined, all their draws counted, and a point estimate equal to the
    # fit without that budget
    iv = fit.intervals["a"]
    assert iv.determined and iv.n_total == 300 and iv.n_ok >= 0.9 * 300 and iv.hi > iv.lo
    alone = fit_isoflop(df[df["budget"] != weak_budget], n_boot=0)
    assert fit.params["a"] == pytest.approx(alone.params["a"], rel=1e-12)
    assert fit.L_frontier is not None and fit.L_frontier.intervals["E"].n_total == 300


def test_a_failed_vertex_draw_leaves_only_that_budget_out_of_the_draw():
    # A budget whose vertex draws mostly succeed keeps its failed draws as NaN; the laws' draws refit without it
    # there instead of failing: with >= 4 budgets whose draws succeed >= 90% of the time, every row keeps >= 2.
    design = SweepDesign(n_budgets=5, span=100, n_per_budget=5, half_width=0.5, max_offset=0.25, noise=0.01)
    for seed in range(40):
        fit = fit_isoflop(simulate_sweep(design, seed=seed), n_boot=300, seed=seed)
        b = fit.budgets[fit.budgets["used"]]
        if (b["n_ok"] < 300).sum() >= 2:
            break
    else:
        pytest.fail("no sweep with two budgets that have failed vertex draws")
    assert len(b) >= 4 and (b["n_ok"] >= 0.9 * 300).all()
    assert fit.intervals["a"].n_ok == 300 and fit.L_frontier.intervals["E"].n_ok == 300


def test_edge_minimum_is_flagged_and_excluded():
    # budget 3's grid lies entirely above its optimum (shifted by +1.2 decades): its vertex is below the grid
    offsets = (0.1, -0.1, 1.2, 0.0, 0.15)
    fit = fit_isoflop(isoflop_grid(0.001, offsets=offsets), n_boot=100)
    flags = list(fit.budgets["flags"])
    assert "edge_minimum" in flags[2] or "not_convex" in flags[2]
    assert all(not f for i, f in enumerate(flags) if i != 2)
    assert fit.diagnostics["n_used"] == 4 and not fit.budgets["used"][2]
    assert any(k.startswith("budget ") for k in fit.unreliable)
    assert fit.params["a"] == pytest.approx(A_TRUE, abs=0.02)  # the flagged budget does not bias the law


def test_ties_and_tiny_changes_do_not_flag_or_move_a():
    # Three runs tied at the lowest loss, and a 1e-6 change in one loss: same flags, a moves by < 1e-4
    df = isoflop_grid(0.0, offsets=(0, 0, 0, 0, 0), n=7, half_width=0.6)
    first = df["C"] == BUDGETS[1]
    lowest = df.loc[first, "loss"].nsmallest(3).index
    df.loc[lowest, "loss"] = df.loc[lowest, "loss"].min()
    fit = fit_isoflop(df, n_boot=0)
    assert all(f == [] for f in fit.budgets["flags"])
    nudged = df.copy()
    nudged.loc[lowest[0], "loss"] += 1e-6
    fit2 = fit_isoflop(nudged, n_boot=0)
    assert all(f == [] for f in fit2.budgets["flags"])
    assert abs(fit2.params["a"] - fit.params["a"]) < 1e-4
    assert fit.params["a"] == pytest.approx(A_TRUE, abs=0.02)


def test_interior_minimum_is_not_flagged():
    fit = fit_isoflop(isoflop_grid(0.001, offsets=(0, 0, 0, 0, 0)), n_boot=50)
    assert all(f == [] for f in fit.budgets["flags"])


def test_too_few_points_on_a_side():
    # With min_points_per_side=4, an optimum 0.5 decades off the centre of a 9-point grid has only 2 points on its
    # near side; centred budgets keep 4.
    offsets = (0.0, 0.0, -0.5, 0.0, 0.0)
    fit = fit_isoflop(isoflop_grid(0.0, offsets=offsets), n_boot=0, min_points_per_side=4)
    flags = list(fit.budgets["flags"])
    assert "too_few_points" in flags[2]
    assert sum(bool(f) for f in flags) == 1


def test_errors_for_single_budget_and_no_usable_budgets():
    df = isoflop_grid(0.0)
    with pytest.raises(ConfigError, match="at least 2 distinct FLOP budgets"):
        fit_isoflop(df[df["C"] == BUDGETS[0]])
    with pytest.raises(ConfigError, match="at least 2 budgets"):
        fit_isoflop(isoflop_grid(0.0, offsets=(1.5, 1.5, 1.5, 0.0, 1.5)), n_boot=0)
    with pytest.raises(ConfigError, match="loss"):
        fit_isoflop(df.drop(columns="loss"))
    with pytest.raises(ConfigError, match="n_boot"):
        fit_isoflop(df, n_boot=-1)


def test_loss_frontier_extrapolates_with_the_irreducible_loss():
    s = Surface()
    design = SweepDesign(n_budgets=5, span=100, n_per_budget=7, half_width=0.6, noise=0.002, n_seeds=2)
    fit = fit_isoflop(simulate_sweep(design, s, seed=5), n_boot=400)
    assert fit.L_frontier is not None and fit.L_frontier.params["E"] == pytest.approx(s.E, abs=0.3)
    C = 100 * design.budgets[-1]
    truth = float(s.optimum(C)["L_opt"])
    # the pure power law in C has no floor and lands far below; predict() uses the frontier
    assert fit.L_opt.predict(C) < 0.95 * truth
    assert fit.predict(C)["L_opt"] == pytest.approx(truth, rel=0.03)
    lo, hi = np.nanpercentile(fit.predict_samples(C)["L_opt"], [2.5, 97.5])
    assert lo < truth < hi


def test_round_trip_summary_and_table():
    fit = fit_isoflop(isoflop_grid(0.002), n_boot=100)
    text = fit.summary()
    assert "params" in text and "tokens" in text and "FLOPs" in text and "(100/100)" in text
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["kind"] == "isoflop" and d["params"]["a"] == pytest.approx(fit.params["a"])
    assert len(d["draws"]["a"]) == 100 and d["intervals"]["a"]["n_total"] == 100
    back = FitResult.from_dict(d)
    assert isinstance(back, IsoflopFit)
    assert back.predict(1e23)["N_opt"] == pytest.approx(fit.predict(1e23)["N_opt"])
    assert back.predict(1e23)["L_opt"] == pytest.approx(fit.predict(1e23)["L_opt"])
    np.testing.assert_allclose(back.predict_samples(1e23)["N_opt"], fit.predict_samples(1e23)["N_opt"])
    assert back.intervals["a"] == fit.intervals["a"]
    assert len(back.budgets) == 5 and back.noise == fit.noise
    # the stored parabola (numpy.polyval order on log10 N) passes through the vertex
    b0 = d["budgets"][0]
    assert np.polyval(b0["parabola_N"], np.log10(b0["N_opt"])) == pytest.approx(b0["L_opt"], rel=1e-6)


def test_parabola_batch_counts_distinct_x_and_scales_linearly():
    x = np.array([-1.0, -1.0, 0.0, 0.0, 1.0])
    y = 1 + x ** 2
    W = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [0, 0, 1, 1, 1.0]])
    c = parabola_batch(x, y, W)
    np.testing.assert_allclose(c[0], [1, 0, 1], atol=1e-12)
    assert np.isnan(c[1]).all() and np.isnan(c[2]).all()  # only 2 distinct x carry weight
    # 300k points: an n x n one-hot (the old distinct count) would need 720 GB; the sorted reduction does not
    rng = np.random.default_rng(0)
    big = rng.uniform(-1, 1, 300_000)
    coef = parabola_batch(big, 2 + 0.5 * big + 3 * big ** 2, np.ones((2, big.size)))
    np.testing.assert_allclose(coef, [[2, 0.5, 3]] * 2, atol=1e-8)


def test_parabola_bias_is_added_only_when_the_cubic_sees_it():
    # +-1.2 decades, 0.5 decades off centre, tiny noise: the parabola is a poor local model and the cubic shows it
    wide = SweepDesign(n_budgets=4, n_per_budget=9, half_width=1.2, max_offset=0.5, noise=0.0005, n_seeds=2)
    fit = fit_isoflop(simulate_sweep(wide, seed=1), n_boot=300)
    assert (fit.budgets["bias_sd"] > 0).any()
    # a narrow centred grid with ordinary noise: no budget gets the term
    narrow = SweepDesign(n_budgets=4, n_per_budget=7, half_width=0.4, noise=0.005, n_seeds=2)
    fit = fit_isoflop(simulate_sweep(narrow, seed=1), n_boot=300)
    assert (fit.budgets["bias_sd"] == 0).all()


def test_a_budget_scattering_beyond_the_noise_model_gets_that_much_more_noise():
    # replicates put sigma at 0.3%, but the smallest budget's points zig-zag by +-1.2% (both seeds of a point move
    # together, so no replicate sees it): they scatter about the parabola far beyond the noise model, and that
    # budget's draws get sqrt(chi2 / dof) x sigma (expected ~ 1.2 / 0.3 x sqrt(2 seeds) ~ 5.7)
    design = SweepDesign(n_budgets=4, n_per_budget=7, half_width=0.5, noise=0.003, n_seeds=2)
    runs = simulate_sweep(design, seed=3)
    smallest = runs["budget"] == runs["budget"].min()
    rank = runs.loc[smallest, "N"].rank(method="dense").astype(int)
    noisy = runs.copy()
    noisy.loc[smallest, "loss"] *= 1 + 0.012 * np.where(rank % 2 == 0, 1.0, -1.0)
    before, after = fit_isoflop(runs, n_boot=400, seed=1), fit_isoflop(noisy, n_boot=400, seed=1)
    assert (before.budgets["noise_scale"] == 1).all()
    scale = after.budgets.set_index("budget")["noise_scale"]
    assert scale.iloc[0] > 3 and (scale.iloc[1:] == 1).all()
    width = {name: (f.budgets["N_opt_hi"] / f.budgets["N_opt_lo"]).iloc[0] for name, f in (("before", before),
                                                                                         ("after", after))}
    assert width["after"] > 1.5 * width["before"]
    assert after.noise["sigma"] == pytest.approx(before.noise["sigma"])  # sigma itself is the replicates'


def test_a_frontier_that_falls_faster_at_larger_budgets_is_detected():
    """Chinchilla-like optimal losses decelerate (an irreducible loss): not flagged. Bending them so that they fall
    faster at larger budgets, as tiny byte-level models do (d ln L / d ln C from -0.05 to -0.10 in the demo), is
    detected, and the recommendation's expected loss is marked unreliable because no loss law can follow it."""
    from analysis.recommend import recommend
    from analysis.report import fit_all

    design = SweepDesign(n_budgets=4, span=30, n_per_budget=6, half_width=0.5, noise=0.004, n_seeds=2)
    df = simulate_sweep(design, seed=3)
    plain = fit_isoflop(df, n_boot=400).diagnostics["frontier_bend"]
    assert plain["accelerates"] is False and len(plain["local_slopes"]) == 3
    x = np.log(df["budget"].to_numpy(float) / np.sqrt(design.budgets[0] * design.budgets[-1]))
    bent_df = df.assign(loss=df["loss"] * np.exp(-0.02 * x ** 2))  # ln L gains -0.02 (ln C)^2: accelerates
    bent_fit = fit_isoflop(bent_df, n_boot=400)
    bent = bent_fit.diagnostics["frontier_bend"]
    assert any("falls faster at larger budgets" in line for line in bent_fit.table_lines())
    again = FitResult.from_dict(json.loads(json.dumps(bent_fit.to_dict())))
    assert again.diagnostics["frontier_bend"] == bent
    assert bent["accelerates"] is True and bent["curvature_interval"][1] < 0
    assert bent["local_slopes"][-1] < bent["local_slopes"][0] < 0
    assert bent["curvature"] == pytest.approx(plain["curvature"] - 0.02, abs=0.005)
    marked = recommend(fit_all(bent_df, laws=["isoflop", "loss"], n_boot=100, backtest=False), 100 * design.budgets[-1])
    assert "fall faster at larger budgets" in marked.unreliable["expected_loss"]
    clean = recommend(fit_all(df, laws=["isoflop", "loss"], n_boot=100, backtest=False), 100 * design.budgets[-1])
    assert "fall faster" not in clean.unreliable.get("expected_loss", "")


def test_frontier_curvature_interval_covers_the_truth_on_simulated_sweeps():
    """Coverage of the curvature's 95% interval over 60 simulated sweeps (Chinchilla surface, 0.4% noise, replicated):
    near 95% (0.94 over 150 sweeps when measured), and a decelerating truth is never called accelerating."""
    from analysis.simulate import Surface

    s = Surface()
    design = SweepDesign(n_budgets=4, span=30, n_per_budget=6, half_width=0.5, noise=0.004, n_seeds=2)
    C = np.asarray(design.budgets, float)
    x = np.log(C) - np.log(C).mean()
    X = np.column_stack([np.ones_like(x), x, x ** 2])
    truth = np.linalg.lstsq(X, np.log([float(s.optimum(c)["L_opt"]) for c in C]), rcond=None)[0][2]
    hits = flagged = 0
    for seed in range(60):
        bend = fit_isoflop(simulate_sweep(design, s, seed=1000 + seed), n_boot=300, seed=seed).diagnostics[
            "frontier_bend"]
        lo, hi = bend["curvature_interval"]
        hits += lo <= truth <= hi
        flagged += bend["accelerates"]
    assert truth > 0 and flagged == 0
    assert 0.85 <= hits / 60 <= 59 / 60  # neither too narrow nor (every interval covering) too wide
