"""Exported models: a trained net (or a mean ensemble) as one ONNX or TorchScript graph of probabilities."""
