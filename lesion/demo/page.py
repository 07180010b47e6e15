"""The Gradio page: an upload box, and for each image its class probabilities (a bar chart and a
table), its Grad-CAM overlay, a warning when it is unlike the training data (flagged ``unknown``),
and the model's name, training data and classes under a standing notice that this is a research
tool, not a diagnosis. Its one API endpoint is ``/classify``.

Every outcome is shown on the page: a file that cannot be read gets its one-line reason, and an
unexpected failure a short message (its traceback goes to the server's log, never to the page).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import gradio as gr
import matplotlib
import pandas as pd

from lesion.demo.classify import PageModel, Result

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 — after choosing the non-interactive backend

log = logging.getLogger(__name__)

NOTICE = ("**Research tool, not a diagnosis.** The model's output is a statistical estimate from "
          "dermoscopy images alone; it has not been validated for clinical use. Do not use it to decide "
          "on anyone's care.")
UNKNOWN_WARNING = ("⚠ unlike the images the model was trained on (out-of-distribution score above its threshold): "
                   "this probability means little")


def _chart(results: list[Result], classes: list[str]):
    """One horizontal bar chart of the class probabilities per classified image."""
    shown = [r for r in results if r.probabilities is not None]
    if not shown:
        return None
    figure, axes = plt.subplots(len(shown), 1, figsize=(6, 0.35 * len(classes) * len(shown) + 0.6), squeeze=False)
    for ax, result in zip(axes[:, 0], shown):
        ax.barh(classes[::-1], result.probabilities[::-1], color="tab:blue")
        ax.set_xlim(0, 1)
        ax.set_title(result.name, fontsize=9)
        for y, p in enumerate(result.probabilities[::-1]):
            ax.text(min(p + 0.01, 0.9), y, f"{p:.3f}", va="center", fontsize=8)
    figure.tight_layout()
    plt.close(figure)
    return figure


def _summary(results: list[Result], classes: list[str]) -> str:
    lines = []
    for result in results:
        if result.error is not None:
            lines.append(f"- **{result.name}**: not classified: {result.error}")
        else:
            top = int(result.probabilities.argmax())
            lines.append(f"- **{result.name}** → **{classes[top]}** ({result.probabilities[top]:.3f}); "
                         f"Grad-CAM explains {result.explained}")
            if result.unknown:
                lines.append(f"  **{UNKNOWN_WARNING}**")
    return "\n".join(lines)


def respond(model: PageModel, files: list[str] | None) -> tuple:
    """The page's outputs for uploaded files: summary, chart, Grad-CAM gallery, probability table."""
    if not files:
        return "", None, [], None
    paths = [Path(f if isinstance(f, str) else f.name) for f in files]
    try:
        results = model.classify(paths)
    except Exception:  # noqa: BLE001 — the page shows a message, the log keeps the traceback
        log.exception("classifying %d uploads failed", len(paths))
        return "The images could not be classified (an internal error; see the server's log).", None, [], None
    classified = [r for r in results if r.probabilities is not None]
    table = pd.DataFrame([r.probabilities.astype(float) for r in classified], columns=model.classes)
    table.insert(0, "image", [r.name for r in classified])
    gallery = [(r.overlay, f"{r.name}: Grad-CAM of {r.explained}") for r in classified]
    return _summary(results, model.classes), _chart(results, model.classes), gallery, table.round(4)


def build_page(model: PageModel) -> gr.Blocks:
    """The page of ``model`` (not yet launched)."""
    # Uploads are patients' images: Gradio's copies are deleted after an hour (checked hourly).
    with gr.Blocks(title="lesion: skin-lesion classifier", delete_cache=(3600, 3600)) as page:
        gr.Markdown("# lesion: skin-lesion classifier")
        gr.Markdown(NOTICE, elem_id="notice")
        gr.Markdown(f"Model: `{model.name}` · {model.description}", elem_id="model")
        files = gr.File(file_count="multiple", label="Dermoscopy images (JPEG, PNG, TIFF, BMP; any size)",
                        elem_id="upload")
        summary = gr.Markdown(label="Summary", show_label=False, elem_id="summary")
        with gr.Row():
            chart = gr.Plot(label="Class probabilities", elem_id="chart")
            gallery = gr.Gallery(label="Grad-CAM (the class predicted)", elem_id="gradcam", columns=2)
        table = gr.Dataframe(headers=["image", *model.classes], label="Probabilities", elem_id="table")
        # One request at a time: Grad-CAM hooks the one shared net.
        files.change(partial(respond, model), inputs=files, outputs=[summary, chart, gallery, table],
                     concurrency_limit=1, api_name="classify")
    return page
