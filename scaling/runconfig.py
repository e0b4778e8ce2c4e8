"""The configuration of one training run: `RunConfig` and its TOML / command-line loader.

A run config has four sections, `model` (a `ModelConfig`), `train`, `data`, `eval`, plus `out` (the run directory).
Loading is strict: unknown keys, wrong types and out-of-range values raise `ConfigError` naming the field.
Checks that need the corpus (its vocabulary, the FLOP budget in tokens) happen in `scaling.train.resolve_run`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from scaling.config import ModelConfig
from scaling.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DEFAULT_TOKENS = 2**20  # the no-argument run: ~1M tokens of a ~0.8M-param gpt2, about a minute on 2 CPU cores
SCHEDULES = ("cosine", "wsd")
DECAY_SHAPES = ("linear", "sqrt", "cosine")
TOKENIZERS = ("bytes", "bpe")
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
    divergence_factor: float = 4.0  # after warmup, a step loss above this x the running minimum ends the run


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
    out: str | None = None  # run directory
    vocab_from_corpus: bool = True  # model.vocab_size was not given: take the corpus's (set by from_dict)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Build and validate from `{"model": {...}, "train": {...}, "data": {...}, "eval": {...}, "out": ...}`.

        Missing sections and keys take their defaults; `None` values (JSON null) mean "not set".
        """
        known = ("model", "train", "data", "eval", "out")
        for key in d:
            if key not in known:
                raise ConfigError(key, f"one of the sections {list(known)}", "unknown key")
        for key in known[:4]:
            if not isinstance(d.get(key, {}), dict):
                raise ConfigError(key, "a table of keys", d[key])
        model = {k: v for k, v in d.get("model", {}).items() if v is not None}
        vocab_from_corpus = "vocab_size" not in model
        cfg = cls(
            model=ModelConfig.from_dict(model),
            train=_section_from_dict(TrainConfig, d.get("train", {}), "train"),
            data=_section_from_dict(DataConfig, d.get("data", {}), "data"),
            eval=_section_from_dict(EvalConfig, d.get("eval", {}), "eval"),
            out=_coerce(d.get("out"), str | None, "out"),
            vocab_from_corpus=vocab_from_corpus,
        )
        return cfg.validate()

    def to_dict(self) -> dict:
        """Plain JSON-able dict; `RunConfig.from_dict(cfg.to_dict())` gives the same config back."""
        d = {name: dataclasses.asdict(getattr(self, name)) for name in ("model", "train", "data", "eval")}
        if self.vocab_from_corpus:
            d["model"].pop("vocab_size")
        d["out"] = self.out
        return d

    def identity(self) -> dict:
        """The keys that decide what a run computes: `to_dict()` without `out` and the RUNTIME_KEYS."""
        d = self.to_dict()
        d.pop("out")
        for section, keys in RUNTIME_KEYS.items():
            for key in keys:
                d[section].pop(key)
        return d

    def validate(self) -> RunConfig:
        """Check every value that needs no corpus; raise ConfigError naming the first bad field."""
        self.model.validate()
        _validate_train(self.train, self.model)
        _validate_data(self.data)
        _positive_int(self.eval.tokens, "eval.tokens")
        if not self.eval.every >= 0:
            raise ConfigError("eval.every", "a non-negative integer (0: about 10 evaluations)", self.eval.every)
        if self.out is not None and not self.out.strip():
            raise ConfigError("out", "a directory path", self.out)
        return self


def load_run_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a TOML run config (or start from the defaults when `path` is None) and apply `key=value` overrides.

    An override is `section.key=value` or `out=DIR`; a bare `key=value` is accepted when exactly one section has
    that key (`lr=3e-3`). Values are parsed as TOML values (`3e-3`, `true`, `"x"`), else taken as plain strings.
    """
    d: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config", "an existing TOML file", str(path))
        try:
            d = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(str(path), f"valid TOML ({e})") from None
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
    if "=" not in item:
        raise ConfigError(item, "an override of the form section.key=value (or out=DIR)")
    name, raw = item.split("=", 1)
    name = name.strip()
    value = parse_value(raw.strip())
    if name == "out":
        return None, "out", raw.strip() if not isinstance(value, str) else value
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


def parse_value(raw: str) -> object:
    """A TOML value (`3e-3`, `true`, `"x"`, `[1, 2]`), or the raw text when it is not one (`x`, `/tmp/run`)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def key_in(cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))


SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig, "eval": EvalConfig}


def _section_from_dict(cls: type, d: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        if not key_in(cls, key):
            names = [f.name for f in dataclasses.fields(cls)]
            raise ConfigError(f"{prefix}.{key}", f"one of the {prefix} keys {names}", "unknown key")
        if value is not None:
            kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}")
    return cls(**kwargs)


def _coerce(value: object, hint: object, name: str) -> object:
    """Check `value` against a type hint (int, float, bool, str, optionally `| None`); ints may be written 1e6."""
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(name, "a value", value)
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(name, "true or false", value)
    if isinstance(value, bool):
        raise ConfigError(name, f"a{'n' if base is int else ''} {base.__name__}", value)
    if base is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise ConfigError(name, "an integer", value)
    if base is float:
        if isinstance(value, (int, float)):
            return float(value)
        raise ConfigError(name, "a number", value)
    if base is str:
        if isinstance(value, str):
            return value
        raise ConfigError(name, "a string", value)
    raise AssertionError(f"unhandled type {hint} for {name}")  # pragma: no cover


def _positive_int(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(name, "a positive integer", value)


def _in_range(value: float, lo: float, hi: float, name: str, lo_open: bool = False, hi_open: bool = True) -> None:
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok or math.isnan(value):
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ConfigError(name, f"a number in {left}{lo}, {hi}{right}", value)


def _validate_train(t: TrainConfig, model: ModelConfig) -> None:
    budgets = [k for k in ("tokens", "flops", "steps") if getattr(t, k) is not None]
    if len(budgets) > 1:
        raise ConfigError("train." + budgets[1], "exactly one of train.tokens, train.flops, train.steps", budgets)
    if t.tokens is not None:
        _positive_int(t.tokens, "train.tokens")
    if t.steps is not None:
        _positive_int(t.steps, "train.steps")
    if t.flops is not None and not (t.flops > 0 and math.isfinite(t.flops)):
        raise ConfigError("train.flops", "a positive number of FLOPs", t.flops)
    if not (t.lr > 0 and math.isfinite(t.lr)):
        raise ConfigError("train.lr", "a positive number", t.lr)
    if t.batch_size is not None and t.batch_tokens is not None:
        raise ConfigError("train.batch_tokens", "at most one of train.batch_size, train.batch_tokens", t.batch_tokens)
    if t.batch_size is not None:
        _positive_int(t.batch_size, "train.batch_size")
    if t.batch_tokens is not None and not (
        isinstance(t.batch_tokens, int) and t.batch_tokens > 0 and t.batch_tokens % model.seq_len == 0
    ):
        raise ConfigError("train.batch_tokens", f"a positive multiple of model.seq_len ({model.seq_len})",
                              t.batch_tokens)
    if t.micro_batch_size is not None:
        _positive_int(t.micro_batch_size, "train.micro_batch_size")
        if batch_size_of(t, model) % t.micro_batch_size:
            raise ConfigError("train.micro_batch_size", f"a divisor of the batch size ({batch_size_of(t, model)})",
                              t.micro_batch_size)
    if t.schedule not in SCHEDULES:
        raise ConfigError("train.schedule", f"one of {SCHEDULES}", t.schedule)
    if t.warmup_frac is not None and t.warmup_steps is not None:
        raise ConfigError("train.warmup_steps", "at most one of train.warmup_frac, train.warmup_steps", t.warmup_steps)
    if t.warmup_frac is not None:
        _in_range(t.warmup_frac, 0.0, 1.0, "train.warmup_frac")
    if t.warmup_steps is not None and not t.warmup_steps >= 0:
        raise ConfigError("train.warmup_steps", "a non-negative integer", t.warmup_steps)
    _in_range(t.min_lr_ratio, 0.0, 1.0, "train.min_lr_ratio", hi_open=False)
    _in_range(t.decay_frac, 0.0, 1.0, "train.decay_frac", lo_open=True, hi_open=False)
    if t.decay_shape not in DECAY_SHAPES:
        raise ConfigError("train.decay_shape", f"one of {DECAY_SHAPES}", t.decay_shape)
    if not t.weight_decay >= 0:
        raise ConfigError("train.weight_decay", "a non-negative number", t.weight_decay)
    _in_range(t.beta1, 0.0, 1.0, "train.beta1")
    _in_range(t.beta2, 0.0, 1.0, "train.beta2")
    if not t.grad_clip >= 0:
        raise ConfigError("train.grad_clip", "a non-negative number (0: no clipping)", t.grad_clip)
    from scaling.accounting import CONVENTIONS

    if t.flop_convention not in CONVENTIONS:
        raise ConfigError("train.flop_convention", f"one of {CONVENTIONS}", t.flop_convention)
    dev = t.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError("train.device", "one of 'auto', 'cpu', 'cuda', 'cuda:N'", t.device)
    if not t.checkpoint_every >= 0:
        raise ConfigError("train.checkpoint_every", "a non-negative number of steps (0: off)", t.checkpoint_every)
    if not t.checkpoint_seconds >= 0:
        raise ConfigError("train.checkpoint_seconds", "a non-negative number of seconds (0: off)",
                          t.checkpoint_seconds)
    if not t.keep_checkpoints >= 2:
        raise ConfigError("train.keep_checkpoints", "an integer >= 2", t.keep_checkpoints)
    if not t.divergence_factor > 1:
        raise ConfigError("train.divergence_factor", "a number > 1 (inf: off)", t.divergence_factor)


def _validate_data(d: DataConfig) -> None:
    if not d.corpus.strip():
        raise ConfigError("data.corpus", "a corpus name or an existing path", d.corpus)
    if d.tokenizer not in TOKENIZERS:
        raise ConfigError("data.tokenizer", f"one of {TOKENIZERS}", d.tokenizer)
    if d.vocab_size is not None:
        _positive_int(d.vocab_size, "data.vocab_size")
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
