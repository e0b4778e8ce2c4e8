"""Presets (one aspect ratio per budget, a Llama-3-style GQA preset) and the `sweep` CLI (help text, --extend)."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import pytest
from helpers import small_spec_text

from scaling.errors import ConfigError
from sweeps import cli
from sweeps.grid import design
from sweeps.spec import PRESETS, load_spec
from sweeps.store import Store


def aspect_ratios(result) -> dict[float, set[float]]:
    ratios = defaultdict(set)
    for r in result.runs:
        ratios[r.budget].add(round(r.shape["d_model"] / r.shape["n_layer"], 6))
    return ratios


def test_gpu_small_keeps_one_aspect_ratio_per_budget():
    ratios = aspect_ratios(design(load_spec("gpu-small")))
    assert len(ratios) == 5 and all(len(r) == 1 for r in ratios.values()), ratios


def test_gpu_llama3_preset_is_llama_with_grouped_query_attention():
    spec = load_spec("gpu-llama3")
    result = design(spec)
    assert spec.model.family == "llama" and spec.model.n_kv_heads_ratio == 4
    assert all(r.shape["n_heads"] == 4 * r.shape["n_kv_heads"] for r in result.runs)
    assert all(len(r) == 1 for r in aspect_ratios(result).values())
    assert len({r.N for r in result.runs if r.budget == result.runs[0].budget}) == spec.grid.models_per_budget
    assert "gpu-llama3" in PRESETS


def sweep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaling")
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_every_sweep_option_has_help_text():
    parser = sweep_parser()
    sweep = parser._subparsers._group_actions[0].choices["sweep"]
    subcommands = sweep._subparsers._group_actions[0].choices
    assert set(subcommands) == {"plan", "launch", "status"}
    for name, sub in subcommands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, f"sweep {name} {action.dest} has no help"


def test_sweep_plan_prints_warnings_and_problems(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tokenizers", None)
    args = sweep_parser().parse_args(["sweep", "plan", "gpu-llama3", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["problems"] and "tokenizers" in out["problems"][0]
    assert "repeat their corpus" in out["warnings"][0]
    assert all(row["time_min"] >= 15 for row in out["runs"])


def test_launch_extend_via_the_cli_records_a_new_spec_version(tmp_path, monkeypatch):
    spec_path = tmp_path / "small.toml"
    spec_path.write_text(small_spec_text())
    results = tmp_path / "results"
    launched = []

    def fake_launch(spec, **kwargs):  # the executors are the launch engineer's: record the call, run nothing
        from sweeps.grid import plan

        launched.append(spec.train.lr)
        Store(results / spec.name).init_sweep(spec, plan(spec), extend=kwargs["extend"])

    monkeypatch.setattr("sweeps.launch.launch", fake_launch)
    parser = sweep_parser()

    def run(*argv: str) -> None:
        args = parser.parse_args(["sweep", "launch", str(spec_path), "--results", str(results), *argv])
        args.func(args)

    run()
    with pytest.raises(ConfigError, match=r"--extend.*train\.lr: 0\.003 -> 0\.02"):
        run("train.lr=2e-2")
    assert launched == [0.003]
    run("train.lr=2e-2", "--extend")
    assert launched == [0.003, 0.02]
    assert [v["version"] for v in Store(results / "small").spec_versions()] == [1, 2]


def test_launch_into_a_results_root_that_is_a_file_is_one_clear_error(tmp_path):
    spec_path = tmp_path / "small.toml"
    spec_path.write_text(small_spec_text())
    (tmp_path / "results").write_text("a file")
    args = sweep_parser().parse_args(["sweep", "launch", str(spec_path), "--results", str(tmp_path / "results"),
                                      "--dry-run"])
    with pytest.raises(ConfigError, match="^results: expected a folder path"):
        args.func(args)
    assert (tmp_path / "results").read_text() == "a file"
