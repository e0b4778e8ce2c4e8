"""The configuration of one training run: `RunConfig` and its TOML / command-line loader.

A run config has four sections, `model` (a `ModelConfig`), `train`, `data`, `eval`, plus `out` (the run directory).
Loading is strict: unknown keys, wrong types and out-of-range values raise `ConfigError` naming the field.
Checks that need the corpus (its vocabulary, the FLOP budget in tokens) happen in `scaling.train.resolve_run`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from scaling.accounting import CONVENTIONS
from scaling.config import ModelConfig
from scaling.configfile import (
    at_least,
    build,
    coerce,
    in_range,
    non_negative,
    non_negative_int,
    one_of,
    parse_value,  # noqa: F401 - re-exported: callers parse override values through here
    positive,
    positive_int,
    read_toml,
    split_override,
    writable_dir,
)
from scaling.errors import ConfigError
from scaling.tokenizers import TOKENIZERS
from scaling.tracking import TrackingConfig

DEFAULT_TOKENS = 2**20  # the no-argument run: ~1M tokens of a ~0.8M-param gpt2, about a minute on 2 CPU cores
SCHEDULES = ("cosine", "wsd")
DECAY_SHAPES = ("linear", "sqrt", "cosine")
# Keys that change how a run is operated but not what it computes; they may differ when a run is resumed.
RUNTIME_KEYS = {"train": ("checkpoint_every", "checkpoint_seconds", "keep_checkpoints")}


@dataclass
class TrainConfig:
    tokens: int | None = None  # budget in tokens (D); exactly one of tokens / flops / steps, tokens if none is set
    flops: float | None = None  # budget in FLOPs (C) under `flop_convention`
    steps: int | None = None  # budget in optimizer steps
    lr: float = 2e-3  # peak learning rate
    batch_size: int | None = None  # sequences per optimizer step (global, over all ranks); 16 if batch_tokens unset
    batch_tokens: int | None = None  # tokens per optimizer step; a multiple of model.seq_len
    micro_batch_size: int | None = None  # sequences per forward pass on each rank (gradient accumulation); None: all
    seed: int = 0
    schedule: str = "cosine"  # "cosine" (warmup, cosine to min_lr_ratio*lr) | "wsd" (warmup, stable, decay)
    warmup_frac: float | None = None  # warmup as a fraction of the steps; 0.05 if warmup_steps is unset
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1  # final lr / peak lr, for both schedules
    decay_frac: float = 0.2  # wsd: fraction of the steps spent decaying
    decay_shape: str = "linear"  # wsd: "linear" | "sqrt" | "cosine"
    weight_decay: float = 0.1  # AdamW, on tensors with dim >= 2 (matrices and embeddings) only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    flop_convention: str = "6N"  # one of scaling.accounting.CONVENTIONS; converts a FLOP budget and records FLOPs
    device: str = "auto"  # "auto" (cuda when available) | "cpu" | "cuda" | "cuda:N"
    compile: bool = False  # torch.compile the model
    checkpoint_every: int = 0  # steps between checkpoints; 0: off
    checkpoint_seconds: float = 600.0  # seconds between checkpoints; 0: off
    keep_checkpoints: int = 2  # newest checkpoints kept (>= 2, so a corrupt newest one has a fallback)
    divergence_factor: float = field(default=4.0, metadata={"allow_inf": True})  # after warmup, a step loss above
    # this x the running minimum ends the run; inf: off


@dataclass
class DataConfig:
    corpus: str = "stdlib"  # a corpus name known to scaling.data, or a path to a text file or folder
    tokenizer: str = "bytes"  # "bytes" | "bpe"
    vocab_size: int | None = None  # bpe vocabulary size; None: the tokenizer's default


@dataclass
class EvalConfig:
    every: int = 0  # steps between evaluations; 0: about 10 evaluations per run. Always evaluated at the end.
    tokens: int = 2**15  # validation tokens per evaluation (the same fixed tokens each time)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # runtime: not part of the identity
    out: str | None = None  # run directory
    vocab_from_corpus: bool = True  # model.vocab_size was not given: take the corpus's (set by from_dict)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Build and validate from `{"model": {...}, "train": {...}, "data": {...}, "eval": {...}, "out": ...}`.

        Missing sections and keys take their defaults; `None` values (JSON null) mean "not set".
        """
        known = (*SECTIONS, "out")
        for key in d:
            if key not in known:
                raise ConfigError(key, f"one of the sections {list(known)}", "unknown key")
        model = {k: v for k, v in as_section(d, "model").items() if v is not None}
        model = {k: coerce(v, float, f"model.{k}") if k in FLOAT_MODEL_KEYS else v for k, v in model.items()}
        cfg = cls(
            model=ModelConfig.from_dict(model),
            train=build(TrainConfig, as_section(d, "train"), "train", label="train"),
            data=build(DataConfig, as_section(d, "data"), "data", label="data"),
            eval=build(EvalConfig, as_section(d, "eval"), "eval", label="eval"),
            tracking=build(TrackingConfig, as_section(d, "tracking"), "tracking"),
            out=coerce(d.get("out"), str | None, "out"),
            vocab_from_corpus="vocab_size" not in model,
        )
        return cfg.validate()

    def to_dict(self) -> dict:
        """Plain JSON-able dict; `RunConfig.from_dict(cfg.to_dict())` gives the same config back."""
        d = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        if self.vocab_from_corpus:
            d["model"].pop("vocab_size")
        d["out"] = self.out
        return d

    def identity(self) -> dict:
        """The keys that decide what a run computes: `to_dict()` without `out`, `tracking` and the RUNTIME_KEYS."""
        d = self.to_dict()
        d.pop("out")
        d.pop("tracking")
        for section, keys in RUNTIME_KEYS.items():
            for key in keys:
                d[section].pop(key)
        return d

    def validate(self) -> RunConfig:
        """Check every value that needs no corpus; raise ConfigError naming the first bad field."""
        self.model.validate()
        _validate_train(self.train, self.model)
        _validate_data(self.data)
        positive_int(self.eval.tokens, "eval.tokens")
        self.tracking.validate()
        non_negative_int(self.eval.every, "eval.every", "a non-negative integer (0: about 10 evaluations)")
        if self.out is not None:
            if not self.out.strip():
                raise ConfigError("out", "a directory path", self.out)
            writable_dir(self.out, "out")
        return self


def load_run_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a TOML run config (or start from the defaults when `path` is None) and apply `key=value` overrides.

    An override is `section.key=value` or `out=DIR`; a bare `key=value` is accepted when exactly one section has
    that key (`lr=3e-3`). Values are parsed as TOML values (`3e-3`, `true`, `"x"`), else taken as plain strings.
    """
    d: dict = {} if path is None else read_toml(path, "config")
    for item in overrides:
        section, key, value = parse_override(item)
        if section is None:
            d[key] = value
        else:
            if not isinstance(d.setdefault(section, {}), dict):
                raise ConfigError(section, "a table of keys", d[section])
            d[section][key] = value
    return RunConfig.from_dict(d)


def parse_override(item: str) -> tuple[str | None, str, object]:
    """Split `section.key=value` into (section, key, parsed value); `out=DIR` gives (None, "out", DIR)."""
    keys, value = split_override(item, "section.key=value (or out=DIR)")
    name = ".".join(keys)
    if name == "out":
        return None, "out", item.split("=", 1)[1].strip() if not isinstance(value, str) else value
    if "." in name:
        section, key = name.split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(name, f"a key in one of the sections {list(SECTIONS)}", "unknown section")
        return section, key, value
    owners = [s for s, cls in SECTIONS.items() if key_in(cls, name)]
    if len(owners) != 1:
        why = "unknown key" if not owners else f"ambiguous: in {owners}"
        raise ConfigError(name, "section.key=value naming one of the sections " + str(list(SECTIONS)), why)
    return owners[0], name, value


def key_in(cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))


SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig, "eval": EvalConfig,
            "tracking": TrackingConfig}


def as_section(d: dict, name: str) -> dict:
    """Section `name` of a raw run config ({} when absent); ConfigError when it is not a table."""
    value = d.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(name, "a table of keys", value)
    return value


FLOAT_MODEL_KEYS = ("rope_theta", "norm_eps")  # ModelConfig's float fields: finite numbers, checked here


def _validate_train(t: TrainConfig, model: ModelConfig) -> None:
    budgets = [k for k in ("tokens", "flops", "steps") if getattr(t, k) is not None]
    if len(budgets) > 1:
        raise ConfigError("train." + budgets[1], "exactly one of train.tokens, train.flops, train.steps", budgets)
    if t.tokens is not None:
        positive_int(t.tokens, "train.tokens")
    if t.steps is not None:
        positive_int(t.steps, "train.steps")
    if t.flops is not None:
        positive(t.flops, "train.flops", "a positive number of FLOPs")
    positive(t.lr, "train.lr")
    if t.batch_size is not None and t.batch_tokens is not None:
        raise ConfigError("train.batch_tokens", "at most one of train.batch_size, train.batch_tokens", t.batch_tokens)
    if t.batch_size is not None:
        positive_int(t.batch_size, "train.batch_size")
    if t.batch_tokens is not None and not (
        isinstance(t.batch_tokens, int) and t.batch_tokens > 0 and t.batch_tokens % model.seq_len == 0
    ):
        raise ConfigError("train.batch_tokens", f"a positive multiple of model.seq_len ({model.seq_len})",
                          t.batch_tokens)
    if t.micro_batch_size is not None:
        positive_int(t.micro_batch_size, "train.micro_batch_size")
        if batch_size_of(t, model) % t.micro_batch_size:
            raise ConfigError("train.micro_batch_size", f"a divisor of the batch size ({batch_size_of(t, model)})",
                              t.micro_batch_size)
    one_of(t.schedule, SCHEDULES, "train.schedule")
    if t.warmup_frac is not None and t.warmup_steps is not None:
        raise ConfigError("train.warmup_steps", "at most one of train.warmup_frac, train.warmup_steps", t.warmup_steps)
    if t.warmup_frac is not None:
        in_range(t.warmup_frac, 0.0, 1.0, "train.warmup_frac")
    if t.warmup_steps is not None:
        non_negative_int(t.warmup_steps, "train.warmup_steps")
    in_range(t.min_lr_ratio, 0.0, 1.0, "train.min_lr_ratio", hi_open=False)
    in_range(t.decay_frac, 0.0, 1.0, "train.decay_frac", lo_open=True, hi_open=False)
    one_of(t.decay_shape, DECAY_SHAPES, "train.decay_shape")
    non_negative(t.weight_decay, "train.weight_decay")
    in_range(t.beta1, 0.0, 1.0, "train.beta1")
    in_range(t.beta2, 0.0, 1.0, "train.beta2")
    non_negative(t.grad_clip, "train.grad_clip", "a non-negative number (0: no clipping)")
    one_of(t.flop_convention, CONVENTIONS, "train.flop_convention")
    dev = t.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError("train.device", "one of 'auto', 'cpu', 'cuda', 'cuda:N'", t.device)
    non_negative_int(t.checkpoint_every, "train.checkpoint_every", "a non-negative number of steps (0: off)")
    non_negative(t.checkpoint_seconds, "train.checkpoint_seconds", "a non-negative number of seconds (0: off)")
    at_least(t.keep_checkpoints, 2, "train.keep_checkpoints", "an integer >= 2")
    if not (t.divergence_factor > 1):
        raise ConfigError("train.divergence_factor", "a number > 1 (inf: off)", t.divergence_factor)


def _validate_data(d: DataConfig) -> None:
    if not d.corpus.strip():
        raise ConfigError("data.corpus", "a corpus name or an existing path", d.corpus)
    one_of(d.tokenizer, TOKENIZERS, "data.tokenizer")
    if d.vocab_size is not None:
        positive_int(d.vocab_size, "data.vocab_size")
    if not corpus_is_named(d.corpus) and not Path(d.corpus).expanduser().exists():
        raise ConfigError("data.corpus", "a known corpus name or an existing file or folder", d.corpus)


def corpus_is_named(corpus: str) -> bool:
    """True when `corpus` names a built-in corpus of `scaling.data` rather than a path."""
    from scaling import data

    return corpus in data.CORPORA or corpus.startswith("hf:")


def batch_size_of(t: TrainConfig, model: ModelConfig) -> int:
    """Sequences per optimizer step: batch_size, or batch_tokens / seq_len, or 16."""
    if t.batch_size is not None:
        return t.batch_size
    if t.batch_tokens is not None:
        return t.batch_tokens // model.seq_len
    return 16
