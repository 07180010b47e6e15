"""The benchmark scripts run end to end at their ``--quick`` sizes and print a finite positive ratio."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RATIO = re.compile(r"^ratio \S+ = (\S+)×", re.MULTILINE)


@pytest.mark.parametrize("script, options", [
    ("train_overhead.py", ["--quick"]),
    ("infer.py", ["--quick"]),
    ("metadata_fusion.py", ["--quick"]),
    ("ensemble.py", ["--quick"]),
    ("onnx_runtime.py", ["--quick"]),
    ("ood.py", ["--quick"]),
    ("unknown.py", ["--quick"]),
])
def test_quick_run_prints_a_ratio(script, options, cli_env, tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *options], cwd=tmp_path,
                            env={**cli_env, "LESION_CACHE": str(tmp_path / "cache")}, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    found = RATIO.findall(result.stdout)
    assert len(found) == 1, result.stdout
    ratio = float(found[0])
    assert math.isfinite(ratio) and ratio > 0


def test_quick_loader_benchmark_prints_both_ratios_for_each_image_set(uda1, cli_env, tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "loader.py"), "--quick", "--data", str(uda1)],
                            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    found = re.findall(r"^(.+): epoch throughput (\S+)× naive, cache build (\S+)× faster", result.stdout, re.MULTILINE)
    assert [name for name, *_ in found] == ["UDA-1 train, all", "UDA-1 train, originals", "12 MP copies"]
    assert all(math.isfinite(float(v)) and float(v) > 0 for _, *ratios in found for v in ratios)


def test_quick_real_data_benchmark_prints_the_model_and_the_floor(uda1, cli_env, tmp_path):
    # One model: both go through the same loop, and the benchmark's own run covers both.
    result = subprocess.run([sys.executable, str(BENCHMARKS / "real_uda1.py"), "--quick", "--ensemble",
                             "--models", "barata", "--data", str(uda1)],
                            cwd=tmp_path, env={**cli_env, "LESION_CACHE": str(tmp_path / "cache")}, capture_output=True,
                            text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    floor = re.search(r"colour-histogram logistic regression: MEL AUC (\S+)", result.stdout)
    assert floor and 0.5 < float(floor.group(1)) < 1, result.stdout
    for name in ("MEL AUC", "last-epoch MEL AUC"):
        found = re.search(rf"^  barata\s+{name} (\S+) ± (\S+) over 1 seed", result.stdout, re.MULTILINE)
        assert found and 0 <= float(found.group(1)) <= 1, result.stdout
    assert re.search(r"^  barata\s+seed\s+\d+: .*\(best.ckpt, epoch \d+\); last epoch: MEL AUC", result.stdout,
                     re.MULTILINE), result.stdout
    ensemble = r"^  barata\s+ensemble of seeds 42 \(flips \+ 4 crops\): MEL AUC ([\d.]+), BACC ([\d.]+)$"
    found = re.search(ensemble, result.stdout, re.MULTILINE)
    assert found and 0 <= float(found.group(1)) <= 1, result.stdout


@pytest.mark.slow
def test_scale_benchmark_prints_every_stage_at_each_size_and_the_projection(cli_env, tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "scale.py"), "--sizes", "200,400", "--work",
                             str(tmp_path / "work")], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                            timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    stages = ["read", "cache", "splits", "smote", "hash", "search", "pairs", "evaluate"]
    for n in (200, 400):
        table = result.stdout.split(f"\nn = {n} ")[1]
        for stage in stages:
            wall, _, cpu = re.search(rf"^  {stage} +(\S+) +(\S+) +(\S+)", table, re.MULTILINE).groups()
            assert float(wall) >= 0 and float(cpu) >= 0
    fit = result.stdout.split("Growth exponents")[1]
    for stage in stages:
        exponents = re.search(rf"^  {stage} +(\S+) +(\S+)", fit, re.MULTILINE).groups()
        assert all(math.isfinite(float(e)) for e in exponents), fit
    assert re.search(r"cache on disk \d+\.\d GiB", fit) and re.search(r"^  all +\d+ +\d+", fit, re.MULTILINE), fit
