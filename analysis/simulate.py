"""Synthetic sweeps drawn from known laws: the home of every test fixture and of the calibration study.

A `Surface` is an approach-3 loss surface L(N, D) = E + A/N^alpha + B/D^beta (N params, D tokens, loss in
nats/token, C = k N D FLOPs) with a learning-rate optimum that drifts with N and D (the Step-Law form
lr*(N, D) = c N^p D^q of Li et al. 2025, "Predictable Scale, Part I", fitted there as c = 1.79, p = -0.713,
q = 0.307); a run at learning rate lr costs loss x (1 + lr_curvature * log10(lr / lr*)^2). Its compute-optimal
N, D and L at a budget C are exact (`Surface.optimum`), so every fitted quantity has a known truth.

A `SweepDesign` says how a researcher would sample it: budgets spanning `span` x, `n_per_budget` model sizes per
budget on a grid of +-`half_width` decades of N whose centre is off the true optimum by up to `max_offset` decades,
`n_seeds` seeds per point with multiplicative log-normal noise of relative sd `noise`, and optionally an LR scan of
`n_lr` learning rates in every (budget, model) cell (rows of kind "hparam").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from scaling.errors import ConfigError

CHINCHILLA_LAW = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022, Eq. 10


@dataclass(frozen=True)
class Surface:
    """L(N, D) = E + A/N^alpha + B/D^beta, C = k N D, and lr*(N, D) = lr_coef N^lr_n_exp D^lr_d_exp."""

    E: float = CHINCHILLA_LAW["E"]
    A: float = CHINCHILLA_LAW["A"]
    B: float = CHINCHILLA_LAW["B"]
    alpha: float = CHINCHILLA_LAW["alpha"]
    beta: float = CHINCHILLA_LAW["beta"]
    k: float = 6.0
    lr_coef: float = 1.79  # Step Law (Li et al. 2025)
    lr_n_exp: float = -0.713
    lr_d_exp: float = 0.307
    lr_curvature: float = 0.05  # relative loss increase per squared decade of LR off its optimum

    def loss(self, N, D):
        """Noise-free loss [nats/token] of a run with N params on D tokens at its optimal LR."""
        N, D = np.asarray(N, float), np.asarray(D, float)
        return self.E + self.A * N ** -self.alpha + self.B * D ** -self.beta

    def lr_opt(self, N, D):
        """Loss-optimal peak learning rate of a run with N params on D tokens."""
        return self.lr_coef * np.asarray(N, float) ** self.lr_n_exp * np.asarray(D, float) ** self.lr_d_exp

    def lr_penalty(self, N, D, lr):
        """Loss multiplier (>= 1) of training at `lr` instead of lr*(N, D)."""
        return 1.0 + self.lr_curvature * np.log10(np.asarray(lr, float) / self.lr_opt(N, D)) ** 2

    @property
    def a(self) -> float:
        """True exponent of N_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """True exponent of D_opt ∝ C^b."""
        return self.alpha / (self.alpha + self.beta)

    def optimum(self, C) -> dict[str, np.ndarray]:
        """Exact compute-optimal N_opt [params], D_opt [tokens], L_opt and lr_opt at C [FLOPs] (C = k N D)."""
        C = np.asarray(C, float)
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        N = G * (C / self.k) ** self.a
        D = C / (self.k * N)
        return {"N_opt": N, "D_opt": D, "L_opt": self.loss(N, D), "lr_opt": self.lr_opt(N, D)}

    def as_law(self) -> dict[str, float]:
        """The surface's E, A, B, alpha, beta as a plain dict (the `law` argument of synthetic_runs)."""
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}


@dataclass(frozen=True)
class SweepDesign:
    """How a synthetic sweep samples a surface (see the module docstring)."""

    name: str = "default"
    n_budgets: int = 5
    c_min: float = 1e17  # smallest budget [FLOPs]
    span: float = 100.0  # largest / smallest budget
    n_per_budget: int = 5
    half_width: float = 0.5  # decades of N either side of each grid's centre
    max_offset: float = 0.0  # each grid's centre is off the true optimum by U(-max_offset, max_offset) decades
    noise: float = 0.005  # relative sd of the loss (log-normal)
    n_seeds: int = 1
    n_lr: int = 0  # learning rates per (budget, model) cell; 0: no LR scan
    lr_half_width: float = 0.6  # decades of LR either side of the scan's centre

    def __post_init__(self) -> None:
        checks = {"n_budgets": self.n_budgets >= 1, "c_min": self.c_min > 0, "span": self.span >= 1,
                  "n_per_budget": self.n_per_budget >= 1, "half_width": self.half_width > 0,
                  "max_offset": self.max_offset >= 0, "noise": self.noise >= 0, "n_seeds": self.n_seeds >= 1,
                  "n_lr": self.n_lr >= 0, "lr_half_width": self.lr_half_width > 0}
        for field_name, ok in checks.items():
            if not ok:
                raise ConfigError(f"SweepDesign.{field_name}", "a value in range", getattr(self, field_name))
        if self.n_budgets > 1 and self.span <= 1:
            raise ConfigError("SweepDesign.span", "> 1 when there are several budgets", self.span)

    @property
    def budgets(self) -> np.ndarray:
        """The FLOP budgets, log-spaced from c_min to c_min * span."""
        return np.geomspace(self.c_min, self.c_min * self.span, self.n_budgets)

    def with_(self, **changes) -> SweepDesign:
        """A copy with some fields changed."""
        return replace(self, **changes)


def simulate_sweep(design: SweepDesign, surface: Surface | None = None, seed: int = 0) -> pd.DataFrame:
    """One synthetic sweep: a runs table with run_id, kind ("isoflop" / "hparam"), N, D, C, budget, loss, lr, seed.

    IsoFLOP runs train at their optimal LR (their expected loss is the surface); with design.n_lr > 0 every
    (budget, model) cell also gets an LR scan of n_lr runs (kind "hparam") around a centre off lr* by up to
    +-0.2 decades. Each point is repeated for design.n_seeds seeds with independent noise.
    """
    s = surface or Surface()
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for i, C in enumerate(design.budgets):
        centre = np.log10(s.optimum(C)["N_opt"]) + rng.uniform(-design.max_offset, design.max_offset)
        for j, logN in enumerate(centre + np.linspace(-design.half_width, design.half_width, design.n_per_budget)):
            N = 10.0 ** logN
            D = C / (s.k * N)
            lr_star = float(s.lr_opt(N, D))
            cell = [("isoflop", lr_star)]
            if design.n_lr:
                shift = rng.uniform(-0.2, 0.2)
                grid = lr_star * 10 ** (shift + np.linspace(-design.lr_half_width, design.lr_half_width, design.n_lr))
                cell += [("hparam", float(lr)) for lr in grid]
            for m, (kind, lr) in enumerate(cell):
                clean = float(s.loss(N, D) * s.lr_penalty(N, D, lr))
                for r in range(design.n_seeds):
                    rows.append({"run_id": f"b{i}_n{j}_{kind}{m}_s{r}", "kind": kind, "N": N, "D": D, "C": float(C),
                                 "budget": float(C), "loss": clean * float(np.exp(design.noise * rng.standard_normal())),
                                 "lr": lr, "seed": r})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the sweep used by the pipeline's tests


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
    return Surface(**{**CHINCHILLA_LAW, **(law or {})}, k=k).optimum(C)["N_opt"]


# ---------------------------------------------------------------- calibration: coverage of the fitted intervals

QUANTITIES = ("a", "b", "N_opt", "D_opt", "L_opt", "lr_opt")
EXTRAPOLATION = 100.0  # N_opt, D_opt, L_opt, lr_opt are predicted at this multiple of the largest budget
WIDTH_UNITS = {"a": "hi - lo", "b": "hi - lo", "N_opt": "hi / lo", "D_opt": "hi / lo", "L_opt": "(hi - lo) / truth",
               "lr_opt": "hi / lo"}


@dataclass(frozen=True)
class Coverage:
    """One quantity's calibration over many sweeps of one design."""

    quantity: str
    n_sweeps: int
    n_determined: int  # sweeps whose interval was determined
    n_undetermined: int  # intervals that honestly said "undetermined"
    n_failed: int  # sweeps whose fit refused (ConfigError), e.g. too few usable budgets
    n_covered: int  # determined intervals containing the truth
    median_width: float  # in WIDTH_UNITS[quantity]
    note: str = ""

    @property
    def coverage(self) -> float:
        """Fraction of determined intervals that contain the truth (NaN when none is determined)."""
        return self.n_covered / self.n_determined if self.n_determined else float("nan")


def _width(quantity: str, lo: float, hi: float, truth: float) -> float:
    unit = WIDTH_UNITS[quantity]
    if unit == "hi / lo":
        return hi / lo
    if unit == "(hi - lo) / truth":
        return (hi - lo) / truth
    return hi - lo


def _prediction_interval(draws) -> tuple[float, float, str]:
    """(lo, hi, reason) of a prediction's draws at one C, through analysis.result.interval_from_draws."""
    from analysis.result import interval_from_draws

    iv = interval_from_draws(np.asarray(draws, float).ravel(), method="prediction")
    return iv.lo, iv.hi, iv.reason


def _sweep_intervals(df: pd.DataFrame, C_target: float, n_boot: int, seed: int, with_lr: bool) -> dict:
    """quantity -> (lo, hi, reason) from one sweep, or quantity -> None when its fit refused."""
    from analysis.isoflop import fit_isoflop

    out: dict = {}
    try:
        iso = fit_isoflop(df[df["kind"] == "isoflop"], n_boot=n_boot, seed=seed)
    except ConfigError:
        iso = None
    for q in ("a", "b"):
        iv = iso.intervals[q] if iso is not None else None
        out[q] = None if iv is None else (iv.lo, iv.hi, iv.reason)
    samples = iso.predict_samples(C_target) if iso is not None else {}
    for q in ("N_opt", "D_opt", "L_opt"):
        out[q] = _prediction_interval(samples[q]) if iso is not None else None
    if with_lr:
        from analysis.hyperparams import fit_hyperparams

        try:
            hp = fit_hyperparams(df, n_boot=n_boot, seed=seed)
            out["lr_opt"] = _prediction_interval(hp.predict_samples(C_target)["lr_opt"])
        except ConfigError:
            out["lr_opt"] = None
    return out


def calibration_study(design: SweepDesign, n_sweeps: int, *, surface: Surface | None = None, n_boot: int = 400,
                      seed: int = 0, with_lr: bool | None = None) -> dict[str, Coverage]:
    """Coverage of nominal 95% intervals over `n_sweeps` synthetic sweeps of one design.

    Truth: a, b of the surface, and its compute-optimal N, D, L and lr at EXTRAPOLATION x the largest budget.
    lr_opt is included when the design scans LRs (design.n_lr >= 3) unless with_lr says otherwise.
    """
    s = surface or Surface()
    C_target = EXTRAPOLATION * float(design.budgets[-1])
    opt = s.optimum(C_target)
    truth = {"a": s.a, "b": s.b, "N_opt": float(opt["N_opt"]), "D_opt": float(opt["D_opt"]),
             "L_opt": float(opt["L_opt"]), "lr_opt": float(opt["lr_opt"])}
    with_lr = design.n_lr >= 3 if with_lr is None else with_lr
    names = QUANTITIES if with_lr else QUANTITIES[:-1]
    tallies = {q: {"det": 0, "und": 0, "fail": 0, "cov": 0, "widths": []} for q in names}
    for i in range(n_sweeps):
        sweep_seed = seed * 1_000_003 + i
        got = _sweep_intervals(simulate_sweep(design, s, seed=sweep_seed), C_target, n_boot, sweep_seed, with_lr)
        for q in names:
            t = tallies[q]
            if got.get(q) is None:
                t["fail"] += 1
                continue
            lo, hi, reason = got[q]
            if reason or not (np.isfinite(lo) and np.isfinite(hi)):
                t["und"] += 1
                continue
            t["det"] += 1
            t["cov"] += int(lo <= truth[q] <= hi)
            t["widths"].append(_width(q, lo, hi, truth[q]))
    return {q: Coverage(q, n_sweeps, t["det"], t["und"], t["fail"], t["cov"],
                        float(np.median(t["widths"])) if t["widths"] else float("nan")) for q, t in tallies.items()}
