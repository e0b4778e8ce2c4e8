"""The SLURM executor without a cluster: the sbatch script --dry-run prints, and what may reach it.

`SlurmExecutor.describe` rebuilds the script as submitit 1.5 does (its private `_make_sbatch_string`); the first test
pins that text, so a submitit release that writes scripts differently fails here instead of making --dry-run lie.
(`tests/test_launch_slurm.py` compares it with a real submission on the CI cluster.)
"""

from __future__ import annotations

import shlex
import sys

import pytest
from helpers import tiny_spec_text

from scaling.errors import ConfigError
from sweeps.executors.base import Resources
from sweeps.executors.slurm import SlurmExecutor, time_limit
from sweeps.launch import launch

EXPECTED_ARRAY = """\
#!/bin/bash

# Parameters
#SBATCH --account=lab
#SBATCH --array=0-1%1
#SBATCH --constraint=h100
#SBATCH --cpus-per-task=4
#SBATCH --error={folder}/%A_%a/%A_%a_0_log.err
#SBATCH --exclusive
#SBATCH --gpus-per-node=2
#SBATCH --job-name=tiny
#SBATCH --mem=4096MB
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --open-mode=append
#SBATCH --output={folder}/%A_%a/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --qos=normal
#SBATCH --signal=USR2@90
#SBATCH --time=45
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output {folder}/%A_%a/%A_%a_%t_log.out --error {folder}/%A_%a/%A_%a_%t_log.err \
{python} -u -m submitit.core._submit {folder}/%j

# array tasks (max_num_timeout=3):
#   task 0: {runs}/aaa
#   task 1: {runs}/bbb
"""

EXPECTED_SINGLE = """\
#!/bin/bash

# Parameters
#SBATCH --cpus-per-task=1
#SBATCH --error={folder}/%j/%j_0_log.err
#SBATCH --job-name=tiny
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output={folder}/%j/%j_0_log.out
#SBATCH --signal=USR2@90
#SBATCH --time=60
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output {folder}/%j/%j_%t_log.out --error {folder}/%j/%j_%t_log.err \
python3 -u -m submitit.core._submit {folder}/%j

# array tasks (max_num_timeout=3):
#   task 0: {runs}/aaa
"""


@pytest.fixture
def executor(tmp_path) -> SlurmExecutor:
    return SlurmExecutor(tmp_path / "slurm", job_name="tiny", max_num_timeout=3, python="python3")


def test_dry_run_script_is_pinned(executor, tmp_path):
    """The exact text for an array (2 GPUs, every option) and for a single job (defaults)."""
    folder, runs = tmp_path.resolve() / "slurm", tmp_path.resolve() / "runs"
    resources = Resources(gpus=2, cpus=8, mem_gb=4, time_min=40, partition="gpu", account="lab", qos="normal",
                          array_parallelism=1, extra=("--constraint=h100", "--exclusive"))
    array = executor.describe([runs / "aaa", runs / "bbb"], resources)
    # an array's copy of submitit's executor runs the default python (submitit 1.5 passes no `python` on)
    assert array == EXPECTED_ARRAY.format(folder=folder, runs=runs, python=shlex.quote(sys.executable))
    assert executor.describe([runs / "aaa"], Resources()) == EXPECTED_SINGLE.format(folder=folder, runs=runs)


@pytest.mark.parametrize("field", ["partition", "account", "qos"])
@pytest.mark.parametrize("value", ["debug\necho pwned", "a b", "x;rm -rf ~", "$(id)", "q'uote"])
def test_names_that_could_escape_the_script_are_refused(executor, tmp_path, field, value):
    with pytest.raises(ConfigError, match=f"backend.slurm.{field}"):
        executor.describe([tmp_path / "runs" / "aaa"], Resources(**{field: value}))


@pytest.mark.parametrize("option", ["--constraint=a\necho pwned", "--comment=$(id)", "constraint=a100",
                                    "--Constraint=a", "--gres=gpu 1", "--x='y'", "--output=/tmp/elsewhere",
                                    "--time=99999", "--array=0-1000"])
def test_extra_options_are_validated(executor, tmp_path, option):
    with pytest.raises(ConfigError, match=r"backend.slurm.extra\[1\]"):
        executor.describe([tmp_path / "runs" / "aaa"], Resources(extra=("--constraint=a100", option)))


def test_paths_and_names_reaching_the_script_have_no_control_characters(tmp_path):
    with pytest.raises(ConfigError, match="slurm folder"):
        SlurmExecutor(tmp_path / "x\ny", job_name="tiny")
    with pytest.raises(ConfigError, match="job_name"):
        SlurmExecutor(tmp_path, job_name="tiny\n#SBATCH --uid=0")
    spaced = SlurmExecutor(tmp_path / "with space ü", job_name="tiny", python="python3")  # quoted, still fine
    assert f"'{(tmp_path / 'with space ü').resolve()}/%j'" in spaced.describe([tmp_path / "r"], Resources())


def test_time_limit_comes_from_the_runs_planned_time():
    assert time_limit(None, 20) == 20  # no estimate: resources.time_min as given
    assert time_limit(7, 20) == 15 and time_limit(16, 20) == 20 and time_limit(61, 20) == 90
    assert time_limit(2000, 20) == 2160 and time_limit(20000, 20) == 20000


def write_spec(path, *, extra: str = "", throughput: str = "", partition: str = "debug"):
    path.write_text(tiny_spec_text(budgets=[1.5e9, 1.5e11], sections=f"""\
[resources]
time_min = 600
{throughput}
[backend.slurm]
partition = "{partition}"
{extra}"""))
    return path


def test_dry_run_uses_each_runs_time_not_a_flat_limit(tmp_path, capsys):
    """With a throughput figure each run gets its planned time (rounded up the ladder): the small budget's runs and
    the large budget's runs go into separate arrays with their own --time; without one, resources.time_min."""
    spec = write_spec(tmp_path / "tiny.toml", throughput="throughput_flops = 5e7")
    result = launch(spec, backend="slurm", results=tmp_path / "results", dry_run=True)
    times = [int(line.split("=")[1]) for line in result.script.splitlines() if line.startswith("#SBATCH --time=")]
    assert len(times) == 2 and times[0] < times[1] < 600
    assert not (tmp_path / "results").exists()
    flat = launch(write_spec(tmp_path / "flat.toml"), backend="slurm", results=tmp_path / "results", dry_run=True)
    assert [line for line in flat.script.splitlines() if line.startswith("#SBATCH --time=")] == ["#SBATCH --time=600"]
    assert "#SBATCH --partition=debug" in capsys.readouterr().out


def test_extra_options_reach_the_script_and_bad_ones_launch_nothing(tmp_path):
    ok = launch(write_spec(tmp_path / "ok.toml", extra='extra = ["--constraint=h100", "--exclusive"]'),
                backend="slurm", results=tmp_path / "results", dry_run=True)
    assert "#SBATCH --constraint=h100\n" in ok.script and "#SBATCH --exclusive\n" in ok.script
    for extra in ('extra = ["--comment=a\\nb"]', 'extra = ["--output=/tmp/x"]'):
        with pytest.raises(ConfigError, match="backend.slurm.extra"):
            launch(write_spec(tmp_path / "bad.toml", extra=extra), backend="slurm", results=tmp_path / "results",
                   dry_run=True)
    with pytest.raises(ConfigError, match="backend.slurm.partition"):
        launch(write_spec(tmp_path / "bad.toml", partition="a\\nb"), backend="slurm", results=tmp_path / "results")
    assert not (tmp_path / "results").exists()
