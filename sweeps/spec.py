"""The sweep spec: one TOML file describing a whole isoFLOP (+ LR x batch) sweep, parsed into dataclasses.

A spec has these sections (every key is optional unless said; see `sweeps/presets/*.toml` for commented examples):

    name = "my-sweep"                     # required: the results folder is results/<name>/
    [data]       corpus, tokenizer ("bytes" | "bpe"), vocab_size (required for bpe)
    [model]      family ("gpt2" | "llama"), seq_len, vocab_size (default: the tokenizer's), head_dim, aspect_ratio
                 (d_model / n_layer), n_kv_heads_ratio (llama GQA); n_layer fixes the depth (the ladder varies the
                 width only), and with it n_heads (instead of head_dim) fixes the head count
    [budgets]    values = [1e12, 3e12] | min, max, count (log-spaced, both ends included); convention: the FLOP
                 convention the budgets are measured in (one of scaling.accounting.CONVENTIONS, default "6N")
    [grid]       models_per_budget + spread (N_max / N_min, log-uniform around the prior optimum) | sizes (explicit
                 non-embedding params, used at every budget); the prior optimum: tokens_per_param (Chinchilla, 20:
                 C = 6 N D with D = 20 N) | prior_coef + prior_exponent (N_opt = coef * C^exponent) | prior_fit (a
                 fit.json; its isoflop.N_opt law); min_steps, batch_range, tolerance (realized FLOPs vs budget)
    [train]      lr | lr_rule = {coef, exponent} (lr = coef * C^exponent); batch_size (sequences) | batch_tokens |
                 batch_rule = {coef, exponent} (tokens = coef * C^exponent); seeds = [0, ...]; and any key of the
                 trainer's [train] section (schedule, warmup_frac, decay_frac, weight_decay, micro_batch_size, ...),
                 passed through to every run
    [hparams]    optional LR x batch grid: lr | lr_factors, batch_size | batch_factors, budgets (default all),
                 models = "optimum" (only the model nearest the predicted N_opt) | "all"
    [eval]       every (steps) | evals_per_run (default 10), tokens
    [resources]  per run: gpus, cpus, mem_gb, time_min; throughput_flops (FLOP/s per run, for wall-time estimates)
    [backend.local]  max_concurrent, threads_per_run
    [backend.slurm]  partition, account, qos, array_parallelism, max_num_timeout (requeues after time-outs, default
                     3), extra (a table of further sbatch options)

`load_spec(path_or_preset, overrides)` reads a file or a preset name (`tiny-cpu`, `gpu-small`) and applies overrides
like `budgets.values=[1e12,3e12]` (values are TOML). Unknown keys and wrong types raise ConfigError naming the dotted
field. Checks that need the model ladder (sizes, steps per budget) happen in `sweeps.grid.plan`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import tomllib

from scaling.errors import ConfigError

PRESETS = ("tiny-cpu", "gpu-small")
FAMILIES = ("gpt2", "llama")
HPARAM_MODELS = ("optimum", "all")
BACKENDS = ("local", "slurm")
# Keys of [train] that the planner owns: a spec may not pass them through to the trainer.
PLANNER_TRAIN_KEYS = ("tokens", "flops", "steps", "flop_convention")
# Groups of keys where at most one member may be set; an override of one member clears the others.
ALTERNATIVES = {
    "budgets": (("values",), ("min", "max", "count")),
    "grid": (("sizes",), ("models_per_budget", "spread")),
    "grid.prior": (("tokens_per_param",), ("prior_coef", "prior_exponent"), ("prior_fit",)),
    "train.lr": (("lr",), ("lr_rule",)),
    "train.batch": (("batch_size",), ("batch_tokens",), ("batch_rule",)),
    "hparams.lr": (("lr",), ("lr_factors",)),
    "hparams.batch": (("batch_size",), ("batch_factors",)),
    "eval": (("every",), ("evals_per_run",)),
}


@dataclass
class DataSpec:
    corpus: str = "stdlib"  # a corpus name or path, as scaling.data understands it
    tokenizer: str = "bytes"  # "bytes" | "bpe"
    vocab_size: int | None = None  # bpe vocabulary size (required for bpe: parameter counts depend on it)


@dataclass
class ModelSpec:
    family: str = "gpt2"
    seq_len: int = 256  # context length in tokens
    vocab_size: int | None = None  # None: 256 for bytes, data.vocab_size for bpe
    head_dim: int | None = None  # None: the ladder's rule (64 from d_model 512 up, smaller below)
    aspect_ratio: float | None = None  # d_model / n_layer; None: the ladder's default (64)
    n_layer: int | None = None  # fix the depth: the ladder then varies width only (smooth curves for tiny models)
    n_heads: int | None = None  # with n_layer, instead of head_dim: fix the head count too (head_dim grows)
    n_kv_heads_ratio: int = 1  # llama: query heads per KV head (grouped-query attention)


@dataclass
class BudgetSpec:
    values: list[float] | None = None  # FLOPs, under `convention`
    min: float | None = None
    max: float | None = None
    count: int | None = None
    convention: str = "6N"  # how a budget is counted: FLOPs per token under this convention x tokens

    @property
    def param_count(self) -> str:
        """What N counts under this convention: "total" for 6N_total, else "non_embedding" (scaling.count_params)."""
        return "total" if self.convention == "6N_total" else "non_embedding"

    def resolved(self) -> list[float]:
        """The budgets in FLOPs, ascending: `values`, or `count` log-spaced from `min` to `max` inclusive."""
        if self.values is not None:
            return sorted(float(v) for v in self.values)
        if self.count == 1:
            return [float(self.min)]
        ratio = (self.max / self.min) ** (1.0 / (self.count - 1))
        inner = [float(f"{self.min * ratio**i:.12g}") for i in range(1, self.count - 1)]  # 1e18, not 1.0000000000000001e18
        return [float(self.min), *inner, float(self.max)]


@dataclass
class GridSpec:
    models_per_budget: int = 5  # models per budget, log-uniform around the prior optimum
    spread: float = 8.0  # N_max / N_min at each budget
    # Sizes, priors and tokens_per_param count params as the budget convention does: all params for 6N_total,
    # non-embedding params otherwise.
    sizes: list[float] | None = None  # explicit params, used at every budget (replaces the two above)
    tokens_per_param: float = 20.0  # Chinchilla prior: D_opt = 20 N_opt, C = 6 N D, so N_opt = sqrt(C / 120)
    prior_coef: float | None = None  # fitted prior N_opt = prior_coef * C^prior_exponent (C in FLOPs)
    prior_exponent: float | None = None
    prior_fit: str | None = None  # a fit.json whose isoflop.N_opt law is the prior (relative to the spec's folder)
    min_steps: int = 20  # runs needing fewer optimizer steps are dropped (with a warning)
    batch_range: float = 4.0  # the planner may move the batch size by up to this factor to land on the budget
    tolerance: float = 0.01  # realized FLOPs within this relative error of the budget

    def n_opt(self, budget: float) -> float:
        """The prior compute-optimal params at `budget` FLOPs (counted as the budget convention counts them)."""
        if self.prior_coef is not None:
            return self.prior_coef * budget**self.prior_exponent
        return math.sqrt(budget / (6.0 * self.tokens_per_param))


@dataclass
class TrainSpec:
    lr: float = 3e-3  # peak learning rate
    lr_rule: dict | None = None  # {coef, exponent}: lr = coef * C^exponent (DeepSeek LLM: 0.3118, -0.125)
    batch_size: int | None = None  # target sequences per optimizer step (16 when no batch key is set)
    batch_tokens: int | None = None  # target tokens per optimizer step
    batch_rule: dict | None = None  # {coef, exponent}: tokens = coef * C^exponent (DeepSeek LLM: 0.292, 0.3271)
    seeds: list[int] = field(default_factory=lambda: [0])
    passthrough: dict = field(default_factory=dict)  # every other [train] key, handed to the trainer as is

    def lr_at(self, budget: float) -> float:
        if self.lr_rule is not None:
            return self.lr_rule["coef"] * budget ** self.lr_rule["exponent"]
        return self.lr

    def batch_at(self, budget: float, seq_len: int) -> float:
        """Target batch size in sequences (a real number; the planner searches integers near it)."""
        if self.batch_rule is not None:
            return self.batch_rule["coef"] * budget ** self.batch_rule["exponent"] / seq_len
        if self.batch_tokens is not None:
            return self.batch_tokens / seq_len
        return float(self.batch_size if self.batch_size is not None else 16)


@dataclass
class HparamSpec:
    lr: list[float] | None = None  # absolute learning rates
    lr_factors: list[float] | None = None  # multiples of the base lr at that budget
    batch_size: list[int] | None = None  # absolute batch sizes in sequences
    batch_factors: list[float] | None = None  # multiples of the target batch at that budget
    budgets: list[float] | None = None  # budgets (FLOPs, matched within 2%) that get the grid; None: all
    models: str = "optimum"  # "optimum": only the model nearest the prior N_opt; "all": every model at the budget


@dataclass
class EvalSpec:
    every: int | None = None  # steps between evaluations
    evals_per_run: int = 10  # used when `every` is unset: every = steps // evals_per_run
    tokens: int = 2**16  # validation tokens per evaluation


@dataclass
class ResourceSpec:
    gpus: int = 0  # per run
    cpus: int = 1
    mem_gb: float = 4.0
    time_min: int = 60  # wall-clock limit per attempt
    throughput_flops: float | None = None  # FLOP/s one run achieves (budget convention), for wall-time estimates


@dataclass
class LocalSpec:
    max_concurrent: int = 1  # runs at once on this machine
    threads_per_run: int | None = None  # torch threads per run; None: cpu count // max_concurrent


@dataclass
class SlurmSpec:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64  # array tasks running at once
    max_num_timeout: int = 3  # requeues a run gets after hitting its time limit (preemptions do not count)
    extra: dict = field(default_factory=dict)  # further sbatch options, e.g. {constraint = "h100"}


@dataclass
class BackendSpec:
    local: LocalSpec = field(default_factory=LocalSpec)
    slurm: SlurmSpec = field(default_factory=SlurmSpec)


@dataclass
class SweepSpec:
    name: str
    description: str = ""
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    budgets: BudgetSpec = field(default_factory=BudgetSpec)
    grid: GridSpec = field(default_factory=GridSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    hparams: HparamSpec | None = None
    eval: EvalSpec = field(default_factory=EvalSpec)
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    backend: BackendSpec = field(default_factory=BackendSpec)
    source: str | None = None  # the file read, or "preset:<name>"
    source_text: str = ""  # the TOML exactly as read (stored verbatim with the results)
    overrides: list[str] = field(default_factory=list)

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: model.vocab_size, else 256 for bytes, else data.vocab_size."""
        if self.model.vocab_size is not None:
            return self.model.vocab_size
        return 256 if self.data.tokenizer == "bytes" else self.data.vocab_size

    def to_dict(self) -> dict:
        """The resolved spec as plain JSON-able data (without the verbatim source text)."""
        d = dataclasses.asdict(self)
        d.pop("source_text")
        d["budgets"]["resolved"] = self.budgets.resolved()
        return d


# ------------------------------------------------------------------------------------------------ loading


def load_spec(path_or_name: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read a sweep spec from a TOML file or a preset name, apply `key=value` overrides, and validate it.

    Raises ConfigError naming the dotted field for unknown keys, wrong types and out-of-range values.
    """
    text, source, base_dir = read_spec_text(path_or_name)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, f"valid TOML ({e})") from None
    for item in overrides:
        apply_override(raw, item)
    spec = spec_from_dict(raw, base_dir=base_dir)
    spec.source, spec.source_text, spec.overrides = source, text, list(overrides)
    return spec


def read_spec_text(path_or_name: str | os.PathLike) -> tuple[str, str, Path]:
    """(TOML text, source label, folder that relative paths in it are resolved against)."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path.read_text(), str(path), path.resolve().parent
    name = str(path_or_name)
    if name in PRESETS:
        text = resources.files("sweeps").joinpath("presets", f"{name}.toml").read_text()
        return text, f"preset:{name}", Path.cwd()
    raise ConfigError("spec", f"an existing TOML file or a preset name {list(PRESETS)}", name)


def apply_override(raw: dict, item: str) -> None:
    """Set `dotted.key=value` (value parsed as TOML, else a plain string) in the raw spec dict, in place.

    Setting one member of an ALTERNATIVES group removes the other members (e.g. `budgets.values=[...]` drops
    budgets.min/max/count), so an override can switch between forms.
    """
    from scaling.runconfig import parse_value

    if "=" not in item:
        raise ConfigError(item, "an override of the form dotted.key=value, e.g. budgets.values=[1e12,3e12]")
    name, value = item.split("=", 1)
    keys = name.strip().split(".")
    table = raw
    for i, key in enumerate(keys[:-1]):
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            raise ConfigError(".".join(keys[: i + 1]), "a table of keys", table)
    section, leaf = ".".join(keys[:-1]), keys[-1]
    for group_name, group in ALTERNATIVES.items():
        if group_name.split(".")[0] != section:
            continue
        for members in group:
            if leaf in members:
                for other in group:
                    if other is not members:
                        for key in other:
                            table.pop(key, None)
    table[leaf] = parse_value(value.strip())


def spec_from_dict(raw: dict, base_dir: Path | None = None) -> SweepSpec:
    """Build and validate a SweepSpec from the parsed TOML dict."""
    raw = dict(raw)
    if "name" not in raw:
        raise ConfigError("name", "a sweep name (the results folder is results/<name>/)")
    train_raw = dict(raw.pop("train", {}) or {})
    if not isinstance(train_raw, dict):
        raise ConfigError("train", "a table of keys", train_raw)
    hparams_raw = raw.pop("hparams", None)
    _check_exclusive(raw, train_raw, hparams_raw)
    spec = _build(SweepSpec, raw, "")
    spec.train = _build_train(train_raw)
    spec.hparams = None if hparams_raw is None else _build(HparamSpec, hparams_raw, "hparams")
    _resolve_prior_fit(spec.grid, base_dir or Path.cwd())
    validate_spec(spec)
    return spec


def _build_train(train_raw: dict) -> TrainSpec:
    own = {f.name for f in dataclasses.fields(TrainSpec)} - {"passthrough"}
    for key in PLANNER_TRAIN_KEYS:
        if key in train_raw:
            why = "budgets.convention" if key == "flop_convention" else "the planner (from the budgets)"
            raise ConfigError(f"train.{key}", f"unset: it is set by {why}", train_raw[key])
    spec = _build(TrainSpec, {k: v for k, v in train_raw.items() if k in own}, "train")
    spec.passthrough = {k: v for k, v in train_raw.items() if k not in own}
    return spec


def _check_exclusive(raw: dict, train_raw: dict, hparams_raw: dict | None) -> None:
    tables = {"train": train_raw, "hparams": hparams_raw or {}}
    for group_name, group in ALTERNATIVES.items():
        section = group_name.split(".")[0]
        table = tables.get(section, raw.get(section))
        if not isinstance(table, dict):
            continue
        present = [members for members in group if any(k in table for k in members)]
        if len(present) > 1:
            names = [f"{section}." + "/".join(members) for members in present]
            raise ConfigError(names[1], f"at most one of {' and '.join(names)} to be set", "both set")


def _resolve_prior_fit(grid: GridSpec, base_dir: Path) -> None:
    """Read grid.prior_fit's isoflop.N_opt law into grid.prior_coef / grid.prior_exponent."""
    if grid.prior_fit is None:
        return
    path = Path(grid.prior_fit).expanduser()
    if not path.is_absolute() and (base_dir / path).is_file():
        path = base_dir / path
    if not path.is_file():
        raise ConfigError("grid.prior_fit", "an existing fit.json (from `scaling fit`)", grid.prior_fit)
    try:
        law = json.loads(path.read_text())["isoflop"]["N_opt"]
        grid.prior_coef, grid.prior_exponent = float(law["coef"]), float(law["exponent"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError("grid.prior_fit", "a fit.json with isoflop.N_opt.coef and .exponent", f"{path}: {e!r}")


# ------------------------------------------------------------------------------------------------ types


def _build(cls: type, raw: object, prefix: str):
    """Instantiate dataclass `cls` from a TOML table, checking keys and types; nested dataclasses recurse."""
    if not isinstance(raw, dict):
        raise ConfigError(prefix or "spec", "a table of keys", raw)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in ("source", "source_text", "overrides")]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(dotted, f"one of the keys {names}", "unknown key")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def _coerce(value: object, hint: object, name: str) -> object:
    """Check `value` against a type hint; ints may be written as integral floats (1e6), floats as ints."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, name)
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list) or not value:
            raise ConfigError(name, "a non-empty list", value)
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(name, "a table of keys", value)
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, "true or false", value)
        return value
    if isinstance(value, bool):
        raise ConfigError(name, f"a{'n integer' if hint is int else ' ' + hint.__name__}", value)
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise ConfigError(name, "an integer", value)
        return value
    if hint is float:
        if not isinstance(value, (int, float)):
            raise ConfigError(name, "a number", value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(name, "a string", value)
        return value
    raise AssertionError(f"unhandled type {hint} for {name}")  # pragma: no cover


# ------------------------------------------------------------------------------------------------ validation


def validate_spec(spec: SweepSpec) -> SweepSpec:
    """Check every value that needs no model ladder; raise ConfigError naming the first bad dotted field."""
    from scaling.accounting import CONVENTIONS

    if not spec.name or not all(c.isalnum() or c in "-_." for c in spec.name) or spec.name.startswith("."):
        raise ConfigError("name", "a non-empty folder name of letters, digits, '-', '_' and '.'", spec.name)
    _validate_data_model(spec)
    b = spec.budgets
    if b.values is None and None in (b.min, b.max, b.count):
        raise ConfigError("budgets", "either budgets.values or all of budgets.min, budgets.max, budgets.count")
    if b.values is not None:
        for i, v in enumerate(b.values):
            _positive(v, f"budgets.values[{i}]", "a positive number of FLOPs")
    else:
        _positive(b.min, "budgets.min", "a positive number of FLOPs")
        _positive(b.max, "budgets.max", "a positive number of FLOPs")
        _positive_int(b.count, "budgets.count")
        if b.max < b.min or (b.max == b.min and b.count > 1):
            raise ConfigError("budgets.max", f"more than budgets.min ({b.min:g})", b.max)
    if b.convention not in CONVENTIONS:
        raise ConfigError("budgets.convention", f"one of {CONVENTIONS}", b.convention)
    _validate_grid(spec.grid)
    _validate_train(spec.train)
    if spec.hparams is not None:
        _validate_hparams(spec.hparams, b.resolved())
    if spec.eval.every is not None:
        _positive_int(spec.eval.every, "eval.every")
    _positive_int(spec.eval.evals_per_run, "eval.evals_per_run")
    _positive_int(spec.eval.tokens, "eval.tokens")
    _validate_resources(spec)
    return spec


def _validate_data_model(spec: SweepSpec) -> None:
    from scaling.runconfig import TOKENIZERS

    if spec.data.tokenizer not in TOKENIZERS:
        raise ConfigError("data.tokenizer", f"one of {TOKENIZERS}", spec.data.tokenizer)
    if spec.data.tokenizer == "bpe" and spec.data.vocab_size is None and spec.model.vocab_size is None:
        raise ConfigError("data.vocab_size", "a vocabulary size for tokenizer 'bpe' (parameter counts depend on it)")
    if spec.data.vocab_size is not None:
        _positive_int(spec.data.vocab_size, "data.vocab_size")
    m = spec.model
    if m.family not in FAMILIES:
        raise ConfigError("model.family", f"one of {FAMILIES}", m.family)
    _positive_int(m.seq_len, "model.seq_len")
    for key in ("vocab_size", "head_dim", "n_layer", "n_heads"):
        if getattr(m, key) is not None:
            _positive_int(getattr(m, key), f"model.{key}")
    if m.n_heads is not None and (m.n_layer is None or m.head_dim is not None):
        raise ConfigError("model.n_heads", "set together with model.n_layer and without model.head_dim", m.n_heads)
    if m.aspect_ratio is not None:
        _positive(m.aspect_ratio, "model.aspect_ratio", "a positive number (d_model / n_layer)")
    _positive_int(m.n_kv_heads_ratio, "model.n_kv_heads_ratio")
    if m.family == "gpt2" and m.n_kv_heads_ratio != 1:
        raise ConfigError("model.n_kv_heads_ratio", "1 for family 'gpt2' (no grouped-query attention)",
                          m.n_kv_heads_ratio)


def _validate_grid(g: GridSpec) -> None:
    _positive_int(g.models_per_budget, "grid.models_per_budget")
    if not (math.isfinite(g.spread) and g.spread >= 1):
        raise ConfigError("grid.spread", "a number >= 1 (largest / smallest model at a budget)", g.spread)
    if g.sizes is not None:
        for i, n in enumerate(g.sizes):
            _positive(n, f"grid.sizes[{i}]", "a positive number of non-embedding params")
    _positive(g.tokens_per_param, "grid.tokens_per_param", "a positive number of tokens per parameter")
    if (g.prior_coef is None) != (g.prior_exponent is None):
        missing = "grid.prior_exponent" if g.prior_exponent is None else "grid.prior_coef"
        raise ConfigError(missing, "set together with grid.prior_coef / grid.prior_exponent")
    if g.prior_coef is not None:
        _positive(g.prior_coef, "grid.prior_coef", "a positive coefficient of N_opt = coef * C^exponent")
        if not (math.isfinite(g.prior_exponent) and 0 < g.prior_exponent < 1):
            raise ConfigError("grid.prior_exponent", "a number in (0, 1)", g.prior_exponent)
    _positive_int(g.min_steps, "grid.min_steps")
    if not (math.isfinite(g.batch_range) and g.batch_range >= 1):
        raise ConfigError("grid.batch_range", "a number >= 1", g.batch_range)
    if not (0 < g.tolerance < 0.5):
        raise ConfigError("grid.tolerance", "a relative error in (0, 0.5)", g.tolerance)


def _validate_train(t: TrainSpec) -> None:
    _positive(t.lr, "train.lr", "a positive learning rate")
    for key in ("lr_rule", "batch_rule"):
        rule = getattr(t, key)
        if rule is None:
            continue
        if set(rule) != {"coef", "exponent"}:
            raise ConfigError(f"train.{key}", "a table {coef = ..., exponent = ...}", rule)
        for part in ("coef", "exponent"):
            if isinstance(rule[part], bool) or not isinstance(rule[part], (int, float)):
                raise ConfigError(f"train.{key}.{part}", "a number", rule[part])
        _positive(rule["coef"], f"train.{key}.coef", "a positive number")
    if t.batch_size is not None:
        _positive_int(t.batch_size, "train.batch_size")
    if t.batch_tokens is not None:
        _positive_int(t.batch_tokens, "train.batch_tokens")
    if len(set(t.seeds)) != len(t.seeds):
        raise ConfigError("train.seeds", "distinct seeds", t.seeds)
    for i, s in enumerate(t.seeds):
        _non_negative_int(s, f"train.seeds[{i}]")
    _validate_passthrough(t.passthrough)


def _validate_passthrough(passthrough: dict) -> None:
    """Let the trainer's own strict loader judge the pass-through [train] keys (its messages name train.<key>)."""
    from scaling.runconfig import RunConfig

    micro = passthrough.get("micro_batch_size")
    batch = micro if isinstance(micro, int) and not isinstance(micro, bool) and micro > 0 else 1
    RunConfig.from_dict({"train": {**passthrough, "steps": 1, "batch_size": batch}})


def _validate_hparams(h: HparamSpec, budgets: list[float]) -> None:
    if all(v is None for v in (h.lr, h.lr_factors, h.batch_size, h.batch_factors)):
        raise ConfigError("hparams", "at least one of hparams.lr, lr_factors, batch_size, batch_factors")
    for key, what in (("lr", "a positive learning rate"), ("lr_factors", "a positive factor"),
                      ("batch_size", "a positive number of sequences"), ("batch_factors", "a positive factor")):
        for i, v in enumerate(getattr(h, key) or []):
            _positive(v, f"hparams.{key}[{i}]", what)
    if h.models not in HPARAM_MODELS:
        raise ConfigError("hparams.models", f"one of {HPARAM_MODELS}", h.models)
    for i, v in enumerate(h.budgets or []):
        if match_budget(v, budgets) is None:
            raise ConfigError(f"hparams.budgets[{i}]", f"one of the budgets {[f'{b:.3g}' for b in budgets]}", v)


def match_budget(value: float, budgets: list[float], rel: float = 0.02) -> float | None:
    """The budget within `rel` (relative) of `value`, or None."""
    for b in budgets:
        if abs(value / b - 1) <= rel:
            return b
    return None


def _validate_resources(spec: SweepSpec) -> None:
    r = spec.resources
    _non_negative_int(r.gpus, "resources.gpus")
    _positive_int(r.cpus, "resources.cpus")
    _positive(r.mem_gb, "resources.mem_gb", "a positive number of GB")
    _positive_int(r.time_min, "resources.time_min")
    if r.throughput_flops is not None:
        _positive(r.throughput_flops, "resources.throughput_flops", "a positive FLOP/s figure")
    _positive_int(spec.backend.local.max_concurrent, "backend.local.max_concurrent")
    if spec.backend.local.threads_per_run is not None:
        _positive_int(spec.backend.local.threads_per_run, "backend.local.threads_per_run")
    s = spec.backend.slurm
    _positive_int(s.array_parallelism, "backend.slurm.array_parallelism")
    _non_negative_int(s.max_num_timeout, "backend.slurm.max_num_timeout")
    for key, value in s.extra.items():
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"backend.slurm.extra.{key}", "a string, number or boolean sbatch option value", value)


def validate_resources(spec: SweepSpec, backend: str) -> None:
    """Check that `backend` can give each run what spec.resources asks for (local: enough CUDA devices).

    SLURM-side checks (partition limits) belong to the SLURM executor.
    """
    if backend not in BACKENDS:
        raise ConfigError("backend", f"one of {BACKENDS}", backend)
    if backend != "local" or spec.resources.gpus == 0:
        return
    import torch

    have = torch.cuda.device_count()
    if spec.resources.gpus > have:
        raise ConfigError("resources.gpus", f"at most the {have} CUDA device(s) this machine has for backend 'local'",
                          spec.resources.gpus)


def _positive(value: object, name: str, what: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise ConfigError(name, what, value)


def _positive_int(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(name, "a positive integer", value)


def _non_negative_int(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(name, "a non-negative integer", value)
