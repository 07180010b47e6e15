"""Patient metadata (age, sex, site) from each layout's own files: missing values explicit, unknown words warned."""

from __future__ import annotations

import io
import logging
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from lesion.data.layouts import LAYOUTS
from lesion.data.metadata import SEXES, read_metadata
from lesion.data.readers import read_split
from lesion.data.synthetic import write_synthetic
from lesion.errors import LesionError

WITH_METADATA = {"isic2017": ("train", "val", "test"), "isic2019": ("train", "test"), "isic2020": ("train",),
                 "ham10000": ("train",)}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return {name: write_synthetic(name, tmp_path_factory.mktemp(name) / "data", n=60, seed=2) for name in WITH_METADATA}


@pytest.mark.parametrize("layout", sorted(WITH_METADATA))
def test_every_split_has_age_sex_and_site_in_the_ids_order(written, layout):
    spec = LAYOUTS[layout]
    for split in WITH_METADATA[layout]:
        table = read_split(layout, written[layout], split)
        frame = read_metadata(layout, written[layout], split, table.ids)
        assert frame.index.tolist() == table.ids and list(frame.columns) == ["age", "sex", "site"]
        ages = frame["age"].dropna()
        assert len(ages) and ages.between(0, 120).all() and frame["age"].dtype == np.float64
        assert set(frame["sex"].dropna()) <= set(SEXES)
        assert set(frame["site"].dropna()) <= set(spec.sites)
        assert (frame["age"] != 0).any()  # missing is NaN, never a 0 stand-in


def raw_cells(layout, root, split) -> pd.DataFrame:
    meta = LAYOUTS[layout].metadata[split][0]
    if meta.in_images:
        stem = LAYOUTS[layout].splits[split].images[0]
        with zipfile.ZipFile(root / f"{stem}.zip") as z:
            return pd.read_csv(io.BytesIO(z.read(f"{stem}/{meta.file}")), dtype=str, keep_default_na=False)
    return pd.read_csv(root / meta.file, dtype=str, keep_default_na=False)


@pytest.mark.parametrize("layout", sorted(WITH_METADATA))
def test_missing_cells_are_missing_values(written, layout, tmp_path):
    meta = LAYOUTS[layout].metadata["train"][0]
    root = written[layout]
    if not meta.in_images:  # plant empty and "unknown" cells (the 2017 copy draws "unknown" itself)
        root = shutil.copytree(root, tmp_path / "copy")
        frame = pd.read_csv(root / meta.file, dtype=str, keep_default_na=False)
        frame.loc[[0, 1], meta.age] = ["", "unknown"]
        frame.loc[[2, 3], meta.sex] = ["Unknown", ""]
        frame.to_csv(root / meta.file, index=False)
    table = read_split(layout, root, "train")
    raw = raw_cells(layout, root, "train").set_index(meta.id_column).loc[table.ids]
    frame = read_metadata(layout, root, "train", table.ids)
    blank_age = raw[meta.age].str.lower().isin(["", "unknown"])
    blank_sex = raw[meta.sex].str.lower().isin(["", "unknown"])
    assert blank_age.sum() >= 1 and blank_sex.sum() >= 1
    assert frame["age"].isna().to_numpy().tolist() == blank_age.to_numpy().tolist()
    assert frame["sex"].isna().to_numpy().tolist() == blank_sex.to_numpy().tolist()
    known = ~blank_age.to_numpy()
    assert frame.loc[known, "age"].tolist() == raw.loc[known, meta.age].astype(float).tolist()


def test_unknown_words_and_impossible_ages_are_warned_and_missing(written, tmp_path, caplog):
    root = shutil.copytree(written["ham10000"], tmp_path / "copy")
    path = root / "HAM10000_metadata.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[0, "localization"], frame.loc[1, "localization"], frame.loc[2, "age"] = "elbow", "elbow", "150"
    frame.to_csv(path, index=False)
    ids = read_split("ham10000", root, "train").ids
    with caplog.at_level(logging.WARNING, logger="lesion.data.metadata"):
        metadata = read_metadata("ham10000", root, "train", ids)
    row = dict(zip(frame["image_id"], range(len(frame))))
    assert metadata.loc[frame.loc[0, "image_id"], "site"] is None and metadata.loc[frame.loc[1, "image_id"], "site"] is None
    assert np.isnan(metadata.loc[frame.loc[2, "image_id"], "age"])
    assert caplog.text.count("site value 'elbow' is not one of") == 1  # once per value
    assert "age '150' is not a number of years in 0–120" in caplog.text
    assert row  # the edited rows exist


def test_folder_form_of_the_2017_archive_and_no_file(written, tmp_path):
    root = shutil.copytree(written["isic2017"], tmp_path / "folders")
    for archive in root.glob("*.zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(root)
        archive.unlink()
    ids = read_split("isic2017", root, "train").ids
    assert read_metadata("isic2017", root, "train", ids).equals(read_metadata("isic2017", written["isic2017"], "train", ids))
    assert read_metadata("isic2019", written["isic2019"], "val", []) is None  # no such split, no file


def test_a_missing_column_is_one_clear_error(written, tmp_path):
    root = shutil.copytree(written["isic2019"], tmp_path / "copy")
    path = root / "ISIC_2019_Training_Metadata.csv"
    path.write_text(path.read_text().replace("age_approx", "age", 1))
    with pytest.raises(LesionError, match="missing column.*age_approx"):
        read_metadata("isic2019", root, "train", read_split("isic2019", root, "train").ids)


def test_real_uda1_metadata_matches_its_file(uda1):
    table = read_split("isic2017", uda1, "train")
    frame = read_metadata("isic2017", uda1, "train", table.ids)
    raw = raw_cells("isic2017", uda1, "train").set_index("image_id").loc[table.ids]
    assert frame["age"].isna().sum() == (raw["age_approximate"] == "unknown").sum()
    known = raw["age_approximate"] != "unknown"
    assert frame.loc[known.to_numpy(), "age"].tolist() == raw.loc[known, "age_approximate"].astype(float).tolist()
    assert frame["sex"].fillna("unknown").tolist() == raw["sex"].tolist()
