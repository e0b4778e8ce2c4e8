"""Figures for a fit: isoFLOP curves, the L(C) frontier, N_opt/D_opt(C), approach 3 contours, LR/batch scans,
residuals and the backtest. Every function takes a FitReport (or a fit.json dict / path) and returns a matplotlib
Figure (or None when the fit lacks what the figure needs); `save_figure` writes PNG and SVG. Every curve and band
comes from the laws' own predict / predict_samples; the target markers show the recommendation's own numbers.
Axes are set by the data and the extrapolation range (with a margin), never by a flagged budget or a wide band.
Figures are built without pyplot (no global state, no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from analysis.fitreport import FitReport, as_report
from analysis.recommend import Recommendation, recommend
from analysis.result import MIN_OK_FRACTION
from analysis.selection import budget_optima, select_size_runs
from scaling.errors import ConfigError

BAND_ALPHA = 0.2
MAX_LEGEND_BUDGETS = 12  # more budgets than this get a colour scale instead of a legend
LOG_MARGIN = 3.0  # log axes extend this factor beyond the data and the extrapolation range
LINEAR_MARGIN = 0.08  # linear axes extend this fraction of the data's range beyond it


def save_figure(fig: Figure, out_dir, name: str) -> list[Path]:
    """Write out_dir/name.png (110 dpi) and out_dir/name.svg; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.savefig(paths[0], dpi=110)
    fig.set_layout_engine("none")  # keep the layout computed for the PNG instead of redoing it
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: smaller, faster SVG
        fig.savefig(paths[1])
    return paths


def plot_all(fit, out_dir, target_budget: float | None = None,
             recommendation: Recommendation | None = None) -> dict[str, list[Path]]:
    """Draw every figure the fit allows into out_dir; return {figure name: [png path, svg path]}.

    recommendation: the one the report shows (computed here for the target when not given), so the figures mark
    the same numbers as the report's table."""
    report = as_report(fit)
    target = _target(report, target_budget)
    if recommendation is None:
        try:
            recommendation = recommend(report, target)
        except ConfigError:
            recommendation = None
    figures = {"isoflop": plot_isoflop(report),
               "loss_vs_compute": plot_loss_frontier(report, target, recommendation),
               "allocation": plot_allocation(report, target, recommendation),
               "parametric_contours": plot_parametric_contours(report), "hyperparams": plot_hyperparams(report),
               "residuals": plot_residuals(report), "backtest": plot_backtest(report)}
    return {name: save_figure(fig, out_dir, name) for name, fig in figures.items() if fig is not None}


# ---------------------------------------------------------------- shared pieces


def _convention(report: FitReport) -> str:
    m = report.meta
    return f"{m['flop_convention']}, C = {float(m['k']):.3g}·N·D"


def _colors(n: int) -> list:
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.9 * i / max(n - 1, 1)) for i in range(n)]


def _band(draws) -> tuple[np.ndarray, np.ndarray] | None:
    """Pointwise 95% band of (n_draws x n_x) curves; NaN where fewer than 90% of the draws are finite; None without
    draws."""
    draws = np.asarray(draws, dtype=float)
    if draws.ndim != 2 or draws.shape[0] == 0:
        return None
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanpercentile(np.where(np.isfinite(draws), draws, np.nan), [2.5, 97.5], axis=0)
    ok = np.isfinite(draws).mean(axis=0) >= MIN_OK_FRACTION
    return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)


def _log_axes(ax, *which: str) -> None:
    """Log scale with plain '1e+15' tick labels on the decades and unlabelled minor ticks (cheap to draw)."""
    for name in which:
        getattr(ax, f"set_{name}scale")("log")
        axis = ax.xaxis if name == "x" else ax.yaxis
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}".replace("e+0", "e").replace("e+", "e")))
        axis.set_minor_formatter(NullFormatter())


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _finite_positive(*arrays) -> np.ndarray:
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays if a is not None] or [np.empty(0)])
    return values[np.isfinite(values) & (values > 0)]


def _clip_log(ax, axis: str, *arrays, margin: float = LOG_MARGIN) -> None:
    """Set a log axis to the range of the given values (the data and the laws' point curves) +- a margin factor."""
    values = _finite_positive(*arrays)
    if values.size:
        getattr(ax, f"set_{axis}lim")(values.min() / margin, values.max() * margin)


def _clip_linear(ax, axis: str, *arrays, margin: float = LINEAR_MARGIN) -> None:
    """Set a linear axis to the range of the given values +- a fraction of that range."""
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays if a is not None] or [np.empty(0)])
    values = values[np.isfinite(values)]
    if values.size:
        pad = margin * max(values.max() - values.min(), 1e-3 * abs(values.max()), 1e-12)
        getattr(ax, f"set_{axis}lim")(values.min() - pad, values.max() + pad)


def _near(values, reference, factor: float = 10.0) -> np.ndarray:
    """The positive values within `factor` of the reference's range: interval ends that may set an axis (a wider
    one is drawn but clipped)."""
    v, ref = np.asarray(values, dtype=float), _finite_positive(reference)
    if not ref.size:
        return np.empty(0)
    return v[np.isfinite(v) & (v >= ref.min() / factor) & (v <= ref.max() * factor)]


def _c_range(report: FitReport, target: float | None) -> tuple[np.ndarray, float]:
    """200 compute values from below the smallest budget to beyond the target, and the largest fitted budget."""
    budgets = report.meta["budgets"]
    c_max = float(max(budgets))
    hi = max(c_max, float(target)) if target else c_max
    return np.geomspace(min(budgets) / 1.5, hi * 1.2, 200), c_max


def _target(report: FitReport, target: float | None) -> float:
    return float(target) if target else float(report.meta["target_budget"])


def _mark_extrapolation(ax, c_max: float, target: float | None) -> None:
    if target and target > c_max:
        ax.axvspan(c_max, target * 1.2, color="0.9", zorder=0, label="extrapolation")
        ax.axvline(target, color="0.4", ls=":", lw=1)


def _flagged(row: dict) -> bool:
    return bool(row.get("flags"))


# ---------------------------------------------------------------- approach 2


def plot_isoflop(fit) -> Figure | None:
    """Loss vs N per budget (one colour each), the fitted parabola in log N and its vertex with its 95% interval."""
    report = as_report(fit)
    iso = report.fits.get("isoflop")
    if iso is None or report.runs.empty:
        return None
    runs = select_size_runs(report.runs)
    rows = {float(r["budget"]): r for r in iso.budgets.to_dict("records")}
    budgets = sorted(runs["budget"].unique())
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    for color, budget in zip(_colors(len(budgets)), budgets):
        pts = runs[runs["budget"] == budget]
        row = rows.get(float(budget), {})
        flags = row.get("flags") or []
        label = f"C = {_fmt(budget)}" + (f" (flagged: {', '.join(flags)})" if flags else "")
        label = label if len(budgets) <= MAX_LEGEND_BUDGETS else None
        ax.scatter(pts["N"], pts["loss"], color=color, s=22, label=label, facecolors="none" if flags else color)
        coef = row.get("parabola_N")
        if coef is not None and np.isfinite(np.asarray(coef, dtype=float)).all():
            n = np.geomspace(row["N_fit_min"] / 1.15, row["N_fit_max"] * 1.15, 100)
            ax.plot(n, np.polyval(coef, np.log10(n)), color=color, lw=1.2, ls="--" if flags else "-")
        if not flags and math.isfinite(row.get("N_opt", math.nan)):
            xerr = None
            if not row.get("N_opt_reason"):
                xerr = [[max(row["N_opt"] - row["N_opt_lo"], 0)], [max(row["N_opt_hi"] - row["N_opt"], 0)]]
            ax.errorbar([row["N_opt"]], [row["L_opt"]], xerr=xerr, color=color, marker="*", ms=12, mec="k",
                        capsize=3, lw=1)
    _log_axes(ax, "x")
    _clip_log(ax, "x", runs["N"], margin=1.5)
    _clip_linear(ax, "y", runs["loss"])
    ax.set_xlabel(f"parameters N ({report.meta['parameter_count']}; {_convention(report)})")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title("IsoFLOP profiles: parabola in log N per budget, ★ = optimum (95% interval)")
    if len(budgets) <= MAX_LEGEND_BUDGETS:
        ax.legend(title="budget (FLOPs)", fontsize=8, title_fontsize=8, loc="best")
    else:  # too many budgets for a legend: a colour scale instead (hollow markers = flagged budgets)
        scale = ScalarMappable(norm=Normalize(0, 0.9 * (len(budgets) - 1)), cmap="viridis")
        bar = fig.colorbar(scale, ax=ax, label="budget C (FLOPs); hollow = flagged")
        ticks = np.linspace(0, len(budgets) - 1, 5).round().astype(int)
        bar.set_ticks(0.9 * ticks, labels=[_fmt(budgets[i]) for i in ticks])
    ax.grid(True, alpha=0.3)
    return fig


def plot_allocation(fit, target_budget: float | None = None,
                    recommendation: Recommendation | None = None) -> Figure | None:
    """N_opt(C) and D_opt(C) on log-log axes: per-budget optima, fitted laws with 95% bands, extrapolated to target;
    the recommendation's N and D at the target (gid "target_N", "target_D")."""
    report = as_report(fit)
    iso, par, env = (report.fits.get(n) for n in ("isoflop", "parametric", "envelope"))
    if iso is None and par is None and env is None:
        return None
    target = _target(report, target_budget)
    C, c_max = _c_range(report, target)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    if par is not None:
        par_point = par.optimal_allocation(C)
        par_draws = par.optimal_allocation_samples(C)
    for ax, i, key, unit in ((axes[0], 0, "N", f"{report.meta['parameter_count']} parameters"),
                             (axes[1], 1, "D", "tokens")):
        _mark_extrapolation(ax, c_max, target)
        scale = []  # what sets the y axis: the laws' point curves, unflagged optima, the target marker
        if iso is not None:
            law = getattr(iso, f"{key}_opt")
            curve = law.predict(C)
            scale.append(curve)
            ax.plot(C, curve, color="C0", label=f"approach 2: ∝ C^{law.params['exponent']:.3f}")
            band = _band(law.predict_samples(C))
            if band:
                ax.fill_between(C, *band, color="C0", alpha=BAND_ALPHA, label="95% bootstrap band")
            for b in iso.budgets.to_dict("records"):
                value = b[f"{key}_opt"]
                if not math.isfinite(value):
                    continue
                yerr = None
                if not b.get(f"{key}_opt_reason"):
                    yerr = [[max(value - b[f"{key}_opt_lo"], 0)], [max(b[f"{key}_opt_hi"] - value, 0)]]
                ax.errorbar([b["budget"]], [value], yerr=yerr, fmt="o", color="C0", capsize=3,
                            mfc="none" if _flagged(b) else "C0")
                if not _flagged(b):
                    scale.append([value])
        if par is not None:
            curve = par_point[i]
            scale.append(curve)
            ax.plot(C, curve, color="C1", ls="--", label=f"approach 3: ∝ C^{par.params['ab'[i]]:.3f}")
            band = _band(par_draws[i])
            if band:
                ax.fill_between(C, *band, color="C1", alpha=BAND_ALPHA * 0.7)
        if env is not None:
            law = getattr(env, f"{key}_opt")
            curve = law.predict(C)
            scale.append(curve)
            ax.plot(C, curve, color="C2", ls="-.", label=f"approach 1 (envelope): ∝ C^{law.params['exponent']:.3f}")
        if recommendation is not None:
            value = recommendation.params[key]
            scale.append([value])
            ax.plot([recommendation.budget], [value], marker="D", color="C3", ls="none", gid=f"target_{key}",
                    label=f"recommended at {_fmt(recommendation.budget)} FLOPs: {key} = {value:.3g}")
        _log_axes(ax, "x", "y")
        ax.set_xlim(C[0], C[-1])
        _clip_log(ax, "y", *scale)
        ax.set_xlabel(f"training compute C (FLOPs; {_convention(report)})")
        ax.set_ylabel(f"compute-optimal {key}_opt ({unit})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Compute-optimal model size N_opt(C)")
    axes[1].set_title("Compute-optimal training tokens D_opt(C)")
    return fig


# ---------------------------------------------------------------- loss vs compute


def plot_loss_frontier(fit, target_budget: float | None = None,
                       recommendation: Recommendation | None = None) -> Figure | None:
    """Per-budget optimal loss vs C with L(C) = E + A C^-gamma and its shaded 95% band extended to the target, and
    the recommendation's expected loss(es) at the target (gid "target_expected_loss" / "..._parametric")."""
    report = as_report(fit)
    sat, iso = report.fits.get("loss_vs_compute"), report.fits.get("isoflop")
    runs = report.runs
    if (sat is None and iso is None) or runs.empty:
        return None
    target = _target(report, target_budget)
    C, c_max = _c_range(report, target)
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    _mark_extrapolation(ax, c_max, target)
    ax.scatter(runs["C"], runs["loss"], s=8, color="0.6", alpha=0.6, label="all runs")
    points = (pd.DataFrame(sat.diagnostics["points"]) if sat is not None
              else budget_optima(select_size_runs(runs), iso))
    ax.scatter(points["budget"], points["L_opt"], color="k", zorder=3, label="per-budget optimal loss")
    if sat is not None:
        law, label = sat, f"L = {sat.params['E']:.3g} + {sat.params['A']:.3g}·C^-{sat.params['gamma']:.3f}"
        power = getattr(sat, "power_law", None)
        if power is not None:
            ax.plot(C, power.predict(C), color="C1", ls=":",
                    label=f"pure power law ∝ C^{power.params['exponent']:.3f}")
    else:
        law, label = iso.L_opt, f"isoFLOP L_opt ∝ C^{iso.L_opt.params['exponent']:.3f}"
    curve = law.predict(C)
    inside = C <= c_max
    ax.plot(C[inside], curve[inside], color="C0", label=label)
    ax.plot(C[~inside], curve[~inside], color="C0", ls="--")
    band = _band(law.predict_samples(C))
    if band:
        ax.fill_between(C, *band, color="C0", alpha=BAND_ALPHA, label="95% bootstrap band")
    marks = []
    if recommendation is not None:
        for key, style in (("expected_loss", "D"), ("expected_loss_parametric", "s")):
            if key in recommendation.params:
                y = recommendation.params[key]
                marks.append(y)
                ax.plot([recommendation.budget], [y], marker=style, color="C3", ls="none", gid=f"target_{key}",
                        label=f"recommended at {_fmt(recommendation.budget)} FLOPs: "
                              f"{recommendation.sources[key].split(' (')[0]} ≈ {y:.3f}")
    _log_axes(ax, "x")
    ax.set_xlim(C[0], C[-1])
    _clip_linear(ax, "y", runs["loss"], points["L_opt"], curve, marks)
    ax.set_xlabel(f"training compute C (FLOPs; {_convention(report)})")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title("Loss frontier L(C); shaded band = 95% bootstrap interval")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig


# ---------------------------------------------------------------- approach 3


def plot_parametric_contours(fit) -> Figure | None:
    """Contours of L(N, D) = E + A N^-alpha + B D^-beta with the runs, the isoFLOP lines and the optimal path."""
    report = as_report(fit)
    par = report.fits.get("parametric")
    runs = report.runs
    if par is None or runs.empty:
        return None
    k = float(report.meta["k"])
    n = np.geomspace(runs["N"].min() / 3, runs["N"].max() * 3, 200)
    t = np.geomspace(runs["D"].min() / 3, runs["D"].max() * 3, 200)
    NN, DD = np.meshgrid(n, t)
    L = par.predict(NN, DD)
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    levels = np.geomspace(max(L.min(), par.params["E"] * 1.001, 1e-6), np.percentile(L, 95), 14)
    cs = ax.contourf(NN, DD, L, levels=levels, cmap="viridis_r", extend="both")
    fig.colorbar(cs, ax=ax, label="predicted loss L(N, D) (nats/token)", format="%.2f")
    ax.scatter(runs["N"], runs["D"], s=10, color="w", edgecolors="k", linewidths=0.5, label="runs")
    budgets = sorted(runs["budget"].unique())
    for b in budgets:
        ax.plot(n, b / (k * n), color="w", lw=0.7, ls=":", alpha=0.8)
    C = np.geomspace(min(budgets) / 10, max(budgets) * 10, 100)
    n_opt, d_opt = par.optimal_allocation(C)
    ax.plot(n_opt, d_opt, color="C3", lw=2, label=f"compute-optimal N ∝ C^{par.params['a']:.3f}")
    ax.plot([], [], color="w", ls=":", label="isoFLOP lines C = k·N·D (dotted)")
    _log_axes(ax, "x", "y")
    ax.set_xlim(n[0], n[-1])
    ax.set_ylim(t[0], t[-1])
    ax.set_xlabel(f"parameters N ({report.meta['parameter_count']}; {_convention(report)})")
    ax.set_ylabel("training tokens D (tokens)")
    ax.set_title("Approach 3: L(N, D) contours and the compute-optimal path")
    ax.legend(fontsize=8, loc="upper right", facecolor="0.85")
    return fig


# ---------------------------------------------------------------- learning rate and batch size


MAX_CELL_CURVES = 8  # loss-vs-lr curves drawn in the LR figure's left panel (compute-optimal cells first)


def _hyperparam_result(fit):
    """The HyperparamFit of a FitReport, a fit.json dict or path, a HyperparamFit, or its own to_dict(); or None."""
    from analysis.hyperparams import HyperparamFit

    if isinstance(fit, HyperparamFit):
        return fit
    if isinstance(fit, dict) and fit.get("kind") == HyperparamFit.kind:
        return HyperparamFit.from_dict(fit)
    return as_report(fit).fits.get("hyperparams")


def _cells_to_draw(cells: pd.DataFrame) -> pd.DataFrame:
    """Scanned cells for the loss-vs-lr panel: the compute-optimal ones (else every scanned one), at most
    MAX_CELL_CURVES spread evenly over C."""
    scanned = cells[cells["scanned"].astype(bool)]
    chosen = scanned[scanned["compute_optimal"].astype(bool)]
    pool = (chosen if len(chosen) else scanned).sort_values(["C", "N"])
    keep = np.unique(np.linspace(0, len(pool) - 1, min(len(pool), MAX_CELL_CURVES)).round().astype(int))
    return pool.iloc[keep]


def _draw_cell_scans(ax, hp, cells: pd.DataFrame) -> list[np.ndarray]:
    """Per cell: measured points (% above the cell's fitted optimum), the fitted curve, the optimum with its
    interval. Returns the lr values the axis must show (the scanned points)."""
    from analysis.hyperparams import cell_loss_curve

    shown = []
    for color, row in zip(_colors(len(cells)), cells.to_dict("records")):
        pts = hp.points[hp.points["cell"] == row["cell"]]
        if row.get("two_d") and np.isfinite(row.get("batch_opt", np.nan)):  # the batch size nearest the optimum
            nearest = np.abs(np.log(pts["batch_size"].to_numpy(float) / row["batch_opt"]))
            pts = pts[nearest == nearest.min()]
        flagged = bool(row["flags"])
        ref = row["loss_opt"] if np.isfinite(row.get("loss_opt", np.nan)) else row["best_loss"]
        lr = pts["lr"].to_numpy(float)
        label = (f"N {_fmt(row['N'])}, D {_fmt(row['D'])}" + (" *" if row.get("compute_optimal") else "")
                 + (f" [{', '.join(row['flags'])}]" if flagged else ""))
        ax.plot(lr, 100 * (pts["loss_mean"].to_numpy(float) / ref - 1), "o", color=color,
                mfc="none" if flagged else color, label=label)
        grid = np.geomspace(lr.min(), lr.max(), 60)
        ax.plot(grid, 100 * (cell_loss_curve(row, grid) / ref - 1), color=color, lw=1.2,
                ls="--" if flagged else "-")
        if np.isfinite(row.get("lr_opt", np.nan)):
            lo, hi = row.get("lr_lo", np.nan), row.get("lr_hi", np.nan)
            err = ([[row["lr_opt"] - lo], [hi - row["lr_opt"]]] if np.isfinite(lo) and np.isfinite(hi) else None)
            ax.errorbar([row["lr_opt"]], [0.0], xerr=err, fmt="*", color=color, mec="k", ms=11, capsize=3,
                        mfc="none" if flagged else color)
        shown.append(lr)
    return shown


def _draw_law_panel(ax, hp, law, what: str, unit: str) -> None:
    """Each scanned cell's located optimum vs C with its interval (cells the law uses in colour, flagged ones
    hollow), each budget's point the law fits, and the law with its 95% band, over the cells' C range. Without a law
    (law None: one budget located) the cells are drawn with the reason in place of the law."""
    cells = hp.cells[hp.cells["scanned"].astype(bool)]
    located = cells[np.isfinite(cells[f"{what}_opt"].astype(float))]
    lo_col, hi_col = f"{what}_lo", f"{what}_hi"
    for row in located.to_dict("records"):
        used = bool(row.get(f"used_{what}_C"))
        lo, hi = row.get(lo_col, np.nan), row.get(hi_col, np.nan)
        err = [[row[f"{what}_opt"] - lo], [hi - row[f"{what}_opt"]]] if np.isfinite(lo) and np.isfinite(hi) else None
        style = {"color": "C0" if used else "0.6", "mfc": "C0" if used else "none", "ms": 7 if used else 5}
        ax.errorbar([row["C"]], [row[f"{what}_opt"]], yerr=err, fmt="o", capsize=2, lw=1, **style)
    ax.plot([], [], "o", color="C0", label="cell used by the law")
    ax.plot([], [], "o", color="0.6", mfc="none", label="other cell / flagged")
    points = pd.DataFrame(hp.diagnostics.get(f"{what}_law_points") or [])
    if not points.empty:  # each budget's optimum at its optimum N (interpolated between cells): what the law fits
        ax.plot(points["C"], points[f"{what}_opt"], "D", color="C3", mec="k", ms=6, label="budget optimum (law input)")
    C = np.geomspace(cells["C"].min(), cells["C"].max(), 80)
    if law is None:
        ax.text(0.5, 0.04, "no law in C: a located optimum at one budget only", transform=ax.transAxes,
                ha="center", va="bottom", fontsize=7)
    else:
        ax.plot(C, law.predict(C), color="C3", lw=2,
                label=f"{law.y_name} = {law.params['coef']:.3g}·C^{law.params['exponent']:.3f}")
        band = _band(law.predict_samples(C))
        if band is not None:
            ax.fill_between(C, *band, color="C3", alpha=BAND_ALPHA, lw=0, label="95% band")
    _log_axes(ax, "x", "y")
    _clip_log(ax, "x", cells["C"], margin=1.5)
    _clip_log(ax, "y", located[f"{what}_opt"], *([] if law is None else [law.predict(C)]), margin=2.0)
    ax.set_xlabel("cell compute C (FLOPs)")
    ax.set_ylabel(unit)
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)


def plot_hyperparams(fit) -> Figure | None:
    """The LR (and batch) figure: per cell, the measured loss vs lr, the fitted quadratic and the located optimum
    with its interval; then lr_opt vs C across cells with the law and its band (and B_opt vs C with a batch law).
    Takes a FitReport, a fit.json dict or path, or a HyperparamFit (or its to_dict()); None without scanned cells."""
    hp = _hyperparam_result(fit)
    if hp is None or hp.cells.empty or hp.points.empty:
        return None
    panels = 3 if hp.batch_opt is not None else 2
    fig = Figure(figsize=(5.2 * panels, 4.6), layout="constrained")
    axes = fig.subplots(1, panels)
    shown = _draw_cell_scans(axes[0], hp, _cells_to_draw(hp.cells))
    _log_axes(axes[0], "x")
    _clip_log(axes[0], "x", *shown, margin=1.3)
    axes[0].set_ylim(bottom=-0.1 * max(axes[0].get_ylim()[1], 0.1))
    axes[0].set_xlabel("peak learning rate")
    axes[0].set_ylabel("loss above the cell's fitted optimum (%)")
    axes[0].set_title("Per cell: scan, fitted quadratic, optimum ★ with 95% interval", fontsize=9)
    axes[0].legend(fontsize=6, title="cell (* = compute-optimal)", title_fontsize=7)
    axes[0].grid(True, alpha=0.3)
    _draw_law_panel(axes[1], hp, hp.lr_opt, "lr", "loss-optimal peak learning rate")
    axes[1].set_title("lr_opt(C) across cells" if hp.lr_opt is not None else
                      "lr_opt per cell (one budget located: no law in C)", fontsize=9)
    if hp.batch_opt is not None:
        _draw_law_panel(axes[2], hp, hp.batch_opt, "batch", "loss-optimal batch size (tokens)")
        axes[2].set_title("B_opt(C) across cells", fontsize=9)
    fig.suptitle("Learning rate and batch size: optimum per (N, D) cell, laws across budgets at their optimum N")
    return fig


# ---------------------------------------------------------------- residuals and backtest


def plot_residuals(fit) -> Figure | None:
    """Log residuals (observed vs fitted) of the parametric fit, the N_opt law and the L(C) law against C."""
    report = as_report(fit)
    runs = report.runs
    panels = []
    par = report.fits.get("parametric")
    if par is not None and not runs.empty:
        size = select_size_runs(runs)
        pred = par.predict(size["N"].to_numpy(), size["D"].to_numpy())
        panels.append(("approach 3: ln L_obs − ln L(N, D)", size["C"], np.log(size["loss"].to_numpy() / pred)))
    iso = report.fits.get("isoflop")
    if iso is not None:
        used = iso.budgets[[not f for f in iso.budgets["flags"]]]
        C = used["budget"].to_numpy(dtype=float)
        panels.append(("approach 2: ln N_opt − ln law", C,
                       np.log(used["N_opt"].to_numpy(dtype=float) / iso.N_opt.predict(C))))
    sat = report.fits.get("loss_vs_compute")
    if sat is not None:
        pts = pd.DataFrame(sat.diagnostics["points"])
        C = pts["budget"].to_numpy(dtype=float)
        panels.append(("L(C): ln L_opt − ln fit", C, np.log(pts["L_opt"].to_numpy(dtype=float) / sat.predict(C))))
    if not panels:
        return None
    fig = Figure(figsize=(4.5 * len(panels), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, x, r) in zip(axes, panels):
        ax.axhline(0, color="0.5", lw=1)
        ax.scatter(x, r, s=14)
        _log_axes(ax, "x")
        ax.set_xlabel(f"training compute C (FLOPs; {_convention(report)})")
        ax.set_ylabel("log residual (natural log)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.suptitle("Residuals of the fits")
    return fig


def plot_backtest(fit) -> Figure | None:
    """Predicted (95% interval, when there is one) vs measured loss, N_opt and D_opt at each held-out budget."""
    report = as_report(fit)
    bt = report.backtest
    if bt is None or bt.table.empty:
        return None
    rows = bt.held_out()
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    units = {"loss": "loss (nats/token)", "N_opt": "N_opt (params)", "D_opt": "D_opt (tokens)"}
    C = np.array([r["budget"] for r in rows])
    for ax, q in zip(axes, ("loss", "N_opt", "D_opt")):
        preds = [r["predictions"][q] for r in rows]
        pred = np.array([p["predicted"] for p in preds])
        measured = np.array([p["measured"] for p in preds])
        with_iv = [j for j, p in enumerate(preds) if p["interval"].determined]
        without = [j for j, p in enumerate(preds) if not p["interval"].determined]
        if with_iv:
            lo = np.array([preds[j]["interval"].lo for j in with_iv])
            hi = np.array([preds[j]["interval"].hi for j in with_iv])
            ax.errorbar(C[with_iv], pred[with_iv], yerr=[np.maximum(pred[with_iv] - lo, 0),
                                                         np.maximum(hi - pred[with_iv], 0)],
                        fmt="o", capsize=4, label="predicted (95%)")
        if without:
            ax.plot(C[without], pred[without], "o", mfc="none", color="C0", label="predicted (no interval)")
        ax.scatter(C, measured, marker="x", color="C3", s=50, zorder=3, label="measured")
        for c, p in zip(C, preds):
            ax.annotate(f"{100 * p['rel_error']:+.1f}%", (c, p["predicted"]), textcoords="offset points",
                        xytext=(8, 0), fontsize=8)
        _log_axes(ax, "x")
        ends = [e for j in with_iv for e in preds[j]["interval"]]
        _clip_linear(ax, "y", pred, measured, _near(ends, np.concatenate([pred, measured])), margin=0.1)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        ax.set_xlabel(f"held-out budget C (FLOPs; {_convention(report)})")
        ax.set_ylabel(units[q])
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Backtest: fitted on budgets ≤ {_fmt(bt.diagnostics['cutoff'])} FLOPs, predicting the larger ones")
    return fig
