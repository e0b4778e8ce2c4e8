"""Approach 1 (training-curve envelope): at each FLOP count, the lowest loss reached by any run; the runs on
that frontier give N_opt(C), D_opt(C) and L_opt(C) power laws.

Units: N in parameters, D in tokens (seen at the checkpoint), C in FLOPs, loss in nats/token.
Input: per-checkpoint rows, as a sweep folder's metrics or any per-checkpoint table gives them
(analysis.load_runs keeps them in df.attrs["metrics"]: run_id, N, flops, tokens, val_loss, ...).
Each run's loss curve is interpolated (linearly in log C) at n_bins log-spaced FLOP values inside the run's own
range (no extrapolation); at each value the winning run is the one with the lowest loss. Interpolating rather than
taking the lowest checkpoint inside a bin avoids favouring whichever run happens to have a checkpoint near the
bin's upper edge. A FLOP value won by the smallest or largest model covering it is censored (the optimum may lie
beyond the models trained) and left out of the laws. Bootstrap: resample whole runs with replacement and redo
the frontier and the laws; a resample that leaves fewer than 2 uncensored FLOP values is a failed draw.
Cost: linear in checkpoints (one sort, then vectorised interpolation) plus n_boot x runs x n_bins for the
bootstrap, done in chunks of bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.data import require_columns
from analysis.powerlaw import AllocationFit, allocation_fields, bootstrap_counts, power_law_result, weighted_line
from analysis.result import ALLOCATION_EXPONENT, MIN_RESAMPLE_UNITS
from scaling.errors import ConfigError

BOOTSTRAP_METHOD = "bootstrap:runs"
_CHUNK_ELEMENTS = 1 << 22  # resamples x runs x bins held at once in the bootstrap (bounds its memory)


@dataclass(eq=False, repr=False)
class EnvelopeFit(AllocationFit):
    """Envelope fit (approach 1): the AllocationFit laws, and .frontier: one row per FLOP value (C, N, D, loss,
    run_id of the winner, censored flag)."""

    kind = "envelope"
    table_name = "frontier"
    summary_keys = ("n_runs", "n_checkpoints", "n_bins", "n_used", "n_censored", "bootstrap")

    name: str = "envelope (approach 1)"
    frontier: pd.DataFrame = field(default_factory=pd.DataFrame)


def _first_present(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in df.columns), None)


def _checkpoints(metrics_df: pd.DataFrame, k: float, exclude_runs) -> pd.DataFrame:
    """Canonical per-checkpoint table: run_id, N, C, D, loss (rows without a finite positive value dropped),
    sorted by run and C."""
    require_columns(metrics_df, ["N"], "envelope")
    c_col = _first_present(metrics_df, ("flops", "C"))
    loss_col = _first_present(metrics_df, ("val_loss", "loss", "train_loss"))
    if c_col is None or loss_col is None:
        raise ConfigError("envelope: columns", "per-checkpoint columns N, flops (or C) and val_loss (or loss); "
                          f"available: {list(metrics_df.columns)}")
    d_col = _first_present(metrics_df, ("tokens", "D"))
    out = pd.DataFrame({
        "run_id": metrics_df["run_id"].astype(str) if "run_id" in metrics_df.columns
        else metrics_df["N"].astype(str),
        "N": pd.to_numeric(metrics_df["N"], errors="coerce"),
        "C": pd.to_numeric(metrics_df[c_col], errors="coerce"),
        "loss": pd.to_numeric(metrics_df[loss_col], errors="coerce"),
    })
    out["D"] = pd.to_numeric(metrics_df[d_col], errors="coerce") if d_col else out["C"] / (k * out["N"])
    if exclude_runs:
        out = out[~out["run_id"].isin({str(r) for r in exclude_runs})]
    values = out[["N", "C", "D", "loss"]].to_numpy(float)
    good = np.isfinite(values).all(axis=1) & (values > 0).all(axis=1)
    return out[good].sort_values(["run_id", "C"], kind="stable").reset_index(drop=True)


def _curves_on_grid(ck: pd.DataFrame, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run ids, their N, and the (R x J) loss and tokens of each run interpolated at the FLOP values `grid`
    (inf / NaN outside the run's range). `ck` is sorted by run and C; one vectorised pass over all checkpoints."""
    run_codes, runs = pd.factorize(ck["run_id"], sort=True)
    n_runs = runs.size
    start = np.searchsorted(run_codes, np.arange(n_runs), side="left")
    stop = np.searchsorted(run_codes, np.arange(n_runs), side="right")
    lc = np.log(ck["C"].to_numpy(float))
    ll = ck["loss"].to_numpy(float)
    ld = np.log(ck["D"].to_numpy(float))
    lg = np.log(grid)
    lo = min(lc.min(), lg.min())
    width = max(lc.max(), lg.max()) - lo + 1.0  # runs occupy disjoint key ranges
    keys = run_codes * width + (lc - lo)
    r = np.arange(n_runs)[:, None]
    pos = np.searchsorted(keys, r * width + (lg - lo)[None, :], side="right") - 1
    left = np.clip(pos, start[:, None], stop[:, None] - 1)
    right = np.minimum(left + 1, stop[:, None] - 1)
    span = lc[right] - lc[left]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(span > 0, (lg[None, :] - lc[left]) / np.where(span > 0, span, 1.0), 0.0)
    t = np.clip(t, 0.0, 1.0)
    first, last = lc[start][:, None], lc[stop - 1][:, None]
    inside = (lg[None, :] >= first - 1e-12) & (lg[None, :] <= last + 1e-12)
    loss = np.where(inside, ll[left] + t * (ll[right] - ll[left]), np.inf)
    tokens = np.where(inside, np.exp(ld[left] + t * (ld[right] - ld[left])), np.nan)
    N_run = ck["N"].to_numpy(float)[start]
    return np.asarray(runs), N_run, loss, tokens


def _frontier(best: np.ndarray, N_run: np.ndarray, present: np.ndarray):
    """Winner run per bin and whether the bin is censored, for each mask of present runs (B x R).

    Returns winner (B x J, -1 if empty bin) and censored (B x J).
    """
    B, J = len(present), best.shape[1]
    winner, censored = np.full((B, J), -1), np.ones((B, J), bool)
    by_size = np.argsort(N_run, kind="stable")
    for j in range(J):  # per bin, on boolean (B, runs in the bin) gathers: ~10x less memory traffic than (B, R, J)
        has = np.isfinite(best[:, j])
        if not has.any():
            continue
        by_loss = np.flatnonzero(has)
        by_loss = by_loss[np.argsort(best[by_loss, j], kind="stable")]  # ties keep run order, as argmin does
        hit = present[:, by_loss]
        found = hit.any(axis=1)
        win = by_loss[hit.argmax(axis=1)]  # the lowest loss among the present runs
        sized = by_size[has[by_size]]
        hit = present[:, sized]
        nmin = N_run[sized[hit.argmax(axis=1)]]  # smallest present model with a checkpoint in the bin
        nmax = N_run[sized[len(sized) - 1 - hit[:, ::-1].argmax(axis=1)]]
        winner[:, j] = np.where(found, win, -1)
        censored[:, j] = ~found | (N_run[win] <= nmin) | (N_run[win] >= nmax)
    return winner, censored


def fit_envelope(metrics_df: pd.DataFrame, *, n_bins: int = 30, n_boot: int = 1000, seed: int = 0, k: float = 6.0,
                 exclude_runs=None) -> EnvelopeFit:
    """Approach 1 from per-checkpoint rows (columns N, flops or C, val_loss or loss, tokens or D, run_id).

    D defaults to C/(k·N) when no tokens column is given. exclude_runs: run_ids to leave out (e.g. diverged).
    Needs at least 3 runs of distinct N and at least 2 uncensored bins. Intervals: bootstrap over runs, with
    n_ok/n_total; undetermined (with the reason) when fewer than 90% of the resamples leave 2 usable bins, or when
    there are fewer than MIN_RESAMPLE_UNITS runs to resample.
    """
    if n_bins < 2:
        raise ConfigError("n_bins", "at least 2 log-spaced FLOP bins", n_bins)
    if n_boot < 0:
        raise ConfigError("n_boot", "a non-negative number of bootstrap resamples", n_boot)
    ck = _checkpoints(metrics_df, k, exclude_runs)
    if ck.empty:
        raise ConfigError("envelope", "checkpoints with positive finite N, C, D and loss", "none")
    lc = np.log(ck["C"].to_numpy(float))
    grid = np.exp(np.linspace(lc.min(), lc.max(), n_bins))
    runs, N_run, best, tokens = _curves_on_grid(ck, grid)
    if np.unique(N_run).size < 3:
        raise ConfigError("envelope", "checkpoints from at least 3 runs of distinct model size N",
                          f"{np.unique(N_run).size}")
    winner, censored = _frontier(best, N_run, np.ones((1, runs.size), bool))
    winner, censored = winner[0], censored[0]
    filled = winner >= 0
    cols = np.arange(n_bins)
    frontier = pd.DataFrame({
        "C": grid,
        "N": np.where(filled, N_run[winner], np.nan),
        "D": np.where(filled, tokens[winner, cols], np.nan),
        "loss": np.where(filled, best[winner, cols], np.nan),
        "run_id": [runs[w] if w >= 0 else None for w in winner],
        "censored": censored,
    })[filled].reset_index(drop=True)
    used = frontier[~frontier["censored"]]
    if len(used) < 2:
        raise ConfigError("envelope", "at least 2 FLOP bins won by a model that is neither the smallest nor the "
                          "largest trained (add smaller/larger models or more checkpoints)", f"{len(used)} bins")
    reason = "" if n_boot else "no bootstrap (n_boot = 0)"
    if n_boot and runs.size < MIN_RESAMPLE_UNITS:
        reason = f"only {runs.size} runs (< {MIN_RESAMPLE_UNITS}) to resample: a bootstrap over runs is degenerate"
    boot = _bootstrap(grid, best, tokens, N_run, n_boot, seed) if n_boot and not reason else None
    laws = {}
    labels = {"N": ("N_opt(C)", "N_opt [params]"), "D": ("D_opt(C)", "D_opt [tokens]"), "L": ("L_opt(C)", "L_opt")}
    for key, col in (("N", "N"), ("D", "D"), ("L", "loss")):
        draws = None
        if boot is not None:
            intercept, slope = weighted_line(np.log(boot["C"]), np.log(boot[col]), boot["w"])
            draws = {"coef": np.exp(intercept), "exponent": slope}
        coef, exponent = _plain_law(used["C"].to_numpy(), used[col].to_numpy())
        laws[key] = power_law_result(used["C"], used[col], coef, exponent, draws=draws, name=labels[key][0],
                                     x_name="C [FLOPs]", y_name=labels[key][1],
                                     method=BOOTSTRAP_METHOD if n_boot else "none",
                                     undetermined_reason=reason,
                                     exponent_range=ALLOCATION_EXPONENT if key != "L" else None)
    diagnostics = {"n_runs": int(runs.size), "n_checkpoints": len(ck), "n_bins": n_bins, "n_used": len(used),
                   "n_censored": int(frontier["censored"].sum()), "bootstrap": BOOTSTRAP_METHOD if n_boot else "none",
                   "k": k}
    return EnvelopeFit(**allocation_fields(laws["N"], laws["D"], laws["L"]), diagnostics=diagnostics,
                       frontier=frontier)


def _plain_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    i, s = weighted_line(np.log(x), np.log(y), np.ones(len(x)))
    return float(np.exp(i)), float(s)


def _bootstrap(grid, best, tokens, N_run, n_boot: int, seed: int) -> dict:
    """Frontier points (B x J arrays C, N, D, loss) and weights (1 = usable) for resampled sets of runs."""
    present = bootstrap_counts(N_run.size, n_boot, seed) > 0  # duplicates do not change a minimum
    chunk = max(1, _CHUNK_ELEMENTS // max(1, N_run.size * grid.size))
    parts = [_frontier(best, N_run, present[b:b + chunk]) for b in range(0, n_boot, chunk)]
    winner = np.concatenate([p[0] for p in parts])
    censored = np.concatenate([p[1] for p in parts])
    cols = np.arange(grid.size)[None, :]
    w_idx = np.where(winner >= 0, winner, 0)
    return {"C": np.broadcast_to(grid, winner.shape), "N": N_run[w_idx], "D": tokens[w_idx, cols],
            "loss": np.where(winner >= 0, best[w_idx, cols], np.nan), "w": (~censored).astype(float)}
