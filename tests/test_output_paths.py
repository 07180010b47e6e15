"""``out`` of evaluate.py and eda.py (a folder) and of export.py (a file): a path a file is in the way of is
refused in one line (exit 2) before any work, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lesion.errors import LesionError
from lesion.files import output_file, output_folder, write_atomic

# Relative paths of up to four parts over a small alphabet, so that generated files and folders collide.
PARTS = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4).map(lambda parts: Path(*parts))


def tree(root: Path, folders: list[Path], files: list[Path]) -> None:
    """Make what can be made of ``folders`` and then ``files`` (a path already taken stays as it is)."""
    for folder in folders:
        try:
            (root / folder).mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
    for file in files:
        try:
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            (root / file).write_text("taken")
        except OSError:
            pass


def refused(check, *args) -> bool:
    try:
        check("out", *args)
    except LesionError:
        return True
    return False


@settings(max_examples=60, deadline=None)
@given(folders=st.lists(PARTS, max_size=3), files=st.lists(PARTS, max_size=3), out=PARTS)
def test_an_output_folder_is_refused_exactly_when_it_cannot_be_made(tmp_path_factory, folders, files, out):
    root = tmp_path_factory.mktemp("tree")
    tree(root, folders, files)
    was_refused = refused(output_folder, root / out)
    try:
        (root / out).mkdir(parents=True, exist_ok=True)
        made = True
    except OSError:
        made = False
    assert was_refused == (not made)


@settings(max_examples=60, deadline=None)
@given(folders=st.lists(PARTS, max_size=3), files=st.lists(PARTS, max_size=3), out=PARTS)
def test_an_output_file_is_refused_exactly_when_it_cannot_be_written(tmp_path_factory, folders, files, out):
    root = tmp_path_factory.mktemp("tree")
    tree(root, folders, files)
    was_refused = refused(output_file, root / out, "model.onnx")
    try:
        write_atomic(root / out, "written")
        written = True
    except OSError:
        written = False
    assert was_refused == (not written)


# command → (its options besides out, out given as a path inside the file in the way)
COMMANDS = {
    "evaluate": (["ckpt={tmp}/a.ckpt"], "{file}/reports"),
    "eda": (["dataset=synthetic2018"], "{file}/reports"),
    "export": (["ckpt={tmp}/a.ckpt"], "{file}/model.onnx"),
}
CASES = [("evaluate", "{file}"), ("eda", "{file}"), *((command, inside) for command, (_, inside) in COMMANDS.items())]


@pytest.mark.parametrize("command, out", CASES)
def test_out_with_a_file_in_the_way_is_one_line_exit_2_before_any_work(run_cli, tmp_path, command, out):
    file = tmp_path / "notes.txt"
    file.write_text("kept")
    options, _ = COMMANDS[command]
    out = out.format(file=file)
    result = run_cli(f"{command}.py", *(o.format(tmp=tmp_path) for o in options), f"out={out}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    problem = f"{out} is a file, not a folder" if out == str(file) else f"{out} is inside {file}, which is a file"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lesion: error: out: {problem}"), result.stderr[-2000:]
    assert file.read_text() == "kept" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
