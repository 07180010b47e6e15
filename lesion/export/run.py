"""``run(cfg)``: export a checkpoint, or a mean ensemble of them, to one ONNX or TorchScript file.

Called by ``export.py`` and tests. The exported graph is checked against the torch model on
random inputs before the file and its record (:func:`lesion.export.preprocessing.record_file`)
are written (atomically): a file that does not reproduce the model's probabilities is never left
behind, and neither is a refused export's record.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lesion.errors import LesionError
from lesion.evaluate.ensemble import member_checkpoints
from lesion.export.graph import ProbabilityGraph
from lesion.export.onnx import OnnxRuntimeGraph, onnx_bytes, require_onnx
from lesion.export.preprocessing import ensemble_record, preprocessing_record, record_file
from lesion.export.torchscript import load_torchscript, torchscript_bytes
from lesion.files import atomic_path, output_file, write_json
from lesion.options import check_export
from lesion.train.module import LesionClassifier

log = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
# How far the exported graph's probabilities may be from the torch model's on the check inputs.
TOLERANCE = 1e-4


def exported_graph(modules: list[LesionClassifier], names: list[str]) -> tuple[ProbabilityGraph, dict]:
    """The graph of ``modules`` (one, or a mean ensemble) and its preprocessing record."""
    record = ensemble_record([preprocessing_record(m.hparams) for m in modules], names)
    return ProbabilityGraph([m.net for m in modules]).eval(), record


def _output(cfg: DictConfig, members: list[Path]) -> Path:
    if cfg.out is not None:
        return Path(cfg.out).expanduser()
    if len(members) > 1:
        raise LesionError("out", "is needed for an ensemble (there is no one checkpoint to put it next to)",
                          f"pass out=<file{SUFFIXES[cfg.format]}>")
    return members[0].with_suffix(SUFFIXES[cfg.format])


def _largest_difference(graph: ProbabilityGraph, run_exported, size: int) -> float:
    """Max |Δ probability| between ``graph`` and the exported one on random inputs of two batch sizes."""
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in (1, 3):
        inputs = [torch.randn(batch, *t.shape[1:], generator=generator) for t in graph.example_inputs(size)]
        with torch.no_grad():
            worst = max(worst, float((run_exported(*inputs) - graph(*inputs)).abs().max()))
    return worst


def run(cfg: DictConfig) -> Path:
    """Export ``cfg.ckpt`` as ``cfg.format`` to ``cfg.out`` (default: next to the checkpoint).

    Returns:
        The model file written (its record is written beside it, :func:`record_file`).
    """
    check_export(OmegaConf.to_container(cfg, resolve=True))
    if cfg.format == "onnx":
        require_onnx("format=onnx")
    paths = member_checkpoints(OmegaConf.to_container(cfg.ckpt) if not isinstance(cfg.ckpt, str) else cfg.ckpt)
    out = output_file("out", _output(cfg, paths), "model" + SUFFIXES[cfg.format])
    if record_file(out).is_dir():
        raise LesionError("out", f"{record_file(out)} is a folder, and the model's record is written there",
                          "pass another out=FILE, or move the folder away")
    if any(out.resolve() == p.resolve() for p in paths):
        raise LesionError("out", f"{out} is the checkpoint being exported", "pass another out=FILE")
    modules = [LesionClassifier.load_from_checkpoint(p, "cpu", weights_only=not cfg.trust_checkpoint) for p in paths]
    graph, record = exported_graph(modules, [str(p) for p in paths])
    size = record["input_size"]
    if cfg.format == "onnx":
        data = onnx_bytes(graph, record, size, cfg.opset)
        run_exported = OnnxRuntimeGraph(data)
    else:
        data = torchscript_bytes(graph, record, size)
        run_exported = load_torchscript(data)[0]
    difference = _largest_difference(graph, run_exported, size)
    if not difference <= TOLERANCE:
        raise LesionError("ckpt", f"its {cfg.format} export gives probabilities that differ from the model's by "
                          f"{difference:.2e} (over {TOLERANCE:.0e}), so no file was written",
                          "export with the other format, and report the checkpoint's model options")
    try:
        with atomic_path(out) as tmp:  # the record first: a model file is never without its record
            tmp.write_bytes(data)
            write_json(record_file(out), record)
    except OSError as error:
        raise LesionError("out", f"{out} cannot be written ({error.strerror or error})",
                          "pass out=<a file in a folder you can write to>") from None
    log.info("%s (%s, %d member%s, classes %s; max |Δp| against torch %.1e) → %s (record: %s)", cfg.format,
             record["model"], len(paths), "s" if len(paths) > 1 else "", ", ".join(record["classes"]), difference, out,
             record_file(out).name)
    return out
