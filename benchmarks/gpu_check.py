"""The GPU path checked in one call: the headline run, its evaluation, training and prediction throughput.

    EXTRA="kornia==0.9.0 kornia-rs==0.2.0" bash ../shared/tools/device-wheels.sh   # once, here: fills .whl/
    python3 -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl \\
      && PYTHONPATH=$PWD/.site:$PWD NO_ALBUMENTATIONS_UPDATE=1 python3 benchmarks/gpu_check.py   # GPU machine
    PYTHONPATH=. python benchmarks/gpu_check.py --allow-cpu      # no GPU: tiny sizes on the CPU, a smoke test

Run from the project root, installed or not (commands run as ``sys.executable train.py …``);
everything is written to a temporary folder, ``$LESION_CACHE`` included. Sized for at most 6
minutes on one H200 (16 cores):

1. ``train.py dataset=synthetic2018 balance=smote_tomek loss=focal trainer=gpu dataset.image_size=224``
   with ``model.weights=none`` on 400 synthetic images, one fine-tuning epoch before two head
   epochs (``balance.smote_tomek.finetune=true``): pass/fail and seconds;
2. ``evaluate.py`` on its ``best.ckpt`` with ``tta.flips=true tta.crops=4`` and ``gradcam.n=16``:
   pass/fail and seconds;
3. training img/s of both heads (ResNet-50, 224 px, batch 128) in fp32 and in bf16-mixed +
   channels_last: (a) the model alone, ``training_step`` + backward + optimizer step on one batch
   already on the device; (b) the input pipeline alone, a fit with no model, so that the training
   loader, the transfer and the device-side augmentation (``dataset.augment_on``) run as in
   training (the same for every head and precision, so measured once); (c) real training,
   ``Trainer.fit`` of the classifier on the DataModule (the configured Trainer and loggers, without
   validation, checkpoints or progress bar), and its ratio to (a). (b) and (c) run with the default
   loader and with the process on 8 cores, a node's share per GPU (``os.sched_setaffinity`` before
   the DataModule is built, so the default worker count follows);
4. ``compile=true`` (barata, bf16-mixed + channels_last): the first step's seconds (compilation)
   and the steady-state gain over (a);
5. prediction with ResNet-50 at 224 px, ``precision=bf16`` + channels_last, evaluate.py's batch
   size and workers: plain, TTA with 32 views (8 flips × 4 crops), and Grad-CAM
   (``GradCamExplainer.explain_batch``);
6. the GPU's SM utilisation during each (c), polled from ``nvidia-smi`` once a second: the median
   of the samples in steady state.

Every throughput is steady state: images from the end of the warm-up steps over about
``--seconds``, the device synchronised at both ends; ratios are to figures of the same run. The
output ends with one Markdown table of the figures and the goals the GPU path is held to. The
exit status is 1 when a command or a measurement failed, never for a goal missed. Without CUDA the
script says so and exits 0, unless ``--allow-cpu``: then ResNet-18 at 32 px on 40 images, a
fraction of a second per figure, through the same code, except that ``compile`` uses dynamo's
eager backend (inductor's C++ build alone takes a minute on 2 cores). That checks the script, not
the figures.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import itertools
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from lesion.data.datamodule import IsicDataModule, LesionDataset
from lesion.evaluate.gradcam import GradCamExplainer
from lesion.evaluate.predict import predict, prediction_items
from lesion.train.optim import build_optimizer
from lesion.train.run import build_classifier, build_datamodule
from lesion.train.trainer import build_trainer

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
HEADS = ("baseline", "barata")
# Training precisions: label → (trainer.precision, channels_last).
PRECISIONS = {"fp32": ("32-true", False), "bf16-mixed + CL": ("bf16-mixed", True)}
FAST = "bf16-mixed + CL"
LOADER_CORES = 8  # a node's CPU cores per GPU
LOADERS = {"default loader": None, f"loader on {LOADER_CORES} cores": LOADER_CORES}
# More images per second than any loader here gives: datasets are repeated to this rate × the timed
# seconds, so that time, not the end of the data, ends every figure.
MAX_RATE = 20_000
ORIGINAL_SIZE = (600, 450)  # an ISIC 2018 image: the size Grad-CAM maps its CAMs back onto
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    """How large the check runs."""

    backbone: str
    image_size: int
    batch_size: int  # of the training figures
    images: int  # synthetic training images (validation ≈ n/4, test ≈ n/3)
    warmup: int  # untimed steps (or batches) before every figure
    seconds: float  # timed seconds per figure
    gradcam: int  # evaluate.py's gradcam.n
    trainer: str  # the trainer config group


ON_GPU = Sizes("resnet50", 224, 128, 400, 10, 5.0, 16, "gpu")
ON_CPU = Sizes("resnet18", 32, 8, 40, 1, 0.2, 2, "cpu")


@dataclass(frozen=True)
class Goal:
    """A figure the GPU path is held to: at least ``least``."""

    text: str
    least: float


PREDICTION_GOAL = Goal("≥ 5,000 img/s", 5000)
TTA_GOAL = Goal("≥ 250 img/s", 250)
GRADCAM_GOAL = Goal("≥ 100 img/s", 100)
RATIO_GOAL = Goal("≥ 0.9", 0.9)
TRAINING_GOAL = Goal("≥ 3,500 img/s", 3500)  # bf16-mixed + channels_last ResNet-50 real training
SM_GOAL = Goal("≥ 90 %", 90)
UNITS = {"img/s": "{:,.0f} img/s", "×": "{:.2f}×", "%": "{:.0f} %", "s": "{:.1f} s"}
FAILED = "failed (see above)"


@dataclass
class Row:
    """One line of the summary table: a figure (``None``: not measured, ``missing`` says why)."""

    what: str
    value: float | None
    unit: str
    goal: Goal | None = None
    passed: bool | None = None  # a command's exit status
    missing: str = FAILED

    @property
    def failed(self) -> bool:
        return self.passed is False or (self.value is None and self.missing == FAILED)

    def cells(self) -> list[str]:
        figure = self.missing if self.value is None else UNITS[self.unit].format(self.value)
        if self.passed is not None:
            met = "pass" if self.passed else "fail"
        elif self.goal is None or self.value is None:
            met = ""
        else:
            met = "yes" if self.value >= self.goal.least else "no"
        return [self.what, figure, self.goal.text if self.goal else "", met]


def table(rows: list[Row]) -> str:
    """The rows as one Markdown table."""
    lines = ["| what | figure | goal | met |", "|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(row.cells()) + " |" for row in rows])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    """Free what earlier measurements left: a fitted Trainer and its module hold each other (and the
    optimizer state) in a reference cycle."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def attempt(what: str, measure: Callable[[], T]) -> T | None:
    """``measure()``, or ``None`` with its traceback printed: one failure leaves the other figures to measure."""
    try:
        return measure()
    except Exception:
        print(f"{what}: failed", file=sys.stderr)
        traceback.print_exc()
        return None


@contextmanager
def cores_limited(cores: int | None) -> Iterator[None]:
    """This thread, and the loader workers it starts, on its first ``cores`` cores (``None``: as it is)."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(before)[:cores])
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class SmSampler:
    """The GPU's SM utilisation (``nvidia-smi``'s ``utilization.gpu``, what ``dmon`` shows as ``sm``),
    polled once a second in the background; each sample covers the moment before its query.

    Polling, rather than reading ``dmon``'s stream, keeps the timestamps true when its output is
    buffered in a pipe. None are taken without CUDA or ``nvidia-smi``.
    """

    def __init__(self, device: torch.device):
        self.samples: list[tuple[float, float]] = []  # (query time, SM %)
        self.stopped = threading.Event()
        smi = shutil.which("nvidia-smi")
        if device.type != "cuda" or smi is None:
            self.missing = "n/a: no GPU" if device.type != "cuda" else "n/a: no nvidia-smi"
            return
        self.missing = "n/a: no sample in steady state"
        uuid = str(torch.cuda.get_device_properties(device).uuid).removeprefix("GPU-")
        query = [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", f"GPU-{uuid}"]
        threading.Thread(target=self._poll, args=(query,), daemon=True).start()

    def _poll(self, query: list[str]) -> None:
        while not self.stopped.wait(1.0):
            answer = subprocess.run(query, capture_output=True, text=True).stdout.strip()
            if answer.isdigit():
                self.samples.append((time.perf_counter(), float(answer)))

    def median(self, start: float, stop: float) -> float | None:
        """Median SM % over the samples that cover only ``[start, stop]`` (``None`` when there are none)."""
        inside = [sm for taken, sm in self.samples if start + 1 <= taken <= stop]
        return statistics.median(inside) if inside else None

    def close(self) -> None:
        self.stopped.set()


def run_command(script: str, overrides: list[str]) -> tuple[bool, float]:
    """Run ``python <script> <overrides>`` from the project root: whether it exited 0, and its seconds."""
    print(f"$ python {script} {' '.join(overrides)}", flush=True)
    start = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, script, *overrides], cwd=ROOT, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=300)
    except subprocess.TimeoutExpired:
        print(f"{script}: still running after 300 s, stopped", file=sys.stderr)
        return False, time.perf_counter() - start
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        print(f"{script} exited {result.returncode}:\n{result.stderr[-4000:]}", file=sys.stderr)
    return result.returncode == 0, seconds


def composed(overrides: list[str]) -> DictConfig:
    """The ``conf/train.yaml`` config of ``python train.py <overrides>``."""
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("train", overrides=overrides)


def data_overrides(sizes: Sizes) -> list[str]:
    """The synthetic data and the model size every part of the check uses."""
    return [f"dataset.synthetic_n={sizes.images}", f"dataset.image_size={sizes.image_size}",
            f"model.backbone={sizes.backbone}", "model.weights=none"]


def repeated(dataset: LesionDataset, items: int) -> LesionDataset:
    """``dataset`` with its items repeated in order to ``items`` entries."""
    longer = copy.copy(dataset)
    longer.indices = np.resize(dataset.indices, items)
    return longer


def timed_calls(call: Callable[[], int], warmup: int, seconds: float, device: torch.device) -> tuple[float, float]:
    """Seconds of the first ``call()``, and images per second of the calls after ``warmup`` of them, over
    about ``seconds``; ``call`` runs one step and returns how many images it took."""
    start = time.perf_counter()
    call()
    synchronize(device)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        call()
    synchronize(device)
    start, images = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        images += call()
    synchronize(device)
    return first, images / (time.perf_counter() - start)


class TimedBatches:
    """A loader's batches, ending about ``seconds`` after the first ``warmup``; counts the images after them.

    Timed from the request of batch ``warmup`` to the request after the last one, so each batch's
    loading counts; the consumer must finish a batch before requesting the next (``predict`` copies
    each batch's probabilities to the CPU).
    """

    def __init__(self, loader: Iterable, warmup: int, seconds: float):
        self.loader, self.warmup, self.seconds = loader, warmup, seconds
        self.images, self.elapsed = 0, None

    def __iter__(self) -> Iterator:
        batches = iter(self.loader)
        start = None
        for k in itertools.count():
            if k == self.warmup:
                start = time.perf_counter()
            if start is not None and time.perf_counter() - start >= self.seconds:
                break
            batch = next(batches, None)
            if batch is None:
                break
            if start is not None:
                self.images += len(batch[-1])
            yield batch
        self.elapsed = time.perf_counter() - start

    @property
    def rate(self) -> float:
        return self.images / self.elapsed


class SteadyState(pl.Callback):
    """Times a fit's training batches after the first ``warmup`` for about ``seconds``, then stops the fit.

    Synchronised with the device at both ends only, so the loop keeps its overlap of loading and
    computing; the clock starts at the end of batch ``warmup - 1``, so each timed batch's loading counts.
    """

    def __init__(self, warmup: int, seconds: float):
        self.warmup, self.seconds = warmup, seconds
        self.start = self.stop = None
        self.images = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.stop is not None:
            return
        if batch_idx + 1 == self.warmup:
            synchronize(pl_module.device)
            self.start = time.perf_counter()
            return
        if self.start is None:
            return
        self.images += len(batch[-1])
        if batch_idx + 1 == trainer.num_training_batches or time.perf_counter() - self.start >= self.seconds:
            synchronize(pl_module.device)
            self.stop = time.perf_counter()
            trainer.should_stop = True

    @property
    def rate(self) -> float:
        return self.images / (self.stop - self.start)


class LoaderOnly(pl.LightningModule):
    """No model: its fit runs only the training loader, the transfer to the device and what the
    DataModule does to a batch there (the device-side augmentation)."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx) -> None:
        return None

    def configure_optimizers(self) -> None:
        return None


@dataclass
class Check:
    """One run of the check: its sizes, device, temporary folder and SM sampler."""

    sizes: Sizes
    device: torch.device
    tmp: Path
    sm: SmSampler
    alone: dict[tuple[str, str], float | None] = dataclasses.field(default_factory=dict)  # (a) by head, precision

    def training_config(self, head: str, precision: str, *extra: str) -> DictConfig:
        """The training config of a figure: ``head`` in ``precision`` (a :data:`PRECISIONS` label)."""
        trainer_precision, channels_last = PRECISIONS[precision]
        return composed(["dataset=synthetic2018", *data_overrides(self.sizes), f"model={head}",
                         f"trainer={self.sizes.trainer}", f"trainer.precision={trainer_precision}",
                         f"channels_last={channels_last}", f"dataset.batch_size={self.sizes.batch_size}",
                         "trainer.max_epochs=1", "trainer.limit_val_batches=0", "callbacks=none",
                         f"run_dir={tempfile.mkdtemp(prefix='fit-', dir=self.tmp)}", *extra])

    def commands(self) -> list[Row]:
        """Rows of the headline training run and of evaluate.py on its checkpoint."""
        run_dir = self.tmp / "train"
        trained, train_seconds = run_command("train.py", [
            "dataset=synthetic2018", "balance=smote_tomek", "loss=focal", f"trainer={self.sizes.trainer}",
            *data_overrides(self.sizes), "trainer.max_epochs=1", "balance.smote_tomek.finetune=true",
            "balance.smote_tomek.head_epochs=2", f"hydra.run.dir={run_dir}"])
        rows = [Row("train.py dataset=synthetic2018 balance=smote_tomek loss=focal", train_seconds, "s",
                    passed=trained)]
        if not trained:
            return rows + [Row("evaluate.py, TTA 32 views + Grad-CAM", None, "s", passed=False,
                               missing="not run: no checkpoint")]
        evaluated, evaluate_seconds = run_command("evaluate.py", [
            f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "tta.flips=true", "tta.crops=4",
            f"gradcam.n={self.sizes.gradcam}", f"out={self.tmp / 'evaluate'}"])
        return rows + [Row("evaluate.py, TTA 32 views + Grad-CAM", evaluate_seconds, "s", passed=evaluated)]

    def model_alone(self, cfg: DictConfig, backend: str | None = None) -> tuple[float, float]:
        """(a): seconds of the first training step and steady img/s, on one batch already on the device.

        The step is Lightning's for ``cfg.trainer.precision``: ``training_step`` under autocast for
        bf16-mixed, backward and the optimizer step outside it. ``backend``: recompile the backbone
        with this dynamo backend (``compile=true`` on the CPU).
        """
        release(self.device)
        pl.seed_everything(0, verbose=False)
        module = build_classifier(cfg).to(self.device).train()
        if backend is not None:
            module.net.backbone.compile(backend=backend)
        optimizer = build_optimizer(module.parameters(), dict(module.hparams.optimizer))
        size, batch = self.sizes.image_size, self.sizes.batch_size
        images = torch.randn(batch, 3, size, size, device=self.device)
        labels = torch.randint(0, len(module.hparams.classes), (batch,), device=self.device)
        bf16 = cfg.trainer.precision == "bf16-mixed"

        def step() -> int:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = module.training_step((images, labels), 0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return batch

        return timed_calls(step, self.sizes.warmup, self.sizes.seconds, self.device)

    def fit(self, cfg: DictConfig, module: Callable[[DictConfig], pl.LightningModule],
            cores: int | None) -> tuple[SteadyState, int]:
        """(b) or (c): a timed fit of ``module(cfg)`` on the DataModule of ``cfg``, with the process on
        ``cores`` cores; the timer and the loader's worker count."""
        release(self.device)
        with cores_limited(cores):
            datamodule = build_datamodule(cfg)
            datamodule.prepare_data()
            datamodule.setup("fit")
            steps = self.sizes.warmup + math.ceil(self.sizes.seconds * MAX_RATE / self.sizes.batch_size)
            datamodule.train_set = repeated(datamodule.train_set, steps * self.sizes.batch_size)
            pl.seed_everything(0, verbose=False)
            model = module(cfg)
            trainer = build_trainer(cfg, Path(cfg.run_dir) / "checkpoints", "", enable_progress_bar=False,
                                    enable_model_summary=False)
            timer = SteadyState(self.sizes.warmup, self.sizes.seconds)
            trainer.callbacks.append(timer)
            trainer.fit(model, datamodule=datamodule)
            return timer, datamodule.num_workers

    def training(self) -> list[Row]:
        """Rows (a), (b), (c), (c)/(a) and SM utilisation of every head, precision and loader."""
        rows = []
        for head in HEADS:
            for precision in PRECISIONS:
                what = f"(a) model alone, {head}, {precision}"
                found = attempt(what, lambda: self.model_alone(self.training_config(head, precision)))
                self.alone[head, precision] = found and found[1]
                if found:
                    print(f"{what}: {found[1]:,.0f} img/s (first step {found[0]:.1f} s)", flush=True)
                rows.append(Row(what, found and found[1], "img/s"))
        for loader, cores in LOADERS.items():
            what = f"(b) input pipeline alone, {loader}"
            found = attempt(what, lambda: self.fit(self.training_config("baseline", "fp32"),
                                                   lambda cfg: LoaderOnly(), cores))
            if found:
                print(f"{what} ({found[1]} workers): {found[0].rate:,.0f} img/s", flush=True)
            rows.append(Row(what, found and found[0].rate, "img/s"))
        for head in HEADS:
            for precision in PRECISIONS:
                for loader, cores in LOADERS.items():
                    rows += self.real_training(head, precision, loader, cores)
        return rows

    def real_training(self, head: str, precision: str, loader: str, cores: int | None) -> list[Row]:
        """Rows (c), (c)/(a) and SM utilisation of one configuration."""
        config = f"{head}, {precision}, {loader}"
        found = attempt(f"(c) real training, {config}",
                        lambda: self.fit(self.training_config(head, precision), build_classifier, cores))
        timer = found and found[0]
        rate = timer and timer.rate
        sm = timer and self.sm.median(timer.start, timer.stop)
        if found:
            print(f"(c) real training, {config} ({found[1]} workers): {rate:,.0f} img/s, "
                  f"SM {'n/a' if sm is None else f'{sm:.0f} %'}", flush=True)
        alone = self.alone[head, precision]
        ratio = rate / alone if rate and alone else None
        return [Row(f"(c) real training, {config}", rate, "img/s", TRAINING_GOAL if precision == FAST else None),
                Row(f"(c)/(a), {config}", ratio, "×", RATIO_GOAL),
                Row(f"SM utilisation during (c), {config}", sm, "%", SM_GOAL,
                    missing=self.sm.missing if found else FAILED)]

    def compiled(self) -> list[Row]:
        """Rows of ``compile=true`` (barata, bf16-mixed + channels_last): compilation seconds, gain over (a)."""
        backend = "eager" if self.device.type == "cpu" else None
        found = attempt("compile=true", lambda: self.model_alone(self.training_config("barata", FAST, "compile=true"),
                                                                 backend))
        if found:
            print(f"(a) with compile=true, barata, {FAST}: {found[1]:,.0f} img/s (first step {found[0]:.1f} s)",
                  flush=True)
        eager = self.alone["barata", FAST]
        gain = found[1] / eager if found and eager else None
        return [Row(f"compile=true, barata, {FAST}: first step (compilation)", found and found[0], "s"),
                Row(f"compile=true, barata, {FAST}: steady img/s ÷ (a)", gain, "×")]

    def prediction(self) -> list[Row]:
        """Rows of prediction img/s (plain, TTA 32 views) and Grad-CAM img/s, barata."""
        release(self.device)
        batch_size = OmegaConf.load(CONF / "evaluate.yaml").batch_size
        cfg = composed(["dataset=synthetic2018", *data_overrides(self.sizes), "model=barata",
                        f"dataset.batch_size={batch_size}", "channels_last=true"])
        pl.seed_everything(0, verbose=False)
        module = build_classifier(cfg).to(self.device).eval()
        datamodule = build_datamodule(cfg)
        datamodule.prepare_data()
        datamodule.setup("test")
        items = repeated(datamodule.test_set, batch_size * (self.sizes.warmup + math.ceil(
            self.sizes.seconds * MAX_RATE / batch_size)))
        views = {"prediction, barata": (False, 1, PREDICTION_GOAL),
                 "prediction, barata, TTA 32 views (tta.flips=true tta.crops=4)": (True, 4, TTA_GOAL)}
        rows = []
        for what, (flips, crops, goal) in views.items():
            rate = attempt(what, lambda: self.predicted(module, datamodule, items, flips, crops))
            if rate:
                print(f"{what}: {rate:,.0f} img/s", flush=True)
            rows.append(Row(what, rate, "img/s", goal))
        what = "Grad-CAM, barata (explain_batch)"
        rate = attempt(what, lambda: self.explained(module, datamodule, items))
        if rate:
            print(f"{what}: {rate:,.0f} img/s", flush=True)
        return rows + [Row(what, rate, "img/s", GRADCAM_GOAL)]

    def predicted(self, module: pl.LightningModule, datamodule: IsicDataModule, items: LesionDataset,
                  flips: bool, crops: int) -> float:
        """Steady img/s of ``predict`` over ``items``, loaded as evaluate.py loads them: uint8 pixels, of the
        whole squares for crops."""
        batches = TimedBatches(datamodule.loader(prediction_items(items, module, crops)), self.sizes.warmup,
                               self.sizes.seconds)
        predict(module, batches, flips, crops, precision="bf16", channels_last=True)
        return batches.rate

    def explained(self, module: pl.LightningModule, datamodule: IsicDataModule, items: LesionDataset) -> float:
        """Steady img/s of Grad-CAM on one batch of evaluate.py's size, already on the device."""
        images = next(iter(datamodule.loader(items)))[0].to(self.device)
        with GradCamExplainer(module.net) as explainer:
            return timed_calls(lambda: len(explainer.explain_batch(images, [ORIGINAL_SIZE] * len(images))),
                               1, self.sizes.seconds, self.device)[1]


def quiet() -> None:
    """Silence what every one of the many Trainers and steps would repeat."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    for message in (".*`self.log\\(\\)` but the `self.trainer` reference is not registered.*",
                    ".*configure_optimizers` returned `None`.*",
                    ".*`val_dataloader` but have no `validation_step`.*",
                    ".*does not have many workers.*"):
        warnings.filterwarnings("ignore", message=message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-cpu", action="store_true",
                        help="without CUDA, run tiny sizes on the CPU through the same code (a smoke test)")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"timed seconds per figure ({ON_GPU.seconds:g} on a GPU, {ON_CPU.seconds:g} on the CPU)")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    if not gpu and not args.allow_cpu:
        print("gpu_check: no CUDA GPU visible, nothing checked (--allow-cpu runs tiny sizes on the CPU)")
        return 0
    sizes = ON_GPU if gpu else ON_CPU
    if args.seconds is not None:
        sizes = dataclasses.replace(sizes, seconds=args.seconds)
    if not gpu:
        torch.set_num_threads(1)  # the loader workers use the other cores
    device = torch.device("cuda" if gpu else "cpu")
    quiet()
    name = torch.cuda.get_device_name(device) if gpu else "CPU (no GPU: a check of the code, not GPU figures)"
    print(f"gpu_check on {name}: torch {torch.__version__}, Lightning {pl.__version__}, {len(os.sched_getaffinity(0))} "
          f"cores; {sizes.backbone} at {sizes.image_size} px, training batch {sizes.batch_size}, {sizes.images} "
          f"synthetic training images, {sizes.warmup} warm-up steps + {sizes.seconds:g} s per figure", flush=True)
    with tempfile.TemporaryDirectory(prefix="lesion-gpu-check-") as tmp:
        os.environ["LESION_CACHE"] = str(Path(tmp) / "cache")  # synthetic data, image caches, embeddings
        check = Check(sizes, device, Path(tmp), SmSampler(device))
        try:
            rows = check.commands() + check.training() + check.compiled() + check.prediction()
        finally:
            check.sm.close()
    print(table(rows))
    return 1 if any(row.failed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
