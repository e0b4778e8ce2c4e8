"""Sweep spec parsing: both presets, overrides, and each kind of bad input named by its dotted field."""

from __future__ import annotations

import json

import pytest
from helpers import small_spec_text

from scaling.errors import ConfigError
from sweeps.grid import design, lr_at, n_opt, prior_from_fit
from sweeps.spec import load_spec, validate_resources

SMALL = small_spec_text()


def write_spec(tmp_path, text=SMALL, extra=""):
    path = tmp_path / "spec.toml"
    path.write_text(text + extra)
    return path


def test_tiny_cpu_preset():
    spec = load_spec("tiny-cpu")
    budgets = spec.budgets.resolved()
    assert spec.model.family == "gpt2" and spec.data.tokenizer == "bytes" and spec.vocab_size == 256
    assert len(budgets) == 4 and budgets[-1] / budgets[0] >= 30
    assert spec.grid.models_per_budget >= 5
    assert len(spec.hparams.lr_factors) >= 3 and len(spec.hparams.budgets) >= 2  # scanned cells at 2+ budgets
    assert spec.model.n_layer == 1 and spec.model.n_heads == 1  # the fixed-depth, one-head ladder (E8: one layer)
    assert len(spec.grid.replicate_seeds) == 2 and spec.grid.tokens_per_param == 300.0  # P9
    assert spec.train.lr_width is not None  # every width trains near its own optimal LR (no fixed-LR cliff)
    assert spec.resources.gpus == 0 and spec.backend.local.max_concurrent >= 1
    assert spec.source == "preset:tiny-cpu" and "tiny-cpu" in spec.source_text


def test_gpu_small_preset():
    spec = load_spec("gpu-small")
    budgets = spec.budgets.resolved()
    assert spec.model.family == "llama" and spec.model.seq_len in (1024, 2048)
    assert budgets[0] == 1e17 and budgets[-1] == 1e19 and len(budgets) == 5
    assert budgets[2] == 1e18  # log-spaced values are rounded to 12 digits, not 1.0000000000000001e18
    assert spec.resources.gpus == 1
    assert lr_at(spec.train, 1e18) == pytest.approx(0.3118 * 1e18**-0.125)
    assert spec.backend.slurm.extra == ["--constraint=h100"]
    assert spec.backend.slurm.extra_parameters() == {"constraint": "h100"}



def test_lr_width_scales_each_models_lr_by_its_width(tmp_path):
    """train.lr_width = {d_model = 16, exponent = 1}: a model of width d trains at lr * 16 / d, in the isoFLOP grid
    and in the LR grid (whose factors multiply the model's own width-scaled LR)."""
    from sweeps.grid import plan

    extra = "[hparams]\nlr_factors = [0.5, 1.0, 2.0]\nmodels = \"all\"\n"
    path = write_spec(tmp_path, extra=extra)
    plain = {(r.budget, r.N, r.lr) for r in plan(load_spec(path))}
    runs = plan(load_spec(path, ["train.lr_width={d_model = 16, exponent = 1.0}"]))
    widths = {r.shape["d_model"] for r in runs}
    assert len(widths) >= 3, "the test needs several widths"
    base = load_spec(path).train.lr
    for r in runs:
        factor = 16 / r.shape["d_model"]
        assert any(r.lr == pytest.approx(base * f * factor, rel=1e-3) for f in (0.5, 1.0, 2.0)), r
    assert {(r.budget, r.N, r.lr) for r in runs} != plain
    isoflop = [r for r in runs if r.tags["kind"] == "isoflop"]
    assert len({r.lr for r in isoflop}) == len({r.shape["d_model"] for r in isoflop})
    assert lr_at(load_spec(path).train, 1e12, None) == base  # no model: the budget's base LR

def test_file_overrides_and_alternatives(tmp_path):
    path = write_spec(tmp_path)
    spec = load_spec(path, ["budgets.min=1e10", "budgets.max=1e12", "budgets.count=3", "train.lr=1e-3",
                            "grid.spread=2"])
    assert spec.budgets.values is None  # overriding min/max/count removed the values form
    assert spec.budgets.resolved() == pytest.approx([1e10, 1e11, 1e12])
    assert spec.train.lr == 1e-3 and spec.grid.spread == 2.0 and isinstance(spec.grid.spread, float)
    spec = load_spec(path, ["budgets.values=[1e12,3e12]"])
    assert spec.budgets.resolved() == [1e12, 3e12]
    assert spec.overrides == ["budgets.values=[1e12,3e12]"]


def test_passthrough_train_keys_reach_the_trainer_section(tmp_path):
    spec = load_spec(write_spec(tmp_path, extra='schedule = "wsd"\ndecay_frac = 0.3\n'))
    assert spec.train.passthrough == {"schedule": "wsd", "decay_frac": 0.3}


@pytest.mark.parametrize("override, message", [
    ("grid.models_per_budget=0", r"^grid\.models_per_budget: expected a positive integer, got 0$"),
    ('grid.models_per_budget="five"', r"^grid\.models_per_budget: expected an integer, got 'five'"),
    ("grid.colour=1", r"^grid\.colour: expected one of the keys"),
    ("colour=1", r"^colour: expected one of the keys"),
    ("budgets.values=[1e12,-1]", r"^budgets\.values\[1\]: expected a positive number of FLOPs"),
    ("budgets.convention=7N", r"^budgets\.convention: expected one of"),
    ("train.lr=0", r"^train\.lr: expected a positive learning rate, got 0"),
    ("train.batch_size=-4", r"^train\.batch_size: expected a positive integer"),
    ("train.steps=100", r"^train\.steps: expected unset"),
    ("train.beta1=2.0", r"^train\.beta1: expected a number in"),
    ("train.warp=1", r"^train\.warp: expected one of the train keys"),
    ("train.seeds=[0,0]", r"^train\.seeds: expected distinct seeds"),
    ("model.family=rwkv", r"^model\.family: expected one of"),
    ("grid.spread=0.5", r"^grid\.spread: expected a number >= 1"),
    ("grid.prior_coef=0.1", r"^grid\.prior_exponent: expected set together"),
    ("grid.prior_fit=missing.json", r"^grid\.prior_fit: expected an existing fit\.json"),
    ("hparams.lr=[1e-3,0]", r"^hparams\.lr\[1\]: expected a positive learning rate"),
    ("hparams.batch_size=[0]", r"^hparams\.batch_size\[0\]: expected a positive number of sequences"),
    ("hparams.budgets=[5e11]", r"^hparams\.budgets\[0\]: expected one of the budgets"),
    ("resources.gpus=-1", r"^resources\.gpus: expected a non-negative integer"),
    ("train.seeds=[0,-1]", r"^train\.seeds\[1\]: expected a non-negative integer"),
    ("grid.replicate_seeds=[0]", r"^grid\.replicate_seeds: expected seeds not in train\.seeds"),
    ("grid.replicate_seeds=[3,3]", r"^grid\.replicate_seeds: expected distinct seeds"),
    ("grid.replicate_seeds=[-2]", r"^grid\.replicate_seeds\[0\]: expected a non-negative integer"),
    ("grid.replicate_seeds=[]", r"^grid\.replicate_seeds: expected a non-empty list"),
    ("grid.replicate_models=0", r"^grid\.replicate_models: expected a positive integer"),
    ("backend.local.max_concurrent=0", r"^backend\.local\.max_concurrent: expected a positive integer"),
    ("backend.slurm.max_num_timeout=-1", r"^backend\.slurm\.max_num_timeout: expected a non-negative integer"),
    ("model.n_layer=0", r"^model\.n_layer: expected a positive integer"),
    ("model.n_heads=2", r"^model\.n_heads: expected set together with model\.n_layer"),
    ("backend.slurm.extra.gres=[1]", r"^backend\.slurm\.extra\.gres: expected a string, number or boolean"),
    ('data.tokenizer="bpe"', r"^data\.vocab_size: expected a vocabulary size"),
])
def test_bad_values_name_the_dotted_field(tmp_path, override, message):
    extra = "" if not override.startswith("hparams.budgets") else "[hparams]\nlr = [1e-3]\n"
    with pytest.raises(ConfigError, match=message):
        load_spec(write_spec(tmp_path, extra=extra), [override])


def test_both_forms_of_a_group_are_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"budgets\.min/max/count: expected at most one of budgets\.values"):
        load_spec(write_spec(tmp_path, SMALL.replace("[budgets]\n", "[budgets]\nmin = 1e10\n")))
    with pytest.raises(ConfigError, match=r"^train\.lr_rule: expected at most one"):
        load_spec(write_spec(tmp_path, extra="lr = 1e-3\nlr_rule = {coef = 1.0, exponent = -0.1}\n"))


def test_missing_name_bad_toml_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="^name: expected a sweep name"):
        load_spec(write_spec(tmp_path, SMALL.replace('name = "small"', "")))
    with pytest.raises(ConfigError, match="valid TOML"):
        load_spec(write_spec(tmp_path, "name = [\n"))
    with pytest.raises(ConfigError, match="preset name"):
        load_spec("no-such-preset")
    with pytest.raises(ConfigError, match="override of the form"):
        load_spec(write_spec(tmp_path), ["grid.spread"])


def test_prior_fit_reads_the_isoflop_law(tmp_path):
    fit = {"isoflop": {"N_opt": {"coef": 0.05, "exponent": 0.52}}}
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    spec = load_spec(write_spec(tmp_path), ['grid.prior_fit="fit.json"'])  # relative to the spec's folder
    assert prior_from_fit(spec.grid.prior_fit) == (0.05, 0.52)
    assert n_opt(spec, 1e12) == pytest.approx(0.05 * 1e12**0.52)
    (tmp_path / "bad.json").write_text(json.dumps({"isoflop": {}}))
    with pytest.raises(ConfigError, match=r"^grid\.prior_fit: expected a fit\.json with isoflop\.N_opt"):
        design(load_spec(write_spec(tmp_path), ['grid.prior_fit="bad.json"']))


def test_chinchilla_prior_is_twenty_tokens_per_param(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    n = n_opt(spec, 1.2e13)
    assert 6 * n * (20 * n) == pytest.approx(1.2e13)


def test_validate_resources_local_needs_cuda_devices(tmp_path, monkeypatch):
    import torch

    spec = load_spec(write_spec(tmp_path), ["resources.gpus=2"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"^resources\.gpus: expected at most the 1 CUDA device"):
        validate_resources(spec, "local")
    validate_resources(spec, "slurm")  # the SLURM executor checks partitions itself
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    validate_resources(spec, "local")
    with pytest.raises(ConfigError, match="^backend: expected one of"):
        validate_resources(spec, "kubernetes")


def test_slurm_max_num_timeout_reaches_the_executor(tmp_path):
    from sweeps.launch import make_executor

    spec = load_spec(write_spec(tmp_path), ["backend.slurm.max_num_timeout=7"])
    assert spec.backend.slurm.max_num_timeout == 7
    executor = make_executor(spec, "slurm", tmp_path / "sweep", dry_run=True)
    assert executor.max_num_timeout == 7
    assert make_executor(load_spec(write_spec(tmp_path)), "slurm", tmp_path, dry_run=True).max_num_timeout == 3
