"""Patient metadata as network input (model.metadata=true): encoding, exactness on embeddings, training with
SMOTE-Tomek, the encoding kept by the checkpoint, evaluation on splits and folders, and the signal it adds."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lesion.data.datamodule import IsicDataModule
from lesion.data.layouts import ISIC2018, LAYOUTS
from lesion.data.metadata import read_metadata
from lesion.data.metadata_features import MetadataEncoding
from lesion.errors import LesionError
from lesion.models.registry import baseline_net, barata_net
from lesion.train.module import LesionClassifier

K, TAXONOMY = ISIC2018.num_classes, ISIC2018.taxonomy()
SITES = ("head/neck", "torso")
TINY = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
        "dataset.batch_size=4", "dataset.num_workers=0"]


def table(ages, sexes, sites) -> pd.DataFrame:
    return pd.DataFrame({"age": pd.Series(ages, dtype="float64"), "sex": sexes, "site": sites})


def test_encoding_says_missing_with_its_own_column_never_with_a_zero():
    encoding = MetadataEncoding.fit(table([30, 50, math.nan], ["male", None, "female"], ["torso", None, None]), SITES)
    assert (encoding.age_mean, encoding.age_std) == (40.0, 10.0)  # fitted on the known ages only
    rows = encoding.encode(table([40, math.nan, 60], [None, "female", "male"], ["torso", "head/neck", "scalp"]))
    assert encoding.names == ["age", "age missing", "sex=female", "sex=male", "sex missing",
                              "site=head/neck", "site=torso", "site missing"]
    assert rows.dtype == np.float32 and rows.shape == (3, encoding.width)
    assert rows.tolist() == [[0, 0, 0, 0, 1, 0, 1, 0],   # age 40 = the mean: 0, and not missing
                             [0, 1, 1, 0, 0, 1, 0, 0],   # missing age: 0 *and* its indicator
                             [2, 0, 0, 1, 0, 0, 0, 1]]   # a site outside the encoding: missing
    assert MetadataEncoding.from_dict(json.loads(json.dumps(encoding.as_dict()))) == encoding
    no_sites = MetadataEncoding.fit(table([], [], []), ())
    assert no_sites.names[-1] == "sex missing" and (no_sites.age_mean, no_sites.age_std) == (50.0, 20.0)


@pytest.mark.parametrize("kind", ["baseline", "flat", "hierarchical"])
def test_head_from_pooled_with_metadata_equals_forward(kind):
    torch.manual_seed(0)
    if kind == "baseline":
        net = baseline_net(K, TAXONOMY, backbone="resnet18", weights="none", metadata_features=8)
    else:
        net = barata_net(K, TAXONOMY, backbone="resnet18", weights="none", hierarchical=kind == "hierarchical",
                         hidden_size=32, embed_dim=8, metadata_features=8)
    net.eval()
    x, meta = torch.randn(3, 3, 64, 64), torch.randn(3, 8)
    with torch.no_grad():
        logits = net(x, meta)
        pooled = net.head_from_pooled(*net.embed(x), meta)
        other = net(x, meta.flip(0))
    assert logits.shape == (3, K)
    assert torch.allclose(pooled, logits, atol=1e-5)
    assert not torch.allclose(other, logits, atol=1e-3)  # the metadata reaches the output
    with pytest.raises(ValueError, match="takes patient metadata"):
        net(x)
    with pytest.raises(ValueError, match="B×8 encoded metadata"):
        net(x, torch.zeros(3))  # e.g. the labels of an (images, labels) batch


def test_datamodule_items_carry_the_encoded_metadata_of_their_image(synthetic_root):
    root = synthetic_root("isic2019")
    data = IsicDataModule("isic2019", str(root), image_size=32, num_workers=0, metadata=True)
    data.setup("fit")
    encoding = data.metadata_encoding
    assert encoding.sites == tuple(LAYOUTS["isic2019"].sites)
    for dataset in (data.train_set, data.val_set, data.test_set):
        image, meta, label = dataset[0]
        assert image.shape == (3, 32, 32) and meta.shape == (encoding.width,)
        split = dataset.table.split
        expected = encoding.encode(read_metadata("isic2019", root, split, dataset.ids[:1]))[0]
        assert meta.numpy().tolist() == expected.tolist()
    # The age scaling is fitted on the training images alone, not on the validation hold-out.
    ages = read_metadata("isic2019", root, "train", data.train_set.table.ids)["age"]
    train_ages = ages.iloc[np.unique(data.train_set.indices)].dropna()
    assert encoding.age_mean == pytest.approx(train_ages.mean())
    assert encoding.age_mean != pytest.approx(ages.dropna().mean())


def test_a_split_without_metadata_is_refused_for_a_metadata_model(synthetic_root):
    data = IsicDataModule("isic2018", str(synthetic_root("isic2018")), image_size=32, num_workers=0, metadata=True)
    with pytest.raises(LesionError, match="has no patient metadata for the train split"):
        data.setup("fit")


def test_metadata_model_trains_with_smote_and_evaluates_from_the_checkpoint_alone(run_cli, same_probabilities,
                                                                                tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train.py", "dataset=synthetic2019", "dataset.synthetic_n=60", "model=barata", "model.metadata=true",
            "balance=smote_tomek", "balance.smote_tomek.head_epochs=2", "trainer.max_epochs=1", *TINY,
            f"hydra.run.dir={run_dir}")
    best = run_dir / "checkpoints" / "best.ckpt"
    stored = torch.load(best, map_location="cpu", weights_only=True)["hyper_parameters"]
    module = LesionClassifier.load_from_checkpoint(best)
    assert module.uses_metadata and stored["model"]["metadata"] is True
    encoding = MetadataEncoding.from_dict(stored["metadata"])
    assert module.net.metadata_features == encoding.width
    # Evaluation rebuilds the split, encodes its metadata with the stored encoding and reproduces the
    # test metrics training wrote (the head trained on resampled [embedding; metadata] rows).
    trained = json.loads((run_dir / "test_metrics.json").read_text())
    out = tmp_path / "evaluation"
    run_cli("evaluate.py", f"ckpt={best}", f"out={out}", "gradcam.n=1", "num_workers=0", "bootstrap=10")
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["confusion"] == trained["confusion"]
    assert evaluated["auc_macro"] == pytest.approx(trained["auc_macro"], abs=1e-6)
    assert list((out / "gradcam").glob("*_gradcam_overlay.png"))
    report = json.loads((run_dir / "balance.json").read_text())["smote_tomek"]
    assert sum(report["counts_after"].values()) > 0
    # The head was validated on [embedding; metadata] rows; the checkpoint now runs on images and metadata.
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    log = pd.read_csv(run_dir / "logs" / "head" / "metrics.csv").dropna(subset=["val/bacc"])
    logged = log[log["epoch"] == checkpoint["epoch"]].iloc[-1]
    on_val = tmp_path / "on-val"
    run_cli("evaluate.py", f"ckpt={best}", "split=val", f"out={on_val}", "gradcam.n=0", "plots=false",
            "num_workers=0", "bootstrap=10")
    validated = json.loads((on_val / "metrics.json").read_text())
    assert validated["bacc"] == pytest.approx(logged["val/bacc"], abs=1e-6)
    assert validated["auc_macro"] == pytest.approx(logged["val/auc_macro"], abs=1e-5)

    # A folder of the test images with their metadata CSV gives the split's probabilities exactly.
    root = Path(stored["dataset"]["root"])
    folder = tmp_path / "images"
    with zipfile.ZipFile(root / "ISIC_2019_Test_Input.zip") as archive:
        archive.extractall(folder)
    images = folder / "ISIC_2019_Test_Input"
    metadata = pd.read_csv(root / "ISIC_2019_Test_Metadata.csv", dtype=str, keep_default_na=False)
    metadata = metadata.rename(columns={"age_approx": "age", "anatom_site_general": "site"})
    metadata["image"] = metadata["image"] + ".jpg"  # names with their extension are accepted
    metadata[["image", "age", "sex", "site"]].to_csv(tmp_path / "metadata.csv", index=False)
    refused = run_cli("evaluate.py", f"ckpt={best}", f"images={images}", f"out={tmp_path / 'refused'}", check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("lesion: error: metadata: ")
    assert not (tmp_path / "refused").exists()
    predicted = tmp_path / "folder"
    run_cli("evaluate.py", f"ckpt={best}", f"images={images}", f"metadata={tmp_path / 'metadata.csv'}",
            f"out={predicted}", "gradcam.n=0", "num_workers=0")
    same_probabilities(out / "predictions.csv", predicted / "predictions.csv", trained["classes"])


def test_metadata_for_a_layout_without_it_is_refused_before_any_work(run_cli, tmp_path):
    for name in ("benign", "malignant"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (40, 40), (200, 120, 90)).save(tmp_path / "data" / name / "a.jpg")
    result = run_cli("train.py", "dataset=folder", f"dataset.root={tmp_path / 'data'}", "model.metadata=true",
                     f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "lesion: error: model.metadata: fuses patient metadata, and the folder layout has none")
    assert not (tmp_path / "run").exists()


def test_csv_metadata_columns(synthetic_root, tmp_path):
    root = synthetic_root("ham10000")
    frame = pd.read_csv(root / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    (tmp_path / "labels.csv").write_text(frame.to_csv(index=False))
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        with zipfile.ZipFile(root / f"{part}.zip") as archive:
            archive.extractall(tmp_path)
    images = tmp_path / "all"
    images.mkdir()
    for path in tmp_path.glob("HAM10000_images_part_*/*.jpg"):
        path.rename(images / path.name)
    data = IsicDataModule("csv", str(tmp_path), image_size=32, num_workers=0, csv="labels.csv", images="all",
                          image_column="image_id", label_column="dx", age_column="age", sex_column="sex",
                          site_column="localization", metadata=True)
    data.setup("fit")
    sites = {v.lower() for v in frame["localization"]} - {"unknown"}
    assert data.metadata_encoding.sites == tuple(sorted(sites))
    _, meta, _ = data.train_set[0]
    row = frame.set_index("image_id").loc[data.train_set.ids[0]]
    names = data.metadata_encoding.names
    site = row["localization"].lower()
    assert meta[names.index(f"site={site}" if site in sites else "site missing")] == 1
