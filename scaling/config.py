"""The one model config shared by both families (GPT-2 style and Llama style)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from scaling.errors import ConfigError

FAMILIES = ("gpt2", "llama")


@dataclass
class ModelConfig:
    family: str = "gpt2"  # "gpt2" (LayerNorm, GELU, learned positions, tied head) or "llama" (RMSNorm, SwiGLU, RoPE)
    n_layer: int = 4
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int | None = None  # llama grouped-query attention; None means n_heads (plain multi-head)
    d_ff: int | None = None  # None: 4*d_model for gpt2, 8/3*d_model rounded up to a multiple of 32 for llama
    seq_len: int = 256  # context length in tokens
    vocab_size: int = 256  # 256 = byte-level tokenizer
    bias: bool = False  # gpt2 only: biases in Linear and LayerNorm
    rope_theta: float = 10000.0  # llama only
    norm_eps: float = 1e-5

    def __post_init__(self):
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_ff is None and isinstance(self.d_model, int):
            self.d_ff = default_d_ff(self.family, self.d_model)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> ModelConfig:
        """Raise ConfigError naming the first bad field; return self when all is well."""
        if self.family not in FAMILIES:
            raise ConfigError("model.family", f"one of {FAMILIES}", self.family)
        for name in ("n_layer", "d_model", "n_heads", "n_kv_heads", "d_ff", "seq_len", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"model.{name}", "a positive integer", value)
        if self.d_model % self.n_heads:
            raise ConfigError("model.d_model", f"a multiple of model.n_heads ({self.n_heads})", self.d_model)
        if self.n_heads % self.n_kv_heads:
            raise ConfigError("model.n_kv_heads", f"a divisor of model.n_heads ({self.n_heads})", self.n_kv_heads)
        if self.family == "gpt2" and self.n_kv_heads != self.n_heads:
            raise ConfigError("model.n_kv_heads", "equal to n_heads for family 'gpt2' (no GQA)", self.n_kv_heads)
        if self.family == "llama" and self.head_dim % 2:
            raise ConfigError("model.d_model", "d_model / n_heads even for rotary embeddings", self.d_model)
        if not isinstance(self.bias, bool):
            raise ConfigError("model.bias", "true or false", self.bias)
        if self.family == "llama" and self.bias:
            raise ConfigError("model.bias", "false for family 'llama' (no biases)", self.bias)
        for name in ("rope_theta", "norm_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
                raise ConfigError(f"model.{name}", "a positive finite number", value)
        return self

    @classmethod
    def from_dict(cls, d: dict, prefix: str = "model") -> ModelConfig:
        """Build and validate from a plain dict (e.g. a TOML section); unknown keys and wrong types are errors."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in d:
            if key not in fields:
                raise ConfigError(f"{prefix}.{key}", f"one of the model keys {sorted(fields)}", "unknown key")
        kwargs = {}
        for key, value in d.items():
            if key in ("rope_theta", "norm_eps") and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            kwargs[key] = value
        try:
            cfg = cls(**kwargs)
        except TypeError as e:  # pragma: no cover - dataclass rejects nothing else
            raise ConfigError(prefix, str(e)) from e
        try:
            return cfg.validate()
        except ConfigError as e:
            if prefix != "model":
                raise ConfigError(e.field.replace("model.", prefix + ".", 1), e.expected, e.got) from None
            raise

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_d_ff(family: str, d_model: int) -> int:
    """MLP width: 4*d for GPT-2; for Llama's SwiGLU, 8/3*d rounded up to a multiple of 32 (same params as 4*d GELU)."""
    if family == "llama":
        return 32 * math.ceil(8 * d_model / 3 / 32)
    return 4 * d_model
