"""TorchScript export: :class:`lesion.export.graph.ProbabilityGraph` traced (``torch.jit.trace``),
with the preprocessing record in the extra file ``lesion.json``.

Load it with ``torch.jit.load(path, _extra_files={"lesion.json": ""})``. Tracing records the
operations of one batch; the graph has no branch on the batch size, so any batch size runs.
"""

from __future__ import annotations

import io
import json
import warnings

import torch

from lesion.export.graph import ProbabilityGraph

RECORD_FILE = "lesion.json"


def torchscript_bytes(graph: ProbabilityGraph, record: dict, size: int) -> bytes:
    """The saved TorchScript module of ``graph`` at input side ``size``, with ``record``."""
    graph = graph.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        traced = torch.jit.trace(graph, graph.example_inputs(size), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={RECORD_FILE: json.dumps(record)})
    return buffer.getvalue()


def load_torchscript(data: bytes) -> tuple[torch.jit.ScriptModule, dict]:
    """The traced module and its record, from :func:`torchscript_bytes`'s output."""
    extra = {RECORD_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra[RECORD_FILE])
