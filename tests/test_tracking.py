"""Experiment tracking: the [tracking] config, TensorBoard event files read back, W&B in offline mode.

Neither backend may touch the network: W&B runs with mode="offline" and its folders in tmp, and every test here
refuses outbound connections from this process (loopback and Unix sockets stay allowed for W&B's own service).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from pathlib import Path

import pytest

from scaling import tracking
from scaling.errors import ConfigError
from scaling.runconfig import RunConfig, load_run_config
from scaling.tracking import Tracker, Tracking, wandb_id
from scaling.train import train

TINY = ["model.n_layer=2", "model.d_model=32", "model.n_heads=2", "model.seq_len=32", "train.batch_size=8",
        "eval.tokens=512", "train.steps=12", "eval.every=4"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Refuse connections from this process to anything but loopback and Unix sockets."""
    real = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                local = ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = host == "localhost"
            if not local:
                raise OSError(f"test_tracking: network access to {address} refused")
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def corpus(tmp_path_factory, monkeypatch) -> Path:
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    path = tmp_path_factory.getbasetemp() / "tracking_corpus.txt"
    if not path.exists():
        path.write_text("".join(f"def f{i}(x):\n    return x * {i % 17} + {i % 5}\n\n" for i in range(3000)))
    return path


def run(corpus: Path, out: Path, *extra: str) -> dict:
    cfg = load_run_config(None, [*TINY, f"data.corpus={corpus}", f"out={out}", *extra])
    return train(cfg, progress=False, num_threads=1)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------- config


def test_tracking_is_off_by_default_and_not_part_of_the_identity():
    plain = load_run_config(None, [])
    assert not plain.tracking.enabled and plain.tracking.backends is None
    tracked = load_run_config(None, ["tracking.project=p", "tracking.mode=offline"])
    assert tracked.identity() == plain.identity()  # same run id, may change on resume
    assert RunConfig.from_dict(tracked.to_dict()).tracking == tracked.tracking  # round-trips through config.json


@pytest.mark.parametrize(("override", "field"), [
    ('tracking.backends=["mlflow"]', r"tracking\.backends\[0\]"),
    ('tracking.backends="tensorboard"', r"tracking\.backends"),
    ("tracking.mode=online-ish", r"tracking\.mode"),
    ("tracking.project=' '", r"tracking\.project"),
    ("tracking.colour=1", r"tracking\.colour"),
])
def test_bad_tracking_settings_are_config_errors(override, field):
    with pytest.raises(ConfigError, match=field):
        load_run_config(None, [override])


def test_duplicate_backend_is_refused(monkeypatch):
    monkeypatch.setattr(tracking, "installed", lambda name: True)
    with pytest.raises(ConfigError, match=r"tracking\.backends.*at most once"):
        load_run_config(None, ['tracking.backends=["wandb", "wandb"]'])


def test_a_backend_whose_extra_is_missing_is_refused_before_training(monkeypatch, tmp_path):
    monkeypatch.setattr(tracking, "installed", lambda name: False)
    with pytest.raises(ConfigError, match=r"pip install 'scaling-planner\[wandb\]'"):
        load_run_config(None, ['tracking.backends=["wandb"]', f"out={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()


def test_a_failing_tracker_is_dropped_and_the_rest_go_on(capsys):
    class Broken(Tracker):
        name = "broken"

        def log(self, record, step):
            raise RuntimeError("disk full")

    class Recording(Tracker):
        name = "recording"

        def __init__(self):
            self.seen = []

        def log(self, record, step):
            self.seen.append((step, record))

        def finish(self, summary):
            self.seen.append(("finish", summary))

    broken, good = Broken(), Recording()
    t = Tracking([broken, good])
    t.log({"val_loss": 3.0}, 4)
    t.log({"val_loss": 2.5}, 8)
    t.finish({"loss": 2.5})
    assert good.seen == [(4, {"val_loss": 3.0}), (8, {"val_loss": 2.5}), ("finish", {"loss": 2.5})]
    err = capsys.readouterr().err
    assert err.count("broken tracking failed") == 1 and "disk full" in err


# ---------------------------------------------------------------------------------------------------- TensorBoard


@pytest.mark.slow
def test_tensorboard_events_hold_every_metrics_line(corpus, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    summary = run(corpus, out, 'tracking.backends=["tensorboard"]')
    assert summary["status"] == "completed"
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    lines = metrics(out)
    for key in ("val_loss", "train_loss", "lr", "tokens", "flops"):
        scalars = events.Scalars(key)
        assert [e.step for e in scalars] == [m["step"] for m in lines] == [4, 8, 12]
        assert [e.value for e in scalars] == pytest.approx([m[key] for m in lines], rel=1e-6)  # float32 events
    assert {e.value for e in events.Scalars("N")} == {summary["params"]["non_embedding"]}
    assert "summary" in json.dumps(events.Tags()["tensors"])


# ---------------------------------------------------------------------------------------------------- W&B


def wandb_values(run_file: Path, key: str) -> list[str]:
    """The JSON values logged under `key` in an offline W&B run file, in order, repeats in a row counted once.

    The file is W&B's record log of protobuf messages; each history or summary item holds its key (a length-prefixed
    string, field 1 or 2) followed by its value as JSON text (field 16, tag bytes 0x82 0x01). W&B follows each
    history row with a summary record of the latest values, hence the repeats. Small test runs are far below one
    32 KiB log block, so no record is split.
    """
    data = run_file.read_bytes()
    name = key.encode()
    pattern = rb"[\x0a\x12]" + bytes([len(name)]) + re.escape(name) + rb"\x82\x01([\x00-\x7f])"
    values = []
    for m in re.finditer(pattern, data):
        start = m.end()
        value = data[start : start + m.group(1)[0]].decode()
        if not values or values[-1] != value:
            values.append(value)
    return values


@pytest.mark.slow
def test_wandb_offline_run_holds_history_and_summary(corpus, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="the wandb extra is not installed")
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var, sub in (("WANDB_DIR", "wandb"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    out = tmp_path / "run"
    summary = run(corpus, out, 'tracking.backends=["wandb"]', "tracking.mode=offline", "tracking.project=test",
                  f"tracking.dir={tmp_path / 'logs'}", "tracking.group=sweep-a")
    assert summary["status"] == "completed"
    wandb.teardown()  # wait for W&B's service to finish writing the run file (process exit does the same)
    run_id = wandb_id(str(out.resolve()))
    (folder,) = (tmp_path / "logs" / "wandb").glob(f"offline-run-*-{run_id}")
    (run_file,) = folder.glob(f"run-{run_id}.wandb")
    lines = metrics(out)
    logged = [float(v) for v in wandb_values(run_file, "val_loss")]
    assert logged == pytest.approx([m["val_loss"] for m in lines], rel=1e-12)
    assert [int(v) for v in wandb_values(run_file, "tokens")] == [m["tokens"] for m in lines]
    # the run summary, named as `scaling fit` reads a runs table
    assert float(wandb_values(run_file, "loss")[-1]) == pytest.approx(summary["val_loss"], rel=1e-12)
    assert int(wandb_values(run_file, "N")[-1]) == summary["params"]["non_embedding"]
    assert int(wandb_values(run_file, "D")[-1]) == summary["tokens"]
    assert float(wandb_values(run_file, "C")[-1]) == pytest.approx(summary["flops"], rel=1e-12)
    assert b"sweep-a" in run_file.read_bytes()  # the group


def test_a_tracker_that_cannot_start_leaves_the_run_untracked(corpus, tmp_path, monkeypatch, capsys):
    def no_login(self, *args, **kwargs):
        raise RuntimeError("api key not configured (no-tty)")

    monkeypatch.setattr(tracking, "installed", lambda name: True)
    monkeypatch.setattr(tracking.WandbTracker, "__init__", no_login)
    summary = run(corpus, tmp_path / "run", 'tracking.backends=["wandb"]')
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert "wandb tracking could not start" in capsys.readouterr().err
