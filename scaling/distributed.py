"""Several training processes (torchrun): the rank/world environment, the process group, the device of each rank,
and the few collective decisions the trainer makes (mean loss, "did any rank see a signal", "which checkpoint").

One process (WORLD_SIZE unset or 1) needs no process group; every method then does the single-process thing.
Backends: gloo on CPU, nccl on CUDA. Rank 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from scaling.errors import ConfigError


@dataclass
class DistEnv:
    """The torchrun environment: rank, world size, local rank; `init` starts the process group when needed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when `init` started the group (so `close` ends it)

    @classmethod
    def from_env(cls) -> DistEnv:
        """Read RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them (defaults: one process)."""
        env = os.environ
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the run's files."""
        return self.rank == 0

    def init(self, device: str) -> None:
        """Start the process group (nccl for CUDA runs, else gloo) unless one process or one is running already."""
        if self.enabled and not tdist.is_initialized():
            cuda = device != "cpu" and torch.cuda.is_available()
            tdist.init_process_group(backend="nccl" if cuda else "gloo")
            self.owns_group = True

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def close(self) -> None:
        if self.owns_group:
            tdist.destroy_process_group()
            self.owns_group = False

    def broadcast(self, value: object) -> object:
        """Rank 0's `value` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, loss: torch.Tensor, signum: int | None, flag: bool) -> tuple[float, int | None, bool]:
        """The mean loss over ranks, the largest signal number any rank saw, and whether any rank raised `flag`."""
        if not self.enabled:
            return loss.item(), signum, flag
        mean = loss.detach().double().reshape(1)
        flags = torch.tensor([float(signum or 0), float(flag)], dtype=torch.float64, device=loss.device)
        tdist.all_reduce(mean)
        tdist.all_reduce(flags, op=tdist.ReduceOp.MAX)
        return mean.item() / self.world_size, int(flags[0].item()) or None, bool(flags[1].item())


def pick_device(name: str, dist: DistEnv) -> torch.device:
    """'auto' → cuda when available, else cpu; under DDP on CUDA, this rank's local GPU (made current)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("train.device", "'cpu' or 'auto' (CUDA is not available here)", name)
        if dist.enabled:
            name = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)
