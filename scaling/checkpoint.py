"""Checkpoints of one run: `<out>/checkpoints/ckpt_<step>.pt`, written atomically, loaded with weights_only=True.

A checkpoint is a dict of tensors and plain Python values: `step` (optimizer steps done; the data position, since
batches are a pure function of the step), `model`, `optimizer`, `rng` (torch, cuda, numpy, python states as
tensors/lists), `state` (the trainer's `RunState`) and `corpus_fingerprint` (of the tokens it was trained on).
The newest `keep` checkpoints are kept. Loading takes the newest checkpoint that can be read and that fits the run
(`check` raises for one that does not, e.g. a model of another shape); each one passed over is reported on stderr
and renamed `ckpt_<step>.pt.rejected`, so it is kept for a look but never chosen, pruned in place of a good one,
or read again. With none left, the run starts from step 0.
"""

from __future__ import annotations

import os
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")
REJECTED_SUFFIX = ".rejected"  # a checkpoint that could not be used, kept beside the others


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


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """One checkpoint file (weights_only=True: tensors and plain values, never arbitrary objects)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest_checkpoint(
    out: str | Path,
    map_location: str | torch.device = "cpu",
    check: Callable[[dict], None] | None = None,
) -> dict | None:
    """The newest checkpoint that is readable and passes `check` (which raises for one that does not fit), or None.

    Each checkpoint passed over is reported on stderr and set aside as `ckpt_<step>.pt.rejected`.
    """
    for step, path in reversed(list_checkpoints(out)):
        try:
            payload = load_checkpoint(path, map_location)
            if not isinstance(payload, dict) or payload.get("step") != step:
                raise ValueError(f"holds step {payload.get('step') if isinstance(payload, dict) else payload!r}")
            if check is not None:
                check(payload)
            return payload
        except Exception as e:  # noqa: BLE001 - torn, corrupt or of another run: fall back to the previous one
            print(f"warning: checkpoint {path} cannot be used ({type(e).__name__}: {e}); {set_aside(path)}, "
                  f"trying an older one", file=sys.stderr)
    return None


def set_aside(path: Path) -> str:
    """Rename an unusable checkpoint to `<name>.rejected`; say what was done."""
    rejected = path.with_name(path.name + REJECTED_SUFFIX)
    try:
        os.replace(path, rejected)
    except OSError as e:
        return f"left in place (renaming it failed: {e})"
    return f"set aside as {rejected.name}"


def check_fits(payload: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """ValueError unless the checkpoint's model and optimizer tensors have exactly the names and shapes of these."""
    want = model.state_dict()
    got = payload["model"]
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise ValueError(f"model keys differ (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, tensor in want.items():
        if not isinstance(got[name], torch.Tensor) or got[name].shape != tensor.shape:
            shape = tuple(got[name].shape) if isinstance(got[name], torch.Tensor) else type(got[name]).__name__
            raise ValueError(f"model tensor {name} has shape {shape}, this run's is {tuple(tensor.shape)}")
    groups = payload["optimizer"]["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        raise ValueError("optimizer parameter groups differ from this run's")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for index, state in payload["optimizer"]["state"].items():
        if not 0 <= int(index) < len(params):
            raise ValueError(f"optimizer state for parameter {index}, this run has {len(params)}")
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[int(index)].shape:
                raise ValueError(f"optimizer state {key} of parameter {index} has shape {tuple(value.shape)}, "
                                 f"the parameter's is {tuple(params[int(index)].shape)}")


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
