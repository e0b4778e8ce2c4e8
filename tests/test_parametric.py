"""Approach 3 (parametric L(N, D) fit): synthetic recovery, Epoch's Chinchilla refit, bootstrap, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import huber

from analysis import parametric
from analysis.bootstrap import bootstrap_indices
from analysis.parametric import epoch_grid, fit_parametric, huber_objective
from scaling.errors import ConfigError

CHINCHILLA_CSV = Path(__file__).resolve().parent / "data" / "chinchilla_epoch.csv"  # see tests/data/README.md
TRUE = {"E": 1.7, "A": 400.0, "B": 1800.0, "alpha": 0.34, "beta": 0.28}  # alpha != beta on purpose


def true_loss(N, D):
    return TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]


def synthetic_runs(noise: float, seed: int = 0):
    """7 sizes x 6 token counts, off-centre: most runs sit far on the many-tokens side of the compute-optimal line."""
    N, D = (g.ravel() for g in np.meshgrid(np.geomspace(1e7, 2e9, 7), np.geomspace(5e8, 5e11, 6)))
    budgets = np.round(np.log10(6 * N * D))  # one label per decade of compute
    L = true_loss(N, D) * np.exp(noise * np.random.default_rng(seed).standard_normal(N.size))
    return N, D, L, budgets


@pytest.fixture(scope="module")
def noisy_fit():
    N, D, L, budgets = synthetic_runs(noise=0.005)
    return fit_parametric(N, D, L, n_boot=300, seed=1), (N, D, L, budgets)


def se(fit, name: str) -> float:
    """Bootstrap standard deviation of a named draw (failed draws left out)."""
    return float(np.nanstd(fit.draws[name], ddof=1))


@pytest.fixture(scope="module")
def chinchilla():
    df = pd.read_csv(CHINCHILLA_CSV).sort_values("loss").iloc[:-5]  # Epoch drops the 5 highest-loss runs
    N = df["Model Size"].to_numpy()
    D = df["Training FLOP"].to_numpy() / (6 * N)
    L = df["loss"].to_numpy()
    return fit_parametric(N, D, L, n_boot=1000, seed=0), (N, D, L)


# ---- synthetic data -------------------------------------------------------------------------------------------


def test_noise_free_data_recovers_the_law_exactly():
    N, D, _, _ = synthetic_runs(noise=0.0)
    fit = fit_parametric(N, D, true_loss(N, D))
    assert fit.success, fit.message
    for name, value in TRUE.items():
        assert fit.params[name] == pytest.approx(value, rel=1e-4), name
    assert fit.diagnostics["objective"] < 1e-12


def test_noisy_data_recovers_the_law_within_bootstrap_error(noisy_fit):
    # 0.5% multiplicative noise on 42 runs. An estimate more than 4 bootstrap standard errors from the truth would
    # happen by chance well under 1 in 1000 times; the SE bounds stop a useless (huge) SE from passing trivially.
    fit, _ = noisy_fit
    assert fit.success and fit.n_draws == 300 and fit.intervals["E"].n_ok >= 270
    for name in ("E", "alpha", "beta"):
        assert abs(fit.params[name] - TRUE[name]) < 4 * se(fit, name), name
    for name in ("A", "B"):  # multiplicative: compare on the log scale with the SE of log A from the draws
        log_se = np.nanstd(np.log(fit.draws[name]), ddof=1)
        assert abs(np.log(fit.params[name] / TRUE[name])) < 4 * log_se, name
    assert se(fit, "E") < 0.1 and se(fit, "alpha") < 0.05 and se(fit, "beta") < 0.05


def test_intervals_cover_the_truth_and_derived_quantities_follow(noisy_fit):
    fit, _ = noisy_fit
    for name, value in TRUE.items():
        assert fit.intervals[name].contains(value), name
    a_true = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    assert fit.intervals["a"].contains(a_true) and fit.intervals["a"].method == "bootstrap:runs"
    assert fit.params["a"] + fit.params["b"] == pytest.approx(1.0)
    assert fit.params["a"] == pytest.approx(fit.params["beta"] / (fit.params["alpha"] + fit.params["beta"]))
    assert set(fit.draws) == {"E", "A", "B", "alpha", "beta", "a", "b", "G"}
    assert all(v.shape == (300,) for v in fit.draws.values())


def test_optimal_allocation_minimizes_predicted_loss_at_fixed_compute(noisy_fit):
    fit, _ = noisy_fit
    for C in (1e19, 1e22):
        N_opt, D_opt = fit.optimal_allocation(C)
        assert fit.k * N_opt * D_opt == pytest.approx(C, rel=1e-9)
        N = np.geomspace(N_opt / 30, N_opt * 30, 200001)  # brute force along the iso-FLOP line
        N_best = N[np.argmin(fit.predict(N, C / (fit.k * N)))]
        assert N_opt == pytest.approx(N_best, rel=1e-3)
    N_opt, _ = fit.optimal_allocation(np.array([1e20, 1e21]))
    assert np.log10(N_opt[1] / N_opt[0]) == pytest.approx(fit.params["a"])


def test_allocation_uses_flops_per_parameter_per_token_k(noisy_fit):
    fit, _ = noisy_fit
    N6, D6 = fit.optimal_allocation(6e21)
    N8, D8 = dataclasses.replace(fit, k=8.0).optimal_allocation(8e21)
    assert (N8, D8) == pytest.approx((N6, D6))
    assert 6 * N6 * D6 == pytest.approx(6e21)


def test_predict_works_on_arrays(noisy_fit):
    fit, (N, D, _, _) = noisy_fit
    pred = fit.predict(N[:, None], D[None, :5])
    assert pred.shape == (len(N), 5)
    p = fit.params
    assert pred[3, 2] == pytest.approx(p["E"] + p["A"] * N[3] ** -p["alpha"] + p["B"] * D[2] ** -p["beta"])
    assert np.allclose(fit.predict(N, D), true_loss(N, D), rtol=0.02)


def test_to_dict_is_json_with_draws_and_intervals(noisy_fit):
    fit, _ = noisy_fit
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["kind"] == "parametric" and d["k"] == 6.0
    assert set(d["params"]) == {"E", "A", "B", "alpha", "beta", "a", "b", "G"} == set(d["draws"])
    assert len(d["draws"]["E"]) == 300
    assert d["draws"]["E"][0] == fit.draws["E"][0]
    assert set(d["intervals"]) >= {"a", "b", "G", "E"}
    back = parametric.ParametricFit.from_dict(d)
    N, D = np.geomspace(1e8, 1e10, 5), np.geomspace(1e10, 1e12, 5)
    np.testing.assert_array_equal(back.predict_samples(N, D), fit.predict_samples(N, D))
    for key in ("objective", "n_starts", "converged", "huber_delta", "n_points", "rmse_log"):
        assert key in d["diagnostics"], key


# ---- objective -------------------------------------------------------------------------------------------------


def test_objective_is_the_sum_not_the_mean_of_huber(noisy_fit):
    fit, (N, D, L, _) = noisy_fit
    r = np.log(L) - np.log(fit.predict(N, D))
    total = huber(1e-3, r).sum()
    assert fit.diagnostics["objective"] == pytest.approx(total, rel=1e-9)
    assert fit.diagnostics["objective"] > 10 * huber(1e-3, r).mean()
    theta = np.array([np.log(fit.A), np.log(fit.B), np.log(fit.E), fit.alpha, fit.beta])
    assert huber_objective(theta, N, D, L)[0] == pytest.approx(total, rel=1e-9)
    for j in range(5):  # the fit is a minimum of this sum
        for step in (-1e-3, 1e-3):
            moved = theta.copy()
            moved[j] += step
            assert huber_objective(moved, N, D, L)[0] > total


# ---- bootstrap -------------------------------------------------------------------------------------------------


def test_bootstrap_indices_are_seeded_and_resample_whole_groups():
    groups = np.repeat([10, 20, 30, 40], [2, 3, 4, 5])
    first = bootstrap_indices(14, 50, seed=3, groups=groups)
    again = bootstrap_indices(14, 50, seed=3, groups=groups)
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not all(np.array_equal(x, y) for x, y in zip(first, bootstrap_indices(14, 50, seed=4, groups=groups)))
    sizes = {2: 10, 3: 20, 4: 30, 5: 40}
    for idx in first:
        labels, n_rows = np.unique(groups[idx], return_counts=True)
        for label, n in zip(labels, n_rows):  # each drawn group brings all its rows, possibly several times
            assert n % next(k for k, v in sizes.items() if v == label) == 0
    rows = bootstrap_indices(14, 20, seed=0)
    assert all(len(idx) == 14 and idx.min() >= 0 and idx.max() < 14 for idx in rows)
    assert any(len(np.unique(idx)) < 14 for idx in rows)


def test_budget_bootstrap_runs_and_differs_from_run_bootstrap(noisy_fit):
    fit_runs, (N, D, L, budgets) = noisy_fit
    fit = fit_parametric(N, D, L, n_boot=100, seed=1, bootstrap="budgets", budgets=budgets,
                         grid=epoch_grid()[::5])
    assert fit.success and fit.diagnostics["bootstrap"] == "budgets"
    assert fit.n_draws == 100 and fit.intervals["alpha"].n_total == 100
    assert fit.intervals["alpha"].method == "bootstrap:budgets"
    assert se(fit, "alpha") != pytest.approx(se(fit_runs, "alpha"), rel=1e-3)
    with pytest.raises(ConfigError, match="budgets"):
        fit_parametric(N, D, L, n_boot=10, bootstrap="budgets")


# ---- Epoch's Chinchilla data -----------------------------------------------------------------------------------


def test_chinchilla_matches_epoch_refit(chinchilla):
    fit, _ = chinchilla
    assert fit.success, fit.message
    p = fit.params
    assert p["E"] == pytest.approx(1.8172, abs=0.002)
    assert p["alpha"] == pytest.approx(0.3473, abs=0.003)
    assert p["beta"] == pytest.approx(0.3672, abs=0.003)
    assert p["A"] == pytest.approx(477.8, rel=0.03)
    assert p["B"] == pytest.approx(2143, rel=0.10)
    assert 1.01826e-3 < fit.diagnostics["objective"] <= 1.01828e-3
    assert p["a"] == pytest.approx(0.514, abs=0.01)


def test_chinchilla_bootstrap_errors_match_epoch(chinchilla):
    # Epoch (4,000 bootstraps): se A 124.6, B 1293, E 0.03, alpha 0.02, beta 0.02; ours, 1,000: within 1.5x
    fit, _ = chinchilla
    assert fit.n_draws == 1000 and fit.diagnostics["n_boot_failed"] == 0
    for name, epoch_se in {"A": 124.6, "B": 1293, "E": 0.03, "alpha": 0.02, "beta": 0.02}.items():
        assert epoch_se / 1.5 < se(fit, name) < epoch_se * 1.5, (name, se(fit, name))


def test_chinchilla_bootstrap_replicates_match_full_multistart_refits(chinchilla):
    fit, (N, D, L) = chinchilla
    index_sets = bootstrap_indices(len(N), 1000, seed=0)  # the resamples the fit used (none failed)
    for r in (0, 537):
        idx = index_sets[r]
        full = fit_parametric(N[idx], D[idx], L[idx])
        E, A, B, alpha, beta = (fit.draws[name][r] for name in ("E", "A", "B", "alpha", "beta"))
        boot = huber_objective([np.log(A), np.log(B), np.log(E), alpha, beta], N[idx], D[idx], L[idx])[0]
        assert boot <= full.diagnostics["objective"] * (1 + 1e-9)
        assert (E, alpha, beta) == pytest.approx((full.E, full.alpha, full.beta), abs=1e-4)


# ---- large tables: the start search on a stratified subsample -------------------------------------------------


def many_runs(n_runs: int, seed: int = 0):
    """n_runs runs over 8 compute budgets (1e17..1e19 FLOPs), sizes uniform in +-0.6 decades around 20 tokens per
    parameter, 0.5% noise: the shape of a large sweep."""
    rng = np.random.default_rng(seed)
    C = np.geomspace(1e17, 1e19, 8)[np.arange(n_runs) % 8]
    N = np.sqrt(C / 120.0) * 10 ** rng.uniform(-0.6, 0.6, n_runs)
    D = C / (6 * N)
    return N, D, true_loss(N, D) * np.exp(0.005 * rng.standard_normal(n_runs))


def test_stratified_subsample_keeps_each_budgets_share_and_its_range_of_sizes():
    N, D, L = many_runs(4000)
    data = parametric._Data(N, D, L)
    idx = parametric._stratified_subsample(data, 1000)
    assert len(idx) == 1000 and len(np.unique(idx)) == 1000
    budget = np.round(np.log10(6 * N * D), 3)
    for c in np.unique(budget):
        mine, picked = budget == c, budget[idx] == c
        assert abs(picked.sum() - 1000 * mine.mean()) <= 2, c  # every budget keeps its share
        span = np.ptp(np.log10(N[mine]))
        assert np.ptp(np.log10(N[idx][picked])) > 0.97 * span, c  # ... spread over its sizes


def test_large_tables_search_starts_on_a_subsample_and_reach_the_full_search_optimum(monkeypatch):
    N, D, L = many_runs(2400)
    grid = epoch_grid()[::13]
    fast = fit_parametric(N, D, L, grid=grid)
    assert fast.diagnostics["n_search_runs"] == parametric._SUBSAMPLE_RUNS < len(N)
    monkeypatch.setattr(parametric, "_SUBSAMPLE_ABOVE", 10 ** 9)  # search the grid on all runs, as small tables do
    full = fit_parametric(N, D, L, grid=grid)
    assert full.diagnostics["n_search_runs"] == len(N)
    assert fast.success and full.success
    assert fast.diagnostics["objective"] <= full.diagnostics["objective"] * (1 + 1e-10)
    for name in ("E", "A", "B", "alpha", "beta"):
        assert fast.params[name] == pytest.approx(full.params[name], rel=1e-5), name


def test_small_tables_search_the_grid_on_every_run():
    N, D, L, _ = synthetic_runs(noise=0.005)
    assert fit_parametric(N, D, L, grid=epoch_grid()[::50]).diagnostics["n_search_runs"] == len(N)
    assert parametric._chunk_rows(len(N)) == parametric._CHUNK  # evaluated in the same chunks as before


def test_large_table_bootstrap_refits_start_from_the_full_data_optima():
    N, D, L = many_runs(2400, seed=1)
    fit = fit_parametric(N, D, L, grid=epoch_grid()[::7], n_boot=40, seed=0)
    assert fit.n_draws == 40 and fit.diagnostics["n_boot_failed"] == 0
    for name in ("E", "alpha", "beta"):
        iv = fit.intervals[name]
        assert iv.determined and iv.lo < fit.params[name] < iv.hi and iv.hi > iv.lo, name
        assert iv.contains(TRUE[name]), name


# ---- stalls, bounds and designs that cannot identify the law ---------------------------------------------------


def ladder_runs(seed: int = 8):
    """A 20-run ladder (three tokens-per-parameter ratios, 1% noise) whose best fit is E -> 0: the irreducible loss
    (true E = 1.9) is not resolved by these runs."""
    N = np.geomspace(1e7, 5e8, 20)
    D = N * np.tile([5.0, 20.0, 80.0], 7)[:20]
    L = (1.9 + 400 * N ** -0.34 + 1800 * D ** -0.28) * np.exp(0.01 * np.random.default_rng(seed).standard_normal(20))
    return N, D, L


def test_a_start_stalled_at_E_zero_goes_on_to_the_true_optimum():
    # Started at e = log E = -500, the E term has no weight (share ~1e-217), its gradient vanishes, and LM
    # "converges" there with everything else adjusted (objective 5.5e-4). Restarted with E > 0 it reaches E ~ 1.77
    # with a 5x lower objective.
    N, D, L, _ = synthetic_runs(noise=0.005, seed=0)
    fit = fit_parametric(N, D, L, grid=[[np.log(400.0), np.log(1800.0), -500.0, 0.34, 0.28]])
    assert fit.success and "stall" in fit.diagnostics
    assert fit.diagnostics["stalled_E"] < 1e-200
    assert fit.diagnostics["objective"] < fit.diagnostics["stalled_objective"] / 2
    assert fit.params["E"] == pytest.approx(TRUE["E"], abs=0.2) and "E" not in fit.unreliable
    theta = [np.log(fit.A), np.log(fit.B), np.log(fit.E), fit.alpha, fit.beta]
    assert huber_objective(theta, N, D, L)[0] == pytest.approx(fit.diagnostics["objective"], rel=1e-9)


def test_bootstrap_refits_stalled_on_the_bound_are_restarted():
    N, D, L, _ = synthetic_runs(noise=0.005, seed=0)
    data = parametric._Data(N, D, L)
    stalled = np.array([np.log(400.0), np.log(1800.0), -500.0, 0.34, 0.28])
    counts = np.array([np.bincount(i, minlength=len(N)) for i in bootstrap_indices(len(N), 8, seed=2)], float)
    with parametric._one_thread():
        st = parametric._bootstrap_refits(stalled, np.empty((0, 5)), data, 1e-3, counts)
    assert st.escaped.all() and not st.e_stuck.any()
    assert np.all(np.exp(st.theta[:, 2]) > 1.0)


def test_E_at_its_bound_is_reported_as_a_bound_with_an_honest_interval():
    N, D, L = ladder_runs()
    fit = fit_parametric(N, D, L, n_boot=60, seed=0)
    assert fit.success and fit.params["E"] == 0.0
    assert "bound E -> 0" in fit.unreliable["E"] and "bound" in fit.diagnostics["boundary"]
    assert "UNRELIABLE" in fit.summary()
    E = fit.intervals["E"]
    assert E.determined and E.lo == 0.0 and E.hi > 1.0  # not [0, 1e-126]: the data allow E up to the truth
    assert fit.diagnostics["n_boot_E_at_bound"] > 0


@pytest.mark.parametrize("design, message", [
    (lambda N, D: (N, 1e20 / (6 * N)), "more than one compute budget"),  # one budget: E = 2.6e-243 before
    (lambda N, D: (np.full_like(N, 1e8) * np.linspace(1, 1.5, N.size), D), "spread"),
    (lambda N, D: (N, 20 * N), "vary N and D independently"),  # a ladder at 20 tokens per parameter
])
def test_designs_that_cannot_separate_N_and_D_are_refused(design, message):
    N, D, _, _ = synthetic_runs(noise=0.0)
    N, D = design(N, D)
    L = true_loss(N, D) * np.exp(0.005 * np.random.default_rng(0).standard_normal(N.size))
    with pytest.raises(ConfigError, match=message):
        fit_parametric(N, D, L)


def test_residual_bootstrap_and_fallback_for_few_budgets():
    N, D, L, budgets = synthetic_runs(noise=0.005, seed=3)
    grid = epoch_grid()[::5]
    fit = fit_parametric(N, D, L, n_boot=100, seed=0, bootstrap="residual", grid=grid)
    assert fit.intervals["alpha"].method == "bootstrap:residual" and fit.noise["source"].startswith("residuals")
    assert fit.noise["dof"] == len(N) - 5 and 0.002 < fit.noise["sigma"] < 0.01  # true noise sd 0.005
    for name in ("E", "alpha", "beta"):
        assert fit.intervals[name].contains(TRUE[name]), name
    few = np.where(budgets < np.median(budgets), 0, 1)  # two budget labels: too few to resample
    fit2 = fit_parametric(N, D, L, n_boot=50, seed=0, bootstrap="budgets", budgets=few, grid=grid)
    assert fit2.diagnostics["bootstrap"] == "residual" and "2 budgets" in fit2.diagnostics["bootstrap_fallback"]
    assert fit2.intervals["E"].method == "bootstrap:residual"


# ---- bad input and non-convergence -----------------------------------------------------------------------------


@pytest.mark.parametrize("change, field", [
    (lambda N, D, L: (-N, D, L), "N"),
    (lambda N, D, L: (N, np.where(np.arange(len(D)) == 3, np.nan, D), L), "D"),
    (lambda N, D, L: (N, D, np.zeros_like(L)), "L"),
    (lambda N, D, L: (N, D[:-1], L), "same length"),
    (lambda N, D, L: (N[:4], D[:4], L[:4]), "at least 5 runs"),
])
def test_bad_input_raises_config_error(change, field):
    N, D, L, _ = synthetic_runs(noise=0.0)
    with pytest.raises(ConfigError, match=field):
        fit_parametric(*change(N, D, L))


def test_bad_options_raise_config_error():
    N, D, L, _ = synthetic_runs(noise=0.0)
    for kwargs, field in (({"bootstrap": "blocks"}, "bootstrap"), ({"grid": "coarse"}, "grid"),
                          ({"grid": np.zeros((3, 4))}, "grid"), ({"k": 0.0}, "k"), ({"n_boot": -1}, "n_boot")):
        with pytest.raises(ConfigError, match=field):
            fit_parametric(N, D, L, **kwargs)


def test_non_convergence_is_reported(monkeypatch):
    monkeypatch.setattr(parametric, "_MAX_ITER", 2)
    N, D, L, _ = synthetic_runs(noise=0.005)
    fit = fit_parametric(N, D, L, grid=[[0.0, 0.0, -1.0, 2.0, 2.0]], n_boot=20)
    assert not fit.success and not fit.diagnostics["converged"]
    assert "did not converge" in fit.message
    assert fit.n_draws == 0 and "bootstrap_skipped" in fit.diagnostics
    assert not fit.intervals["E"].determined and "did not converge" in fit.intervals["E"].reason
