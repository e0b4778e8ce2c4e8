"""Hyperparameter laws by cell: the loss-optimal peak learning rate (and batch size) of each scanned cell, then
their laws across cells.

Units: lr is the peak learning rate, batch_size in tokens, C in FLOPs, N in params, D in tokens; logs are base 10
except the loss, which is fitted as ln L (the noise model is relative: sigma is the sd of ln L of one run).

A cell is one (N, D) pair: in a sweep, one model at one budget. It is never a group of runs whose C happens to fall
within a tolerance, and it does not depend on a `kind` column. A cell is scanned in a hyperparameter when it holds
at least MIN_SCAN distinct values of it; only scanned cells locate an optimum, and a table without any scanned cell
is refused ("no LR scan: one LR per cell").

Per scanned cell: replicates (runs that differ only in seed) are averaged; ln L is fitted by weighted least squares
as a quadratic in log10 lr, or as a quadratic surface in (log10 lr, log10 B) when the cell also scans >= MIN_SCAN
batch sizes. The optimum is the fitted minimum; it is flagged `edge_lr` / `edge_batch` when it lies at or beyond
the scanned range (closer to an end value than to that end's neighbour), `not_convex` when the fit has no minimum.
Its interval comes from a bootstrap over the cell's runs, or, when the cell has fewer than RUN_BOOTSTRAP_MIN_RUNS
runs (or the run bootstrap fails too often), a residual bootstrap that simulates new losses with the noise model.
A draw whose optimum falls outside the scanned range, or that has no minimum, is a failed draw, never clipped.

Across cells, lr_opt(C) is regressed over the compute-optimal cells: per budget, the scanned cell nearest the
budget's optimum N (the vertex of the budget's best losses in log N), interpolated linearly in log N towards the
usable cell on the other side of that optimum when the budget has one (at fixed C, log lr* is linear in log N in the
Step-Law form; the nearest cell alone is off by up to half a grid step, which biased lr_opt at 100x extrapolation
out of its interval in simulations). When sizes vary, the Step-Law form lr(N, D) = c N^p D^q is fitted over every
usable cell; likewise B_opt(C) and B(D) when a batch grid exists. These regressions weigh each point by its
precision (its bootstrap variance) plus a between-cell scatter term (random effects, estimated by moments), so a law
the cells do not follow gets wider intervals; each draw regresses the cells' bootstrap optima, interpolated at that
draw's budget optimum N (redrawn from the cells' optimal losses with the noise model). With a located optimum at
only one budget there is no law in C: the cells are reported and lr_opt stays None (a recommendation can then use
that measured optimum, with its own interval, instead of a published law).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from analysis.noise import NoiseEstimate, collapse_replicates, residual_noise
from analysis.powerlaw import PowerLawFit, power_law_result
from analysis.result import (
    HYPERPARAM_EXPONENT,
    FitResult,
    Interval,
    interval_from_draws,
    json_safe,
    unreliable_reasons,
)
from scaling.errors import ConfigError

MIN_SCAN = 3  # distinct values of a hyperparameter at one (N, D) for it to count as scanned
CELL_RTOL = 1e-3  # N (or D) values closer than this (relative) are the same model (data) size
RUN_BOOTSTRAP_MIN_RUNS = 12  # fewer runs in a cell: resampling them is degenerate, use the residual bootstrap
MIN_LAW_CELLS = 2  # cells at distinct budgets needed for a law in C
MIN_TESTED_BUDGETS = 3  # budgets a law in C needs before it is trusted to extrapolate: two fix a power law exactly
MIN_STEPLAW_CELLS = 4  # cells for lr = c N^p D^q (3 coefficients and one degree of freedom)
MIN_VARIANCE = 1e-6  # floor of a cell optimum's variance [decades^2] in the law weights
NO_DRAWS = "no resamples (n_boot = 0)"
FLAGS = ("edge_lr", "edge_batch", "not_convex", "lr_undetermined", "batch_undetermined")
LR_FLAGS = frozenset({"edge_lr", "not_convex", "lr_undetermined"})  # any of these keeps a cell out of the lr laws
BATCH_FLAGS = frozenset({"edge_batch", "not_convex", "batch_undetermined"})
NUMERIC_CELL_COLUMNS = ("N", "D", "C", "budget", "best_loss", "best_loss_se_sigma", "budget_log10_N_opt", "lr_opt",
                        "lr_lo", "lr_hi", "batch_opt", "batch_lo", "batch_hi", "loss_opt", "loss_opt_se_sigma")


# ---------------------------------------------------------------- cells


def _size_labels(values: np.ndarray, rtol: float) -> np.ndarray:
    """Integer label per value; sorted values whose neighbours differ by at most rtol (relative) share one label."""
    logv = np.log(values)
    order = np.argsort(logv)
    new = np.r_[True, np.diff(logv[order]) > math.log1p(rtol)]
    labels = np.empty(values.size, dtype=np.int64)
    labels[order] = np.cumsum(new) - 1
    return labels


def cell_ids(df: pd.DataFrame) -> np.ndarray:
    """Cell index of each run: one cell per distinct (N, D) pair (values within CELL_RTOL are the same size)."""
    n_lab = _size_labels(df["N"].to_numpy(float), CELL_RTOL)
    d_lab = _size_labels(df["D"].to_numpy(float), CELL_RTOL)
    return pd.MultiIndex.from_arrays([n_lab, d_lab]).factorize()[0]


def _positive(df: pd.DataFrame, col: str) -> np.ndarray:
    vals = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
    bad = ~(np.isfinite(vals) & (vals > 0))
    if bad.any():
        raise ConfigError(f"hyperparams: column {col}", "positive finite values", f"{int(bad.sum())} bad rows")
    return vals


def _batch_sizes(df: pd.DataFrame) -> np.ndarray:
    """Batch sizes [tokens]: positive, or missing (NaN: a run whose batch size is unknown)."""
    vals = pd.to_numeric(df["batch_size"], errors="coerce").to_numpy(float)
    given = df["batch_size"].notna().to_numpy()
    bad = given & ~(np.isfinite(vals) & (vals > 0))
    if bad.any():
        raise ConfigError("hyperparams: column batch_size", "positive finite batch sizes in tokens (or empty)",
                          f"{int(bad.sum())} bad rows")
    return vals


def _same_batch(batch: np.ndarray, size: float) -> np.ndarray:
    """Runs at one batch size (NaN: the runs whose batch size is unknown)."""
    return np.isnan(batch) if math.isnan(size) else batch == size


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Validated runs: cell, N, D, C, budget, lr, batch_size (tokens, NaN when absent), loss."""
    missing = [c for c in ("N", "D", "lr", "loss") if c not in df.columns]
    if missing:
        raise ConfigError("hyperparams: columns", f"columns {missing} (a cell is an (N, D) pair); "
                          f"available: {list(df.columns)}")
    out = pd.DataFrame({c: _positive(df, c) for c in ("N", "D", "lr", "loss")})
    out["batch_size"] = _batch_sizes(df) if "batch_size" in df.columns else np.nan
    out["C"] = _positive(df, "C") if "C" in df.columns else 6.0 * out["N"] * out["D"]
    out["budget"] = _positive(df, "budget") if "budget" in df.columns else np.nan
    out["cell"] = cell_ids(out)
    return out


def _scan_refusal(points: pd.DataFrame) -> ConfigError:
    """The error for a table where no cell holds MIN_SCAN learning rates at one batch size."""
    per_cell = points.groupby(["cell", "batch_size"], dropna=False)["lr"].nunique().groupby(level=0).max()
    most = int(per_cell.max())
    detail = "one LR per cell" if most <= 1 else f"at most {most} learning rates per cell at one batch size"
    return ConfigError("hyperparams", f"an LR scan: >= {MIN_SCAN} distinct learning rates at one (N, D)",
                       f"no LR scan: {detail} ({per_cell.size} cells)")


# ---------------------------------------------------------------- one cell's quadratic


def _design(u: np.ndarray, v: np.ndarray | None) -> np.ndarray:
    """Quadratic design in centred coordinates: [1, u, u^2] or [1, u, v, u^2, v^2, u v]."""
    if v is None:
        return np.stack([np.ones_like(u), u, u * u], axis=1)
    return np.stack([np.ones_like(u), u, v, u * u, v * v, u * v], axis=1)


def _solve(X: np.ndarray, Y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted least-squares coefficients for each row of Y (B x m) with weights W (B x m); NaN rows where the
    weighted design is rank-deficient."""
    XtWX = np.einsum("bm,mi,mj->bij", W, X, X)
    XtWy = np.einsum("bm,mi,bm->bi", W, X, Y)
    s = np.linalg.svd(XtWX, compute_uv=False)
    ok = s[:, -1] > 1e-10 * np.maximum(s[:, 0], 1e-300)
    out = np.full((len(W), X.shape[1]), np.nan)
    if ok.any():
        out[ok] = np.linalg.solve(XtWX[ok], XtWy[ok][..., None])[..., 0]
    return out


def _minimum(coef: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u*, v*, y*) of each row's quadratic in centred coordinates; NaN unless it has a minimum (v* NaN in 1-D)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if coef.shape[-1] == 3:
            c0, c1, c2 = coef[..., 0], coef[..., 1], coef[..., 2]
            convex = c2 > 0
            us = np.where(convex, -c1 / (2 * np.where(convex, c2, 1.0)), np.nan)
            return us, np.full_like(us, np.nan), c0 + 0.5 * c1 * us
        h11, h22, h12 = 2 * coef[..., 3], 2 * coef[..., 4], coef[..., 5]
        det = h11 * h22 - h12 * h12
        convex = (h11 > 0) & (det > 0)
        safe = np.where(convex, det, 1.0)
        us = np.where(convex, -(h22 * coef[..., 1] - h12 * coef[..., 2]) / safe, np.nan)
        vs = np.where(convex, -(-h12 * coef[..., 1] + h11 * coef[..., 2]) / safe, np.nan)
        return us, vs, coef[..., 0] + 0.5 * (coef[..., 1] * us + coef[..., 2] * vs)


def _distinct(x: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """Number of distinct values of x among the drawn entries of each row of `drawn` (B x m booleans)."""
    _, inverse = np.unique(x, return_inverse=True)
    hits = np.zeros((drawn.shape[0], inverse.max() + 1), bool)
    rows, cols = np.nonzero(drawn)
    hits[rows, inverse[cols]] = True
    return hits.sum(1)


def _at_edge(x: float, grid: np.ndarray) -> bool:
    """Whether an optimum x lies at or beyond the scanned range: nearer an end value than that end's neighbour."""
    g = np.unique(grid)
    return not (g[0] + g[1]) / 2 <= x <= (g[-2] + g[-1]) / 2


@dataclass
class _Cell:
    """One scanned cell: its points, its quadratic fit, its optimum with flags and bootstrap draws."""

    index: int
    u: np.ndarray  # log10 lr of each point (replicates averaged)
    v: np.ndarray | None  # log10 batch of each point when the cell scans the batch size, else None
    y: np.ndarray  # ln mean loss of each point
    n: np.ndarray  # replicates per point
    batch: float  # batch size [tokens] of a 1-D scan (NaN when the table has none); NaN for a 2-D scan
    center: tuple[float, float]
    coef: np.ndarray = field(default_factory=lambda: np.empty(0))
    u_opt: float = math.nan
    v_opt: float = math.nan
    lnL_opt: float = math.nan
    lnL_opt_se: float = math.nan  # sd of lnL_opt in units of sigma (the noise of one run)
    flags: list[str] = field(default_factory=list)
    u_draws: np.ndarray = field(default_factory=lambda: np.empty(0))
    v_draws: np.ndarray = field(default_factory=lambda: np.empty(0))
    method: str = "none"
    reason: str = ""  # why no draws were made

    @property
    def two_d(self) -> bool:
        return self.v is not None

    def X(self) -> np.ndarray:
        mu, mv = self.center
        return _design(self.u - mu, None if self.v is None else self.v - mv)

    def fit(self) -> np.ndarray:
        """Point estimate; returns the relative residuals of the points (ln L - fitted)."""
        X = self.X()
        self.coef = _solve(X, self.y[None], self.n[None].astype(float))[0]
        us, vs, ys = _minimum(self.coef)
        self.u_opt = float(us + self.center[0])
        self.v_opt = float(vs + self.center[1]) if self.two_d else math.nan
        self.lnL_opt = float(ys)
        if np.isfinite(self.u_opt):  # var(fitted ln L at the optimum) = sigma^2 x*' (X'WX)^-1 x*
            x_opt = _design(us[None], None if not self.two_d else vs[None])[0]
            cov = np.linalg.pinv(X.T @ (X * self.n[:, None]))
            self.lnL_opt_se = float(np.sqrt(max(x_opt @ cov @ x_opt, 0.0)))
        if not np.isfinite(self.u_opt):
            self.flags.append("not_convex")
        else:
            if _at_edge(self.u_opt, self.u):
                self.flags.append("edge_lr")
            if self.two_d and _at_edge(self.v_opt, self.v):
                self.flags.append("edge_batch")
        return self.y - X @ self.coef if np.isfinite(self.coef).all() else np.full_like(self.y, np.nan)

    def optima(self, Y: np.ndarray, W: np.ndarray, X: np.ndarray, u: np.ndarray, v) -> tuple[np.ndarray, np.ndarray]:
        """Optima (log10 lr, log10 B) of each resample; NaN (failed) when a draw has no minimum, too few distinct
        values, or its optimum outside the scanned range."""
        mu, mv = self.center
        us, vs, _ = _minimum(_solve(X, Y, W))
        us, vs = us + mu, vs + mv
        drawn = W > 0
        ok = np.isfinite(us) & (_distinct(u, drawn) >= MIN_SCAN) & (us >= u.min()) & (us <= u.max())
        if v is not None:
            ok &= np.isfinite(vs) & (_distinct(v, drawn) >= MIN_SCAN) & (vs >= v.min()) & (vs <= v.max())
        return np.where(ok, us, np.nan), np.where(ok, vs, np.nan) if v is not None else np.full_like(us, np.nan)


def _run_bootstrap(cell: _Cell, lr: np.ndarray, batch: np.ndarray, loss: np.ndarray, n_boot: int,
                   rng: np.random.Generator):
    """Resample the cell's runs (lr, batch, loss arrays) with replacement; optima of each resample."""
    u = np.log10(lr)
    v = np.log10(batch) if cell.two_d else None
    y = np.log(loss)
    mu, mv = cell.center
    X = _design(u - mu, None if v is None else v - mv)
    W = rng.multinomial(len(u), np.full(len(u), 1 / len(u)), size=n_boot).astype(float)
    return cell.optima(np.broadcast_to(y, W.shape), W, X, u, v)


def _residual_bootstrap(cell: _Cell, sigma: np.ndarray, rng: np.random.Generator):
    """Simulate new point means: fitted ln L + sigma_b z / sqrt(n), z ~ N(0, 1); optima of each simulation."""
    X = cell.X()
    fitted = X @ cell.coef
    Y = fitted[None] + sigma[:, None] * rng.standard_normal((sigma.size, cell.y.size)) / np.sqrt(cell.n)[None]
    W = np.broadcast_to(cell.n.astype(float), Y.shape)
    return cell.optima(Y, W, X, cell.u, cell.v)


# ---------------------------------------------------------------- cells of a table


def _scanned_points(lr: np.ndarray, batch: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, bool, float]:
    """Which of a cell's points its fit uses: all of them for a 2-D (lr x batch) scan, else the lr scan at the batch
    size with the most learning rates (ties: the one holding the lowest loss). Returns (mask, two_d, batch)."""
    everything = np.ones(lr.size, bool)
    if np.isnan(batch).all():
        return everything, False, math.nan
    sizes = np.unique(batch)
    if sizes.size >= MIN_SCAN and lr.size >= 6 and np.isfinite(batch).all():
        u, v = np.log10(lr), np.log10(batch)
        if np.linalg.matrix_rank(_design(u - u.mean(), v - v.mean())) == 6:
            return everything, True, math.nan
    n_lr = np.array([np.unique(lr[_same_batch(batch, b)]).size for b in sizes])
    best = np.array([loss[_same_batch(batch, b)].min() for b in sizes])
    pick = float(sizes[np.lexsort((best, -n_lr))[0]])
    return _same_batch(batch, pick), False, pick


def _build_cells(points: pd.DataFrame) -> tuple[list[_Cell], dict[int, str]]:
    """Scanned cells (>= MIN_SCAN learning rates at one batch size) and, for the others, why they are not."""
    cells, unscanned = [], {}
    order = np.argsort(points["cell"].to_numpy(), kind="stable")
    cell = points["cell"].to_numpy()[order]
    lr, batch, loss, n = (points[c].to_numpy(float)[order] for c in ("lr", "batch_size", "loss", "n_replicates"))
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    for start, stop in zip(starts, np.r_[starts[1:], cell.size]):
        sl = slice(start, stop)
        used, two_d, b = _scanned_points(lr[sl], batch[sl], loss[sl])
        n_lr = np.unique(lr[sl][used]).size
        if n_lr < MIN_SCAN:
            spread = "" if np.unique(lr[sl]).size == n_lr else " at any one batch size"
            unscanned[int(cell[start])] = f"{n_lr} learning rate(s){spread}"
            continue
        u = np.log10(lr[sl][used])
        v = np.log10(batch[sl][used]) if two_d else None
        cells.append(_Cell(index=int(cell[start]), u=u, v=v, y=np.log(loss[sl][used]), n=n[sl][used], batch=b,
                           center=(float(u.mean()), float(v.mean()) if two_d else math.nan)))
    return cells, unscanned


def _noise(replicate_noise: NoiseEstimate, cells: list[_Cell], resid: list[np.ndarray]):
    """(the reported noise model, the noise the residual bootstrap simulates).

    Replicates estimate the noise when the table has them; the residuals of the cells' quadratics (labelled so)
    otherwise. The bootstrap uses the larger of the two, so that a quadratic that misfits the cells widens the
    intervals instead of hiding behind pure replicate noise."""
    r = np.concatenate(resid) if resid else np.empty(0)
    w = np.concatenate([c.n for c in cells]) if cells else np.empty(0)
    ok = np.isfinite(r)
    dof = int(sum(c.y.size - c.coef.size for c, rr in zip(cells, resid) if np.isfinite(rr).all()))
    from_residuals = residual_noise(r[ok], w[ok], dof)
    reported = replicate_noise if replicate_noise.determined else from_residuals
    if replicate_noise.determined and from_residuals.determined and from_residuals.sigma > replicate_noise.sigma:
        return reported, from_residuals
    return reported, reported


def _locate(cells: list[_Cell], runs: pd.DataFrame, noise: NoiseEstimate, n_boot: int, cell_bootstrap: str,
            rng: np.random.Generator) -> None:
    """Bootstrap draws of every cell's optimum (runs, or residual when too few runs / too many failures)."""
    cell_of = runs["cell"].to_numpy()
    order = np.argsort(cell_of, kind="stable")
    bounds = np.searchsorted(cell_of[order], [[c.index, c.index + 1] for c in cells]) if cells else []
    lr, batch, loss = (runs[c].to_numpy(float)[order] for c in ("lr", "batch_size", "loss"))
    for cell, (start, stop) in zip(cells, bounds):
        if n_boot == 0:
            cell.reason = NO_DRAWS
            continue
        keep = slice(start, stop)
        mine = np.ones(stop - start, bool) if cell.two_d else _same_batch(batch[keep], cell.batch)
        use_runs = cell_bootstrap == "runs" or (cell_bootstrap == "auto" and mine.sum() >= RUN_BOOTSTRAP_MIN_RUNS)
        if use_runs:
            cell.u_draws, cell.v_draws = _run_bootstrap(cell, lr[keep][mine], batch[keep][mine], loss[keep][mine],
                                                        n_boot, rng)
            cell.method = "bootstrap:runs"
            ok = np.isfinite(cell.u_draws).mean()
            if ok >= 0.9 or cell_bootstrap == "runs":
                continue
        if not noise.determined:
            cell.u_draws = cell.v_draws = np.full(n_boot, np.nan)
            cell.method, cell.reason = "bootstrap:residual", f"no noise estimate ({noise.reason})"
            continue
        cell.u_draws, cell.v_draws = _residual_bootstrap(cell, noise.sigma_draws(n_boot, rng), rng)
        cell.method = "bootstrap:residual"


def _cell_interval(draws: np.ndarray, cell: _Cell) -> Interval:
    """Interval of 10**draws (a positive hyperparameter), or undetermined with the cell's reason."""
    if cell.reason:
        return Interval.undetermined(cell.reason, n_total=draws.size, method=cell.method)
    iv = interval_from_draws(draws, method=cell.method)
    if not iv.determined:
        return iv
    return Interval(10 ** iv.lo, 10 ** iv.hi, iv.n_ok, iv.n_total, iv.method, iv.level)


# ---------------------------------------------------------------- compute-optimal cells


def _budget_optimum_n(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """log10 N of a budget's optimum from its cells' log10 N (x, m) and losses (Y, draws x m): the vertex of a
    parabola when there are >= 3 sizes and the vertex lies among them, else the size with the lowest loss."""
    best = x[np.argmin(Y, axis=1)]
    if np.unique(x).size < 3:
        return best
    xm = x.mean()
    c2, c1, _ = np.polyfit(x - xm, Y.T, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        vertex = xm - c1 / (2 * c2)
    inside = (c2 > 0) & (vertex >= x.min()) & (vertex <= x.max())
    return np.where(inside, vertex, best)


def _cell_budgets(table: pd.DataFrame) -> np.ndarray:
    """Budget of each cell: the table's `budget` column, else the cell's C grouped with near-equal Cs."""
    if table["budget"].notna().all():
        return table["budget"].to_numpy(float)
    from analysis.data import group_budgets

    return group_budgets(table["C"].to_numpy(float))


def _compute_optimal(table: pd.DataFrame, sigma: float, n_boot: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The compute-optimal scanned cell of each budget: nearest in log N to the budget's optimum N, found from every
    cell at that budget, scanned or not, with each cell's fitted optimal loss (else its lowest measured loss).
    Returns the mask of those cells, each cell's budget optimum log10 N (NaN for budgets without a scanned cell),
    and n_boot draws of it (n_boot x cells) from the losses redrawn with the noise model (sigma of ln L)."""
    budget = table["budget_group"].to_numpy(float)
    log_n = np.log10(table["N"].to_numpy(float))
    located = np.isfinite(table["loss_opt"].to_numpy(float))
    loss = np.log(np.where(located, table["loss_opt"], table["best_loss"]).astype(float))
    se = np.where(located, table["loss_opt_se_sigma"], table["best_loss_se_sigma"]).astype(float)
    se = np.where(np.isfinite(se), se, 1.0) * (sigma if math.isfinite(sigma) else 0.0)
    scanned = table["scanned"].to_numpy(bool)
    chosen = np.zeros(len(table), bool)
    log_n_opt = np.full(len(table), np.nan)
    draws = np.full((n_boot, len(table)), np.nan)
    for b in np.unique(budget[scanned]):
        members = np.flatnonzero(budget == b)
        candidates = members[scanned[members]]
        log_n_opt[members] = _budget_optimum_n(log_n[members], loss[members][None])[0]
        chosen[candidates[int(np.argmin(np.abs(log_n[candidates] - log_n_opt[members[0]])))]] = True
        if n_boot:
            Y = loss[members][None] + se[members][None] * rng.standard_normal((n_boot, members.size))
            draws[:, members] = _budget_optimum_n(log_n[members], Y)[:, None]
    return chosen, log_n_opt, draws


@dataclass
class _LawPoints:
    """What a law in C regresses: one point per budget, each a weighted mean of one or two cells' log10 optima."""

    x: np.ndarray  # C [FLOPs] of each point
    y: np.ndarray  # log10 optimum of each point
    draws: np.ndarray  # (n_boot, points)
    method: str
    records: list[dict]  # per point: budget C, optimum N, cells and weights (for the table and the figure)


def _budget_law_points(table: pd.DataFrame, usable: np.ndarray, by_index: dict[int, _Cell], what: str,
                       target_draws: np.ndarray) -> tuple[_LawPoints, np.ndarray]:
    """Per budget, the optimum at the budget's optimum N: its compute-optimal cell, interpolated linearly in log N
    towards the nearest usable cell on the other side of the optimum N when there is one (at fixed C, D ~ 1/N, so
    log lr* is linear in log N in the Step-Law form; the nearest cell alone is off by up to half the grid step).
    A budget whose compute-optimal cell is not usable (flagged) is left out. Each draw interpolates the cells' draws
    at that draw's budget optimum (target_draws, n_boot x cells), so the uncertainty of the optimum N counts too.
    Returns the points and the mask of cells they use."""
    n_boot = target_draws.shape[0]
    log_n, log_c = np.log10(table["N"].to_numpy(float)), np.log10(table["C"].to_numpy(float))
    budget, target = table["budget_group"].to_numpy(float), table["budget_log10_N_opt"].to_numpy(float)
    y_cell = np.log10(table[f"{what}_opt"].to_numpy(float))
    cells = table["cell"].to_numpy()
    used = np.zeros(len(table), bool)
    xs, ys, cols, recs, members = [], [], [], [], []
    for pos in np.flatnonzero(table["compute_optimal"].to_numpy(bool) & usable):
        side = np.sign(target[pos] - log_n[pos])
        other = np.flatnonzero((budget == budget[pos]) & usable & (np.sign(log_n - log_n[pos]) == side) & (side != 0))
        pair, weights, t_draws = [pos], np.array([1.0]), np.zeros(n_boot)
        if other.size:
            nb = other[np.argmin(np.abs(log_n[other] - log_n[pos]))]
            step = log_n[nb] - log_n[pos]
            t = (target[pos] - log_n[pos]) / step
            pair, weights = [pos, nb], np.array([1 - t, t])
            t_draws = np.clip((target_draws[:, pos] - log_n[pos]) / step, -0.5, 1.5)  # at most half a step beyond
        used[pair] = True
        members.append([by_index[int(cells[i])] for i in pair])
        xs.append(10 ** float(weights @ log_c[pair]))
        ys.append(float(weights @ y_cell[pair]))
        if n_boot:
            d = np.stack([c.u_draws if what == "lr" else c.v_draws for c in members[-1]], 1)
            cols.append(d[:, 0] + t_draws * (d[:, -1] - d[:, 0]))
        recs.append({"C": xs[-1], "N_opt": 10 ** float(target[pos]), f"{what}_opt": 10 ** ys[-1],
                     "cells": [int(cells[i]) for i in pair], "weights": [round(float(w), 4) for w in weights]})
    draws = np.stack(cols, 1) if cols else np.empty((0, len(xs)))
    method = _law_method([c for m in members for c in m]) if n_boot and members else "none"
    return _LawPoints(np.array(xs), np.array(ys), draws, method, recs), used


# ---------------------------------------------------------------- laws across cells


def _variances(draws: np.ndarray) -> np.ndarray:
    """Variance of each column's finite draws (decades^2), floored at MIN_VARIANCE; ones when there are no draws."""
    if draws.shape[0] == 0:
        return np.ones(draws.shape[1])
    with np.errstate(invalid="ignore"):
        var = np.nanvar(draws, axis=0, ddof=1) if draws.shape[0] > 1 else np.full(draws.shape[1], np.nan)
    return np.maximum(np.where(np.isfinite(var), var, 1.0), MIN_VARIANCE)


def _between_cell_variance(X: np.ndarray, y: np.ndarray, var: np.ndarray) -> float:
    """Moment estimate of the scatter tau^2 of cells about the law beyond their own uncertainty (0 when the law
    has no residual degrees of freedom or the cells agree with it)."""
    n, p = X.shape
    if n <= p:
        return 0.0
    w = 1.0 / var
    XtW = X.T * w
    A = np.linalg.pinv(XtW @ X)
    beta = A @ (XtW @ y)
    q = float(np.sum(w * (y - X @ beta) ** 2))
    trace = float(np.sum(w) - np.trace(A @ (XtW * w) @ X))
    return max(0.0, (q - (n - p)) / trace) if trace > 0 else 0.0


@dataclass
class _LawFit:
    """A regression of log10 optima on a design across cells: coefficients, draws, and the cells' weights."""

    beta: np.ndarray
    draws: np.ndarray  # (n_boot, p); NaN rows are failed draws
    weights: np.ndarray  # 1 / (cell variance + tau^2)
    tau: float  # between-cell scatter [decades] (NaN without draws)


def _cross_cell_law(X: np.ndarray, y: np.ndarray, cell_draws: np.ndarray, rng: np.random.Generator) -> _LawFit:
    """Weighted regression of y (log10 optima) on X with weights 1 / (cell variance + tau^2); each draw regresses
    the cells' bootstrap optima plus a N(0, tau^2) scatter. A cell's failed draw leaves it out of that draw; a draw
    with fewer usable cells than coefficients fails. Without draws the cells weigh the same."""
    p = X.shape[1]
    if cell_draws.shape[0] == 0:
        w = np.ones(len(y))
        return _LawFit(beta=_solve(X, y[None], w[None])[0], draws=np.empty((0, p)), weights=w, tau=math.nan)
    var = _variances(cell_draws)
    tau2 = _between_cell_variance(X, y, var)
    w = 1.0 / (var + tau2)
    beta = _solve(X, y[None], w[None])[0]
    Y = cell_draws + rng.normal(0.0, math.sqrt(tau2), cell_draws.shape) if tau2 > 0 else cell_draws
    finite = np.isfinite(Y)
    draws = _solve(X, np.where(finite, Y, 0.0), np.where(finite, w[None], 0.0))
    draws[finite.sum(1) < p] = np.nan
    return _LawFit(beta=beta, draws=draws, weights=w, tau=math.sqrt(tau2))


def _power_law(x: np.ndarray, y: np.ndarray, fit: _LawFit, *, method: str, name: str, x_name: str,
               y_name: str) -> PowerLawFit:
    """A PowerLawFit y = coef x^exponent from a regression of log10 y on [1, log10 x] across cells."""
    draws = {"coef": 10 ** fit.draws[:, 0], "exponent": fit.draws[:, 1]} if len(fit.draws) else None
    return power_law_result(x, y, float(10 ** fit.beta[0]), float(fit.beta[1]), draws=draws, weights=fit.weights,
                            method=method, exponent_range=HYPERPARAM_EXPONENT, name=name, x_name=x_name,
                            y_name=y_name, diagnostics={"between_cell_sd_decades": fit.tau},
                            undetermined_reason="" if draws else NO_DRAWS)


def _steplaw_fit(N: np.ndarray, D: np.ndarray, y: np.ndarray, cell_draws: np.ndarray, method: str,
                 rng: np.random.Generator) -> StepLawFit:
    """lr = c N^p D^q by the cross-cell regression of log10 lr_opt on [1, log10 N, log10 D]."""
    X = np.column_stack([np.ones_like(N), np.log10(N), np.log10(D)])
    fit = _cross_cell_law(X, y, cell_draws, rng)
    params = {"c": float(10 ** fit.beta[0]), "p": float(fit.beta[1]), "q": float(fit.beta[2])}
    if len(fit.draws):
        draws = {"c": 10 ** fit.draws[:, 0], "p": fit.draws[:, 1], "q": fit.draws[:, 2]}
        intervals = {k: interval_from_draws(v, method=method) for k, v in draws.items()}
    else:
        draws, intervals = {}, {k: Interval.undetermined(NO_DRAWS) for k in params}
    unreliable = unreliable_reasons(params, intervals, exponents={"p": HYPERPARAM_EXPONENT, "q": HYPERPARAM_EXPONENT})
    diagnostics = {"n_points": len(y), "between_cell_sd_decades": fit.tau, "bootstrap": method}
    return StepLawFit(params=params, intervals=intervals, draws=draws, diagnostics=diagnostics,
                      unreliable=unreliable, name="Step-Law lr(N, D)")


# ---------------------------------------------------------------- results


@dataclass(eq=False, repr=False)
class StepLawFit(FitResult):
    """lr = c N^p D^q (N in params, D in tokens) fitted to the located optima of scanned cells."""

    kind: ClassVar[str] = "steplaw"
    positive_params: ClassVar[tuple[str, ...]] = ("c",)

    def predict(self, N, D):
        """Learning rate c N^p D^q."""
        p = self.params
        return p["c"] * np.asarray(N, float) ** p["p"] * np.asarray(D, float) ** p["q"]

    def predict_samples(self, N, D) -> np.ndarray:
        """The same through every draw: shape (n_draws, *broadcast shape of N, D)."""
        N, D = np.broadcast_arrays(np.asarray(N, float), np.asarray(D, float))
        if not self.draws:
            return np.empty((0, *N.shape))
        shape = (-1,) + (1,) * N.ndim
        c, p, q = (np.asarray(self.draws[k], float).reshape(shape) for k in ("c", "p", "q"))
        return c * N[None] ** p * D[None] ** q

    def headline(self) -> str:
        p = self.params
        return f"{self.name}: lr = {p['c']:.4g} · N^{p['p']:.4f} · D^{p['q']:.4f} (N in params, D in tokens)"


@dataclass(eq=False, repr=False)
class HyperparamFit(FitResult):
    """Optimal-hyperparameter laws. params: lr_coef, lr_exponent (+ batch_coef, batch_exponent; steplaw_c,
    steplaw_p, steplaw_q; batch_D_coef, batch_D_exponent when fitted), draws by the same names.

    .lr_opt, .batch_opt: PowerLawFit in C [FLOPs] over the compute-optimal cells (lr_opt None when only one budget
    has a located compute-optimal cell: diagnostics["lr_opt"] says why; batch_opt None without a batch grid);
    .batch_D: PowerLawFit of B_opt [tokens] in D [tokens] over all cells with a batch grid; .steplaw: StepLawFit
    lr(N, D) or None (diagnostics["steplaw"] says why); .cells: the per-cell table (optimum, interval, flags, which
    laws use it, its quadratic); .points: each cell's measured points (replicates averaged).
    """

    kind: ClassVar[str] = "hyperparams"
    fit_members: ClassVar[tuple[str, ...]] = ("lr_opt", "batch_opt", "batch_D", "steplaw")
    table_members: ClassVar[tuple[str, ...]] = ("cells", "points")
    optional_positive: ClassVar[tuple[str, ...]] = ("lr_coef", "batch_coef", "batch_D_coef", "steplaw_c")
    cell_columns: ClassVar[tuple[str, ...]] = ("cell", "N", "D", "C", "scanned", "compute_optimal", "flags",
                                               "lr_opt", "used_lr_C")
    summary_keys: ClassVar[tuple[str, ...]] = ("n_cells", "n_scanned", "n_used_lr", "n_used_batch")

    lr_opt: PowerLawFit | None = None
    batch_opt: PowerLawFit | None = None
    batch_D: PowerLawFit | None = None
    steplaw: StepLawFit | None = None
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)
    points: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def _from_dict(cls, d: dict) -> HyperparamFit:
        """The base reader, then what is particular to this result: its lr law (or the reason it was not fitted)
        and per-cell table must be there, and every coefficient that is present must be positive."""
        fit = super()._from_dict(d)
        for k in cls.optional_positive:
            if k in fit.params and not fit.params[k] > 0:
                raise ConfigError(f"hyperparams.params.{k}", "a positive number", fit.params[k])
        if not isinstance(fit.lr_opt, PowerLawFit) and not (
                fit.lr_opt is None and isinstance(fit.diagnostics.get("lr_opt"), str) and "lr_coef" not in fit.params):
            raise ConfigError("hyperparams.lr_opt", "the lr_opt(C) law (a power_law result), or null with "
                              "diagnostics.lr_opt saying why and no lr_* params", type(fit.lr_opt).__name__)
        missing = [c for c in cls.cell_columns if c not in fit.cells.columns]
        if missing:
            raise ConfigError("hyperparams.cells", f"a per-cell table with columns {list(cls.cell_columns)}",
                              f"missing {missing}")
        for table, columns in ((fit.cells, NUMERIC_CELL_COLUMNS), (fit.points, ("lr", "batch_size", "loss_mean"))):
            for col in set(columns) & set(table.columns):  # JSON null (NaN) comes back as None
                table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
        return fit

    def predict(self, C) -> dict:
        """Optimal peak lr and batch size [tokens] at C [FLOPs]: {"lr_opt", "batch_opt"} (None without a law)."""
        return {"lr_opt": None if self.lr_opt is None else self.lr_opt.predict(C),
                "batch_opt": None if self.batch_opt is None else self.batch_opt.predict(C)}

    def predict_samples(self, C) -> dict:
        """The same through every draw: arrays of shape (n_draws, *C.shape) (batch_opt None without a law)."""
        return {"lr_opt": None if self.lr_opt is None else self.lr_opt.predict_samples(C),
                "batch_opt": None if self.batch_opt is None else self.batch_opt.predict_samples(C)}

    def headline(self) -> str:
        return (f"{self.name}: lr_opt in peak learning rate, batch in tokens, C in FLOPs "
                f"(optimum located per (N, D) cell; laws in C across budgets at their optimum N)")

    def summary(self) -> str:
        lines = super().summary().splitlines()
        lines.append("  per cell:  N [params]  D [tokens]  C [FLOPs]   lr_opt (95% CI, draws ok)       "
                     "batch_opt [tokens]   flags / use")
        for r in self.cells.to_dict("records"):
            lr = _describe_cell(r, "lr")
            b = _describe_cell(r, "batch") if r.get("two_d") else "-"
            use = ("compute-optimal" if r.get("compute_optimal") else "") + (" used in lr(C)" if r.get("used_lr_C")
                                                                               else "")
            lines.append(f"    {r['N']:10.3g}  {r['D']:10.3g}  {r['C']:9.3g}   {lr:32s} {b:20s} "
                         f"{','.join(r['flags']) or '-'} {use}")
        for law in (self.lr_opt, self.batch_opt, self.batch_D, self.steplaw):
            if law is not None:
                lines.append("  " + law.headline())
        if self.lr_opt is None and self.diagnostics.get("lr_opt"):
            lines.append(f"  lr_opt(C): {self.diagnostics['lr_opt']}")
        if self.steplaw is None and self.diagnostics.get("steplaw"):
            lines.append(f"  Step-Law form: {self.diagnostics['steplaw']}")
        return "\n".join(lines)


def _describe_cell(row: dict, what: str) -> str:
    value = row.get(f"{what}_opt")
    if value is None or not math.isfinite(value):
        return "no optimum"
    lo, hi = row.get(f"{what}_lo"), row.get(f"{what}_hi")
    counts = f"({row.get(f'{what}_n_ok', 0)}/{row.get(f'{what}_n_total', 0)})"
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{value:.3g} undetermined {counts}"
    return f"{value:.3g} [{lo:.3g}, {hi:.3g}] {counts}"


def cell_loss_curve(row, lr) -> np.ndarray:
    """Fitted loss of one cell (a row of HyperparamFit.cells, as a dict) at learning rates `lr`, along the cell's
    optimal batch size for an (lr x batch) scan; NaN for a cell without a fit. The cell quadratic's one home."""
    u = np.log10(np.asarray(lr, float))
    coef = np.asarray([np.nan if c is None else c for c in (row.get("surface_coef") or [])], float)
    if coef.size not in (3, 6) or not np.isfinite(coef).all():
        return np.full(u.shape, np.nan)
    mu, mv = (np.nan if c is None else float(c) for c in row["center_log10"])
    v = None if coef.size == 3 else np.full(u.shape, math.log10(row["batch_opt"]) - mv if row.get("batch_opt") else
                                            np.nan)
    return np.exp(_design(u.ravel() - mu, None if v is None else v.ravel()) @ coef).reshape(u.shape)


# ---------------------------------------------------------------- the fit


def _cell_table(runs: pd.DataFrame, points: pd.DataFrame, cells: list[_Cell], unscanned: dict[int, str]):
    """One row per cell (scanned or not): size, budget, optimum, interval, flags."""
    by_cell = runs.groupby("cell")
    table = pd.DataFrame({"cell": by_cell.size().index.to_numpy(), "N": by_cell["N"].median().to_numpy(),
                          "D": by_cell["D"].median().to_numpy(), "C": by_cell["C"].median().to_numpy(),
                          "budget": by_cell["budget"].median().to_numpy(), "n_runs": by_cell.size().to_numpy(),
                          "n_lr": by_cell["lr"].nunique().to_numpy(),
                          "n_batch": by_cell["batch_size"].nunique().to_numpy(),
                          "best_loss": points.groupby("cell")["loss"].min().to_numpy()})
    best_point = points.sort_values("loss").groupby("cell").first()
    table["best_loss_se_sigma"] = 1.0 / np.sqrt(best_point["n_replicates"].reindex(table["cell"]).to_numpy(float))
    table["budget_group"] = _cell_budgets(table)
    table["scanned"] = table["cell"].isin([c.index for c in cells])
    rows = {c.index: c for c in cells}
    records = []
    for idx in table["cell"]:
        c = rows.get(idx)
        if c is None:
            records.append({"two_d": False, "lr_opt": math.nan, "batch_opt": math.nan, "loss_opt": math.nan,
                            "flags": [], "not_scanned": unscanned.get(int(idx), ""), "method": "none"})
            continue
        lr_iv, b_iv = _cell_interval(c.u_draws, c), _cell_interval(c.v_draws, c) if c.two_d else None
        flags = list(c.flags)
        located = "not_convex" not in flags and not c.reason  # draws were made, so failures mean a weak optimum
        if located and not lr_iv.determined:
            flags.append("lr_undetermined")
        if located and c.two_d and not b_iv.determined:
            flags.append("batch_undetermined")
        rec = {"two_d": c.two_d, "lr_opt": 10 ** c.u_opt, "lr_lo": lr_iv.lo, "lr_hi": lr_iv.hi,
               "lr_n_ok": lr_iv.n_ok, "lr_n_total": lr_iv.n_total, "lr_reason": lr_iv.reason,
               "batch_opt": 10 ** c.v_opt if c.two_d else c.batch, "loss_opt": math.exp(c.lnL_opt),
               "loss_opt_se_sigma": c.lnL_opt_se,
               "flags": flags, "not_scanned": "", "method": c.method, "n_points": int(c.y.size),
               "surface_coef": [float(v) for v in c.coef], "center_log10": [c.center[0], c.center[1]]}
        if c.two_d:
            rec.update(batch_lo=b_iv.lo, batch_hi=b_iv.hi, batch_n_ok=b_iv.n_ok, batch_n_total=b_iv.n_total,
                       batch_reason=b_iv.reason)
        records.append(rec)
    return pd.concat([table, pd.DataFrame.from_records(records)], axis=1)


def _law_method(cells: list[_Cell]) -> str:
    """Interval method of a law: its cells' bootstrap, or both kinds joined when the cells differ."""
    kinds = sorted({c.method for c in cells})
    return kinds[0] if len(kinds) == 1 else "+".join(kinds)


def _cell_law_points(rows: pd.DataFrame, by_index: dict[int, _Cell], what: str, x_col: str,
                     n_boot: int) -> _LawPoints:
    """One point per cell (for the laws over all usable cells: B(D), lr(N, D))."""
    cells = [by_index[int(i)] for i in rows["cell"]]
    y = np.log10(rows[f"{what}_opt"].to_numpy(float))
    if n_boot == 0:
        return _LawPoints(rows[x_col].to_numpy(float), y, np.empty((0, len(cells))), "none", [])
    draws = np.stack([c.u_draws if what == "lr" else c.v_draws for c in cells], axis=1)
    return _LawPoints(rows[x_col].to_numpy(float), y, draws, _law_method(cells), [])


def _flag_mask(table: pd.DataFrame, flags: frozenset) -> pd.Series:
    return table["flags"].map(lambda f: not (flags & set(f)))


def _size_rank(log_nd: np.ndarray) -> int:
    """Rank of the design [1, log N, log D] with a relative tolerance: N and D that vary together (one D per N, as
    along a compute-optimal path) give 2 even when rounding leaves them a hair from collinear."""
    if len(log_nd) < 2:
        return len(log_nd)
    s = np.linalg.svd(log_nd - log_nd.mean(0), compute_uv=False)
    return 1 + int(np.sum(s > 1e-6 * max(s[0], 1e-300)))


def _too_few_budgets(table: pd.DataFrame, n_ok: int) -> ConfigError:
    """The error when fewer than MIN_LAW_CELLS budgets have a usable compute-optimal cell, with what to change."""
    chosen = table[table["compute_optimal"]]
    flags = pd.Series([f for fl in chosen["flags"] for f in fl], dtype=object).value_counts().to_dict()
    hint = ""
    if flags.get("lr_undetermined", 0):
        hint = ("; an undetermined optimum has > 10% of its resamples outside the scanned range: more seeds, a wider "
                "LR scan or less noise locate it")
    elif flags.get("edge_lr", 0):
        hint = "; an edge optimum lies at or beyond the scanned range: extend the LR scan past it"
    return ConfigError("hyperparams cells", f"compute-optimal cells at >= {MIN_LAW_CELLS} budgets with a located, "
                       f"interior LR optimum{hint}",
                       f"{n_ok} usable of {len(chosen)} budgets; their compute-optimal cells' flags: {flags}")


def _laws(table: pd.DataFrame, by_index: dict[int, _Cell], target_draws: np.ndarray,
          rng: np.random.Generator) -> tuple[dict, dict]:
    """The laws across cells ({member: fit or None}) and diagnostics saying which cells each used, or why not.
    target_draws: draws of each cell's budget optimum log10 N (n_boot x cells)."""
    n_boot = target_draws.shape[0]
    lr_ok = (table["scanned"] & _flag_mask(table, LR_FLAGS)).to_numpy(bool)
    b_ok = (table["scanned"] & table["two_d"].astype(bool) & _flag_mask(table, BATCH_FLAGS)).to_numpy(bool)
    lr_points, table["used_lr_C"] = _budget_law_points(table, lr_ok, by_index, "lr", target_draws)
    n_lr_budgets = np.unique(lr_points.x).size
    if n_lr_budgets == 0:
        raise _too_few_budgets(table, 0)

    def power(points: _LawPoints, name: str, x_name: str, y_name: str) -> PowerLawFit:
        X = np.column_stack([np.ones_like(points.x), np.log10(points.x)])
        fit = _cross_cell_law(X, points.y, points.draws, rng)
        return _power_law(points.x, 10 ** points.y, fit, method=points.method, name=name, x_name=x_name,
                          y_name=y_name)

    laws = {"lr_opt": None, "batch_opt": None, "batch_D": None, "steplaw": None}
    diag = {"lr_law_points": lr_points.records}
    if n_lr_budgets >= MIN_LAW_CELLS:
        laws["lr_opt"] = power(lr_points, "lr_opt(C)", "C [FLOPs]", "lr_opt")
    else:  # one located budget: its cells stand (a recommendation can use the measured optimum), but no law in C
        why = _too_few_budgets(table, n_lr_budgets)
        table["used_lr_C"] = False
        diag["lr_opt"] = f"not fitted: expected {why.expected}; got {why.got}"
    b_points, table["used_batch_C"] = _budget_law_points(table, b_ok, by_index, "batch", target_draws)
    diag.update(n_used_lr=len(lr_points.x) if laws["lr_opt"] is not None else 0, n_used_batch=len(b_points.x))
    if np.unique(b_points.x).size >= MIN_LAW_CELLS:
        laws["batch_opt"] = power(b_points, "B_opt(C)", "C [FLOPs]", "B_opt [tokens]")
        diag["batch_law_points"] = b_points.records
    else:
        diag["batch_opt"] = f"not fitted: {len(b_points.x)} budgets with a located batch-size optimum"
    table["used_batch_D"] = b_ok if table.loc[b_ok, "D"].nunique() >= MIN_LAW_CELLS else False
    if table["used_batch_D"].any():
        points = _cell_law_points(table[table["used_batch_D"]], by_index, "batch", "D", n_boot)
        laws["batch_D"] = power(points, "B_opt(D)", "D [tokens]", "B_opt [tokens]")
    step = table[lr_ok]
    rank = _size_rank(np.log10(step[["N", "D"]].to_numpy(float)))
    table["used_steplaw"] = lr_ok if len(step) >= MIN_STEPLAW_CELLS and rank == 3 else False
    if table["used_steplaw"].any():
        points = _cell_law_points(step, by_index, "lr", "N", n_boot)
        laws["steplaw"] = _steplaw_fit(step["N"].to_numpy(float), step["D"].to_numpy(float), points.y, points.draws,
                                       points.method, rng)
        diag["steplaw"] = f"fitted over {len(step)} cells"
    else:
        diag["steplaw"] = (f"not fitted: needs >= {MIN_STEPLAW_CELLS} usable cells where N and D vary "
                           f"independently; got {len(step)} cells, design rank {rank}")
    return laws, diag


PREFIXES = {"lr_opt": "lr", "batch_opt": "batch", "batch_D": "batch_D", "steplaw": "steplaw"}  # member -> params


def fit_hyperparams(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, cell_bootstrap: str = "auto"
                    ) -> HyperparamFit:
    """Optimal peak lr (and batch size [tokens]) per (N, D) cell, then lr_opt(C), B_opt(C), B(D) and lr(N, D).

    df: runs with N [params], D [tokens], lr, loss (+ batch_size [tokens], C [FLOPs], budget [FLOPs], seed; any
    `kind` column is ignored: cells are defined by N and D). cell_bootstrap: "auto" (runs when a cell has >=
    RUN_BOOTSTRAP_MIN_RUNS runs and that succeeds in >= 90% of draws, else residual), "runs" or "residual".
    Raises ConfigError when no cell scans >= MIN_SCAN learning rates ("no LR scan: one LR per cell"), or when no
    budget has a compute-optimal cell with a located, interior LR optimum. With one such budget the cells are
    returned without the lr_opt(C) law (lr_opt None; diagnostics["lr_opt"] says why): one budget gives no law in C.
    """
    if cell_bootstrap not in ("auto", "runs", "residual"):
        raise ConfigError("cell_bootstrap", '"auto", "runs" or "residual"', cell_bootstrap)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ConfigError("n_boot", "a non-negative number of resamples", n_boot)
    runs = _prepare(df)
    points, replicate_noise = collapse_replicates(runs[["cell", "lr", "batch_size", "loss"]],
                                                  keys=("cell", "lr", "batch_size"))
    cells, unscanned = _build_cells(points)
    if not cells:
        raise _scan_refusal(points)
    resid = [c.fit() for c in cells]
    noise, boot_noise = _noise(replicate_noise, cells, resid)
    rng = np.random.default_rng(seed)
    _locate(cells, runs, boot_noise, int(n_boot), cell_bootstrap, rng)
    table = _cell_table(runs, points, cells, unscanned)
    table["compute_optimal"], table["budget_log10_N_opt"], target_draws = _compute_optimal(
        table, boot_noise.sigma, int(n_boot), rng)
    laws, law_diag = _laws(table, {c.index: c for c in cells}, target_draws, rng)
    params, draws, intervals, unreliable = {}, {}, {}, {}
    for member, law in laws.items():
        if law is None:
            continue
        prefix = PREFIXES[member]
        params.update({f"{prefix}_{k}": v for k, v in law.params.items()})
        draws.update({f"{prefix}_{k}": v for k, v in law.draws.items()})
        intervals.update({f"{prefix}_{k}": v for k, v in law.intervals.items()})
        unreliable.update({f"{prefix}_{k}": v for k, v in law.unreliable.items()})
    for member in ("lr_opt", "batch_opt"):
        if laws[member] is not None:
            _mark_span(laws[member], member, intervals, unreliable)
            _mark_untested(laws[member], member, unreliable)
    diagnostics = {"n_cells": len(table), "n_scanned": int(table["scanned"].sum()), **law_diag,
                   "cell": "(N, D) pair", "min_scan": MIN_SCAN,
                   "noise_for_bootstrap": boot_noise.to_dict(),
                   "flagged": {f"N={r.N:.4g} D={r.D:.4g}": r.flags for r in table.itertuples() if r.flags}}
    return HyperparamFit(params=params, intervals=intervals, draws=draws, diagnostics=json_safe(diagnostics),
                         noise=noise.to_dict(), unreliable=unreliable, name="hyperparameter laws",
                         cells=table.drop(columns=["budget_group"]),
                         points=points.rename(columns={"loss": "loss_mean"}).reset_index(drop=True), **laws)


def _mark_span(law: PowerLawFit, member: str, intervals: dict, unreliable: dict) -> None:
    """Add the law's value at the largest budget it used (`<member>_at_largest_budget`) with its interval, marked
    unreliable when that spans more than 10x (its coefficient, the value at C = 1 FLOP, always spans widely)."""
    draws = law.predict_samples(np.array(float(law.diagnostics["x_max"])))
    name = f"{member}_at_largest_budget"
    if draws.size == 0:
        intervals[name] = Interval.undetermined(NO_DRAWS)
        return
    intervals[name] = interval_from_draws(draws, method=law.intervals["exponent"].method)
    unreliable.update(unreliable_reasons({}, intervals, spans=(name,)))


def _mark_untested(law: PowerLawFit, member: str, unreliable: dict) -> None:
    """Mark the law's exponent unreliable when fewer than MIN_TESTED_BUDGETS budgets gave it: a power law through two
    points always fits them, so nothing tests its form, and its interval holds only the cells' location noise."""
    n = int(law.diagnostics.get("n_distinct_x", 0))
    if n < MIN_TESTED_BUDGETS:
        unreliable.setdefault(f"{PREFIXES[member]}_exponent",
                              f"fitted through {n} budgets: a power law through {n} points fits them exactly, so "
                              f"its form is untested and its interval holds only the cells' location noise "
                              f"(>= {MIN_TESTED_BUDGETS} budgets are needed to extrapolate it)")


WIDTH_RULE_TOL = 0.005  # max |residual| of ln lr = c - w ln d_model for the isoFLOP runs' LRs to count as one rule
# (the planner rounds each LR to 4 significant digits: residuals <= 5e-4)
MIN_RULE_WIDTHS = 3  # distinct widths at a budget needed to read its rule


def width_lr_exponent(runs: pd.DataFrame) -> float | None:
    """The width rule the sweep trained its isoFLOP models with, read from the runs: w when, at every budget with at
    least MIN_RULE_WIDTHS widths, their LRs follow lr = c_budget * d_model^-w exactly (one w for all budgets; a sweep's
    `train.lr_width`). None when there is no such rule (LRs tuned per model, or no d_model / lr / budget column) or
    when w is 0 (one LR for every width)."""
    if not {"lr", "d_model", "budget"} <= set(runs.columns):
        return None
    rows = runs[runs["kind"] == "isoflop"] if "kind" in runs.columns else runs
    slopes = []
    for _, group in rows.groupby("budget"):
        lr, d = group["lr"].to_numpy(float), group["d_model"].to_numpy(float)
        ok = np.isfinite(lr) & np.isfinite(d) & (lr > 0) & (d > 0)
        lr, d = np.log(lr[ok]), np.log(d[ok])
        if np.unique(d).size < MIN_RULE_WIDTHS:
            continue
        slope, intercept = np.polyfit(d, lr, 1)
        if np.max(np.abs(lr - (intercept + slope * d))) > WIDTH_RULE_TOL:
            return None
        slopes.append(-slope)
    if not slopes or np.ptp(slopes) > 2 * WIDTH_RULE_TOL or abs(float(np.mean(slopes))) < 2 * WIDTH_RULE_TOL:
        return None
    return round(float(np.mean(slopes)), 3)
