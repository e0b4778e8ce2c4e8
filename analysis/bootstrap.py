"""Bootstrap resampling indices shared by the analysis fits (seedable, optionally resampling whole groups)."""

from __future__ import annotations

import numpy as np

from scaling.errors import ConfigError


def bootstrap_indices(n: int, n_boot: int, seed: int = 0, groups=None) -> list[np.ndarray]:
    """Row indices of `n_boot` bootstrap resamples of `n` rows.

    Without `groups`, each resample draws `n` rows with replacement. With `groups` (one label per row, e.g. the
    FLOP budget of each run), each resample draws as many groups as there are distinct labels, with replacement,
    and keeps every row of each drawn group, so a resample may hold a different number of rows than `n`.
    The same (n, n_boot, seed, groups) always gives the same indices.
    """
    if n < 1:
        raise ConfigError("n", "at least one row to resample", n)
    if n_boot < 0:
        raise ConfigError("n_boot", "a non-negative number of bootstrap resamples", n_boot)
    rng = np.random.default_rng(seed)
    if groups is None:
        return [rng.integers(0, n, size=n) for _ in range(n_boot)]
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise ConfigError("groups", f"one group label per row ({n} labels)", labels.shape)
    _, inverse = np.unique(labels, return_inverse=True)
    # rows of each group in row order, in one sort (linear in rows, not rows x groups)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    out = []
    for _ in range(n_boot):
        picked = rng.integers(0, len(members), size=len(members))
        out.append(np.concatenate([members[g] for g in picked]))
    return out
