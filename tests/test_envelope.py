"""analysis.envelope (approach 1) on synthetic training curves from a known L(N, D)."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.envelope import fit_envelope
from scaling.errors import ConfigError

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
A_TRUE = BETA / (ALPHA + BETA)


def loss(N, D):
    return E + A * N ** -ALPHA + B * D ** -BETA


def curves(noise=0.0, seed=0, n_models=31, n_ckpt=40):
    """Checkpoints of n_models runs (N from 1e6 to 1e9 params), each trained up to C = 1e21 FLOPs; the loss at a
    checkpoint is idealised as L(N, D) of a run that ends there."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, N in enumerate(np.geomspace(1e6, 1e9, n_models)):
        for D in np.geomspace(1e8, 1e21 / (6 * N), n_ckpt):
            rows.append({"run_id": f"r{i}", "N": N, "tokens": D, "flops": 6 * N * D, "step": 0,
                         "val_loss": loss(N, D) * np.exp(rng.normal(0, noise))})
    return pd.DataFrame(rows)


def test_envelope_recovers_allocation_exponent():
    fit = fit_envelope(curves(), n_bins=30, n_boot=300)
    # Models are 0.1 decades apart, so the frontier's N_opt is the grid model nearest the true optimum (error
    # <= 0.05 decades, a sawtooth); over ~2.5 decades of N_opt that bounds the slope error by ~0.02.
    assert fit.params["a"] == pytest.approx(A_TRUE, abs=0.02)
    assert fit.params["b"] == pytest.approx(1 - A_TRUE, abs=0.02)
    assert fit.diagnostics["n_censored"] > 0  # the smallest/largest models win some bins, which are left out
    used = fit.frontier[~fit.frontier["censored"]]
    N_true = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA)) * (used["C"] / 6) ** A_TRUE
    assert np.abs(np.log10(used["N"] / N_true)).max() < 0.1
    assert fit.L_opt.params["exponent"] < 0
    lo, hi = fit.intervals["a"]
    assert lo <= fit.params["a"] <= hi and hi - lo < 0.2


def test_envelope_noise_and_bootstrap_interval():
    fit = fit_envelope(curves(noise=0.001, seed=1), n_bins=30, n_boot=500, seed=1)
    # 0.1% noise makes near-tied models swap on the frontier; the bootstrap over runs reflects that spread.
    assert fit.params["a"] == pytest.approx(A_TRUE, abs=0.04)
    lo, hi = fit.intervals["a"]
    assert lo - 0.01 < A_TRUE < hi + 0.01
    assert fit.n_draws == 500 and set(fit.draws) == {"a", "b", "N_coef", "D_coef", "L_coef", "L_exponent"}
    assert fit.intervals["a"].method == "bootstrap:runs" and fit.intervals["a"].n_total == 500
    pred = fit.predict(1e22)
    assert pred["N_opt"] > 0 and pred["D_opt"] > 0


def test_envelope_to_dict_summary_and_run_exclusion():
    m = curves()
    fit = fit_envelope(m, n_boot=50, exclude_runs=["r15"])
    assert "r15" not in set(fit.frontier["run_id"])
    d = json.loads(json.dumps(fit.to_dict()))
    assert len(d["N_opt"]["draws"]["exponent"]) == 50 and d["frontier"] and d["kind"] == "envelope"
    assert "FLOPs" in fit.summary() and "params" in fit.summary()


def test_envelope_errors():
    m = curves(n_models=2)
    with pytest.raises(ConfigError, match="at least 3 runs"):
        fit_envelope(m)
    with pytest.raises(ConfigError, match="flops"):
        fit_envelope(curves().drop(columns=["flops"]))


def test_envelope_round_trips_through_json():
    from analysis.envelope import EnvelopeFit
    from analysis.result import FitResult

    fit = fit_envelope(curves(noise=0.001, seed=2), n_boot=40, seed=2)
    back = FitResult.from_dict(json.loads(json.dumps(fit.to_dict(), allow_nan=False)))
    assert isinstance(back, EnvelopeFit) and back.kind == "envelope"
    C = np.array([1e20, 1e22])
    for key, value in fit.predict(C).items():
        np.testing.assert_allclose(back.predict(C)[key], value, rtol=1e-12)
        np.testing.assert_allclose(back.predict_samples(C)[key], fit.predict_samples(C)[key], rtol=1e-12)
    assert back.intervals["a"] == fit.intervals["a"]
    pd.testing.assert_frame_equal(back.frontier, fit.frontier, check_dtype=False)
