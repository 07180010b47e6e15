"""A refused ``train.py`` run (bad data found after the options were accepted) is one error line, exit 2, and
leaves the files around it as it found them: no new run folder, and a resumed run's folder untouched."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from PIL import Image

from lesion.data.synthetic import write_synthetic
from lesion.files import write_atomic
from lesion.hydra_record import FolderState, discard_refused

SMALL = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
         "dataset.batch_size=4", "dataset.num_workers=0", "trainer.max_epochs=1"]


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (``None``) under ``folder``, by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def assert_refused(result, says: str) -> None:
    """Exit 2, no traceback, and one ``lesion: error:`` line, the last, containing ``says``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [line for line in lines if line.startswith("lesion: error: ")] == lines[-1:], result.stderr[-3000:]
    assert says in lines[-1], lines[-1]


def own_images(root: Path, n: int = 8) -> pd.DataFrame:
    """``n`` tiny images of two classes in ``root``; returns their ``image,diagnosis`` table."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"img{k}.png")
    return pd.DataFrame({"image": [f"img{k}" for k in range(n)], "diagnosis": ["MEL", "NV"] * (n // 2)})


def _missing_dataset(tmp_path: Path) -> tuple[list[str], dict, str]:
    # Plain `python train.py` on a fresh clone: the default dataset's folder is not there.
    return [], {"LESION_DATA": str(tmp_path / "data")}, f"{tmp_path / 'data' / 'isic2018'}: dataset folder not found"


def _csv_with(edit):
    def make(tmp_path: Path) -> tuple[list[str], dict, str]:
        frame, says = edit(own_images(tmp_path / "mine"), tmp_path / "mine")
        frame.to_csv(tmp_path / "mine" / "labels.csv", index=False)
        return ["dataset=csv", f"dataset.root={tmp_path / 'mine'}", "dataset.csv=labels.csv",
                "dataset.label_column=diagnosis", *SMALL], {}, says
    return make


def _unreadable_img5(frame: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, str]:
    (root / "img5.png").write_bytes(b"not an image")
    return frame, f"{root}:img5.png: cannot be decoded as an image"


REFUSALS = {
    "missing dataset folder": _missing_dataset,
    "empty label": _csv_with(lambda f, _: (f.assign(diagnosis=[""] + f["diagnosis"].tolist()[1:]),
                                        "row 2 (id img0), column diagnosis: empty cell")),
    "duplicate rows": _csv_with(lambda f, _: (pd.concat([f, f.iloc[[3]]]), "id img3 appears more than once")),
    "unreadable image": _csv_with(_unreadable_img5),
}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_refused_run_leaves_no_run_folder(run_cli, tmp_path, refusal):
    overrides, env, says = REFUSALS[refusal](tmp_path)
    before = tree(tmp_path)
    result = run_cli("train.py", *overrides, f"hydra.run.dir={tmp_path / 'run'}", check=False, env=env)
    assert_refused(result, says)
    assert not (tmp_path / "run").exists()
    assert tree(tmp_path) == before


def _gone(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path / "gone", f"{tmp_path / 'gone'}: dataset folder not found"


def _bad_validation_label(tmp_path: Path) -> tuple[Path, str]:
    # Refused reading the validation CSV, after reading the training split logged its unlisted image.
    root = write_synthetic("isic2018", tmp_path / "data", n=30, seed=0)
    training = root / "ISIC2018_Task3_Training_GroundTruth.csv"
    training.write_text("".join(training.read_text().splitlines(keepends=True)[:-1]))
    validation = root / "ISIC2018_Task3_Validation_GroundTruth.csv"
    pd.read_csv(validation, dtype=str).assign(MEL="").to_csv(validation, index=False)
    return root, f"{validation}: row 2 (id ISIC_0000030), column MEL: empty cell"


@pytest.mark.parametrize("dataset", [_gone, _bad_validation_label], ids=["folder gone", "bad label"])
def test_a_refused_resume_leaves_the_run_folder_as_it_was(run_cli, trained_run, tmp_path, dataset):
    run_dir = shutil.copytree(trained_run, tmp_path / "run")
    root, says = dataset(tmp_path)
    before = tree(tmp_path)
    overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    result = run_cli("train.py", *overrides, "dataset.synthetic=false", f"dataset.root={root}", "ckpt_path=last",
                     f"hydra.run.dir={run_dir}", check=False)
    assert_refused(result, says)
    assert tree(tmp_path) == before


def test_a_refused_sweep_job_is_recorded_with_its_error(run_cli, tmp_path):
    """In a sweep the refused job is a failed job: its folder holds the record and the error, nothing else."""
    sweep = tmp_path / "sweep"
    overrides, _, says = REFUSALS["duplicate rows"](tmp_path)
    result = run_cli("train.py", "-m", *overrides, "seed=1,2", f"hydra.sweep.dir={sweep}", check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert says in (sweep / job / "error.txt").read_text()
        made = {p.relative_to(sweep / job).as_posix() for p in (sweep / job).rglob("*") if p.is_file()}
        assert made == {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "error.txt", "train.log"}


_PATHS = st.lists(st.sampled_from(["a", "b", "logs"]), min_size=1, max_size=3).map(lambda parts: Path(*parts))
_FILES = st.lists(st.tuples(_PATHS, st.binary(max_size=8)), max_size=6)


def _write(root: Path, files: list[tuple[Path, bytes]]) -> None:
    """Write each new file that fits the tree (no file where a folder is, or the reverse)."""
    for path, data in files:
        target = root / path
        if not any(p.is_file() for p in target.parents) and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(found=_FILES, resumed=st.booleans(), others=_FILES, logged=st.lists(st.text(max_size=8), max_size=3),
       recorded=st.booleans())
def test_discard_refused_puts_the_folder_back_unless_the_run_started(tmp_path_factory, found, resumed, others,
                                                                     logged, recorded):
    """What the job wrote is undone (its log, the folder Hydra made), what others wrote is kept, and a job that
    wrote its record had started: its folder stays as it is."""
    root = tmp_path_factory.mktemp("job") / "run"
    _write(root, found)
    if resumed:  # the record and log of the run this job resumes
        write_atomic(root / ".hydra" / "config.yaml", "seed: 1\n")
        (root / "train.log").write_text("[the first run's log]\n")
    root.mkdir(exist_ok=True)  # Hydra makes the job's folder
    job_log = logging.FileHandler(root / "train.log", delay=True)  # as Hydra's job logging
    logging.getLogger().addHandler(job_log)
    try:
        before = FolderState.of(root)
        _write(root, others)  # another process
        expected = tree(root)
        for line in logged:
            logging.getLogger("lesion.job").warning(line)
        if recorded:
            write_atomic(root / ".hydra" / "config.yaml", "seed: 1\n")  # the same text, written again
        made = tree(root)
        discard_refused(before)
    finally:
        logging.getLogger().removeHandler(job_log)
        job_log.close()
    if recorded:
        assert tree(root) == made
    elif expected:
        assert tree(root) == expected
    else:
        assert not root.exists()


def test_discard_refused_removes_the_empty_folders_above_the_run_up_to_the_working_folder(tmp_path):
    """A first run refused in a fresh clone leaves no ``outputs/train/``; folders holding anything else, the
    working folder and folders outside it stay."""
    workdir, elsewhere = tmp_path / "clone", tmp_path / "elsewhere"
    for run in (workdir / "outputs" / "train" / "run", workdir / "kept" / "train" / "run", elsewhere / "run"):
        run.mkdir(parents=True)
    (workdir / "kept" / "notes.txt").write_text("the user's\n")
    for run in (workdir / "outputs" / "train" / "run", workdir / "kept" / "train" / "run", elsewhere / "run"):
        discard_refused(replace(FolderState.of(run), workdir=workdir))
    assert tree(tmp_path) == {"clone": None, "clone/kept": None, "clone/kept/notes.txt": b"the user's\n",
                              "elsewhere": None}
