"""The shape ladder: target parameter count -> (n_layer, d_model, n_heads, d_ff), its inverse, and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scaling import ModelConfig, count_params, params_for_shape, shape_for_params
from scaling.config import default_d_ff
from scaling.errors import ConfigError
from scaling.ladder import ladder

TARGETS = [float(n) for n in 10 ** np.linspace(4, 10, 49)]  # 1e4 .. 1e10, 8 per decade


def relative_error(cfg: ModelConfig, target: float, count: str = "non_embedding") -> float:
    return abs(count_params(cfg)[count] / target - 1)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_ladder_lands_within_five_percent_from_1e4_to_1e10(family):
    shapes = [shape_for_params(n, family) for n in TARGETS]
    errors = [relative_error(cfg, n) for cfg, n in zip(shapes, TARGETS)]
    assert max(errors) <= 0.05, f"worst {max(errors):.2%} at {TARGETS[int(np.argmax(errors))]:.3g}"
    counts = [count_params(cfg)["non_embedding"] for cfg in shapes]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)  # 33% apart: strictly increasing
    for cfg, n in zip(shapes, TARGETS):
        assert cfg.family == family and cfg.validate() is cfg
        assert cfg.d_model == cfg.n_heads * cfg.head_dim
        if n >= 1e8:  # large models: 64-dim heads and the aspect-ratio rule d_model ~ 64 n_layer
            assert cfg.head_dim == 64
            assert 32 <= cfg.d_model / cfg.n_layer <= 128
        if n >= 1e5:
            assert cfg.d_ff == default_d_ff(family, cfg.d_model)


def test_known_shapes_near_gpt2_small_and_1e9():
    # 85M non-embedding params is GPT-2 small's 12 x 768; the ladder keeps aspect ~64 with 64-dim heads
    cfg = shape_for_params(85e6, "gpt2")
    assert (cfg.head_dim, cfg.d_ff) == (64, 4 * cfg.d_model)
    assert 10 <= cfg.n_layer <= 14 and 640 <= cfg.d_model <= 896
    big = shape_for_params(1e9, "llama")
    assert 20 <= big.n_layer <= 36 and 1536 <= big.d_model <= 2304


def test_grouped_query_shapes_split_heads_into_kv_groups():
    for n in [1e5, 1e6, 1e7, 1e8, 1e9]:
        cfg = shape_for_params(n, "llama", n_kv_heads_ratio=4)
        assert cfg.n_heads == 4 * cfg.n_kv_heads
        assert relative_error(cfg, n) <= 0.05


def test_total_count_includes_the_embedding_tables():
    for n in [1e6, 1e7, 1e8, 1e9, 1e10]:
        cfg = shape_for_params(n, "gpt2", count="total", seq_len=512, vocab_size=4096)
        assert relative_error(cfg, n, "total") <= 0.05
    small = shape_for_params(1e6, "gpt2", count="total", vocab_size=4096)
    assert count_params(small)["non_embedding"] < 0.8 * count_params(shape_for_params(1e6, "gpt2"))["non_embedding"]


def test_explicit_head_dim_and_aspect_ratio_are_honoured():
    cfg = shape_for_params(2e7, "gpt2", head_dim=32)
    assert cfg.head_dim == 32
    deep = shape_for_params(1e8, "llama", aspect_ratio=32)
    wide = shape_for_params(1e8, "llama", aspect_ratio=128)
    assert deep.n_layer > wide.n_layer and deep.d_model < wide.d_model
    assert relative_error(deep, 1e8) <= 0.05 and relative_error(wide, 1e8) <= 0.05


def test_fixed_depth_varies_width_only_with_the_default_mlp():
    from scaling.ladder import FIXED_DEPTH_MAX_ERROR

    sizes = np.geomspace(3e3, 1e6, 40)
    shapes = [shape_for_params(n, "gpt2", n_layer=2, head_dim=2, seq_len=128) for n in sizes]
    assert {c.n_layer for c in shapes} == {2} and {c.head_dim for c in shapes} == {2}
    assert all(c.d_ff == default_d_ff("gpt2", c.d_model) for c in shapes)  # same MLP ratio everywhere
    widths = [c.d_model for c in shapes]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    errors = [relative_error(c, n) for c, n in zip(shapes, sizes)]
    assert max(errors) <= FIXED_DEPTH_MAX_ERROR
    # the nearest width: neither neighbour (d_model -/+ 2) is closer in log
    for c, n in zip(shapes, sizes):
        for d in (c.d_model - 2, c.d_model + 2):
            other = ModelConfig(n_layer=2, d_model=d, n_heads=d // 2, seq_len=128, vocab_size=256)
            assert abs(math.log(count_params(other)["non_embedding"] / n)) >= \
                abs(math.log(count_params(c)["non_embedding"] / n))
    # without n_layer the rule picks other depths for the same targets
    assert {shape_for_params(n, "gpt2", head_dim=2, seq_len=128).n_layer for n in sizes} != {2}
    with pytest.raises(ConfigError, match="^n_layer"):
        shape_for_params(1e5, n_layer=0)
    free_heads = shape_for_params(1e6, n_layer=4)  # head_dim from rule 2
    assert free_heads.n_layer == 4 and relative_error(free_heads, 1e6) <= 0.3
    with pytest.raises(ConfigError, match="^n_params"):
        shape_for_params(10, n_layer=2, head_dim=2)  # far below the narrowest 2-layer shape


def test_fixed_depth_with_fixed_heads_grows_head_dim():
    sizes = np.geomspace(2e3, 3e5, 30)
    shapes = [shape_for_params(n, "gpt2", n_layer=2, n_heads=2, seq_len=128) for n in sizes]
    assert {(c.n_layer, c.n_heads) for c in shapes} == {(2, 2)}
    assert all(c.d_model % 2 == 0 and c.head_dim == c.d_model // 2 for c in shapes)
    assert all(c.d_ff == default_d_ff("gpt2", c.d_model) for c in shapes)
    widths = [c.d_model for c in shapes]
    assert widths == sorted(widths) and len(set(widths)) > 20  # steps of 2: nearly every target its own width
    llama = shape_for_params(5e4, "llama", n_layer=2, n_heads=4, n_kv_heads_ratio=2)
    assert (llama.n_heads, llama.n_kv_heads) == (4, 2) and llama.head_dim % 2 == 0  # rotary needs even heads
    for bad in ({"n_heads": 2}, {"n_heads": 2, "n_layer": 2, "head_dim": 4}):
        with pytest.raises(ConfigError, match="^n_heads"):
            shape_for_params(1e4, **bad)


def test_deterministic():
    assert shape_for_params(3.3e6, "llama") == shape_for_params(3.3e6, "llama")
    assert shape_for_params(12345, "gpt2") == shape_for_params(12345.0, "gpt2")


def test_params_for_shape_is_the_inverse():
    cfg = ModelConfig(family="gpt2", n_layer=2, d_model=64, n_heads=4, seq_len=32, vocab_size=256)
    assert params_for_shape(cfg) == 2 * (4 * 64 * 64 + 2 * 64 * 256) + 5 * 64 == 98624
    assert params_for_shape(cfg, count="total") == 98624 + 256 * 64 + 32 * 64
    for n in [2e4, 5e5, 3e7, 4e9]:
        cfg = shape_for_params(n, "llama")
        assert math.isclose(params_for_shape(cfg), n, rel_tol=0.05)
        assert shape_for_params(params_for_shape(cfg), "llama") == cfg  # an exact count maps back to its own shape


def test_ladder_is_increasing():
    shapes = ladder(1e5, 1e8, 7, family="gpt2")
    counts = [params_for_shape(cfg) for cfg in shapes]
    assert len(shapes) == 7 and counts == sorted(counts)
    assert math.isclose(counts[0], 1e5, rel_tol=0.05) and math.isclose(counts[-1], 1e8, rel_tol=0.05)


@pytest.mark.parametrize("bad", [0, -5.0, float("nan"), float("inf"), "1e6", True, None])
def test_bad_targets_name_n_params(bad):
    with pytest.raises(ConfigError, match="^n_params"):
        shape_for_params(bad)


def test_other_bad_arguments_name_their_field():
    with pytest.raises(ConfigError, match="^n_params"):
        shape_for_params(5, "gpt2")  # the smallest shape (1 layer, d_model 2) has 46 params
    with pytest.raises(ConfigError, match="^family"):
        shape_for_params(1e6, "bert")
    with pytest.raises(ConfigError, match="^count"):
        shape_for_params(1e6, count="everything")
    with pytest.raises(ConfigError, match="^count"):
        params_for_shape(ModelConfig(), count="everything")
    with pytest.raises(ConfigError, match="^n_kv_heads_ratio"):
        shape_for_params(1e6, "gpt2", n_kv_heads_ratio=2)
    with pytest.raises(ConfigError, match="^head_dim"):
        shape_for_params(1e6, "llama", head_dim=15)
    with pytest.raises(ConfigError, match="^aspect_ratio"):
        shape_for_params(1e6, aspect_ratio=0)
    with pytest.raises(ConfigError, match="^max_params"):
        ladder(1e6, 1e5, 3)


def test_a_target_beyond_the_ladders_range_is_refused_at_once():
    from scaling.ladder import MAX_PARAMS

    with pytest.raises(ConfigError, match="^n_params: expected at most"):
        shape_for_params(1e300)
    assert params_for_shape(shape_for_params(MAX_PARAMS / 10)) == pytest.approx(MAX_PARAMS / 10, rel=0.05)
