"""Exploratory data analysis of a dataset's splits: counts, sizes, colour, lesions, samples, near-duplicates."""
