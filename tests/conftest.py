"""Shared fixtures: tiny sweep specs, and the `slurm` marker's auto-skip.

Tests marked `slurm` run only when `sbatch` is on PATH and the cluster answers (`sinfo`); start one with
`.ci/slurm.sh install && .ci/slurm.sh start`. SLURM_CONF defaults to the one .ci/slurm.sh writes
($SLURM_CI_DIR/etc/slurm.conf, SLURM_CI_DIR=/tmp/slurm_ci) when that file exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import small_spec_text, tiny_spec_text

_CI_CONF = Path(os.environ.get("SLURM_CI_DIR", "/tmp/slurm_ci")) / "etc" / "slurm.conf"
if "SLURM_CONF" not in os.environ and _CI_CONF.is_file():
    os.environ["SLURM_CONF"] = str(_CI_CONF)


def write_spec(path: Path, *, name: str = "tiny", seeds=(0, 1, 2, 3), budget: float = 1.5e9,
               checkpoint_every: int = 5, eval_every: int = 10, max_concurrent: int = 2,
               batch_range: float = 4.0) -> Path:
    """A sweep of byte-level GPT-2 2x32 (seq 32, batch 8) runs, one per seed; 1.5e9 FLOPs is 35 steps.

    The run ids depend only on the run configs, so specs that differ only in `seeds` share runs.
    """
    path.write_text(tiny_spec_text(name=name, budgets=[budget], grid=f"batch_range = {batch_range}", train=f"""\
seeds = {list(seeds)}
checkpoint_every = {checkpoint_every}""", sections=f"""\
[eval]
every = {eval_every}
tokens = 2048
[resources]
cpus = 1
mem_gb = 1
time_min = 20
[backend.local]
max_concurrent = {max_concurrent}
threads_per_run = 1"""))
    return path


@pytest.fixture
def python_sigint():
    """SIGINT handled by Python's KeyboardInterrupt handler for the test, as in a foreground terminal, even where the
    test run was started in the background (where a shell leaves SIGINT ignored, and children inherit that); a child
    started meanwhile gets SIGINT's default action and so its own handler. The old handler afterwards."""
    import signal

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (tiny models run fastest so, and the CPU is shared with other tests)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_spec():
    """`write_spec(path, *, name, seeds, budget, checkpoint_every, eval_every, max_concurrent, batch_range) -> path`."""
    return write_spec


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """A small isoFLOP sweep spec (helpers.small_spec_text: 2 budgets x 3 models) written into tmp_path."""
    path = tmp_path / "small.toml"
    path.write_text(small_spec_text())
    return path


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    """A 4-run sweep spec (one tiny model, seeds 0-3) in a temporary folder."""
    return write_spec(tmp_path / "tiny.toml")


def slurm_up() -> bool:
    """sbatch and srun on PATH, and the controller answers."""
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], check=False, capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pytest_collection_modifyitems(config, items):
    if not any("slurm" in item.keywords for item in items) or slurm_up():
        return
    skip = pytest.mark.skip(reason="needs a running SLURM cluster (sbatch on PATH; see .ci/slurm.sh)")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)
