"""ONNX export (``torch.onnx.export``, the dynamo exporter) and prediction through ONNX Runtime.

The graph is :class:`lesion.export.graph.ProbabilityGraph` with inputs ``image`` (B×3×H×W) and,
for a metadata net, ``metadata`` (B×D), output ``probabilities`` (B×K); the batch dimension is
dynamic. The preprocessing record (:mod:`lesion.export.preprocessing`) is stored in the model's
``metadata_props``, one JSON value per key.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings

import numpy as np
import torch

from lesion.errors import LesionError
from lesion.export.graph import ProbabilityGraph

OPSET = 18
_EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")
_INSTALL = 'pip install "lesion[export]"'


def require_onnx(where: str) -> None:
    """Refuse, before any work, when ``onnx``, ``onnxruntime`` or ``onnxscript`` (the exporter's) is not installed."""
    for package in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise LesionError(where, f"needs the package {package}, which is not installed", _INSTALL) from None


def onnx_bytes(graph: ProbabilityGraph, record: dict, size: int, opset: int = OPSET) -> bytes:
    """The serialised ONNX model of ``graph`` at input side ``size``, with ``record`` in its metadata."""
    import onnx

    graph = graph.eval()
    inputs = graph.example_inputs(size)
    names = ["image", "metadata"][:len(inputs)]
    batch = torch.export.Dim("batch", min=1)
    # The exporter's notes on its own passes and opset conversion; what matters is checked below.
    quiet = {name: logging.getLogger(name) for name in _EXPORTER_LOGGERS}
    levels = {name: logger.level for name, logger in quiet.items()}
    for logger in quiet.values():
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, inputs, input_names=names, output_names=["probabilities"],
                                        dynamic_shapes=tuple({0: batch} for _ in inputs), opset_version=opset,
                                        dynamo=True, verbose=False)
    finally:
        for name, logger in quiet.items():
            logger.setLevel(levels[name])
    model = program.model_proto
    made = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    if made != opset:  # the exporter falls back to its own opset when it cannot convert to the one asked for
        raise LesionError("opset", f"the exporter could not convert the graph to opset {opset} (it made {made})",
                          f"use opset={made}")
    for key, value in record.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=json.dumps(value)))
    return model.SerializeToString()


def read_record(model: bytes) -> dict:
    """The preprocessing record stored in a serialised ONNX model."""
    import onnx

    return {entry.key: json.loads(entry.value) for entry in onnx.load_from_string(model).metadata_props}


class OnnxRuntimeGraph:
    """A serialised ONNX model run by ONNX Runtime on the CPU, called like the torch graph."""

    def __init__(self, model: bytes):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, image: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """Args: image: B×3×H×W; metadata: B×D when the model takes it. Returns: B×K probabilities."""
        feeds = {"image": image.detach().cpu().numpy().astype(np.float32)}
        if "metadata" in self.inputs:
            feeds["metadata"] = metadata.detach().cpu().numpy().astype(np.float32)
        return torch.from_numpy(self.session.run(["probabilities"], feeds)[0])
