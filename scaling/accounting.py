"""Exact parameter counts and training FLOPs per token, in closed form from a `ModelConfig` (no model is built).

Parameter convention (Kaplan 2020, Chinchilla):
- `embedding`: every vocabulary- or position-indexed table: the token embedding (V x C), the learned positional table
  (gpt2: seq_len x C) and the untied output head (llama: C x V). GPT-2's head is the token embedding (tied), counted once.
- `non_embedding`: everything else: attention and MLP weights, their biases (gpt2 with `bias`), and every norm,
  the final norm included. This is the N of "6N" and of the scaling-law fits.
- `total` = `embedding` + `non_embedding` = sum(p.numel() for p in build_model(cfg).parameters()), exactly.

FLOP conventions (training = forward + backward = 3 x forward; a multiply-add is 2 FLOPs), per token, `CONVENTIONS`:
- "6N": 6 x non-embedding params (Kaplan 2020, Chinchilla approach 3 fits).
- "6N_total": 6 x total params.
- "exact": 6 x every weight used in a matmul (q/k/v/o projections at their GQA sizes, MLP, the output logits; GPT-2's
  tied head counted as a matmul here) + attention scores QK^T and attention-weighted values over the full square
  T x T matrix: 12 n_layer n_heads head_dim seq_len (PaLM App. B, nanoGPT/torchtitan MFU; no causal halving).
  Elementwise work (norms, activations, softmax, rotary, biases, embedding lookups) is not counted.
- "exact_causal": "exact" with the attention term halved (only the causal half of the score matrix is needed).
- "deepseek": DeepSeek LLM's M = 72 n_layer d_model^2 + 12 n_layer d_model seq_len (non-embedding, with attention).
"""

from __future__ import annotations

from scaling.config import ModelConfig
from scaling.errors import ConfigError

CONVENTIONS = ("6N", "6N_total", "exact", "exact_causal", "deepseek")


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts (params) of `build_model(cfg)`, by the convention in the module docstring.

    Keys: `total`, `embedding`, `non_embedding`, and components that partition `total`: `token_embedding`,
    `positional` (gpt2 learned table; 0 for llama), `lm_head` (llama untied head; 0 for gpt2, tied), `attention`,
    `mlp` (both summed over layers, biases included), `norms` (all norms incl. the final one, biases included).
    """
    cfg.validate()
    C, L, V = cfg.d_model, cfg.n_layer, cfg.vocab_size
    if cfg.family == "gpt2":
        b = int(cfg.bias)
        parts = {
            "token_embedding": V * C,
            "positional": cfg.seq_len * C,
            "lm_head": 0,  # tied to the token embedding
            "attention": L * (C * 3 * C + 3 * C * b + C * C + C * b),  # qkv + proj
            "mlp": L * (C * cfg.d_ff + cfg.d_ff * b + cfg.d_ff * C + C * b),  # fc + proj
            "norms": (2 * L + 1) * C * (1 + b),  # ln_1, ln_2 per layer, ln_f; weight (+ bias)
        }
    else:
        q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        parts = {
            "token_embedding": V * C,
            "positional": 0,  # rotary: no parameters
            "lm_head": C * V,
            "attention": L * (C * (q_dim + 2 * kv_dim) + q_dim * C),  # qkv + proj
            "mlp": L * 3 * C * cfg.d_ff,  # gate, up, down
            "norms": (2 * L + 1) * C,  # attn_norm, mlp_norm per layer, final norm
        }
    embedding = parts["token_embedding"] + parts["positional"] + parts["lm_head"]
    non_embedding = parts["attention"] + parts["mlp"] + parts["norms"]
    return {"total": embedding + non_embedding, "embedding": embedding, "non_embedding": non_embedding, **parts}


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that enter a matmul once per token (params): projections, MLP and the output logits (tied or not)."""
    cfg.validate()
    C, L = cfg.d_model, cfg.n_layer
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    attention = C * (q_dim + 2 * kv_dim) + q_dim * C
    mlp = (3 if cfg.family == "llama" else 2) * C * cfg.d_ff
    return L * (attention + mlp) + C * cfg.vocab_size


def attention_flops_per_token(cfg: ModelConfig) -> int:
    """Training FLOPs per token of QK^T and attn @ V over the full square T x T matrix: 12 L H D T (PaLM)."""
    return 12 * cfg.n_layer * cfg.n_heads * cfg.head_dim * cfg.seq_len


def flops_per_token(cfg: ModelConfig, convention: str = "6N") -> float:
    """Training FLOPs (forward + backward) per token of `cfg` at context `cfg.seq_len`, under `convention`."""
    if convention not in CONVENTIONS:
        raise ConfigError("flop_convention", f"one of {CONVENTIONS}", convention)
    if convention in ("6N", "6N_total"):
        counts = count_params(cfg)
        return 6.0 * counts["non_embedding" if convention == "6N" else "total"]
    if convention == "deepseek":
        cfg.validate()
        return 72.0 * cfg.n_layer * cfg.d_model**2 + 12.0 * cfg.n_layer * cfg.d_model * cfg.seq_len
    attention = attention_flops_per_token(cfg)
    if convention == "exact_causal":
        attention /= 2
    return 6.0 * matmul_params(cfg) + attention


def all_flops_per_token(cfg: ModelConfig) -> dict[str, float]:
    """Training FLOPs per token under every convention in `CONVENTIONS`."""
    return {convention: flops_per_token(cfg, convention) for convention in CONVENTIONS}
