"""How a model is run, applied to it from outside (as torchtitan's `parallelize` does): compilation and DDP.

The model files (`gpt2.py`, `llama.py`) know nothing of either. `parallelize` returns the module the training step
calls; the original module keeps the parameters, so the optimizer, checkpoints and evaluation use it directly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from scaling.distributed import DistEnv
from scaling.runconfig import TrainConfig


def parallelize(model: nn.Module, train: TrainConfig, dist: DistEnv | None = None) -> nn.Module:
    """`model` compiled when `train.compile`, then wrapped in DDP when `dist` has several ranks.

    The model must already sit on its device (DDP pins CUDA ranks to it). Gradients are all-reduced by DDP; the
    training step skips that on all but the last micro-batch (`no_sync`).
    """
    step_model = torch.compile(model) if train.compile else model
    if dist is not None and dist.enabled:
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        step_model = DistributedDataParallel(step_model, device_ids=ids)
    return step_model
