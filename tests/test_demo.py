"""The web page (demo.py): the same numbers as evaluate.py images=…, readable messages for bad files,
local binding, and a real browser (headless Chromium) that uploads a real image and sees the result."""

from __future__ import annotations

import importlib.util
import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lesion.data.custom import CUSTOM_LAYOUTS
from lesion.data.layouts import LAYOUTS
from lesion.data.metadata_features import MetadataEncoding
from lesion.demo.classify import PageModel, load_page_model, trained_on
from lesion.demo.page import NOTICE, build_page, respond
from lesion.errors import LesionError
from lesion.train.run import build_classifier

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
_spec = importlib.util.spec_from_file_location("demo_browser", REPO / "docs" / "demo_browser.py")
demo_browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo_browser)


@pytest.fixture(scope="module")
def uploads(uda1_images) -> Path:
    """6 real UDA-1 images, one of them as a 16-bit grayscale PNG and one as RGBA PNG (modes folder inference takes)."""
    folder = uda1_images("test", 6)
    first, second = sorted(folder.iterdir())[:2]
    gray = np.asarray(Image.open(first).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray).save(folder / f"{first.stem}_16bit.png")
    Image.open(second).convert("RGBA").save(folder / f"{second.stem}_rgba.png")
    first.unlink()
    second.unlink()
    return folder


@pytest.fixture(scope="module")
def evaluated(trained_run, uploads, run_cli, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("eval")
    run_cli("evaluate.py", f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", f"images={uploads}", f"out={out}",
            "gradcam.n=0", "num_workers=0")
    return pd.read_csv(out / "predictions.csv").set_index("image")


@pytest.fixture(scope="module")
def page_model(trained_run) -> PageModel:
    return load_page_model(trained_run / "checkpoints" / "best.ckpt", "layer3")


def test_the_page_shows_the_probabilities_of_evaluate_py_for_the_same_images(page_model, uploads, evaluated):
    files = sorted(uploads.iterdir())
    summary, chart, gallery, table = respond(page_model, [str(f) for f in files])
    table = table.set_index("image")
    for f in files:
        # The page's table (4 decimals) and evaluate.py's predictions.csv, image by image.
        assert np.abs(table.loc[f.name, CLASSES].to_numpy(float) - evaluated.loc[f.stem, CLASSES].to_numpy()).max() <= 5e-5
        assert f"**{f.name}** → **{evaluated.loc[f.stem, 'prediction']}**" in summary
    exact = page_model.classify(files)
    want = evaluated.loc[[f.stem for f in files], CLASSES].to_numpy()
    assert np.abs(np.stack([r.probabilities for r in exact]) - want).max() <= 1e-6
    for (picture, caption), f, result in zip(gallery, files, exact):
        assert picture.shape == (*Image.open(f).size[::-1], 3)  # the overlay at the upload's own size
        assert caption == f"{f.name}: Grad-CAM of {result.explained}"
    assert chart is not None and len(chart.axes) == len(files)


def test_bad_files_get_a_readable_message_on_the_page_and_the_rest_are_classified(page_model, uploads, tmp_path):
    good = sorted(uploads.glob("*.jpg"))[0]
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    summary, _, gallery, table = respond(page_model, [str(text), str(good), str(empty)])
    assert "Traceback" not in summary and str(tmp_path) not in summary
    assert re.search(r"\*\*notes\.jpg\*\*: not classified: cannot be decoded as an image", summary)
    assert re.search(r"\*\*empty\.png\*\*: not classified: cannot be decoded as an image", summary)
    assert f"**{good.name}** → **" in summary and list(table["image"]) == [good.name] and len(gallery) == 1
    assert respond(page_model, None) == ("", None, [], None)


def _props(page, elem_id: str) -> dict:
    """The Gradio config of the page's component ``elem_id``."""
    return next(c["props"] for c in page.config["components"] if c["props"].get("elem_id") == elem_id)


def test_the_empty_table_has_the_image_and_class_headers_before_and_without_uploads(page_model):
    page = build_page(page_model)
    assert _props(page, "table")["value"]["headers"] == ["image", *CLASSES]
    table = next(block for block in page.blocks.values() if getattr(block, "elem_id", None) == "table")
    assert table.postprocess(respond(page_model, None)[3]).headers == ["image", *CLASSES]


def test_the_page_offers_one_api_endpoint_named_classify(page_model):
    page = build_page(page_model)
    endpoints = page.get_api_info()["named_endpoints"]
    assert list(endpoints) == ["/classify"]
    assert [p["parameter_name"] for p in endpoints["/classify"]["parameters"]] == ["files"]
    assert [r["label"] for r in endpoints["/classify"]["returns"]] == ["Summary", "Class probabilities",
                                                                        "Grad-CAM (the class predicted)", "Probabilities"]
    assert [d["api_name"] for d in page.config["dependencies"]] == ["classify"]


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + bytes(40), bytes(range(256)) * 4,
                                     b"\xff\xd8\xff\xe0" + b"JFIF" * 50], ids=["empty", "text", "png-header", "binary", "jpeg-header"])
def test_a_bad_uploads_message_names_the_file_not_an_internal_object(content, page_model, tmp_path):
    bad = tmp_path / "lesion.jpg"
    bad.write_bytes(content)
    summary = respond(page_model, [str(bad)])[0]
    assert summary.startswith("- **lesion.jpg**: not classified: cannot be decoded as an image")
    assert not re.search(r"<[^>]*object at 0x|BytesIO|_io\.", summary), summary
    assert str(tmp_path) not in summary


def test_the_model_line_says_what_the_model_was_trained_on(page_model):
    line = _props(build_page(page_model), "model")["value"]
    assert re.fullmatch(r"Model: `.*best\.ckpt` · barata head on resnet18, 32 px input; trained on isic2018 "
                        r"\(synthetic\); classes MEL, NV, BCC, AKIEC, BKL, DF, VASC", line), line


@settings(max_examples=50, deadline=None)
@given(layout=st.sampled_from([*LAYOUTS, *CUSTOM_LAYOUTS]), synthetic=st.booleans(),
       extra=st.lists(st.sampled_from(list(LAYOUTS)), max_size=3),
       root=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12))
def test_trained_on_names_the_layout_its_source_and_every_added_dataset(layout, synthetic, extra, root):
    synthetic = synthetic and layout not in CUSTOM_LAYOUTS  # custom layouts have no synthetic data
    text = trained_on({"layout": layout, "root": f"/data/{root}", "synthetic": synthetic,
                       "extra": [{"layout": name, "root": f"/x/{name}"} for name in extra]})
    assert text.startswith(f"trained on {layout}")
    assert ("(synthetic)" in text) == synthetic
    assert (f"/data/{root}" in text) == (layout in CUSTOM_LAYOUTS)  # a custom dataset is known by its folder
    sources = text.removeprefix("trained on ").split(" + ")
    assert len(sources) == 1 + len(extra) and [s.split()[0] for s in sources[1:]] == extra


def test_a_checkpoint_without_its_dataset_says_so():
    assert trained_on(None) == trained_on({}) == "training data not recorded in the checkpoint"


def test_uploads_are_deleted_after_an_hour_and_served_one_at_a_time(page_model):
    page = build_page(page_model)
    assert page.delete_cache == (3600, 3600)  # (check every, delete older than) seconds
    assert [f.concurrency_limit for f in page.fns.values()] == [1]


def test_a_model_trained_with_metadata_is_refused_by_the_page():
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("train", overrides=["dataset=synthetic_ham10000", "model=baseline", "model.backbone=resnet18",
                                          "model.weights=none", "model.metadata=true", "dataset.image_size=32"])
    module = build_classifier(cfg, None, MetadataEncoding(("female", "male"), ("back",), 50.0, 20.0).as_dict())
    with pytest.raises(LesionError, match="trained with patient metadata, and the page takes images only"):
        PageModel(module, "fused.ckpt")


@pytest.mark.parametrize("options, message", [
    (["ckpt=missing.ckpt"], "missing.ckpt: checkpoint not found"),
    (["port=0"], "port"),
    (["share=maybe"], "share"),
    (["gradcam.layer=fc"], "gradcam.layer"),
    (["max_file_size=50xb"], "max_file_size: is '50xb', not a size"),
])
def test_bad_options_are_refused_before_anything_is_served(options, message, trained_run, run_cli):
    given = options if options[0].startswith("ckpt=") else [f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", *options]
    result = run_cli("demo.py", *given, check=False, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "Running on" not in result.stdout
    assert result.stderr.startswith("lesion: error: ") and message in result.stderr


def test_the_served_page_names_lesions_share_option_and_one_api_endpoint(trained_run, cli_env, tmp_path):
    log = tmp_path / "demo.log"
    local = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 directly, whatever the proxy
    with demo_browser.served(trained_run / "checkpoints" / "best.ckpt", env=cli_env, log_file=log) as url:
        with local.open(url + "gradio_api/info", timeout=60) as answer:
            endpoints = json.load(answer)["named_endpoints"]
    text = log.read_text()
    assert list(endpoints) == ["/classify"]
    assert f"Running on local URL: {url.rstrip('/')}" in text
    assert "share=True" not in text and "launch()" not in text and "share=true" in text, text


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} writes them) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


@pytest.mark.slow
def test_the_page_in_a_real_browser_shows_the_top_class_of_an_uploaded_real_image(trained_run, uploads, evaluated,
                                                                                  cli_env, tmp_path):
    if demo_browser.chromium() is None:
        pytest.skip("no Chromium: install Debian's chromium and chromium-driver (.ci/run does when apt-get works)")
    image = sorted(uploads.glob("*.jpg"))[0]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    screenshot = tmp_path / "page.png"
    with demo_browser.served(trained_run / "checkpoints" / "best.ckpt", "gradcam.layer=layer3", env=cli_env) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert _listening(port) == ["0100007F"]  # 127.0.0.1 only
        shown = demo_browser.classify_in_browser(url, [image, bad], screenshot)
    assert f"{image.name} → {evaluated.loc[image.stem, 'prediction']} " in shown["summary"]
    assert "notes.jpg: not classified: cannot be decoded as an image" in shown["summary"]
    assert "object at 0x" not in shown["summary"]
    assert "Research tool, not a diagnosis." in shown["notice"] and NOTICE.split("**")[2].strip()[:40] in shown["notice"]
    assert "32 px input; trained on isic2018 (synthetic); classes MEL, NV" in shown["model"]
    cells = shown["table"].split("\n")  # the label, the headers, then the cells, one per line
    assert "image" in cells and cells[cells.index("image"):][:8] == ["image", *CLASSES], shown["table"]
    assert not {"1", "2", "3"} & set(cells)
    with Image.open(screenshot) as picture:
        assert picture.format == "PNG" and picture.width >= 1000 and picture.height >= 600
