"""benchmarks/gpu_check.py: without CUDA it says so and exits 0; with --allow-cpu it runs every part of the
check on the CPU, the project on PYTHONPATH and not installed, and ends with the whole table, each figure a number."""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
HEADS = ("baseline", "barata")
PRECISIONS = ("fp32", "bf16-mixed + CL")
LOADERS = ("default loader", "loader on 8 cores")
FAST = "bf16-mixed + CL"


def expected_rows() -> dict[str, str]:
    """Every row of the table, in order: its name → the goal it states ("" for none)."""
    rows = {"train.py dataset=synthetic2018 balance=smote_tomek loss=focal": "",
            "evaluate.py, TTA 32 views + Grad-CAM": ""}
    rows.update({f"(a) model alone, {head}, {precision}": "" for head in HEADS for precision in PRECISIONS})
    rows.update({f"(b) input pipeline alone, {loader}": "" for loader in LOADERS})
    for head, precision, loader in itertools.product(HEADS, PRECISIONS, LOADERS):
        config = f"{head}, {precision}, {loader}"
        rows[f"(c) real training, {config}"] = "≥ 3,500 img/s" if precision == FAST else ""
        rows[f"(c)/(a), {config}"] = "≥ 0.9"
        rows[f"SM utilisation during (c), {config}"] = "≥ 90 %"
    rows.update({f"compile=true, barata, {FAST}: first step (compilation)": "",
                 f"compile=true, barata, {FAST}: steady img/s ÷ (a)": "",
                 "prediction, barata": "≥ 5,000 img/s",
                 "prediction, barata, TTA 32 views (tta.flips=true tta.crops=4)": "≥ 250 img/s",
                 "Grad-CAM, barata (explain_batch)": "≥ 100 img/s"})
    return rows


FIGURE = re.compile(r"^([\d,]+(?:\.\d+)?) ?(img/s|s|×|%)$")

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what the script does without CUDA")


def run_check(*options: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The script as its docstring runs it: the project on PYTHONPATH, not installed."""
    return subprocess.run([sys.executable, str(SCRIPT), *options], cwd=cwd, env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The Markdown table that ends the output: name → [figure, goal, met]."""
    lines = stdout.rstrip().splitlines()
    start = lines.index("| what | figure | goal | met |")
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[start + 2:]]
    assert start + 2 + len(rows) == len(lines) and all(len(cells) == 4 for cells in rows), stdout
    return {cells[0]: cells[1:] for cells in rows}


@needs_no_gpu
def test_without_cuda_and_without_allow_cpu_it_says_so_and_exits_0(cli_env, tmp_path):
    result = run_check(cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.startswith("gpu_check: no CUDA GPU visible, nothing checked")
    assert "|" not in result.stdout


@needs_no_gpu
@pytest.mark.slow
def test_allow_cpu_runs_every_part_and_prints_every_row_with_a_figure(cli_env, tmp_path):
    result = run_check("--allow-cpu", cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = table_rows(result.stdout)
    expected = expected_rows()
    assert list(rows) == list(expected)
    figures = {}
    for name, (figure, goal, met) in rows.items():
        assert goal == expected[name], name
        if name.startswith("SM utilisation"):  # nvidia-smi samples a GPU only
            assert (figure, met) == ("n/a: no GPU", ""), name
            continue
        found = FIGURE.match(figure)
        assert found, f"{name}: {figure}"
        figures[name] = float(found.group(1).replace(",", ""))
        assert math.isfinite(figures[name]) and figures[name] > 0, name
        command = name.endswith("loss=focal") or name.startswith("evaluate.py")
        assert met in ({"pass"} if command else {"yes", "no"} if goal else {""}), name
    # Each ratio divides the figures of its own configuration (up to their rounding in the table).
    for head, precision, loader in itertools.product(HEADS, PRECISIONS, LOADERS):
        alone = figures[f"(a) model alone, {head}, {precision}"]
        real = figures[f"(c) real training, {head}, {precision}, {loader}"]
        ratio = figures[f"(c)/(a), {head}, {precision}, {loader}"]
        rounding = 1 / alone + 1 / real + 0.01  # both figures are printed in whole img/s
        assert ratio == pytest.approx(real / alone, rel=rounding, abs=0.006), (head, precision, loader)
