"""Grid design: turn a SweepSpec into concrete runs whose realized FLOPs land on their budgets.

For each budget C (FLOPs under `budgets.convention`):
1. Models: the prior optimum N_opt(C) (Chinchilla's 20 tokens/param, or a fitted law), then `models_per_budget` targets
   log-uniform over [N_opt / sqrt(spread), N_opt * sqrt(spread)] (or the explicit `grid.sizes`), each placed on a real
   shape by `scaling.ladder.shape_for_params`. Targets count params as the budget convention does (all params for
   6N_total, non-embedding otherwise); N below is the realized shape's count, not the target. A target in a
   gap of the ladder (tiny fixed-depth ladders have a few) moves to the nearest size it can build, at most
   GAP_SHIFT (15%) away; D follows from the realized N, so the grid stays on its budget. When two targets land on
   the same shape (a ladder coarser than the targets' spacing), the one further from N_opt moves outwards to the
   next free shape, so each budget still gets `models_per_budget` distinct models.
2. Batch and steps: with F = flops_per_token(cfg, convention) and the target batch B0 (sequences), search integer
   batches B in [B0 / batch_range, B0 * batch_range] (multiples of micro_batch_size) and steps S = round(C / (F B T))
   for the pair with |S B T F / C - 1| <= tolerance (1%) and S >= min_steps, preferring B nearest B0 (in log), then the
   smaller error. D = S B T tokens; the realized FLOPs S B T F are reported per run.
3. Replicates (optional `grid.replicate_seeds`): the `grid.replicate_models` isoFLOP models nearest N_opt also
   train with each of those seeds (kind "isoflop", the seed in tags), so the noise model sees runs differing only
   in seed.
4. LR x batch grid (optional `[hparams]`): at the chosen budgets, the model nearest N_opt (or every model) is also
   run at each (lr, batch) pair, tagged kind "hparam"; batch and steps are solved again for each pair.

Impossible runs: a budget too small for its smallest model to take one step at the smallest allowed batch is a
ConfigError (it names the budget and the model), and so is a budget where no isoFLOP model is left. A single run that
cannot reach `min_steps` (the largest models at the smallest budget, typically) is dropped with a warning and listed
in `Plan.dropped`, so one edge of the grid does not block the sweep.

Identical runs (the same full run config reached from two budgets or from both grids) are kept once: the first keeps
its tags and records the other kinds under `tags["also"]`. `run_id` is the first 12 hex digits of the sha256 of the
canonical JSON (sorted keys, no spaces) of the run's identity: the full resolved RunConfig without `out` and without
the runtime-only keys (checkpoint cadence), so the same run gets the same id in any process.

The spec is data; this module makes every planning decision: the prior optimum (`n_opt`, with `prior_from_fit` for a
previous fit.json), the LR and target batch at a budget (`lr_at`, `batch_at`), the shapes, the batch and steps, and
each run's time limit (`time_limit_min`: the estimated wall time at resources.throughput_flops x TIME_SAFETY, at
least TIME_FLOOR_MIN minutes; resources.time_min when there is no throughput figure). `plan(spec)` also refuses
what would fail in every worker (a tokenizer whose extra is not installed) and warns when a run would read its
corpus more than once (how many epochs); `design(spec)` returns the same findings in `Plan.problems` /
`Plan.warnings` without raising, for `sweep plan` to print.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import heapq
import importlib.util
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scaling.accounting import all_flops_per_token, count_params, flops_per_token
from scaling.config import ModelConfig
from scaling.errors import ConfigError
from scaling.jsonio import TornFileError, read_json
from scaling.ladder import DEFAULT_ASPECT_RATIO, default_head_dim, shape_for_params
from scaling.runconfig import RunConfig
from scaling.tokenizers import check_tokenizer
from sweeps.spec import SweepSpec, TrainSpec, match_budget

GAP_SHIFT = 0.15  # a size target in a gap of the shape ladder may move this far (relative) to a buildable size
EXACT_ASPECT_MAX_ERROR = 0.45  # model.exact_aspect: the largest miss (half a ~2x step in N between neighbouring
# widths, e.g. 8x512 -> 10x640); D follows the realized N, so a miss moves the model, not the budget
DEFAULT_BATCH = 16  # target sequences per step when the spec sets no batch key
TIME_SAFETY = 2.0  # a run's time limit is this x its estimated wall time (evals, checkpoints, slow nodes) ...
TIME_FLOOR_MIN = 15  # ... and at least this many minutes (start-up, data preparation, compile)


@dataclass
class PlannedRun:
    run_id: str  # sha256 of the run's canonical identity JSON, first 12 hex digits
    budget: float  # target FLOPs under `flop_convention`
    config: dict  # RunConfig-shaped (model/train/data/eval), without `out`; train.steps set exactly
    N: int  # non-embedding params of the realized shape
    N_total: int  # all params
    shape: dict  # n_layer, d_model, n_heads, n_kv_heads, d_ff
    D: int  # training tokens = steps * batch_size * seq_len
    tokens_per_param: float  # D / params, counted as the budget convention counts them
    batch_size: int  # sequences per optimizer step
    batch_tokens: int  # tokens per optimizer step
    lr: float  # peak learning rate
    steps: int  # optimizer steps
    flops: float  # realized FLOPs = flops_per_token[flop_convention] * D
    flop_convention: str
    flops_per_token: dict  # training FLOPs per token under every convention of scaling.accounting
    prior_N_opt: float  # the prior's compute-optimal N at this budget (where the grid is centred)
    tags: dict  # {"kind": "isoflop" | "hparam", "seed": s}, plus "also": [kinds] for merged duplicates
    parent: dict | None = None  # reserved for branching: {"run_id": ..., "step": ...} to start from its checkpoint
    time_min: int | None = None  # wall-clock limit of one attempt in minutes (see time_limit_min); None: not planned
    spec_version: int = 1  # which version of the sweep's spec added this run (set by sweeps.store)

    @property
    def flops_error(self) -> float:
        """Realized FLOPs / budget - 1."""
        return self.flops / self.budget - 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PlannedRun:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class DroppedRun:
    budget: float
    N: int
    shape: str
    kind: str
    lr: float
    reason: str


@dataclass
class Plan:
    runs: list[PlannedRun]
    dropped: list[DroppedRun] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. runs that repeat their corpus, with the epochs
    problems: list[ConfigError] = field(default_factory=list)  # what would fail in every worker (missing extras)


def plan(spec: SweepSpec) -> list[PlannedRun]:
    """The runs of the sweep, in order of budget then size; dropped runs and Plan.warnings go to `warnings.warn`.

    Raises the first of Plan.problems (e.g. tokenizer 'bpe' without the `tokenizers` package) as a ConfigError."""
    result = design(spec)
    if result.problems:
        raise result.problems[0]
    for d in result.dropped:
        warnings.warn(f"dropped {d.kind} run at budget {d.budget:.3g} FLOPs, N={d.N:,} ({d.shape}): {d.reason}",
                      stacklevel=2)
    for message in result.warnings:
        warnings.warn(message, stacklevel=2)
    return result.runs


def design(spec: SweepSpec) -> Plan:
    """The runs and the dropped runs of the sweep (see the module docstring for the rules)."""
    runs: list[PlannedRun] = []
    dropped: list[DroppedRun] = []
    prior = prior_law(spec)
    for budget in spec.budgets.resolved():
        n_opt = prior(budget)
        models = place_models(spec, budget, n_opt)
        check_one_step(spec, budget, models[0])
        points = [(cfg, lr_at(spec.train, budget, cfg), batch_at(spec.train, budget, spec.model.seq_len), "isoflop")
                  for cfg in models]
        points += hparam_points(spec, budget, n_opt, models)
        nearest = replicate_models(spec, n_opt, models)
        replicates = [point for point in points[:len(models)] if point[0] in nearest]  # the isoFLOP points
        n_isoflop = 0
        seeded = [(seed, point) for seed in spec.train.seeds for point in points]
        seeded += [(seed, point) for seed in spec.grid.replicate_seeds or [] for point in replicates]
        for seed, (cfg, lr, batch_target, kind) in seeded:
            run = make_run(spec, budget, n_opt, cfg, lr, batch_target, kind, seed)
            if isinstance(run, DroppedRun):
                dropped.append(run)
            else:
                runs.append(run)
                n_isoflop += kind == "isoflop"
        if n_isoflop == 0:
            raise ConfigError(_budget_field(spec), f"budgets where some model reaches grid.min_steps "
                              f"({spec.grid.min_steps}); every model at this budget was dropped", budget)
    runs = dedup(runs)
    return Plan(runs, dropped, warnings=corpus_warnings(spec, runs), problems=missing_extras(spec))


# ------------------------------------------------------------------------------------------------ decisions


def prior_from_fit(path: str | os.PathLike) -> tuple[float, float]:
    """(coef, exponent) of the compute-optimal size law N_opt = coef * C^exponent in a fit.json from `scaling fit`.

    Reads the documented member `isoflop.N_opt` (a power law in C): its `params` {coef, exponent} (fit.json schema
    2), or the same keys on the law itself (schema 1). ConfigError naming grid.prior_fit when the file has no such
    law, or when it is not a positive coefficient with an exponent in (0, 1).
    """
    try:
        fit = read_json(path)
    except (TornFileError, FileNotFoundError) as e:
        raise ConfigError("grid.prior_fit", "a complete JSON file written by `scaling fit`", f"{path}: {e}") from None
    law = fit.get("isoflop", {}).get("N_opt") if isinstance(fit, dict) else None
    params = law.get("params", law) if isinstance(law, dict) else None
    coef = params.get("coef") if isinstance(params, dict) else None
    exponent = params.get("exponent") if isinstance(params, dict) else None
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (coef, exponent))
    if not ok or coef <= 0 or not 0 < exponent < 1:
        raise ConfigError("grid.prior_fit", "a fit.json with isoflop.N_opt coef > 0 and exponent in (0, 1)",
                          f"{path}: coef={coef!r}, exponent={exponent!r}")
    return float(coef), float(exponent)


def prior_law(spec: SweepSpec) -> Callable[[float], float]:
    """The prior compute-optimal params as a function of the budget (FLOPs), counted as the budget convention
    counts them: grid.prior_fit's law, grid.prior_coef * C^prior_exponent, or C = 6 N D with D = tokens_per_param N."""
    g = spec.grid
    if g.prior_fit is not None:
        coef, exponent = prior_from_fit(g.prior_fit)
    elif g.prior_coef is not None:
        coef, exponent = g.prior_coef, g.prior_exponent
    else:
        return lambda budget: math.sqrt(budget / (6.0 * g.tokens_per_param))
    return lambda budget: coef * budget**exponent


def n_opt(spec: SweepSpec, budget: float) -> float:
    """The prior compute-optimal params at `budget` FLOPs (see prior_law)."""
    return prior_law(spec)(budget)


def lr_at(train: TrainSpec, budget: float, cfg: ModelConfig | None = None) -> float:
    """Peak LR at `budget` FLOPs: train.lr_rule coef * C^exponent, else train.lr; for a model `cfg`, scaled by
    (train.lr_width.d_model / cfg.d_model)^exponent when the spec sets lr_width."""
    lr = train.lr_rule["coef"] * budget ** train.lr_rule["exponent"] if train.lr_rule is not None else train.lr
    if train.lr_width is not None and cfg is not None:
        lr *= (train.lr_width["d_model"] / cfg.d_model) ** train.lr_width["exponent"]
    return lr


def batch_at(train: TrainSpec, budget: float, seq_len: int) -> float:
    """Target batch in sequences at `budget` (a real number; the planner searches integers near it)."""
    if train.batch_rule is not None:
        return train.batch_rule["coef"] * budget ** train.batch_rule["exponent"] / seq_len
    if train.batch_tokens is not None:
        return train.batch_tokens / seq_len
    return float(train.batch_size if train.batch_size is not None else DEFAULT_BATCH)


def time_limit_min(flops: float, throughput_flops: float | None, fallback_min: int) -> int:
    """Minutes one attempt may run: TIME_SAFETY x the estimated wall time (flops / throughput), at least
    TIME_FLOOR_MIN; `fallback_min` (resources.time_min) when there is no throughput figure."""
    if throughput_flops is None:
        return fallback_min
    return max(TIME_FLOOR_MIN, math.ceil(TIME_SAFETY * flops / throughput_flops / 60))


def missing_extras(spec: SweepSpec) -> list[ConfigError]:
    """What every worker would fail on: an optional package the data needs is not installed (tokenizer 'bpe':
    `tokenizers`; an `hf:` corpus: `datasets`). A nanoGPT-style corpus (train.bin / val.bin) is already tokenized
    and needs no tokenizer package."""
    from scaling.data import is_nanogpt_dir  # torch: imported only when a sweep is planned

    problems = []
    if spec.data.corpus.startswith("hf:") and importlib.util.find_spec("datasets") is None:
        problems.append(ConfigError("data.corpus", "the `datasets` package for an hf: corpus (pip install "
                                    "scaling-planner[hf])", spec.data.corpus))
    if not is_nanogpt_dir(Path(spec.data.corpus).expanduser()):
        try:
            check_tokenizer(spec.data.tokenizer, spec.data.vocab_size)
        except ConfigError as e:
            problems.append(e)
    return problems


def corpus_train_tokens(spec: SweepSpec) -> tuple[float, str] | None:
    """(training tokens of the corpus, how that is known), or None when it cannot be known without preparing it.

    nanoGPT folders: train.bin / 2 bytes, exactly. Text (stdlib, a file, a folder): its bytes, which is the token
    count for `bytes` (less the ~1% held out) and an upper bound for byte-level BPE (a merge never adds tokens)."""
    from scaling import data  # torch: imported only when a sweep is planned

    corpus = spec.data.corpus
    path = Path(corpus).expanduser()
    if data.is_nanogpt_dir(path):
        return (path / "train.bin").stat().st_size / 2, "exactly"
    if corpus == "stdlib":
        root = data.stdlib_dir()
        files = [root / name for name in data.stdlib_files(root)]
    elif path.is_file():
        files = [path]
    elif path.is_dir():
        files = [path / name for name in data.text_files(path)]
    else:
        return None
    size = sum(f.stat().st_size for f in files) * (1 - data.VAL_FRACTION)
    return size, ("about" if spec.data.tokenizer == "bytes" else "at most")


def corpus_warnings(spec: SweepSpec, runs: list[PlannedRun]) -> list[str]:
    """One warning naming how many runs read more tokens than the corpus holds, and the most epochs any run does."""
    known = corpus_train_tokens(spec)
    if known is None or not runs:
        return []
    tokens, how = known
    repeating = [r for r in runs if r.D > tokens]
    if not repeating:
        return []
    worst = max(repeating, key=lambda r: r.D)
    epochs = worst.D / tokens
    bound = "at least " if how == "at most" else ""
    message = (f"{len(repeating)} of {len(runs)} runs repeat their corpus ({spec.data.corpus}: {how} {tokens:.3g} "
               f"training tokens); the largest, {worst.run_id} (budget {worst.budget:.3g} FLOPs, D = {worst.D:.3g} "
               f"tokens), reads it {bound}{epochs:.1f} times (epochs): repeated data lowers the loss less than fresh "
               "data does")
    return [message]


def dedup(runs: list[PlannedRun]) -> list[PlannedRun]:
    """Keep the first run of each run_id; the kinds of later duplicates go to its tags["also"]."""
    kept: dict[str, PlannedRun] = {}
    for run in runs:
        first = kept.setdefault(run.run_id, run)
        kind = run.tags["kind"]
        if first is not run and kind != first.tags["kind"] and kind not in first.tags.get("also", []):
            first.tags.setdefault("also", []).append(kind)
    return list(kept.values())


# ------------------------------------------------------------------------------------------------ models


def place_models(spec: SweepSpec, budget: float, n_opt: float) -> list[ModelConfig]:
    """Real shapes for the size targets at `budget`, distinct, smallest first."""
    g = spec.grid
    if g.sizes is not None:
        targets, where = [float(n) for n in g.sizes], "grid.sizes"
    else:
        k = g.models_per_budget
        targets = [n_opt * g.spread ** (i / (k - 1) - 0.5) for i in range(k)] if k > 1 else [n_opt]
        where = "grid.models_per_budget"
    m = spec.model
    options = {key: getattr(m, key) for key in ("head_dim", "aspect_ratio", "n_layer", "n_heads") if getattr(m, key) is not None}
    count = spec.budgets.param_count
    if m.exact_aspect:
        build = functools.partial(exact_aspect_shape, spec)
    else:
        build = functools.partial(shape_for_params, family=m.family, seq_len=m.seq_len, vocab_size=spec.vocab_size,
                                  n_kv_heads_ratio=m.n_kv_heads_ratio, count=count, **options)
    shapes: list[ModelConfig] = []
    for target in sorted(targets, key=lambda t: abs(math.log(t / n_opt))):  # from the prior optimum outwards
        try:
            cfg = nearest_buildable(build, target)
        except ConfigError as e:
            raise ConfigError(where, f"sizes the shape ladder can build (budget {budget:.3g} FLOPs, target "
                              f"{target:,.0f} {count.replace('_', '-')} params; ladder: {e})", target) from None
        if g.sizes is None:
            cfg = _next_free_shape(build, cfg, target, n_opt, shapes)
        if cfg not in shapes:
            shapes.append(cfg)
    return sorted(shapes, key=lambda c: count_params(c)[count])


def exact_aspect_shape(spec: SweepSpec, target: float) -> ModelConfig:
    """The shape with d_model = aspect_ratio x n_layer (n_layer rounded, d_model a multiple of head_dim x
    n_kv_heads_ratio) whose param count (the budget convention's) is nearest `target` in log; ConfigError when the
    nearest is more than EXACT_ASPECT_MAX_ERROR away (the ends of the ladder)."""
    m = spec.model
    aspect = m.aspect_ratio or DEFAULT_ASPECT_RATIO
    head_dim = m.head_dim or default_head_dim(target, aspect)
    step = head_dim * m.n_kv_heads_ratio
    count = spec.budgets.param_count
    best, best_gap = None, math.inf
    for k in range(1, 4096):
        d_model = k * step
        n_layer = max(1, round(d_model / aspect))
        cfg = ModelConfig(family=m.family, n_layer=n_layer, d_model=d_model, n_heads=d_model // head_dim,
                          n_kv_heads=d_model // head_dim // m.n_kv_heads_ratio, seq_len=m.seq_len,
                          vocab_size=spec.vocab_size)
        n = count_params(cfg)[count]
        gap = abs(math.log(n / target))
        if gap < best_gap:
            best, best_gap = cfg, gap
        if n > target * 2:
            break
    if best is None or best_gap > math.log(1 + EXACT_ASPECT_MAX_ERROR):
        raise ConfigError("model.exact_aspect", f"a target within {EXACT_ASPECT_MAX_ERROR:.0%} of a shape with "
                          f"d_model = {aspect:g} x n_layer (head_dim {head_dim})", f"{target:,.0f} params")
    return best.validate()


def _next_free_shape(build, cfg: ModelConfig, target: float, n_opt: float, taken: list[ModelConfig]) -> ModelConfig:
    """`cfg`, or when a target nearer the optimum already took it, the next shape further out (targets move away
    from n_opt by 5% steps, at most 40), so a coarse ladder still gives distinct models."""
    if cfg not in taken or math.isclose(target, n_opt, rel_tol=1e-9):
        return cfg
    step = 1.05 if target > n_opt else 1 / 1.05
    return _first_buildable(build, (target * step**i for i in range(1, 41)), taken) or cfg


def nearest_buildable(build, target: float) -> ModelConfig:
    """`build(target)`, or when the ladder has a gap there, `build` at the nearest target within GAP_SHIFT that works
    (searched in 1% steps, below and above alternately); re-raises the first error when none does."""
    try:
        return build(target)
    except ConfigError:
        steps = range(1, round(GAP_SHIFT * 100) + 1)
        cfg = _first_buildable(build, (target * (1 + sign * i / 100) for i in steps for sign in (-1, 1)))
        if cfg is None:
            raise
        return cfg


def _first_buildable(build, targets, taken=()) -> ModelConfig | None:
    """The first shape `build` makes from `targets` (skipping ladder gaps) that is not in `taken`; None if none."""
    for target in targets:
        try:
            cfg = build(target)
        except ConfigError:  # a gap, or past the end of the ladder
            continue
        if cfg not in taken:
            return cfg
    return None


def replicate_models(spec: SweepSpec, n_opt: float, models: list[ModelConfig]) -> list[ModelConfig]:
    """The grid.replicate_models isoFLOP models nearest the prior optimum (in log params), which also train with
    grid.replicate_seeds; none when the spec has no replicate seeds."""
    if not spec.grid.replicate_seeds:
        return []
    count = spec.budgets.param_count
    by_distance = sorted(models, key=lambda c: abs(math.log(count_params(c)[count] / n_opt)))
    return by_distance[:spec.grid.replicate_models]


def hparam_points(spec: SweepSpec, budget: float, n_opt: float, models: list[ModelConfig]) -> list[tuple]:
    """(cfg, lr, target batch in sequences, "hparam") for the LR x batch grid at this budget, if it has one."""
    h = spec.hparams
    if h is None or (h.budgets is not None and match_budget(budget, [float(b) for b in h.budgets]) is None):
        return []
    if h.models == "optimum":
        count = spec.budgets.param_count
        models = [min(models, key=lambda c: abs(math.log(count_params(c)[count] / n_opt)))]
    b0 = batch_at(spec.train, budget, spec.model.seq_len)
    batches = [float(b) for b in h.batch_size] if h.batch_size else [b0 * f for f in (h.batch_factors or [1.0])]
    return [(cfg, lr, b, "hparam") for cfg in models
            for lr in (h.lr or [lr_at(spec.train, budget, cfg) * f for f in (h.lr_factors or [1.0])])
            for b in batches]


# ------------------------------------------------------------------------------------------------ batch x steps


def solve_batch_steps(
    budget: float, flops_per_token: float, seq_len: int, target_batch: float, *, min_steps: int,
    batch_range: float, tolerance: float, multiple: int = 1,
) -> tuple[int, int] | str:
    """(batch in sequences, steps) landing within `tolerance` of `budget` FLOPs, or the reason there is none.

    Searches batches that are multiples of `multiple` within a factor `batch_range` of `target_batch`; the steps for
    each are round(budget / (flops_per_token * batch * seq_len)). Prefers the batch nearest the target (in log).
    """
    tokens = budget / flops_per_token
    lo, hi = batch_bounds(target_batch, batch_range, multiple)
    best, most_steps = None, 0
    for batch in range(lo, hi + 1, multiple):
        steps = round(tokens / (batch * seq_len))
        most_steps = max(most_steps, steps)
        if steps < max(min_steps, 1):
            continue
        error = abs(steps * batch * seq_len * flops_per_token / budget - 1)
        if error <= tolerance:
            key = (abs(math.log(batch / target_batch)), error)
            if best is None or key < best[0]:
                best = (key, batch, steps)
    if best is not None:
        return best[1], best[2]
    if most_steps < min_steps:
        return f"at most {most_steps} steps (batch {lo} x {seq_len} tokens), fewer than grid.min_steps ({min_steps})"
    return f"no batch in {lo}..{hi} sequences lands within {tolerance:.1%} of the budget"


def batch_bounds(target_batch: float, batch_range: float, multiple: int = 1) -> tuple[int, int]:
    """Smallest and largest batch (sequences, multiples of `multiple`) the search may use."""
    lo = max(multiple, multiple * math.ceil(target_batch / batch_range / multiple - 1e-9))
    hi = max(lo, multiple * math.floor(target_batch * batch_range / multiple + 1e-9))
    return lo, hi


def check_one_step(spec: SweepSpec, budget: float, smallest: ModelConfig) -> None:
    """ConfigError naming the budget and model when one step of the smallest model at the smallest batch exceeds it."""
    multiple = _micro_batch(spec)
    lo, _ = batch_bounds(batch_at(spec.train, budget, spec.model.seq_len), spec.grid.batch_range, multiple)
    one_step = flops_per_token(smallest, spec.budgets.convention) * lo * smallest.seq_len
    if one_step > budget * (1 + spec.grid.tolerance):
        n = count_params(smallest)["non_embedding"]
        raise ConfigError(_budget_field(spec), f"budgets of at least one optimizer step of the smallest model "
                          f"(N={n:,}, {shape_label(smallest)}, batch {lo} x {smallest.seq_len} tokens: "
                          f"{one_step:.3g} FLOPs); budget {budget:.3g} FLOPs is too small", budget)


def make_run(
    spec: SweepSpec, budget: float, n_opt: float, cfg: ModelConfig, lr: float, batch_target: float, kind: str,
    seed: int,
) -> PlannedRun | DroppedRun:
    """One planned run, or a DroppedRun saying why no batch x steps pair fits."""
    convention = spec.budgets.convention
    per_token = all_flops_per_token(cfg)
    counts = count_params(cfg)
    lr = float(f"{lr:.4g}")
    solved = solve_batch_steps(budget, per_token[convention], cfg.seq_len, batch_target,
                               min_steps=spec.grid.min_steps, batch_range=spec.grid.batch_range,
                               tolerance=spec.grid.tolerance, multiple=_micro_batch(spec))
    if isinstance(solved, str):
        return DroppedRun(budget, counts["non_embedding"], shape_label(cfg), kind, lr, solved)
    batch, steps = solved
    every = spec.eval.every or max(1, steps // spec.eval.evals_per_run)
    config = run_config(spec, cfg, lr=lr, batch=batch, steps=steps, seed=seed, every=every)
    tokens = steps * batch * cfg.seq_len
    return PlannedRun(
        run_id=run_id_for(config), budget=budget, config=config, N=counts["non_embedding"], N_total=counts["total"],
        shape={k: getattr(cfg, k) for k in ("n_layer", "d_model", "n_heads", "n_kv_heads", "d_ff")},
        D=tokens, tokens_per_param=tokens / counts[spec.budgets.param_count], batch_size=batch,
        batch_tokens=batch * cfg.seq_len, lr=lr, steps=steps, flops=per_token[convention] * tokens,
        flop_convention=convention, flops_per_token=per_token, prior_N_opt=n_opt, tags={"kind": kind, "seed": seed},
        time_min=time_limit_min(per_token[convention] * tokens, spec.resources.throughput_flops,
                                spec.resources.time_min),
    )


def run_config(spec: SweepSpec, cfg: ModelConfig, *, lr: float, batch: int, steps: int, seed: int, every: int) -> dict:
    """The full resolved RunConfig dict (without `out`) the trainer will run, validated by its own loader."""
    data = {"corpus": spec.data.corpus, "tokenizer": spec.data.tokenizer}
    if spec.data.vocab_size is not None:
        data["vocab_size"] = spec.data.vocab_size
    train = {**spec.train.passthrough, "steps": steps, "lr": lr, "batch_size": batch, "seed": seed,
             "flop_convention": spec.budgets.convention}
    partial = {"model": cfg.to_dict(), "train": train, "data": data, "eval": {"every": every, "tokens": spec.eval.tokens},
               **({"tracking": {"group": spec.name, **spec.tracking}} if spec.tracking else {})}  # runs grouped by sweep
    full = RunConfig.from_dict(partial).to_dict()
    full.pop("out")
    return full


def run_id_for(config: dict) -> str:
    """First 12 hex digits of sha256 over the canonical JSON of the run's identity (see the module docstring)."""
    identity = RunConfig.from_dict(config).identity()
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def shape_label(cfg: ModelConfig) -> str:
    """e.g. "4x128 h4 ff512" (n_layer x d_model, heads, MLP width); "kv2" is added for grouped-query attention."""
    kv = f" kv{cfg.n_kv_heads}" if cfg.n_kv_heads != cfg.n_heads else ""
    return f"{cfg.n_layer}x{cfg.d_model} h{cfg.n_heads}{kv} ff{cfg.d_ff}"


def _micro_batch(spec: SweepSpec) -> int:
    micro = spec.train.passthrough.get("micro_batch_size")
    return micro if isinstance(micro, int) and micro > 0 else 1


def _budget_field(spec: SweepSpec) -> str:
    return "budgets.values" if spec.budgets.values is not None else "budgets.min"


# ------------------------------------------------------------------------------------------------ cost estimates


def total_flops(runs: list[PlannedRun]) -> float:
    """Sum of realized FLOPs (the sweep's convention)."""
    return sum(r.flops for r in runs)


def estimate_wall_time(runs: list[PlannedRun], throughput: float | Callable[[PlannedRun], float],
                       concurrency: int) -> float:
    """Seconds to run everything with `concurrency` runs at once, longest first onto the first free slot.

    throughput: FLOP/s of one run (the sweep's convention), a number or a function of the run.
    """
    rate = throughput if callable(throughput) else (lambda run: throughput)
    durations = sorted((r.flops / rate(r) for r in runs), reverse=True)
    slots = [0.0] * max(1, min(concurrency, len(durations) or 1))
    for d in durations:
        heapq.heapreplace(slots, slots[0] + d)
    return max(slots)


def measure_throughput(spec: SweepSpec, runs: list[PlannedRun], steps: int = 3) -> Callable[[PlannedRun], float]:
    """Time a few training steps of the smallest and largest model; return FLOP/s as a function of the run,
    interpolated linearly in (log N, log FLOP/s) and held flat outside the measured range."""
    by_n = sorted(runs, key=lambda r: r.N)
    ends = [by_n[0], by_n[-1]] if by_n[0].N != by_n[-1].N else [by_n[0]]
    measured = [(math.log(r.N), math.log(_time_steps(spec, r, steps))) for r in ends]

    def rate(run: PlannedRun) -> float:
        if len(measured) == 1:
            return math.exp(measured[0][1])
        (x0, y0), (x1, y1) = measured
        t = min(1.0, max(0.0, (math.log(run.N) - x0) / (x1 - x0)))
        return math.exp(y0 + t * (y1 - y0))

    return rate


def _time_steps(spec: SweepSpec, run: PlannedRun, steps: int) -> float:
    """FLOP/s (sweep convention) of the trainer's own step (`scaling.train.time_train_steps`: its model, compile,
    optimizer groups, autocast and micro-batching) for this run, on random tokens, after one untimed warm-up step."""
    import torch  # heavy: imported only when --measure asks for it

    from scaling.train import time_train_steps

    cfg = RunConfig.from_dict(run.config)
    device = "cuda" if spec.resources.gpus and torch.cuda.is_available() else "cpu"
    if device == "cpu" and spec.backend.local.threads_per_run:
        torch.set_num_threads(spec.backend.local.threads_per_run)
    batch = cfg.train.micro_batch_size or run.batch_size  # one micro-batch per step: the same rate, less waiting
    seconds = time_train_steps(cfg.model, cfg.train, batch, device=device, steps=steps)
    return run.flops_per_token[run.flop_convention] * batch * cfg.model.seq_len / seconds
