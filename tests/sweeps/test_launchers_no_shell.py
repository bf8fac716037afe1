"""Sweeps never hand user input to a shell: the launcher and sweep modules call no subprocess, os.system or
shell at all (checked on their source), and names that carry shell syntax are refused as unknown before
any run starts, with the command they hold never run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ttlx.sweeps.grid
import ttlx.sweeps.launchers
from ttlx import registry
from ttlx.cli import app
from ttlx.errors import ConfigError
from ttlx.sweeps.launchers import SlurmOptions

SHELL_MODULES = {"subprocess", "pty", "commands", "popen2", "asyncio.subprocess"}
OS_SHELL_CALLS = {"system", "popen", "popen2", "popen3", "popen4", "spawnl", "spawnle", "spawnlp", "spawnlpe",
                  "spawnv", "spawnve", "spawnvp", "spawnvpe", "execl", "execle", "execlp", "execlpe", "execv",
                  "execve", "execvp", "execvpe", "posix_spawn", "posix_spawnp", "fork", "forkpty"}


def shell_uses(source: str) -> list[str]:
    """Every way ``source`` could start a process or a shell: imports, os calls, shell=/setup= arguments."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name in SHELL_MODULES]
        elif isinstance(node, ast.ImportFrom):
            if node.module in SHELL_MODULES:
                found.append(f"from {node.module} import")
            elif node.module == "os":
                found += [f"from os import {a.name}" for a in node.names if a.name in OS_SHELL_CALLS]
        elif isinstance(node, ast.Attribute) and node.attr in OS_SHELL_CALLS:
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                found.append(f"os.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in ("eval", "exec"):
            found.append(node.id)
        elif isinstance(node, ast.keyword) and node.arg in ("shell", "setup", "executable"):
            found.append(f"{node.arg}=")  # `setup=` makes submitit's local executor run through a shell
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.append("__import__")
    return found


def test_the_checker_finds_every_way_to_a_shell():
    source = "\n".join([
        "import subprocess", "from subprocess import run", "import os", "from os import system",
        "os.system('x')", "os.popen('x')", "os.execvp('x', [])", "run('x', shell=True)", "eval('1')",
        "executor.update_parameters(setup=['x'])", "__import__('subprocess')",
    ])
    assert sorted(shell_uses(source)) == sorted([
        "import subprocess", "from subprocess import", "from os import system", "os.system", "os.popen",
        "os.execvp", "shell=", "eval", "setup=", "__import__"])
    assert shell_uses("import os\nos.path.join('a', 'b')\nexecutor.update_parameters(timeout_min=5)") == []


@pytest.mark.parametrize("module", [ttlx.sweeps.launchers, ttlx.sweeps.grid], ids=lambda m: m.__name__)
def test_launchers_and_sweeps_start_no_process_or_shell(module):
    assert shell_uses(Path(module.__file__).read_text()) == []


# ---------------------------------------------------------------------------------------------------
# names holding shell syntax are unknown names, refused before any run starts
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def place(tmp_path, monkeypatch, tinynet):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TTLX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TTLX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def hostile(place: Path) -> list[str]:
    """Names that would create ``place/pwned`` if a shell ever saw them."""
    marker = place / "pwned"
    return [f"digits; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", f"digits && touch {marker}",
            f"digits | touch {marker}", f"digits\ntouch {marker}"]


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_unknown(result, kind: str, name: str, names: list[str], data_dir: Path | None = None) -> None:
    assert result.exit_code == 2 and result.stdout == "", result.output
    # an unknown dataset may also be a name given with --name: the sentence says where those were looked for
    own = "" if data_dir is None else (f", or a name given with `ttlx prepare folder|csv|volumes --name` in "
                                       f"{data_dir} (none there yet)")
    assert result.stderr == f"Error: Unknown {kind} '{name}'; choose one of: {', '.join(names)}{own}.\n"


def written(place: Path) -> list[str]:
    return sorted(str(p.relative_to(place)) for p in place.rglob("*"))


@pytest.mark.parametrize("index", range(6))
def test_a_sweep_refuses_a_dataset_or_model_holding_shell_syntax(index, place, digits_dir):
    name = hostile(place)[index]
    common = ["--trunc", "1", "--exp", "1", "--pretrained", "random", "--head", "pool", "--image-size", "32",
              "--data-dir", digits_dir]
    assert_unknown(run_cli("sweep", "--dataset", name, "--model", "tinynet", *common),
                   "dataset", name, registry.datasets.names(), digits_dir)
    assert_unknown(run_cli("sweep", "--dataset", "digits", "--model", name, *common, "--launcher", "submitit-local"),
                   "model", name, registry.models.names())
    assert written(place) == []  # no marker, no sweep dir, no submitit folder


@pytest.mark.parametrize("index", range(6))
def test_train_and_prepare_refuse_names_holding_shell_syntax(index, place, digits_dir):
    name = hostile(place)[index]
    assert_unknown(run_cli("train", "--dataset", name, "--model", "tinynet", "--data-dir", digits_dir),
                   "dataset", name, registry.datasets.names(), digits_dir)
    assert_unknown(run_cli("train", "--dataset", "digits", "--model", name, "--data-dir", digits_dir),
                   "model", name, registry.models.names())
    assert_unknown(run_cli("prepare", name, "--data-dir", place / "data"), "dataset", name, registry.datasets.names())
    assert_unknown(run_cli("analyze", "cost", "--model", name, "--repeats", "0"), "model", name,
                   registry.models.names())
    assert written(place) == []


def test_a_grid_file_naming_shell_syntax_is_refused(place):
    name = hostile(place)[0]
    grid = place.parent / f"{place.name}.toml"
    grid.write_text(f'dataset = "{name}"\nmodel = "tinynet"\ntrunc = [1]\nexp = [1]\n')
    assert_unknown(run_cli("sweep", "--grid", grid, "--out", place / "sweep"), "dataset", name,
                   registry.datasets.names(), Path("data"))  # the default data dir
    assert written(place) == []


@pytest.mark.parametrize("field", ["partition", "account"])
def test_slurm_names_that_could_add_lines_to_the_job_script_are_refused(field, place):
    for value in ("gpu\ntouch pwned", "gpu; touch pwned", "$(touch pwned)", ""):
        with pytest.raises(ConfigError) as err:
            SlurmOptions(**{field: value})
        assert str(err.value) == f"--{field} takes a SLURM name (letters, digits and . _ , + -), got {value!r}."
    assert SlurmOptions(partition="gpu-a100", account="lab_42").partition == "gpu-a100"
    result = run_cli("sweep", "--dataset", "digits", "--model", "tinynet", "--trunc", "1", f"--{field}",
                     "gpu\ntouch pwned", "--launcher", "slurm", "--out", place / "sweep")
    assert result.exit_code == 2 and result.stderr.startswith(f"Error: --{field} takes a SLURM name"), result.output
    assert written(place) == []
