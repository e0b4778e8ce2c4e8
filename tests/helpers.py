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


def tiny_spec_text(*, name: str = "tiny", budgets=(1.5e9,), grid: str = "", train: str = "", sections: str = "") -> str:
    """A sweep of one byte-level GPT-2 2x32 model (24,576 params; seq 32, batch 8, lr 3e-3, CPU) per budget: 1.5e9
    FLOPs is 35 steps. `grid` and `train` add lines to those sections; `sections` adds whole sections."""
    return f"""\
name = "{name}"
[model]
family = "gpt2"
seq_len = 32
head_dim = 16
aspect_ratio = 16
[budgets]
values = {list(budgets)}
[grid]
sizes = [24576]
min_steps = 10
{grid}
[train]
lr = 3e-3
batch_size = 8
device = "cpu"
{train}
{sections}
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


def running_pid(store, run_id: str) -> int | None:
    """The pid of the run's attempt once it is mid-run (a checkpoint written, no summary yet), else None."""
    run_dir = store.run_dir(run_id)
    if not list((run_dir / "checkpoints").glob("ckpt_*.pt")) or (run_dir / "summary.json").exists():
        return None
    attempts = store.attempts(run_id)
    return attempts[-1]["pid"] if attempts and attempts[-1]["status"] == "running" else None

