"""Parameter counts and FLOPs per token: hand-computed closed forms, the real modules, and torch's FLOP counter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scaling import CONVENTIONS, ModelConfig, all_flops_per_token, build_model, count_params, flops_per_token
from scaling.errors import ConfigError

GPT2 = ModelConfig(family="gpt2", n_layer=2, d_model=64, n_heads=4, seq_len=32, vocab_size=256, bias=False)
GPT2_BIAS = ModelConfig(family="gpt2", n_layer=2, d_model=64, n_heads=4, seq_len=32, vocab_size=256, bias=True)
LLAMA_GQA = ModelConfig(family="llama", n_layer=2, d_model=64, n_heads=4, n_kv_heads=1, seq_len=32, vocab_size=256)

# Shapes for the checks against real modules; each family has GQA / bias, non-default d_ff, odd sizes.
SHAPES = [
    ModelConfig(family="gpt2", n_layer=1, d_model=32, n_heads=2, seq_len=16, vocab_size=64),
    ModelConfig(family="gpt2", n_layer=2, d_model=64, n_heads=4, seq_len=32, vocab_size=256, bias=True),
    ModelConfig(family="gpt2", n_layer=3, d_model=48, n_heads=3, d_ff=100, seq_len=24, vocab_size=97),
    ModelConfig(family="gpt2", n_layer=2, d_model=32, n_heads=8, d_ff=40, seq_len=8, vocab_size=50, bias=True),
    ModelConfig(family="gpt2", n_layer=1, d_model=96, n_heads=1, seq_len=40, vocab_size=300),
    ModelConfig(family="llama", n_layer=1, d_model=32, n_heads=2, seq_len=16, vocab_size=64),
    ModelConfig(family="llama", n_layer=2, d_model=64, n_heads=4, n_kv_heads=2, seq_len=32, vocab_size=256),
    ModelConfig(family="llama", n_layer=2, d_model=64, n_heads=8, n_kv_heads=1, d_ff=100, seq_len=16, vocab_size=64),
    ModelConfig(family="llama", n_layer=3, d_model=48, n_heads=3, d_ff=130, seq_len=24, vocab_size=97),
    ModelConfig(family="llama", n_layer=1, d_model=96, n_heads=6, n_kv_heads=2, seq_len=40, vocab_size=300),
]
EMBEDDING_TABLES = ("wte.weight", "wpe.weight", "tok_embeddings.weight", "output.weight")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_gpt2_counts_by_hand():
    # L=2, d=64, V=256, T=32, d_ff=4*64=256, no biases
    counts = count_params(GPT2)
    assert counts["token_embedding"] == 256 * 64 == 16384
    assert counts["positional"] == 32 * 64 == 2048
    assert counts["lm_head"] == 0  # tied
    assert counts["attention"] == 2 * (64 * 192 + 64 * 64) == 32768  # qkv + proj
    assert counts["mlp"] == 2 * (64 * 256 + 256 * 64) == 65536
    assert counts["norms"] == (2 * 2 + 1) * 64 == 320
    assert counts["non_embedding"] == 32768 + 65536 + 320 == 98624
    assert counts["embedding"] == 16384 + 2048 == 18432
    assert counts["total"] == 117056


def test_gpt2_bias_counts_by_hand():
    counts = count_params(GPT2_BIAS)
    assert counts["attention"] == 2 * (64 * 192 + 192 + 64 * 64 + 64) == 33280
    assert counts["mlp"] == 2 * (64 * 256 + 256 + 256 * 64 + 64) == 66176
    assert counts["norms"] == 5 * (64 + 64) == 640
    assert counts["non_embedding"] == 100096
    assert counts["total"] == 100096 + 18432 == 118528


def test_llama_gqa_counts_by_hand():
    # L=2, d=64, 4 query heads and 1 kv head of 16, d_ff = 32*ceil(8*64/3/32) = 192, V=256, untied head
    counts = count_params(LLAMA_GQA)
    assert LLAMA_GQA.d_ff == 192
    assert counts["attention"] == 2 * (64 * 64 + 64 * 16 + 64 * 16 + 64 * 64) == 20480  # q, k, v, o
    assert counts["mlp"] == 2 * 3 * 64 * 192 == 73728
    assert counts["norms"] == 5 * 64 == 320
    assert counts["positional"] == 0
    assert counts["token_embedding"] == counts["lm_head"] == 16384
    assert counts["non_embedding"] == 94528
    assert counts["embedding"] == 32768
    assert counts["total"] == 127296


@pytest.mark.parametrize("cfg", SHAPES, ids=lambda c: f"{c.family}-L{c.n_layer}-d{c.d_model}-kv{c.n_kv_heads}")
def test_counts_match_the_real_module(cfg):
    model = build_model(cfg)
    named = dict(model.named_parameters())  # shared (tied) tensors appear once
    counts = count_params(cfg)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embedding"] == sum(p.numel() for n, p in named.items() if n in EMBEDDING_TABLES)
    assert counts["non_embedding"] == sum(p.numel() for n, p in named.items() if n not in EMBEDDING_TABLES)
    assert counts["attention"] == sum(p.numel() for n, p in named.items() if ".attn." in n)
    assert counts["mlp"] == sum(p.numel() for n, p in named.items() if ".mlp." in n)
    parts = ("token_embedding", "positional", "lm_head", "attention", "mlp", "norms")
    assert sum(counts[k] for k in parts) == counts["total"]


def test_flops_by_hand():
    # gpt2 L=2, d=64, H=4, head_dim=16, T=32, V=256
    matmul = 2 * (4 * 64 * 64 + 2 * 64 * 256) + 64 * 256  # q,k,v,o + fc, proj per layer; tied logits
    attention = 12 * 2 * 4 * 16 * 32
    assert flops_per_token(GPT2, "exact") == 6 * matmul + attention == 737280
    assert flops_per_token(GPT2, "exact_causal") == 6 * matmul + attention / 2 == 712704
    assert flops_per_token(GPT2) == flops_per_token(GPT2, "6N") == 6 * 98624
    assert flops_per_token(GPT2, "6N_total") == 6 * 117056
    assert flops_per_token(GPT2, "deepseek") == 72 * 2 * 64**2 + 12 * 2 * 64 * 32 == 638976
    # llama with one kv head: k, v projections are 64 x 16
    matmul = 2 * (64 * 64 + 2 * 64 * 16 + 64 * 64 + 3 * 64 * 192) + 64 * 256
    assert flops_per_token(LLAMA_GQA, "exact") == 6 * matmul + 12 * 2 * 4 * 16 * 32 == 712704


def measured_training_flops_per_token(cfg: ModelConfig, batch: int = 2) -> tuple[float, set[str]]:
    """FLOPs torch counts for forward + backward of a real model on (batch, seq_len) tokens, per token."""
    torch.manual_seed(0)
    model = build_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len))
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:  # torch counts 0 for the CPU flash kernel
        loss = F.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
        loss.backward()
    ops = {str(op) for op in counter.get_flop_counts()["Global"]}
    return counter.get_total_flops() / (batch * cfg.seq_len), ops


@pytest.mark.parametrize("cfg", SHAPES, ids=lambda c: f"{c.family}-L{c.n_layer}-d{c.d_model}-kv{c.n_kv_heads}")
def test_exact_flops_match_torch_flop_counter(cfg):
    measured, ops = measured_training_flops_per_token(cfg)
    assert ops <= {"aten.mm", "aten.addmm", "aten.bmm"}  # only matmuls counted: no norms, softmax, rotary
    assert "aten.bmm" in ops  # the attention matmuls were seen (not skipped as in the CPU flash kernel)
    assert abs(flops_per_token(cfg, "exact") / measured - 1) < 0.01
    assert abs(flops_per_token(cfg, "exact_causal") / measured - 1) > 0.01  # the counter sees the full square


def test_all_flops_per_token_has_every_convention():
    flops = all_flops_per_token(LLAMA_GQA)
    assert tuple(flops) == CONVENTIONS
    assert flops == {c: flops_per_token(LLAMA_GQA, c) for c in CONVENTIONS}
    assert flops["6N"] < flops["6N_total"]
    assert flops["exact_causal"] < flops["exact"]


def test_unknown_convention_names_flop_convention():
    with pytest.raises(ConfigError, match="flop_convention"):
        flops_per_token(GPT2, "kaplan")


def test_counting_a_bad_config_raises():
    with pytest.raises(ConfigError, match="model.n_heads"):
        count_params(ModelConfig(n_heads=0))
