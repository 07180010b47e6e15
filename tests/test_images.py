"""Image decoding: every mode becomes upright 8-bit RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lesion.data.images import decode, image_ids, to_rgb
from lesion.errors import LesionError


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def rgb() -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    pixels[:10, :10] = (255, 0, 0)  # a red corner marks the orientation
    return Image.fromarray(pixels)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1"])
def test_every_mode_becomes_rgb_of_the_same_size(rgb, mode):
    image = rgb.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode(encoded(image, fmt))
    assert out.mode == "RGB" and out.size == (40, 30)


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    values = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    image = Image.fromarray(values)
    out = np.asarray(decode(encoded(image, "PNG")))
    assert out.shape == (30, 40, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    # mid-grey stays mid-grey (clipping would make most of the image white)
    assert 120 <= out[15, 20, 0] <= 135


def test_exif_orientation_is_applied(rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° clockwise turn
    stored = rgb.transpose(Image.Transpose.ROTATE_90)
    out = np.asarray(decode(encoded(stored, "JPEG", exif=exif, quality=95)))
    assert out.shape == (30, 40, 3)
    assert out[:10, :10, 0].mean() > 200 and out[:10, :10, 1].mean() < 60  # the red corner is back


def test_rgba_alpha_is_dropped(rgb):
    rgba = rgb.convert("RGBA")
    assert np.array_equal(np.asarray(to_rgb(rgba)), np.asarray(rgb))


def test_draft_decodes_large_jpegs_smaller_but_not_below_the_request():
    big = Image.fromarray(np.full((1200, 1600, 3), 128, dtype=np.uint8))
    out = decode(encoded(big, "JPEG"), min_size=200)
    assert 200 <= min(out.size) < 1200


def test_image_over_the_configured_pixel_limit_is_a_clear_error(synthetic_root):
    from lesion.data.readers import read_split
    from lesion.errors import LesionError

    table = read_split("isic2018", synthetic_root("isic2018"), "train")
    w, h = table.images.read(table.ids[0]).size
    assert table.images.read(table.ids[0], max_pixels=w * h).size == (w, h)  # at the limit: accepted
    with pytest.raises(LesionError) as error:
        table.images.read(table.ids[0], max_pixels=w * h - 1)
    assert str(error.value) == (
        f"{table.images.path}:{table.images.members[table.ids[0]]}: {w}×{h} = {w * h} pixels, over the limit "
        f"dataset.max_pixels={w * h - 1} — raise dataset.max_pixels if the image is genuine, or remove its row "
        "from the CSV")


def test_the_configured_limit_replaces_pils_global_one_without_changing_it(synthetic_root, monkeypatch):
    from lesion.data.readers import read_split

    table = read_split("isic2018", synthetic_root("isic2018"), "train")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL alone would refuse these ~80×60 images
    assert min(table.images.read(table.ids[0], max_pixels=10**9).size) > 10
    assert Image.MAX_IMAGE_PIXELS == 100


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ISIC_0000001", "ISIC_0000002", "a", "a.b"]),
                          st.sampled_from([".jpg", ".JPG", ".png", ".tif"])), min_size=1, max_size=6, unique=True))
def test_image_ids_are_file_names_without_suffix_and_two_files_of_one_id_are_refused(names):
    paths = [f"images/{stem}{suffix}" for stem, suffix in names]
    stems = [stem for stem, _ in names]
    if len(set(stems)) == len(stems):
        assert image_ids(paths, "/images") == stems
    else:
        twice = next(stem for k, stem in enumerate(stems) if stem in stems[:k])
        first, second = [f"images/{stem}{suffix}" for stem, suffix in names if stem == twice][:2]
        with pytest.raises(LesionError) as refused:
            image_ids(paths, "/images")
        assert str(refused.value).startswith(f"/images: names {first} and {second}, one image id ({twice}) — ")
