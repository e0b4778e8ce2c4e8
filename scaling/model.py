"""Build a model from a `ModelConfig`: one class per family, in `scaling/gpt2.py` and `scaling/llama.py`."""

from __future__ import annotations

from torch import nn

from scaling.config import ModelConfig
from scaling.gpt2 import GPT2
from scaling.llama import Llama

MODELS: dict[str, type[nn.Module]] = {"gpt2": GPT2, "llama": Llama}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Validate `cfg` (ConfigError on a bad field) and return the family's model, freshly initialized on the CPU.

    The model maps idx LongTensor (B, T), T <= cfg.seq_len, to logits (B, T, vocab_size). Initialization draws from
    torch's global RNG: call `torch.manual_seed(seed)` first for a reproducible model.
    """
    cfg.validate()
    return MODELS[cfg.family](cfg)
