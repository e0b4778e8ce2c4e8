"""Shape ladder: turn a target parameter count into a concrete model shape (n_layer, d_model, n_heads, d_ff).

The rule (deterministic):
1. Aspect ratio: d_model ~ aspect_ratio * n_layer with `aspect_ratio = 64` by default. 64 is GPT-2 small / GPT-3 125M
   (768 / 12) and most of Chinchilla's small and mid models (512 / 8, 640 / 10, ...); Kaplan et al. 2020 (Fig. 5)
   found loss within a few percent over aspect ratios 20-200 at fixed N, so the exact value matters little, but a
   fixed one keeps the ladder a one-parameter family. With N ~ 12 n_layer d_model^2 this gives the guide width
   d_guide = (N * aspect_ratio / 12) ** (1/3).
2. Head size fixed per target: `head_dim = 64` once d_guide >= 512 (GPT-2, Llama, Chinchilla); below that the power of
   two at or under d_guide / 8 (about eight heads), never under 4. d_model is a multiple of head_dim * n_kv_heads_ratio
   (so n_heads splits into the KV groups).
3. d_ff is the family default (4 d_model for gpt2; 8/3 d_model rounded up to a multiple of 32 for llama).
4. Search: for every n_layer from 1/4 to 4x the guide depth d_guide / aspect_ratio (at least 1..4), the two d_model
   multiples bracketing the target (bisection on the exact count from `count_params`). Among candidates within
   FIT_TOLERANCE (2%) of the target, take the one whose aspect ratio is nearest the rule (in log), ties to the smaller
   error. If none is that close, retry with head_dim halved (down to 2; not when head_dim is given).
   With `n_layer` given (a fixed-depth ladder), the shape varies by width alone: the d_model multiple (of head_dim,
   given or from rule 2) whose count at the family's default d_ff is nearest the target (in log), so every shape
   keeps the same depth and MLP ratio. The target is then met only to within half a width step (at most
   FIXED_DEPTH_MAX_ERROR, 30%), which the sweeps' isoFLOP grids accept (they compute D from the realized N). With
   `n_heads` also given, the head count is fixed and head_dim = d_model / n_heads grows with the width (on a CPU,
   attention's cost grows with the number of heads: 2 heads train 2-3x faster than 2-wide heads at d_model 16-32).
   Tiny models (~1e3-1e5 params) need this for smooth isoFLOP curves: there the rule's depth jumps between
   neighbouring sizes (1 vs 3 layers), and d_ff moved to land a target, change the loss more than the size does.
5. Last resort (only tiny models, below ~1e5 params, where d_model steps are coarse): take the closest candidate and move
   its d_ff (by at most 25%) so the count lands on the target. If it still misses by more than MAX_REL_ERROR (5%),
   raise ConfigError naming `n_params`.
Measured (non-embedding, 1e4 to 1e10 params every 1/128 decade): worst miss 2.0% for both gpt2 and llama, d_ff moved
from its default only below 1e5 params and then by at most 8%.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from scaling.accounting import count_params
from scaling.config import FAMILIES, ModelConfig
from scaling.errors import ConfigError

DEFAULT_ASPECT_RATIO = 64.0  # d_model / n_layer
FIT_TOLERANCE = 0.02  # candidates this close to the target compete on aspect ratio
MAX_REL_ERROR = 0.05  # the largest miss accepted before raising
MAX_D_FF_CHANGE = 0.25  # the most d_ff may move from the family default to land a tiny target
FIXED_DEPTH_MAX_ERROR = 0.3  # the largest miss of a fixed-depth ladder (half a width step; see rule 4)
COUNTS = ("non_embedding", "total", "embedding")
MAX_PARAMS = 1e14  # the largest target searched: the candidate search grows with N^(1/3) (hostile input stays bounded)


def guide_width(n_params: float, aspect_ratio: float = DEFAULT_ASPECT_RATIO) -> float:
    """d_model from N = 12 n_layer d_model^2 with d_model = aspect_ratio * n_layer (a real number, a guide only)."""
    return (n_params * aspect_ratio / 12.0) ** (1.0 / 3.0)


def default_head_dim(n_params: float, aspect_ratio: float = DEFAULT_ASPECT_RATIO) -> int:
    """64 from a guide width of 512 up; below, the power of two at or under d_guide / 8 (about 8 heads), at least 4."""
    width = guide_width(n_params, aspect_ratio)
    if width >= 512:
        return 64
    return max(4, 2 ** math.floor(math.log2(width / 8))) if width >= 32 else 4


def params_for_shape(cfg: ModelConfig, count: str = "non_embedding") -> int:
    """Parameters (params) of `cfg` under `count` ("non_embedding", "total" or "embedding"), from `count_params`."""
    if count not in COUNTS:
        raise ConfigError("count", f"one of {COUNTS}", count)
    return count_params(cfg)[count]


def shape_for_params(
    n_params: float,
    family: str = "gpt2",
    *,
    head_dim: int | None = None,
    aspect_ratio: float = DEFAULT_ASPECT_RATIO,
    seq_len: int = 256,
    vocab_size: int = 256,
    count: str = "non_embedding",
    n_kv_heads_ratio: int = 1,
    n_layer: int | None = None,
    n_heads: int | None = None,
) -> ModelConfig:
    """The shape whose `count` params are nearest `n_params` under the module's aspect-ratio rule.

    head_dim: None picks `default_head_dim(n_params, aspect_ratio)`. n_kv_heads_ratio: query heads per KV head (llama
    GQA; 1 = plain multi-head). n_layer: fix the depth (rule 4's fixed-depth ladder: only d_model varies); n_heads
    (with n_layer, instead of head_dim): fix the number of heads too, so head_dim grows with the width. Returns a
    validated ModelConfig, d_ff at the family default except as in rule 5.
    Raises ConfigError for bad arguments, or naming `n_params` when no shape lands within 5% of it.
    """
    _check_positive_number("n_params", n_params)
    if n_params > MAX_PARAMS:
        raise ConfigError("n_params", f"at most {MAX_PARAMS:.0e} params (beyond that no shape is searched)", n_params)
    _check_positive_number("aspect_ratio", aspect_ratio)
    if family not in FAMILIES:
        raise ConfigError("family", f"one of {FAMILIES}", family)
    if count not in ("non_embedding", "total"):
        raise ConfigError("count", "one of ('non_embedding', 'total')", count)
    _check_positive_int("n_kv_heads_ratio", n_kv_heads_ratio)
    if n_layer is not None:
        _check_positive_int("n_layer", n_layer)
    if n_heads is not None:
        _check_positive_int("n_heads", n_heads)
        if n_layer is None or head_dim is not None:
            raise ConfigError("n_heads", "used with n_layer (a fixed-depth ladder) and without head_dim", n_heads)
        if n_heads % n_kv_heads_ratio:
            raise ConfigError("n_heads", f"a multiple of n_kv_heads_ratio ({n_kv_heads_ratio})", n_heads)
    if family == "gpt2" and n_kv_heads_ratio != 1:
        raise ConfigError("n_kv_heads_ratio", "1 for family 'gpt2' (no grouped-query attention)", n_kv_heads_ratio)
    explicit_head_dim = head_dim is not None
    if head_dim is None:
        head_dim = default_head_dim(n_params, aspect_ratio)
    _check_positive_int("head_dim", head_dim)
    if family == "llama" and head_dim % 2:
        raise ConfigError("head_dim", "an even number for rotary embeddings", head_dim)
    _check_positive_int("seq_len", seq_len)
    _check_positive_int("vocab_size", vocab_size)

    if n_layer is not None:
        return _fixed_depth_shape(n_params, family, n_layer, None if n_heads else head_dim, n_heads, seq_len,
                                  vocab_size, count, n_kv_heads_ratio)
    head_dims = [head_dim] if explicit_head_dim else _halvings(head_dim, 2)
    candidates: list[tuple[float, float, int, int, int]] = []  # (rel. error, aspect deviation, n_layer, d_model, hd)
    for hd in head_dims:
        found = _candidates(n_params, family, hd, aspect_ratio, seq_len, vocab_size, count, n_kv_heads_ratio)
        close = [c for c in found if c[0] <= FIT_TOLERANCE]
        if close:
            _, _, n_layer, d_model, hd = min(close, key=lambda c: (c[1], c[0], c[2]))
            return _shape(family, n_layer, d_model, hd, seq_len, vocab_size, n_kv_heads_ratio).validate()
        candidates += found
    if not candidates:
        raise ConfigError("n_params", f"a target some shape reaches with count={count!r}", n_params)
    _, _, n_layer, d_model, hd = min(candidates)
    cfg = _tuned_d_ff(_shape(family, n_layer, d_model, hd, seq_len, vocab_size, n_kv_heads_ratio), n_params, count)
    err = abs(count_params(cfg)[count] / n_params - 1)
    if err > MAX_REL_ERROR:
        raise ConfigError(
            "n_params",
            f"a target within {MAX_REL_ERROR:.0%} of some shape (head_dim in {head_dims}, count={count!r}); the "
            f"nearest has {count_params(cfg)[count]} params",
            n_params,
        )
    return cfg.validate()


def _fixed_depth_shape(n_params: float, family: str, n_layer: int, head_dim: int | None, n_heads: int | None,
                       seq_len: int, vocab_size: int, count: str, n_kv_heads_ratio: int) -> ModelConfig:
    """Rule 4's fixed-depth ladder: the width whose count (default d_ff) is nearest n_params in log; widths are
    multiples of head_dim (heads grow with the width) or, with n_heads fixed, of n_heads (x2 for llama's rotary)."""
    if n_heads is not None:
        step = n_heads * (2 if family == "llama" else 1)

        def make(d: int) -> ModelConfig:
            return _shape(family, n_layer, d, d // n_heads, seq_len, vocab_size, n_kv_heads_ratio)
    else:
        step = head_dim * n_kv_heads_ratio

        def make(d: int) -> ModelConfig:
            return _shape(family, n_layer, d, head_dim, seq_len, vocab_size, n_kv_heads_ratio)

    ks = _bracketing_multiples(lambda k: count_params(make(k * step))[count], n_params)
    if not ks:
        raise ConfigError("n_params", f"a target some {n_layer}-layer shape reaches", n_params)
    best = min((make(k * step) for k in ks), key=lambda c: abs(math.log(count_params(c)[count] / n_params)))
    if abs(count_params(best)[count] / n_params - 1) > FIXED_DEPTH_MAX_ERROR:
        heads = f"n_heads {n_heads}" if n_heads is not None else f"head_dim {head_dim}"
        raise ConfigError("n_params", f"a target within {FIXED_DEPTH_MAX_ERROR:.0%} of some {n_layer}-layer shape "
                          f"({heads}, count={count!r}); the nearest has {count_params(best)[count]} params", n_params)
    return best.validate()


def _tuned_d_ff(cfg: ModelConfig, n_params: float, count: str) -> ModelConfig:
    """`cfg` with d_ff moved (by at most MAX_D_FF_CHANGE) so its count lands nearest n_params; counts are affine in
    d_ff at fixed n_layer and d_model."""
    n = count_params(cfg)[count]
    per_unit = count_params(dataclasses.replace(cfg, d_ff=cfg.d_ff + 1))[count] - n
    d_ff = round(cfg.d_ff + (n_params - n) / per_unit)
    d_ff = min(max(d_ff, math.ceil(cfg.d_ff * (1 - MAX_D_FF_CHANGE))), math.floor(cfg.d_ff * (1 + MAX_D_FF_CHANGE)))
    return dataclasses.replace(cfg, d_ff=d_ff)


def _shape(
    family: str, n_layer: int, d_model: int, head_dim: int, seq_len: int, vocab_size: int, n_kv_heads_ratio: int
) -> ModelConfig:
    n_heads = d_model // head_dim
    return ModelConfig(
        family=family, n_layer=n_layer, d_model=d_model, n_heads=n_heads, n_kv_heads=n_heads // n_kv_heads_ratio,
        seq_len=seq_len, vocab_size=vocab_size,
    )


def _candidates(
    n_params: float, family: str, head_dim: int, aspect_ratio: float, seq_len: int, vocab_size: int, count: str,
    n_kv_heads_ratio: int,
) -> list[tuple[float, float, int, int, int]]:
    """(relative error, |log aspect deviation|, n_layer, d_model, head_dim) of the d_model multiples bracketing the
    target at each depth from 1/4 to 4x the guide depth."""
    step = head_dim * n_kv_heads_ratio
    guide_layers = guide_width(n_params, aspect_ratio) / aspect_ratio
    found = []
    for n_layer in range(max(1, math.floor(guide_layers / 4)), max(4, math.ceil(4 * guide_layers)) + 1):
        shape_at = functools.partial(_shape, family, n_layer, head_dim=head_dim, seq_len=seq_len,
                                     vocab_size=vocab_size, n_kv_heads_ratio=n_kv_heads_ratio)

        def params_at(k: int, shape_at=shape_at) -> int:
            return count_params(shape_at(d_model=k * step))[count]

        for k in _bracketing_multiples(params_at, n_params):
            aspect_dev = abs(math.log(k * step / n_layer / aspect_ratio))
            found.append((abs(params_at(k) / n_params - 1), aspect_dev, n_layer, k * step, head_dim))
    return found


def _halvings(start: int, smallest: int) -> list[int]:
    """start, start/2, ... down to `smallest` while even: the head sizes tried in turn."""
    sizes = [start]
    while sizes[-1] % 2 == 0 and sizes[-1] // 2 >= smallest:
        sizes.append(sizes[-1] // 2)
    return sizes


def ladder(min_params: float, max_params: float, n: int, family: str = "gpt2", **kwargs) -> list[ModelConfig]:
    """Shapes for `n` targets log-spaced from min_params to max_params (inclusive); repeated shapes are dropped.

    kwargs go to `shape_for_params` (head_dim, aspect_ratio, seq_len, vocab_size, count, n_kv_heads_ratio).
    """
    _check_positive_number("min_params", min_params)
    _check_positive_number("max_params", max_params)
    _check_positive_int("n", n)
    if max_params < min_params:
        raise ConfigError("max_params", f"at least min_params ({min_params})", max_params)
    ratio = (max_params / min_params) ** (1.0 / (n - 1)) if n > 1 else 1.0
    shapes: list[ModelConfig] = []
    for i in range(n):
        cfg = shape_for_params(min_params * ratio**i, family, **kwargs)
        if not shapes or cfg != shapes[-1]:
            shapes.append(cfg)
    return shapes


def _bracketing_multiples(params_at, target: float, k_max: int = 1 << 20) -> list[int]:
    """The k with params_at(k) just below and just at/above target (params_at increases with k >= 1)."""
    if params_at(1) >= target:
        return [1]
    lo, hi = 1, 2  # invariant: params_at(lo) < target
    while params_at(hi) < target:
        lo, hi = hi, hi * 2
        if hi > k_max:
            return []
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if params_at(mid) < target:
            lo = mid
        else:
            hi = mid
    return [lo, hi]


def _check_positive_number(field: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise ConfigError(field, "a positive finite number", value)


def _check_positive_int(field: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(field, "a positive integer", value)
