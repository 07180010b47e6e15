"""lesion installed from a wheel, not only run from a clone: the wheel holds every module and config, its
console commands work from any folder, and the clone's scripts keep reading the clone's configs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "evaluate", "eda", "export", "demo", "stack")
# What pyproject.toml builds the package from.
BUILD_INPUTS = ("pyproject.toml", "README.md", "lesion", "conf")
TINY = ["experiment=quickstart", "dataset.synthetic_n=30", "dataset.batch_size=4", "dataset.num_workers=0",
        "trainer.max_epochs=1"]


def module_folders() -> set[str]:
    """The dotted names of the folders under lesion/ that hold modules."""
    return {".".join(py.parent.relative_to(REPO).parts) for py in (REPO / "lesion").rglob("*.py")}


def test_every_module_folder_is_a_listed_package():
    """pyproject.toml lists its packages (the configs are mapped into the package as lesion.conf): a new
    folder of modules must be listed, or the wheel goes without it."""
    from setuptools.config.pyprojecttoml import read_configuration

    listed = set(read_configuration(REPO / "pyproject.toml")["tool"]["setuptools"]["packages"])
    assert listed - {"lesion.conf"} == module_folders()


@dataclass(frozen=True)
class Installed:
    """A wheel of the clone, installed in a virtual environment of its own.

    Args:
        wheel: the wheel file.
        venv: the virtual environment.
        env: the environment its commands run with (no ``PYTHONPATH``).
    """

    wheel: Path
    venv: Path
    env: dict[str, str]

    def run(self, command: str | Path, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
        """``command`` of the venv's ``bin/`` (``python``, ``lesion-train`` …), or a path, run in ``cwd``."""
        program = self.venv / "bin" / command if isinstance(command, str) else command
        result = subprocess.run([str(program), *args], cwd=cwd, env=self.env, capture_output=True, text=True,
                                timeout=600, stdin=subprocess.DEVNULL, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{command} {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
        return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory, cli_env) -> Installed:
    """The clone built into a wheel offline, from a copy (pip builds in the source folder, leaving build/
    there), and installed with ``--no-deps`` in a venv that sees the system's packages (torch & co.)."""
    root = tmp_path_factory.mktemp("installed")
    (root / "source").mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / "source" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, root / "source" / name)
    env = {key: value for key, value in cli_env.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "-w", str(root / "dist"), str(root / "source")], check=True, env=env,
                   capture_output=True)
    wheel, = (root / "dist").glob("lesion-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    # The system's pip, run by the venv's interpreter, installs into the venv.
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                    str(wheel)], check=True, env=env, capture_output=True)
    return Installed(wheel, venv, env)


def hydra_record(output: str) -> dict:
    """The ``hydra`` tree of a ``--cfg hydra`` answer or a run's ``.hydra/hydra.yaml``."""
    return yaml.safe_load(output)["hydra"]


def main_configs(hydra: dict) -> Path:
    """The folder Hydra read the command's configs from."""
    main, = (source for source in hydra["runtime"]["config_sources"] if source["provider"] == "main")
    assert main["schema"] == "file"
    return Path(main["path"])


def test_wheel_holds_every_module_and_config(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    modules = {path.relative_to(REPO).as_posix() for path in (REPO / "lesion").rglob("*.py")}
    configs = {f"lesion/conf/{path.relative_to(REPO / 'conf').as_posix()}" for path in (REPO / "conf").rglob("*.yaml")}
    assert {name for name in names if not name.startswith("lesion-")} == modules | configs
    assert {line.split(" = ")[0] for line in entry_points.splitlines() if " = " in line} == {
        f"lesion-{command}" for command in COMMANDS}


def test_installed_package_is_the_venvs_own(installed, tmp_path):
    """The venv's copy wins over the clone (an editable install's finder lives in the system's packages),
    and its commands read the configs shipped inside it."""
    probe = ("import json, sys, lesion, lesion.configs\n"
             f"import {', '.join(f'lesion.cli.{command}' for command in COMMANDS)}\n"
             "files = {name: getattr(module, '__file__', None) or list(module.__path__)[0]\n"
             "         for name, module in sys.modules.items() if name.split('.')[0] == 'lesion'}\n"
             "print(json.dumps({'files': files, 'configs': str(lesion.configs.config_dir())}))")
    found = json.loads(installed.run("python", "-c", probe, cwd=tmp_path).stdout)
    package = Path(found["files"]["lesion"]).parent
    assert installed.venv in package.parents and package.name == "lesion"
    # A module missing from the wheel would be found in the clone by an editable install's finder.
    assert {name: file for name, file in found["files"].items() if not Path(file).is_relative_to(package)} == {}
    assert Path(found["configs"]) == package / "conf"
    hydra = hydra_record(installed.run("lesion-train", "--cfg", "hydra", cwd=tmp_path).stdout)
    assert main_configs(hydra) == package / "conf"
    assert hydra["job"]["name"] == "train"


@pytest.mark.parametrize("command", COMMANDS)
def test_installed_command_answers_help_as_the_clones_script(installed, tmp_path, command):
    answer = installed.run(f"lesion-{command}", "--help", cwd=tmp_path).stdout
    clone = subprocess.run([sys.executable, f"{command}.py", "--help"], cwd=REPO, env=installed.env,
                           capture_output=True, text=True, timeout=300, check=True).stdout
    assert answer.strip() and answer == clone
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_installed_train_then_evaluate_write_under_the_working_folder(installed, tmp_path):
    installed.run("lesion-train", *TINY, cwd=tmp_path)
    run_dir, = (tmp_path / "outputs" / "train").iterdir()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "train.log").is_file()  # Hydra's job name, as python train.py names it
    assert main_configs(hydra_record((run_dir / ".hydra" / "hydra.yaml").read_text())).is_relative_to(installed.venv)
    trained = json.loads((run_dir / "test_metrics.json").read_text())

    installed.run("lesion-evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "gradcam.n=0", "plots=false",
                  "bootstrap=10", cwd=tmp_path)
    out, = (tmp_path / "outputs" / "evaluate").iterdir()
    assert json.loads((out / "metrics.json").read_text())["classes"] == trained["classes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]


def test_clone_scripts_read_the_clones_configs_from_any_folder(installed, tmp_path):
    """``python <clone>/train.py`` reads the clone's package and configs, even where a wheel is installed."""
    hydra = hydra_record(installed.run("python", REPO / "train.py", "--cfg", "hydra", *TINY, cwd=tmp_path).stdout)
    assert main_configs(hydra) == REPO / "conf"
    assert hydra["job"]["name"] == "train"
    assert list(tmp_path.iterdir()) == []
