"""Checkpoints of one run: `<out>/checkpoints/ckpt_<step>.pt`, written atomically, loaded with weights_only=True.

A checkpoint is a dict of tensors and plain Python values: `step` (optimizer steps done; the data position, since
batches are a pure function of the step), `model`, `optimizer`, `rng` (torch, cuda, numpy, python states as
tensors/lists) and `state` (the trainer's running values). The newest `keep` checkpoints are kept; when the newest
cannot be read, a warning goes to stderr and the one before it is used.
"""

from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path

import numpy as np
import torch

CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def list_checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every finished checkpoint in `out/checkpoints`, oldest first."""
    d = checkpoint_dir(out)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_RE.match(p.name))]
    return sorted(found)


def save_checkpoint(out: str | Path, payload: dict, keep: int = 2) -> Path:
    """Write `payload` (must hold `step`) as ckpt_<step>.pt via a temp file and os.replace; keep the newest `keep`."""
    d = checkpoint_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt_{int(payload['step'])}.pt"
    tmp = d / f".{path.name}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for _, old in list_checkpoints(out)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(out: str | Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The newest readable checkpoint, or None. Unreadable ones are reported on stderr and skipped."""
    for step, path in reversed(list_checkpoints(out)):
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
            if int(payload["step"]) != step:
                raise ValueError(f"holds step {payload['step']}")
            return payload
        except Exception as e:  # noqa: BLE001 - a torn or corrupt file: fall back to the previous checkpoint
            print(f"warning: checkpoint {path} is unreadable ({type(e).__name__}: {e}); trying an older one",
                  file=sys.stderr)
    return None


def remove_temp_files(out: str | Path) -> None:
    """Delete temp files left by a process killed while writing a checkpoint."""
    d = checkpoint_dir(out)
    if d.is_dir():
        for p in d.glob(".ckpt_*.tmp*"):
            p.unlink(missing_ok=True)


def rng_state() -> dict:
    """The torch, cuda, numpy and python RNG states as tensors and lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state()` captured."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
