"""Load runs into one table with canonical columns, one row per finished run, and group runs into FLOP budgets.

Canonical columns: N (params; which count is declared by `param_count`: sweeps record theirs), D (training tokens),
loss (final validation loss, nats/token), C (training FLOPs; default 6·N·D), and optionally lr, batch_size (always
tokens after loading), run_id, step, status, budget (the FLOP budget a run belongs to), kind, seed, seq_len. Every
other column of the source is kept as is.

Sources: a DataFrame, a CSV or Parquet file, or a sweep results directory (read with `sweeps.load_results`).
A table whose rows carry a run id and a step (or a D that increases within a run) holds training curves, as a
W&B history export does: each run becomes one row (its last checkpoint with a finite loss) and the curves are kept
in df.attrs["metrics"] with the columns a sweep folder gives (sweeps.results.METRIC_COLUMNS), so the envelope
(approach 1) works from any per-checkpoint table.

Budgets: the `budget` column when present; else the (N, D) cells' C values are clustered where the clusters are
clearly separated (group_budgets: neighbours within budget_rtol = 5% AND the whole cluster within 5%). A chain of
C values wider than that is not one budget (its values stay apart, with a warning), and a cell is never split.

What is left out, and why, is recorded rather than hidden (df.attrs):
- "excluded": one dict per run left out (run_id, status, reason, category); "excluded_counts": category -> count.
  Only runs whose status means finished (FINISHED_STATUSES) are fitted; a table without a status column is taken
  as finished runs.
- "duplicates": exact duplicate rows (counted once).
- "inconsistent_C": rows whose C disagrees with k·N·D beyond `c_rtol`, k being the table's median C/(N·D).
- "parameter_count", "batch_unit", "column_map", "set_aside", "aliases", "derived", "budget_rule", "source",
  "per_checkpoint", "k_table" (median C/(N·D)), "c_rtol".
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

import sweeps
from scaling.errors import ConfigError
from sweeps.results import METRIC_COLUMNS

REQUIRED = ("N", "D", "loss")
OPTIONAL = ("C", "lr", "batch_size", "run_id", "step", "status", "budget", "kind", "seed", "seq_len")
CANONICAL = REQUIRED + OPTIONAL
NUMERIC = ("N", "D", "loss", "C", "lr", "batch_size", "step", "budget", "seq_len")

# Run states of common trackers (W&B, MLflow, SLURM, this project's sweeps), lower-cased, first word only.
FINISHED_STATUSES = ("finished", "completed", "complete", "done", "success", "succeeded")
NOT_FINISHED_STATUSES = ("crashed", "failed", "killed", "running", "diverged", "preempted", "preempting", "pending",
                         "queued", "scheduled", "cancelled", "canceled", "timeout", "interrupted", "out_of_memory",
                         "node_fail", "stopped", "aborted", "error")
STATUS_ALIASES = ("state", "State", "run_state", "Status", "STATUS")  # read as `status` when that is missing
PARAM_COUNTS = ("total", "non-embedding")
BATCH_UNITS = ("tokens", "sequences")

DEFAULT_K = 6.0  # FLOPs per parameter per token used to derive C, D or N when a column is missing (6N convention)
PLAUSIBLE_K = (2.0, 30.0)  # C/(N·D) of every known convention (6N, 6N_total, exact, ...) lies in this range
DEFAULT_C_RTOL = 0.10  # a row whose C/(N·D) differs from the table's median by more than this is inconsistent
DEFAULT_BUDGET_RTOL = 0.05  # runs whose C agree within this form one budget (when clearly separated from others)
LOADED_BY = "analysis.load_runs"  # df.attrs["loaded_by"] of a table load_runs returned (loading it again is a no-op)
_MAX_LISTED = 10  # rows named in a warning message (all are in df.attrs)


class SharedFrame(pd.DataFrame):
    """A read-only DataFrame that deepcopy shares instead of copying. pandas deep-copies df.attrs on every operation,
    and the per-checkpoint curves kept in df.attrs["metrics"] can hold millions of rows; operations on a
    SharedFrame give plain DataFrames."""

    @property
    def _constructor(self):
        return pd.DataFrame

    def __deepcopy__(self, memo=None) -> SharedFrame:
        return self


# ---------------------------------------------------------------- budgets


def group_budgets(C, rtol: float = DEFAULT_BUDGET_RTOL) -> np.ndarray:
    """Representative FLOP budget of each value in C (an array shaped like C).

    Rule: sort the values and cut wherever two neighbours differ by more than a factor (1 + rtol). A resulting
    cluster whose smallest and largest values are within a factor (1 + rtol) is clearly separated from the others
    and is one budget, valued at its members' geometric mean. A cluster wider than that (a chain of values each
    close to the next, e.g. C spread continuously) is not one budget: its values are kept apart (only values
    equal to 1e-6 are merged).
    """
    values, _ = _cluster(C, rtol)
    return values


def _cluster(C, rtol: float) -> tuple[np.ndarray, int]:
    """group_budgets' values and the number of clusters too wide to be one budget."""
    c = np.asarray(C, dtype=float).ravel()
    if c.size and not np.all(np.isfinite(c) & (c > 0)):
        raise ConfigError("C", "positive finite FLOP counts to group into budgets")
    if not (math.isfinite(rtol) and rtol >= 0):
        raise ConfigError("budget_rtol", "a non-negative relative tolerance", rtol)
    out, n_wide = _gap_clusters(c, rtol)
    if n_wide:
        tight, _ = _gap_clusters(c, 1e-6)
        wide = _wide_members(c, rtol)
        out = np.where(wide, tight, out)
    return out.reshape(np.shape(C)), n_wide


def _gap_clusters(c: np.ndarray, rtol: float) -> tuple[np.ndarray, int]:
    """Geometric mean of each gap-separated cluster (per value) and the number of clusters wider than rtol."""
    if c.size == 0:
        return c.copy(), 0
    order = np.argsort(c, kind="stable")
    lc = np.log(c[order])
    label = np.concatenate([[0], np.cumsum(np.diff(lc) > math.log1p(rtol))])
    means = np.bincount(label, weights=lc) / np.bincount(label)
    first = np.searchsorted(label, np.arange(label[-1] + 1), side="left")
    last = np.searchsorted(label, np.arange(label[-1] + 1), side="right") - 1
    wide = (lc[last] - lc[first]) > math.log1p(rtol) + 1e-12
    out = np.empty_like(c)
    out[order] = np.exp(means[label])
    return out, int(wide.sum())


def _wide_members(c: np.ndarray, rtol: float) -> np.ndarray:
    """Mask of the values that belong to a gap-separated cluster wider than rtol."""
    order = np.argsort(c, kind="stable")
    lc = np.log(c[order])
    label = np.concatenate([[0], np.cumsum(np.diff(lc) > math.log1p(rtol))])
    first = np.searchsorted(label, np.arange(label[-1] + 1), side="left")
    last = np.searchsorted(label, np.arange(label[-1] + 1), side="right") - 1
    wide = (lc[last] - lc[first]) > math.log1p(rtol) + 1e-12
    mask = np.empty(c.size, dtype=bool)
    mask[order] = wide[label]
    return mask


def _cell_budgets(runs: pd.DataFrame, rtol: float) -> tuple[np.ndarray, int]:
    """group_budgets applied to the (N, D) cells (each at its runs' geometric-mean C), so the runs of one cell (an LR
    scan, replicate seeds) always share a budget; returns each run's budget and the number of too-wide clusters."""
    cell = runs.groupby(["N", "D"], sort=False).ngroup().to_numpy()
    log_c = np.log(runs["C"].to_numpy(float))
    cell_c = np.exp(np.bincount(cell, weights=log_c) / np.bincount(cell))
    values, n_wide = _cluster(cell_c, rtol)
    return values[cell], n_wide


def budgets_of(df: pd.DataFrame, *, need: int = 1, what: str = "this fit",
               budget_rtol: float = DEFAULT_BUDGET_RTOL) -> np.ndarray:
    """Budget value of each row (the `budget` column, else C grouped by group_budgets, else 6·N·D grouped),
    checking that there are at least `need` distinct budgets."""
    if "budget" in df.columns:
        b = pd.to_numeric(df["budget"], errors="coerce").to_numpy(dtype=float)
    else:
        c = df["C"].to_numpy(float) if "C" in df.columns else DEFAULT_K * df["N"].to_numpy(float) * df["D"].to_numpy(
            float)
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


# ---------------------------------------------------------------- reading


def _read_source(source) -> tuple[pd.DataFrame, pd.DataFrame | None, str, bool]:
    """The raw table, the per-checkpoint metrics (sweep directories), a label for messages, and whether the source
    is a sweep directory (its C, N and batch sizes come from this project's own accounting)."""
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True), None, "DataFrame", False
    path = Path(source)
    if path.is_dir():
        return (*_read_sweep(path), str(path), True)
    if not path.is_file():
        raise ConfigError(str(path), "an existing CSV or Parquet file, or a sweep results directory")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path), None, str(path), False
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path), None, str(path), False
    raise ConfigError(str(path), "a .csv or .parquet file, or a sweep results directory", suffix or "no suffix")


def _read_sweep(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not ((path / "runs").is_dir() or (path / "plan.json").is_file() or any(path.glob("*/plan.json"))):
        raise ConfigError(str(path), "a sweep results directory holding runs/ (or plan.json), or a CSV/Parquet file")
    try:
        runs, metrics = sweeps.load_results(path)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:  # a missing, torn or malformed store file
        raise ConfigError(str(path), "a readable sweep results directory", f"{type(e).__name__}: {e}") from None
    return count_params_as_convention(runs.copy(), metrics), metrics


def _read_csv(path: Path) -> pd.DataFrame:
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise ConfigError(str(path), "a CSV table with a header and at least one row", "an empty file")
    if head == b"PAR1":
        raise ConfigError(str(path), "CSV text", "a Parquet file with a .csv name (rename it to .parquet)")
    try:
        return pd.read_csv(path, encoding="utf-8-sig", low_memory=False)  # whole columns typed at once
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), "UTF-8 text (re-save the file as UTF-8)",
                          f"a byte that is not UTF-8 at offset {e.start}") from None
    except pd.errors.EmptyDataError:
        raise ConfigError(str(path), "a CSV table with a header and at least one row", "no columns") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise ConfigError(str(path), "a well-formed CSV table", str(e).strip().splitlines()[0][:200]) from None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError as e:
        raise ConfigError(str(path), "pyarrow to read Parquet (pip install scaling-planner[parquet])") from e
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
        raise ConfigError(str(path), "a readable Parquet file",
                          f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
                          ) from None


def count_params_as_convention(runs: pd.DataFrame, metrics: pd.DataFrame | None = None) -> pd.DataFrame:
    """Sweep runs whose budgets are counted as 6N_total get N = all params (the non-embedding count moves to
    N_non_embedding, and the metrics' N follows), so N and C = 6 N D agree; other sweeps keep non-embedding N."""
    conv = runs["flop_convention"].dropna().unique() if "flop_convention" in runs.columns else []
    if len(conv) != 1 or conv[0] != "6N_total" or "N_total" not in runs.columns or "N_non_embedding" in runs.columns:
        return runs  # not 6N_total, or already counted so
    runs["N_non_embedding"] = runs["N"]
    runs["N"] = runs["N_total"]
    if metrics is not None and not metrics.empty:
        metrics["N"] = metrics["run_id"].map(dict(zip(runs["run_id"], runs["N_total"]))).fillna(metrics["N"])
    return runs


# ---------------------------------------------------------------- columns


def apply_column_map(df: pd.DataFrame, columns: dict[str, str] | None, where: str) -> tuple[pd.DataFrame, dict]:
    """Rename source columns to canonical names (columns maps canonical name -> source column).

    A canonical name the table already has, but that is mapped from another column, is set aside as
    `<name>_unmapped` (the mapped column wins). Returns the table and {canonical: set-aside name}.
    """
    if not columns:
        return df, {}
    unknown = sorted(set(columns) - set(CANONICAL))
    if unknown:
        raise ConfigError("columns", f"canonical names among {list(CANONICAL)}", unknown)
    missing = [src for src in columns.values() if src not in df.columns]
    if missing:
        raise ConfigError(f"{where}: columns", f"source columns {missing} to exist; available: {list(df.columns)}")
    sources = list(columns.values())
    repeated = sorted({s for s in sources if sources.count(s) > 1})
    if repeated:
        raise ConfigError("columns", "each source column mapped to one canonical name", repeated)
    by_source = {src: canon for canon, src in columns.items()}
    taken = set(df.columns) | set(columns)
    renames, set_aside = {}, {}
    for col in df.columns:
        if col in by_source:
            renames[col] = by_source[col]
        elif col in columns:  # a canonical name that another column is mapped onto: set the old one aside
            new = f"{col}_unmapped"
            while new in taken:
                new += "_"
            taken.add(new)
            renames[col] = set_aside[col] = new
    return df.rename(columns=renames), set_aside


def _numeric(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Canonical numeric columns as float; a column with text that is not a number is a ConfigError."""
    for name in NUMERIC:
        if name not in df.columns:
            continue
        if pd.api.types.is_numeric_dtype(df[name]):
            df[name] = df[name].astype(float)
            continue
        values = pd.to_numeric(df[name], errors="coerce")
        text = df[name].notna() & values.isna()
        if text.any():
            examples = sorted({str(v) for v in df.loc[text, name].head(3)})
            raise ConfigError(f"{where}: column {name}", "numbers (in base units: params, tokens, FLOPs)",
                              f"{int(text.sum())} rows of text such as {examples}")
        df[name] = values.astype(float)
    return df


def _derive_missing(df: pd.DataFrame) -> dict[str, str]:
    """D = C/(6N) or N = C/(6D) when only the other two are given (the 6N convention); C is filled later."""
    derived = {}
    if "D" not in df.columns and {"C", "N"} <= set(df.columns):
        df["D"] = df["C"] / (DEFAULT_K * df["N"])
        derived["D"] = "C / (6 N)"
    elif "N" not in df.columns and {"C", "D"} <= set(df.columns):
        df["N"] = df["C"] / (DEFAULT_K * df["D"])
        derived["N"] = "C / (6 D)"
    return derived


# ---------------------------------------------------------------- statuses


def normalise_status(values: pd.Series) -> pd.Series:
    """Tracker states as lower-case first words ("CANCELLED by 12" -> "cancelled"); "" where none is given."""
    s = values.astype("string").fillna("").str.strip().str.lower()
    return s.str.split(n=1).str[0].fillna("").str.replace("-", "_", regex=False).astype(object)


def _status_alias(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Without a status column, a tracker's run-state column (W&B exports call it State) is read as the status, so
    crashed or running runs are never fitted by accident. Returns the table and {"status": source} if one was used."""
    found = [c for c in STATUS_ALIASES if c in df.columns]
    if "status" in df.columns or len(found) != 1:
        return df, {}
    return df.rename(columns={found[0]: "status"}), {"status": found[0]}


def _status_reason(status: str) -> str:
    if status == "":
        return "no status"
    if status in NOT_FINISHED_STATUSES:
        return f"status {status}"
    return f"status {status} (not a known finished state; known: {', '.join(FINISHED_STATUSES)})"


# ---------------------------------------------------------------- curves


CHECKPOINT_MEASURES = ("step", "D", "C", "loss")  # per-checkpoint values; every other column describes the run


def _split_curves(df: pd.DataFrame, where: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(one row per run, per-checkpoint rows or None). A run id on several rows with a step, or with D increasing,
    marks training curves; a run's row is its last checkpoint (by step, else D) with a finite loss. Run-level
    columns missing on that row (status, N, ... logged once per run) take the run's last value given; lr takes the
    run's largest (a logged schedule's peak, not its decayed last value)."""
    if "run_id" not in df.columns:
        return df, None
    run = df["run_id"].astype(str)
    if not run.duplicated().any():
        return df, None
    order_col = "step" if "step" in df.columns else "D"
    key = df[order_col].to_numpy(float)
    if not np.isfinite(key).all():
        raise ConfigError(f"{where}: column {order_col}", "a number on every checkpoint row of a per-checkpoint table",
                          f"{int((~np.isfinite(key)).sum())} rows without one")
    codes, _ = pd.factorize(run, sort=False)  # runs numbered in order of first appearance
    in_order = np.all((codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (key[1:] >= key[:-1])))
    if in_order:  # exports usually come sorted by run and step: no reordering copy
        checkpoints = df.assign(run_id=run.to_numpy())
    else:
        order = np.lexsort((key, codes))  # by run, then step (numeric keys)
        codes, key = codes[order], key[order]
        checkpoints = df.iloc[order].assign(run_id=run.to_numpy()[order])
    same_run = codes[1:] == codes[:-1]
    repeated = np.zeros(len(codes), dtype=bool)
    repeated[1:] |= same_run & (key[1:] == key[:-1])
    repeated[:-1] |= repeated[1:].copy()
    if repeated.any():
        bad = pd.unique(checkpoints["run_id"].to_numpy()[repeated])
        raise ConfigError(f"{where}: run_id", f"one row per run and {order_col} (rows of one run are checkpoints of "
                          f"its training curve; replicates need their own run ids)",
                          f"{int(repeated.sum())} rows repeat a (run_id, {order_col}) pair, e.g. runs "
                          f"{list(bad[:_MAX_LISTED])}")
    finite = np.isfinite(checkpoints["loss"].to_numpy(float))
    runs = checkpoints.iloc[_last_rows(codes, finite)]
    by_run = checkpoints.groupby("run_id", sort=False)
    for col in runs.columns:
        if col == "lr":
            runs[col] = runs["run_id"].map(by_run[col].max())
        elif col not in CHECKPOINT_MEASURES and col != "run_id" and runs[col].isna().any():
            runs[col] = runs[col].fillna(runs["run_id"].map(by_run[col].last()))
    return runs, checkpoints


def _last_rows(codes: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """Per run (codes sorted, 0..R-1): the position of its last row with a finite loss, else of its last row."""
    runs = np.arange(codes[-1] + 1)
    last_any = np.searchsorted(codes, runs, side="right") - 1
    pos = np.flatnonzero(finite)
    i = np.searchsorted(codes[pos], runs, side="right") - 1
    has = (i >= 0) & (codes[pos[np.maximum(i, 0)]] == runs) if pos.size else np.zeros(runs.size, dtype=bool)
    return np.where(has, pos[np.maximum(i, 0)] if pos.size else 0, last_any)


def _metrics_table(checkpoints: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The kept runs' checkpoints in the sweep folder's metrics layout (METRIC_COLUMNS); N and budget are the run's."""
    ck = checkpoints[checkpoints["run_id"].isin(runs["run_id"].to_numpy())]
    ids = pd.Index(runs["run_id"])
    budgets, run_N = runs["budget"].to_numpy(float), runs["N"].to_numpy(float)
    n = len(ck)
    nan = np.full(n, np.nan)
    out = pd.DataFrame({
        "run_id": ck["run_id"].to_numpy(),
        "step": ck["step"].to_numpy(float) if "step" in ck.columns else nan,
        "tokens": ck["D"].to_numpy(float),
        "flops": ck["C"].to_numpy(float),
        "train_loss": pd.to_numeric(ck["train_loss"], errors="coerce").to_numpy(float)
        if "train_loss" in ck.columns else nan,
        "val_loss": ck["loss"].to_numpy(float),
        "lr": ck["lr"].to_numpy(float) if "lr" in ck.columns else nan,
        "N": run_N[ids.get_indexer(ck["run_id"])],
        "budget": budgets[ids.get_indexer(ck["run_id"])],
    }, columns=list(METRIC_COLUMNS))
    values = out[["tokens", "flops", "val_loss", "N"]].to_numpy(float)
    return SharedFrame(out[np.isfinite(values).all(axis=1) & (values > 0).all(axis=1)].reset_index(drop=True))


# ---------------------------------------------------------------- checks


def _check_positive(df: pd.DataFrame, name: str, where: str) -> None:
    values = df[name].to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        raise ConfigError(f"{where}: column {name}", "positive finite values",
                          f"{int(bad.sum())} of {len(values)} rows are NaN, infinite or <= 0")


def _unit_hint(ratio: float) -> str:
    """What a C/(N·D) far from the 2-30 FLOPs per param per token of every convention suggests."""
    decades = math.log10(ratio / DEFAULT_K)
    step = int(3 * round(abs(decades) / 3))
    if decades < 0:
        prefix = {3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}.get(step)
        unit = f"{prefix}FLOPs (1e{step} FLOPs)" if prefix else f"units of 1e{step} FLOPs"
        return f"C looks like it is counted in {unit} rather than FLOPs" if step else "C is not 2-30 x N·D"
    scale = {3: "thousands", 6: "millions", 9: "billions", 12: "trillions"}.get(step, f"units of 1e{step}")
    return f"N or D looks like it is counted in {scale} rather than single parameters / tokens" if step else (
        "C is not 2-30 x N·D")


def _check_units(df: pd.DataFrame, column_names: dict[str, str], where: str) -> float:
    """Median C/(N·D) of the rows; ConfigError naming the columns when it lies outside every known convention."""
    ratio = (df["C"] / (df["N"] * df["D"])).to_numpy(float)
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    if ratio.size == 0:
        return math.nan
    k = float(np.median(ratio))
    lo, hi = PLAUSIBLE_K
    if not lo <= k <= hi:
        cols = ", ".join(f"{c} (column {column_names.get(c, c)!r})" for c in ("C", "N", "D"))
        raise ConfigError(f"{where}: units of {cols}",
                          f"C / (N·D) between {lo:g} and {hi:g} FLOPs per parameter per token (6 for the 6N "
                          f"convention; C in FLOPs, N in parameters, D in tokens)",
                          f"median {k:.3g}: {_unit_hint(k)}")
    return k


def _inconsistent_C(df: pd.DataFrame, k: float, c_rtol: float) -> np.ndarray:
    """Mask of rows whose C/(N·D) differs from k by more than a factor (1 + c_rtol) either way."""
    ratio = (df["C"] / (df["N"] * df["D"])).to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.abs(np.log(ratio / k)) > math.log1p(c_rtol)
    return off & np.isfinite(ratio)


def _row_label(df: pd.DataFrame, i) -> str:
    label = str(df.at[i, "run_id"])
    if "step" in df.columns and math.isfinite(df.at[i, "step"]):
        label += f"@step {df.at[i, 'step']:g}"
    return label


# ---------------------------------------------------------------- load_runs


def load_runs(source, columns: dict[str, str] | None = None, *, budget_rtol: float = DEFAULT_BUDGET_RTOL,
              c_rtol: float | None = DEFAULT_C_RTOL, param_count: str | None = None,
              batch_unit: str | None = None) -> pd.DataFrame:
    """One row per finished run with canonical columns N, D, loss, C, budget (+ lr, batch_size, run_id, ...).

    source: a DataFrame, a CSV or Parquet path, or a sweep results directory (one holding `runs/` or plan.json;
    read with `sweeps.load_results`; its per-checkpoint metrics are kept in df.attrs["metrics"]).
    columns: canonical name -> source column, e.g. {"N": "Model Size", "loss": "smooth loss"}; any canonical name
    (CANONICAL), also one the table already has (the old column is set aside as `<name>_unmapped`).
    Derived columns (6N convention): D = C/(6N) when D is missing, N = C/(6D) when N is missing, C = 6·N·D when C
    is missing.
    Per-checkpoint tables (run id + step, or D increasing within a run): one row per run, its last checkpoint with
    a finite loss; the kept runs' curves go to df.attrs["metrics"].
    Status: only runs whose status means finished are kept (see FINISHED_STATUSES); the rest, runs without a finite
    loss, and rows whose C disagrees with k·N·D (k = the table's median C/(N·D)) by more than c_rtol (None: no
    check; not applied to sweep folders, whose C comes from the accounting) are left out and listed in
    df.attrs["excluded"] with counts in df.attrs["excluded_counts"]; exact duplicate rows are counted once.
    Units: a median C/(N·D) outside PLAUSIBLE_K (C in GFLOPs, D in thousands, ...) is a ConfigError.
    param_count: whether N counts all parameters ("total") or leaves out the embeddings ("non-embedding"); recorded
    in df.attrs["parameter_count"] ("unspecified" for a table when not given; a sweep records its own).
    batch_unit: the unit of batch_size, "tokens" or "sequences" (then multiplied by the seq_len column); default:
    sequences when the table has a seq_len column, else tokens. A sweep folder, or this project's runs table written
    from one (it has a flop_convention column), counts C with the accounting and batch_size in tokens: no C
    consistency check and no batch conversion there. Recorded in
    df.attrs["batch_unit"]. Budgets: the `budget` column, else C grouped by group_budgets(budget_rtol).
    A table this function returned (df.attrs["loaded_by"]) is returned as it is.
    Raises ConfigError for unreadable, empty or header-only sources, missing columns, text in numeric columns, and
    NaN / non-positive N, D, C among the kept runs.
    """
    param_count = _choice("param_count", param_count, PARAM_COUNTS)
    batch_unit = _choice("batch_unit", batch_unit, BATCH_UNITS)
    if isinstance(source, pd.DataFrame) and source.attrs.get("loaded_by") == LOADED_BY:
        if columns or param_count or batch_unit:
            raise ConfigError("load_runs", "columns, param_count and batch_unit on the first load of a table, not on "
                              "a table load_runs already returned", "options on a loaded table")
        return source
    if c_rtol is not None and not (math.isfinite(c_rtol) and c_rtol > 0):
        raise ConfigError("c_rtol", "a positive relative tolerance, or None for no check", c_rtol)
    raw, sweep_metrics, where, from_sweep = _read_source(source)
    if not from_sweep and "flop_convention" in raw.columns:  # this project's runs table, e.g. exported
        from_sweep, raw = True, count_params_as_convention(raw.copy())
    if raw.empty:
        raise ConfigError(where, "a table with at least one row of runs", f"no rows (columns: {list(raw.columns)})")
    df, n_duplicates = _drop_duplicates(raw, where)
    df, set_aside, aliases, derived = _canonical_columns(df, columns, where)
    k, inconsistent = math.nan, []
    if not from_sweep and "C" not in derived:
        df, k, inconsistent = _consistent_C(df, dict(columns or {}), c_rtol, where)

    runs, checkpoints = _split_curves(df, where)
    runs, excluded = _exclude(runs)
    excluded = inconsistent + excluded
    if runs.empty:
        raise ConfigError(f"{where}: runs", "at least one finished run with a finite loss",
                          f"0 usable of {len(df)} rows ({_counts_text(excluded)})")
    for name in ("N", "D", "loss", "C"):
        _check_positive(runs, name, where)
    runs, unit = _batch_in_tokens(runs, batch_unit, from_sweep, where)
    runs, budget_rule = _assign_budgets(runs, budget_rtol, where)
    runs = runs.reset_index(drop=True)
    metrics = sweep_metrics
    if metrics is not None and "run_id" in metrics.columns:  # only the fitted runs' curves
        metrics = SharedFrame(metrics[metrics["run_id"].astype(str).isin(set(runs["run_id"]))].reset_index(drop=True))
    if checkpoints is not None:
        metrics = _metrics_table(checkpoints, runs)
    runs.attrs = {
        "loaded_by": LOADED_BY,
        "source": where,
        "excluded": excluded,
        "excluded_counts": dict(Counter(e["category"] for e in excluded)),
        "duplicates": n_duplicates,
        "inconsistent_C": [e["run_id"] for e in inconsistent],
        "k_table": k,
        "c_rtol": c_rtol,
        "parameter_count": _parameter_count(runs, param_count, from_sweep),
        "batch_unit": unit,
        "column_map": dict(columns or {}),
        "set_aside": set_aside,
        "aliases": aliases,
        "derived": derived,
        "budget_rule": budget_rule,
        "per_checkpoint": checkpoints is not None,
    }
    if metrics is not None:
        runs.attrs["metrics"] = metrics
    return runs


def _canonical_columns(df: pd.DataFrame, columns: dict[str, str] | None,
                       where: str) -> tuple[pd.DataFrame, dict, dict, dict]:
    """Mapped, numeric canonical columns with N, D, C, run_id present; returns the table and what was set aside,
    aliased and derived."""
    df, set_aside = apply_column_map(df, columns, where)
    df, aliases = _status_alias(df)
    df = _numeric(df, where)
    derived = _derive_missing(df)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ConfigError(f"{where}: columns", f"columns {missing} (map them with columns={{canonical: source}}); "
                          f"available: {list(df.columns)}")
    if "run_id" not in df.columns:
        df["run_id"] = [f"row{i}" for i in df.index]
    df["run_id"] = df["run_id"].astype(str)
    if "C" not in df.columns:
        df["C"] = DEFAULT_K * df["N"] * df["D"]
        derived["C"] = "6 N D"
    return df, set_aside, aliases, derived


def _consistent_C(df: pd.DataFrame, columns: dict[str, str], c_rtol: float | None,
                  where: str) -> tuple[pd.DataFrame, float, list[dict]]:
    """Check C's units (ConfigError) and leave out, with a warning, rows whose C/(N·D) is more than c_rtol from the
    table's median k. Returns the kept rows, k and the excluded entries."""
    k = _check_units(df, columns, where)
    if c_rtol is None or not math.isfinite(k):
        return df, k, []
    off = _inconsistent_C(df, k, c_rtol)
    inconsistent = [{"run_id": _row_label(df, i), "status": None, "category": "C inconsistent with k·N·D",
                     "reason": f"C/(N·D) = {df.at[i, 'C'] / (df.at[i, 'N'] * df.at[i, 'D']):.4g}, more than "
                               f"{100 * c_rtol:g}% from the table's k = {k:.4g}"}
                    for i in df.index[off]]
    if inconsistent:
        listed = ", ".join(e["run_id"] for e in inconsistent[:_MAX_LISTED])
        more = f" and {len(inconsistent) - _MAX_LISTED} more" if len(inconsistent) > _MAX_LISTED else ""
        warnings.warn(f"{where}: {len(inconsistent)} row(s) left out because their C disagrees with k·N·D "
                      f"(k = {k:.4g}, tolerance {100 * c_rtol:g}%): {listed}{more}", stacklevel=3)
    return df[~off], k, inconsistent


def _assign_budgets(runs: pd.DataFrame, budget_rtol: float, where: str) -> tuple[pd.DataFrame, str]:
    """The budget column (checked), else budgets from C clusters of (N, D) cells; returns the rule used."""
    if "budget" in runs.columns:
        _check_positive(runs, "budget", where)
        return runs, "the budget column"
    runs["budget"], n_wide = _cell_budgets(runs, budget_rtol)
    rule = (f"C clusters of (N, D) cells: neighbours within {100 * budget_rtol:g}% and the whole cluster within "
            f"{100 * budget_rtol:g}% form one budget (geometric mean); a cell is never split")
    if n_wide:
        rule += f"; {n_wide} cluster(s) wider than that kept as separate C values"
        warnings.warn(f"{where}: {n_wide} group(s) of runs have C values spread continuously (wider than "
                      f"{100 * budget_rtol:g}%), so they are not treated as one budget; add a `budget` column to say "
                      "which runs share a budget", stacklevel=3)
    return runs, rule


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise ConfigError(name, f"one of {list(allowed)}", value)
    return value


def _drop_duplicates(raw: pd.DataFrame, where: str) -> tuple[pd.DataFrame, int]:
    """Exact duplicate rows counted once (with a warning); the index keeps the rows' positions in the source."""
    try:
        dup = raw.duplicated()
    except TypeError:  # unhashable cells (lists): no exact-duplicate check possible
        return raw.copy(), 0
    n = int(dup.sum())
    if n:
        warnings.warn(f"{where}: {n} exact duplicate row(s) counted once", stacklevel=3)
    return raw[~dup].copy(), n


def _exclude(df: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Keep finished runs with a finite loss; list the others (run_id, status, reason, category)."""
    if "status" in df.columns:
        status = normalise_status(df["status"])
        not_finished = ~status.isin(FINISHED_STATUSES).to_numpy()
    else:
        status = pd.Series("", index=df.index, dtype=object)
        not_finished = np.zeros(len(df), dtype=bool)
    no_loss = ~np.isfinite(df["loss"].to_numpy(float))
    excluded = []
    for pos in np.flatnonzero(not_finished | no_loss):
        s = status.iloc[pos]
        if not_finished[pos]:
            reason, category = _status_reason(s), (s or "no status")
        else:
            reason, category = "no finite loss", "no finite loss"
        excluded.append({"run_id": str(df["run_id"].iloc[pos]), "status": s or None, "reason": reason,
                         "category": category})
    return df[~(not_finished | no_loss)].copy(), excluded


def _counts_text(excluded: list[dict]) -> str:
    counts = Counter(e["category"] for e in excluded)
    return ", ".join(f"{n} {c}" for c, n in counts.most_common()) or "none excluded"


def _batch_in_tokens(df: pd.DataFrame, batch_unit: str | None, from_sweep: bool,
                     where: str) -> tuple[pd.DataFrame, str | None]:
    """batch_size converted to tokens; returns the unit the source used (None without a batch_size column)."""
    if "batch_size" not in df.columns:
        return df, None
    if from_sweep:
        if batch_unit == "sequences":
            raise ConfigError("batch_unit", "tokens for a sweep folder (its batch_size is recorded in tokens)",
                              batch_unit)
        return df, "tokens"
    unit = batch_unit or ("sequences" if "seq_len" in df.columns else "tokens")
    if unit == "sequences":
        if batch_unit is None:
            warnings.warn(f"{where}: batch_size read in sequences (the table has a seq_len column) and converted to "
                          "tokens; pass batch_unit='tokens' (--batch-unit tokens) if it already counts tokens",
                          stacklevel=3)
        if "seq_len" not in df.columns:
            raise ConfigError(f"{where}: batch_unit", "a seq_len column (tokens per sequence) to convert a batch "
                              "size in sequences to tokens", "no seq_len column")
        df["batch_size_sequences"] = df["batch_size"]
        df["batch_size"] = df["batch_size"] * df["seq_len"]
    return df, unit


def _parameter_count(df: pd.DataFrame, declared: str | None, from_sweep: bool) -> str:
    """What N counts: declared, else what a sweep records (6N_total sweeps count every parameter), else unknown."""
    if declared is not None:
        return declared
    if from_sweep:
        return "total" if "N_non_embedding" in df.columns else "non-embedding"
    return "unspecified"
