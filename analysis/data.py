"""Load sweep results into one runs table with canonical columns, and group runs into FLOP budgets.

Canonical columns: N (params; for sweeps non-embedding, or all params when the budgets use the 6N_total
convention), D (training tokens), loss (final validation loss, nats/token), C (training FLOPs; default 6·N·D), and
optionally lr, batch_size (tokens), run_id, step, status, budget (the FLOP budget a run belongs to). Every other column of the source is kept as is.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.errors import ConfigError

REQUIRED = ("N", "D", "loss")
OPTIONAL = ("C", "lr", "batch_size", "run_id", "step", "status", "budget")
BAD_STATUSES = ("diverged", "failed")


def group_budgets(C, rtol: float = 0.05) -> np.ndarray:
    """Representative FLOP budget of each value in C, grouping values within a relative tolerance.

    Values are sorted; a group starts at its smallest value and takes every later value at most (1 + rtol)
    times that start. Each value is mapped to its group's geometric mean. Returns an array shaped like C.
    """
    c = np.asarray(C, dtype=float).ravel()
    if c.size and not np.all(np.isfinite(c) & (c > 0)):
        raise ConfigError("C", "positive finite FLOP counts to group into budgets")
    if rtol < 0:
        raise ConfigError("budget_rtol", "a non-negative relative tolerance", rtol)
    order = np.argsort(c)
    out = np.empty_like(c)
    start = 0
    while start < c.size:
        stop = start
        while stop + 1 < c.size and c[order[stop + 1]] <= c[order[start]] * (1 + rtol):
            stop += 1
        members = order[start:stop + 1]
        out[members] = math.exp(float(np.mean(np.log(c[members]))))
        start = stop + 1
    return out.reshape(np.shape(C))


def _read_source(source) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """The raw table, the per-checkpoint metrics table (sweep directories only) and a label for messages."""
    if isinstance(source, pd.DataFrame):
        return source.copy(), None, "DataFrame"
    path = Path(source)
    if path.is_dir():
        if not (path / "runs").is_dir():
            raise ConfigError(str(path), "a sweep results directory holding runs/, or a CSV/Parquet file")
        from sweeps import load_results  # lazy: analysis works without the sweeps machinery imported

        runs, metrics = load_results(path)
        return count_params_as_convention(runs.copy(), metrics), metrics, str(path)
    if not path.exists():
        raise ConfigError(str(path), "an existing CSV or Parquet file, or a sweep results directory")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path), None, str(path)
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path), None, str(path)
        except ImportError as e:
            raise ConfigError(str(path), "pyarrow to read Parquet (pip install scaling-planner[parquet])") from e
    raise ConfigError(str(path), "a .csv or .parquet file, or a sweep results directory", suffix or "no suffix")


def count_params_as_convention(runs: pd.DataFrame, metrics: pd.DataFrame | None = None) -> pd.DataFrame:
    """Sweep runs whose budgets are counted as 6N_total get N = all params (the non-embedding count moves to
    N_non_embedding, and the metrics' N follows), so N and C = 6 N D agree; other sweeps keep non-embedding N."""
    conv = runs["flop_convention"].dropna().unique() if "flop_convention" in runs.columns else []
    if len(conv) != 1 or conv[0] != "6N_total" or "N_total" not in runs.columns:
        return runs
    runs["N_non_embedding"] = runs["N"]
    runs["N"] = runs["N_total"]
    if metrics is not None and not metrics.empty:
        metrics["N"] = metrics["run_id"].map(dict(zip(runs["run_id"], runs["N_total"]))).fillna(metrics["N"])
    return runs


def _apply_column_map(df: pd.DataFrame, columns: dict[str, str] | None, where: str) -> pd.DataFrame:
    """Rename source columns to canonical names (columns maps canonical name -> source column)."""
    if not columns:
        return df
    unknown = sorted(set(columns) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ConfigError("columns", f"canonical names among {list(REQUIRED + OPTIONAL)}", unknown)
    missing = [src for src in columns.values() if src not in df.columns]
    if missing:
        raise ConfigError(f"{where}: columns", f"source columns {missing} to exist; available: {list(df.columns)}")
    return df.rename(columns={src: canon for canon, src in columns.items()})


def _exclude(df: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Drop diverged/failed runs and runs without a finite loss; return the kept rows and the list dropped."""
    excluded = []
    status = (df["status"].fillna("").astype(str).str.lower() if "status" in df.columns
              else pd.Series("", index=df.index))
    loss = pd.to_numeric(df["loss"], errors="coerce")
    bad_status = status.isin(BAD_STATUSES)
    bad_loss = ~np.isfinite(loss.to_numpy(dtype=float))
    for i in df.index[bad_status | bad_loss]:
        reason = f"status {status[i]}" if bad_status[i] else "no finite loss"
        excluded.append({"run_id": str(df.at[i, "run_id"]), "status": status[i] or None, "reason": reason})
    return df.loc[~(bad_status | bad_loss)].copy(), excluded


def _check_positive(df: pd.DataFrame, name: str, where: str) -> None:
    values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        raise ConfigError(f"{where}: column {name}", "positive finite values",
                          f"{int(bad.sum())} of {len(values)} rows are NaN, infinite or <= 0")


def load_runs(source, columns: dict[str, str] | None = None, *, budget_rtol: float = 0.05) -> pd.DataFrame:
    """One row per run with canonical columns N, D, loss, C, budget (+ lr, batch_size, run_id, ... when present).

    source: a DataFrame, a CSV or Parquet path, or a sweep results directory (one holding `runs/`; read with
    `sweeps.load_results`, whose per-checkpoint metrics table is kept in df.attrs["metrics"]).
    columns: canonical name -> source column, e.g. {"N": "Model Size", "C": "Training FLOP"}.
    If D is missing but C is given, D = C / (6·N) (the 6N convention). If C is missing, C = 6·N·D.
    Runs whose status is diverged/failed, or whose loss is missing/non-finite, are dropped and listed in
    df.attrs["excluded"] (dicts with run_id, status, reason). Unless a `budget` column is given, budgets are
    assigned by grouping C within `budget_rtol` (see group_budgets).
    Raises ConfigError for missing columns and for NaN / non-positive N, D, C or loss among the kept runs.
    """
    raw, metrics, where = _read_source(source)
    df = _apply_column_map(raw, columns, where)
    if "D" not in df.columns and "C" in df.columns and "N" in df.columns:
        df["D"] = pd.to_numeric(df["C"], errors="coerce") / (6.0 * pd.to_numeric(df["N"], errors="coerce"))
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ConfigError(f"{where}: columns", f"columns {missing} (map them with columns={{canonical: source}}); "
                          f"available: {list(df.columns)}")
    if "run_id" not in df.columns:
        df["run_id"] = [f"row{i}" for i in range(len(df))]
    df = df.reset_index(drop=True)
    df, excluded = _exclude(df)
    if df.empty:
        raise ConfigError(f"{where}: runs", "at least one completed run with a finite loss",
                          f"0 usable of {len(raw)} ({len(excluded)} excluded)")
    for name in ("N", "D", "loss"):
        _check_positive(df, name, where)
        df[name] = pd.to_numeric(df[name]).astype(float)
    if "C" in df.columns:
        _check_positive(df, "C", where)
        df["C"] = pd.to_numeric(df["C"]).astype(float)
    else:
        df["C"] = 6.0 * df["N"] * df["D"]
    if "budget" in df.columns:
        _check_positive(df, "budget", where)
        df["budget"] = pd.to_numeric(df["budget"]).astype(float)
    else:
        df["budget"] = group_budgets(df["C"].to_numpy(), budget_rtol)
    df = df.reset_index(drop=True)
    df.attrs = {"excluded": excluded, "source": where}
    if metrics is not None:
        df.attrs["metrics"] = metrics
    return df


def budgets_of(df: pd.DataFrame, *, need: int = 1, what: str = "this fit", budget_rtol: float = 0.05) -> np.ndarray:
    """Budget value of each row (the `budget` column, else C grouped within budget_rtol, else 6·N·D grouped),
    checking that there are at least `need` distinct budgets."""
    if "budget" in df.columns:
        b = pd.to_numeric(df["budget"], errors="coerce").to_numpy(dtype=float)
    else:
        c = df["C"].to_numpy(float) if "C" in df.columns else 6.0 * df["N"].to_numpy(float) * df["D"].to_numpy(float)
        b = group_budgets(c, budget_rtol)
    if not np.all(np.isfinite(b) & (b > 0)):
        raise ConfigError("budget", "positive finite budget values (FLOPs)")
    n = np.unique(b).size
    if n < need:
        raise ConfigError("budget", f"at least {need} distinct FLOP budgets for {what}", f"{n}")
    return b


def require_columns(df: pd.DataFrame, names, what: str) -> None:
    """Raise ConfigError naming the missing columns (and those available) for `what`."""
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise ConfigError(f"{what}: columns", f"columns {missing}; available: {list(df.columns)}")
