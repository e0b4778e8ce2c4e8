"""GPT-2 style decoder: pre-LayerNorm blocks, GELU MLP, learned positions, output head tied to the token embedding.

Shapes: B batch, T tokens (T <= seq_len), C = d_model, H = n_heads, D = head_dim = C / H, F = d_ff, V = vocab_size.

Initialization (GPT-2 / nanoGPT), applied once in `GPT2.__init__` (seed with `torch.manual_seed` before building):
- every Linear weight and both embedding tables (token, position): normal(0, 0.02);
- the two residual output projections of each block (`attn.proj`, `mlp.proj`): normal(0, 0.02 / sqrt(2 * n_layer)),
  so the residual stream's variance does not grow with depth;
- biases (when `cfg.bias`): zeros; LayerNorm: weight ones, bias zeros.
The output head reuses the token embedding matrix, so its parameters are counted once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scaling.config import ModelConfig

INIT_STD = 0.02


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)  # C -> 3C (q, k, v fused)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)  # C -> C, residual output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)  # C -> F
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)  # F -> C, residual output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))  # (B, T, F) inside, (B, T, C) out


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)  # (V, C), also the output head
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)  # (seq_len, C)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)
        self.register_buffer("pos", torch.arange(cfg.seq_len), persistent=False)  # (seq_len,)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialization stated in the module docstring."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        residual_std = INIT_STD / math.sqrt(2 * self.cfg.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=residual_std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: LongTensor (B, T) of token ids -> logits (B, T, V)."""
        T = idx.shape[1]
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than model.seq_len ({self.cfg.seq_len})")
        x = self.wte(idx) + self.wpe(self.pos[:T])  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        x = self.ln_f(x)
        return F.linear(x, self.wte.weight)  # (B, T, V), tied head
