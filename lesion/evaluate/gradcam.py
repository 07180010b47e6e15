"""Grad-CAM heatmaps of a :class:`LesionNet` on its input, mapped back onto the original image, and their files.

Grad-CAM: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017. The maps come from the ``grad-cam`` package (``pytorch_grad_cam.GradCAM``):
the target layer's activations weighted by the spatial mean of the target logit's gradient, summed
over channels, ReLU, min-max scaled to [0, 1] per image.

Caveats:
    * The CAM has the resolution of the target layer's feature map: h×w = S/32 × S/32 for a ResNet's
      ``layer4`` on S×S inputs (7×7 at 224 px, only 2×2 at 64 px); everything finer is bilinear
      upsampling. At 2×2 a CAM can say which quadrant mattered, no more; pass an earlier stage
      (e.g. ``net.backbone.layer3``) as ``target_layer`` for a finer, less class-specific map.
    * For the LSTM head (``BarataHead``) the CAM explains the logit of the final decoding step (the
      B×K class logits of ``LesionNet.forward``). In the hierarchical decoder that step follows the
      greedily decoded earlier tokens: the gradient flows back through the LSTM state, not through
      the (argmax) choice of those tokens.
    * The CAM is computed on the network input itself (the tensor ``predict`` classified: the
      centred square of the original, resized to ``image_size``; see :mod:`lesion.data.cache`) and
      only then mapped onto the original. Outside that square it is 0, meaning "not seen", not
      "unimportant". Large JPEGs are decoded at a reduced DCT scale 1/s before the square is cut, so
      the square the net saw may differ from the exact centred square used for the mapping by up
      to s original pixels at an edge (at most about one input pixel).
    * The min-max scaling makes values relative within one image: a CAM says where, not how much.
      A map with no positive evidence for the target, or from a 1×1 feature map (``layer4`` below
      64 px), is all zero: :attr:`Explanation.flat`, which :func:`report_flat` tells the user about.
    * Grad-CAM needs gradients, so it cannot run inside Lightning's test/predict loops (gradients
      disabled there); :class:`GradCamExplainer` enables them itself and runs in fp32 without
      autocast.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from lesion.errors import LesionError
from lesion.files import atomic_path
from lesion.models.net import LesionNet

log = logging.getLogger(__name__)

SUFFIXES = {
    "raw": "_gradcam_raw.png",
    "npy": "_gradcam_raw.npy",
    "color": "_gradcam_raw_color.png",
    "overlay": "_gradcam_overlay.png",
}
# A map whose values span less than this is flat. Min-max scaling leaves a map either spanning
# [0, 1] or, when it was constant (no positive evidence, or a single cell), all zero.
FLAT_RANGE = 1e-3
# Marks a wrong prediction in a contact-sheet title (:func:`sheet_title`); such titles, and the
# sheet's footnote, are drawn in this red.
WRONG = "✗"
_RED = (170, 20, 20)


class _Target(ClassifierOutputTarget):
    """The logit of ``category``, or of the predicted class when ``category`` is ``None``.

    Resolving the prediction inside grad-cam's own forward pass saves a second forward; the
    category chosen is left in ``self.category``.
    """

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:  # model_output: K logits
        num_classes = model_output.shape[-1]
        if self.category is None:
            self.category = int(model_output.argmax(-1))
        if not 0 <= self.category < num_classes:
            raise LesionError("gradcam target", f"class index {self.category} is out of range",
                              f"use 0–{num_classes - 1} or None for the predicted class")
        return model_output[..., self.category]


class _ModelState:
    """Training flags, ``requires_grad`` flags and ``.grad`` of every module/parameter, to restore.

    Flags are set back attribute by attribute rather than through ``train()``, so that every
    module comes back with exactly the flag it had, whatever its parent's.
    """

    def __init__(self, *modules: nn.Module):
        found = {id(m): m for root in modules for m in root.modules()}
        self.modes = [(m, m.training) for m in found.values()]
        params = {id(p): p for m in found.values() for p in m.parameters(recurse=False)}
        self.params = [(p, p.requires_grad, p.grad) for p in params.values()]

    def restore(self) -> None:
        for module, training in self.modes:
            module.training = training
        for param, requires_grad, grad in self.params:
            param.requires_grad_(requires_grad)
            param.grad = grad


def square_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The centred square the network input shows, in pixel coordinates of the original image.

    The input is the original's centred ``min(width, height)`` square (:func:`lesion.data.cache.square_crop`),
    resized to the input side by ``EvalPreset``.

    Args:
        width, height: original image size in pixels.

    Returns:
        ``(left, top, right, bottom)``; may be half-integers.
    """
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def _axis_weights(length: int, start: float, side: float, size: int) -> np.ndarray:
    """length×size bilinear weights that sample an input axis at every original pixel's centre.

    Original pixel ``x`` has its centre at input coordinate ``(x + 0.5 - start)·size/side - 0.5``
    (the half-pixel convention of PIL's and cv2's resize); rows of pixels whose centre lies
    outside ``[start, start + side)`` are zero.
    """
    pos = (np.arange(length) + 0.5 - start) * size / side - 0.5  # in input pixels
    inside = (pos >= -0.5) & (pos < size - 0.5)
    pos = np.clip(pos, 0, size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, size - 1)
    frac = pos - lo
    weights = np.zeros((length, size), np.float64)
    rows = np.arange(length)
    np.add.at(weights, (rows, lo), 1 - frac)
    np.add.at(weights, (rows, hi), frac)
    weights[~inside] = 0
    return weights


def to_original(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """Map a CAM of the network input back onto the original image.

    Args:
        cam: S×S CAM of the network input (the centred square of the original, see :func:`square_box`).
        width, height: original image size.

    Returns:
        height×width float32 in [0, 1]: the CAM resampled (bilinear) into the square of the
        original image, zero outside it.
    """
    size = cam.shape[0]
    left, top, right, _ = square_box(width, height)
    side = right - left
    rows = _axis_weights(height, top, side, size)
    cols = _axis_weights(width, left, side, size)
    return np.clip(rows @ cam.astype(np.float64) @ cols.T, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Explanation:
    """One image's Grad-CAM.

    Attributes:
        cam: H×W float32 in [0, 1] at the original image's size, zero outside the square the net saw.
        target: the class explained.
        logits: K float32 class logits of the input explained (the net's output in that pass).
        grid: h×w of the target layer's feature map, the CAM's own resolution.
    """

    cam: np.ndarray
    target: int
    logits: np.ndarray
    grid: tuple[int, int]

    @property
    def flat(self) -> bool:
        """Whether the map holds one value everywhere (its range is below :data:`FLAT_RANGE`): it shows nothing."""
        return float(self.cam.max() - self.cam.min()) < FLAT_RANGE


class GradCamExplainer:
    """Grad-CAMs of a :class:`LesionNet` on its network inputs, mapped onto the original images.

    It explains exactly the tensors it is given: pass the ones the model classified (a dataset
    item's tensor, ``dataset[i][0]``), so the CAM's class is the prediction's. Build it once per
    run. Hooks live only during an ``explain`` call and are removed in ``finally``; the net comes
    back with its training flags, ``requires_grad`` flags, ``.grad`` tensors and device unchanged
    (it is put in eval mode for the call). Usable as a context manager.

    Args:
        net: the network; its ``forward`` returns B×K class logits.
        target_layer: the layer to explain; default ``net.backbone.target_layer`` (``layer4``).
    """

    def __init__(self, net: LesionNet, target_layer: nn.Module | None = None):
        self.net = net
        self.target_layer = net.backbone.target_layer if target_layer is None else target_layer

    def __enter__(self) -> GradCamExplainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release between calls (hooks never outlive one); kept for symmetry."""

    def explain(self, x: torch.Tensor, size: tuple[int, int], target: int | None = None,
                metadata: torch.Tensor | None = None) -> Explanation:
        """Grad-CAM of one network input.

        Args:
            x: 3×S×S normalised input, as classified (e.g. ``dataset[i][0]``).
            size: ``(width, height)`` of the original image whose centred square ``x`` shows.
            target: class index to explain; ``None`` explains the predicted class.
            metadata: its D encoded metadata, for a net that takes them (``dataset[i][1]``).

        Returns:
            The CAM at the original's size, the class explained and the logits of ``x``.
        """
        return self.explain_batch(x[None], [size], [target], None if metadata is None else metadata[None])[0]

    def explain_batch(self, x: torch.Tensor, sizes: Sequence[tuple[int, int]],
                      targets: Sequence[int | None] | None = None,
                      metadata: torch.Tensor | None = None) -> list[Explanation]:
        """Grad-CAMs of several network inputs in one forward/backward pass.

        Args:
            x: B×3×S×S normalised inputs.
            sizes: per input, ``(width, height)`` of its original image.
            targets: one class index (or ``None`` = predicted) per input; ``None`` = all predicted.
            metadata: B×D encoded metadata, for a net that takes them; the CAM is of the
                prediction made with them.

        Returns:
            One :class:`Explanation` per input, in order.
        """
        targets = [None] * len(x) if targets is None else list(targets)
        if not len(x) == len(sizes) == len(targets):
            # grad-cam would silently return zero maps for the inputs without a target
            raise ValueError(f"{len(x)} inputs, {len(sizes)} sizes and {len(targets)} targets")
        if not len(x):
            return []
        squares, used, logits, grid = self._input_cams(x, targets, metadata)
        return [Explanation(to_original(c, *s), t, z, grid) for c, s, t, z in zip(squares, sizes, used, logits)]

    def _input_cams(self, x: torch.Tensor, targets: list[int | None],
                    metadata: torch.Tensor | None) -> tuple[np.ndarray, list[int], np.ndarray, tuple[int, int]]:
        """B×S×S CAMs of the network inputs ``x`` (B×3×S×S), the classes explained, B×K logits, the
        target layer's h×w."""
        net = self.net
        state = _ModelState(net, self.target_layer)
        device = next(net.parameters()).device
        wanted = [_Target(t) for t in targets]
        cam = None
        try:
            # Gradients reach F through the input instead of the weights: no weight gradients to
            # compute or to clean up, and frozen stages (requires_grad False) need no switching.
            for param, *_ in state.params:
                param.requires_grad_(False)
            x = x.to(device=device, dtype=torch.float32).requires_grad_(True)
            # The decoder's nn.LSTMCell runs no cuDNN RNN kernel (whose backward needs train mode),
            # so the convolutions keep cuDNN.
            with torch.enable_grad(), torch.autocast(device.type, enabled=False):
                model = net if metadata is None else _WithMetadata(net, metadata.to(device=device, dtype=torch.float32))
                cam = GradCAM(model=model, target_layers=[self.target_layer])  # sets net.eval()
                squares = cam(input_tensor=x, targets=wanted)
                logits = cam.outputs.detach().float().cpu().numpy()
                height, width = cam.activations_and_grads.activations[0].shape[-2:]
        finally:
            if cam is not None:
                cam.activations_and_grads.release()
                cam.outputs = None  # holds the retained graph
            state.restore()
        return squares, [int(t.category) for t in wanted], logits, (int(height), int(width))


def report_flat(explanations: Sequence[Explanation]) -> str | None:
    """Log one warning when some of the maps are flat (:attr:`Explanation.flat`), saying how many and what
    gives maps worth reading; return it (the contact sheet's footnote), or ``None`` when none is flat."""
    flat = [e for e in explanations if e.flat]
    if not flat:
        return None
    height, width = min((e.grid for e in flat), key=lambda grid: grid[0] * grid[1])
    why = (f"the layer's feature map is {height}×{width} at this input size" if height * width == 1
           else "the layer holds no positive evidence for the class explained")
    notice = (f"{len(flat)} of {len(explanations)} Grad-CAM maps are flat ({why}), so they show nothing. "
              "For maps worth reading: train longer, on larger images (dataset.image_size=128 or more), "
              "or explain a finer layer (gradcam.layer=layer3).")
    log.warning(notice)
    return notice


def sheet_title(image_id: str, classes: Sequence[str], probs: np.ndarray, explained: int,
                label: int | None = None) -> str:
    """A contact-sheet title: the image id; the true class when known, the predicted class and its
    probability, :data:`WRONG` when they differ; the class explained when it is not the predicted one.

    Args:
        image_id: the image's id.
        classes: the K class names.
        probs: its K class probabilities.
        explained: the class the CAM explains.
        label: its true class; ``None`` or negative (an unlabelled image's -1): unknown.

    Returns:
        Lines joined by ``\\n``, e.g. ``"ISIC_0000012\\ntrue MEL · pred NV 0.62 ✗"``.
    """
    predicted = int(np.argmax(probs))
    verdict = f"pred {classes[predicted]} {float(probs[predicted]):.2f}"
    if label is not None and int(label) >= 0:
        verdict = f"true {classes[int(label)]} · {verdict}" + ("" if int(label) == predicted else f" {WRONG}")
    lines = [image_id, verdict]
    if explained != predicted:
        lines.append(f"cam {classes[explained]}")
    return "\n".join(lines)


class _WithMetadata(nn.Module):
    """``net`` as a function of the images alone, with the images' metadata fixed (what grad-cam calls)."""

    def __init__(self, net: LesionNet, metadata: torch.Tensor):
        super().__init__()
        self.net, self.metadata = net, metadata

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.metadata)


def _save_png(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 H×W (grayscale) or H×W×3 (RGB) array as PNG."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(tmp, format="PNG")
    return path


def write_gradcam(stem: str, image: Image.Image, cam: np.ndarray, out_dir: Path) -> dict[str, Path]:
    """Write the four Grad-CAM files of one image, atomically, all at the image's size.

    Args:
        stem: file name stem, e.g. the ISIC id.
        image: the original image.
        cam: H×W CAM in [0, 1] at the image's size (:attr:`Explanation.cam`).
        out_dir: folder to write to (created if needed).

    Returns:
        ``{"raw": <stem>_gradcam_raw.png (grayscale), "npy": <stem>_gradcam_raw.npy (float32),
        "color": <stem>_gradcam_raw_color.png (jet, RGB), "overlay": <stem>_gradcam_overlay.png
        (RGB)}``.
    """
    rgb = np.asarray(image.convert("RGB"))
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    if cam.shape != rgb.shape[:2]:
        raise ValueError(f"CAM of shape {cam.shape} for an image of size {image.size} (W×H): "
                         f"expected {rgb.shape[:2]}")
    out_dir = Path(out_dir)
    paths = {key: out_dir / f"{stem}{suffix}" for key, suffix in SUFFIXES.items()}
    levels = np.round(cam * 255).astype(np.uint8)
    _save_png(paths["raw"], levels)
    with atomic_path(paths["npy"]) as tmp, open(tmp, "wb") as f:  # np.save(path) would append .npy
        np.save(f, cam)
    # The same colour map as show_cam_on_image, so the colour file matches the overlay.
    _save_png(paths["color"], cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB))
    _save_png(paths["overlay"], overlay(rgb, cam))
    return paths


def overlay(rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The CAM (H×W in [0, 1]) in jet colours over an H×W×3 uint8 RGB image: H×W×3 uint8."""
    return show_cam_on_image(np.float32(rgb) / 255, np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0), use_rgb=True)


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib (it has ``→`` and ``✗``), else PIL's default font."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default()


# Where a title's line may break, in order of preference: between phrases, between words, after an
# underscore or a hyphen inside a word (an id such as ISIC_0000000_downsampled).
_BREAKS = ((" · ", lambda text: text.split(" · ")), (" ", lambda text: text.split(" ")),
           ("", lambda text: re.split(r"(?<=[_-])", text)))


def _pieces(text: str) -> list[str]:
    """The parts of ``text`` that no line break splits."""
    return [piece for word in text.split() for piece in _BREAKS[-1][1](word) if piece]


def _wrapped(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> list[str]:
    """``text``'s lines broken to fit ``width`` pixels (:data:`_BREAKS`); a piece still wider is cut, ending in ``…``."""

    def fits(line: str) -> bool:
        return draw.textlength(line, font=font) <= width

    def pack(text: str, level: int) -> list[str]:
        joint, split = _BREAKS[level]
        lines: list[str] = []
        for part in filter(None, split(text)):
            if lines and fits(lines[-1] + joint + part):
                lines[-1] += joint + part
            elif fits(part) or level == len(_BREAKS) - 1:
                lines.append(part)
            else:
                lines.extend(pack(part, level + 1))
        return lines

    lines = [line for given in text.split("\n") for line in pack(given, 0)]
    for k, line in enumerate(lines):
        while not fits(line) and len(line) > 1:
            line = line[:-2] + "…"
        lines[k] = line
    return lines


def contact_sheet(overlays: list[Path], out_path: Path, titles: list[str] | None = None,
                  columns: int = 6, thumb: int = 160, footnote: str | None = None) -> Path:
    """One PNG grid of overlay thumbnails, each under its title, with an optional footnote under the grid.

    Every title is drawn inside its own cell, broken into lines where it needs them (between phrases
    `` · ``, then words, then after ``_`` or ``-``), in one font size for the sheet: the largest from
    ``thumb/12`` down to ``thumb/16`` pixels (9 at least) at which no unbreakable piece is wider than a
    cell; a piece wider still is cut. Titles holding :data:`WRONG` are red.

    Args:
        overlays: image files, in reading order.
        out_path: PNG to write (atomically).
        titles: one per image, lines separated by ``\\n`` (:func:`sheet_title`); default: file stems.
        columns: thumbnails per row (fewer if there are fewer images).
        thumb: side of each square cell; images are fitted inside it keeping their aspect.
        footnote: a note on the whole sheet (e.g. :func:`report_flat`'s), wrapped to the sheet's width.

    Returns:
        ``out_path``. The sheet is ``min(columns, n)·thumb`` wide and ``ceil(n / columns)·(thumb +
        title strip)`` high, plus the footnote's strip.
    """
    if not overlays:
        raise ValueError("no overlays for the contact sheet")
    titles = [Path(p).stem for p in overlays] if titles is None else list(titles)
    if len(titles) != len(overlays):
        raise ValueError(f"{len(overlays)} overlays but {len(titles)} titles")
    cols = min(columns, len(overlays))
    rows = math.ceil(len(overlays) / cols)
    margin = max(2, thumb // 32)  # each side of a title: neighbouring titles never touch
    width = thumb - 2 * margin
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pieces = {piece for title in titles for piece in _pieces(title)}
    smallest = max(9, thumb // 16)
    for size in range(max(smallest, thumb // 12), smallest - 1, -1):
        font = _font(size)
        if all(measure.textlength(piece, font=font) <= width for piece in pieces):
            break
    line_height = measure.textbbox((0, 0), "Ag_", font=font)[3] + 2
    lines = [_wrapped(measure, title, font, width) for title in titles]
    strip = max(map(len, lines)) * line_height + 2 * margin
    notes = _wrapped(measure, footnote, font, cols * thumb - 2 * margin) if footnote else []
    grid_height = rows * (thumb + strip)
    sheet = Image.new("RGB", (cols * thumb, grid_height + (len(notes) * line_height + 2 * margin if notes else 0)),
                      "white")
    draw = ImageDraw.Draw(sheet)
    for k, (path, title_lines) in enumerate(zip(overlays, lines)):
        left, top = (k % cols) * thumb, (k // cols) * (thumb + strip)
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((thumb, thumb))
        sheet.paste(image, (left + (thumb - image.width) // 2, top + strip + (thumb - image.height) // 2))
        colour = _RED if WRONG in titles[k] else "black"
        for j, line in enumerate(title_lines):
            draw.text((left + margin, top + margin + j * line_height), line, fill=colour, font=font)
    for j, line in enumerate(notes):
        draw.text((margin, grid_height + margin + j * line_height), line, fill=_RED, font=font)
    with atomic_path(out_path) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(out_path)
