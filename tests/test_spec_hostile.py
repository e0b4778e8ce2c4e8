"""Hostile sweep specs (issue 11): sbatch injection, non-finite numbers, collapsing budgets, non-table sections,
missing extras caught at plan time, corpus repetition, per-run time limits, and the preset's documented override."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
from helpers import small_spec_text

from scaling.errors import ConfigError
from sweeps.grid import TIME_FLOOR_MIN, TIME_SAFETY, design, plan, prior_from_fit, time_limit_min
from sweeps.spec import load_spec

SMALL = small_spec_text()


SBATCH_VALUES = [  # values that reach an sbatch script: strict character sets, no newlines
    ('backend.slurm.partition="gpu\\nrm -rf /"', "backend.slurm.partition"),
    ('backend.slurm.account="a b"', "backend.slurm.account"),
    ('backend.slurm.qos="high;reboot"', "backend.slurm.qos"),
    ('backend.slurm.partition="$(whoami)"', "backend.slurm.partition"),
    ('backend.slurm.extra=["--constraint=h100\\n#SBATCH --wrap=x"]', "backend.slurm.extra[0]"),
    ('backend.slurm.extra=["constraint=h100"]', "backend.slurm.extra[0]"),
    ('backend.slurm.extra=["--Constraint=h100"]', "backend.slurm.extra[0]"),
    ('backend.slurm.extra=["--comment=a`id`"]', "backend.slurm.extra[0]"),
    ('backend.slurm.extra={constraint = "h100\\necho pwned"}', "backend.slurm.extra[0]"),
]


def test_sbatch_extra_as_a_list_or_a_table(small):
    spec = load_spec(small, ['backend.slurm.extra=["--constraint=h100", "--exclusive", "--gres=gpu:2"]',
                             'backend.slurm.partition="gpu-a100_long"', 'backend.slurm.account="proj.x:1"'])
    assert spec.backend.slurm.extra_parameters() == {"constraint": "h100", "exclusive": True, "gres": "gpu:2"}
    spec = load_spec(small, ['backend.slurm.extra={constraint = "h100", exclusive = true, nodes = 1}'])
    assert spec.backend.slurm.extra == ["--constraint=h100", "--exclusive", "--nodes=1"]


NON_FINITE = [  # every float in a spec must be finite
    ("grid.spread=inf", "grid.spread"),
    ("grid.tokens_per_param=inf", "grid.tokens_per_param"),
    ("grid.batch_range=nan", "grid.batch_range"),
    ("budgets.values=[1e11,inf]", "budgets.values[1]"),
    ("model.aspect_ratio=inf", "model.aspect_ratio"),
    ("resources.throughput_flops=inf", "resources.throughput_flops"),
    ("resources.mem_gb=nan", "resources.mem_gb"),
    ("hparams.lr_factors=[1.0,inf]", "hparams.lr_factors[1]"),
    ("train.lr_rule={coef = inf, exponent = -0.1}", "train.lr_rule.coef"),
    ("train.lr_rule={coef = 1.0, exponent = nan}", "train.lr_rule.exponent"),
    ("train.lr_width={d_model = inf, exponent = 1.0}", "train.lr_width.d_model"),
    ("train.lr_width={d_model = 0, exponent = 1.0}", "train.lr_width.d_model"),
    ("train.lr_width={d_model = 16, exponent = nan}", "train.lr_width.exponent"),
    ("train.lr_width={d_model = 16, exponent = -1.0}", "train.lr_width.exponent"),
    ("train.lr_width={d_model = 16}", "train.lr_width"),
    ("train.lr_width=3.0", "train.lr_width"),
    ("train.weight_decay=inf", "train.weight_decay"),
]


@pytest.mark.parametrize("override, field", SBATCH_VALUES + NON_FINITE)
def test_a_bad_value_is_refused_naming_its_field(small, override, field):
    with pytest.raises(ConfigError) as e:
        load_spec(small, [override])
    assert e.value.field == field


@pytest.mark.parametrize("overrides, field, match", [
    (["budgets.min=1e11", "budgets.max=1e12", "budgets.count=1"], "budgets.count", "at least 2"),
    (["budgets.min=1e11", "budgets.max=1.01e11", "budgets.count=3"], "budgets.count", "collapse into one"),
    (["budgets.values=[1e11,1.005e11,3e11]"], "budgets.values", "collapse into one"),
    (["budgets.min=1e12", "budgets.max=1e12", "budgets.count=2"], "budgets.max", "more than budgets.min"),
])
def test_budgets_that_cannot_be_a_sweep(small, overrides, field, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_spec(small, overrides)
    assert e.value.field == field


@pytest.mark.parametrize("section", ["train", "model", "grid", "budgets", "hparams", "backend", "resources", "eval",
                                     "data"])
def test_a_non_table_section_is_a_config_error(tmp_path, section):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "small"\n{section} = 5\n')
    with pytest.raises(ConfigError, match=rf"^{section}: expected a table of keys, got 5$"):
        load_spec(path)


def test_nested_non_table_is_a_config_error(small):
    with pytest.raises(ConfigError, match=r"^backend\.slurm: expected a table of keys"):
        load_spec(small, ["backend.slurm=3"])
    with pytest.raises(ConfigError, match=r"^train: expected a table of keys"):
        load_spec(small, ["train=5"])


def test_the_tiny_cpu_documented_override_plans():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = load_spec("tiny-cpu", ["budgets.values=[1e11,1e12]"])
    assert spec.budgets.resolved() == [1e11, 1e12]
    assert spec.hparams.budgets is None  # none of the preset's LR-grid budgets is left: the grid covers both
    assert any("hparams.budgets" in str(w.message) for w in caught)
    result = design(spec)
    assert {r.budget for r in result.runs} == {1e11, 1e12}
    assert {r.budget for r in result.runs if r.tags["kind"] == "hparam"} == {1e11, 1e12}
    with pytest.warns(UserWarning, match=r"keeps the budgets \['2e\+10'\]"):
        kept = load_spec("tiny-cpu", ["budgets.values=[2e10,1e12]"])
    assert kept.hparams.budgets == [2e10]  # the LR-grid budgets still in the sweep are kept


def test_a_missing_tokenizer_extra_is_caught_at_plan_time(small, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if the `bpe` extra were not installed
    spec = load_spec(small, ['data.tokenizer="bpe"', "data.vocab_size=512"])
    result = design(spec)  # `sweep plan` shows the plan and the problem
    assert result.runs and [e.field for e in result.problems] == ["data.tokenizer"]
    with pytest.raises(ConfigError, match=r"^data\.tokenizer: .*pip install scaling-planner\[bpe\]"):
        plan(spec)  # what `sweep launch` calls before writing anything
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "datasets" else object())
    hf = design(load_spec(small, ['data.corpus="hf:tiny_shakespeare"']))
    assert [e.field for e in hf.problems] == ["data.corpus"] and "scaling-planner[hf]" in str(hf.problems[0])


def test_plan_warns_when_runs_repeat_their_corpus(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"x = 1\n" * 2000)  # 12,000 bytes: about 11,880 training tokens for `bytes`
    path = tmp_path / "s.toml"
    path.write_text(SMALL.replace("[model]", f'[data]\ncorpus = "{corpus}"\n[model]'))
    result = design(load_spec(path))
    (message,) = result.warnings
    most = max(r.D for r in result.runs)
    assert f"{len(result.runs)} of {len(result.runs)} runs repeat their corpus" in message
    assert f"{most / (12000 * 0.99):.1f} times (epochs)" in message
    corpus.write_bytes(b"x = 1\n" * 10**6)  # 6 MB: more than any run reads
    assert design(load_spec(path)).warnings == []


def test_each_planned_run_has_a_time_limit_from_its_estimated_time(small):
    runs = design(load_spec(small, ["resources.throughput_flops=1e6", "resources.time_min=7"])).runs
    for r in runs:
        expected = max(TIME_FLOOR_MIN, -(-TIME_SAFETY * r.flops / 1e6 // 60))
        assert r.time_min == expected and r.time_min > TIME_FLOOR_MIN  # 1e11 FLOPs at 1 MFLOP/s: ~28 hours
    assert {r.time_min for r in runs} != {24 * 60}
    assert {r.time_min for r in design(load_spec(small, ["resources.time_min=7"])).runs} == {7}  # no estimate
    assert time_limit_min(1e9, 1e9, 60) == TIME_FLOOR_MIN


def test_prior_from_fit_reads_both_fit_json_schemas(tmp_path):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({"schema_version": 2, "isoflop": {"kind": "isoflop", "N_opt": {
        "kind": "power_law", "params": {"coef": 0.1, "exponent": 0.5}}}}))
    assert prior_from_fit(path) == (0.1, 0.5)
    for bad in ([1, 2], {"isoflop": {"N_opt": {"coef": -1.0, "exponent": 0.5}}},
                {"isoflop": {"N_opt": {"coef": "1", "exponent": 0.5}}}, {"isoflop": {"N_opt": {"coef": 1, "exponent": 5}}}):
        path.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=r"^grid\.prior_fit: "):
            prior_from_fit(path)
    path.write_text('{"isoflop": ')  # torn
    with pytest.raises(ConfigError, match=r"^grid\.prior_fit: .*a complete JSON file"):
        prior_from_fit(path)


def test_measure_times_the_trainers_own_step(small, monkeypatch):
    import scaling.train
    from sweeps.grid import measure_throughput

    calls = []

    def fake_time_train_steps(model_cfg, train_cfg, batch_size, *, micro_batch_size=None, device="cpu", steps=3):
        calls.append((model_cfg.d_model, train_cfg.lr, batch_size, device))
        return 0.5

    monkeypatch.setattr(scaling.train, "time_train_steps", fake_time_train_steps)
    runs = plan(load_spec(small))
    rate = measure_throughput(load_spec(small), runs)
    smallest = min(runs, key=lambda r: r.N)
    assert rate(smallest) == pytest.approx(smallest.flops_per_token["6N"] * smallest.batch_size * 32 / 0.5)
    assert len(calls) == 2 and all(device == "cpu" for *_, device in calls)


def test_tracking_reaches_every_run_grouped_by_sweep_without_changing_run_ids(small, monkeypatch):
    import scaling.tracking

    monkeypatch.setattr(scaling.tracking, "installed", lambda backend: True)
    plain = design(load_spec(small)).runs
    tracked = design(load_spec(small, ['tracking.backends=["tensorboard"]', 'tracking.mode="offline"'])).runs
    assert [r.run_id for r in tracked] == [r.run_id for r in plain]  # tracking is runtime, not identity
    assert all(r.config["tracking"]["backends"] == ["tensorboard"] and r.config["tracking"]["group"] == "small"
               for r in tracked)
    with pytest.raises(ConfigError, match=r"^tracking\.backends\[0\]"):
        load_spec(small, ['tracking.backends=["mlflow"]'])
