"""A command whose optional extra is not installed refuses in one line naming the extra, before any work."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lesion.demo.run import run as serve
from lesion.errors import LesionError
from lesion.evaluate.run import run as evaluate
from lesion.export.run import run as export

REPO = Path(__file__).resolve().parents[1]
RUNS = {"export": export, "evaluate": evaluate, "demo": serve}


@pytest.mark.parametrize("config, options, package, extra", [
    ("export", [], "onnx", "export"),
    ("export", [], "onnxscript", "export"),
    ("evaluate", ["runtime=onnx", "images=."], "onnxruntime", "export"),
    ("demo", [], "gradio", "demo"),
])
def test_a_missing_extra_is_named_before_any_work(config, options, package, extra, trained_run, monkeypatch, tmp_path):
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    before = sorted(p.name for p in ckpt.parent.iterdir())
    monkeypatch.setitem(sys.modules, package, None)  # `import <package>` fails, as when it is not installed
    if config == "demo":
        monkeypatch.delitem(sys.modules, "lesion.demo.page", raising=False)
    out = tmp_path / "out"
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose(config, overrides=[f"ckpt={ckpt}", *options, *([f"out={out}"] if config != "demo" else [])])
    with pytest.raises(LesionError) as refused:
        RUNS[config](cfg)
    message = str(refused.value)
    assert "\n" not in message and package in message and message.endswith(f'pip install "lesion[{extra}]"')
    assert not out.exists() and sorted(p.name for p in ckpt.parent.iterdir()) == before


def test_the_command_line_prints_the_refusal_in_one_line(trained_run, run_cli, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['onnxruntime'] = None\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = tmp_path / "model.onnx"
    result = run_cli("export.py", f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", f"out={out}", check=False,
                     env=env, timeout=300)  # a fresh interpreter: its env sets PYTHONPATH
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        'lesion: error: format=onnx: needs the package onnxruntime, which is not installed — pip install "lesion[export]"']
    assert not out.exists()
