"""Figures: drawn from the typed report's laws, axes set by the data and the extrapolation range (a flagged budget
or an absurd band is drawn but does not set them), target markers that are the recommendation's numbers."""

import json
import math

import numpy as np
import pytest

from analysis import plots
from analysis.fitreport import FitReport
from analysis.recommend import recommend
from analysis.report import fit_all
from analysis.simulate import synthetic_runs


@pytest.fixture(scope="module")
def report():
    return fit_all(synthetic_runs(seed=1), laws=["isoflop", "loss", "parametric"], n_boot=40, seed=0)


def _absurd(report: FitReport) -> FitReport:
    """The report with budget 0 flagged and its vertex interval out to 1e42 (as a 5-point budget gave), and the
    N_opt and L(C) laws' draws spread so their bands reach absurd values."""
    d = json.loads(json.dumps(report.to_dict()))
    row = d["isoflop"]["budgets"][0]
    row.update(flags=["edge_minimum"], N_opt=7e41, N_opt_lo=3e-12, N_opt_hi=1e42, D_opt=1e-20, D_opt_lo=1e-30,
               D_opt_hi=1e10)
    rng = np.random.default_rng(0)
    law = d["isoflop"]["N_opt"]["draws"]
    law["exponent"] = [e + 0.5 * rng.standard_normal() for e in law["exponent"]]
    sat = d["loss_vs_compute"]["draws"]
    sat["A"] = [a * 10 ** (3 * rng.standard_normal()) for a in sat["A"]]
    return FitReport.from_dict(d)


def _decades(lo: float, hi: float) -> float:
    return math.log10(hi / lo)


def test_allocation_axes_follow_the_data_not_a_flagged_budget_or_a_wide_band(report):
    absurd = _absurd(report)
    fig = plots.plot_allocation(absurd, 1e19)
    ax_n, ax_d = fig.axes[:2]
    unflagged = absurd.fits["isoflop"].budgets.iloc[1:]
    n_lo, n_hi = ax_n.get_ylim()
    assert n_lo >= unflagged["N_opt"].min() / 1e2 and n_hi <= 1e11  # the data reach ~3e7, the target ~2e8
    assert _decades(n_lo, n_hi) < 6
    d_lo, d_hi = ax_d.get_ylim()
    assert d_lo >= unflagged["D_opt"].min() / 1e2 and _decades(d_lo, d_hi) < 6
    x_lo, x_hi = ax_n.get_xlim()
    assert x_lo >= 1e14 and x_hi <= 1e20  # budgets 1e15..1e17 and the 1e19 target
    # the flagged budget is still drawn (hollow marker at 7e41), only it does not set the axes
    drawn_y = [y for line in ax_n.get_lines() for y in np.atleast_1d(line.get_ydata())]
    assert any(np.isclose(y, 7e41) for y in drawn_y)


def test_loss_frontier_axis_is_not_stretched_by_a_wide_band(report):
    fig = plots.plot_loss_frontier(_absurd(report), 1e19)
    lo, hi = fig.axes[0].get_ylim()
    at_target = float(report.fits["loss_vs_compute"].predict(1e19))  # ~3.0: the extrapolated curve is in range
    assert at_target - 1.0 < lo < at_target and hi < report.runs["loss"].max() + 1.0


def test_target_markers_are_the_recommendations_numbers(report):
    rec = recommend(report, 1e19)
    loss_fig = plots.plot_loss_frontier(report, 1e19, rec)
    markers = {line.get_gid(): float(line.get_ydata()[0]) for line in loss_fig.axes[0].get_lines()
               if line.get_gid()}
    assert markers["target_expected_loss"] == rec.params["expected_loss"]
    assert markers["target_expected_loss_parametric"] == rec.params["expected_loss_parametric"]
    alloc = plots.plot_allocation(report, 1e19, rec)
    got = {line.get_gid(): float(line.get_ydata()[0]) for ax in alloc.axes for line in ax.get_lines()
           if line.get_gid()}
    assert got == {"target_N": rec.params["N"], "target_D": rec.params["D"]}


def test_allocation_legend_states_each_approachs_exponent(report):
    fig = plots.plot_allocation(report)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    par, iso = report.fits["parametric"].params, report.fits["isoflop"].params
    assert f"approach 3: ∝ C^{par['a']:.3f}" in labels and f"approach 3: ∝ C^{par['b']:.3f}" in labels
    assert f"approach 2: ∝ C^{iso['a']:.3f}" in labels and f"approach 2: ∝ C^{iso['b']:.3f}" in labels


def test_figures_accept_a_report_a_dict_or_a_path(report, tmp_path):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(report.to_dict()))
    for source in (report, report.to_dict(), path):
        for draw in (plots.plot_isoflop, plots.plot_parametric_contours, plots.plot_residuals, plots.plot_backtest):
            assert draw(source) is not None, draw.__name__
    assert plots.plot_parametric_contours(fit_all(synthetic_runs(seed=1), laws=["isoflop"], n_boot=0)) is None


def test_backtest_figure_without_intervals_draws_no_error_bars():
    rep = fit_all(synthetic_runs(seed=2), laws=["isoflop"], n_boot=0)
    fig = plots.plot_backtest(rep)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "predicted (no interval)" in labels and "predicted (95%)" not in labels


def test_backtest_axes_show_a_reasonable_interval_and_clip_an_absurd_one(report):
    fig = plots.plot_backtest(report)
    (row,) = report.backtest.held_out()
    iv = row["predictions"]["N_opt"]["interval"]
    lo, hi = fig.axes[1].get_ylim()
    assert lo <= iv.lo and iv.hi <= hi  # the whole error bar is visible
    d = json.loads(json.dumps(report.to_dict()))
    d["backtest"]["table"][0].update(N_opt_lo=1e-30, N_opt_hi=1e30)
    lo, hi = plots.plot_backtest(FitReport.from_dict(d)).axes[1].get_ylim()
    assert lo > -1e9 and hi < 1e9  # an interval out to 1e30 is drawn, clipped, not the axis
