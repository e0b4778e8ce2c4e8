"""analysis.result: Interval, interval_from_draws, the unreliable rule, and the JSON round trip of every law result."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from analysis.parametric import ParametricFit
from analysis.powerlaw import AllocationFit, PowerLawFit, allocation_fields, fit_power_law, fit_saturating
from analysis.result import (
    ALLOCATION_EXPONENT,
    LOSS_EXPONENT,
    FitResult,
    Interval,
    interval_from_draws,
    unreliable_reasons,
)
from scaling.errors import ConfigError


def _json_round_trip(fit: FitResult) -> FitResult:
    return FitResult.from_dict(json.loads(json.dumps(fit.to_dict())))


# ---- Interval and interval_from_draws ---------------------------------------------------------------------------


def test_interval_from_draws_is_a_percentile_range_with_counts():
    draws = np.random.default_rng(0).normal(2.0, 0.1, 1000)
    iv = interval_from_draws(draws, method="bootstrap:runs")
    assert iv.determined and iv.n_ok == iv.n_total == 1000 and iv.method == "bootstrap:runs"
    assert (iv.lo, iv.hi) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))
    lo, hi = iv  # unpacks as a range
    assert lo == iv.lo and hi == iv.hi
    assert iv.contains(2.0) and not iv.contains(3.0)
    assert "(1000/1000)" in iv.describe()


def test_interval_with_many_failed_draws_is_undetermined_and_says_why():
    draws = np.full(1000, np.nan)
    draws[:44] = np.linspace(0.5, 0.6, 44)  # 956 of 1,000 failed, as in issue 9
    iv = interval_from_draws(draws, method="bootstrap:runs")
    assert not iv.determined and math.isnan(iv.lo) and math.isnan(iv.hi)
    assert (iv.n_ok, iv.n_total) == (44, 1000)
    assert "44/1000" in iv.reason and "44/1000" in iv.describe()


def test_degenerate_draws_never_give_a_zero_width_interval():
    iv = interval_from_draws(np.full(1000, 0.5225), method="bootstrap:runs")
    assert not iv.determined and "no spread" in iv.reason
    assert not interval_from_draws([], method="none").determined
    ok = interval_from_draws(np.r_[np.linspace(1, 2, 95), [np.nan] * 5], method="m")
    assert ok.determined and ok.n_ok == 95  # exactly 95% succeeded: still determined


def test_span_ratio():
    assert Interval(2.0, 40.0, 10, 10, "m").span_ratio() == pytest.approx(20.0)
    assert Interval(0.0, 2.3, 10, 10, "m").span_ratio() == math.inf  # E in [0, 2.3]
    assert math.isnan(Interval(-1.0, 2.0, 10, 10, "m").span_ratio())
    assert math.isnan(Interval.undetermined("why").span_ratio())


def test_interval_round_trip_and_malformed_input():
    for iv in (Interval(1.0, 2.0, 98, 100, "bootstrap:budgets", 0.9), Interval.undetermined("2 budgets", n_total=5)):
        back = Interval.from_dict(json.loads(json.dumps(iv.to_dict())))
        assert back == iv and back.to_dict() == iv.to_dict() and back.determined == iv.determined
    assert Interval.undetermined("a") != Interval.undetermined("b") and len({back, back}) == 1
    good = Interval(1.0, 2.0, 98, 100, "m").to_dict()
    for bad in ([1, 2], {**good, "lo": "1.0"}, {**good, "n_ok": 101}, {**good, "n_ok": -1}, {**good, "level": 2},
                {k: v for k, v in good.items() if k != "method"}, {**good, "n_total": True}):
        with pytest.raises(ConfigError):
            Interval.from_dict(bad)


# ---- the unreliable rule ----------------------------------------------------------------------------------------


def test_unreliable_rule_flags_wide_spans_and_implausible_exponents():
    intervals = {"a": Interval(-11.4, 0.45, 900, 1000, "m"), "b": Interval(0.4, 0.6, 1000, 1000, "m"),
                 "E": Interval(0.0, 2.3, 1000, 1000, "m"), "N": Interval(1e9, 5e9, 1000, 1000, "m"),
                 "alpha": Interval(1.5, 1.9, 1000, 1000, "m")}
    params = {"a": 0.3, "b": 1.7, "E": 0.1, "N": 2e9, "alpha": 1.7}
    out = unreliable_reasons(params, intervals, exponents={"a": ALLOCATION_EXPONENT, "b": ALLOCATION_EXPONENT,
                                                           "alpha": LOSS_EXPONENT}, spans=("E", "N"))
    assert set(out) == {"a", "b", "E"}
    assert "wider than" in out["a"] and "outside [0, 1]" in out["b"] and "spans" in out["E"]
    assert not LOSS_EXPONENT.contains(0.0) and LOSS_EXPONENT.contains(2.0) and str(LOSS_EXPONENT) == "(0, 2]"


# ---- typed results: JSON round trip --------------------------------------------------------------------------------


def _assert_same_intervals(a: FitResult, b: FitResult):
    assert a.intervals.keys() == b.intervals.keys()
    for k in a.intervals:
        assert a.intervals[k].to_dict() == b.intervals[k].to_dict(), k


def test_power_law_round_trip_gives_identical_predictions_and_intervals():
    x = np.geomspace(1e17, 1e20, 6)
    fit = fit_power_law(x, 2 * x ** 0.3 * np.exp(np.random.default_rng(1).normal(0, 0.02, 6)), n_boot=200,
                        exponent_range=ALLOCATION_EXPONENT, name="N_opt(C)", x_name="C", y_name="N")
    back = _json_round_trip(fit)
    assert type(back) is PowerLawFit and back.name == "N_opt(C)" and back.x_name == "C"
    assert back.params == fit.params and back.params is not fit.params
    _assert_same_intervals(fit, back)
    C = np.geomspace(1e18, 1e24, 7)
    np.testing.assert_array_equal(back.predict(C), fit.predict(C))
    np.testing.assert_array_equal(back.predict_samples(C), fit.predict_samples(C))
    np.testing.assert_array_equal(back.predict_interval(C), fit.predict_interval(C))
    assert back.summary() == fit.summary()
    same = fit
    assert fit == same and fit != back  # one policy: identity, and == never raises


def test_saturating_round_trip_keeps_its_power_law_member():
    C = np.geomspace(1e15, 1e21, 10)
    L = (1.8 + 2.0e3 * C ** -0.2) * np.exp(np.random.default_rng(0).normal(0, 0.003, C.size))
    fit = fit_saturating(C, L, n_boot=100)
    back = _json_round_trip(fit)
    assert type(back) is type(fit) and type(back.power_law) is PowerLawFit
    _assert_same_intervals(fit, back)
    np.testing.assert_array_equal(back.predict_samples(C), fit.predict_samples(C))
    np.testing.assert_array_equal(back.power_law.predict_samples(C), fit.power_law.predict_samples(C))


def _parametric_fit() -> ParametricFit:
    rng = np.random.default_rng(3)
    draws = {"E": rng.normal(1.8, 0.05, 50), "A": rng.lognormal(6, 0.2, 50), "B": rng.lognormal(7.5, 0.2, 50),
             "alpha": rng.normal(0.34, 0.02, 50), "beta": rng.normal(0.28, 0.02, 50)}
    draws["alpha"][7] = np.nan  # a failed draw stays in place as NaN
    s = draws["alpha"] + draws["beta"]
    draws |= {"a": draws["beta"] / s, "b": draws["alpha"] / s,
              "G": (draws["alpha"] * draws["A"] / (draws["beta"] * draws["B"])) ** (1 / s)}
    for v in draws.values():
        v[7] = np.nan
    params = {"E": 1.8, "A": 400.0, "B": 1800.0, "alpha": 0.34, "beta": 0.28}
    s0 = params["alpha"] + params["beta"]
    params |= {"a": params["beta"] / s0, "b": params["alpha"] / s0,
               "G": (params["alpha"] * params["A"] / (params["beta"] * params["B"])) ** (1 / s0)}
    intervals = {k: interval_from_draws(v, method="bootstrap:runs") for k, v in draws.items()}
    return ParametricFit(params=params, intervals=intervals, draws=draws, k=6.0,
                         noise={"sigma": 0.01, "dof": 235, "source": "residuals"})


def test_parametric_round_trip_and_allocation():
    fit = _parametric_fit()
    back = _json_round_trip(fit)
    assert type(back) is ParametricFit and back.k == 6.0 and back.noise == fit.noise
    same = fit
    assert fit == same and fit != back and back != _parametric_fit()  # == compares identity and never raises
    _assert_same_intervals(fit, back)
    N, D = np.geomspace(1e8, 1e10, 4), np.geomspace(1e9, 1e12, 4)
    np.testing.assert_array_equal(back.predict(N, D), fit.predict(N, D))
    np.testing.assert_array_equal(back.predict_samples(N, D), fit.predict_samples(N, D))
    Nopt, Dopt = fit.optimal_allocation(1e24)
    assert 6.0 * Nopt * Dopt == pytest.approx(1e24)
    Ns, Ds = back.optimal_allocation_samples([1e22, 1e24])
    assert Ns.shape == Ds.shape == (50, 2) and np.isnan(Ns[7]).all()
    np.testing.assert_allclose(6.0 * Ns[:7] * Ds[:7], np.broadcast_to([1e22, 1e24], (7, 2)), rtol=1e-12)


@dataclass(eq=False, repr=False)
class _Frontier(AllocationFit):
    """A minimal AllocationFit subclass with a table, as approaches 1 and 2 define."""

    kind = "test_frontier"
    table_name = "frontier"
    frontier: pd.DataFrame | None = None


def test_allocation_fit_round_trip_with_table_and_laws():
    rng = np.random.default_rng(5)
    C = np.geomspace(1e18, 1e21, 6)
    laws = [fit_power_law(C, c * C ** e * np.exp(rng.normal(0, 0.03, 6)), n_boot=100, seed=1, name=n)
            for n, c, e in (("N_opt", 0.1, 0.5), ("D_opt", 1.6, 0.5), ("L_opt", 30.0, -0.05))]
    table = pd.DataFrame({"C": C, "N": laws[0].predict(C), "flags": [[] for _ in C]})
    fit = _Frontier(**allocation_fields(*laws), frontier=table, name="frontier")
    assert fit.params["a"] == laws[0].params["exponent"] and set(fit.draws) == set(fit.params)
    back = _json_round_trip(fit)
    assert type(back) is _Frontier and type(back.N_opt) is PowerLawFit
    pd.testing.assert_frame_equal(back.frontier, table)
    for k, v in fit.predict_samples(1e23).items():
        np.testing.assert_array_equal(back.predict_samples(1e23)[k], v)
    assert back.predict(1e23) == fit.predict(1e23)
    _assert_same_intervals(fit, back)


def test_from_dict_refuses_malformed_results():
    good = _parametric_fit().to_dict()
    bad_inputs = [
        [good],  # a list
        {**good, "kind": "no such law"},
        {**good, "kind": None},
        {**good, "params": {**good["params"], "A": -400.0}},  # a negative coefficient
        {**good, "params": {**good["params"], "alpha": "0.34"}},  # a string for a number
        {**good, "params": [1, 2]},
        {**good, "draws": {"E": [1.0, 2.0], "A": [1.0]}},  # draws of different lengths
        {**good, "draws": {"E": "1.0"}},
        {**good, "k": -6},
        {**good, "intervals": {"E": {"lo": 1}}},
        {**good, "success": "yes"},
    ]
    for bad in bad_inputs:
        with pytest.raises(ConfigError):
            FitResult.from_dict(bad)
    with pytest.raises(ConfigError, match="kind"):
        PowerLawFit.from_dict(good)  # a parametric result is not a power law
    law = fit_power_law(np.geomspace(1, 100, 6), np.geomspace(2, 30, 6), n_boot=0).to_dict()
    for bad in ({**law, "x_name": ["C"]}, {**law, "success": 1}):
        with pytest.raises(ConfigError):
            FitResult.from_dict(bad)
    sat = fit_saturating(np.geomspace(1e15, 1e21, 6), 1.8 + 2e3 * np.geomspace(1e15, 1e21, 6) ** -0.2, n_boot=0)
    with pytest.raises(ConfigError, match="power_law"):
        FitResult.from_dict({**sat.to_dict(), "power_law": good})  # a member of the wrong kind


def test_summary_shows_counts_undetermined_and_unreliable():
    fit = fit_power_law([1e18, 1e19], [2.0, 3.0], n_boot=100, exponent_range=ALLOCATION_EXPONENT)
    text = fit.summary()
    assert "undetermined:" in text and "(0/0)" in text and "[0, 0]" not in text
    wild = fit_power_law(np.geomspace(1, 1e3, 8), np.geomspace(1, 1e3, 8) ** 1.7, n_boot=50,
                         exponent_range=ALLOCATION_EXPONENT)
    assert "UNRELIABLE: exponent 1.7 outside [0, 1]" in wild.summary()
    assert repr(wild) == wild.summary()
