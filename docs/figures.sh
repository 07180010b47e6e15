#!/usr/bin/env bash
# Regenerate the README pictures from the synthetic dataset: train the quickstart recipe at 64 px
# (at the quickstart's 32 px, layer3's Grad-CAM map would be 2×2), evaluate it, and copy the
# confusion matrix and the Grad-CAM contact sheet into docs/; then screenshot the web page
# (demo.py, in headless Chromium) with two synthetic images of the ISIC 2018 test layout.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
python train.py experiment=quickstart dataset.image_size=64 hydra.run.dir="$work/run"
python evaluate.py ckpt="$work/run/checkpoints/best.ckpt" split=test gradcam.n=12 gradcam.layer=layer3 out="$work/eval"
cp "$work/eval/plots/confusion.png" docs/confusion.png
cp "$work/eval/gradcam_sheet.png" docs/gradcam_sheet.png
python -m lesion.data.synthetic --layout isic2018 --out "$work/data" --n 30 --seed 7
unzip -q -j "$work/data/ISIC2018_Task3_Test_Input.zip" -d "$work/test"
python docs/demo_browser.py --ckpt "$work/run/checkpoints/best.ckpt" --out docs/demo.png \
  --image "$(ls "$work"/test/*.jpg | sed -n 1p)" --image "$(ls "$work"/test/*.jpg | sed -n 2p)" gradcam.layer=layer3
rm -rf "$work"
