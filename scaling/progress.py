"""Progress of one long job (a training run, a sweep) with its rate and ETA, drawn by tqdm.

On a terminal it is a live tqdm bar; elsewhere (a log file, a SLURM output) it is one plain line at most every
`interval_s` seconds, and always at the end, formatted by tqdm's own `format_meter`. Both show the same text:
a status the caller gives (`step 120/400 loss 3.2101`, `3/8 done, 1 running`), the rate in the caller's unit
(`12.3k tok/s`, `4.1G FLOP/s`) and the ETA at that rate.

    bar = Progress(total=tokens_to_train, unit="tok", initial=tokens_already_trained)
    bar.update(tokens_done, f"step {step}/{steps} loss {loss:.4f}")
    bar.close()
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

BAR_FORMAT = "{percentage:3.0f}%|{bar:24}| {desc}  {rate_fmt}  ETA {remaining}"
LINE_FORMAT = "{desc}  {rate_fmt}  ETA {remaining}"
TTY_INTERVAL_S = 0.2  # redraws of a terminal bar
LOG_INTERVAL_S = 10.0  # lines in a log


class Progress:
    """Work done out of `total` (in `unit`s), its rate and ETA; silent when `enabled` is False.

    total: the work of the whole job; initial: the part done before this process started (a resumed run), left out
    of the rate. update(done, status) takes the absolute amount done so far and a short status text.
    """

    def __init__(
        self,
        total: float,
        *,
        unit: str = "it",
        initial: float = 0.0,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval_s: float | None = None,
    ):
        self.total, self.initial, self.enabled = total, initial, enabled
        self.unit = f" {unit}"  # tqdm writes the SI prefix right before the unit: "12.3k tok/s"
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if interval_s is not None else (TTY_INTERVAL_S if self.tty else LOG_INTERVAL_S)
        self.start = time.perf_counter()
        self.last_line = -float("inf")
        self.bar: tqdm | None = None
        if enabled and self.tty:
            self.bar = tqdm(total=total, initial=initial, unit=self.unit, unit_scale=True, file=self.stream,
                            bar_format=BAR_FORMAT, mininterval=self.interval_s, dynamic_ncols=True, leave=True)

    def update(self, done: float, status: str = "") -> None:
        """Record that `done` units (absolute, not an increment) are finished; `status` leads the line."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str(status, refresh=False)
            self.bar.update(done - self.bar.n)
            return
        now = time.perf_counter()
        if now - self.last_line < self.interval_s and done < self.total:
            return
        self.last_line = now
        self.stream.write(self.line(done, status, now - self.start) + "\n")
        self.stream.flush()

    def line(self, done: float, status: str, elapsed_s: float) -> str:
        """The log line: status, rate since this process started, ETA at that rate."""
        return tqdm.format_meter(done, self.total, elapsed_s, prefix=status, unit=self.unit, unit_scale=True,
                                 bar_format=LINE_FORMAT, initial=self.initial)

    def close(self) -> None:
        """End the bar (a final newline on a terminal); idempotent."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
