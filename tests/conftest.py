"""Shared fixtures: synthetic ISIC datasets, the shared real data, and a CLI runner."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesion.data.synthetic import write_synthetic

REPO = Path(__file__).resolve().parents[1]
SHARED_UDA1 = REPO.parent / "shared" / "data" / "isic2017-uda1"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Factory: a small synthetic dataset per layout, written once per test session."""
    made: dict[str, Path] = {}

    def make(layout: str) -> Path:
        if layout not in made:
            made[layout] = write_synthetic(layout, tmp_path_factory.mktemp(layout) / "data", n=60, seed=0)
        return made[layout]

    return make


@pytest.fixture(scope="session")
def as_folders():
    """Factory: copy a zipped dataset to ``dest`` with every split's zip extracted in place of the zip."""

    def extract(root: Path, dest: Path) -> Path:
        shutil.copytree(root, dest)
        for archive in dest.glob("*.zip"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(dest)
            archive.unlink()
        return dest

    return extract


@pytest.fixture
def uda1() -> Path:
    """The real CC0 ISIC 2017-layout images in ../shared (skips when absent)."""
    if not SHARED_UDA1.is_dir():
        pytest.skip(f"real images not found at {SHARED_UDA1} (the shared data folder is absent)")
    return SHARED_UDA1


UDA1_ZIPS = {"train": "ISIC-2017_Training_Data.zip", "val": "ISIC-2017_Validation_Data.zip",
             "test": "ISIC-2017_Test_v2_Data.zip"}


@pytest.fixture(scope="session")
def uda1_images(tmp_path_factory):
    """Factory: the first ``n`` real UDA-1 images of a split, by id, as a folder (skips when ../shared is absent)."""

    def extract(split: str, n: int) -> Path:
        if not SHARED_UDA1.is_dir():
            pytest.skip(f"real images not found at {SHARED_UDA1} (the shared data folder is absent)")
        folder = tmp_path_factory.mktemp(f"uda1-{split}")
        with zipfile.ZipFile(SHARED_UDA1 / UDA1_ZIPS[split]) as archive:
            names = sorted(name for name in archive.namelist() if re.search(r"ISIC_\d{7}\.jpg$", name))[:n]
            for name in names:
                (folder / Path(name).name).write_bytes(archive.read(name))
        return folder

    return extract


@pytest.fixture(scope="session", autouse=True)
def lesion_cache(tmp_path_factory):
    """``$LESION_CACHE`` (image caches, synthetic data) in a temporary folder for the whole session."""
    before = os.environ.get("LESION_CACHE")
    os.environ["LESION_CACHE"] = str(tmp_path_factory.mktemp("lesion-cache"))
    yield Path(os.environ["LESION_CACHE"])
    if before is None:
        del os.environ["LESION_CACHE"]
    else:
        os.environ["LESION_CACHE"] = before


@pytest.fixture(scope="session")
def cli_env(lesion_cache) -> dict[str, str]:
    """Environment for CLI subprocesses (with the session's ``$LESION_CACHE``)."""
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


class _ForkServer:
    """Client of ``tests/cli_server.py``: command-line runs forked from a process that has imported
    the libraries once (the same script, run as ``__main__`` in a process of its own)."""

    def __init__(self, env: dict[str, str], cwd: Path, streams: Path):
        self.process = subprocess.Popen([sys.executable, str(REPO / "tests" / "cli_server.py")], cwd=cwd, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.streams = streams
        self.runs = 0

    def run(self, command: list[str], module: str | None, cwd: Path, env: dict[str, str],
            timeout: int) -> subprocess.CompletedProcess:
        """Run ``command`` (``python SCRIPT …`` or ``python -m MODULE …``, ``module`` naming the module)."""
        self.runs += 1
        out, err = self.streams / f"{self.runs}.out", self.streams / f"{self.runs}.err"
        argv = command[2:] if module else command[1:]  # what sys.argv starts from: the module or the script
        request = {"argv": argv, "module": module,
                   "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err), "timeout": timeout}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            raise RuntimeError(f"the CLI fork server exited ({self.process.wait()})")
        answer = json.loads(reply)
        stdout, stderr = (path.read_text(errors="replace") for path in (out, err))
        out.unlink()
        err.unlink()
        if answer["timed_out"]:
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, answer["returncode"], stdout, stderr)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def run_cli(cli_env, tmp_path_factory):
    """Run a repository script (``train.py``, ``evaluate.py``) or module (``lesion.…``) with arguments.

    The working directory is temporary, so runs without ``hydra.run.dir`` leave nothing in the checkout.
    Runs fork from ``tests/cli_server.py`` (libraries imported once); a run whose ``env`` sets a
    ``PYTHON…`` variable, which acts at interpreter start, gets a fresh interpreter instead.
    """
    workdir = tmp_path_factory.mktemp("cwd")
    server = _ForkServer(cli_env, workdir, tmp_path_factory.mktemp("cli-streams"))

    def run(script: str, *overrides: str, check: bool = True, timeout: int = 900,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        module = script if script.startswith("lesion.") else None
        command = [sys.executable, *(["-m", script] if module else [str(REPO / script)]), *overrides]
        environment = {**cli_env, **(env or {})}
        if any(key.startswith("PYTHON") for key in env or {}):
            result = subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True,
                                    timeout=timeout, stdin=subprocess.DEVNULL)
        else:
            result = server.run(command, module, workdir, environment, timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{script} {' '.join(overrides)} exited {result.returncode}:\n{result.stderr[-4000:]}")
        return result

    yield run
    server.close()


@pytest.fixture(scope="session")
def trained_run(run_cli, tmp_path_factory) -> Path:
    """Two epochs of the hierarchical Barata model with focal loss on synthetic ISIC 2018 (tiny)."""
    run_dir = tmp_path_factory.mktemp("run")
    run_cli("train.py", "dataset=synthetic2018", "model=barata", "model.hierarchical=true", "loss=focal",
            "loss.alpha=inverse_frequency", "trainer=cpu", "model.backbone=resnet18", "model.weights=none",
            "dataset.image_size=32", "dataset.batch_size=4", "dataset.num_workers=0", "dataset.synthetic_n=30",
            "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.fixture(scope="session")
def same_probabilities():
    """Check that two ``predictions.csv`` give the same class probabilities, image by image (either order)."""

    def check(expected: Path, actual: Path, classes: list[str], atol: float = 1e-5) -> None:
        want = pd.read_csv(expected).set_index("image")
        got = pd.read_csv(actual).set_index("image").loc[want.index]
        assert np.abs(got[classes].to_numpy() - want[classes].to_numpy()).max() < atol

    return check
