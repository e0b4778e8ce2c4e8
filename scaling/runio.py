"""The files of one run directory, other than checkpoints (see `scaling.checkpoint`):

    config.json     the resolved run config, written first (atomically)
    metrics.jsonl   one JSON line per evaluation, appended; cut back to the resumed step when a run resumes
    summary.json    written last (atomically); its `status` says how the run ended

`read_summary` is the one reader of `summary.json` for every package; `RUN_STATUSES` and `FINAL_STATUSES` are the
one home of the statuses a summary can hold. JSON is written with `scaling.jsonio` (atomic, fsync'd); NaN and inf
become null so the files are strict JSON.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from scaling.errors import ConfigError
from scaling.jsonio import TornFileError, read_json, write_json_atomic, write_text_atomic
from scaling.runconfig import RunConfig

RUN_STATUSES = ("completed", "diverged", "failed")  # summary.json `status`
FINAL_STATUSES = ("completed", "diverged")  # a run in one of these never trains again
CONFIG_FILE, METRICS_FILE, SUMMARY_FILE = "config.json", "metrics.jsonl", "summary.json"


def finite(obj: object) -> object:
    """`obj` with NaN / inf floats replaced by None (recursively through dicts, lists and tuples)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Strict JSON (NaN/inf as null), atomically."""
    write_json_atomic(path, finite(obj))


# ---------------------------------------------------------------------------------------------------- summary


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    """The run's summary, or None when it has none (yet).

    A summary that exists but is torn, is not a JSON object, or has no known `status` is reported on stderr and
    read as None, so the run counts as unfinished (running it again resumes it and rewrites the summary).
    """
    path = Path(run_dir) / SUMMARY_FILE
    try:
        summary = read_json(path, None)
    except (TornFileError, OSError) as e:
        print(f"warning: {path} is unreadable ({e}); treating the run as unfinished", file=sys.stderr)
        return None
    if summary is None:
        return None
    if not isinstance(summary, dict) or summary.get("status") not in RUN_STATUSES:
        got = summary.get("status") if isinstance(summary, dict) else type(summary).__name__
        print(f"warning: {path} holds no run summary (status {got!r}, expected one of {RUN_STATUSES}); "
              f"treating the run as unfinished", file=sys.stderr)
        return None
    return summary


# ---------------------------------------------------------------------------------------------------- config


def check_out_dir(out: Path, cfg: RunConfig) -> dict | None:
    """ConfigError if `out/config.json` holds a different run; the stored summary (or None) otherwise."""
    path = out / CONFIG_FILE
    if path.exists():
        try:
            stored = RunConfig.from_dict(read_json(path)).identity()
        except (ValueError, OSError) as e:
            raise ConfigError("out", f"a new directory or one holding this run ({path} is unreadable: {e})") from None
        if stored != cfg.identity():
            diff = first_difference(stored, cfg.identity())
            raise ConfigError("out", f"a new directory or one holding this run ({out} holds another config: {diff})")
    return read_summary(out)


def first_difference(a: dict, b: dict, prefix: str = "") -> str:
    """The first dotted key whose values differ between two nested dicts, with both values; "none" if equal."""
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            if va != vb:
                return first_difference(va, vb, f"{prefix}{key}.")
        elif va != vb:
            return f"{prefix}{key} = {va!r} there, {vb!r} here"
    return "none"


# ---------------------------------------------------------------------------------------------------- metrics


def append_metrics(out: Path, line: dict) -> None:
    """Append one evaluation's line to metrics.jsonl (strict JSON)."""
    with open(out / METRICS_FILE, "a") as f:
        f.write(json.dumps(finite(line)) + "\n")


def truncate_metrics(out: Path, step: int) -> None:
    """Keep the metrics lines up to `step` (the resumed checkpoint), dropping later ones.

    Lines that do not parse (a line cut off when the process was killed mid-write) are dropped and reported.
    """
    path = out / METRICS_FILE
    if not path.exists():
        return
    kept, torn = [], 0
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            torn += 1
    if torn:
        print(f"warning: {path}: dropped {torn} unreadable line(s) (cut off by an earlier stop)", file=sys.stderr)
    write_text_atomic(path, "".join(line + "\n" for line in kept))
