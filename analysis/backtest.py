"""Honest backtests: fit the small budgets, predict the held-out larger ones, report the errors.

The training budgets (those <= `cutoff`, by default every budget but the largest) give an approach 2 fit
(N_opt(C), D_opt(C)) and an L(C) fit (saturating E + A C^-gamma on the per-budget optimal losses; the isoflop
L_opt power law when only two budgets remain). Each held-out budget is then compared with what it measured itself:
its own isoFLOP parabola vertex (N_opt, D_opt, L_opt), or its lowest-loss run when its parabola is flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.result import FitResult, json_safe, percentile_interval
from analysis.selection import budget_optima, select_size_runs
from scaling.errors import ConfigError

QUANTITIES = ("loss", "N_opt", "D_opt")


@dataclass
class BacktestResult(FitResult):
    """Per held-out budget: predicted (with 95% interval) vs measured loss, N_opt, D_opt and their errors.

    `params` holds the errors at the largest held-out budget (rel_error = predicted / measured - 1);
    `table` has one row per held-out budget with, for q in loss, N_opt, D_opt: q_pred, q_lo, q_hi, q_measured,
    q_rel_error, q_log_ratio (ln predicted / measured), q_inside (measured within the interval), plus `flags`.
    """

    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    name: str = "backtest"

    @property
    def rows(self) -> list[dict]:
        return json_safe(self.table.to_dict("records"))

    @property
    def flags(self) -> list[str]:
        return [f for fl in self.table.get("flags", []) for f in fl]

    def summary(self) -> str:
        d = self.diagnostics
        lines = [(f"backtest: fit on budgets <= {d.get('cutoff', math.nan):.3g} FLOPs "
                 f"({len(d.get('train_budgets', []))} budgets), predict {len(self.table)} held-out budget(s)")]
        for r in self.table.to_dict("records"):
            lines.append(f"  C = {r['budget']:.3g} ({r['extrapolation']:.3g}x the cutoff)")
            for q in QUANTITIES:
                inside = "inside" if r[f"{q}_inside"] else "OUTSIDE"
                lines.append(f"    {q:>6s}: predicted {r[f'{q}_pred']:.4g} [{r[f'{q}_lo']:.4g}, {r[f'{q}_hi']:.4g}]"
                             f"  measured {r[f'{q}_measured']:.4g}  error {100 * r[f'{q}_rel_error']:+.1f}%"
                             f"  ({inside} the interval)")
            if r["flags"]:
                lines.append(f"    flags: {', '.join(r['flags'])}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["rows"] = self.rows
        return d


def backtest(runs, *, cutoff: float | None = None, n_boot: int = 200, seed: int = 0, window: float | None = None,
             columns: dict[str, str] | None = None, loss_tol: float = 0.05, alloc_tol: float = 0.25) -> BacktestResult:
    """Fit on budgets <= `cutoff` (FLOPs; default: all but the largest), predict every larger budget.

    Flags per held-out budget: `loss_error` when |loss rel. error| > loss_tol (5%), `N_opt_error` / `D_opt_error`
    when |rel. error| > alloc_tol (25%), `<q>_outside_interval` when the measured value is outside the 95% interval.
    """
    from analysis.isoflop import fit_isoflop
    from analysis.powerlaw import fit_saturating

    df = _as_runs(runs, columns)
    df = select_size_runs(df)
    budgets = np.sort(df["budget"].unique())
    if len(budgets) < 3:
        raise ConfigError("runs", "at least 3 FLOP budgets to backtest (2 to fit, 1 to hold out)", len(budgets))
    cutoff = float(budgets[-2]) if cutoff is None else float(cutoff)
    train_mask = df["budget"] <= cutoff * (1 + 1e-9)
    train, held = df[train_mask], df[~train_mask]
    if train["budget"].nunique() < 2 or held.empty:
        raise ConfigError("cutoff", f"a budget leaving >= 2 budgets to fit and >= 1 above it (budgets: "
                          f"{', '.join(f'{b:.3g}' for b in budgets)})", cutoff)

    iso = fit_isoflop(train, window=window, n_boot=n_boot, seed=seed)
    train_opt = budget_optima(train, iso)
    if len(train_opt) >= 4:  # the saturating law has 3 parameters and needs 4 points
        sat = fit_saturating(train_opt["budget"].to_numpy(), train_opt["L_opt"].to_numpy(), n_boot=n_boot, seed=seed)
        loss_law, loss_source = sat, "saturating L(C) on per-budget optimal losses"
    else:
        loss_law, loss_source = None, "isoflop L_opt power law"

    try:  # the held-out budgets' own optima; fit the whole set so each budget's parabola matches the main fit
        measured = budget_optima(held, fit_isoflop(df, window=window, n_boot=0, seed=seed))
    except ConfigError:
        measured = budget_optima(held)

    rows = []
    for m in measured.to_dict("records"):
        C = m["budget"]
        pred = {"loss": _predict_loss(loss_law, iso, C), "N_opt": _predict_law(iso.N_opt, C),
                "D_opt": _predict_law(iso.D_opt, C)}
        row = {"budget": C, "extrapolation": C / cutoff, "measured_source": m["source"]}
        flags = []
        for q, key in (("loss", "L_opt"), ("N_opt", "N_opt"), ("D_opt", "D_opt")):
            point, samples = pred[q]
            lo, hi = percentile_interval(samples) if samples.size else (math.nan, math.nan)
            meas = float(m[key])
            row.update({f"{q}_pred": point, f"{q}_lo": lo, f"{q}_hi": hi, f"{q}_measured": meas,
                        f"{q}_rel_error": point / meas - 1, f"{q}_log_ratio": math.log(point / meas),
                        f"{q}_inside": bool(lo <= meas <= hi)})
            tol = loss_tol if q == "loss" else alloc_tol
            if abs(point / meas - 1) > tol:
                flags.append(f"{q}_error")
            if not lo <= meas <= hi:
                flags.append(f"{q}_outside_interval")
        row["flags"] = flags
        rows.append(row)
    table = pd.DataFrame(rows)
    last = rows[-1]
    return BacktestResult(
        params={f"{q}_rel_error": last[f"{q}_rel_error"] for q in QUANTITIES},
        n_boot=n_boot, table=table,
        diagnostics={"cutoff": cutoff, "train_budgets": [float(b) for b in budgets if b <= cutoff * (1 + 1e-9)],
                     "heldout_budgets": [r["budget"] for r in rows], "loss_source": loss_source,
                     "loss_tol": loss_tol, "alloc_tol": alloc_tol, "passed": not any(r["flags"] for r in rows),
                     "max_abs_loss_rel_error": max(abs(r["loss_rel_error"]) for r in rows)},
        success=True, message="", name="backtest")


def _as_runs(runs, columns) -> pd.DataFrame:
    if isinstance(runs, pd.DataFrame) and {"N", "D", "loss", "budget"} <= set(runs.columns) and columns is None:
        return runs
    from analysis.data import load_runs

    return load_runs(runs, columns)


def _predict_law(law, C: float) -> tuple[float, np.ndarray]:
    """Point prediction coef * C^exponent and one per bootstrap draw of (coef, exponent)."""
    point = float(law.params["coef"]) * C ** float(law.params["exponent"])
    s = np.asarray(getattr(law, "samples", None) if getattr(law, "samples", None) is not None else np.empty((0, 2)),
                   dtype=float).reshape(-1, 2)
    return point, s[:, 0] * C ** s[:, 1]


def _predict_loss(sat, iso, C: float) -> tuple[float, np.ndarray]:
    if sat is None:
        return _predict_law(iso.L_opt, C)
    p = sat.params
    point = float(p["E"]) + float(p["A"]) * C ** -float(p["gamma"])
    s = np.asarray(sat.samples if getattr(sat, "samples", None) is not None else np.empty((0, 3)),
                   dtype=float).reshape(-1, 3)
    return point, s[:, 0] + s[:, 1] * C ** -s[:, 2]


# ---------------------------------------------------------------- synthetic runs from a known law

CHINCHILLA_LAW = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022, Eq. 10


def synthetic_runs(budgets=(1e15, 3e15, 1e16, 3e16, 1e17), *, law: dict | None = None, n_per_budget: int = 7,
                   span: float = 0.6, offsets=(0.15, -0.1, 0.2, -0.15, 0.1), noise: float = 0.002, seed: int = 0,
                   hparam_grid: tuple[int, int] | None = None, k: float = 6.0) -> pd.DataFrame:
    """Runs drawn from L = E + A N^-alpha + B D^-beta with multiplicative log-normal noise (sd `noise`).

    Backtesting the whole pipeline on a surface whose answer is known. Per budget C (FLOPs, C = k N D), an isoFLOP
    grid of `n_per_budget` sizes spanning +-`span` decades around the true N_opt, shifted off-centre by
    `offsets[i]` decades. hparam_grid=(n_lr, n_batch) adds `kind="hparam"` runs at the true N_opt on an LR x batch
    grid around lr* = 0.94 C^-0.125, B* = 0.58 C^0.327 tokens, costing loss x (1 + 0.05 dlr^2 + 0.03 dB^2) in
    decades. Also fills the sweep columns N_total (1.08 N), C_<convention>, flop_convention, family, seq_len.
    """
    p = {**CHINCHILLA_LAW, **(law or {})}
    rng = np.random.default_rng(seed)

    def loss(N, D):
        clean = p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]
        return clean * np.exp(noise * rng.standard_normal(np.shape(N)))

    rows = []
    for i, C in enumerate(budgets):
        n_star = true_optimal_n(C, p, k)
        lr_star, b_star = 0.94 * C ** -0.125, 0.58 * C ** 0.327
        N = n_star * 10 ** (np.linspace(-span, span, n_per_budget) + offsets[i % len(offsets)])
        for j, (n, L) in enumerate(zip(N, loss(N, C / (k * N)))):
            rows.append({"run_id": f"iso{i}_{j}", "kind": "isoflop", "N": n, "D": C / (k * n), "C": C, "budget": C,
                         "loss": L, "lr": lr_star, "batch_size": b_star})
        if hparam_grid:
            D = C / (k * n_star)
            for u in np.linspace(-0.6, 0.6, hparam_grid[0]) + 0.1:
                for v in np.linspace(-0.6, 0.6, hparam_grid[1]) - 0.1:
                    L = loss(n_star, D) * (1 + 0.05 * u ** 2 + 0.03 * v ** 2)
                    rows.append({"run_id": f"hp{i}_{len(rows)}", "kind": "hparam", "N": n_star, "D": D, "C": C,
                                 "budget": C, "loss": float(L), "lr": lr_star * 10 ** u, "batch_size": b_star * 10 ** v})
    df = pd.DataFrame(rows)
    attention_share = (df["N"] / 1e6) ** -0.15  # a convention-dependent extra that shrinks with model size
    df["N_total"] = 1.08 * df["N"]
    df["C_6N"], df["C_6N_total"] = df["C"], k * df["N_total"] * df["D"]
    df["C_exact"], df["C_exact_causal"] = df["C"] * (1 + 0.3 * attention_share), df["C"] * (1 + 0.15 * attention_share)
    df["C_deepseek"] = df["C"] * (1 + 0.2 * attention_share)
    df["flop_convention"], df["family"], df["seq_len"], df["vocab_size"] = "6N", "gpt2", 256, 256
    return df


def true_optimal_n(C, law: dict | None = None, k: float = 6.0):
    """Compute-optimal N of the law (default CHINCHILLA_LAW) under C = k N D."""
    p = {**CHINCHILLA_LAW, **(law or {})}
    G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    return G * (np.asarray(C, dtype=float) / k) ** (p["beta"] / (p["alpha"] + p["beta"]))
