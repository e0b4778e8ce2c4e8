"""Helpers shared by several test modules (imported as `from helpers import ...`; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import time


def small_spec_text(budgets: str = "[1e11, 3e11]", models_per_budget: int = 3, spread: float = 4.0) -> str:
    """A planning-only spec (byte-level GPT-2, seq 32, head_dim 8, batch 4) named "small"."""
    return f"""
name = "small"
[model]
family = "gpt2"
seq_len = 32
head_dim = 8
[budgets]
values = {budgets}
[grid]
models_per_budget = {models_per_budget}
spread = {spread}
[train]
batch_size = 4
"""


def wait_for(predicate, timeout: float = 120.0, poll: float = 0.01):
    """Poll `predicate` until it returns something truthy (returned), or raise TimeoutError after `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError("condition not met")
