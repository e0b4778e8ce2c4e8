"""Which runs each fit, figure and report section uses: one home, so a figure and its fit select the same runs.

- `select_size_runs`: runs for the loss-vs-size fits (approaches 2 and 3, L(C)), one best-tuned run per size.
- `budget_optima`: the measured optimum of each FLOP budget (parabola vertex, else the lowest-loss run).
- `hyperparam_runs`: runs for the LR / batch-size fits.
"""

from __future__ import annotations

import math

import pandas as pd


def select_size_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs usable for loss-vs-size fits (isoflop, parametric, L(C)).

    Hyperparameter-scan runs (`kind == "hparam"`) are left out when isoFLOP runs exist; where several runs share a
    (budget, N) and the table has lr or batch_size columns (an LR or batch scan at one size) only the lowest-loss
    setting (by mean loss over its replicates) is kept, the best-tuned point, with all its seeds (replicates, for the
    noise model). Without those columns repeated sizes are kept (e.g. digitised published data).
    """
    if "kind" in df.columns:
        is_hp = df["kind"].astype(str) == "hparam"
        if is_hp.any() and (~is_hp).any():
            df = df[~is_hp]
    scanned = sorted({"lr", "batch_size"} & set(df.columns))
    if scanned and df.duplicated(["budget", "N"]).any():  # the best setting by mean loss, with all its replicates
        setting_loss = df.groupby(["budget", "N", *scanned], dropna=False)["loss"].transform("mean")
        df = df[setting_loss == setting_loss.groupby([df["budget"], df["N"]]).transform("min")]
    return df.sort_values(["budget", "N"]).reset_index(drop=True)


def budget_optima(df: pd.DataFrame, iso=None) -> pd.DataFrame:
    """Per budget: the measured optimum (budget, N_opt, D_opt, L_opt, source).

    From the isoflop fit's parabola vertex where that budget is not flagged, else the lowest-loss run.
    """
    rows = []
    by_budget = {}
    if iso is not None:
        by_budget = {float(r["budget"]): r for r in iso.budgets.to_dict("records")}
    for budget, group in df.groupby("budget"):
        r = by_budget.get(float(budget))
        if r is not None and not r.get("flags") and all(math.isfinite(r.get(q, math.nan)) for q in
                                                         ("N_opt", "D_opt", "L_opt")):
            rows.append({"budget": float(budget), "N_opt": r["N_opt"], "D_opt": r["D_opt"], "L_opt": r["L_opt"],
                         "source": "parabola vertex"})
        else:
            best = group.loc[group["loss"].idxmin()]
            rows.append({"budget": float(budget), "N_opt": float(best["N"]), "D_opt": float(best["D"]),
                         "L_opt": float(best["loss"]), "source": "lowest-loss run"})
    return pd.DataFrame(rows)


def hyperparam_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs for the LR/batch fits: every run at a (budget, N) that has `kind == "hparam"` runs when the table says so
    (the grid's centre is usually shared with the isoFLOP run of that size and kept under kind "isoflop"), else every
    run."""
    if "kind" in df.columns and (df["kind"].astype(str) == "hparam").any():
        hp = df[df["kind"].astype(str) == "hparam"]
        keys = set(zip(hp["budget"], hp["N"]))
        return df[[(b, n) in keys for b, n in zip(df["budget"], df["N"])]]
    return df
