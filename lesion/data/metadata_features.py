"""Patient metadata as network input: age, sex and site encoded as a vector of numbers per image.

As Gessert et al. (MethodsX 2020): the age as a number, sex and anatomic site one-hot. Every
value may be missing, and a missing value is said so by its own indicator, never by a 0 that a
real value could also have:

    [age standardised (0 when missing), age missing,
     sex one-hot…, sex missing,
     site one-hot…, site missing]          (no site block where the layout names no sites)

The encoding (the category lists and the age's mean and spread, fitted on the training split)
is stored in the checkpoint as plain values, so evaluation and prediction encode identically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from lesion.data.metadata import SEXES

# Age scaling when the training split has no (or one) known age: a typical dermoscopy patient.
DEFAULT_AGE_MEAN, DEFAULT_AGE_STD = 50.0, 20.0


@dataclass(frozen=True)
class MetadataEncoding:
    """How a metadata table (``lesion.data.metadata.read_metadata``) becomes a float32 matrix.

    Attributes:
        sexes: the sex categories, in one-hot order.
        sites: the anatomic-site categories, in one-hot order (empty: no site block).
        age_mean, age_std: ages are encoded as ``(age - age_mean) / age_std``.
    """

    sexes: tuple[str, ...]
    sites: tuple[str, ...]
    age_mean: float
    age_std: float

    @classmethod
    def fit(cls, table: pd.DataFrame, sites: Sequence[str]) -> MetadataEncoding:
        """The encoding of a training split's table: age mean and standard deviation of its known ages."""
        ages = table["age"].dropna().to_numpy(dtype=np.float64)
        mean = float(ages.mean()) if len(ages) else DEFAULT_AGE_MEAN
        std = float(ages.std()) if len(ages) > 1 and ages.std() > 0 else DEFAULT_AGE_STD
        return cls(tuple(SEXES), tuple(s.lower() for s in sites), mean, std)

    @classmethod
    def from_dict(cls, values: Mapping) -> MetadataEncoding:
        """The encoding stored by :meth:`as_dict` (checked by ``lesion.options.check_stored``)."""
        return cls(tuple(values["sexes"]), tuple(values["sites"]), float(values["age_mean"]), float(values["age_std"]))

    def as_dict(self) -> dict:
        """Plain values for a checkpoint's hyper-parameters."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def names(self) -> list[str]:
        """The name of every encoded column, in order."""
        sites = [*(f"site={s}" for s in self.sites), "site missing"] if self.sites else []
        return ["age", "age missing", *(f"sex={s}" for s in self.sexes), "sex missing", *sites]

    @property
    def width(self) -> int:
        """Number of encoded columns."""
        return len(self.names)

    def encode(self, table: pd.DataFrame) -> np.ndarray:
        """N×``width`` float32 rows of a table with columns ``age`` (NaN when missing), ``sex``, ``site``
        (a category or ``None``). A category outside this encoding's lists is encoded as missing."""
        out = np.zeros((len(table), self.width), dtype=np.float32)
        for row, (age, sex, site) in enumerate(zip(table["age"], table["sex"], table["site"])):
            known = age is not None and not (isinstance(age, float) and math.isnan(age))
            out[row, 0] = (float(age) - self.age_mean) / self.age_std if known else 0.0
            out[row, 1] = 0.0 if known else 1.0
            column = 2
            for value, categories in ((sex, self.sexes), (site, self.sites)):
                if not categories:
                    continue
                position = categories.index(value) if value in categories else len(categories)
                out[row, column + position] = 1.0
                column += len(categories) + 1
        return out
