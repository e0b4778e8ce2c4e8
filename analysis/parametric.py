"""Approach 3: fit L(N, D) = E + A/N^alpha + B/D^beta to final losses, with bootstrap uncertainty.

Conventions (Hoffmann et al. 2022, as replicated by Besiroglu et al. 2024):
- N = parameters, D = training tokens, L = final loss (nats/token); compute C = k * N * D FLOPs (k = 6 for "6N").
- Fitted in log space: log L = logsumexp(a - alpha log N, b - beta log D, e) with A = exp(a), B = exp(b), E = exp(e).
- Objective: the SUM over runs of Huber(delta) of the residuals log L_obs - log L_model (delta = 1e-3). The sum matters:
  averaging shrinks the gradient 1/n-fold and L-BFGS then stops near its start point, as in the original paper.
- Starts: the 4,500-point grid alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}.

The minimizer is a batched Levenberg-Marquardt written for this model (float64; torch for the elementwise work,
one thread, rows in cache-sized chunks): every start moves at once, each with its own damping, and a step is kept
only when the true objective decreases. Far from the optimum the step uses the IRLS matrix (the curvature of the
quadratic that majorizes Huber: robust, but only linearly convergent along the flat B direction); near it, the exact
Hessian (fast). Starts are run by successive halving (all starts _ROUND_ITERS iterations, then the better half, ...,
down to _KEEP), the survivors converge, and the lowest objective wins (checked to match running every start to
convergence on Epoch's data and on synthetic sets). Large tables (over _SUBSAMPLE_ABOVE = 2,000 runs) search the
grid on a stratified subsample of 1,000 runs (spread over compute and, within a budget, over size) and polish the
_KEEP survivors on all runs, where the lowest objective wins: the search then costs the same at any size and the fit
grows linearly in the runs (checked against the full search in tests/test_parametric.py). Tables up to 2,000 runs
are fitted exactly as before. On Epoch's 240 Chinchilla runs the 4,500-start fit takes ~0.6 s
on one core and 1,000 bootstrap refits ~1.5 s, against ~60 s for a per-start scipy L-BFGS-B loop
(benchmarks/bench_parametric.py). Converged means the predicted decrease
g^T H^-1 g / 2 is below 1e-13 of the objective; when the best start is not converged, success is False.
Bootstrap replicates are refitted together in one batch (run counts as per-row weights, or per-row simulated log
losses for the residual bootstrap), each from the full-data optimum, the other distinct optima of the full fit and the
grid starts of the best survivors (tables up to 2,000 runs only: above, a resample's optimum lies within its
sampling error of the full-data one, so the full-data optima suffice as starts); the best start of each
replicate after a few iterations goes on to convergence. Refits that do not converge still count as failed draws.

Bounds and stalls: in log space E -> 0 is a flat region (e -> -inf, the E term's share and its gradient vanish), where
LM can stop and call it converged (E = 2e-232) although a positive E fits better. Every minimization, full fit and
bootstrap refit alike, that ends with a vanished E term is restarted at E = fractions of the smallest loss and keeps
the lower objective; an E term still vanished is a constrained optimum at E = 0 when d objective / d E >= 0 there
(reported as E = 0 and flagged in `unreliable`), else a stall (the fit fails; a bootstrap refit counts as failed).
A refit that loses its N or D term is a failed draw too. Designs that cannot separate the N and D terms (one budget,
under 0.3 decades of N or D, N and D in lockstep) are refused.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from analysis.bootstrap import bootstrap_indices
from analysis.result import (
    LOSS_EXPONENT,
    MIN_OK_FRACTION,
    MIN_RESAMPLE_UNITS,
    FitResult,
    Interval,
    intervals_from_draws,
    unreliable_reasons,
)
from scaling.errors import ConfigError

SAMPLE_COLUMNS = ("E", "A", "B", "alpha", "beta")  # the law's parameters, drawn by the bootstrap
DRAW_NAMES = SAMPLE_COLUMNS + ("a", "b", "G")  # ParametricFit.draws

_ROUND_ITERS = 3  # LM iterations per successive-halving round
_KEEP = 64  # starts run to convergence after the halving rounds
_MAX_ITER = 300  # Newton-phase LM iterations at most
_RTOL = 1e-13  # converged when the predicted decrease is below _RTOL * objective
_STALL_RTOL = 1e-9  # ... or when no step decreases it any more and the predicted decrease is below this
_ATOL = 1e-25  # absolute floor on the predicted decrease (an exact fit has objective ~0; 1e-25 ~ residuals of 1e-12)
_CHUNK = 512  # rows evaluated together (keeps the (rows, runs) temporaries in cache)
_CHUNK_CELLS = _CHUNK * 2_000  # ... and at most this many (row, run) cells, so that large tables stay in cache too
_SUBSAMPLE_ABOVE = 2_000  # runs above which the start grid is searched on a stratified subsample
_SUBSAMPLE_RUNS = 1_000  # runs in that subsample
_BOOT_GRID_STARTS = 4  # grid starts of the best survivors added to each bootstrap refit (small tables only)
_POLISH_ITERS = 2 * _ROUND_ITERS  # IRLS iterations on all runs before Newton, for starts found on the subsample
_VANISH = 1e-6  # a term whose share of the model is below this at every run has vanished (its parameter is on a bound)
_E_FRACTIONS = (0.01, 0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95)  # restarts of a vanished E, fractions of the smallest loss
_MIN_BUDGET_DECADES = 0.1  # runs whose C = k N D spans less than this (decades) are one budget
_MIN_DECADES = 0.3  # least spread of N and of D (decades)
_MIN_CROSS_DECADES = 0.05  # least spread of (log10 N, log10 D) off their common line (sd along the minor axis)
PARAMETRIC_BOOTSTRAP = ("runs", "budgets", "residual")


def epoch_grid() -> np.ndarray:
    """The 4,500 starts of Hoffmann et al. / Epoch; columns (a, b, e, alpha, beta) = (log A, log B, log E, alpha,
    beta), the parameter order used for theta throughout this module."""
    ab = np.arange(0.0, 25.1, 5.0)
    e = np.arange(-1.0, 1.01, 0.5)
    ex = np.arange(0.0, 2.01, 0.5)
    mesh = np.meshgrid(ab, ab, e, ex, ex, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


class _Data:
    """log N, log D, log L of the runs as float64 torch tensors, plus the column stacks the reductions need."""

    def __init__(self, N: np.ndarray, D: np.ndarray, L: np.ndarray):
        self._set_logs(*(torch.from_numpy(np.log(v)) for v in (N, D, L)))

    def take(self, idx: np.ndarray) -> _Data:
        """The runs at positions idx."""
        sub = object.__new__(_Data)
        sub._set_logs(*(v[torch.from_numpy(idx)] for v in (self.x1, self.x2, self.y)))
        return sub

    def _set_logs(self, x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor) -> None:
        self.x1, self.x2, self.y = x1, x2, y
        one = torch.ones_like(self.x1)
        self.c1 = torch.stack([one, self.x1], 1)
        self.c2 = torch.stack([one, self.x2], 1)
        self.c11 = torch.stack([one, self.x1, self.x1 * self.x1], 1)
        self.c22 = torch.stack([one, self.x2, self.x2 * self.x2], 1)
        self.c12 = torch.stack([one, self.x1, self.x2, self.x1 * self.x2], 1)

    @property
    def n(self) -> int:
        return len(self.y)


def huber_objective(theta, N, D, L, delta: float = 1e-3) -> np.ndarray:
    """Sum over runs of Huber(delta)(log L - log model) for each row of theta (columns log A, log B, log E, alpha,
    beta): the objective fit_parametric minimizes."""
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    return _evaluate(theta, _Data(*_check_inputs(N, D, L)), None, delta, "none")[0]


def _evaluate(theta, data: _Data, counts, delta, derivatives: str = "irls", ys=None):
    """Objective f (S,) and, unless derivatives == "none", gradient g (S, 5), IRLS matrix H (S, 5, 5) and (when
    derivatives == "newton") the exact Hessian K (S, 5, 5) for S rows of theta; K is None otherwise.

    Works through the rows in chunks small enough for the CPU cache (the cost is memory traffic, not arithmetic).
    counts: None (every run once) or an (S, n) array of run multiplicities (bootstrap). ys: None (the observed
    log losses) or an (S, n) array of log losses per row (residual bootstrap).
    """
    step = _chunk_rows(data.n)
    parts = [_evaluate_chunk(theta[s:s + step], data, None if counts is None else counts[s:s + step], delta,
                             derivatives, None if ys is None else ys[s:s + step])
             for s in range(0, len(theta), step)]
    return tuple(None if p[0] is None else np.concatenate(p) for p in zip(*parts))


def _chunk_rows(n_runs: int) -> int:
    """Rows of theta evaluated together: _CHUNK, fewer when n_runs is so large that the temporaries leave the cache."""
    return max(1, min(_CHUNK, _CHUNK_CELLS // n_runs))


def _evaluate_chunk(theta, data: _Data, counts, delta, derivatives, ys=None):
    """One chunk of _evaluate.

    With p the softmax weights of the three logsumexp terms and J_i = d log model_i / d theta =
    (p1, p2, p3, -p1 log N, -p2 log D): g = -sum_i c_i psi(r_i) J_i with psi = clip(r, -delta, delta);
    H = sum_i c_i w_i J_i J_i^T with w = psi / r = min(1, delta / |r|), the curvature of the quadratic that majorizes
    Huber at the current residual (positive semi-definite; the IRLS / Gauss-Newton matrix); and the exact Hessian
    K = sum_i c_i [(1{|r_i| <= delta} + psi_i) J_i J_i^T - psi_i P_i] with P_i = sum_k p_k v_k v_k^T, v_k the gradients
    of the three terms (the second-order part of logsumexp).
    """
    th = torch.from_numpy(np.ascontiguousarray(theta))
    a, b, e, alpha, beta = (th[:, j:j + 1] for j in range(5))
    t1 = torch.addcmul(a - e, alpha, data.x1, value=-1.0)  # logsumexp terms relative to e: (S, n)
    t2 = torch.addcmul(b - e, beta, data.x2, value=-1.0)
    top = z3 = None
    if max(float(t1.max()), float(t2.max())) > 700.0:  # exp would overflow: shift by the largest term
        top = torch.clamp(torch.maximum(t1, t2), min=0.0)
        t1 -= top
        t2 -= top
        z3 = torch.exp(-top)
    z1, z2 = t1.exp_(), t2.exp_()
    total = z1 + z2
    total += 1.0 if z3 is None else z3
    r = torch.log(total)
    if top is not None:
        r += top
    r = r.neg_().add_(data.y if ys is None else torch.from_numpy(ys)).sub_(e)  # residual log L_obs - log L_model
    psi = r.clamp(-delta, delta)
    tmp = torch.add(r, psi, alpha=-0.5).mul_(psi)  # Huber(r) = psi * (r - psi / 2)
    if counts is not None:
        counts = torch.from_numpy(counts)
        tmp.mul_(counts)
    f = tmp.sum(1).numpy()
    if derivatives == "none":
        return f, None, None, None
    inv = total.reciprocal_()
    p = (z1.mul_(inv), z2.mul_(inv), inv if z3 is None else inv.mul_(z3))
    u = None
    if derivatives == "newton":  # weight of J J^T in the exact Hessian
        u = (r.abs() <= delta).to(torch.float64).add_(psi)
        if counts is not None:
            u.mul_(counts)
    w = r.abs_().clamp_(min=delta).reciprocal_().mul_(delta)
    if counts is not None:
        psi.mul_(counts)
        w.mul_(counts)
    S = len(theta)
    g = torch.empty(S, 5, dtype=torch.float64)
    m = torch.mul(psi, p[0], out=tmp) @ data.c11
    g[:, 0], g[:, 3] = -m[:, 0], m[:, 1]
    second = (m[:, 0], -m[:, 1], m[:, 2])  # sums of psi p1 v1 v1^T entries (0,0), (0,3), (3,3)
    m = torch.mul(psi, p[1], out=tmp) @ data.c22
    g[:, 1], g[:, 4] = -m[:, 0], m[:, 1]
    second += (m[:, 0], -m[:, 1], m[:, 2])  # (1,1), (1,4), (4,4)
    s3 = torch.mul(psi, p[2], out=tmp).sum(1)
    g[:, 2] = -s3
    H = _weighted_outer(w, p, psi, tmp, data)
    K = None
    if u is not None:
        K = _weighted_outer(u, p, psi, tmp, data)
        for (i, j), v in zip(((0, 0), (0, 3), (3, 3), (1, 1), (1, 4), (4, 4)), second):
            K[:, i, j] -= v
            if i != j:
                K[:, j, i] -= v
        K[:, 2, 2] -= s3
        K = K.numpy()
    return f, g.numpy(), H.numpy(), K


def _weighted_outer(w, p, buf, tmp, data: _Data) -> torch.Tensor:
    """sum_i w_i J_i J_i^T (S, 5, 5) for J = (p1, p2, p3, -p1 log N, -p2 log D); buf and tmp are scratch (S, n)."""
    wp = torch.mul(w, p[0], out=buf)
    m = torch.mul(wp, p[0], out=tmp) @ data.c11
    h = {(0, 0): m[:, 0], (0, 3): -m[:, 1], (3, 3): m[:, 2]}
    m = torch.mul(wp, p[1], out=tmp) @ data.c12
    h.update({(0, 1): m[:, 0], (1, 3): -m[:, 1], (0, 4): -m[:, 2], (3, 4): m[:, 3]})
    m = torch.mul(wp, p[2], out=tmp) @ data.c1
    h.update({(0, 2): m[:, 0], (2, 3): -m[:, 1]})
    wp = torch.mul(w, p[1], out=buf)
    m = torch.mul(wp, p[1], out=tmp) @ data.c22
    h.update({(1, 1): m[:, 0], (1, 4): -m[:, 1], (4, 4): m[:, 2]})
    m = torch.mul(wp, p[2], out=tmp) @ data.c2
    h.update({(1, 2): m[:, 0], (2, 4): -m[:, 1]})
    h[(2, 2)] = torch.mul(w, p[2], out=tmp).mul_(p[2]).sum(1)
    H = torch.empty(len(w), 5, 5, dtype=torch.float64)
    for (i, j), v in h.items():
        H[:, i, j] = v
        H[:, j, i] = v
    return H


@contextmanager
def _one_thread():
    """Run torch on one thread: on a shared CPU extra threads for these small tensors cost more than they save."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _damped_solve(M, H, g, lam):
    """Solve (M + lam * D) p = -g per row, D = diag(H) floored so that flat directions still get damped."""
    d = np.diagonal(H, axis1=1, axis2=2)
    d = np.maximum(d, 1e-9 * d.max(axis=1, keepdims=True) + 1e-30)
    A = M + (lam[:, None] * d)[:, :, None] * np.eye(5)
    with np.errstate(all="ignore"):
        try:
            p = np.linalg.solve(A, -g[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:  # a singular row: solve row by row, zero step where singular
            p = np.array([_solve_or_zero(Ai, -gi) for Ai, gi in zip(A, g)])
    p[~np.isfinite(p).all(axis=1)] = 0.0
    return p


def _solve_or_zero(A, rhs):
    try:
        return np.linalg.solve(A, rhs)
    except np.linalg.LinAlgError:
        return np.zeros_like(rhs)


@dataclass
class _Batch:
    """State of a batch of LM minimizations, one row per start (counts: None or one row of run counts per start;
    ys: None or one row of log losses per start)."""

    theta: np.ndarray
    counts: np.ndarray | None
    ys: np.ndarray | None
    origin: np.ndarray  # index of the start each row began from
    f: np.ndarray
    g: np.ndarray
    H: np.ndarray  # IRLS matrix (positive semi-definite)
    K: np.ndarray | None  # exact Hessian (Newton mode only)
    lam: np.ndarray  # LM damping per row
    converged: np.ndarray
    stalled: np.ndarray
    iters: np.ndarray
    decrement: np.ndarray  # last predicted decrease g^T H^-1 g / 2

    def take(self, idx) -> _Batch:
        return _Batch(**{k: None if v is None else v[idx] for k, v in vars(self).items()})


def _start_batch(theta, counts, data: _Data, delta, ys=None, newton: bool = False) -> _Batch:
    """A batch at `theta`, evaluated with the exact Hessian too when `newton` (it goes straight to Newton steps)."""
    theta = np.array(theta, dtype=float)
    S = len(theta)
    f, g, H, K = _evaluate(theta, data, counts, delta, "newton" if newton else "irls", ys)
    return _Batch(theta, counts, ys, np.arange(S), f, g, H, K, np.full(S, 1e-3), np.zeros(S, bool),
                  np.zeros(S, bool), np.zeros(S, int), np.full(S, np.inf))


def _iterate(batch: _Batch, data: _Data, delta, n_iter: int, newton: bool = False) -> None:
    """Run up to n_iter LM iterations on the rows of `batch` that are neither converged nor stalled (in place).

    Steps solve (M + lam diag(H)) p = -g with M = H (IRLS: robust far from the optimum, but only linearly
    convergent along flat directions) or M = K (newton=True: fast near the optimum); a step is taken only if the
    objective decreases, else lam grows 4x. Converged: the predicted decrease g^T H^-1 g / 2 is below
    _RTOL * f + _ATOL.
    Stalled: lam passed 1e12 with no accepted step; counted as converged if the decrease is below _STALL_RTOL * f.
    """
    mode = "newton" if newton else "irls"
    if newton and batch.K is None:
        batch.f, batch.g, batch.H, batch.K = _evaluate(batch.theta, data, batch.counts, delta, mode, batch.ys)
    for _ in range(n_iter):
        idx = np.flatnonzero(~(batch.converged | batch.stalled))
        if idx.size == 0:
            return
        f, g, H, lam = batch.f[idx], batch.g[idx], batch.H[idx], batch.lam[idx]
        dec = 0.5 * np.einsum("si,si->s", -g, _damped_solve(H, H, g, np.full(len(idx), 1e-12)))
        batch.decrement[idx] = dec
        done = (dec <= _RTOL * f + _ATOL) | ~np.isfinite(f)
        batch.converged[idx[done]] = True
        idx, f, g, H, lam = idx[~done], f[~done], g[~done], H[~done], lam[~done]
        if idx.size == 0:
            return
        M = batch.K[idx] if newton else H
        trial = batch.theta[idx] + _damped_solve(M, H, g, lam)
        every = idx.size == len(batch.theta)  # all rows active: no copy of the (rows, n) counts or losses
        counts = None if batch.counts is None else batch.counts if every else batch.counts[idx]
        ys = None if batch.ys is None else batch.ys if every else batch.ys[idx]
        with np.errstate(all="ignore"):
            ft, gt, Ht, Kt = _evaluate(trial, data, counts, delta, mode, ys)
        ok = np.isfinite(ft) & (ft < f)
        acc, rej = idx[ok], idx[~ok]
        batch.theta[acc], batch.f[acc], batch.g[acc], batch.H[acc] = trial[ok], ft[ok], gt[ok], Ht[ok]
        if newton:
            batch.K[acc] = Kt[ok]
        batch.lam[acc] = np.maximum(lam[ok] / 3.0, 1e-9)
        batch.lam[rej] = lam[~ok] * 4.0
        batch.iters[idx] += 1
        stuck = rej[batch.lam[rej] > 1e12]
        batch.stalled[stuck] = True
        batch.converged[stuck] = batch.decrement[stuck] <= _STALL_RTOL * batch.f[stuck] + _ATOL


def _minimize_starts(starts, data: _Data, delta) -> _Batch:
    """The survivors of the start search, converged on all runs and sorted best first.

    Up to _SUBSAMPLE_ABOVE runs the search runs on all of them (_halve_and_converge). Above, it runs on a stratified
    subsample of _SUBSAMPLE_RUNS runs (the start grid only has to find the basins, and a thousand runs spread over
    the budgets and sizes shape the landscape as all of them do), and its _KEEP survivors are then polished on all
    runs, where the lowest objective wins: the search costs the same at any size, and only the polish grows with n.
    """
    if _search_runs(data.n) == data.n:
        return _halve_and_converge(starts, data, delta)
    found = _halve_and_converge(starts, data.take(_stratified_subsample(data, _search_runs(data.n))), delta)
    batch = _start_batch(found.theta, None, data, delta)
    batch.origin = found.origin
    _iterate(batch, data, delta, _POLISH_ITERS)
    _iterate(batch, data, delta, _MAX_ITER, newton=True)
    return batch.take(_best_first(batch.f))


def _search_runs(n_runs: int) -> int:
    """Runs the start grid is searched on: all of them up to _SUBSAMPLE_ABOVE, else _SUBSAMPLE_RUNS."""
    return n_runs if n_runs <= _SUBSAMPLE_ABOVE else _SUBSAMPLE_RUNS


def _stratified_subsample(data: _Data, m: int) -> np.ndarray:
    """Positions (sorted) of m runs spread evenly over compute and, within a compute level, over model size: the
    runs ordered by compute (in _MIN_BUDGET_DECADES bins of log C) then log N, taken at m evenly spaced ranks (so
    each budget keeps its share of the runs, spread over its range of sizes). Deterministic: no random draw."""
    x1, x2 = data.x1.numpy(), data.x2.numpy()
    level = np.floor((x1 + x2) / (np.log(10.0) * _MIN_BUDGET_DECADES))
    order = np.lexsort((x1, level))
    return np.sort(order[np.unique(np.linspace(0, data.n - 1, m).round().astype(int))])


def _halve_and_converge(starts, data: _Data, delta) -> _Batch:
    """Successive halving over `starts` with IRLS steps (all run _ROUND_ITERS iterations, the better half goes on,
    ...), then the best _KEEP converge with Newton steps; returns the survivors sorted best first."""
    batch = _start_batch(starts, None, data, delta)
    while len(batch.theta) > _KEEP:
        _iterate(batch, data, delta, _ROUND_ITERS)
        batch = batch.take(_best_first(batch.f)[:max(_KEEP, len(batch.f) // 2)])
    _iterate(batch, data, delta, _ROUND_ITERS)
    _iterate(batch, data, delta, _MAX_ITER, newton=True)
    return batch.take(_best_first(batch.f))


def _best_first(f: np.ndarray) -> np.ndarray:
    return np.argsort(np.where(np.isfinite(f), f, np.inf), kind="stable")


def _diverse_starts(batch: _Batch, starts: np.ndarray, n_optima: int = 3,
                    n_grid: int = _BOOT_GRID_STARTS) -> np.ndarray:
    """Extra starts for bootstrap refits: up to n_optima other distinct converged optima of a best-first batch
    (differing by > 1e-3 in some of log A, log B, log E, alpha, beta) and the grid starts of its n_grid best rows."""
    optima = [batch.theta[0]]
    for theta, ok in zip(batch.theta[1:], batch.converged[1:]):
        if len(optima) > n_optima:
            break
        if ok and np.isfinite(theta).all() and all(np.abs(theta - t).max() > 1e-3 for t in optima):
            optima.append(theta)
    grid = starts[batch.origin[:n_grid]]
    return np.vstack([np.reshape(optima[1:], (-1, 5)), grid])


def _natural(theta, e_bound=None) -> np.ndarray:
    """Rows (a, b, e, alpha, beta) -> rows (E, A, B, alpha, beta); E = 0 exactly on rows flagged e_bound (a vanished
    E term at a constrained optimum, e.g. e = -560, is reported as the bound it is)."""
    theta = np.atleast_2d(theta)
    E = np.exp(theta[:, 2])
    if e_bound is not None:
        E = np.where(e_bound, 0.0, E)
    return np.column_stack([E, np.exp(theta[:, 0]), np.exp(theta[:, 1]), theta[:, 3], theta[:, 4]])


def allocation_constants(alpha, beta, A, B):
    """(a, b, G) with a = beta/(alpha+beta), b = alpha/(alpha+beta), G = (alpha A / (beta B))^(1/(alpha+beta)).

    Works elementwise on arrays; NaN where alpha + beta <= 0 or alpha A / (beta B) <= 0 (no interior optimum).
    """
    alpha, beta, A, B = (np.asarray(v, dtype=float) for v in (alpha, beta, A, B))
    s = alpha + beta
    with np.errstate(all="ignore"):
        ratio = alpha * A / (beta * B)
        ok = (s > 0) & (ratio > 0)
        a = np.where(ok, beta / s, np.nan)
        b = np.where(ok, alpha / s, np.nan)
        G = np.where(ok, ratio ** (1.0 / s), np.nan)
    return a, b, G


@dataclass(eq=False, repr=False)
class ParametricFit(FitResult):
    """L(N, D) = E + A/N^alpha + B/D^beta (N params, D tokens, L nats/token) with C = k N D FLOPs.

    params: E, A, B, alpha, beta, a (N_opt ~ C^a), b (D_opt ~ C^b), G (allocation constant); draws: the same names.
    This class is the one home of the parametric law (predict) and of the Chinchilla allocation formula
    (optimal_allocation, optimal_allocation_samples).
    """

    kind = "parametric"
    positive_params = ("A", "B")
    non_negative_params = ("E",)
    finite_params = ("alpha", "beta")
    summary_keys = ("objective", "converged", "iterations", "n_points", "rmse_log", "boundary", "stall")

    name: str = "parametric L(N, D) = E + A/N^alpha + B/D^beta"
    k: float = 6.0

    def predict(self, N, D) -> np.ndarray:
        """Loss at N parameters and D tokens (arrays broadcast)."""
        p = self.params
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]

    def predict_samples(self, N, D) -> np.ndarray:
        """Draws of the loss at (N, D), shape (n_draws, *broadcast shape) (NaN rows for failed draws)."""
        N, D = np.broadcast_arrays(np.asarray(N, dtype=float), np.asarray(D, dtype=float))
        if not self.draws:
            return np.empty((0, *N.shape))
        shape = (-1,) + (1,) * N.ndim
        E, A, B, alpha, beta = (np.asarray(self.draws[c], float).reshape(shape) for c in SAMPLE_COLUMNS)
        with np.errstate(over="ignore", invalid="ignore"):
            return E + A * N[None] ** -alpha + B * D[None] ** -beta

    def optimal_allocation(self, C) -> tuple[np.ndarray, np.ndarray]:
        """Compute-optimal (N_opt, D_opt) for C FLOPs under C = k N D: N_opt = G (C/k)^a, D_opt = (C/k)^b / G."""
        p = self.params
        return _allocation(np.asarray(C, dtype=float) / self.k, p["a"], p["b"], p["G"])

    def optimal_allocation_samples(self, C) -> tuple[np.ndarray, np.ndarray]:
        """Draws of (N_opt, D_opt) at C FLOPs, each (n_draws, *C.shape) (NaN for failed draws)."""
        ck = np.asarray(C, dtype=float) / self.k
        if not self.draws:
            return np.empty((0, *ck.shape)), np.empty((0, *ck.shape))
        shape = (-1,) + (1,) * ck.ndim
        a, b, G = (np.asarray(self.draws[c], float).reshape(shape) for c in ("a", "b", "G"))
        return _allocation(ck[None], a, b, G)

    def headline(self) -> str:
        p = self.params
        return (f"{self.name}: E = {p['E']:.4g}, A = {p['A']:.4g}, B = {p['B']:.4g}, alpha = {p['alpha']:.4f}, "
                f"beta = {p['beta']:.4f} ({'converged' if self.success else 'NOT CONVERGED'}"
                + (f": {self.message}" if self.message else "") + ")")

    @classmethod
    def _from_dict(cls, d: dict) -> ParametricFit:
        fit = super()._from_dict(d)
        if not 0 < fit.k < np.inf:
            raise ConfigError("parametric.k", "a positive number of FLOPs per parameter per token", fit.k)
        return fit


def _allocation(ck, a, b, G) -> tuple[np.ndarray, np.ndarray]:
    """N_opt = G (C/k)^a, D_opt = (C/k)^b / G (the Chinchilla allocation; elementwise)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return G * ck ** a, ck ** b / G


def _check_inputs(N, D, L) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = []
    for name, v in (("N", N), ("D", D), ("L", L)):
        try:
            arr = np.asarray(v, dtype=float).ravel()
        except (TypeError, ValueError) as exc:
            raise ConfigError(name, "an array of numbers", type(v).__name__) from exc
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            raise ConfigError(name, "finite positive values (parameters, tokens, loss)",
                              f"{int(bad.sum())} non-positive or non-finite of {arr.size}")
        arrays.append(arr)
    lengths = {name: len(a) for name, a in zip("NDL", arrays)}
    if len(set(lengths.values())) > 1:
        raise ConfigError("N, D, L", "arrays of the same length", lengths)
    if lengths["N"] < 5:
        raise ConfigError("N, D, L", "at least 5 runs (the model has 5 parameters: E, A, B, alpha, beta)",
                          lengths["N"])
    return tuple(arrays)


def _starts(grid) -> np.ndarray:
    if isinstance(grid, str):
        if grid != "epoch":
            raise ConfigError("grid", "'epoch' or an array of starts with columns (a, b, e, alpha, beta)", grid)
        return epoch_grid()
    starts = np.asarray(grid, dtype=float)
    if starts.ndim != 2 or starts.shape[1] != 5 or len(starts) == 0 or not np.isfinite(starts).all():
        raise ConfigError("grid", "an (n_starts, 5) array of finite (log A, log B, log E, alpha, beta)", starts.shape)
    return starts


def _check_design(N: np.ndarray, D: np.ndarray, k: float) -> None:
    """Refuse designs that cannot separate the N and D terms: one compute budget, too little spread in N or in D,
    or N and D varying together (a ladder with a fixed tokens-per-parameter ratio)."""
    lN, lD = np.log10(N), np.log10(D)
    c_span = float(np.ptp(lN + lD))
    if c_span < _MIN_BUDGET_DECADES:
        raise ConfigError("N, D", "runs at more than one compute budget (one budget ties D to N through C = k N D, "
                          "so the N and D terms cannot be told apart)",
                          f"all {N.size} runs at C = {np.median(k * N * D):.3g} FLOPs (spread x{10 ** c_span:.3g})")
    for name, values in (("N", lN), ("D", lD)):
        if np.ptp(values) < _MIN_DECADES:
            raise ConfigError(name, f"a spread of at least {_MIN_DECADES} decades to fit its power law",
                              f"x{10 ** np.ptp(values):.3g} ({np.ptp(values):.3g} decades)")
    minor = float(np.sqrt(max(np.linalg.eigvalsh(np.cov(lN, lD))[0], 0.0)))
    if minor < _MIN_CROSS_DECADES:
        raise ConfigError("N, D", f"runs that vary N and D independently (spread off their common line of at least "
                          f"{_MIN_CROSS_DECADES} decades)", f"log D follows log N within {minor:.3g} decades")


def _bootstrap_groups(bootstrap: str, budgets, n: int):
    if bootstrap not in PARAMETRIC_BOOTSTRAP:
        raise ConfigError("bootstrap", " | ".join(repr(b) for b in PARAMETRIC_BOOTSTRAP), bootstrap)
    if bootstrap != "budgets":
        return None
    if budgets is None:
        raise ConfigError("budgets", "one budget label per run when bootstrap='budgets'")
    groups = np.asarray(budgets).ravel()
    if len(groups) != n:
        raise ConfigError("budgets", f"one budget label per run ({n})", len(groups))
    return groups


def _log_terms(theta: np.ndarray, data: _Data) -> np.ndarray:
    """The three logsumexp terms (a - alpha log N, b - beta log D, e) per row and run: (S, n, 3)."""
    x1, x2 = data.x1.numpy(), data.x2.numpy()
    a, b, e, alpha, beta = (theta[:, j:j + 1] for j in range(5))
    return np.stack([a - alpha * x1, b - beta * x2, np.broadcast_to(e, (len(theta), data.n))], axis=-1)


def _term_shares(theta: np.ndarray, data: _Data) -> np.ndarray:
    """Largest share over the runs of each term (A/N^alpha, B/D^beta, E) in the model: (S, 3). A share below
    _VANISH means the term has vanished: its parameter sits on a bound (E -> 0, A -> 0 or alpha -> large)."""
    step = _chunk_rows(data.n)
    parts = [_chunk_term_shares(theta[s:s + step], data) for s in range(0, len(theta), step)]
    return np.concatenate(parts) if parts else np.empty((0, 3))


def _chunk_term_shares(theta: np.ndarray, data: _Data) -> np.ndarray:
    """_term_shares for a few rows: the three terms as separate (rows, n) arrays (a reduction over a last axis of
    length 3 is slow in numpy, and their temporaries stay small)."""
    x1, x2 = data.x1.numpy(), data.x2.numpy()
    a, b, e, alpha, beta = (theta[:, j:j + 1] for j in range(5))
    t = (a - alpha * x1, b - beta * x2, np.broadcast_to(e, (len(theta), data.n)))
    with np.errstate(over="ignore", invalid="ignore"):
        top = np.maximum(np.maximum(t[0], t[1]), t[2])
        p = [np.exp(tk - top) for tk in t]
        total = p[0] + p[1] + p[2]
        return np.column_stack([np.nan_to_num(pk / total, nan=0.0).max(axis=1) for pk in p])


def _observed(data: _Data, ys, rows: int) -> np.ndarray:
    return np.broadcast_to(data.y.numpy(), (rows, data.n)) if ys is None else ys


def _E_slope_at_zero(theta, data: _Data, counts, ys, delta) -> np.ndarray:
    """d objective / d E at E = 0 (natural E) for each row: negative when raising E off its bound lowers it."""
    t = _log_terms(theta, data)
    log_m = np.logaddexp(t[..., 0], t[..., 1])  # log model without the E term
    psi = np.clip(_observed(data, ys, len(theta)) - log_m, -delta, delta)
    c = 1.0 if counts is None else counts
    with np.errstate(over="ignore"):
        return -(c * psi * np.exp(-log_m)).sum(axis=1)


def _restart_E(theta, f, counts, ys, data: _Data, delta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refit rows whose E vanished from E = fraction x (smallest loss) for each of _E_FRACTIONS, keeping the rest of
    the row; returns the best (theta, f, converged) per row (the input row where no restart did better)."""
    R, m = len(theta), len(_E_FRACTIONS)
    y = _observed(data, ys, R)
    present = np.ones_like(y, dtype=bool) if counts is None else counts > 0
    log_lmin = np.where(present, y, np.inf).min(axis=1)
    starts = np.repeat(theta, m, axis=0)
    starts[:, 2] = np.repeat(log_lmin, m) + np.tile(np.log(_E_FRACTIONS), R)
    batch = _start_batch(starts, _repeat_rows(counts, m), data, delta, _repeat_rows(ys, m))
    _iterate(batch, data, delta, 2 * _ROUND_ITERS)
    pick = np.arange(R) * m + np.argmin(np.where(np.isfinite(batch.f), batch.f, np.inf).reshape(R, m), axis=1)
    batch = batch.take(pick)
    _iterate(batch, data, delta, _MAX_ITER, newton=True)
    better = np.isfinite(batch.f) & (batch.f < f * (1 - 1e-10))
    return (np.where(better[:, None], batch.theta, theta), np.where(better, batch.f, f),
            better & batch.converged)


@dataclass
class _Settled:
    """Minimizations after the boundary check: theta, f, converged per row, and what the check found."""

    theta: np.ndarray
    f: np.ndarray
    converged: np.ndarray
    escaped: np.ndarray  # E had vanished and a restart found a lower objective with E > 0
    e_bound: np.ndarray  # E -> 0 is a constrained optimum (raising E does not lower the objective)
    e_stuck: np.ndarray  # E -> 0 although raising E lowers the objective: stalled on the bound
    a_gone: np.ndarray  # the A/N^alpha term vanished
    b_gone: np.ndarray  # the B/D^beta term vanished


def _settle(theta, f, converged, counts, ys, data: _Data, delta) -> _Settled:
    """Detect minimizations that ended with a vanished term; restart those with E -> 0 off the bound and keep the
    lower objective; classify what remains (a constrained optimum at E = 0, or a stall on the bound)."""
    theta, f, converged = theta.copy(), f.copy(), converged.copy()
    escaped = np.zeros(len(theta), bool)
    shares = _term_shares(theta, data)
    rows = np.flatnonzero((shares[:, 2] < _VANISH) & np.isfinite(f))
    if rows.size:
        t2, f2, c2 = _restart_E(theta[rows], f[rows], _rows(counts, rows), _rows(ys, rows), data, delta)
        moved = f2 < f[rows]
        escaped[rows[moved]] = True
        theta[rows], f[rows] = t2, f2
        converged[rows[moved]] = c2[moved]
        shares[rows] = _term_shares(theta[rows], data)
    gone = shares < _VANISH
    slope = np.zeros(len(theta))
    if gone[:, 2].any():
        at = gone[:, 2]
        slope[at] = _E_slope_at_zero(theta[at], data, _rows(counts, at), _rows(ys, at), delta)
    return _Settled(theta, f, converged, escaped, gone[:, 2] & (slope >= 0), gone[:, 2] & (slope < 0),
                    gone[:, 0], gone[:, 1])


def _rows(v: np.ndarray | None, idx) -> np.ndarray | None:
    return None if v is None else v[idx]


def _repeat_rows(v: np.ndarray | None, times: int) -> np.ndarray | None:
    return v if v is None or times == 1 else np.repeat(v, times, axis=0)


def _bootstrap_refits(theta_hat, extra_starts, data: _Data, delta, counts=None, ys=None) -> _Settled:
    """Refit every bootstrap resample at once (rows of run counts, or rows of simulated log losses).

    Each resample starts from theta_hat and from extra_starts (other local optima of the full fit). All
    (resample, start) pairs form one LM batch; after 2 * _ROUND_ITERS iterations the best start of each resample goes
    on to convergence, and then through the same boundary check as the full fit (_settle).
    """
    starts = np.vstack([np.atleast_2d(theta_hat), np.reshape(extra_starts, (-1, 5))])
    n_s = len(starts)
    R = len(counts) if counts is not None else len(ys)
    batch = _start_batch(np.tile(starts, (R, 1)), _repeat_rows(counts, n_s), data, delta, _repeat_rows(ys, n_s),
                         newton=n_s == 1)
    if n_s > 1:
        _iterate(batch, data, delta, 2 * _ROUND_ITERS)
        f = np.where(np.isfinite(batch.f), batch.f, np.inf).reshape(R, n_s)
        batch = batch.take(np.arange(R) * n_s + np.argmin(f, axis=1))
    _iterate(batch, data, delta, _MAX_ITER, newton=True)
    return _settle(batch.theta, batch.f, batch.converged, counts, ys, data, delta)


def _residual_sigma(residuals: np.ndarray, sigma) -> tuple[float, int, str]:
    """Noise sd of log L for the residual bootstrap: the given sigma, or a robust estimate (1.4826 x the median
    absolute deviation of the log residuals; the fit is robust, so is its noise estimate) with n - 5 dof."""
    dof = residuals.size - 5
    if sigma is not None:
        return float(sigma), dof, "given"
    mad = float(np.median(np.abs(residuals - np.median(residuals))))
    return 1.4826 * mad, dof, "residuals (robust: 1.4826 x MAD)"


def fit_parametric(N, D, L, *, k: float = 6.0, delta: float = 1e-3, grid="epoch", n_boot: int = 0, seed: int = 0,
                   bootstrap: str = "runs", budgets=None, sigma: float | None = None) -> ParametricFit:
    """Fit L = E + A/N^alpha + B/D^beta (N params, D tokens, L loss) by summed Huber loss on log L.

    k: FLOPs per parameter per token (C = k N D) for the allocation constants. grid: "epoch" (4,500 starts) or an
    (n, 5) array of starts (log A, log B, log E, alpha, beta). n_boot: bootstrap refits (0 = none); bootstrap="runs"
    resamples runs, "budgets" resamples whole budgets (needs `budgets`, one label per run; with fewer than
    MIN_RESAMPLE_UNITS budgets the residual bootstrap is used instead), "residual" simulates log L = fitted + Gaussian
    noise of sd `sigma` (sd of log L; default: a robust estimate from the residuals) and refits. When fewer than 90%
    of the runs/budgets refits succeed, the residual bootstrap replaces them (diagnostics bootstrap_fallback).

    Refuses (ConfigError) designs that cannot separate N from D (one budget, little spread, N and D in lockstep).
    A minimization that ends with E -> 0 (a flat region: the E term has vanished) is restarted with E > 0 and the
    lower objective kept (diagnostics stall); an E = 0 that remains is either a constrained optimum (flagged in
    diagnostics boundary and in unreliable) or a stall (success False). Bootstrap refits that stall on a bound, or
    lose the N or D term, are failed draws. success is False when the best start did not converge.
    diagnostics: objective (summed Huber), n_starts, converged, iterations, grad_norm, huber_delta, n_points,
    rmse_log (RMS of log residuals), bootstrap (the method used), n_boot_failed.
    """
    N, D, L = _check_inputs(N, D, L)
    if not (np.isfinite(k) and k > 0):
        raise ConfigError("k", "a positive number of FLOPs per parameter per token", k)
    if not (np.isfinite(delta) and delta > 0):
        raise ConfigError("delta", "a positive Huber threshold", delta)
    if n_boot < 0:
        raise ConfigError("n_boot", "a non-negative number of bootstrap refits", n_boot)
    if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
        raise ConfigError("sigma", "a positive standard deviation of log L", sigma)
    groups = _bootstrap_groups(bootstrap, budgets, len(N))
    starts = _starts(grid)
    _check_design(N, D, k)
    data = _Data(N, D, L)
    with _one_thread():
        best = _minimize_starts(starts, data, delta)
        settled = _settle(best.theta[:1], best.f[:1], best.converged[:1], None, None, data, delta)
    theta = settled.theta[0]
    E, A, B, alpha, beta = (float(v) for v in _natural(theta, settled.e_bound)[0])
    a, b, G = (float(v) for v in allocation_constants(alpha, beta, A, B))
    params = {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta, "a": a, "b": b, "G": G}
    residuals = np.log(L) - np.log(E + A * N ** -alpha + B * D ** -beta)
    success, message = bool(settled.converged[0]), ""
    boundary = _boundary_reasons(settled, 0)
    if settled.e_stuck[0]:
        success = False
        message = "stalled at E -> 0 although raising E lowers the objective; no restart reached the optimum"
    elif not success:
        message = (f"best start did not converge (predicted decrease {best.decrement[0]:.3g} at objective "
                   f"{best.f[0]:.6g} after {best.iters[0]} iterations)")
    elif not np.isfinite(G):
        message = "alpha + beta <= 0: no compute-optimal allocation"
    diagnostics = {
        "objective": float(settled.f[0]), "n_starts": len(starts), "n_refined": len(best.theta),
        "n_search_runs": _search_runs(len(N)),
        "n_converged": int(best.converged.sum()), "converged": success, "iterations": int(best.iters[0]),
        "grad_norm": float(np.abs(best.g[0]).max()), "huber_delta": delta, "n_points": len(N),
        "rmse_log": float(np.sqrt(np.mean(residuals ** 2))), "bootstrap": bootstrap,
    }
    if settled.escaped[0]:
        diagnostics["stall"] = (f"the best start stopped at E = {np.exp(best.theta[0, 2]):.3g} (objective "
                                f"{best.f[0]:.10g}); restarted off the bound: E = {E:.4g}, objective "
                                f"{settled.f[0]:.10g}")
        diagnostics["stalled_objective"] = float(best.f[0])
        diagnostics["stalled_E"] = float(np.exp(best.theta[0, 2]))
    if boundary:
        diagnostics["boundary"] = "; ".join(boundary.values())
    fit = ParametricFit(params=params, diagnostics=diagnostics, success=success, message=message, k=float(k))
    if n_boot and not success:
        fit.diagnostics["bootstrap_skipped"] = f"the full-data fit did not succeed ({message})"
    elif n_boot:
        with _one_thread():
            small = _search_runs(data.n) == data.n
            extra = _diverse_starts(best, starts, n_grid=_BOOT_GRID_STARTS if small else 0)
            _add_bootstrap(fit, theta, extra, data, delta, n_boot, seed, bootstrap, groups,
                           residuals, sigma)
    if not fit.intervals:
        reason = fit.diagnostics.get("bootstrap_skipped", "no bootstrap (n_boot = 0)")
        fit.intervals = {name: Interval.undetermined(reason) for name in DRAW_NAMES}
    fit.unreliable = unreliable_reasons(params, fit.intervals, exponents={"alpha": LOSS_EXPONENT,
                                                                          "beta": LOSS_EXPONENT},
                                   spans=("E", "A", "B"))
    fit.unreliable.update(boundary)
    return fit


def _boundary_reasons(settled: _Settled, row: int) -> dict[str, str]:
    """Parameter -> why it sits on a bound, for one row of a settled minimization."""
    out = {}
    if settled.e_bound[row]:
        out["E"] = "at the bound E -> 0 (a constrained optimum: these runs do not resolve an irreducible loss)"
    if settled.e_stuck[row]:
        out["E"] = "stalled at the bound E -> 0"
    if settled.a_gone[row]:
        out["A"] = "the A/N^alpha term vanished (A -> 0): these runs show no dependence on N"
    if settled.b_gone[row]:
        out["B"] = "the B/D^beta term vanished (B -> 0): these runs show no dependence on D"
    return out


def _add_bootstrap(fit: ParametricFit, theta, extra, data: _Data, delta, n_boot, seed, bootstrap, groups,
                   residuals, sigma) -> None:
    """Bootstrap draws by name and their intervals, with the fallbacks of fit_parametric's docstring."""
    method, note = bootstrap, ""
    if method == "budgets" and np.unique(groups).size < MIN_RESAMPLE_UNITS:
        method, note = "residual", (f"only {np.unique(groups).size} budgets (< {MIN_RESAMPLE_UNITS}) to resample: "
                                    "residual bootstrap")
    draws, ok, failed, noise = _bootstrap_draws(theta, extra, data, delta, n_boot, seed, method, groups, residuals,
                                                sigma)
    if method != "residual" and ok.sum() < MIN_OK_FRACTION * n_boot:
        note = f"only {int(ok.sum())}/{n_boot} {method} refits succeeded: residual bootstrap"
        method = "residual"
        draws, ok, failed, noise = _bootstrap_draws(theta, extra, data, delta, n_boot, seed, method, groups,
                                                    residuals, sigma)
    fit.draws, fit.noise = draws, noise
    fit.intervals = intervals_from_draws(draws, method=f"bootstrap:{method}")
    fit.diagnostics.update({"bootstrap": method, "n_boot_requested": n_boot, "n_boot_failed": int((~ok).sum()),
                            **failed})
    if note:
        fit.diagnostics["bootstrap_fallback"] = note


def _bootstrap_draws(theta, extra, data: _Data, delta, n_boot, seed, method, groups, residuals, sigma):
    """One bootstrap of the given method: draws by name (NaN = failed), success flags, failure counts by cause, and
    the noise model ({} unless residual)."""
    counts = ys = None
    noise = {}
    if method == "residual":
        s, dof, source = _residual_sigma(residuals, sigma)
        rng = np.random.default_rng(seed)
        scale = s * np.sqrt(dof / rng.chisquare(dof, size=n_boot)) if sigma is None else np.full(n_boot, s)
        log_fit = data.y.numpy() - residuals
        ys = log_fit[None, :] + rng.standard_normal((n_boot, data.n)) * scale[:, None]
        noise = {"sigma": s, "dof": dof, "source": source}
    else:
        counts = np.array([np.bincount(idx, minlength=data.n)
                           for idx in bootstrap_indices(data.n, n_boot, seed, groups)], dtype=float)
    st = _bootstrap_refits(theta, extra, data, delta, counts, ys)
    ok = st.converged & ~st.e_stuck & ~st.a_gone & ~st.b_gone
    samples = _natural(st.theta, st.e_bound)
    samples[~ok] = np.nan
    a, b, G = allocation_constants(samples[:, 3], samples[:, 4], samples[:, 1], samples[:, 2])
    draws = dict(zip(SAMPLE_COLUMNS, samples.T)) | {"a": a, "b": b, "G": G}
    failed = {"n_boot_not_converged": int((~st.converged).sum()), "n_boot_stuck_on_bound": int(st.e_stuck.sum()),
              "n_boot_term_vanished": int((st.a_gone | st.b_gone).sum()), "n_boot_restarted": int(st.escaped.sum()),
              "n_boot_E_at_bound": int(st.e_bound.sum())}
    return draws, ok, failed, noise
