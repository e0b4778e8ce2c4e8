"""The two model families: shapes, causality, GQA, rotary embeddings, initialization, and that they can learn."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scaling import ModelConfig, build_model
from scaling.errors import ConfigError
from scaling.llama import apply_rope, rope_tables

TINY = {
    "gpt2": ModelConfig(family="gpt2", n_layer=2, d_model=32, n_heads=4, seq_len=16, vocab_size=64, bias=True),
    "llama": ModelConfig(family="llama", n_layer=2, d_model=32, n_heads=4, n_kv_heads=2, seq_len=16, vocab_size=64),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def built(cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("T", [16, 5])
def test_forward_gives_logits_for_every_position(family, T):
    cfg = TINY[family]
    idx = torch.randint(0, cfg.vocab_size, (3, T), generator=torch.Generator().manual_seed(1))
    logits = built(cfg)(idx)
    assert logits.shape == (3, T, cfg.vocab_size)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_changing_a_future_token_leaves_past_logits_alone(family):
    cfg = TINY[family]
    model = built(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len), generator=torch.Generator().manual_seed(2))
    t = 9
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % cfg.vocab_size
    with torch.no_grad():
        before, after = model(idx), model(changed)
    torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=1e-5)
    assert (after[:, t:] - before[:, t:]).abs().amax() > 1e-4  # the change does reach position t and later


def test_gqa_equals_multi_head_attention_with_repeated_kv_heads():
    gqa_cfg = ModelConfig(family="llama", n_layer=2, d_model=32, n_heads=4, n_kv_heads=2, seq_len=16, vocab_size=64)
    mha_cfg = ModelConfig(family="llama", n_layer=2, d_model=32, n_heads=4, seq_len=16, vocab_size=64)
    gqa, mha = built(gqa_cfg), built(mha_cfg, seed=1)
    H, K, D, C = 4, 2, 8, 32
    state = gqa.state_dict()
    for i in range(gqa_cfg.n_layer):
        key = f"blocks.{i}.attn.qkv.weight"
        q, k, v = state[key].split((H * D, K * D, K * D))
        # query head h reads kv head h // (H / K): repeat each kv head's rows H / K times
        k, v = (w.view(K, D, C).repeat_interleave(H // K, dim=0).reshape(H * D, C) for w in (k, v))
        state[key] = torch.cat((q, k, v))
    mha.load_state_dict(state)
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx), mha(idx), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in gqa.parameters()) < sum(p.numel() for p in mha.parameters())


def test_rope_scores_depend_only_on_relative_position():
    D, T = 16, 12
    cos, sin = rope_tables(T, D, theta=10000.0)
    assert cos.shape == sin.shape == (T, D // 2)
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(1, 1, 1, D, generator=g), torch.randn(1, 1, 1, D, generator=g)
    qs, ks = apply_rope(q.expand(1, 1, T, D), cos, sin), apply_rope(k.expand(1, 1, T, D), cos, sin)
    torch.testing.assert_close(qs[..., 0, :], q[..., 0, :])  # position 0 is not rotated
    torch.testing.assert_close(qs.norm(dim=-1), q.norm(dim=-1).expand(1, 1, T))  # rotations keep lengths
    score = (qs[0, 0] @ ks[0, 0].T)  # (T, T): score[m, n] = <rope(q, m), rope(k, n)>
    torch.testing.assert_close(score[7, 3], score[5, 1])
    torch.testing.assert_close(score[2, 9], score[0, 7])
    assert not torch.allclose(score[7, 3], score[7, 4])


def test_rope_buffers_are_not_saved_or_trained():
    model = built(TINY["llama"])
    assert not any("rope" in key for key in model.state_dict())
    assert not any("rope" in name for name, _ in model.named_parameters())
    assert any("rope" in name for name, _ in model.named_buffers())


def test_initialization_matches_the_documented_scheme():
    L = 4
    gpt2 = built(ModelConfig(family="gpt2", n_layer=L, d_model=256, n_heads=4, seq_len=64, vocab_size=512, bias=True))
    llama = built(ModelConfig(family="llama", n_layer=L, d_model=256, n_heads=4, seq_len=64, vocab_size=512))
    residual = 0.02 / math.sqrt(2 * L)
    for weight, std in [
        (gpt2.wte.weight, 0.02),
        (gpt2.wpe.weight, 0.02),
        (gpt2.blocks[1].attn.qkv.weight, 0.02),
        (gpt2.blocks[1].mlp.fc.weight, 0.02),
        (gpt2.blocks[1].attn.proj.weight, residual),
        (gpt2.blocks[1].mlp.proj.weight, residual),
        (llama.tok_embeddings.weight, 0.02),
        (llama.output.weight, 0.02),
        (llama.blocks[2].attn.qkv.weight, 0.02),
        (llama.blocks[2].mlp.gate_up.weight, 0.02),
        (llama.blocks[2].attn.proj.weight, residual),
        (llama.blocks[2].mlp.down.weight, residual),
    ]:
        assert abs(weight.std().item() / std - 1) < 0.03
        assert abs(weight.mean().item()) < 0.1 * std
    assert all((b == 0).all() for name, b in gpt2.named_parameters() if name.endswith("bias"))
    assert (gpt2.blocks[0].ln_1.weight == 1).all() and (llama.blocks[0].attn_norm.weight == 1).all()
    assert not any(name.endswith("bias") for name, _ in llama.named_parameters())


def test_gpt2_output_head_is_the_token_embedding():
    cfg = TINY["gpt2"]
    model = built(cfg)
    tables = [p for p in model.parameters() if p.shape == (cfg.vocab_size, cfg.d_model)]
    assert len(tables) == 1 and tables[0] is model.wte.weight  # one (V, C) table, and it is the embedding
    idx = torch.zeros(1, 4, dtype=torch.long)
    final = {}
    hook = model.ln_f.register_forward_hook(lambda module, args, out: final.update(h=out.detach().clone()))
    # A random (not constant) change: LayerNorm output has zero mean over C, so a constant shift would move the
    # logit by float rounding only.
    delta = torch.randn(cfg.d_model, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        before = model(idx)
        model.wte.weight[7] += delta  # token 7 never appears in idx: the hidden states stay the same
        after = model(idx)
    hook.remove()
    change = after - before  # (1, 4, V)
    expected = final["h"] @ delta  # (1, 4): logit_7 = h . wte[7] moves by h . delta
    assert expected.abs().min() > 0.5  # a change far above rounding
    torch.testing.assert_close(change[..., 7], expected, rtol=1e-5, atol=1e-5)
    others = torch.cat((change[..., :7], change[..., 8:]), dim=-1)
    assert others.abs().amax() == 0  # no other logit moves


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_same_seed_same_model_and_other_seed_differs(family):
    a, b, c = built(TINY[family], 5), built(TINY[family], 5), built(TINY[family], 6)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_few_steps_fit_a_fixed_batch(family):
    cfg = TINY[family]
    model = built(cfg)
    idx = torch.randint(0, cfg.vocab_size, (4, cfg.seq_len + 1), generator=torch.Generator().manual_seed(7))
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(cfg.vocab_size)) < 0.1  # small init: near-uniform predictions
    assert losses[-1] < 0.6 * losses[0]


def test_build_model_rejects_bad_configs():
    with pytest.raises(ConfigError, match="model.d_model"):
        build_model(ModelConfig(family="gpt2", d_model=30, n_heads=4))
    with pytest.raises(ConfigError, match="model.n_kv_heads"):
        build_model(ModelConfig(family="gpt2", n_heads=4, n_kv_heads=2))
    with pytest.raises(ConfigError, match="model.family"):
        build_model(ModelConfig(family="bert"))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_sequence_longer_than_context_is_refused(family):
    cfg = TINY[family]
    with pytest.raises(ValueError, match="seq_len"):
        built(cfg)(torch.zeros(1, cfg.seq_len + 1, dtype=torch.long))
