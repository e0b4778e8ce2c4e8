"""analysis.simulate: known surfaces, their exact optima, and the sweeps drawn from them."""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from analysis.simulate import CHINCHILLA_LAW, Surface, SweepDesign, simulate_sweep, synthetic_runs, true_optimal_n
from scaling.errors import ConfigError


def test_optimum_is_the_isoflop_minimum_and_a_plus_b_is_one():
    s = Surface()
    C = 3e20
    res = minimize_scalar(lambda x: s.loss(10 ** x, C / (6 * 10 ** x)), bounds=(5, 13), method="bounded",
                          options={"xatol": 1e-10})
    opt = s.optimum(C)
    assert np.log10(opt["N_opt"]) == pytest.approx(res.x, abs=1e-6)
    assert opt["L_opt"] == pytest.approx(float(res.fun), rel=1e-9)
    assert 6 * opt["N_opt"] * opt["D_opt"] == pytest.approx(C)
    assert s.a + s.b == pytest.approx(1.0) and s.a == pytest.approx(0.28 / 0.62)
    assert opt["N_opt"] == pytest.approx(true_optimal_n(C, CHINCHILLA_LAW))


def test_sweep_layout_seeds_and_lr_scans():
    d = SweepDesign(n_budgets=4, span=1000, n_per_budget=6, n_seeds=3, n_lr=5, noise=0.005)
    df = simulate_sweep(d, seed=1)
    iso = df[df["kind"] == "isoflop"]
    assert len(iso) == 4 * 6 * 3 and len(df) == 4 * 6 * 3 * (1 + 5)
    assert iso["budget"].nunique() == 4 and df["budget"].max() / df["budget"].min() == pytest.approx(1000)
    assert np.allclose(6 * df["N"] * df["D"], df["C"])
    # each (budget, model) cell has an LR scan of 5 values around the drifting optimum
    scans = df[df["kind"] == "hparam"].groupby(["budget", "N", "seed"])["lr"].nunique()
    assert (scans == 5).all()
    s = Surface()
    lr_star = s.lr_opt(iso["N"], iso["D"])
    np.testing.assert_allclose(iso["lr"], lr_star)
    assert lr_star.max() / lr_star.min() > 2  # the optimum drifts with N and D
    # noise: replicate spread matches the design's sigma
    spread = np.log(iso["loss"]).groupby([iso["budget"], iso["N"]]).std()
    assert spread.mean() == pytest.approx(0.005, rel=0.35)


def test_off_centre_grids_and_reproducibility():
    d = SweepDesign(n_budgets=3, n_per_budget=5, half_width=0.5, max_offset=0.3, noise=0.0)
    a, b = simulate_sweep(d, seed=7), simulate_sweep(d, seed=7)
    assert a.equals(b)
    s = Surface()
    centres = np.log10(a.groupby("budget")["N"].apply(lambda n: np.sqrt(n.min() * n.max())))
    offsets = centres.to_numpy() - np.log10(s.optimum(centres.index.to_numpy())["N_opt"])
    assert np.all(np.abs(offsets) <= 0.3 + 1e-9) and np.abs(offsets).max() > 0.01
    np.testing.assert_allclose(a["loss"], s.loss(a["N"], a["D"]))  # noise 0: the surface itself


def test_design_validation():
    with pytest.raises(ConfigError, match="n_seeds"):
        SweepDesign(n_seeds=0)
    with pytest.raises(ConfigError, match="noise"):
        SweepDesign(noise=-0.1)


def test_synthetic_runs_keeps_its_signature():
    df = synthetic_runs(budgets=(1e15, 1e16), hparam_grid=(3, 2), seed=0)
    assert set(df["kind"]) == {"isoflop", "hparam"} and len(df) == 2 * 7 + 2 * 6
    assert {"N_total", "C_6N", "flop_convention"} <= set(df.columns)
