"""Two CPU processes (torchrun, gloo) train the same run as one process.

Each rank reads half of the global batch (batch_at(rank, world_size)) and DDP averages the gradients, so the math
equals the single-process run up to the order of float reductions: the final val loss must agree to 1e-4 relative.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed

from scaling.checkpoint import list_checkpoints
from scaling.train import load_run_config, train

REPO = Path(__file__).resolve().parents[1]
ARGS = ["model.n_layer=2", "model.d_model=32", "model.n_heads=2", "model.seq_len=32", "train.batch_size=8",
        "train.micro_batch_size=2", "train.steps=12", "eval.every=6", "eval.tokens=512"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"class C{i}:\n    value = {i * 37 % 101}\n\n" for i in range(4000)))
    cache = tmp_path / "cache"
    monkeypatch.setenv("SCALING_CACHE", str(cache))
    single = train(load_run_config(None, [*ARGS, f"data.corpus={corpus}", f"out={tmp_path / 'one'}"]),
                   progress=False, num_threads=1)

    out = tmp_path / "two"
    env = dict(os.environ, SCALING_CACHE=str(cache), SCALING_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "scaling.commands", "train", *ARGS, f"data.corpus={corpus}",
           f"out={out}", "-q"]
    proc = subprocess.run(cmd, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2 and single["world_size"] == 1
    assert summary["tokens"] == single["tokens"] == 12 * 8 * 32
    assert summary["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [6, 12]  # rank 0 alone writes


@pytest.mark.slow
def test_two_gloo_processes_resume_a_single_process_checkpoint(tmp_path, monkeypatch):
    """Rank 0 picks the checkpoint (setting aside a torn newer one) and broadcasts it; rank 1 loads the same file."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"class C{i}:\n    value = {i * 37 % 101}\n\n" for i in range(4000)))
    cache = tmp_path / "cache"
    monkeypatch.setenv("SCALING_CACHE", str(cache))
    args = [*ARGS, "train.checkpoint_every=4", "train.keep_checkpoints=3", f"data.corpus={corpus}"]
    single = train(load_run_config(None, [*args, f"out={tmp_path / 'one'}"]), progress=False, num_threads=1)

    def stop_at_9(step: int, loss: float) -> None:
        if step == 9:
            raise RuntimeError("stopped for the test")

    out = tmp_path / "two"
    failed = train(load_run_config(None, [*args, f"out={out}"]), progress=False, num_threads=1, on_step=stop_at_9)
    assert failed["status"] == "failed" and [s for s, _ in list_checkpoints(out)] == [4, 8]
    newest = dict(list_checkpoints(out))[8]
    newest.write_bytes(newest.read_bytes()[:500])  # torn: both ranks must fall back to step 4

    env = dict(os.environ, SCALING_CACHE=str(cache), SCALING_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "scaling.commands", "train", *args, f"out={out}", "-q"]
    proc = subprocess.run(cmd, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count("ckpt_8.pt cannot be used") == 1  # rank 0 alone reads and sets aside
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2 and summary["steps"] == 12
    assert summary["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [6, 12]  # the step-6 line of the stopped run was cut back, then rewritten
