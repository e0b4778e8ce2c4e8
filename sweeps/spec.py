"""The sweep spec: one TOML file describing a whole isoFLOP (+ LR x batch) sweep, parsed into dataclasses.

A spec has these sections (every key is optional unless said; see `sweeps/presets/*.toml` for commented examples):

    name = "my-sweep"                     # required: the results folder is results/<name>/
    [data]       corpus, tokenizer ("bytes" | "bpe"), vocab_size (required for bpe)
    [model]      family ("gpt2" | "llama"), seq_len, vocab_size (default: the tokenizer's), head_dim, aspect_ratio
                 (d_model / n_layer), n_kv_heads_ratio (llama GQA); n_layer fixes the depth (the ladder varies the
                 width only), and with it n_heads (instead of head_dim) fixes the head count; exact_aspect = true
                 keeps d_model = aspect_ratio x n_layer for every model (one aspect ratio for the whole sweep)
    [budgets]    values = [1e12, 3e12] | min, max, count (log-spaced, both ends included); convention: the FLOP
                 convention the budgets are measured in (one of scaling.accounting.CONVENTIONS, default "6N")
    [grid]       models_per_budget + spread (N_max / N_min, log-uniform around the prior optimum) | sizes (explicit
                 non-embedding params, used at every budget); the prior optimum: tokens_per_param (Chinchilla, 20:
                 C = 6 N D with D = 20 N) | prior_coef + prior_exponent (N_opt = coef * C^exponent) | prior_fit (a
                 fit.json; its isoflop.N_opt law); min_steps, batch_range, tolerance (realized FLOPs vs budget);
                 replicate_seeds + replicate_models: the replicate_models (default 3) models nearest each budget's
                 prior optimum also train with each extra seed (replicates for the noise model)
    [train]      lr | lr_rule = {coef, exponent} (lr = coef * C^exponent); lr_width = {d_model, exponent}: that lr
                 is for width d_model, and a model of width d trains at lr * (d_model / d)^exponent (muP's 1/width
                 rule for Adam is exponent 1); batch_size (sequences) | batch_tokens |
                 batch_rule = {coef, exponent} (tokens = coef * C^exponent); seeds = [0, ...]; and any key of the
                 trainer's [train] section (schedule, warmup_frac, decay_frac, weight_decay, micro_batch_size, ...),
                 passed through to every run
    [hparams]    optional LR x batch grid: lr | lr_factors, batch_size | batch_factors, budgets (default all),
                 models = "optimum" (only the model nearest the predicted N_opt) | "all"
    [eval]       every (steps) | evals_per_run (default 10), tokens
    [tracking]   optional TensorBoard / W&B logging of every run: the trainer's [tracking] table (scaling.tracking),
                 passed to each run (group defaults to the sweep's name; not part of a run's identity)
    [resources]  per run: gpus, cpus, mem_gb; time_min (the wall-clock limit of an attempt when no estimate exists);
                 throughput_flops (FLOP/s per run: wall-time estimates, and each run's own time limit, see grid.py)
    [backend.local]  max_concurrent, threads_per_run
    [backend.slurm]  partition, account, qos (letters, digits and `_.,:-` only), array_parallelism, max_num_timeout
                     (requeues after time-outs, default 3), extra: further sbatch options as a list of
                     "--key=value" (or "--flag") strings, or a table {key = value}; keys match [a-z][a-z0-9-]*,
                     values use letters, digits and `_.,:@%+=/-` only, so nothing can break out of the sbatch script

The spec is data: this module parses and validates it; every planning decision (the prior optimum, the LR and batch
at a budget, where models go) is made by `sweeps.grid`. `load_spec(path_or_preset, overrides)` reads a file or a
preset name (`tiny-cpu`, `gpu-small`, `gpu-llama3`) and applies overrides like `budgets.values=[1e12,3e12]` (values
are TOML). Unknown keys, wrong types, non-finite numbers and non-table sections raise ConfigError naming the dotted
field. Overriding the budgets keeps only the `hparams.budgets` that are still budgets of the sweep (all of them
when none is: the LR grid then runs at every budget), with a warning. Checks that need the model ladder (sizes,
steps per budget) or the machine (installed extras, the corpus size) happen in `sweeps.grid.plan`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from scaling.accounting import CONVENTIONS
from scaling.config import FAMILIES
from scaling.configfile import (
    as_table,
    at_least,
    build,
    in_range,
    non_negative_int,
    one_of,
    parse_toml,
    positive,
    positive_int,
    set_dotted,
    split_override,
)
from scaling.errors import ConfigError
from scaling.runconfig import RunConfig
from scaling.tokenizers import TOKENIZERS
from sweeps.executors.base import BACKENDS

PRESETS = ("tiny-cpu", "gpu-small", "gpu-llama3")
HPARAM_MODELS = ("optimum", "all")
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
BUDGET_MATCH = 0.02  # relative distance within which two budgets are the same budget (hparams.budgets, collapse)
# What may reach an sbatch script: SLURM names, and `--key=value` options built from strict character sets.
SLURM_NAME = re.compile(r"[A-Za-z0-9_.,:-]+")
SBATCH_KEY = re.compile(r"[a-z][a-z0-9-]*")
SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:@%+=/-]+")
SPEC_META = ("source", "source_text", "overrides")  # SweepSpec fields that record where a spec came from


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
    exact_aspect: bool = False  # every model has d_model = aspect_ratio x n_layer (rounded), so models differ in scale
    # only: the ladder's 2% fit otherwise trades depth for width (25x256 next to 8x768); D follows the realized N


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
    prior_fit: str | None = None  # a fit.json whose isoflop.N_opt law is the prior (relative to the spec's folder;
    # stored resolved to an absolute path; read by sweeps.grid.prior_from_fit)
    min_steps: int = 20  # runs needing fewer optimizer steps are dropped (with a warning)
    batch_range: float = 4.0  # the planner may move the batch size by up to this factor to land on the budget
    tolerance: float = 0.01  # realized FLOPs within this relative error of the budget
    replicate_seeds: list[int] | None = None  # extra seeds for the models nearest each budget's prior optimum, so
    # the noise model has replicates (runs differing only in seed); distinct from train.seeds
    replicate_models: int = 3  # how many models per budget (nearest the prior optimum) train with replicate_seeds


@dataclass
class TrainSpec:
    lr: float = 3e-3  # peak learning rate
    lr_rule: dict | None = None  # {coef, exponent}: lr = coef * C^exponent (DeepSeek LLM: 0.3118, -0.125)
    lr_width: dict | None = None  # {d_model, exponent}: lr (or lr_rule) holds at width d_model; width d trains at
    # lr * (d_model / d)^exponent, so every model of an isoFLOP grid sits near its own optimal LR (muP: exponent 1)
    batch_size: int | None = None  # target sequences per optimizer step (16 when no batch key is set)
    batch_tokens: int | None = None  # target tokens per optimizer step
    batch_rule: dict | None = None  # {coef, exponent}: tokens = coef * C^exponent (DeepSeek LLM: 0.292, 0.3271)
    seeds: list[int] = field(default_factory=lambda: [0])
    passthrough: dict = field(default_factory=dict)  # every other [train] key, handed to the trainer as is


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
    time_min: int = 60  # wall-clock limit per attempt when a run has no estimate (no throughput_flops)
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
    extra: list[str] = field(default_factory=list)  # further sbatch options, e.g. ["--constraint=h100"]

    def extra_parameters(self) -> dict[str, str | bool]:
        """`extra` as {key: value} (True for a bare `--flag`), the form submitit's additional parameters take."""
        params: dict[str, str | bool] = {}
        for option in self.extra:
            key, _, value = option[2:].partition("=")
            params[key] = value if value else True
        return params


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
    tracking: dict = field(default_factory=dict)  # the trainer's [tracking] table, passed to every run as is
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
    raw = parse_toml(text, source)
    for item in overrides:
        apply_override(raw, item)
    if any(item.split("=", 1)[0].strip().startswith("budgets.") for item in overrides):
        _rebase_hparam_budgets(raw, overrides)
    spec = spec_from_dict(raw, base_dir=base_dir)
    spec.source, spec.source_text, spec.overrides = source, text, list(overrides)
    return spec


def read_spec_text(path_or_name: str | os.PathLike) -> tuple[str, str, Path]:
    """(TOML text, source label, folder that relative paths in it are resolved against)."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8"), str(path), path.resolve().parent
        except UnicodeDecodeError:
            raise ConfigError(str(path), "a UTF-8 TOML file", "undecodable bytes") from None
    name = str(path_or_name)
    if name in PRESETS:
        text = resources.files("sweeps").joinpath("presets", f"{name}.toml").read_text(encoding="utf-8")
        return text, f"preset:{name}", Path.cwd()
    raise ConfigError("spec", f"an existing TOML file or a preset name {list(PRESETS)}", name)


def apply_override(raw: dict, item: str) -> None:
    """Set `dotted.key=value` (value parsed as TOML, else a plain string) in the raw spec dict, in place.

    Setting one member of an ALTERNATIVES group removes the other members (e.g. `budgets.values=[...]` drops
    budgets.min/max/count), so an override can switch between forms.
    """
    keys, value = split_override(item, "dotted.key=value, e.g. budgets.values=[1e12,3e12]")
    table = set_dotted(raw, keys, value)
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


def _rebase_hparam_budgets(raw: dict, overrides: list[str] | tuple[str, ...]) -> None:
    """After the budgets were overridden (and hparams.budgets was not), keep the hparams budgets that are still
    budgets of the sweep; when none is, drop the key so the LR grid covers every budget. Warns when it changes."""
    hparams = raw.get("hparams")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("budgets"), list):
        return
    if any(item.split("=", 1)[0].strip() == "hparams.budgets" for item in overrides):
        return
    try:
        budgets = build(BudgetSpec, raw.get("budgets", {}), "budgets")
        _validate_budgets(budgets)
    except ConfigError:
        return  # validation proper reports the bad budgets
    resolved = budgets.resolved()
    kept = [b for b in hparams["budgets"] if isinstance(b, (int, float)) and match_budget(b, resolved) is not None]
    if kept == hparams["budgets"]:
        return
    if kept:
        hparams["budgets"] = kept
        what = f"the LR x batch grid keeps the budgets {[f'{b:.3g}' for b in kept]}"
    else:
        hparams.pop("budgets")
        what = "none of hparams.budgets is a budget any more: the LR x batch grid runs at every budget"
    warnings.warn(f"budgets overridden; {what} (set hparams.budgets=[...] to choose)", stacklevel=3)


def spec_from_dict(raw: dict, base_dir: Path | None = None) -> SweepSpec:
    """Build and validate a SweepSpec from the parsed TOML dict."""
    raw = dict(as_table(raw, "spec"))
    if "name" not in raw:
        raise ConfigError("name", "a sweep name (the results folder is results/<name>/)")
    for section in ("data", "model", "budgets", "grid", "eval", "resources", "backend"):
        if section in raw:
            as_table(raw[section], section)
    train_raw = dict(as_table(raw.pop("train", {}), "train"))
    hparams_raw = raw.pop("hparams", None)
    if hparams_raw is not None:
        as_table(hparams_raw, "hparams")
    _normalize_slurm_extra(raw)
    _check_exclusive(raw, train_raw, hparams_raw)
    spec = build(SweepSpec, raw, "", skip=SPEC_META)
    spec.train = _build_train(train_raw)
    spec.hparams = None if hparams_raw is None else build(HparamSpec, hparams_raw, "hparams")
    _resolve_prior_fit(spec.grid, base_dir or Path.cwd())
    validate_spec(spec)
    return spec


def _normalize_slurm_extra(raw: dict) -> None:
    """backend.slurm.extra written as a table {key = value} becomes the list ["--key=value", ...] (true: "--key")."""
    slurm = as_table(raw.get("backend", {}), "backend").get("slurm")
    if not isinstance(slurm, dict) or not isinstance(slurm.get("extra"), dict):
        return
    options = []
    for key, value in slurm["extra"].items():
        name = f"backend.slurm.extra.{key}"
        if isinstance(value, bool):
            if value:
                options.append(f"--{key}")
            continue
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(name, "a string, number or boolean sbatch option value", value)
        options.append(f"--{key}={value}")
    slurm["extra"] = options


def _build_train(train_raw: dict) -> TrainSpec:
    own = {f.name for f in dataclasses.fields(TrainSpec)} - {"passthrough"}
    for key in PLANNER_TRAIN_KEYS:
        if key in train_raw:
            why = "budgets.convention" if key == "flop_convention" else "the planner (from the budgets)"
            raise ConfigError(f"train.{key}", f"unset: it is set by {why}", train_raw[key])
    spec = build(TrainSpec, {k: v for k, v in train_raw.items() if k in own}, "train", label="train")
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
    """Make grid.prior_fit an absolute path to an existing file (relative paths: to the spec's folder first).

    The file is read, and its law checked, by `sweeps.grid.prior_from_fit` when the sweep is planned."""
    if grid.prior_fit is None:
        return
    path = Path(grid.prior_fit).expanduser()
    if not path.is_absolute() and (base_dir / path).is_file():
        path = base_dir / path
    if not path.is_file():
        raise ConfigError("grid.prior_fit", "an existing fit.json (from `scaling fit`)", grid.prior_fit)
    grid.prior_fit = str(path.resolve())


# ------------------------------------------------------------------------------------------------ validation


def validate_spec(spec: SweepSpec) -> SweepSpec:
    """Check every value that needs no model ladder; raise ConfigError naming the first bad dotted field."""
    if not spec.name or not all(c.isalnum() or c in "-_." for c in spec.name) or spec.name.startswith("."):
        raise ConfigError("name", "a non-empty folder name of letters, digits, '-', '_' and '.'", spec.name)
    _validate_data_model(spec)
    _validate_budgets(spec.budgets)
    _validate_grid(spec.grid)
    _validate_train(spec.train)
    _validate_replicates(spec.grid, spec.train)
    if spec.hparams is not None:
        _validate_hparams(spec.hparams, spec.budgets.resolved())
    if spec.eval.every is not None:
        positive_int(spec.eval.every, "eval.every")
    positive_int(spec.eval.evals_per_run, "eval.evals_per_run")
    positive_int(spec.eval.tokens, "eval.tokens")
    _validate_resources(spec)
    if spec.tracking:
        RunConfig.from_dict({"tracking": spec.tracking})  # the trainer's own checks, naming tracking.<key>
    return spec


def _validate_budgets(b: BudgetSpec) -> None:
    """Budgets: positive finite FLOPs, a complete form, and distinct (no two within BUDGET_MATCH of each other)."""
    if b.values is None and None in (b.min, b.max, b.count):
        raise ConfigError("budgets", "either budgets.values or all of budgets.min, budgets.max, budgets.count")
    if b.values is not None:
        for i, v in enumerate(b.values):
            positive(v, f"budgets.values[{i}]", "a positive number of FLOPs")
        field_name = "budgets.values"
    else:
        positive(b.min, "budgets.min", "a positive number of FLOPs")
        positive(b.max, "budgets.max", "a positive number of FLOPs")
        positive_int(b.count, "budgets.count")
        if b.count == 1:
            raise ConfigError("budgets.count", "at least 2 with budgets.min and budgets.max (for one budget, "
                              "set budgets.values = [C])", b.count)
        if b.max <= b.min:
            raise ConfigError("budgets.max", f"more than budgets.min ({b.min:g})", b.max)
        field_name = "budgets.count"
    one_of(b.convention, CONVENTIONS, "budgets.convention")
    resolved = b.resolved()
    for lo, hi in itertools.pairwise(resolved):
        if hi / lo - 1 <= BUDGET_MATCH:
            raise ConfigError(field_name, f"distinct budgets (more than {BUDGET_MATCH:.0%} apart); {lo:.4g} and "
                              f"{hi:.4g} FLOPs collapse into one", [f"{v:.4g}" for v in resolved])


def _validate_data_model(spec: SweepSpec) -> None:
    one_of(spec.data.tokenizer, TOKENIZERS, "data.tokenizer")
    if spec.data.tokenizer == "bpe" and spec.data.vocab_size is None and spec.model.vocab_size is None:
        raise ConfigError("data.vocab_size", "a vocabulary size for tokenizer 'bpe' (parameter counts depend on it)")
    if spec.data.vocab_size is not None:
        positive_int(spec.data.vocab_size, "data.vocab_size")
    m = spec.model
    one_of(m.family, FAMILIES, "model.family")
    positive_int(m.seq_len, "model.seq_len")
    for key in ("vocab_size", "head_dim", "n_layer", "n_heads"):
        if getattr(m, key) is not None:
            positive_int(getattr(m, key), f"model.{key}")
    if m.n_heads is not None and (m.n_layer is None or m.head_dim is not None):
        raise ConfigError("model.n_heads", "set together with model.n_layer and without model.head_dim", m.n_heads)
    if m.aspect_ratio is not None:
        positive(m.aspect_ratio, "model.aspect_ratio", "a positive number (d_model / n_layer)")
    positive_int(m.n_kv_heads_ratio, "model.n_kv_heads_ratio")
    if m.exact_aspect and m.n_layer is not None:
        raise ConfigError("model.exact_aspect", "unset with model.n_layer (a fixed depth varies the aspect ratio)",
                          m.exact_aspect)
    if m.family == "gpt2" and m.n_kv_heads_ratio != 1:
        raise ConfigError("model.n_kv_heads_ratio", "1 for family 'gpt2' (no grouped-query attention)",
                          m.n_kv_heads_ratio)


def _validate_grid(g: GridSpec) -> None:
    positive_int(g.models_per_budget, "grid.models_per_budget")
    at_least(g.spread, 1, "grid.spread", "a number >= 1 (largest / smallest model at a budget)")
    if g.sizes is not None:
        for i, n in enumerate(g.sizes):
            positive(n, f"grid.sizes[{i}]", "a positive number of non-embedding params")
    positive(g.tokens_per_param, "grid.tokens_per_param", "a positive number of tokens per parameter")
    if (g.prior_coef is None) != (g.prior_exponent is None):
        missing = "grid.prior_exponent" if g.prior_exponent is None else "grid.prior_coef"
        raise ConfigError(missing, "set together with grid.prior_coef / grid.prior_exponent")
    if g.prior_coef is not None:
        positive(g.prior_coef, "grid.prior_coef", "a positive coefficient of N_opt = coef * C^exponent")
        in_range(g.prior_exponent, 0.0, 1.0, "grid.prior_exponent", lo_open=True)
    positive_int(g.min_steps, "grid.min_steps")
    at_least(g.batch_range, 1, "grid.batch_range")
    in_range(g.tolerance, 0.0, 0.5, "grid.tolerance", lo_open=True)


def _validate_replicates(g: GridSpec, t: TrainSpec) -> None:
    """grid.replicate_seeds: distinct non-negative seeds, none of them in train.seeds; grid.replicate_models >= 1."""
    positive_int(g.replicate_models, "grid.replicate_models")
    if g.replicate_seeds is None:
        return
    for i, s in enumerate(g.replicate_seeds):
        non_negative_int(s, f"grid.replicate_seeds[{i}]")
    if len(set(g.replicate_seeds)) != len(g.replicate_seeds):
        raise ConfigError("grid.replicate_seeds", "distinct seeds", g.replicate_seeds)
    shared = sorted(set(g.replicate_seeds) & set(t.seeds))
    if shared:
        raise ConfigError("grid.replicate_seeds", f"seeds not in train.seeds {t.seeds} (those runs exist already)",
                          g.replicate_seeds)


def _validate_train(t: TrainSpec) -> None:
    positive(t.lr, "train.lr", "a positive learning rate")
    for key in ("lr_rule", "batch_rule"):
        rule = getattr(t, key)
        if rule is None:
            continue
        if set(rule) != {"coef", "exponent"}:
            raise ConfigError(f"train.{key}", "a table {coef = ..., exponent = ...}", rule)
        positive(rule["coef"], f"train.{key}.coef", "a positive number")
        in_range(rule["exponent"], -1.0, 1.0, f"train.{key}.exponent", hi_open=False)
    if t.lr_width is not None:
        if not isinstance(t.lr_width, dict) or set(t.lr_width) != {"d_model", "exponent"}:
            raise ConfigError("train.lr_width", "a table {d_model = ..., exponent = ...}", t.lr_width)
        positive(t.lr_width["d_model"], "train.lr_width.d_model", "a positive width")
        in_range(t.lr_width["exponent"], 0.0, 2.0, "train.lr_width.exponent", hi_open=False)
    if t.batch_size is not None:
        positive_int(t.batch_size, "train.batch_size")
    if t.batch_tokens is not None:
        positive_int(t.batch_tokens, "train.batch_tokens")
    if len(set(t.seeds)) != len(t.seeds):
        raise ConfigError("train.seeds", "distinct seeds", t.seeds)
    for i, s in enumerate(t.seeds):
        non_negative_int(s, f"train.seeds[{i}]")
    _validate_passthrough(t.passthrough)


def _validate_passthrough(passthrough: dict) -> None:
    """Let the trainer's own strict loader judge the pass-through [train] keys (its messages name train.<key>)."""
    micro = passthrough.get("micro_batch_size")
    batch = micro if isinstance(micro, int) and not isinstance(micro, bool) and micro > 0 else 1
    RunConfig.from_dict({"train": {**passthrough, "steps": 1, "batch_size": batch}})


def _validate_hparams(h: HparamSpec, budgets: list[float]) -> None:
    if all(v is None for v in (h.lr, h.lr_factors, h.batch_size, h.batch_factors)):
        raise ConfigError("hparams", "at least one of hparams.lr, lr_factors, batch_size, batch_factors")
    for key, what in (("lr", "a positive learning rate"), ("lr_factors", "a positive factor"),
                      ("batch_size", "a positive number of sequences"), ("batch_factors", "a positive factor")):
        for i, v in enumerate(getattr(h, key) or []):
            positive(v, f"hparams.{key}[{i}]", what)
    one_of(h.models, HPARAM_MODELS, "hparams.models")
    for i, v in enumerate(h.budgets or []):
        if match_budget(v, budgets) is None:
            raise ConfigError(f"hparams.budgets[{i}]", f"one of the budgets {[f'{b:.3g}' for b in budgets]}", v)


def match_budget(value: float, budgets: list[float], rel: float = BUDGET_MATCH) -> float | None:
    """The budget within `rel` (relative) of `value`, or None."""
    for b in budgets:
        if abs(value / b - 1) <= rel:
            return b
    return None


def _validate_resources(spec: SweepSpec) -> None:
    r = spec.resources
    non_negative_int(r.gpus, "resources.gpus")
    positive_int(r.cpus, "resources.cpus")
    positive(r.mem_gb, "resources.mem_gb", "a positive number of GB")
    positive_int(r.time_min, "resources.time_min")
    if r.throughput_flops is not None:
        positive(r.throughput_flops, "resources.throughput_flops", "a positive FLOP/s figure")
    positive_int(spec.backend.local.max_concurrent, "backend.local.max_concurrent")
    if spec.backend.local.threads_per_run is not None:
        positive_int(spec.backend.local.threads_per_run, "backend.local.threads_per_run")
    _validate_slurm(spec.backend.slurm)


def _validate_slurm(s: SlurmSpec) -> None:
    """Every value that reaches an sbatch script: strict character sets, so no newline or shell syntax gets in."""
    positive_int(s.array_parallelism, "backend.slurm.array_parallelism")
    non_negative_int(s.max_num_timeout, "backend.slurm.max_num_timeout")
    for key in ("partition", "account", "qos"):
        value = getattr(s, key)
        if value is not None and not SLURM_NAME.fullmatch(value):
            raise ConfigError(f"backend.slurm.{key}", "a SLURM name of letters, digits and '_.,:-' (no spaces or "
                              "newlines)", value)
    for i, option in enumerate(s.extra):
        check_sbatch_option(option, f"backend.slurm.extra[{i}]")


def check_sbatch_option(option: str, name: str) -> None:
    """`--key=value` or `--flag` with key [a-z][a-z0-9-]* and value of [A-Za-z0-9_.,:@%+=/-]; else ConfigError."""
    key, eq, value = option[2:].partition("=") if option.startswith("--") else ("", "", "")
    ok = option.startswith("--") and SBATCH_KEY.fullmatch(key) and (not eq or SBATCH_VALUE.fullmatch(value))
    if not ok:
        raise ConfigError(name, "an sbatch option '--key=value' or '--flag' (key: lowercase letters, digits, '-'; "
                          "value: letters, digits and '_.,:@%+=/-' only)", option)


def validate_resources(spec: SweepSpec, backend: str) -> None:
    """Check that `backend` can give each run what spec.resources asks for (local: enough CUDA devices).

    SLURM-side checks (partition limits) belong to the SLURM executor.
    """
    if backend not in BACKENDS:
        raise ConfigError("backend", f"one of {tuple(BACKENDS)}", backend)
    if backend != "local" or spec.resources.gpus == 0:
        return
    import torch

    have = torch.cuda.device_count()
    if spec.resources.gpus > have:
        raise ConfigError("resources.gpus", f"at most the {have} CUDA device(s) this machine has for backend 'local'",
                          spec.resources.gpus)
