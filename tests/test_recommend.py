"""recommend(): values with intervals, propagated from stored bootstrap samples, also from a reloaded fit.json."""

import json
import math

import pytest

from analysis.backtest import synthetic_runs, true_optimal_n
from analysis.recommend import DEEPSEEK_LR, recommend
from analysis.report import fit_all
from scaling.errors import ConfigError

KEYS = ("N", "D", "n_layer", "d_model", "n_heads", "d_ff", "batch_size_tokens", "lr", "steps", "warmup_steps",
        "expected_loss")


@pytest.fixture(scope="module")
def report():
    return fit_all(synthetic_runs(hparam_grid=(5, 3), seed=0), n_boot=60, seed=0, backtest=False)


def test_recommendation_is_finite_with_intervals_and_near_the_true_law(report):
    rec = recommend(report, 1e19)
    for key in KEYS:
        lo, hi = rec.intervals[key]
        assert math.isfinite(rec.params[key]) and lo <= rec.params[key] <= hi, key
    assert rec.intervals["N"][0] < rec.intervals["N"][1]  # a real bootstrap interval, not a point
    assert rec.params["N"] == pytest.approx(true_optimal_n(1e19), rel=0.15)
    assert 6 * rec.params["N"] * rec.params["D"] == pytest.approx(1e19)
    assert rec.params["steps"] * rec.params["batch_size_tokens"] >= rec.params["D"]
    assert rec.params["batch_size_tokens"] % 256 == 0  # whole sequences of seq_len 256
    assert rec.params["d_model"] % rec.params["n_heads"] == 0
    # the synthetic sweep's lr optimum is 0.94 C^-0.125: the fitted law, not the DeepSeek fallback, is used
    assert rec.sources["lr"] == "hyperparams.lr_opt"
    assert rec.params["lr"] == pytest.approx(0.94 * 1e19 ** -0.125, rel=0.3)
    assert "expected_loss_parametric" in rec.params  # both loss laws exist, both are reported
    assert rec.extrapolation_factor == pytest.approx(100.0)
    assert not any("extrapolation" in w for w in rec.warnings)


def test_reloaded_fit_json_gives_the_same_recommendation(report, tmp_path):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(report.to_dict(), allow_nan=False))
    direct = recommend(report, 3e18)
    for source in (json.loads(path.read_text()), path):
        again = recommend(source, 3e18)
        for key in KEYS:
            assert again.params[key] == pytest.approx(direct.params[key], rel=1e-6), key
            assert again.intervals[key] == pytest.approx(direct.intervals[key], rel=1e-3), key


def test_extrapolation_warnings(report):
    assert any(w.startswith("large extrapolation") for w in recommend(report, 1e20).warnings)
    assert any(w.startswith("very strong extrapolation") for w in recommend(report, 1e22).warnings)


def test_fallbacks_are_flagged_without_hyperparameter_laws():
    fit = fit_all(synthetic_runs(seed=4), laws=["isoflop", "loss"], n_boot=50, backtest=False)
    rec = recommend(fit, 1e18)
    assert rec.params["lr"] == pytest.approx(DEEPSEEK_LR[0] * 1e18 ** DEEPSEEK_LR[1])
    assert sum("DeepSeek" in w for w in rec.warnings) == 2
    assert rec.sources["N"].startswith("isoflop")
    assert "expected_loss_parametric" not in rec.params


def test_parametric_only_fit_allocates_by_approach_3():
    fit = fit_all(synthetic_runs(seed=5), laws=["parametric"], n_boot=50, backtest=False)
    rec = recommend(fit.to_dict(), 1e18)
    assert rec.sources["N"].startswith("parametric")
    assert rec.params["N"] == pytest.approx(true_optimal_n(1e18), rel=0.25)
    assert rec.sources["expected_loss"].startswith("parametric")
    lo, hi = rec.intervals["expected_loss"]
    assert lo < rec.params["expected_loss"] < hi


def test_bad_inputs_raise_config_error(report, tmp_path):
    with pytest.raises(ConfigError, match="budget"):
        recommend(report, -1)
    with pytest.raises(ConfigError, match="fit"):
        recommend({"meta": {"k": 6.0}}, 1e18)
    with pytest.raises(ConfigError, match="fit"):
        recommend(tmp_path / "missing.json", 1e18)


def test_poor_diagnostics_become_warnings(report):
    d = json.loads(json.dumps(report.to_dict()))
    d["isoflop"]["budgets"][0]["flags"] = ["edge_minimum"]
    d["parametric"]["success"] = False
    d["backtest"] = {"rows": [{"budget": 1e17, "loss_rel_error": 0.08, "N_opt_rel_error": 0.01,
                               "D_opt_rel_error": -0.2}]}
    warnings = recommend(d, 1e18).warnings
    assert any("edge_minimum" in w for w in warnings)
    assert any("parametric fit did not converge" in w for w in warnings)
    assert any("loss predicted with +8.0% error" in w for w in warnings)
    assert any("D_opt predicted with -20.0% error" in w for w in warnings)
    assert not any("N_opt predicted" in w for w in warnings)


def test_shape_keeps_the_depth_and_head_size_every_fitted_run_shared(report):
    from analysis.report import _fixed_ladder_options

    runs = report.runs.assign(n_layer=2, d_model=[8 + 2 * (i % 5) for i in range(len(report.runs))])
    runs["n_heads"] = runs["d_model"] // 2
    options = _fixed_ladder_options(runs)
    assert options == {"n_layer": 2, "head_dim": 2}
    assert _fixed_ladder_options(runs.assign(n_layer=[1 + i % 2 for i in range(len(runs))])) == {"head_dim": 2}
    assert _fixed_ladder_options(runs.assign(n_heads=2)) == {"n_layer": 2, "n_heads": 2}  # head_dim grows
    free = recommend(report, 1e19)
    report.meta["ladder"] = options
    try:
        fixed = recommend(report, 1e19)
    finally:
        report.meta.pop("ladder")
    assert fixed.model["n_layer"] == 2 and fixed.model["d_model"] == 2 * fixed.model["n_heads"]
    assert free.model["n_layer"] != 2
    assert fixed.params["N_shape"] == pytest.approx(fixed.params["N"], rel=0.3)
