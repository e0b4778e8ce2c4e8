"""Train one model for one budget: `train(cfg)` writes a run directory and returns its summary.

Run directory (`cfg.out`, see `scaling.runio`): `config.json` (the resolved config, written first), `metrics.jsonl`
(one line per evaluation), `checkpoints/ckpt_<step>.pt` (see `scaling.checkpoint`), `summary.json` (written last,
atomically).

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
- Resume: `train` on a directory with checkpoints continues from the newest one that is readable and fits the run
  (a torn file, or one whose tensors have other shapes, is set aside with a warning and the one before it is used;
  with none usable the run starts again from step 0, with a warning). On CPU the result equals an uninterrupted
  run's (batches are a pure function of the step). A checkpoint trained on other tokens (its corpus fingerprint
  differs from the corpus now) is refused with a ConfigError: resuming would mix two corpora in one run. A
  directory whose summary is final (completed / diverged) returns that summary at once.
- Signals: SIGTERM / SIGINT (Ctrl-C) / SIGUSR1 / SIGUSR2 finish the current optimizer step, write a checkpoint,
  then call the handler installed before `train` (submitit's requeue; for SIGINT Python's, which raises
  KeyboardInterrupt); if that returns, training goes on. With no previous handler (SIG_DFL / SIG_IGN) the process
  exits with status 143. A second Ctrl-C before the checkpoint is written stops at once; a process that ignores
  SIGINT (a background job) keeps ignoring it.
- Several processes (torchrun: WORLD_SIZE, RANK, LOCAL_RANK; see `scaling.distributed`): DDP applied by
  `scaling.parallelize`, the global batch split evenly over the ranks, rank 0 alone writes files.
- Tracking (`[tracking]`, off by default): the metrics lines and the summary also go to TensorBoard and/or W&B
  (`scaling.tracking`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
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

from scaling.accounting import all_flops_per_token, count_params, flops_per_token
from scaling.checkpoint import (
    check_fits,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    remove_temp_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from scaling.config import ModelConfig
from scaling.data import Corpus, batch_at, prepare_corpus, val_batches
from scaling.distributed import DistEnv, pick_device
from scaling.errors import ConfigError
from scaling.model import build_model
from scaling.parallelize import parallelize
from scaling.progress import Progress
from scaling.runconfig import DEFAULT_TOKENS, RunConfig, TrainConfig, batch_size_of, load_run_config
from scaling.runio import (
    CONFIG_FILE,
    FINAL_STATUSES,
    SUMMARY_FILE,
    append_metrics,
    check_out_dir,
    finite,
    truncate_metrics,
    write_json,
)
from scaling.schedule import Schedule
from scaling.tracking import Tracking, open_tracking, run_summary

__all__ = ["RunConfig", "RunState", "build_optimizer", "evaluate", "load_run_config", "resolve_run",
           "time_train_steps", "train", "train_step"]

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")
                if hasattr(signal, name))
THREADS_ENV = "SCALING_NUM_THREADS"  # torch.set_num_threads for CPU runs (sweeps split the cores between runs)
DEFAULT_WARMUP_FRAC = 0.05


# ---------------------------------------------------------------------------------------------------- resolution


@dataclass
class ResolvedRun:
    """A validated config plus everything derived from it and the corpus."""

    cfg: RunConfig  # with model.vocab_size, train.batch_size, train.warmup_steps and eval.every filled in
    corpus: Corpus
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


def _budget_steps(t: TrainConfig, batch_tokens: int, fpt: float) -> int:
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


def time_train_steps(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    batch_size: int,
    *,
    micro_batch_size: int | None = None,
    device: str | torch.device = "cpu",
    steps: int = 3,
) -> float:
    """Seconds per optimizer step of the trainer's own step, on random tokens (what `sweep plan --measure` times).

    Runs exactly what `train` runs per step: `build_model`, `parallelize` (torch.compile when `train_cfg.compile`),
    `build_optimizer` (its two AdamW groups, fused where possible) and `train_step` (bf16 autocast on CUDA,
    gradient accumulation over micro-batches of `micro_batch_size` sequences, clipping). `batch_size` sequences of
    `model_cfg.seq_len` tokens per step on one process. The mean over `steps` steps after one untimed warm-up step
    (which also compiles); CUDA is synchronized around the timed steps.
    """
    device = torch.device(device)
    model = build_model(model_cfg).to(device)
    step_model = parallelize(model, train_cfg)
    optimizer = build_optimizer(model, train_cfg.lr, train_cfg.weight_decay, (train_cfg.beta1, train_cfg.beta2))
    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(0, model_cfg.vocab_size, (batch_size, model_cfg.seq_len + 1), generator=gen).to(device)
    micro = micro_batch_size or batch_size
    micro_batches = list(zip(windows[:, :-1].split(micro), windows[:, 1:].split(micro)))
    t0 = 0.0
    for i in range(steps + 1):
        if i == 1:
            _synchronize(device)
            t0 = time.perf_counter()
        train_step(step_model, optimizer, micro_batches, train_cfg.lr, train_cfg.grad_clip)
    _synchronize(device)
    return (time.perf_counter() - t0) / steps


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------- run state


@dataclass
class RunState:
    """The trainer's running values: saved in every checkpoint, restored on resume."""

    step: int = 0  # optimizer steps done
    elapsed_s: float = 0.0  # wall time of all sessions up to the last save
    train_time_s: float = 0.0  # time spent in training steps (no evaluation), all sessions
    loss_sum: float = 0.0  # sum of the step losses since the last evaluation
    loss_count: int = 0  # ... and their number
    interval_tokens: int = 0  # tokens trained since the last evaluation (its tokens/s)
    interval_time_s: float = 0.0  # ... and the step time they took
    min_loss: float = math.inf  # lowest step loss so far (the divergence check)
    last_loss: float | None = None  # the latest step loss
    last_val_loss: float | None = None  # val loss at the latest evaluation
    last_train_loss: float | None = None  # mean step loss over the latest evaluation interval

    def state_dict(self) -> dict:
        """Plain values (loadable with weights_only=True)."""
        return dataclasses.asdict(self)

    def load_state_dict(self, d: dict) -> None:
        """Take the values of `d`; ValueError (nothing changed) unless it has exactly these fields, as numbers."""
        names = [f.name for f in dataclasses.fields(self)]
        if not isinstance(d, dict) or set(d) != set(names):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"run state has keys {got}, expected {sorted(names)}")
        for f in dataclasses.fields(self):
            value = d[f.name]
            ok = (value is None and "None" in str(f.type)) or (
                isinstance(value, (int, float)) and not isinstance(value, bool)
                and (isinstance(value, int) or not f.type.startswith("int")))
            if not ok:
                raise ValueError(f"run state {f.name} = {value!r} is not a {f.type}")
        for name in names:
            setattr(self, name, d[name])


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
        trainer = Trainer(run, dist, progress=progress and dist.is_writer, on_step=on_step)
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
        dist.close()
        torch.set_num_threads(old_threads)


class Trainer:
    """One training process: model, optimizer, run state, and the files it writes."""

    def __init__(self, run: ResolvedRun, dist: DistEnv, progress: bool, on_step=None):
        self.plan, self.dist, self.on_step = run, dist, on_step
        self.cfg, self.t = run.cfg, run.cfg.train
        self.out = Path(self.cfg.out)
        self.is_writer = dist.is_writer
        self.device = pick_device(self.t.device, dist)
        self.params = count_params(self.cfg.model)
        self.all_fpt = all_flops_per_token(self.cfg.model)
        torch.manual_seed(self.t.seed)
        self.model = build_model(self.cfg.model).to(self.device)
        self.optimizer = build_optimizer(self.model, self.t.lr, self.t.weight_decay, (self.t.beta1, self.t.beta2))
        self.step_model = parallelize(self.model, self.t, dist)
        self.state = RunState()
        self.show_progress = progress
        self.progress: Progress | None = None
        self.tracking = Tracking([])
        self.pending_signal: int | None = None
        self.old_handlers: dict[int, object] = {}
        self.session_start = time.perf_counter()
        self.last_ckpt_time = time.perf_counter()

    # -- files ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Pick the checkpoint to resume, refuse one of another corpus, then write config.json and restore it."""
        payload = self.load_checkpoint()
        if payload is not None:
            self.check_corpus(payload["corpus_fingerprint"], int(payload["step"]))
        if self.is_writer:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / CONFIG_FILE, self.cfg.to_dict())
            (self.out / SUMMARY_FILE).unlink(missing_ok=True)  # a "failed" one: this attempt replaces it
            remove_temp_files(self.out)
            truncate_metrics(self.out, 0 if payload is None else int(payload["step"]))
        self.dist.barrier()
        if payload is not None:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            set_rng_state(payload["rng"])
            self.state.load_state_dict(payload["state"])
        r = self.plan
        self.progress = Progress(r.steps * r.batch_tokens, unit="tok", initial=self.state.step * r.batch_tokens,
                                 enabled=self.show_progress)
        if self.is_writer and self.cfg.tracking.enabled:
            self.tracking = open_tracking(self.cfg.tracking, self.out, self.cfg.to_dict(), self.state.step)

    def load_checkpoint(self) -> dict | None:
        """The newest usable checkpoint (rank 0 chooses, every rank loads it), or None to start from step 0."""
        payload = None
        if self.is_writer:
            had = bool(list_checkpoints(self.out))
            payload = load_latest_checkpoint(self.out, check=self.check_checkpoint)
            if payload is None and had:
                print(f"warning: no usable checkpoint in {self.out / 'checkpoints'}; training from step 0",
                      file=sys.stderr)
        chosen = self.dist.broadcast(None if payload is None else int(payload["step"]))
        if self.is_writer or chosen is None:
            return payload
        return load_checkpoint(dict(list_checkpoints(self.out))[chosen])

    def check_checkpoint(self, payload: dict) -> None:
        """Raise unless the checkpoint fits this run: tensor shapes, run state, a corpus fingerprint."""
        check_fits(payload, self.model, self.optimizer)
        RunState().load_state_dict(payload["state"])
        if not isinstance(payload.get("corpus_fingerprint"), str):
            raise TypeError("it records no corpus fingerprint")

    def check_corpus(self, fingerprint: str, step: int) -> None:
        """ConfigError when the checkpoint was trained on other tokens than the corpus now prepared."""
        now = self.plan.corpus.fingerprint
        if fingerprint != now:
            raise ConfigError(
                "data.corpus",
                f"the corpus this run's checkpoint (step {step}) was trained on, fingerprint {fingerprint[:16]}… "
                f"(restore that corpus, or train into a new out=DIR)",
                f"{self.cfg.data.corpus!r} whose tokens now have fingerprint {now[:16]}…",
            )

    def checkpoint(self) -> None:
        if self.is_writer:
            state = dataclasses.replace(self.state, elapsed_s=self.elapsed()).state_dict()
            save_checkpoint(self.out, {"step": self.state.step, "model": self.model.state_dict(),
                                       "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
                                       "state": state, "corpus_fingerprint": self.plan.corpus.fingerprint},
                            keep=self.t.keep_checkpoints)
        self.dist.barrier()
        self.last_ckpt_time = time.perf_counter()

    def log_metrics(self, val_loss: float) -> None:
        s = self.state
        train_loss = s.loss_sum / max(1, s.loss_count)
        tokens = s.step * self.plan.batch_tokens
        line = {"step": s.step, "tokens": tokens, "flops": tokens * self.plan.flops_per_token,
                "train_loss": train_loss, "val_loss": val_loss, "lr": self.plan.schedule(max(0, s.step - 1)),
                "tokens_per_s": s.interval_tokens / max(s.interval_time_s, 1e-9), "elapsed_s": self.elapsed()}
        s.loss_sum, s.loss_count, s.interval_tokens, s.interval_time_s = 0.0, 0, 0, 0.0
        s.last_val_loss, s.last_train_loss = val_loss, train_loss
        if self.is_writer:
            append_metrics(self.out, line)
            self.tracking.log({**line, "N": self.params["non_embedding"]}, s.step)

    def elapsed(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self.session_start

    def summary(self, status: str, error: str | None = None) -> dict:
        s, r = self.state, self.plan
        tokens = s.step * r.batch_tokens
        out = {
            "status": status,
            "config": self.cfg.to_dict(),
            "params": self.params,
            "flops_per_token": self.all_fpt,
            "flop_convention": self.t.flop_convention,
            "tokens": tokens,
            "flops": tokens * r.flops_per_token,
            "steps": s.step,
            "planned_steps": r.steps,
            "batch_size": r.batch_size,
            "batch_tokens": r.batch_tokens,
            "micro_batch_size": r.micro_batch_size,
            "warmup_steps": r.warmup_steps,
            "val_loss": s.last_val_loss if status == "completed" else None,
            "train_loss": s.last_train_loss if status == "completed" else s.last_loss,
            "wall_time_s": self.elapsed(),
            "corpus_fingerprint": r.corpus.fingerprint,
            "tokens_per_s": tokens / max(s.train_time_s, 1e-9),
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "torch": torch.__version__,
            "error": error,
        }
        return finite(out)

    def finish(self, status: str, error: str | None = None) -> dict:
        summary = self.summary(status, error)
        if self.is_writer:
            write_json(self.out / SUMMARY_FILE, summary)
            self.tracking.finish(run_summary(summary, self.t.flop_convention))
        self.dist.barrier()
        return summary

    def close(self) -> None:
        """Restore the signal handlers, end the progress bar, close trackers left open by an early stop."""
        self.restore_signals()
        if self.progress is not None:
            self.progress.close()
        self.tracking.close()

    # -- signals ----------------------------------------------------------------------------------------------
    def install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            if sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
                continue  # a background job started with Ctrl-C ignored keeps ignoring it
            self.old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.pending_signal == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the checkpoint
            print("\ninterrupted: finishing this step and writing a checkpoint (Ctrl-C again to stop at once)",
                  file=sys.stderr)
        self.pending_signal = signum

    def restore_signals(self) -> None:
        for sig, handler in self.old_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.old_handlers = {}

    def hand_off_signal(self, signum: int) -> None:
        """Call the handler that was installed before `train`; exit 143 if there was none. May not return."""
        old = self.old_handlers.get(signum)
        self.pending_signal = None
        print(f"received signal {signal.Signals(signum).name}: checkpoint written at step {self.state.step}",
              file=sys.stderr)
        if callable(old):
            old(signum, None)
        else:
            print("exiting", file=sys.stderr)
            raise SystemExit(143)

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.start()
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
        r, t, s = self.plan, self.t, self.state
        seq_len, micro = self.cfg.model.seq_len, r.micro_batch_size
        self.model.train()
        while s.step < r.steps:
            step = s.step
            t0 = time.perf_counter()
            x, y = batch_at(r.corpus.train, step, r.batch_size, seq_len, t.seed, self.dist.rank, self.dist.world_size)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            micro_batches = list(zip(x.split(micro), y.split(micro)))
            loss_t = train_step(self.step_model, self.optimizer, micro_batches, r.schedule(step), t.grad_clip)
            ckpt_due = t.checkpoint_seconds > 0 and time.perf_counter() - self.last_ckpt_time >= t.checkpoint_seconds
            loss, signum, ckpt_due = self.dist.agree(loss_t, self.pending_signal, ckpt_due)
            dt = time.perf_counter() - t0
            s.step, s.last_loss = step + 1, loss
            s.train_time_s += dt
            s.interval_time_s += dt
            s.interval_tokens += r.batch_tokens
            s.loss_sum += loss
            s.loss_count += 1
            self.progress.update(s.step * r.batch_tokens, f"step {s.step}/{r.steps} loss {loss:.4f}")
            if self.on_step is not None:
                self.on_step(s.step, loss)
            diverged = self._divergence(loss, step)
            if diverged:
                return "diverged", diverged
            s.min_loss = min(s.min_loss, loss)
            if s.step % self.cfg.eval.every == 0 or s.step == r.steps:
                self.log_metrics(evaluate(self.model, r.corpus, seq_len, self.cfg.eval.tokens, micro, self.device))
            if not self.dist.enabled:
                signum = signum or self.pending_signal  # also one that arrived during the evaluation
            if s.step == r.steps:
                break  # done: the summary is the record; a signal now needs no checkpoint
            every = t.checkpoint_every > 0 and s.step % t.checkpoint_every == 0
            if every or ckpt_due or signum:
                self.checkpoint()
            if signum:
                return "signal", signum
        return "completed", None

    def _divergence(self, loss: float, step: int) -> str | None:
        if not math.isfinite(loss):
            return f"diverged: non-finite loss {loss} at step {step + 1}"
        min_loss = self.state.min_loss
        if step >= self.plan.warmup_steps and loss > self.t.divergence_factor * min_loss:
            return (f"diverged: loss {loss:.4g} > divergence_factor {self.t.divergence_factor} x running minimum "
                    f"{min_loss:.4g} at step {step + 1}")
        return None
