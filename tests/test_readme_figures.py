"""The README's figures are what its commands print today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAST_LINE = re.compile(r"validation: bacc (\d\.\d{4}) \(epoch (\d+)\); test: bacc (\d\.\d{4}), auc_macro (\d\.\d{4})")


@pytest.mark.slow
def test_the_quickstart_prints_the_figures_the_readme_quotes(run_cli, tmp_path):
    """``python train.py experiment=quickstart`` on a fresh cache ends with the README's line (to 0.01: a
    figure left stale by a change to the code it describes fails; float noise between CPUs does not)."""
    quoted = LAST_LINE.findall((REPO / "README.md").read_text())
    assert quoted, "the README quotes no quickstart line"
    result = run_cli("train.py", "experiment=quickstart", f"hydra.run.dir={tmp_path / 'run'}")
    printed = LAST_LINE.findall(result.stdout + result.stderr)
    assert printed, f"the quickstart printed no result line:\n{result.stderr[-2000:]}"
    readme, fresh = quoted[0], printed[-1]
    for name, k in (("validation bacc", 0), ("test bacc", 2), ("test auc_macro", 3)):
        assert abs(float(readme[k]) - float(fresh[k])) <= 0.01, (
            f"README quotes {name} {readme[k]}, the quickstart prints {fresh[k]}: "
            "refresh the README's figures with python benchmarks/quickstart.py")
