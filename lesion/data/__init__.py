"""Data: official ISIC layouts, synthetic data, transforms and the Lightning DataModule."""
