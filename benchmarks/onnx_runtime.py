"""ONNX Runtime against torch eager on the CPU, for both heads, in one process.

    python benchmarks/onnx_runtime.py [--quick] [--backbone resnet50] [--size 224] [--batch 8] [--repeats 5]

Builds each head's net (``model=baseline`` and the hierarchical ``model=barata``, random weights:
speed does not depend on them), exports it as ``export.py`` does (:func:`lesion.export.onnx.onnx_bytes`)
and times the same batch through torch (``torch.no_grad``, eval mode) and through ONNX Runtime's CPU
provider, each the best of ``--repeats`` after one warm-up call, both with the process's default
threads. Prints each head's times and the largest probability difference, then the ratio of the
summed times, ONNX Runtime / torch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lesion.export.graph import ProbabilityGraph
from lesion.export.onnx import OnnxRuntimeGraph, onnx_bytes
from lesion.train.run import compose_classifier

REPO = Path(__file__).resolve().parents[1]
HEADS = {"baseline": ["model=baseline"], "barata": ["model=barata", "model.hierarchical=true"]}


def best_time(call, batch: torch.Tensor, repeats: int) -> float:
    """Best wall time of ``call(batch)`` over ``repeats``, after one warm-up call."""
    call(batch)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call(batch)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18 at 32 px, batch 4, 2 repeats")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.backbone, args.size, args.batch, args.repeats = "resnet18", 32, 4, 2
    batch = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    print(f"{args.backbone}, {args.size} px, batch {args.batch}, best of {args.repeats}, "
          f"{torch.get_num_threads()} torch threads")
    totals = {"torch": 0.0, "onnxruntime": 0.0}
    for head, overrides in HEADS.items():
        module = compose_classifier(REPO / "conf", [*overrides, f"model.backbone={args.backbone}", "model.weights=none",
                                                    "dataset=synthetic2018", f"dataset.image_size={args.size}"])
        graph = ProbabilityGraph([module.net]).eval()
        exported = OnnxRuntimeGraph(onnx_bytes(graph, {}, args.size))
        with torch.no_grad():
            eager = best_time(graph, batch, args.repeats)
            difference = float((exported(batch) - graph(batch)).abs().max())
        runtime = best_time(exported, batch, args.repeats)
        totals["torch"] += eager
        totals["onnxruntime"] += runtime
        print(f"  {head:9s} torch {eager * 1000:8.1f} ms  onnxruntime {runtime * 1000:8.1f} ms  "
              f"({runtime / eager:.2f}×; max |Δp| {difference:.1e})")
    print(f"ratio onnxruntime/torch = {totals['onnxruntime'] / totals['torch']:.2f}×")


if __name__ == "__main__":
    main()
