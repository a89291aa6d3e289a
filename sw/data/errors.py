"""The data layer's exceptions (a leaf: every other data module may raise them)."""

from __future__ import annotations

__all__ = ["DataError", "DataNotFoundError", "DataCorruptError", "DataFormatError"]


class DataError(Exception):
    """Base class of every data-layer error."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data file is missing and could not be obtained."""


class DataCorruptError(DataError, ValueError):
    """A data file exists but its bytes or its structure are wrong."""


class DataFormatError(DataError, ValueError):
    """Data a user brings (arrays, an .npz file, an image folder) that a data set cannot be made
    of: a missing array, shapes that disagree, NaN or Inf, labels outside the classes."""
