"""Skin tone in the patient metadata: every spelling of a Fitzpatrick type read as one type (I–VI), from
PAD-UFES-20's ``fitspatrick``, an ISIC archive export's ``fitzpatrick_skin_type`` and a user's
``dataset.skin_tone_column``; anything else missing (warned), never a group of its own nor a refusal."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lesion.data.custom import layout_of
from lesion.data.layouts import LAYOUTS, MetadataFile
from lesion.data.metadata import SKIN_TYPES, metadata_table, read_metadata, read_metadata_csv, skin_type
from lesion.data.readers import read_split
from lesion.errors import LesionError

ROMAN = ("I", "II", "III", "IV", "V", "VI")  # typed out: the order the report and the groups use
PREFIXES = ("", "type ", "Type ", "TYPE_", "fitzpatrick ", "Fitzpatrick type ", "FST", "fst-", "fitzpatrick_type_")


@st.composite
def spellings(draw, number: int) -> str:
    """A way files write Fitzpatrick type ``number``: Roman in any case or Arabic (PAD-UFES-20's ``3.0``),
    after an optional prefix (SCIN's ``FST3``), with spaces around."""
    if draw(st.booleans()):
        core = "".join(c.lower() if draw(st.booleans()) else c for c in ROMAN[number - 1])
    else:
        core = "0" * draw(st.integers(0, 1)) + str(number) + draw(st.sampled_from(["", ".0", ".00", "."]))
    space = st.sampled_from(["", " ", "  ", "\t"])
    return draw(space) + draw(st.sampled_from(PREFIXES)) + core + draw(space)


@settings(max_examples=150, deadline=None)
@given(number=st.integers(1, 6), data=st.data())
def test_every_accepted_spelling_of_a_type_is_that_type(number, data):
    first, second = data.draw(spellings(number)), data.draw(spellings(number))
    assert skin_type(first) == skin_type(second) == ROMAN[number - 1], (first, second)


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="123456iIvV"), max_size=12),  # no type in it at all
    st.integers().filter(lambda k: not 1 <= k <= 6).map(str),  # numbers outside 1–6
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x not in range(1, 7)).map(repr),  # 2.5, 7.0
    st.sampled_from(["VII", "IIII", "VIII", "0", "IIV", "brown", "light", "unknown", "UNK", "", "nan", "I-II", "3/4"]),
))
def test_anything_else_is_no_type(text):
    assert skin_type(text) is None, text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.one_of(st.text(max_size=6), st.sampled_from(["3", "3.0", "iii", "FST3", "", "UNK", "7"])),
                      min_size=1, max_size=30))
def test_a_skin_tone_column_reads_a_type_or_missing_and_warns_once_per_unknown_value(cells, caplog):
    frame = pd.DataFrame({"image": [f"img{k}" for k in range(len(cells))], "tone": cells})
    meta = MetadataFile("m.csv", "image", None, None, None, skin_tone="tone")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lesion.data.metadata"):
        table = metadata_table(frame, meta, (), "m.csv", frame["image"].tolist())
    tones = table["skin_tone"].tolist()
    assert len(tones) == len(cells) and all(t is None or t in ROMAN for t in tones)
    assert [t for t in tones if t is not None] == [skin_type(c) for c in cells if skin_type(c) is not None]
    # Every value that names no type and is not an empty or unknown cell is warned about, once each.
    warned = [r.getMessage() for r in caplog.records if "skin tone value" in r.getMessage()]
    unknown = {c.strip().lower() for c in cells if skin_type(c) is None
               and c.strip().lower() not in {"", "unk", "unknown", "nan", "na", "n/a", "none", "missing", "null"}}
    assert len(warned) == len(unknown)


def test_the_types_are_in_order_and_sort_as_they_read():
    assert SKIN_TYPES == ROMAN and sorted(ROMAN) == list(ROMAN)  # the subgroup report sorts group names


def write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_the_three_sources_give_one_representation(tmp_path):
    """PAD-UFES-20's 3.0, the ISIC archive's III and a user's 3 are the same type; missing stays missing."""
    # PAD-UFES-20: the layout's own metadata file.
    pad = LAYOUTS["pad_ufes20"]
    columns = {c: ["", "", ""] for c in pad.columns}
    columns.update(img_id=["PAT_1_1_1.png", "PAT_2_2_2.png", "PAT_3_3_3.png"], patient_id=["PAT_1", "PAT_2", "PAT_3"],
                   diagnostic=["BCC", "NEV", "ACK"], fitspatrick=["3.0", "", "6.0"], age=["50", "60", "70"],
                   region=["FOREARM", "NOSE", "BACK"], gender=["FEMALE", "", "MALE"])
    write(tmp_path / "metadata.csv", pd.DataFrame(columns))
    from_pad = read_metadata(pad, tmp_path, "train", ["PAT_1_1_1", "PAT_2_2_2", "PAT_3_3_3"])
    assert from_pad["skin_tone"].tolist() == ["III", None, "VI"]
    assert from_pad["site"].tolist() == ["upper extremity", "face", "back"]
    assert from_pad["sex"].tolist() == ["female", None, "male"]
    # An ISIC archive export (its columns as exported), given to evaluate.py as metadata=CSV.
    export = write(tmp_path / "export.csv", pd.DataFrame({
        "isic_id": ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"], "attribution": ["x"] * 3,
        "age_approx": ["55", "", "40"], "anatom_site_general": ["head/neck", "", "lower extremity"],
        "benign_malignant": ["benign"] * 3, "fitzpatrick_skin_type": ["III", "", "vi"], "sex": ["male", "", "female"]}))
    from_export = read_metadata_csv(export, ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"],
                                    LAYOUTS["isic2019"].sites)
    assert from_export["skin_tone"].tolist() == ["III", None, "VI"]
    assert from_export["site"].tolist() == ["head/neck", None, "lower extremity"]
    # A user's CSV (dataset=csv, dataset.skin_tone_column).
    (tmp_path / "mine").mkdir()
    write(tmp_path / "mine" / "labels.csv", pd.DataFrame({"image": ["a", "b", "c"], "dx": ["x", "y", "x"],
                                                          "tone": ["3", "unknown", "Type VI"]}))
    layout = layout_of({"layout": "csv", "root": str(tmp_path / "mine"), "csv": "labels.csv", "image_column": "image",
                        "label_column": "dx", "skin_tone_column": "tone"})
    from_csv = read_metadata(layout, tmp_path / "mine", "train", ["a", "b", "c"])
    assert from_csv["skin_tone"].tolist() == ["III", None, "VI"]


def test_a_layout_without_skin_tone_gives_no_skin_tone_column(synthetic_root):
    root = synthetic_root("isic2019")
    table = read_split("isic2019", root, "train")
    assert "skin_tone" not in read_metadata("isic2019", root, "train", table.ids).columns


def test_a_skin_tone_column_the_csv_lacks_is_refused(tmp_path):
    write(tmp_path / "labels.csv", pd.DataFrame({"image": ["a", "b"], "dx": ["x", "y"]}))
    with pytest.raises(LesionError) as error:
        layout_of({"layout": "csv", "root": str(tmp_path), "csv": "labels.csv", "image_column": "image",
                   "label_column": "dx", "skin_tone_column": "fitzpatrick"})
    assert str(error.value) == (f"{tmp_path / 'labels.csv'}: has no column fitzpatrick (dataset.skin_tone_column) — "
                                "name an existing column, or set it to null")


def test_the_refusal_is_one_line_before_anything_is_written(run_cli, tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    write(tmp_path / "labels.csv", pd.DataFrame({"image": ["a", "b"], "dx": ["x", "y"]}))
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "dataset=csv", f"dataset.root={tmp_path}", "dataset.csv=labels.csv",
                     "dataset.label_column=dx", "dataset.skin_tone_column=fitzpatrick", f"hydra.run.dir={run_dir}",
                     check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.fullmatch(r"lesion: error: .*labels\.csv: has no column fitzpatrick \(dataset\.skin_tone_column\) — "
                        r"name an existing column, or set it to null", lines[-1]), lines[-1]
    assert not run_dir.exists()


def test_a_skin_tone_alone_is_no_metadata_for_the_model(run_cli, tmp_path):
    """Skin tone is reported (subgroups, EDA), never a model input: a CSV naming only it gives model.metadata nothing."""
    write(tmp_path / "labels.csv", pd.DataFrame({"image": ["a", "b"], "dx": ["x", "y"], "tone": ["II", "V"]}))
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "dataset=csv", f"dataset.root={tmp_path}", "dataset.csv=labels.csv",
                     "dataset.label_column=dx", "dataset.skin_tone_column=tone", "model.metadata=true",
                     f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        "lesion: error: model.metadata: fuses patient metadata, and the csv layout has none"), result.stderr[-500:]
    assert not run_dir.exists()
