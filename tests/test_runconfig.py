"""Run configs: TOML + command-line overrides, strict validation, and that a rejected config writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaling.commands import main, split_train_args
from scaling.errors import ConfigError
from scaling.runconfig import RunConfig, load_run_config, parse_override, parse_value
from scaling.train import resolve_run, train

TINY = ["model.n_layer=2", "model.d_model=32", "model.n_heads=2", "model.seq_len=32", "train.batch_size=8",
        "eval.tokens=512"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(3000)))
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_values_parse_as_toml_or_plain_strings():
    assert parse_value("3e-3") == 0.003 and parse_value("true") is True and parse_value("12") == 12
    assert parse_value('"x"') == "x" and parse_value("x") == "x" and parse_value("/tmp/a b") == "/tmp/a b"


def test_overrides_and_bare_keys(tmp_path):
    assert parse_override("corpus=x") == parse_override('data.corpus="x"') == ("data", "corpus", "x")
    cfg = load_run_config(None, ["lr=3e-3", "compile=true", f"corpus={tmp_path}", 'data.tokenizer="bpe"',
                                 "n_layer=3", "train.tokens=1e6", f"out={tmp_path / 'r'}"])
    assert cfg.train.lr == 0.003 and cfg.train.compile is True and cfg.data.corpus == str(tmp_path)
    assert cfg.data.tokenizer == "bpe" and cfg.model.n_layer == 3 and cfg.train.tokens == 1_000_000
    assert cfg.out == str(tmp_path / "r") and cfg.vocab_from_corpus
    with pytest.raises(ConfigError, match="vocab_size"):
        load_run_config(None, ["vocab_size=300"])  # in both model and data: ambiguous
    with pytest.raises(ConfigError, match="tokens"):
        load_run_config(None, ["tokens=10"])  # train.tokens or eval.tokens


def test_toml_file_with_overrides_and_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('out = "runs/a"\n[model]\nfamily = "llama"\nn_layer = 2\nd_model = 64\nn_heads = 4\n'
                    "[train]\nflops = 1e12\nschedule = \"wsd\"\ndecay_shape = \"sqrt\"\n[eval]\nevery = 5\n")
    cfg = load_run_config(path, ["train.lr=1e-3", "out=runs/b"])
    assert cfg.model.family == "llama" and cfg.model.d_ff == 192 and cfg.train.flops == 1e12
    assert cfg.train.schedule == "wsd" and cfg.eval.every == 5 and cfg.out == "runs/b" and cfg.train.lr == 1e-3
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.identity() == cfg.identity()
    assert "out" not in cfg.identity() and "checkpoint_every" not in cfg.identity()["train"]


def test_cli_splits_config_file_from_overrides():
    assert split_train_args(["a.toml", "lr=1", "out=x"]) == ("a.toml", ["lr=1", "out=x"])
    assert split_train_args(["lr=1", "out=x"]) == (None, ["lr=1", "out=x"])
    with pytest.raises(ConfigError):
        split_train_args(["lr=1", "b.toml"])


BAD = [
    (["train.foo=1"], "train.foo", "unknown key"),
    (["bogus.lr=1"], "bogus.lr", "unknown section"),
    (["model.dropout=0.1"], "model.dropout", "unknown key"),
    (["train.lr=fast"], "train.lr", "a number"),
    (["train.steps=2.5"], "train.steps", "an integer"),
    (["train.compile=1"], "train.compile", "true or false"),
    (["model.n_layer=0"], "model.n_layer", "a positive integer"),
    (["train.batch_size=0"], "train.batch_size", "a positive integer"),
    (["train.batch_size=-4"], "train.batch_size", "a positive integer"),
    (["eval.tokens=0"], "eval.tokens", "a positive integer"),
    (["model.d_model=33"], "model.d_model", "multiple of model.n_heads"),
    (["train.tokens=1e6", "train.steps=10"], "train.steps", "exactly one"),
    (["train.batch_tokens=100"], "train.batch_tokens", "multiple of model.seq_len"),
    (["train.batch_tokens=256"], "train.batch_tokens", "at most one of train.batch_size"),
    (["train.micro_batch_size=3"], "train.micro_batch_size", "divisor"),
    (["train.schedule=linear"], "train.schedule", "cosine"),
    (["train.decay_shape=step"], "train.decay_shape", "linear"),
    (["train.flop_convention=7N"], "train.flop_convention", "6N"),
    (["train.keep_checkpoints=1"], "train.keep_checkpoints", ">= 2"),
    (["train.divergence_factor=1"], "train.divergence_factor", "> 1"),
    (["train.beta2=1.0"], "train.beta2", "[0.0, 1.0)"),
    (["train.device=tpu"], "train.device", "cpu"),
    (["data.tokenizer=words"], "data.tokenizer", "bytes"),
    (["data.corpus=/no/such/corpus.txt"], "data.corpus", "existing"),
]


@pytest.mark.parametrize(("overrides", "field", "expected"), BAD)
def test_bad_values_name_the_field_and_write_nothing(corpus, tmp_path, overrides, field, expected):
    out = tmp_path / "run"
    has_corpus = any(o.startswith("data.corpus") for o in overrides)
    tiny = [o for o in TINY if not (o.startswith("train.batch_size") and "train.batch_tokens=100" in overrides)]
    args = [*tiny, *([] if has_corpus else [f"data.corpus={corpus}"]), *overrides, f"out={out}"]
    with pytest.raises(ConfigError) as e:
        train(load_run_config(None, args), progress=False)
    assert e.value.field == field and expected in str(e.value)
    assert not out.exists()


RESOLVE_BAD = [
    (["train.tokens=200"], "train.tokens", "at least one optimizer step"),  # one step is 8 x 32 = 256 tokens
    (["train.flops=1e6"], "train.flops", "at least one optimizer step"),
    (["model.vocab_size=100"], "model.vocab_size", "at least the tokenizer's vocabulary (256)"),
    (["train.warmup_steps=10", "train.steps=10"], "train.warmup_steps", "fewer than"),
    (["eval.tokens=16"], "eval.tokens", "at least model.seq_len"),
    (["train.device=cuda"], "train.device", "CUDA is not available"),
]


@pytest.mark.parametrize(("overrides", "field", "expected"), RESOLVE_BAD)
def test_errors_found_with_the_corpus_also_write_nothing(corpus, tmp_path, overrides, field, expected):
    import torch

    if "cuda" in overrides[0] and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        train(load_run_config(None, [*TINY, f"data.corpus={corpus}", *overrides, f"out={out}"]), progress=False)
    assert e.value.field == field and expected in str(e.value)
    assert not out.exists()


def test_missing_out_is_an_error(corpus):
    with pytest.raises(ConfigError) as e:
        train(load_run_config(None, [*TINY, f"data.corpus={corpus}", "train.steps=1"]), progress=False)
    assert e.value.field == "out"


def test_resolution_rounds_the_budget_and_fills_the_config(corpus, tmp_path):
    base = [*TINY, f"data.corpus={corpus}", f"out={tmp_path}"]
    run = resolve_run(load_run_config(None, [*base, "train.tokens=2688"]))  # 10.5 batches: ties to even
    assert run.steps == 10 and run.batch_tokens == 256 and run.cfg.model.vocab_size == 256
    run = resolve_run(load_run_config(None, [*base, "train.tokens=2700", "train.warmup_frac=0.25"]))
    assert run.steps == 11 and run.warmup_steps == 3 and run.cfg.eval.every == 2
    no_batch = [o for o in base if not o.startswith("train.batch_size")]
    run = resolve_run(load_run_config(None, [*no_batch, "train.batch_tokens=512"]))
    assert run.batch_size == 16 and run.steps == round(2**20 / 512)  # default budget: 2^20 tokens
    run = resolve_run(load_run_config(None, [*base, "model.vocab_size=320"]))
    assert run.cfg.model.vocab_size == 320  # a larger (padded) vocab is kept


def test_out_holding_another_config_is_an_error(corpus, tmp_path):
    out = tmp_path / "run"
    base = [*TINY, f"data.corpus={corpus}", "train.steps=2", f"out={out}"]
    train(load_run_config(None, base), progress=False, num_threads=1)
    before = (out / "config.json").read_text()
    with pytest.raises(ConfigError) as e:
        train(load_run_config(None, [*base, "train.lr=1e-2"]), progress=False)
    assert e.value.field == "out" and "train.lr" in e.value.expected
    assert (out / "config.json").read_text() == before


def test_cli_reports_config_errors_with_status_2(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, f"data.corpus={corpus}", "model.n_heads=3", f"out={out}"]) == 2
    assert "error: model.d_model" in capsys.readouterr().err and not out.exists()


def test_data_prepare_prints_a_summary(corpus, capsys):
    assert main(["data", "prepare", "--corpus", str(corpus)]) == 0
    printed = capsys.readouterr().out
    assert "vocab 256" in printed and "cache:" in printed


NON_FINITE = [
    ("model.norm_eps=inf", "model.norm_eps"),
    ("model.rope_theta=nan", "model.rope_theta"),
    ("train.weight_decay=inf", "train.weight_decay"),
    ("train.grad_clip=nan", "train.grad_clip"),
    ("train.checkpoint_seconds=inf", "train.checkpoint_seconds"),
    ("train.lr=inf", "train.lr"),
    ("train.beta1=nan", "train.beta1"),
    ("train.divergence_factor=nan", "train.divergence_factor"),
]


@pytest.mark.parametrize(("override", "field"), NON_FINITE)
def test_every_float_field_must_be_finite(override, field):
    with pytest.raises(ConfigError) as e:
        load_run_config(None, [override])
    assert e.value.field == field


def test_divergence_factor_inf_still_turns_the_check_off():
    assert load_run_config(None, ["train.divergence_factor=inf"]).train.divergence_factor == float("inf")


def test_non_table_section_is_a_config_error():
    with pytest.raises(ConfigError, match="^train: expected a table of keys"):
        RunConfig.from_dict({"train": 5})


def test_out_pointing_at_a_file_is_refused_and_nothing_is_written(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    with pytest.raises(ConfigError, match="^out: expected a folder"):
        load_run_config(None, [f"out={target}"])
    with pytest.raises(ConfigError, match="^out: expected a folder path"):
        load_run_config(None, [f"out={target / 'below'}"])
    assert target.read_text() == "keep me"


def test_out_in_a_read_only_place_is_refused(tmp_path, monkeypatch):
    import scaling.configfile

    real_access = scaling.configfile.os.access
    monkeypatch.setattr(scaling.configfile.os, "access", lambda p, mode: False if str(p) == str(tmp_path) else
                        real_access(p, mode))
    with pytest.raises(ConfigError, match="^out: expected a writable folder"):
        load_run_config(None, [f"out={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()
