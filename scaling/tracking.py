"""Optional experiment tracking: every run logged to TensorBoard and/or Weights & Biases (off by default).

Turn it on in a run config (or a sweep spec, which passes it to every run):

    [tracking]
    backends = ["tensorboard", "wandb"]   # either or both; needs `pip install 'scaling-planner[tensorboard,wandb]'`
    project = "scaling"                   # W&B project
    dir = "logs"                          # default: inside the run directory
    mode = "offline"                      # W&B mode: online | offline | disabled (default: $WANDB_MODE, else online)
    group = "my-sweep"                    # W&B group / TensorBoard subfolder (e.g. the sweep's name)

What is logged (rank 0 only): one record per evaluation, the `metrics.jsonl` line itself (`step`, `tokens`, `flops`,
`train_loss`, `val_loss`, `lr`, `tokens_per_s`, `elapsed_s`) plus `N` (non-embedding params), at the optimizer
step; at the end, the run's summary (`status`, `N`, `N_total`, `D`, `C`, `loss`, ...) as the W&B run summary and a
TensorBoard text. So a W&B export fits as it is: the runs table has `N`, `D`, `C`, `loss`; the history has one row
per evaluation. A resumed run continues the same W&B run (its id is derived from the run directory) and TensorBoard
hides the events past the resumed step (`purge_step`).

Tracking is best effort: a backend that fails while logging is reported once on stderr and dropped; the run goes on.
Tracking settings are runtime settings: they are not part of a run's identity, so they may change when it resumes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from scaling.configfile import one_of
from scaling.errors import ConfigError

BACKENDS = ("tensorboard", "wandb")
WANDB_MODES = ("online", "offline", "disabled")
PACKAGE = {"tensorboard": "tensorboard", "wandb": "wandb"}  # the import each backend needs (= its pip extra)


@dataclass
class TrackingConfig:
    backends: list[str] | None = None  # any of BACKENDS; None: no tracking (the default)
    project: str = "scaling"  # W&B project
    dir: str | None = None  # log folder; None: the run directory (<out>/tensorboard, <out>/wandb)
    mode: str | None = None  # W&B mode: "online" | "offline" | "disabled"; None: $WANDB_MODE, else online
    group: str | None = None  # W&B group; TensorBoard: a subfolder of `dir`

    def validate(self) -> TrackingConfig:
        """ConfigError for an unknown backend or mode, a duplicate backend, or a backend whose extra is missing."""
        for i, name in enumerate(self.backends or []):
            one_of(name, BACKENDS, f"tracking.backends[{i}]")
            if not installed(name):
                raise ConfigError(f"tracking.backends[{i}]", f"an installed backend (pip install "
                                  f"'scaling-planner[{name}]')", f"{name!r}, whose package is not installed")
        if len(set(self.backends or [])) != len(self.backends or []):
            raise ConfigError("tracking.backends", "each backend at most once", self.backends)
        if self.mode is not None:
            one_of(self.mode, WANDB_MODES, "tracking.mode")
        if not self.project.strip():
            raise ConfigError("tracking.project", "a W&B project name", self.project)
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.backends)


def installed(backend: str) -> bool:
    """True when the package `backend` needs can be imported."""
    return importlib.util.find_spec(PACKAGE[backend]) is not None


class Tracker:
    """One backend. `log` a record at a step, `finish` with the run's summary, or `close` a run that stops early."""

    name = "none"

    def log(self, record: dict, step: int) -> None:
        raise NotImplementedError

    def finish(self, summary: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    """Scalars under their metrics names in `logdir` (torch's SummaryWriter event files)."""

    name = "tensorboard"

    def __init__(self, logdir: Path, config: dict, start_step: int):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard extra

        # purge_step: on a resumed run, hide the events a killed session wrote past the checkpoint
        self.writer = SummaryWriter(log_dir=str(logdir), purge_step=start_step or None)
        if start_step == 0:
            self.writer.add_text("config", _as_code(config), 0)

    def log(self, record: dict, step: int) -> None:
        for key, value in numbers(record).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, summary: dict) -> None:
        self.writer.add_text("summary", _as_code(summary), int(summary.get("steps") or 0))
        self.close()

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """One W&B run per run directory, resumed under the same id."""

    name = "wandb"

    def __init__(self, cfg: TrackingConfig, folder: Path, run_name: str, run_key: str, config: dict):
        import wandb  # needs the wandb extra

        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=cfg.project, dir=str(folder), mode=cfg.mode, group=cfg.group, name=run_name,
                              id=wandb_id(run_key), resume="allow", config=config, reinit="create_new")

    def log(self, record: dict, step: int) -> None:
        self.run.log(numbers(record), step=step)

    def finish(self, summary: dict) -> None:
        self.run.summary.update(summary)
        self.run.finish()

    def close(self) -> None:
        self.run.finish(exit_code=1)  # stopped early (signal, error): the next session resumes this W&B run


class Tracking:
    """The trackers of one run (none when tracking is off); a tracker that raises is reported once and dropped."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log(self, record: dict, step: int) -> None:
        self._each(lambda t: t.log(record, step), "log")

    def finish(self, summary: dict) -> None:
        self._each(lambda t: t.finish(summary), "finish")
        self.trackers = []

    def close(self) -> None:
        self._each(lambda t: t.close(), "close")
        self.trackers = []

    def _each(self, call, what: str) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as e:  # noqa: BLE001 - tracking must never stop a training run
                print(f"warning: {tracker.name} tracking failed to {what} ({type(e).__name__}: {e}); "
                      f"it is off for the rest of this run", file=sys.stderr)
                self.trackers.remove(tracker)


def open_tracking(cfg: TrackingConfig, out: Path, config: dict, start_step: int) -> Tracking:
    """Start the configured trackers for the run in `out` (resuming at `start_step`); Tracking([]) when off."""
    trackers: list[Tracker] = []
    root = Path(cfg.dir).expanduser() if cfg.dir else None
    for name in cfg.backends or []:
        try:
            if name == "tensorboard":
                logdir = out / "tensorboard" if root is None else root / (cfg.group or "") / out.name
                trackers.append(TensorBoardTracker(logdir, config, start_step))
            elif name == "wandb":
                trackers.append(WandbTracker(cfg, root or out, out.name, str(out.resolve()), config))
        except Exception as e:  # noqa: BLE001 - e.g. W&B online without a login: train untracked, say so
            print(f"warning: {name} tracking could not start ({type(e).__name__}: {e}); this run is not tracked "
                  f"there", file=sys.stderr)
    return Tracking(trackers)


def wandb_id(run_key: str) -> str:
    """A stable W&B run id for a run directory (so a resumed run continues its W&B run)."""
    return hashlib.sha256(run_key.encode()).hexdigest()[:16]


def numbers(record: dict) -> dict[str, float]:
    """The finite numeric entries of `record` (what a scalar logger can take)."""
    out = {}
    for key, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = value
    return out


def run_summary(summary: dict, convention: str) -> dict:
    """The fields of a run's summary that a tracker keeps, named as `scaling fit` reads them (N, D, C, loss)."""
    params = summary["params"]
    return {"status": summary["status"], "N": params["non_embedding"], "N_total": params["total"],
            "D": summary["tokens"], "C": summary["flops"], "loss": summary["val_loss"], "flop_convention": convention,
            "steps": summary["steps"], "train_loss": summary["train_loss"], "wall_time_s": summary["wall_time_s"],
            "tokens_per_s": summary["tokens_per_s"], "corpus_fingerprint": summary["corpus_fingerprint"]}


def _as_code(obj: dict) -> str:
    return "```json\n" + json.dumps(obj, indent=1, default=str) + "\n```"
