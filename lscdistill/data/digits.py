"""scikit-learn's 8x8 digits as a data source: its names (``digits``, ``digits:train``, ``digits:val``), its fixed
stratified split and its image size."""

from __future__ import annotations

import numpy as np

__all__ = ["DIGITS_IMG_SIZE", "digits_split", "is_digits"]

DIGITS = "digits"
DIGITS_IMG_SIZE = 32  # digits are 8x8: upsampling to a model's 224 adds compute, not information
DIGITS_SPLITS = ("train", "val")
DIGITS_CROP_SCALE = (0.5, 1.0)  # random resized crops of the 8x8 digits keep at least half the area
DIGITS_VAL_FRACTION = 0.2  # digits:val is a fixed stratified 20% (seeded), digits:train the other 80%


def is_digits(data: str | None) -> bool:
    return data is not None and (data == DIGITS or data.startswith(DIGITS + ":"))


def digits_split(labels: np.ndarray, split: str | None) -> np.ndarray:
    """Indices of ``digits`` (all), ``digits:train`` or ``digits:val``: a fixed stratified split, the same on
    every machine (every class gives its first 20% after a seeded shuffle to val)."""
    if split is None:
        return np.arange(len(labels))
    if split not in DIGITS_SPLITS:
        raise ValueError(f"unknown digits split {split!r}: use digits, digits:train or digits:val")
    order = np.random.default_rng(20240917).permutation(len(labels))
    val = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        val[members[: round(DIGITS_VAL_FRACTION * len(members))]] = True
    return np.flatnonzero(val if split == "val" else ~val)
