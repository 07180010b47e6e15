"""A command whose optional extra is not installed refuses in one line naming the extra, before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def without(folder: Path, *packages: str) -> dict[str, str]:
    """Environment of an interpreter in which importing ``packages`` fails, as when they are not installed."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in packages))
    return {"PYTHONPATH": os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.mark.parametrize("script, options, packages, extra", [
    ("export.py", [], ("onnx",), "export"),
    ("export.py", [], ("onnxscript",), "export"),
    ("evaluate.py", ["runtime=onnx", "images=."], ("onnxruntime",), "export"),
    ("demo.py", [], ("gradio",), "demo"),
])
def test_a_missing_extra_is_named_before_any_work(script, options, packages, extra, trained_run, run_cli, tmp_path):
    out = tmp_path / "out"
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    before = sorted(p.name for p in ckpt.parent.iterdir())
    result = run_cli(script, f"ckpt={ckpt}", *options, *([f"out={out}"] if script != "demo.py" else []), check=False,
                     env=without(tmp_path / "site", *packages), timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("lesion: error: ")
    assert f'pip install "lesion[{extra}]"' in result.stderr and packages[0] in result.stderr
    assert not out.exists() and sorted(p.name for p in ckpt.parent.iterdir()) == before
