"""A command answers ``--help``, ``--cfg`` and a refused option without importing torch, Lightning or any other
heavy library: they are imported only when a command's work starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "torchmetrics", "pytorch_lightning", "lightning", "albumentations", "kornia",
         "sklearn", "matplotlib")
# Runs a script as `python SCRIPT ARGS…` would, then records its exit status and the heavy modules it imported.
_PROBE = """
import json, runpy, sys
record, heavy, script, *argv = sys.argv[1:]
sys.argv = [script, *argv]
try:
    runpy.run_path(script, run_name="__main__")
    status = 0
except SystemExit as end:
    status = end.code
with open(record, "w") as file:
    json.dump({"status": status, "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(heavy.split(",")))}, file)
"""

ANSWERS = {  # command line → exit status (0: answered; 2: refused by lesion; 1: refused by Hydra itself)
    "train.py --help": 0,
    "train.py --cfg job": 0,
    "train.py --cfg job experiment=g9_3": 0,
    "train.py trainer.max_epochs=-1": 2,
    "evaluate.py --help": 0,
    "evaluate.py ckpt=x.ckpt nonsense=1": 1,
    "evaluate.py ckpt=x.ckpt +nonsense=1": 2,
    "evaluate.py ckpt=x.ckpt bootstrap=0": 2,
    "eda.py --help": 0,
    "eda.py samples.per_class=99": 2,
    "export.py --help": 0,
    "export.py ckpt=x.ckpt opset=7": 2,
    "demo.py --help": 0,
    "demo.py ckpt=x.ckpt port=0": 2,
    "demo.py ckpt=x.ckpt device=gpu": 2,
    "stack.py --help": 0,
    "stack.py sweep=x seeds=[]": 2,
}


@pytest.mark.parametrize("command", sorted(ANSWERS))
def test_help_cfg_and_refusals_import_no_heavy_library(command, cli_env, tmp_path):
    script, *argv = command.split()
    record = tmp_path / "record.json"
    result = subprocess.run([sys.executable, "-c", _PROBE, str(record), ",".join(HEAVY), str(REPO / script), *argv],
                            check=False, cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300)
    seen = json.loads(record.read_text())
    assert seen["status"] == ANSWERS[command], result.stderr[-3000:]
    if seen["status"] == 2:
        assert result.stderr.strip().splitlines()[-1].startswith("lesion: error: "), result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    else:
        assert result.stdout.strip() or seen["status"] == 1, result.stderr[-3000:]
    assert seen["heavy"] == [], f"{command} imported {seen['heavy']}"
    assert [p.name for p in tmp_path.iterdir()] == [record.name]  # a refused run leaves no folder behind
