"""Sweep summary of two-class data: pAUC80 columns, and the ranking by what the runs chose checkpoints by."""

from __future__ import annotations

from pathlib import Path

import pytest

from lesion.evaluate.summary import ensemble_commands, markdown, summarize
from lesion.files import write_json
from test_summary import BASE, merged, write_job

CLASSES = ["benign", "malignant"]
# setting → {seed: (val BACC, val pAUC80, test pAUC80)}: BACC ranks "wide" first, pAUC80 ranks "tight" first.
SETTINGS = {"wide": {1: (0.80, 0.10, 0.11), 2: (0.78, 0.12, 0.09)},
            "tight": {1: (0.60, 0.16, 0.15), 2: (0.62, 0.18, 0.13)}}


def two_class_sweep(root: Path, monitor: str) -> Path:
    job = 0
    for name, seeds in SETTINGS.items():
        config = merged(BASE, {"name": name, "callbacks": {"best_checkpoint": {"monitor": monitor}}})
        for seed, (val_bacc, val_pauc, test_pauc) in seeds.items():
            job_dir = root / str(job)
            write_job(job_dir, {**config, "seed": seed}, {"dataset": "isic2024"}, [f"seed={seed}"], 0.5)
            (job_dir / "checkpoints").mkdir()
            (job_dir / "checkpoints" / "best.ckpt").write_bytes(b"")
            write_json(job_dir / "test_metrics.json", {"bacc": 0.5, "auc_macro": 0.7, "pauc80": test_pauc,
                                                       "classes": CLASSES, "recall/benign": 0.9,
                                                       "recall/malignant": 0.1})
            write_json(job_dir / "val_metrics.json", {"bacc": val_bacc, "pauc80": val_pauc, "epoch": 3})
            job += 1
    return root


@pytest.mark.parametrize("monitor, first, metric", [("val/bacc", "wide", "bacc"), ("val/pauc80", "tight", "pauc80")])
def test_a_two_class_sweep_is_ranked_by_the_metric_its_checkpoints_were_chosen_by(tmp_path, monitor, first, metric):
    root = two_class_sweep(tmp_path / "sweep", monitor)
    frame = summarize(root)
    assert frame.attrs["ranked_by"] == metric
    assert frame["experiment"].tolist()[0] == first
    tight = frame.set_index("experiment").loc["tight"]
    assert tight["val_pauc80_mean"] == pytest.approx(0.17) and tight["val_pauc80_std"] == pytest.approx(0.0141421, abs=1e-6)
    assert tight["pauc80_mean"] == pytest.approx(0.14)
    table = markdown(frame)
    header = table.splitlines()[0]
    assert "| val pAUC80 |" in header and "| pAUC80 |" in header
    assert "0.170 ± 0.014" in table.splitlines()[2 if first == "tight" else 3]
    (command,) = [c for c in ensemble_commands(root) if "top" in c]
    assert command.startswith(f"# the top 3 runs by validation {'pAUC80' if metric == 'pauc80' else 'BACC'}")
    members = command.split("ckpt=[", 1)[1].rstrip("]'").split(",")
    best_job = "0" if metric == "bacc" else "3"  # 0.80 val BACC; 0.18 val pAUC80
    assert Path(members[0]).parent.parent.name == best_job


def test_a_seven_class_sweep_has_no_pauc_columns(tmp_path):
    root = two_class_sweep(tmp_path / "sweep", "val/pauc80")
    for metrics in root.rglob("test_metrics.json"):
        write_json(metrics, {"bacc": 0.5, "auc_macro": 0.7, "classes": ["A", "B", "C"]})
    frame = summarize(root)
    assert not [column for column in frame.columns if "pauc" in column]
    assert frame.attrs["ranked_by"] == "bacc"
