"""The trainer: budgets and records, schedules, weight-decay groups, resume (signal, kill -9, corrupt checkpoint),
divergence and failure. Tiny models (gpt2 2x32, seq 32) on a corpus built on the spot, one CPU thread."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scaling.accounting import CONVENTIONS, count_params, flops_per_token
from scaling.checkpoint import list_checkpoints
from scaling.config import ModelConfig
from scaling.errors import ConfigError
from scaling.model import build_model
from scaling.parallelize import parallelize
from scaling.progress import Progress
from scaling.schedule import Schedule
from scaling.train import RunState, build_optimizer, load_run_config, param_groups, train

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.n_layer=2", "model.d_model=32", "model.n_heads=2", "model.seq_len=32", "train.batch_size=8",
        "eval.tokens=512"]


class Preempted(Exception):
    """Raised by the test's own signal handler, standing in for submitit's requeue."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A ~60 kB text file of varied Python source (a few stdlib modules)."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    text = "".join((root / name).read_text() for name in ("textwrap.py", "bisect.py", "shlex.py"))
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def config(corpus: Path, out: Path, *extra: str):
    return load_run_config(None, [*TINY, f"data.corpus={corpus}", f"out={out}", *extra])


def run(corpus: Path, out: Path, *extra: str, **kwargs) -> dict:
    return train(config(corpus, out, *extra), progress=False, num_threads=1, **kwargs)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def signal_at(step: int, sig: int = signal.SIGTERM):
    def on_step(done: int, loss: float) -> None:
        if done == step:
            os.kill(os.getpid(), sig)

    return on_step


RESUME = ("train.steps=24", "eval.every=8", "train.checkpoint_every=4", "train.keep_checkpoints=3")


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> tuple[dict, list[dict]]:
    """An uninterrupted run of the RESUME config."""
    out = tmp_path_factory.mktemp("ref") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("SCALING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    try:
        summary = run(corpus, out, *RESUME)
    finally:
        mp.undo()
    return summary, metrics(out)


# ---------------------------------------------------------------------------------------------------- records


def test_summary_and_metrics_record_the_budget(corpus, tmp_path):
    out = tmp_path / "run"
    s = run(corpus, out, "train.tokens=2600", "eval.every=4")  # 2600 / 256 = 10.16 -> 10 steps
    assert s["status"] == "completed" and s["error"] is None
    assert s["steps"] == 10 and s["tokens"] == 10 * 8 * 32
    model = ModelConfig(n_layer=2, d_model=32, n_heads=2, seq_len=32, vocab_size=256)
    assert s["params"] == count_params(model)
    assert s["flops"] == pytest.approx(s["tokens"] * flops_per_token(model, "6N"))
    assert set(s["flops_per_token"]) == set(CONVENTIONS)
    assert s["flop_convention"] == "6N" and s["config"]["model"]["vocab_size"] == 256
    assert len(s["corpus_fingerprint"]) == 64 and s["tokens_per_s"] > 0 and s["wall_time_s"] > 0
    lines = metrics(out)
    assert [m["step"] for m in lines] == [4, 8, 10]
    for m in lines:
        assert m["tokens"] == m["step"] * 256 and m["flops"] == pytest.approx(m["tokens"] * s["flops_per_token"]["6N"])
        assert {"train_loss", "val_loss", "lr", "tokens_per_s", "elapsed_s"} <= set(m)
    assert lines[-1]["val_loss"] == s["val_loss"] < math.log(256)
    assert lines[-1]["lr"] == pytest.approx(2e-3 * 0.1)  # the last step runs at the cosine floor
    stored = json.loads((out / "config.json").read_text())
    assert stored["train"]["batch_size"] == 8 and stored["train"]["tokens"] == 2600
    assert json.loads((out / "summary.json").read_text())["val_loss"] == s["val_loss"]


def test_flop_budget_converts_with_the_convention(corpus, tmp_path):
    model = ModelConfig(n_layer=2, d_model=32, n_heads=2, seq_len=32, vocab_size=256)
    fpt = flops_per_token(model, "exact")
    s = run(corpus, tmp_path / "run", f"train.flops={fpt * 256 * 6.4}", "train.flop_convention='exact'")
    assert s["steps"] == 6 and s["flops"] == pytest.approx(6 * 256 * fpt)


def test_gradient_accumulation_matches_the_full_batch(corpus, tmp_path):
    a = run(corpus, tmp_path / "a", "train.steps=6")
    b = run(corpus, tmp_path / "b", "train.steps=6", "train.micro_batch_size=2")
    assert b["micro_batch_size"] == 2
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)


def test_final_summary_is_returned_without_training(corpus, tmp_path):
    out = tmp_path / "run"
    first = run(corpus, out, "train.steps=3")
    again = run(corpus, out, "train.steps=3", "train.checkpoint_every=7")  # runtime keys may differ
    assert again == json.loads((out / "summary.json").read_text()) and again["wall_time_s"] == first["wall_time_s"]


# ---------------------------------------------------------------------------------------------------- schedules


def test_cosine_schedule_warms_up_then_ends_at_the_floor():
    s = Schedule(lr=1.0, steps=100, warmup_steps=10, kind="cosine", min_lr_ratio=0.1)
    assert [s(i) for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert s(9) == 1.0 and s(99) == pytest.approx(0.1)
    assert s(54) == pytest.approx(0.55)  # halfway through the decay: the mean of peak and floor
    lrs = [s(i) for i in range(10, 100)]
    assert all(a > b for a, b in itertools.pairwise(lrs))


@pytest.mark.parametrize(("shape", "mid"), [("linear", 0.5), ("sqrt", 1 - math.sqrt(0.5)), ("cosine", 0.5)])
def test_wsd_schedule_is_flat_then_decays_with_its_shape(shape, mid):
    s = Schedule(lr=2.0, steps=100, warmup_steps=5, kind="wsd", min_lr_ratio=0.0, decay_steps=20, decay_shape=shape)
    assert s(0) == pytest.approx(0.4) and s(4) == 2.0
    assert all(s(i) == 2.0 for i in range(4, 80))
    assert s(89) == pytest.approx(2.0 * mid)  # t = 90: halfway through the 20 decay steps
    assert s(99) == pytest.approx(0.0)
    if shape == "sqrt":
        assert s(80) < 2.0 * (1 - 1 / 20)  # sqrt drops faster than linear at the start


# ---------------------------------------------------------------------------------------------------- optimizer


def test_weight_decay_only_on_matrices_and_embeddings():
    model = build_model(ModelConfig(n_layer=2, d_model=32, n_heads=2, seq_len=32, bias=True))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert any("wte" in n or "emb" in n for n in decayed)  # embeddings decay (documented)
    assert not any("ln" in n or "norm" in n or n.endswith("bias") for n in decayed)
    assert len(no_decay["params"]) > 0 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.defaults.get("fused") in (True, None)


# ---------------------------------------------------------------------------------------------------- resume


def test_signal_checkpoints_hands_off_and_resume_matches(corpus, tmp_path, reference):
    ref_summary, ref_metrics = reference
    out = tmp_path / "run"
    calls = []

    def requeue(signum, frame):
        calls.append(signum)
        raise Preempted

    old = signal.signal(signal.SIGTERM, requeue)
    try:
        with pytest.raises(Preempted):
            run(corpus, out, *RESUME, on_step=signal_at(10))
        assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is requeue  # restored when train returned
        assert [s for s, _ in list_checkpoints(out)] == [4, 8, 10]
        assert not (out / "summary.json").exists()
        resumed = run(corpus, out, *RESUME)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert resumed["val_loss"] == pytest.approx(ref_summary["val_loss"], abs=1e-6)
    assert resumed["train_loss"] == pytest.approx(ref_summary["train_loss"], abs=1e-6)
    got = metrics(out)
    assert [m["step"] for m in got] == [m["step"] for m in ref_metrics] == [8, 16, 24]
    for a, b in zip(got, ref_metrics):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6)


def test_signal_without_previous_handler_exits_143_then_resumes(corpus, tmp_path, reference):
    out = tmp_path / "run"
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    with pytest.raises(SystemExit) as exc:
        run(corpus, out, *RESUME, on_step=signal_at(6, signal.SIGUSR1))
    assert exc.value.code == 143
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert list_checkpoints(out)[-1][0] == 6
    assert run(corpus, out, *RESUME)["val_loss"] == pytest.approx(reference[0]["val_loss"], abs=1e-6)


def test_handler_that_returns_lets_training_continue(corpus, tmp_path, reference):
    seen = []
    old = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))  # like submitit's "bypass"
    try:
        s = run(corpus, tmp_path / "run", *RESUME, "train.keep_checkpoints=9", on_step=signal_at(5, signal.SIGUSR2))
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert seen == [signal.SIGUSR2] and s["status"] == "completed"
    assert 5 in [step for step, _ in list_checkpoints(tmp_path / "run")]
    assert s["val_loss"] == pytest.approx(reference[0]["val_loss"], abs=1e-6)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(corpus, tmp_path, reference, capsys):
    out = tmp_path / "run"
    old = signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(Preempted()))
    try:
        with pytest.raises(Preempted):
            run(corpus, out, *RESUME, on_step=signal_at(10))
    finally:
        signal.signal(signal.SIGTERM, old)
    newest = dict(list_checkpoints(out))[10]
    newest.write_bytes(newest.read_bytes()[:1000])  # torn
    capsys.readouterr()
    resumed = run(corpus, out, *RESUME)
    assert "ckpt_10.pt" in capsys.readouterr().err
    assert resumed["val_loss"] == pytest.approx(reference[0]["val_loss"], abs=1e-6)
    assert [m["step"] for m in metrics(out)] == [8, 16, 24]


def test_kill_9_then_rerun_matches_uninterrupted(corpus, tmp_path):
    args = [*TINY, f"data.corpus={corpus}", "train.steps=160", "eval.every=40", "train.checkpoint_every=5"]
    ref = run(corpus, tmp_path / "ref", *args[len(TINY) + 1:])
    out = tmp_path / "killed"
    env = dict(os.environ, SCALING_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "scaling.commands", "train", *args, f"out={out}", "-q"],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list_checkpoints(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert not (out / "summary.json").exists()
    resumed = run(corpus, out, *args[len(TINY) + 1:])
    assert resumed["status"] == "completed" and resumed["steps"] == 160
    assert resumed["val_loss"] == pytest.approx(ref["val_loss"], abs=1e-6)
    assert [m["step"] for m in metrics(out)] == [40, 80, 120, 160]


# ---------------------------------------------------------------------------------------------------- bad runs


def test_absurd_lr_diverges_and_is_recorded(corpus, tmp_path):
    out = tmp_path / "run"
    s = run(corpus, out, "train.steps=30", "train.lr=1e3", "train.warmup_steps=0")
    assert s["status"] == "diverged" and "diverged" in s["error"]
    assert s["steps"] < 30 and s["val_loss"] is None
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"
    assert run(corpus, out, "train.steps=30", "train.lr=1e3", "train.warmup_steps=0") == s  # final: not rerun


def test_exception_is_recorded_as_failed_and_a_rerun_resumes(corpus, tmp_path):
    out = tmp_path / "run"

    def boom(step, loss):
        if step == 7:
            raise RuntimeError("disk on fire")

    s = run(corpus, out, "train.steps=10", "train.checkpoint_every=5", on_step=boom)
    assert s["status"] == "failed" and "disk on fire" in s["error"] and s["steps"] == 7
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    again = run(corpus, out, "train.steps=10", "train.checkpoint_every=5")
    assert again["status"] == "completed" and again["steps"] == 10 and again["error"] is None


def test_progress_lines_are_rate_limited_off_a_tty():
    stream = io.StringIO()
    p = Progress(total=100 * 256, unit="tok", stream=stream)
    for step in range(1, 101):
        p.update(step * 256, f"step {step}/100 loss {2.0:.4f}")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("step 1/100") and lines[1].startswith("step 100/100")
    assert "tok/s" in lines[1] and "ETA" in lines[1]


def test_cli_train_runs_and_reports(corpus, tmp_path, capsys):
    from scaling.commands import main

    out = tmp_path / "run"
    rc = main(["train", *TINY, f"data.corpus={corpus}", "train.steps=2", f"out={out}", "--threads", "1"])
    assert rc == 0 and "status: completed" in capsys.readouterr().out
    assert torch.get_num_threads() >= 1 and (out / "summary.json").exists()


# ---------------------------------------------------------------------------------------------------- safe resume


def preempt_at(corpus: Path, out: Path, step: int, *extra: str) -> None:
    """Train until `step`, where SIGTERM makes it checkpoint and hand off to a handler that raises Preempted."""
    old = signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(Preempted()))
    try:
        with pytest.raises(Preempted):
            run(corpus, out, *RESUME, *extra, on_step=signal_at(step))
    finally:
        signal.signal(signal.SIGTERM, old)


def test_ctrl_c_writes_a_checkpoint_then_resume_matches(corpus, tmp_path, reference, python_sigint):
    out = tmp_path / "run"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):  # Python's own SIGINT handler, called after the checkpoint
        run(corpus, out, *RESUME, on_step=signal_at(10, signal.SIGINT))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert [s for s, _ in list_checkpoints(out)] == [4, 8, 10]  # before: KeyboardInterrupt at once, no step 10
    assert not (out / "summary.json").exists()
    resumed = run(corpus, out, *RESUME)
    assert resumed["val_loss"] == pytest.approx(reference[0]["val_loss"], abs=1e-6)
    assert [m["step"] for m in metrics(out)] == [8, 16, 24]


def test_second_ctrl_c_stops_at_once(corpus, tmp_path, python_sigint):
    def twice(done: int, loss: float) -> None:
        if done == 10:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        run(corpus, tmp_path / "run", *RESUME, on_step=twice)
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [4, 8]


@pytest.mark.slow
def test_cli_ctrl_c_checkpoints_and_exits_130(corpus, tmp_path, python_sigint):
    args = [*TINY, f"data.corpus={corpus}", "train.steps=400", "eval.every=100", "train.checkpoint_every=10"]
    out = tmp_path / "run"
    env = dict(os.environ, SCALING_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "scaling.commands", "train", *args, f"out={out}", "-q"],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list_checkpoints(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        first = list_checkpoints(out)[0][0] if list_checkpoints(out) else None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert first is not None and proc.returncode == 130, err
    newest = list_checkpoints(out)[-1][0]
    assert newest > first or newest == 400  # the step the Ctrl-C landed in was checkpointed
    assert f"checkpoint written at step {newest}" in err and "Traceback" not in err
    assert not (out / "summary.json").exists()


def test_resume_on_a_changed_corpus_is_refused(corpus, tmp_path):
    changed = tmp_path / "corpus.txt"
    changed.write_text(corpus.read_text())
    out = tmp_path / "run"
    preempt_at(changed, out, 10)
    before = (out / "metrics.jsonl").read_text(), list_checkpoints(out)
    changed.write_text(corpus.read_text() + "\ndef added():\n    return 'new data'\n")
    with pytest.raises(ConfigError, match=r"data\.corpus.*fingerprint"):
        run(changed, out, *RESUME)
    assert ((out / "metrics.jsonl").read_text(), list_checkpoints(out)) == before  # nothing touched
    assert not (out / "summary.json").exists()
    from scaling.commands import main

    assert main(["train", *TINY, *RESUME, f"data.corpus={changed}", f"out={out}", "-q", "--threads", "1"]) == 2


def test_wrong_shape_checkpoint_falls_back_to_the_previous(corpus, tmp_path, reference, capsys):
    out, other = tmp_path / "run", tmp_path / "wider"
    preempt_at(corpus, out, 10)
    preempt_at(corpus, other, 10, "model.d_model=48")
    newest = dict(list_checkpoints(out))[10]
    newest.write_bytes(dict(list_checkpoints(other))[10].read_bytes())  # a readable checkpoint of another shape
    capsys.readouterr()
    resumed = run(corpus, out, *RESUME)
    err = capsys.readouterr().err
    assert "ckpt_10.pt" in err and "shape" in err
    assert newest.with_name("ckpt_10.pt.rejected").exists()
    assert resumed["status"] == "completed"
    assert resumed["val_loss"] == pytest.approx(reference[0]["val_loss"], abs=1e-6)
    assert [m["step"] for m in metrics(out)] == [8, 16, 24]


def test_no_usable_checkpoint_starts_clean_with_a_warning(corpus, tmp_path, reference, capsys):
    out, other = tmp_path / "run", tmp_path / "wider"
    preempt_at(corpus, other, 10, "model.d_model=48")
    (out / "checkpoints").mkdir(parents=True)
    for step, path in list_checkpoints(other):
        (out / "checkpoints" / path.name).write_bytes(path.read_bytes())
    capsys.readouterr()
    first = run(corpus, out, *RESUME)
    assert "training from step 0" in capsys.readouterr().err
    assert first["status"] == "completed" and first["steps"] == 24
    assert first["val_loss"] == pytest.approx(reference[0]["val_loss"], abs=1e-6)
    rejected = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.endswith(".rejected"))
    assert rejected == sorted(f"{p.name}.rejected" for _, p in list_checkpoints(other))  # kept, never read again


# ---------------------------------------------------------------------------------------------------- the rooms


def test_run_state_round_trips_and_rejects_foreign_dicts():
    state = RunState(step=7, train_time_s=1.5, loss_sum=3.0, loss_count=2, min_loss=1.25, last_loss=1.5)
    again = RunState()
    again.load_state_dict(state.state_dict())
    assert again == state
    for bad in ({**state.state_dict(), "extra": 1}, {k: v for k, v in state.state_dict().items() if k != "step"},
                {**state.state_dict(), "step": "7"}, {**state.state_dict(), "loss_count": 2.5}, [1, 2]):
        fresh = RunState()
        with pytest.raises(ValueError, match="run state"):
            fresh.load_state_dict(bad)
        assert fresh == RunState()  # nothing half-loaded


def test_parallelize_applies_compile_from_outside():
    model = build_model(ModelConfig(n_layer=1, d_model=32, n_heads=2, seq_len=16, vocab_size=64))
    plain = load_run_config(None, []).train
    assert parallelize(model, plain) is model  # one process, no compile: the model itself
    compiled = parallelize(model, load_run_config(None, ["train.compile=true"]).train)
    assert compiled is not model and compiled._orig_mod is model  # torch.compile wraps; nothing compiles yet


@pytest.mark.usefixtures("one_thread")
def test_time_train_steps_times_the_trainers_own_step(monkeypatch):
    import scaling.train as trainer

    calls = []
    real = trainer.train_step

    def counting(model, optimizer, micro_batches, lr, grad_clip=0.0):
        calls.append((len(micro_batches), [g["weight_decay"] for g in optimizer.param_groups], lr, grad_clip))
        return real(model, optimizer, micro_batches, lr, grad_clip)

    monkeypatch.setattr(trainer, "train_step", counting)
    cfg = load_run_config(None, [*TINY[:4], "train.lr=1e-3"])
    seconds = trainer.time_train_steps(cfg.model, cfg.train, batch_size=4, micro_batch_size=2, steps=2)
    assert math.isfinite(seconds) and seconds > 0
    assert calls == [(2, [0.1, 0.0], 1e-3, 1.0)] * 3  # one warm-up + 2 timed steps, with the run's groups and clip


class Payload:
    """Any Python object: a pickle that would run code on load if checkpoints were read without weights_only."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoints_load_weights_only(corpus, tmp_path, reference, capsys):
    out = tmp_path / "run"
    preempt_at(corpus, out, 10)
    newest = dict(list_checkpoints(out))[10]
    torch.save({"step": 10, "model": Payload()}, newest)
    capsys.readouterr()
    resumed = run(corpus, out, *RESUME)
    err = capsys.readouterr().err
    assert "ckpt_10.pt cannot be used" in err and "weights_only" in err.replace("Weights only", "weights_only")
    assert resumed["val_loss"] == pytest.approx(reference[0]["val_loss"], abs=1e-6)


def test_torn_metrics_lines_are_reported_when_a_run_resumes(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    preempt_at(corpus, out, 10)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "tokens": 23')  # the tail of a line cut off by kill -9
    capsys.readouterr()
    run(corpus, out, *RESUME)
    assert "dropped 1 unreadable line" in capsys.readouterr().err
    assert [m["step"] for m in metrics(out)] == [8, 16, 24]


def test_progress_on_a_terminal_is_a_tqdm_bar_with_rate_and_eta():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    p = Progress(total=100 * 256, unit="tok", initial=50 * 256, stream=stream, interval_s=0)
    for step in range(51, 101):
        p.update(step * 256, f"step {step}/100 loss {2.0:.4f}")
    p.close()
    frames = [f for f in stream.getvalue().split("\r") if f.strip()]
    assert frames[-1].startswith("100%|") and "step 100/100 loss 2.0000" in frames[-1]
    assert " tok/s" in frames[-1] and "ETA" in frames[-1] and stream.getvalue().endswith("\n")
    assert p.bar is None  # closed
