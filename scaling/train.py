"""Train one model for one budget: `train(cfg)` writes a run directory and returns its summary.

Run directory (`cfg.out`): `config.json` (the resolved config, written first), `metrics.jsonl` (one line per
evaluation), `checkpoints/ckpt_<step>.pt`, `summary.json` (written last, atomically).

Conventions:
- Budget: `train.steps`, or `train.tokens` D, or `train.flops` C converted to tokens with
  `flops_per_token(model, train.flop_convention)`. steps = round(D / (batch_size * seq_len)), the nearest integer
  (ties to even); a budget under one full batch is a ConfigError. The summary records the realized
  tokens = steps * batch_size * seq_len and flops = tokens * flops_per_token.
- Optimizer: AdamW (fused kernel where the device supports it). Weight decay applies to every parameter with
  dim >= 2 (the matmul weights and the embedding tables, as in nanoGPT), never to norms or biases.
- Precision: bf16 autocast on CUDA, fp32 on CPU.
- Divergence: a NaN/inf step loss, or after warmup a step loss above `divergence_factor` x the running minimum of
  the step losses so far, ends the run with status "diverged" (recorded, not raised).
- Failure: an exception while training ends the run with status "failed" and the error text in the summary; the
  summary is returned, not raised, and running `train` again resumes from the last checkpoint. Config errors are
  raised (as ConfigError) before anything is written.
- Resume: `train` on a directory with checkpoints continues from the newest readable one; on CPU the result equals
  an uninterrupted run's (batches are a pure function of the step). A directory whose summary is final
  (completed / diverged) returns that summary at once.
- Signals: SIGTERM / SIGUSR1 / SIGUSR2 finish the current optimizer step, write a checkpoint, then call the handler
  installed before `train` (e.g. submitit's requeue); if that returns, training goes on. With no previous handler
  (SIG_DFL / SIG_IGN) the process exits with status 143.
- Several processes (torchrun: WORLD_SIZE, RANK, LOCAL_RANK): DDP, gloo on CPU and nccl on CUDA, the global batch
  split evenly over the ranks, rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from scaling.checkpoint import (
    list_checkpoints,
    load_latest_checkpoint,
    remove_temp_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from scaling.errors import ConfigError
from scaling.runconfig import DEFAULT_TOKENS, RunConfig, batch_size_of, load_run_config
from scaling.schedule import Schedule

__all__ = ["RunConfig", "build_optimizer", "evaluate", "load_run_config", "resolve_run", "train", "train_step"]

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))
THREADS_ENV = "SCALING_NUM_THREADS"  # torch.set_num_threads for CPU runs (sweeps split the cores between runs)
FINAL_STATUSES = ("completed", "diverged")
DEFAULT_WARMUP_FRAC = 0.05


# ---------------------------------------------------------------------------------------------------- resolution


@dataclass
class ResolvedRun:
    """A validated config plus everything derived from it and the corpus."""

    cfg: RunConfig  # with model.vocab_size, train.batch_size, train.warmup_steps and eval.every filled in
    corpus: object  # scaling.data.Corpus
    steps: int
    batch_size: int  # sequences per optimizer step, all ranks together
    micro_batch_size: int  # sequences per forward pass on one rank
    batch_tokens: int
    warmup_steps: int
    schedule: Schedule
    flops_per_token: float  # under cfg.train.flop_convention
    world_size: int = 1


def resolve_run(cfg: RunConfig, world_size: int = 1) -> ResolvedRun:
    """Validate `cfg` against its corpus and derive the step count, batch and schedule. Writes nothing to `out`.

    Raises ConfigError for: any invalid field, a missing corpus, a model vocab below the tokenizer's, a batch not
    divisible over the ranks or micro-batches, a budget under one step, and a missing `out`.
    """
    from scaling.accounting import flops_per_token
    from scaling.data import prepare_corpus

    cfg = copy.deepcopy(cfg).validate()
    if not cfg.out:
        raise ConfigError("out", "a directory for the run's files (out=DIR)")
    d, t, m = cfg.data, cfg.train, cfg.model
    try:
        corpus = prepare_corpus(d.corpus, d.tokenizer, vocab_size=d.vocab_size)
    except FileNotFoundError as e:
        raise ConfigError("data.corpus", "an existing corpus path", d.corpus) from e
    if cfg.vocab_from_corpus:
        m.vocab_size = corpus.vocab_size
        cfg.vocab_from_corpus = False
    elif m.vocab_size < corpus.vocab_size:
        raise ConfigError("model.vocab_size", f"at least the tokenizer's vocabulary ({corpus.vocab_size})",
                          m.vocab_size)
    m.validate()
    if t.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device", "'cpu' or 'auto' (CUDA is not available here)", t.device)
    batch_size = batch_size_of(t, m)
    if batch_size % world_size:
        raise ConfigError("train.batch_size", f"a multiple of the number of processes ({world_size})", batch_size)
    micro = t.micro_batch_size or batch_size // world_size
    if (batch_size // world_size) % micro:
        raise ConfigError("train.micro_batch_size",
                          f"a divisor of the per-process batch ({batch_size // world_size} sequences)", micro)
    batch_tokens = batch_size * m.seq_len
    fpt = flops_per_token(m, t.flop_convention)
    steps = _budget_steps(t, batch_tokens, fpt)
    if t.warmup_steps is not None:
        warmup = t.warmup_steps
    else:
        warmup = round((t.warmup_frac if t.warmup_frac is not None else DEFAULT_WARMUP_FRAC) * steps)
    if warmup >= steps > 1:
        raise ConfigError("train.warmup_steps", f"fewer than the run's {steps} steps", warmup)
    if cfg.eval.tokens < m.seq_len:
        raise ConfigError("eval.tokens", f"at least model.seq_len ({m.seq_len})", cfg.eval.tokens)
    schedule = Schedule(lr=t.lr, steps=steps, warmup_steps=min(warmup, steps), kind=t.schedule,
                        min_lr_ratio=t.min_lr_ratio, decay_steps=max(1, round(t.decay_frac * steps)),
                        decay_shape=t.decay_shape)
    t.batch_size, t.batch_tokens = batch_size, None
    t.warmup_steps, t.warmup_frac = schedule.warmup_steps, None
    cfg.eval.every = cfg.eval.every or max(1, math.ceil(steps / 10))
    return ResolvedRun(cfg=cfg, corpus=corpus, steps=steps, batch_size=batch_size, micro_batch_size=micro,
                       batch_tokens=batch_tokens, warmup_steps=schedule.warmup_steps, schedule=schedule,
                       flops_per_token=fpt, world_size=world_size)


def _budget_steps(t, batch_tokens: int, fpt: float) -> int:
    """Optimizer steps for the budget: round(tokens / batch_tokens); ConfigError below one full batch."""
    if t.steps is not None:
        return t.steps
    if t.flops is not None:
        tokens, name, unit = t.flops / fpt, "train.flops", f"{batch_tokens * fpt:.4g} FLOPs"
    else:
        tokens = t.tokens if t.tokens is not None else DEFAULT_TOKENS
        name, unit = "train.tokens", f"{batch_tokens} tokens"
    if tokens < batch_tokens:
        got = t.flops if t.flops is not None else tokens
        raise ConfigError(name, f"a budget of at least one optimizer step ({unit})", got)
    return round(tokens / batch_tokens)


# ---------------------------------------------------------------------------------------------------- the step


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: tensors with dim >= 2 (matmul weights, embeddings) decay; norms and biases do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over `param_groups`, with the fused kernel when the parameters' device supports it."""
    groups = param_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing (fp32) elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    grad_clip: float = 0.0,
) -> torch.Tensor:
    """One optimizer step over the micro-batches (gradient accumulation); returns the mean loss (nats/token, 0-dim).

    Each micro-batch's mean cross-entropy is scaled by 1/len(micro_batches), so the gradient is that of the mean
    over the whole batch. Under DDP the gradient all-reduce runs only on the last micro-batch.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    n = len(micro_batches)
    total = None
    for i, (x, y) in enumerate(micro_batches):
        skip_sync = i < n - 1 and hasattr(model, "no_sync")
        with model.no_sync() if skip_sync else contextlib.nullcontext(), autocast_for(x.device):
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        (loss / n).backward()
        total = loss.detach() if total is None else total + loss.detach()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / n


@torch.no_grad()
def evaluate(model: nn.Module, corpus, seq_len: int, max_tokens: int, batch_size: int, device: torch.device) -> float:
    """Mean cross-entropy (nats/token) over the fixed validation tokens `val_batches(corpus, seq_len, max_tokens)`."""
    from scaling.data import val_batches

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in val_batches(corpus, seq_len, max_tokens, batch_size):
        x, y = x.to(device), y.to(device)
        with autocast_for(device):
            logits = model(x)
        total += F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count


# ---------------------------------------------------------------------------------------------------- the run


def train(
    cfg: RunConfig,
    *,
    progress: bool = True,
    num_threads: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict:
    """Train the run `cfg` describes into `cfg.out` and return its summary (see the module docstring).

    progress: a progress bar on a TTY, a line every 10 s otherwise; False for silence (sweeps).
    num_threads: torch CPU threads for this run (else $SCALING_NUM_THREADS, else torch's default); restored after.
    on_step: called as on_step(steps_done, step_loss) after every optimizer step (monitoring, tests).
    """
    dist = DistEnv.from_env()
    run = resolve_run(cfg, dist.world_size)
    out = Path(run.cfg.out)
    stored = check_out_dir(out, run.cfg)
    if stored is not None and stored.get("status") in FINAL_STATUSES:
        return stored
    threads = num_threads or int(os.environ.get(THREADS_ENV) or 0)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    trainer = None
    try:
        dist.init(run.cfg.train.device)
        trainer = Trainer(run, dist, progress=progress and dist.rank == 0, on_step=on_step)
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.restore_signals()
        dist.close()
        torch.set_num_threads(old_threads)


def check_out_dir(out: Path, cfg: RunConfig) -> dict | None:
    """ConfigError if `out/config.json` holds a different run; the stored summary (or None) otherwise."""
    path = out / "config.json"
    if path.exists():
        try:
            stored = RunConfig.from_dict(json.loads(path.read_text())).identity()
        except (ValueError, OSError) as e:
            raise ConfigError("out", f"a new directory or one holding this run ({path} is unreadable: {e})") from None
        if stored != cfg.identity():
            diff = _first_difference(stored, cfg.identity())
            raise ConfigError("out", f"a new directory or one holding this run ({out} holds another config: {diff})")
    summary = out / "summary.json"
    if summary.exists():
        try:
            return json.loads(summary.read_text())
        except ValueError:
            return None
    return None


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            if va != vb:
                return _first_difference(va, vb, f"{prefix}{key}.")
        elif va != vb:
            return f"{prefix}{key} = {va!r} there, {vb!r} here"
    return "none"


@dataclass
class DistEnv:
    """The torchrun environment: rank, world size, local rank; `init` starts the process group when needed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @classmethod
    def from_env(cls) -> DistEnv:
        env = os.environ
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def init(self, device: str) -> None:
        import torch.distributed as tdist

        if self.enabled and not tdist.is_initialized():
            cuda = device != "cpu" and torch.cuda.is_available()
            tdist.init_process_group(backend="nccl" if cuda else "gloo")
            self.owns_group = True

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as tdist

            tdist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as tdist

            tdist.destroy_process_group()
            self.owns_group = False


def pick_device(name: str, dist: DistEnv) -> torch.device:
    """'auto' → cuda when available, else cpu; under DDP on CUDA, this rank's local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("train.device", "'cpu' or 'auto' (CUDA is not available here)", name)
        if dist.enabled:
            name = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


class Trainer:
    """The state of one training process: model, optimizer, run state, and the files it writes."""

    def __init__(self, run: ResolvedRun, dist: DistEnv, progress: bool, on_step=None):
        from scaling.accounting import all_flops_per_token, count_params
        from scaling.model import build_model

        self.plan, self.dist, self.on_step = run, dist, on_step
        self.cfg, self.t = run.cfg, run.cfg.train
        self.out = Path(self.cfg.out)
        self.is_writer = dist.rank == 0
        self.device = pick_device(self.t.device, dist)
        self.params = count_params(self.cfg.model)
        self.all_fpt = all_flops_per_token(self.cfg.model)
        torch.manual_seed(self.t.seed)
        self.model = build_model(self.cfg.model).to(self.device)
        self.optimizer = build_optimizer(self.model, self.t.lr, self.t.weight_decay, (self.t.beta1, self.t.beta2))
        self.step_model = torch.compile(self.model) if self.t.compile else self.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_model = DistributedDataParallel(self.step_model, device_ids=ids)
        self.state = {"step": 0, "elapsed_s": 0.0, "train_time_s": 0.0, "loss_sum": 0.0, "loss_count": 0,
                      "interval_tokens": 0, "interval_time_s": 0.0, "min_loss": math.inf, "last_loss": None,
                      "last_val_loss": None, "last_train_loss": None}
        self.progress = Progress(run.steps, enabled=progress)
        self.pending_signal: int | None = None
        self.old_handlers: dict[int, object] = {}
        self.session_start = time.perf_counter()
        self.last_ckpt_time = time.perf_counter()

    # -- files ------------------------------------------------------------------------------------------------
    def start_files(self) -> None:
        """Write config.json, load the newest checkpoint, drop metrics lines past it."""
        if self.is_writer:
            self.out.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(self.out / "config.json", self.cfg.to_dict())
            (self.out / "summary.json").unlink(missing_ok=True)  # a "failed" one: this attempt replaces it
            remove_temp_files(self.out)
        self.dist.barrier()
        payload = self._load_checkpoint()
        if payload is not None:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            set_rng_state(payload["rng"])
            self.state.update(payload["state"])
        if self.is_writer:
            _truncate_metrics(self.out / "metrics.jsonl", self.state["step"])

    def _load_checkpoint(self) -> dict | None:
        if not self.dist.enabled:
            return load_latest_checkpoint(self.out)
        import torch.distributed as tdist

        chosen = [None]
        if self.is_writer:
            payload = load_latest_checkpoint(self.out)
            chosen = [None if payload is None else int(payload["step"])]
        tdist.broadcast_object_list(chosen, src=0)
        if chosen[0] is None:
            return None
        path = dict(list_checkpoints(self.out))[chosen[0]]
        return torch.load(path, map_location="cpu", weights_only=True)

    def checkpoint(self) -> None:
        if self.is_writer:
            save_checkpoint(self.out, {"step": self.state["step"], "model": self.model.state_dict(),
                                       "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
                                       "state": dict(self.state, elapsed_s=self.elapsed())},
                            keep=self.t.keep_checkpoints)
        self.dist.barrier()
        self.last_ckpt_time = time.perf_counter()

    def log_metrics(self, val_loss: float) -> None:
        s = self.state
        train_loss = s["loss_sum"] / max(1, s["loss_count"])
        tokens = s["step"] * self.plan.batch_tokens
        line = {"step": s["step"], "tokens": tokens, "flops": tokens * self.plan.flops_per_token,
                "train_loss": train_loss, "val_loss": val_loss, "lr": self.plan.schedule(max(0, s["step"] - 1)),
                "tokens_per_s": s["interval_tokens"] / max(s["interval_time_s"], 1e-9),
                "elapsed_s": self.elapsed()}
        s.update(loss_sum=0.0, loss_count=0, interval_tokens=0, interval_time_s=0.0, last_val_loss=val_loss,
                 last_train_loss=train_loss)
        if self.is_writer:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(_finite(line)) + "\n")

    def elapsed(self) -> float:
        return self.state["elapsed_s"] + time.perf_counter() - self.session_start

    def summary(self, status: str, error: str | None = None) -> dict:
        s, r = self.state, self.plan
        tokens = s["step"] * r.batch_tokens
        out = {
            "status": status,
            "config": self.cfg.to_dict(),
            "params": self.params,
            "flops_per_token": self.all_fpt,
            "flop_convention": self.t.flop_convention,
            "tokens": tokens,
            "flops": tokens * r.flops_per_token,
            "steps": s["step"],
            "planned_steps": r.steps,
            "batch_size": r.batch_size,
            "batch_tokens": r.batch_tokens,
            "micro_batch_size": r.micro_batch_size,
            "warmup_steps": r.warmup_steps,
            "val_loss": s["last_val_loss"] if status == "completed" else None,
            "train_loss": s["last_train_loss"] if status == "completed" else s["last_loss"],
            "wall_time_s": self.elapsed(),
            "corpus_fingerprint": r.corpus.fingerprint,
            "tokens_per_s": tokens / max(s["train_time_s"], 1e-9),
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "torch": torch.__version__,
            "error": error,
        }
        return _finite(out)

    def finish(self, status: str, error: str | None = None) -> dict:
        summary = self.summary(status, error)
        if self.is_writer:
            _write_json_atomic(self.out / "summary.json", summary)
        self.dist.barrier()
        return summary

    # -- signals ----------------------------------------------------------------------------------------------
    def install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self.old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.pending_signal = signum

    def restore_signals(self) -> None:
        for sig, handler in self.old_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.old_handlers = {}

    def hand_off_signal(self, signum: int) -> None:
        """Call the handler that was installed before `train`; exit 143 if there was none. May not return."""
        old = self.old_handlers.get(signum)
        self.pending_signal = None
        if callable(old):
            old(signum, None)
        else:
            print(f"received signal {signum}: checkpoint written at step {self.state['step']}; exiting",
                  file=sys.stderr)
            raise SystemExit(143)

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.start_files()
        self.install_signals()
        while True:
            try:
                outcome, detail = self.loop()
            except Exception as e:  # noqa: BLE001 - recorded, not raised: a sweep retries failed runs
                self.progress.close()
                return self.finish("failed", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}")
            if outcome == "signal":
                self.hand_off_signal(detail)  # may exit or raise; if it returns, training goes on
                continue
            self.progress.close()
            return self.finish(outcome, detail)

    def loop(self) -> tuple[str, object]:
        """Train until the end, a divergence or a signal: ("completed"|"diverged", error) or ("signal", signum)."""
        from scaling.data import batch_at

        r, t, s = self.plan, self.t, self.state
        seq_len, micro = self.cfg.model.seq_len, r.micro_batch_size
        self.model.train()
        while s["step"] < r.steps:
            step = s["step"]
            t0 = time.perf_counter()
            x, y = batch_at(r.corpus.train, step, r.batch_size, seq_len, t.seed, self.dist.rank, self.dist.world_size)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            micro_batches = list(zip(x.split(micro), y.split(micro)))
            loss_t = train_step(self.step_model, self.optimizer, micro_batches, r.schedule(step), t.grad_clip)
            ckpt_due = t.checkpoint_seconds > 0 and time.perf_counter() - self.last_ckpt_time >= t.checkpoint_seconds
            loss, signum, ckpt_due = self._agree(loss_t, self.pending_signal, ckpt_due)
            dt = time.perf_counter() - t0
            s.update(step=step + 1, train_time_s=s["train_time_s"] + dt, interval_time_s=s["interval_time_s"] + dt,
                     interval_tokens=s["interval_tokens"] + r.batch_tokens, last_loss=loss,
                     loss_sum=s["loss_sum"] + loss, loss_count=s["loss_count"] + 1)
            self.progress.update(s["step"], loss, s["train_time_s"], r.batch_tokens)
            if self.on_step is not None:
                self.on_step(s["step"], loss)
            diverged = self._divergence(loss, step)
            if diverged:
                return "diverged", diverged
            s["min_loss"] = min(s["min_loss"], loss)
            if s["step"] % self.cfg.eval.every == 0 or s["step"] == r.steps:
                self.log_metrics(evaluate(self.model, r.corpus, seq_len, self.cfg.eval.tokens, micro, self.device))
            if not self.dist.enabled:
                signum = signum or self.pending_signal  # also one that arrived during the evaluation
            if s["step"] == r.steps:
                break  # done: the summary is the record; a signal now needs no checkpoint
            every = t.checkpoint_every > 0 and s["step"] % t.checkpoint_every == 0
            if every or ckpt_due or signum:
                self.checkpoint()
            if signum:
                return "signal", signum
        return "completed", None

    def _agree(self, loss_t: torch.Tensor, signum: int | None, ckpt_due: bool) -> tuple[float, int | None, bool]:
        """Under DDP: the mean loss over ranks, and a signal or a due checkpoint seen by any rank; else as given."""
        if not self.dist.enabled:
            return loss_t.item(), signum, ckpt_due
        import torch.distributed as tdist

        loss = loss_t.detach().double().reshape(1)
        flags = torch.tensor([float(signum or 0), float(ckpt_due)], dtype=torch.float64, device=self.device)
        tdist.all_reduce(loss)
        tdist.all_reduce(flags, op=tdist.ReduceOp.MAX)
        return loss.item() / self.dist.world_size, int(flags[0].item()) or None, bool(flags[1].item())

    def _divergence(self, loss: float, step: int) -> str | None:
        if not math.isfinite(loss):
            return f"diverged: non-finite loss {loss} at step {step + 1}"
        min_loss = self.state["min_loss"]
        if step >= self.plan.warmup_steps and loss > self.t.divergence_factor * min_loss:
            return (f"diverged: loss {loss:.4g} > divergence_factor {self.t.divergence_factor} x running minimum "
                    f"{min_loss:.4g} at step {step + 1}")
        return None


# ---------------------------------------------------------------------------------------------------- helpers


class Progress:
    """A one-line progress bar with tokens/s and ETA on a TTY; otherwise a log line at most every 10 s (stderr)."""

    def __init__(self, total: int, enabled: bool = True, stream=None, interval_s: float | None = None):
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval_s = interval_s if interval_s is not None else (0.2 if self.tty else 10.0)
        self.last = -math.inf
        self.drawn = False

    def update(self, step: int, loss: float, train_time_s: float, batch_tokens: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < self.interval_s and step < self.total):
            return
        self.last = now
        rate = step * batch_tokens / max(train_time_s, 1e-9)
        eta = (self.total - step) * batch_tokens / max(rate, 1e-9)
        text = f"step {step}/{self.total} loss {loss:.4f} {rate:,.0f} tok/s ETA {_hms(eta)}"
        if self.tty:
            width = 24
            filled = int(width * step / max(1, self.total))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}  ")
            self.drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _finite(obj):
    """Replace NaN/inf floats with None so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(_finite(obj), indent=1) + "\n")
    os.replace(tmp, path)


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the metrics lines up to `step` (the resumed checkpoint); drop later and torn ones."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)

