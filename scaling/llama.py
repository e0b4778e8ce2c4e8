"""Llama style decoder: pre-RMSNorm blocks, SwiGLU MLP, rotary positions, untied output head, no biases, optional GQA.

Shapes: B batch, T tokens (T <= seq_len), C = d_model, H = n_heads, K = n_kv_heads (divides H), D = head_dim = C / H,
F = d_ff, V = vocab_size.

Rotary embeddings use the "rotate halves" layout (GPT-NeoX / Hugging Face): dimension i of a head is paired with
dimension i + D/2 and the pair is rotated by angle pos * rope_theta^(-2i/D). cos/sin tables for positions 0..seq_len-1
are precomputed once as non-persistent buffers (not parameters, not saved in the state dict).

Grouped-query attention: K key/value heads are shared by groups of H/K query heads (`enable_gqa` in SDPA).

Initialization, applied once in `Llama.__init__` (seed with `torch.manual_seed` before building):
- every Linear weight, the token embedding and the output head: normal(0, 0.02);
- the two residual output projections of each block (`attn.proj`, `mlp.down`): normal(0, 0.02 / sqrt(2 * n_layer));
- RMSNorm weights: ones. There are no biases.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scaling.config import ModelConfig

INIT_STD = 0.02


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, each (seq_len, head_dim / 2), fp32."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (D/2,)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)  # (seq_len, D/2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, D) by position: cos, sin are (T, D/2)."""
    x1, x2 = x.chunk(2, dim=-1)  # each (B, H, T, D/2)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, H, T, D)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        qkv_out = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, qkv_out, bias=False)  # C -> (H + 2K) * D (q, k, v fused)
        self.proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)  # H * D -> C, residual output

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, K, D = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split((H * D, K * D, K * D), dim=2)
        q = apply_rope(q.view(B, T, H, D).transpose(1, 2), cos, sin)  # (B, H, T, D)
        k = apply_rope(k.view(B, T, K, D).transpose(1, 2), cos, sin)  # (B, K, T, D)
        v = v.view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=K != H)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, H * D)  # (B, T, H * D)
        return self.proj(y)


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.d_ff, bias=False)  # C -> 2F (gate and up fused)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)  # F -> C, residual output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # each (B, T, F)
        return self.down(F.silu(gate) * up)  # (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)  # (V, C)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)  # C -> V, untied
        cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (seq_len, D/2)
        self.register_buffer("rope_sin", sin, persistent=False)  # (seq_len, D/2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialization stated in the module docstring."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        residual_std = INIT_STD / math.sqrt(2 * self.cfg.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.down.weight, mean=0.0, std=residual_std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: LongTensor (B, T) of token ids -> logits (B, T, V)."""
        T = idx.shape[1]
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than model.seq_len ({self.cfg.seq_len})")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, D/2)
        x = self.tok_embeddings(idx)  # (B, T, C)
        for block in self.blocks:
            x = block(x, cos, sin)  # (B, T, C)
        return self.output(self.norm(x))  # (B, T, V)
