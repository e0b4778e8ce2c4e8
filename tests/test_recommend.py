"""recommend(): values with intervals from the laws' own draws, fallbacks for unreliable laws, warnings when two
predictions disagree, shapes only from a known family / vocab, and bounded work at absurd budgets."""

import json
import math
import signal

import numpy as np
import pytest

from analysis.fitreport import FitReport
from analysis.recommend import DEEPSEEK_LR, Recommendation, recommend
from analysis.report import _fixed_ladder_options, _result_md, fit_all
from analysis.result import Interval
from analysis.simulate import synthetic_runs, true_optimal_n
from scaling.errors import ConfigError
from scaling.ladder import MAX_PARAMS

KEYS = ("N", "D", "batch_size_tokens", "lr", "steps", "warmup_steps", "expected_loss")


@pytest.fixture(scope="module")
def report():
    return fit_all(synthetic_runs(hparam_grid=(5, 3), seed=0), n_boot=60, seed=0, backtest=False)


@pytest.fixture(scope="module")
def size_report():
    """Approaches 2 and 3 and L(C), no hyperparameter laws."""
    return fit_all(synthetic_runs(seed=4), laws=["isoflop", "loss", "parametric"], n_boot=60, backtest=False)


def _edited(report: FitReport, edit) -> FitReport:
    """The report through fit.json with `edit(d)` applied to the dict (as a user's file could be)."""
    d = json.loads(json.dumps(report.to_dict()))
    edit(d)
    return FitReport.from_dict(d)


def test_recommendation_is_finite_with_intervals_and_near_the_true_law(report):
    rec = recommend(report, 1e19)
    for key in KEYS:
        iv = rec.intervals[key]
        assert isinstance(iv, Interval) and math.isfinite(rec.params[key]), key
        assert iv.determined and iv.n_ok >= 0.9 * iv.n_total and iv.n_total == 60, (key, iv)
    assert rec.params["N"] == pytest.approx(true_optimal_n(1e19), rel=0.15)
    assert 6 * rec.params["N"] * rec.params["D"] == pytest.approx(1e19)
    assert rec.params["steps"] * rec.params["batch_size_tokens"] >= rec.params["D"]
    assert rec.params["batch_size_tokens"] % 256 == 0  # whole sequences of seq_len 256
    assert rec.params["d_model"] % rec.params["n_heads"] == 0
    # the synthetic sweep's lr optimum is 0.94 C^-0.125: the fitted law, not the DeepSeek fallback, is used
    assert rec.sources["lr"] == "hyperparams.lr_opt" and "lr" not in rec.fallbacks
    assert rec.params["lr"] == pytest.approx(0.94 * 1e19 ** -0.125, rel=0.3)
    assert rec.extrapolation_factor == pytest.approx(100.0)
    assert not any("extrapolation" in w for w in rec.warnings)


def test_n_and_expected_loss_are_the_laws_own_predictions(size_report):
    rec = recommend(size_report, 3e18)
    iso, sat, par = (size_report.fits[k] for k in ("isoflop", "loss_vs_compute", "parametric"))
    assert rec.params["N"] == pytest.approx(float(iso.N_opt.predict(3e18)), rel=1e-12)
    assert rec.params["expected_loss"] == pytest.approx(float(sat.predict(3e18)), rel=1e-12)
    assert rec.params["expected_loss_parametric"] == pytest.approx(
        float(par.predict(rec.params["N"], rec.params["D"])), rel=1e-12)
    lo, hi = np.percentile(iso.N_opt.predict_samples(3e18), [2.5, 97.5])
    assert (rec.intervals["N"].lo, rec.intervals["N"].hi) == pytest.approx((lo, hi), rel=1e-9)


def test_reloaded_fit_json_gives_the_same_recommendation(report, tmp_path):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(report.to_dict(), allow_nan=False))
    direct = recommend(report, 3e18)
    for source in (json.loads(path.read_text()), path):
        again = recommend(source, 3e18)
        for key in KEYS:
            assert again.params[key] == pytest.approx(direct.params[key], rel=1e-6), key
            assert tuple(again.intervals[key]) == pytest.approx(tuple(direct.intervals[key]), rel=1e-3), key


def test_recommendation_round_trips(report):
    rec = recommend(report, 1e19)
    again = Recommendation.from_dict(json.loads(json.dumps(rec.to_dict(), allow_nan=False)))
    assert again.params == rec.params and again.intervals == rec.intervals and again.model == rec.model
    assert again.summary() == rec.summary()
    with pytest.raises(ConfigError, match="recommendation"):
        Recommendation.from_dict({"params": {}, "budget": "lots"})


def test_extrapolation_and_below_range_warnings(size_report):
    assert any(w.startswith("large extrapolation") for w in recommend(size_report, 1e20).warnings)
    assert any(w.startswith("very strong extrapolation") for w in recommend(size_report, 1e22).warnings)
    below = recommend(size_report, 1e13).warnings
    assert any("below the fitted range" in w for w in below)
    assert not any("below the fitted range" in w for w in recommend(size_report, 1e16).warnings)


def test_published_fallbacks_without_hyperparameter_laws(size_report):
    rec = recommend(size_report, 1e18)
    assert rec.params["lr"] == pytest.approx(DEEPSEEK_LR[0] * 1e18 ** DEEPSEEK_LR[1])
    assert "DeepSeek" in rec.sources["lr"] and "DeepSeek" in rec.fallbacks["lr"]
    assert "DeepSeek" in rec.fallbacks["batch_size_tokens"]
    # a published law has no interval: it says so, never a point or [x, x]
    assert not rec.intervals["lr"].determined and "published" in rec.intervals["lr"].reason
    assert "undetermined: published law" in rec.summary()
    assert rec.sources["N"].startswith("isoflop")


def test_unreliable_lr_law_falls_back_to_the_measured_optimum_then_the_published_law(report):
    def mark(d):
        d["hyperparams"]["unreliable"]["lr_exponent"] = "exponent 1.7 outside [-1, 1]"

    rec = recommend(_edited(report, mark), 1e19)
    cells = report.fits["hyperparams"].cells
    top = cells[cells["compute_optimal"].astype(bool)].sort_values("C").iloc[-1]
    # the scanned optimum at the largest budget, held constant, with that cell's own interval
    assert rec.sources["lr"].startswith(f"lr_opt measured at C = {top['C']:.3g}")
    assert rec.params["lr"] == pytest.approx(top["lr_opt"])
    assert (rec.intervals["lr"].lo, rec.intervals["lr"].hi) == pytest.approx((top["lr_lo"], top["lr_hi"]))
    assert "instead of hyperparams.lr_opt" in rec.fallbacks["lr"] and "1.7 outside" in rec.fallbacks["lr"]
    assert any(w.startswith("lr: held at the optimum measured") for w in rec.warnings)
    assert rec.sources["batch_size_tokens"] == "hyperparams.batch_opt"  # the batch law is still trusted

    def no_cell_interval(d):
        mark(d)
        for cell in d["hyperparams"]["cells"]:
            cell["lr_lo"] = cell["lr_hi"] = None

    rec = recommend(_edited(report, no_cell_interval), 1e19)
    assert "DeepSeek" in rec.sources["lr"] and "instead of hyperparams.lr_opt" in rec.fallbacks["lr"]


def test_unreliable_approach_2_falls_back_to_approach_3(size_report):
    def mark(d):
        d["isoflop"]["unreliable"]["a"] = "exponent 1.7 outside [0, 1]"

    rec = recommend(_edited(size_report, mark), 1e19)
    assert rec.sources["N"].startswith("parametric allocation (approach 3)")
    assert "instead of isoflop.N_opt (approach 2)" in rec.fallbacks["N"] and "1.7 outside" in rec.fallbacks["N"]
    assert rec.params["N"] == pytest.approx(float(size_report.fits["parametric"].optimal_allocation(1e19)[0]))
    assert "fallback for N" in rec.summary()


def test_a_wide_n_interval_at_the_budget_is_unreliable_and_replaced(size_report):
    def widen(d):  # approach 2's exponent draws spread by +-0.2: at 1e19 FLOPs N spans far more than 10x
        draws = d["isoflop"]["N_opt"]["draws"]
        rng = np.random.default_rng(0)
        draws["exponent"] = [e + 0.2 * rng.standard_normal() for e in draws["exponent"]]

    rec = recommend(_edited(size_report, widen), 1e19)
    assert rec.sources["N"].startswith("parametric")
    assert "spans" in rec.fallbacks["N"]
    assert "N" not in rec.unreliable  # approach 3's own interval is narrow
    only_iso = fit_all(synthetic_runs(seed=4), laws=["isoflop"], n_boot=40, backtest=False)
    rec = recommend(_edited(only_iso, widen), 1e19)  # no fallback: the quantity itself is marked
    assert "spans" in rec.unreliable["N"] and "UNRELIABLE" in rec.summary()
    assert rec.intervals["N"].span_ratio() > 10


def test_an_approach_whose_draws_mostly_failed_is_passed_over(size_report):
    def fail(d):  # half of approach 2's draws failed: its interval is undetermined, not a narrow range
        draws = d["isoflop"]["N_opt"]["draws"]
        draws["coef"] = [None if i % 2 else c for i, c in enumerate(draws["coef"])]

    rec = recommend(_edited(size_report, fail), 1e19)
    assert rec.sources["N"].startswith("parametric")
    assert "undetermined" in rec.fallbacks["N"] and "resamples succeeded" in rec.fallbacks["N"]


def test_disagreeing_loss_predictions_are_warned_about(size_report):
    rec = recommend(size_report, 1e18)
    assert not any("disagree" in w for w in rec.warnings)

    def shift(d):  # L(C) moved up by 0.5 nats: far outside both intervals
        sat = d["loss_vs_compute"]
        sat["params"]["E"] += 0.5
        sat["draws"]["E"] = [e + 0.5 for e in sat["draws"]["E"]]

    rec = recommend(_edited(size_report, shift), 1e18)
    warning = next(w for w in rec.warnings if "disagree beyond their intervals" in w)
    assert warning.startswith("expected loss: L(C)") and "parametric L(N, D)" in warning


def test_disagreeing_n_opt_between_approaches_is_warned_about(size_report):
    def scale(d):  # approach 2's N_opt law 3x larger than approach 3's allocation
        law = d["isoflop"]["N_opt"]
        law["params"]["coef"] *= 3
        law["draws"]["coef"] = [c * 3 for c in law["draws"]["coef"]]

    rec = recommend(_edited(size_report, scale), 1e18)
    assert any(w.startswith("N_opt: isoflop.N_opt (approach 2)") and "disagree" in w for w in rec.warnings)


def test_parametric_only_fit_allocates_by_approach_3():
    fit = fit_all(synthetic_runs(seed=5), laws=["parametric"], n_boot=50, backtest=False)
    rec = recommend(fit.to_dict(), 1e18)
    assert rec.sources["N"].startswith("parametric")
    assert rec.params["N"] == pytest.approx(true_optimal_n(1e18), rel=0.25)
    assert rec.sources["expected_loss"].startswith("parametric")
    assert rec.intervals["expected_loss"].determined


def test_without_family_or_vocab_no_shape_is_invented(size_report):
    def strip(d):
        for key in ("family", "vocab_size", "seq_len"):
            d["meta"].pop(key)

    bare = _edited(size_report, strip)
    rec = recommend(bare, 1e24)
    assert rec.model is None and "n_heads" not in rec.params
    assert "--family" in rec.shape_note and "--vocab-size" in rec.shape_note
    for key in ("N", "D", "lr", "batch_size_tokens", "steps", "expected_loss"):
        assert math.isfinite(rec.params[key]), key
    assert "shape" in rec.summary() and "--family" in rec.summary()
    shaped = recommend(bare, 1e21, family="llama", vocab_size=32000, seq_len=2048)
    assert shaped.model["family"] == "llama" and shaped.model["vocab_size"] == 32000
    assert shaped.params["batch_size_tokens"] % 2048 == 0
    total = recommend(bare, 1e21, family="llama", vocab_size=32000, seq_len=2048, param_count="total")
    assert total.diagnostics["parameter_count"] == "total" and "N (total params)" in total.summary()


def test_absurd_budgets_and_exponents_answer_at_once(size_report):
    # a hang guard (these ran for more than 10 minutes in the shape ladder): not a timing assertion
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("recommend did not return"))
    signal.alarm(120)
    try:
        rec = recommend(size_report, 1e300)
        assert rec.model is None and "beyond the shape ladder" in rec.shape_note
        assert rec.params["N"] > MAX_PARAMS and any("very strong extrapolation" in w for w in rec.warnings)

        def exponent_5(d):
            d["isoflop"]["N_opt"]["params"]["exponent"] = 5.0
            d["isoflop"]["unreliable"]["a"] = "exponent 5 outside [0, 1]"

        rec = recommend(_edited(size_report, exponent_5), 1e21)
        assert rec.sources["N"].startswith("parametric")  # the implausible law is passed over
        with pytest.raises(ConfigError, match="budget"):  # 1e300^5 overflows: a clear refusal
            recommend(_edited(size_report, lambda d: d["isoflop"]["N_opt"]["params"].update(exponent=5.0)), 1e300)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_no_bootstrap_means_no_intervals():
    fit = fit_all(synthetic_runs(seed=1), laws=["isoflop", "loss"], n_boot=0, backtest=False)
    rec = recommend(fit, 1e18)
    for key in ("N", "D", "steps", "expected_loss"):
        assert not rec.intervals[key].determined and "n_boot = 0" in rec.intervals[key].reason, key
    assert "[" not in rec.row("N")  # no [x, x]


def test_bad_inputs_raise_config_error(size_report, tmp_path):
    with pytest.raises(ConfigError, match="budget"):
        recommend(size_report, -1)
    with pytest.raises(ConfigError, match="fit"):
        recommend(tmp_path / "missing.json", 1e18)
    with pytest.raises(ConfigError, match="family"):
        recommend(size_report, 1e18, family="gpt5")
    no_laws = _edited(size_report, lambda d: [d.pop(k) for k in ("isoflop", "parametric", "loss_vs_compute")])
    with pytest.raises(ConfigError, match="fit"):
        recommend(no_laws, 1e18)


def test_poor_diagnostics_become_warnings(size_report):
    def degrade(d):
        d["isoflop"]["budgets"][0]["flags"] = ["edge_minimum"]
        d["parametric"]["success"] = False

    warnings = recommend(_edited(size_report, degrade), 1e18).warnings
    assert any("edge_minimum" in w for w in warnings)
    assert any("parametric fit did not converge" in w for w in warnings)


def test_backtest_errors_become_warnings():
    runs = synthetic_runs(noise=0.002, seed=2)
    top = runs["budget"] == runs["budget"].max()
    runs.loc[top, "loss"] = runs.loc[top, "loss"] * 1.10  # the largest budget 10% worse than the law
    fit = fit_all(runs, laws=["isoflop", "loss"], n_boot=40)
    warnings = recommend(fit, 1e18).warnings
    assert any(w.startswith("backtest: held-out budget 1e+17 loss predicted with -") for w in warnings)


def test_shape_keeps_the_depth_and_head_size_every_fitted_run_shared(size_report):
    runs = size_report.runs.assign(n_layer=2, d_model=[8 + 2 * (i % 5) for i in range(len(size_report.runs))])
    runs["n_heads"] = runs["d_model"] // 2
    options = _fixed_ladder_options(runs)
    assert options == {"n_layer": 2, "head_dim": 2}
    assert _fixed_ladder_options(runs.assign(n_layer=[1 + i % 2 for i in range(len(runs))])) == {"head_dim": 2}
    assert _fixed_ladder_options(runs.assign(n_heads=2)) == {"n_layer": 2, "n_heads": 2}  # head_dim grows
    free = recommend(size_report, 1e19)
    fixed = recommend(_edited(size_report, lambda d: d["meta"].update(ladder=options)), 1e19)
    assert fixed.model["n_layer"] == 2 and fixed.model["d_model"] == 2 * fixed.model["n_heads"]
    assert free.model["n_layer"] != 2
    assert fixed.params["N_shape"] == pytest.approx(fixed.params["N"], rel=0.3)


def _lr_law_unreliable(d):
    d["hyperparams"]["unreliable"]["lr_exponent"] = "exponent 1.7 outside [-1, 1]"


def _width_rule(d):
    """The sweep trained at lr ~ 1 / d_model: its runs carry their width, and meta the rule read from them."""
    _lr_law_unreliable(d)
    d["meta"]["lr_width_exponent"] = 1.0
    for run in d["meta"]["runs"]:
        run["d_model"] = float(max(1, round((run["N"] * 64 / 12) ** (1 / 3))))  # N = 12 L d^2 with d = 64 L


def test_a_measured_lr_moves_to_the_recommended_width_by_the_sweeps_width_rule(report):
    held = recommend(_edited(report, _lr_law_unreliable), 1e19)
    moved_report = _edited(report, _width_rule)
    moved = recommend(moved_report, 1e19)
    cell = held.diagnostics["lr_measured_cell"]
    runs = moved_report.runs
    d_cell = float(runs.loc[np.isclose(runs["N"], cell["N"], rtol=1e-3), "d_model"].iloc[0])
    d_target = moved.params["d_model"]
    assert d_target > 1.5 * d_cell, "the test needs a recommended width well above the scanned cell's"
    assert moved.params["lr"] == pytest.approx(held.params["lr"] * d_cell / d_target)
    d_iv, lr_iv, held_iv = moved.intervals["d_model"], moved.intervals["lr"], held.intervals["lr"]
    assert (lr_iv.lo, lr_iv.hi) == pytest.approx((held_iv.lo * d_cell / d_iv.hi, held_iv.hi * d_cell / d_iv.lo))
    assert lr_iv.lo < moved.params["lr"] < lr_iv.hi and "held constant" not in lr_iv.method
    assert "width rule" in moved.sources["lr"] and "width rule" in moved.fallbacks["lr"]
    assert not any(w.startswith("lr: held at the optimum") for w in moved.warnings)
    assert any("moved to d_model" in w for w in moved.warnings)
    # without a rule in the runs (one LR for every width) the optimum is held constant, as before
    assert held.params["lr"] == pytest.approx(recommend(_edited(report, _lr_law_unreliable), 1e19).params["lr"])
    assert "width rule" not in held.sources["lr"]


def test_a_scan_located_at_one_budget_gives_its_measured_lr_not_a_published_law():
    # LR scans at one budget only: no lr_opt(C) law (one budget gives no law in C), but the cells stand, and the
    # recommendation takes that cell's measured optimum with its own interval instead of DeepSeek's published law
    runs = synthetic_runs(hparam_grid=(5, 3), seed=0)
    scanned = sorted(runs.loc[runs["kind"] == "hparam", "budget"].unique())
    one = runs[(runs["kind"] != "hparam") | (runs["budget"] == scanned[-1])]
    rep = fit_all(one, n_boot=60, seed=0, backtest=False)
    hp = rep.fits["hyperparams"]
    assert hp.lr_opt is None and hp.batch_opt is None and "lr_coef" not in hp.params
    assert hp.diagnostics["lr_opt"].startswith("not fitted") and "1 usable" in hp.diagnostics["lr_opt"]
    assert hp.diagnostics["n_used_lr"] == 0 and not hp.cells["used_lr_C"].any()
    cells = hp.cells[hp.cells["compute_optimal"].astype(bool)]
    assert len(cells) == 1 and np.isfinite(cells["lr_lo"]).all()
    top = cells.iloc[0]
    for source in (rep, _edited(rep, lambda d: None)):  # and through fit.json
        rec = recommend(source, 1e19)
        assert rec.sources["lr"].startswith(f"lr_opt measured at C = {top['C']:.3g}")
        assert rec.params["lr"] == pytest.approx(top["lr_opt"])
        assert (rec.intervals["lr"].lo, rec.intervals["lr"].hi) == pytest.approx((top["lr_lo"], top["lr_hi"]))
        assert "no lr_opt law in the hyperparams fit" in rec.fallbacks["lr"]
    assert "lr_opt(C): not fitted" in hp.summary()
    md = "\n".join(_result_md(hp))  # the report says why there is no law instead of an empty parameter table
    assert "No law was fitted (lr_opt: not fitted" in md and "| parameter |" not in md

    def claims_a_law(d):  # a fit.json without the law must say why, and carry no lr_* params
        d["hyperparams"]["diagnostics"].pop("lr_opt")

    with pytest.raises(ConfigError, match="hyperparams.lr_opt"):
        _edited(rep, claims_a_law)
