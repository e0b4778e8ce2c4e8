"""Honest backtests: fit the small budgets, predict the held-out larger ones, report the errors.

The training budgets (those <= `cutoff`, by default every budget but the largest) give an approach 2 fit
(N_opt(C), D_opt(C)) and an L(C) fit (saturating E + A C^-gamma on the per-budget optimal losses; the isoflop
L_opt power law when fewer than four budgets remain). Each held-out budget is then compared with what it measured
itself: its own isoFLOP parabola vertex (N_opt, D_opt, L_opt), or its lowest-loss run when its parabola is flagged.
Predictions and their intervals come from the laws' predict / predict_samples (interval_from_draws, with n_ok/n_total).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.data import load_runs
from analysis.isoflop import fit_isoflop
from analysis.powerlaw import fit_saturating
from analysis.result import FitResult, Interval, interval_from_draws
from analysis.selection import budget_optima, select_size_runs
from scaling.errors import ConfigError

QUANTITIES = ("loss", "N_opt", "D_opt")
NO_DRAWS = "no bootstrap draws (n_boot = 0)"


@dataclass(eq=False, repr=False)
class BacktestResult(FitResult):
    """Per held-out budget: predicted (with its interval) vs measured loss, N_opt, D_opt and their errors.

    `params` holds the relative errors (predicted / measured - 1) at the largest held-out budget. `table` has one row
    per held-out budget: budget, extrapolation (x the cutoff), measured_source, flags, and for q in QUANTITIES:
    q_pred, q_lo, q_hi, q_n_ok, q_n_total, q_method, q_reason (the interval; see `interval`), q_measured,
    q_rel_error, q_log_ratio (ln predicted / measured), q_inside (None when there is no interval).
    """

    kind = "backtest"
    table_members = ("table",)
    summary_keys = ()
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    name: str = "backtest"

    def interval(self, row: dict, q: str) -> Interval:
        """The predicted interval of quantity q in one table row."""
        if row[f"{q}_reason"]:
            return Interval.undetermined(row[f"{q}_reason"], n_ok=int(row[f"{q}_n_ok"]),
                                         n_total=int(row[f"{q}_n_total"]), method=row[f"{q}_method"])
        return Interval(float(row[f"{q}_lo"]), float(row[f"{q}_hi"]), int(row[f"{q}_n_ok"]),
                        int(row[f"{q}_n_total"]), row[f"{q}_method"])

    def held_out(self) -> list[dict]:
        """One dict per held-out budget: budget, extrapolation, flags, predictions {q: {predicted, interval,
        measured, rel_error, inside}}."""
        out = []
        for row in self.table.to_dict("records"):
            preds = {q: {"predicted": row[f"{q}_pred"], "interval": self.interval(row, q),
                         "measured": row[f"{q}_measured"], "rel_error": row[f"{q}_rel_error"],
                         "inside": row[f"{q}_inside"]} for q in QUANTITIES}
            out.append({"budget": row["budget"], "extrapolation": row["extrapolation"], "flags": list(row["flags"]),
                        "measured_source": row["measured_source"], "predictions": preds})
        return out

    @property
    def flags(self) -> list[str]:
        return [f for row in self.held_out() for f in row["flags"]]

    def summary(self) -> str:
        d = self.diagnostics
        lines = [(f"backtest: fit on budgets <= {d['cutoff']:.3g} FLOPs ({len(d['train_budgets'])} budgets), "
                 f"predict {len(self.table)} held-out budget(s); loss from {d['loss_source']}")]
        for row in self.held_out():
            lines.append(f"  C = {row['budget']:.3g} ({row['extrapolation']:.3g}x the cutoff)")
            for q, p in row["predictions"].items():
                iv = p["interval"]
                verdict = ("no interval to check against" if p["inside"] is None
                           else "inside the interval" if p["inside"] else "OUTSIDE the interval")
                lines.append(f"    {q:>6s}: predicted {p['predicted']:.4g} {iv.describe()}  measured "
                             f"{p['measured']:.4g}  error {100 * p['rel_error']:+.1f}%  ({verdict})")
            if row["flags"]:
                lines.append(f"    flags: {', '.join(row['flags'])}")
        return "\n".join(lines)


def backtest(runs, *, cutoff: float | None = None, n_boot: int = 200, seed: int = 0, window: float | None = None,
             columns: dict[str, str] | None = None, loss_tol: float = 0.05, alloc_tol: float = 0.25) -> BacktestResult:
    """Fit on budgets <= `cutoff` (FLOPs; default: all but the largest), predict every larger budget.

    Flags per held-out budget: `loss_error` when |loss rel. error| > loss_tol (5%), `N_opt_error` / `D_opt_error`
    when |rel. error| > alloc_tol (25%), `<q>_outside_interval` when the measured value is outside a determined 95%
    interval (with n_boot = 0 there are no intervals, and no such flag).
    """
    df = runs if isinstance(runs, pd.DataFrame) and columns is None else load_runs(runs, columns)
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
        loss_law = fit_saturating(train_opt["budget"].to_numpy(), train_opt["L_opt"].to_numpy(), n_boot=n_boot,
                                  seed=seed)
        loss_source = "saturating L(C) on per-budget optimal losses"
    else:
        loss_law, loss_source = iso.L_opt, "isoflop L_opt power law"
    laws = {"loss": loss_law, "N_opt": iso.N_opt, "D_opt": iso.D_opt}

    try:  # the held-out budgets' own optima; fit the whole set so each budget's parabola matches the main fit
        measured = budget_optima(held, fit_isoflop(df, window=window, n_boot=0, seed=seed))
    except ConfigError:
        measured = budget_optima(held)

    rows = []
    for m in measured.to_dict("records"):
        C = float(m["budget"])
        row = {"budget": C, "extrapolation": C / cutoff, "measured_source": m["source"]}
        flags = []
        for q, key in (("loss", "L_opt"), ("N_opt", "N_opt"), ("D_opt", "D_opt")):
            law = laws[q]
            point, iv = float(law.predict(C)), _predicted_interval(law, C)
            meas = float(m[key])
            inside = iv.contains(meas) if iv.determined else None
            row.update({f"{q}_pred": point, f"{q}_lo": iv.lo, f"{q}_hi": iv.hi, f"{q}_n_ok": iv.n_ok,
                        f"{q}_n_total": iv.n_total, f"{q}_method": iv.method, f"{q}_reason": iv.reason,
                        f"{q}_measured": meas, f"{q}_rel_error": point / meas - 1,
                        f"{q}_log_ratio": math.log(point / meas), f"{q}_inside": inside})
            if abs(point / meas - 1) > (loss_tol if q == "loss" else alloc_tol):
                flags.append(f"{q}_error")
            if inside is False:
                flags.append(f"{q}_outside_interval")
        row["flags"] = flags
        rows.append(row)
    last = rows[-1]
    return BacktestResult(
        params={f"{q}_rel_error": last[f"{q}_rel_error"] for q in QUANTITIES}, table=pd.DataFrame(rows),
        diagnostics={"cutoff": cutoff, "train_budgets": [float(b) for b in budgets if b <= cutoff * (1 + 1e-9)],
                     "heldout_budgets": [r["budget"] for r in rows], "loss_source": loss_source, "n_boot": n_boot,
                     "loss_tol": loss_tol, "alloc_tol": alloc_tol, "passed": not any(r["flags"] for r in rows),
                     "max_abs_loss_rel_error": max(abs(r["loss_rel_error"]) for r in rows)},
        name="backtest")


def _predicted_interval(law: FitResult, C: float) -> Interval:
    """The law's prediction at C through every bootstrap draw, as an interval with n_ok / n_total."""
    draws = np.asarray(law.predict_samples(C), dtype=float)
    if draws.size == 0:
        return Interval.undetermined(NO_DRAWS)
    methods = sorted({iv.method for iv in law.intervals.values() if iv.method != "none"})
    return interval_from_draws(draws, method="+".join(methods) or "bootstrap")
