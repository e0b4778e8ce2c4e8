"""analysis.noise: replicates averaged, pooled sigma with its degrees of freedom, residual sigma, sigma draws."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.noise import NoiseEstimate, collapse_replicates, residual_noise
from scaling.errors import ConfigError


def _replicated(n_points=40, n_seeds=3, sigma=0.01, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_points):
        for s in range(n_seeds):
            rows.append({"budget": 1e18, "N": 1e6 * (p + 1), "D": 1e9 / (p + 1), "seed": s, "run_id": f"r{p}_{s}",
                         "loss": 3.0 * math.exp(sigma * rng.standard_normal())})
    return pd.DataFrame(rows)


def test_replicates_are_averaged_and_pooled():
    df = _replicated()
    points, noise = collapse_replicates(df)
    assert len(points) == 40 and (points["n_replicates"] == 3).all()
    first = df[df["N"] == 1e6]["loss"]
    assert points.loc[points["N"] == 1e6, "loss"].item() == pytest.approx(first.mean())  # the mean, not the min
    assert noise.source == "replicates" and noise.dof == 40 * 2
    assert noise.sigma == pytest.approx(0.01, rel=0.25)  # 80 dof: sd of the estimate is ~8%
    # the pooled estimate is exact on a hand-computed case
    tiny = pd.DataFrame({"N": [1, 1, 2, 2, 2], "loss": np.exp([0.0, 0.2, 1.0, 1.1, 1.3])})
    _, est = collapse_replicates(tiny, keys=("N",))
    ss = (0.1 ** 2 + 0.1 ** 2) + ((1 / 7.5) ** 2 + (1 / 30) ** 2 + (1 / 6) ** 2)  # about each mean
    assert est.dof == 3 and est.sigma == pytest.approx(math.sqrt(ss / 3), rel=1e-4)


def test_no_replicates_says_so():
    df = _replicated(n_seeds=1)
    points, noise = collapse_replicates(df)
    assert len(points) == len(df) and not noise.determined
    assert noise.source == "none" and "no replicates" in noise.reason
    assert noise.to_dict() == {}
    assert np.isnan(noise.sigma_draws(5, np.random.default_rng(0))).all()


def test_runs_differing_in_more_than_seed_are_not_replicates():
    df = _replicated(n_points=3, n_seeds=2)
    df["lr"] = [1e-3, 2e-3] * 3  # each seed at its own lr: a scan, not replicates
    points, noise = collapse_replicates(df)
    assert len(points) == 6 and not noise.determined


def test_residual_noise_and_its_dof():
    r = np.array([0.01, -0.01, 0.02, -0.02])
    est = residual_noise(r, np.ones(4), dof=2)
    assert est.source == "residuals" and est.dof == 2
    assert est.sigma == pytest.approx(math.sqrt(0.001 / 2))
    assert not residual_noise(r, np.ones(4), dof=0).determined


def test_sigma_draws_widen_with_few_dof():
    rng = np.random.default_rng(0)
    few = NoiseEstimate(0.01, 2, "residuals").sigma_draws(20000, rng)
    many = NoiseEstimate(0.01, 200, "residuals").sigma_draws(20000, rng)
    assert np.percentile(few, 97.5) > 3 * np.percentile(many, 97.5) / 1.2
    assert np.median(many) == pytest.approx(0.01, rel=0.02)


def test_bad_input():
    with pytest.raises(ConfigError, match="loss"):
        collapse_replicates(pd.DataFrame({"N": [1.0]}))
    with pytest.raises(ConfigError, match="noise.source"):
        NoiseEstimate(0.1, 3, "guess")
