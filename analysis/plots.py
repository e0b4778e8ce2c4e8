"""Figures for a fit: isoFLOP curves, the L(C) frontier, N_opt/D_opt(C), approach 3 contours, LR/batch scans,
residuals and the backtest. Every function takes the fit.json dict (or a FitReport / result with `to_dict()`)
and returns a matplotlib Figure (or None when the fit lacks what the figure needs); `save_figure` writes PNG and
SVG. Figures are built without pyplot (no global state, no display needed).
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

from analysis.selection import budget_optima, select_size_runs

BAND_ALPHA = 0.2
MAX_LEGEND_BUDGETS = 12  # more budgets than this get a colour scale instead of a legend


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


def plot_all(fit, out_dir, target_budget: float | None = None) -> dict[str, list[Path]]:
    """Draw every figure the fit allows into out_dir; return {figure name: [png path, svg path]}."""
    d = _as_dict(fit)
    figures = {"isoflop": plot_isoflop(d), "loss_vs_compute": plot_loss_frontier(d, target_budget),
               "allocation": plot_allocation(d, target_budget), "parametric_contours": plot_parametric_contours(d),
               "hyperparams": plot_hyperparams(d), "residuals": plot_residuals(d), "backtest": plot_backtest(d)}
    return {name: save_figure(fig, out_dir, name) for name, fig in figures.items() if fig is not None}


# ---------------------------------------------------------------- shared pieces


def _as_dict(fit) -> dict:
    return fit.to_dict() if hasattr(fit, "to_dict") else fit


def _runs(d: dict) -> pd.DataFrame:
    return pd.DataFrame((d.get("meta") or {}).get("runs") or [])


def _convention(d: dict) -> str:
    m = d.get("meta") or {}
    return f"{m.get('flop_convention', '6N')}, C = {float(m.get('k', 6.0)):.3g}·N·D"


def _colors(n: int) -> list:
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.9 * i / max(n - 1, 1)) for i in range(n)]


def _samples(law: dict | None, n_cols: int) -> np.ndarray:
    s = (law or {}).get("samples") or []
    arr = np.asarray(s, dtype=float) if s else np.empty((0, n_cols))
    return arr[:, :n_cols] if arr.ndim == 2 and arr.shape[1] >= n_cols else np.empty((0, n_cols))


def _band(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Pointwise 95% band of (n_draws x n_x) curves, or None without draws."""
    if draws.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanpercentile(draws, [2.5, 97.5], axis=0)
    return lo, hi


def _law_curve(law: dict, x: np.ndarray) -> tuple[np.ndarray, tuple | None]:
    s = _samples(law, 2)
    return float(law["coef"]) * x ** float(law["exponent"]), _band(s[:, :1] * x[None] ** s[:, 1:2])


def _log_axes(ax, *which: str) -> None:
    """Log scale with plain '1e+15' tick labels on the decades and unlabelled minor ticks (cheap to draw)."""
    for name in which:
        getattr(ax, f"set_{name}scale")("log")
        axis = ax.xaxis if name == "x" else ax.yaxis
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}".replace("e+0", "e").replace("e+", "e")))
        axis.set_minor_formatter(NullFormatter())


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _c_range(d: dict, target: float | None) -> tuple[np.ndarray, float]:
    budgets = (d.get("meta") or {}).get("budgets") or [1.0]
    c_max = float(max(budgets))
    hi = max(c_max, float(target)) if target else c_max
    return np.geomspace(min(budgets) / 1.5, hi * 1.2, 200), c_max


def _target(d: dict, target: float | None) -> float | None:
    return float(target) if target else (d.get("meta") or {}).get("target_budget")


def _mark_extrapolation(ax, c_max: float, target: float | None) -> None:
    if target and target > c_max:
        ax.axvspan(c_max, target * 1.2, color="0.9", zorder=0, label="extrapolation")
        ax.axvline(target, color="0.4", ls=":", lw=1)


# ---------------------------------------------------------------- approach 2


def plot_isoflop(fit) -> Figure | None:
    """Loss vs N per budget (one colour each), the fitted parabola in log N and its vertex with its 95% interval."""
    d = _as_dict(fit)
    iso = d.get("isoflop")
    runs = _runs(d)
    if not iso or runs.empty:
        return None
    runs = select_size_runs(runs)
    rows = {float(b["budget"]): b for b in iso.get("budgets") or []}
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
        if coef and all(c is not None for c in coef):
            n_lo, n_hi = row.get("N_fit_min") or pts["N"].min(), row.get("N_fit_max") or pts["N"].max()
            n = np.geomspace(n_lo / 1.15, n_hi * 1.15, 100)
            ax.plot(n, np.polyval(coef, np.log10(n)), color=color, lw=1.2, ls="--" if flags else "-")
        if not flags and row.get("N_opt"):
            lo, hi = row.get("N_opt_lo"), row.get("N_opt_hi")
            xerr = None
            if lo is not None and hi is not None:
                xerr = [[max(row["N_opt"] - lo, 0)], [max(hi - row["N_opt"], 0)]]
            ax.errorbar([row["N_opt"]], [row["L_opt"]], xerr=xerr, color=color, marker="*", ms=12, mec="k",
                        capsize=3, lw=1)
    _log_axes(ax, "x")
    ax.set_xlabel(f"non-embedding parameters N (params; {_convention(d)})")
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


def plot_allocation(fit, target_budget: float | None = None) -> Figure | None:
    """N_opt(C) and D_opt(C) on log-log axes: per-budget optima, fitted laws with 95% bands, extrapolated to target."""
    d = _as_dict(fit)
    iso, par, env = d.get("isoflop"), d.get("parametric"), d.get("envelope")
    if not (iso or par or env):
        return None
    target = _target(d, target_budget)
    C, c_max = _c_range(d, target)
    k = float((d.get("meta") or {}).get("k", 6.0))
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    par_N = _parametric_allocation_curve(par, C, k) if par else None
    for ax, key, unit in ((axes[0], "N", "non-embedding parameters"), (axes[1], "D", "tokens")):
        _mark_extrapolation(ax, c_max, target)
        if iso:
            curve, band = _law_curve(iso[f"{key}_opt"], C)
            ax.plot(C, curve, color="C0", label=f"approach 2: ∝ C^{iso[f'{key}_opt']['exponent']:.3f}")
            if band:
                ax.fill_between(C, *band, color="C0", alpha=BAND_ALPHA, label="95% bootstrap band")
            for b in iso.get("budgets") or []:
                lo, hi = b.get(f"{key}_opt_lo"), b.get(f"{key}_opt_hi")
                yerr = None if lo is None or hi is None else [[max(b[f"{key}_opt"] - lo, 0)],
                                                               [max(hi - b[f"{key}_opt"], 0)]]
                ax.errorbar([b["budget"]], [b[f"{key}_opt"]], yerr=yerr, fmt="o", color="C0", capsize=3,
                            mfc="none" if b.get("flags") else "C0")
        if par_N is not None:
            point, band = par_N if key == "N" else (C / (k * par_N[0]), _inverse_band(par_N[1], C, k))
            ax.plot(C, point, color="C1", ls="--", label=f"approach 3: ∝ C^{par[{'N': 'a', 'D': 'b'}[key]]:.3f}")
            if band:
                ax.fill_between(C, *band, color="C1", alpha=BAND_ALPHA * 0.7)
        if env and env.get(f"{key}_opt"):
            ax.plot(C, _law_curve(env[f"{key}_opt"], C)[0], color="C2", ls="-.",
                    label=f"approach 1 (envelope): ∝ C^{env[f'{key}_opt']['exponent']:.3f}")
        if target and iso:
            ax.plot([target], [_law_curve(iso[f"{key}_opt"], np.array([target]))[0][0]], marker="D", color="C3",
                    ls="none", label=f"target {_fmt(target)} FLOPs")
        _log_axes(ax, "x", "y")
        ax.set_xlabel(f"training compute C (FLOPs; {_convention(d)})")
        ax.set_ylabel(f"compute-optimal {key}_opt ({unit})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Compute-optimal model size N_opt(C)")
    axes[1].set_title("Compute-optimal training tokens D_opt(C)")
    return fig


def _parametric_allocation_curve(par: dict, C: np.ndarray, k: float):
    from analysis.recommend import parametric_allocation

    keys = ("E", "A", "B", "alpha", "beta")
    point = parametric_allocation(*(float(par[x]) for x in keys), C, k)
    s = _samples(par, 5)
    draws = parametric_allocation(*(s[:, j:j + 1] for j in range(5)), C[None], k) if len(s) else np.empty((0,))
    return point, _band(draws)


def _inverse_band(band, C: np.ndarray, k: float):
    return None if band is None else (C / (k * band[1]), C / (k * band[0]))


# ---------------------------------------------------------------- loss vs compute


def plot_loss_frontier(fit, target_budget: float | None = None) -> Figure | None:
    """Per-budget optimal loss vs C with L(C) = E + A C^-gamma and its shaded 95% band extended to the target."""
    d = _as_dict(fit)
    sat, iso = d.get("loss_vs_compute"), d.get("isoflop")
    runs = _runs(d)
    if not (sat or iso) or runs.empty:
        return None
    target = _target(d, target_budget)
    C, c_max = _c_range(d, target)
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    _mark_extrapolation(ax, c_max, target)
    ax.scatter(runs["C"], runs["loss"], s=8, color="0.6", alpha=0.6, label="all runs")
    points = pd.DataFrame((sat or {}).get("diagnostics", {}).get("points") or [])
    if points.empty:
        points = budget_optima(select_size_runs(runs))
    ax.scatter(points["budget"], points["L_opt"], color="k", zorder=3, label="per-budget optimal loss")
    if sat:
        s = _samples(sat, 3)
        curve = float(sat["E"]) + float(sat["A"]) * C ** -float(sat["gamma"])
        band = _band(s[:, :1] + s[:, 1:2] * C[None] ** -s[:, 2:3])
        label = f"L = {sat['E']:.3g} + {sat['A']:.3g}·C^-{sat['gamma']:.3f}"
        pl = (sat.get("diagnostics") or {}).get("power_law")
        if pl:
            ax.plot(C, pl["coef"] * C ** pl["exponent"], color="C1", ls=":", label=f"pure power law ∝ C^{pl['exponent']:.3f}")
    else:
        curve, band = _law_curve(iso["L_opt"], C)
        label = f"isoFLOP L_opt ∝ C^{iso['L_opt']['exponent']:.3f}"
    inside = C <= c_max
    ax.plot(C[inside], curve[inside], color="C0", label=label)
    ax.plot(C[~inside], curve[~inside], color="C0", ls="--")
    if band:
        ax.fill_between(C, *band, color="C0", alpha=BAND_ALPHA, label="95% bootstrap band")
    if target:
        yt = float(np.interp(np.log(target), np.log(C), curve))
        ax.plot([target], [yt], marker="D", color="C3", ls="none", label=f"target {_fmt(target)} FLOPs: L ≈ {yt:.3f}")
    _log_axes(ax, "x")
    ax.set_xlabel(f"training compute C (FLOPs; {_convention(d)})")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title("Loss frontier L(C); shaded band = 95% bootstrap interval")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig


# ---------------------------------------------------------------- approach 3


def plot_parametric_contours(fit) -> Figure | None:
    """Contours of L(N, D) = E + A N^-alpha + B D^-beta with the runs, the isoFLOP lines and the optimal path."""
    d = _as_dict(fit)
    par = d.get("parametric")
    runs = _runs(d)
    if not par or runs.empty:
        return None
    k = float((d.get("meta") or {}).get("k", 6.0))
    E, A, B, alpha, beta = (float(par[x]) for x in ("E", "A", "B", "alpha", "beta"))
    n = np.geomspace(runs["N"].min() / 3, runs["N"].max() * 3, 200)
    t = np.geomspace(runs["D"].min() / 3, runs["D"].max() * 3, 200)
    NN, DD = np.meshgrid(n, t)
    L = E + A * NN ** -alpha + B * DD ** -beta
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    levels = np.geomspace(max(L.min(), E * 1.001), np.percentile(L, 95), 14)
    cs = ax.contourf(NN, DD, L, levels=levels, cmap="viridis_r", extend="both")
    fig.colorbar(cs, ax=ax, label="predicted loss L(N, D) (nats/token)", format="%.2f")
    ax.scatter(runs["N"], runs["D"], s=10, color="w", edgecolors="k", linewidths=0.5, label="runs")
    budgets = sorted(runs["budget"].unique())
    for b in budgets:
        ax.plot(n, b / (k * n), color="w", lw=0.7, ls=":", alpha=0.8)
    C = np.geomspace(min(budgets) / 10, max(budgets) * 10, 100)
    from analysis.recommend import parametric_allocation

    n_opt = parametric_allocation(E, A, B, alpha, beta, C, k)
    ax.plot(n_opt, C / (k * n_opt), color="C3", lw=2, label=f"compute-optimal N ∝ C^{beta / (alpha + beta):.3f}")
    ax.plot([], [], color="w", ls=":", label="isoFLOP lines C = k·N·D (dotted)")
    _log_axes(ax, "x", "y")
    ax.set_xlim(n[0], n[-1])
    ax.set_ylim(t[0], t[-1])
    ax.set_xlabel(f"non-embedding parameters N (params; {_convention(d)})")
    ax.set_ylabel("training tokens D (tokens)")
    ax.set_title("Approach 3: L(N, D) contours and the compute-optimal path")
    ax.legend(fontsize=8, loc="upper right", facecolor="0.85")
    return fig


# ---------------------------------------------------------------- learning rate and batch size


def plot_hyperparams(fit) -> Figure | None:
    """Per budget: loss heatmap over (lr, batch) with the optimum marked, or loss-vs-lr curves for 1-D scans."""
    d = _as_dict(fit)
    hp = d.get("hyperparams")
    runs = _runs(d)
    if not hp or runs.empty or "lr" not in runs:
        return None
    if "kind" in runs and (runs["kind"] == "hparam").any():
        runs = runs[runs["kind"] == "hparam"]
    optima = {float(b["budget"]): b for b in hp.get("budgets") or []}
    budgets = [b for b in sorted(runs["budget"].unique()) if runs.loc[runs["budget"] == b, "lr"].nunique() >= 2]
    if not budgets:
        return None
    two_d = "batch_size" in runs and any(runs.loc[runs["budget"] == b, "batch_size"].nunique() >= 2 for b in budgets)
    if not two_d:
        fig = Figure(figsize=(7.5, 5), layout="constrained")
        ax = fig.add_subplot()
        for color, b in zip(_colors(len(budgets)), budgets):
            pts = runs[runs["budget"] == b].sort_values("lr")
            ax.plot(pts["lr"], pts["loss"], "o-", color=color, label=f"C = {_fmt(b)}")
            opt = optima.get(float(b), {})
            if opt.get("lr_opt"):
                ax.axvline(opt["lr_opt"], color=color, ls=":", lw=1)
        _log_axes(ax, "x")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("final validation loss (nats/token)")
        ax.set_title("Learning-rate scans per budget (dotted = fitted optimum)")
        ax.legend(title="budget (FLOPs)", fontsize=8)
        ax.grid(True, alpha=0.3)
        return fig
    cols = min(len(budgets), 3)
    nrows = math.ceil(len(budgets) / cols)
    fig = Figure(figsize=(4.2 * cols + 1, 3.6 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    grids = {b: runs[runs["budget"] == b].pivot_table(index="batch_size", columns="lr", values="loss", aggfunc="min")
             for b in budgets}
    excess = {b: 100 * (g / np.nanmin(g.to_numpy()) - 1) for b, g in grids.items()}  # % above the budget's best run
    every = np.concatenate([e.to_numpy().ravel() for e in excess.values()])
    norm = Normalize(0, max(float(np.nanpercentile(every, 90)), 0.5))
    for i, (ax, b) in enumerate(zip(axes, budgets)):
        grid = excess[b]
        ax.pcolormesh(np.arange(grid.shape[1] + 1), np.arange(grid.shape[0] + 1), grid.to_numpy(), cmap="viridis",
                      norm=norm, shading="flat")
        ax.set_xticks(np.arange(grid.shape[1]) + 0.5, [f"{v:.2g}" for v in grid.columns], rotation=45, fontsize=7)
        ax.set_yticks(np.arange(grid.shape[0]) + 0.5, [f"{v:.3g}" for v in grid.index], fontsize=7)
        opt = optima.get(float(b), {})
        if opt.get("lr_opt") and opt.get("batch_opt"):
            x = np.interp(np.log(opt["lr_opt"]), np.log(grid.columns.to_numpy(float)), np.arange(grid.shape[1])) + 0.5
            y = np.interp(np.log(opt["batch_opt"]), np.log(grid.index.to_numpy(float)), np.arange(grid.shape[0])) + 0.5
            ax.plot([x], [y], marker="*", color="r", ms=14, mec="k", ls="none", label="fitted optimum")
            if i == 0:
                ax.legend(fontsize=7, loc="upper right")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("batch size (tokens)")
        ax.set_title(f"C = {_fmt(b)} FLOPs (best loss {np.nanmin(grids[b].to_numpy()):.3f})", fontsize=9)
    for ax in axes[len(budgets):]:
        ax.set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=list(axes[:len(budgets)]), extend="max",
                 label="loss above the budget's best run (%)")
    fig.suptitle("Loss over learning rate x batch size per budget (★ = fitted optimum)")
    return fig


# ---------------------------------------------------------------- residuals and backtest


def plot_residuals(fit) -> Figure | None:
    """Log residuals (observed vs fitted) of the parametric fit, the N_opt law and the L(C) law against C."""
    d = _as_dict(fit)
    runs = _runs(d)
    panels = []
    par = d.get("parametric")
    if par and not runs.empty:
        size = select_size_runs(runs)
        pred = (float(par["E"]) + float(par["A"]) * size["N"] ** -float(par["alpha"])
                + float(par["B"]) * size["D"] ** -float(par["beta"]))
        panels.append(("approach 3: ln L_obs − ln L(N, D)", size["C"], np.log(size["loss"] / pred), "loss"))
    iso = d.get("isoflop")
    if iso:
        used = [b for b in iso.get("budgets") or [] if not b.get("flags")]
        C = np.array([b["budget"] for b in used])
        law = iso["N_opt"]
        panels.append(("approach 2: ln N_opt − ln law", C,
                       np.log(np.array([b["N_opt"] for b in used]) / (law["coef"] * C ** law["exponent"])), "N"))
    sat = d.get("loss_vs_compute")
    if sat and (sat.get("diagnostics") or {}).get("points"):
        pts = pd.DataFrame(sat["diagnostics"]["points"])
        pred = sat["E"] + sat["A"] * pts["budget"] ** -sat["gamma"]
        panels.append(("L(C): ln L_opt − ln fit", pts["budget"], np.log(pts["L_opt"] / pred), "loss"))
    if not panels:
        return None
    fig = Figure(figsize=(4.5 * len(panels), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, x, r, _) in zip(axes, panels):
        ax.axhline(0, color="0.5", lw=1)
        ax.scatter(x, r, s=14)
        _log_axes(ax, "x")
        ax.set_xlabel(f"training compute C (FLOPs; {_convention(d)})")
        ax.set_ylabel("log residual (natural log)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.suptitle("Residuals of the fits")
    return fig


def plot_backtest(fit) -> Figure | None:
    """Predicted (95% interval) vs measured loss, N_opt and D_opt at each held-out budget."""
    d = _as_dict(fit)
    bt = d.get("backtest")
    if not bt or not bt.get("rows"):
        return None
    rows = bt["rows"]
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    units = {"loss": "loss (nats/token)", "N_opt": "N_opt (non-embedding params)", "D_opt": "D_opt (tokens)"}
    for ax, q in zip(axes, ("loss", "N_opt", "D_opt")):
        C = np.array([r["budget"] for r in rows])
        pred = np.array([r[f"{q}_pred"] for r in rows])
        lo = np.array([r[f"{q}_lo"] if r[f"{q}_lo"] is not None else r[f"{q}_pred"] for r in rows])
        hi = np.array([r[f"{q}_hi"] if r[f"{q}_hi"] is not None else r[f"{q}_pred"] for r in rows])
        ax.errorbar(C, pred, yerr=[np.maximum(pred - lo, 0), np.maximum(hi - pred, 0)], fmt="o", capsize=4,
                    label="predicted (95%)")
        ax.scatter(C, [r[f"{q}_measured"] for r in rows], marker="x", color="C3", s=50, zorder=3, label="measured")
        for c, r in zip(C, rows):
            ax.annotate(f"{100 * r[f'{q}_rel_error']:+.1f}%", (c, r[f"{q}_pred"]), textcoords="offset points",
                        xytext=(8, 0), fontsize=8)
        _log_axes(ax, "x")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        ax.set_xlabel(f"held-out budget C (FLOPs; {_convention(d)})")
        ax.set_ylabel(units[q])
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Backtest: fitted on budgets ≤ {_fmt((bt.get('diagnostics') or {}).get('cutoff', math.nan))} "
                 "FLOPs, predicting the larger ones")
    return fig
