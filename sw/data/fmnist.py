"""Fashion-MNIST and its rotated variant (the paper's image domain shift).

Source domain: upright images.  Target domain: the same kind of images rotated by a
fixed angle; the fine-tune pool and the validation set come from the rotated training
images (a fixed permutation), the test set from the rotated test images.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .dataset import Dataset, Split
from .errors import DataCorruptError
from .lookup import locate
from .rotate import rotate_images

__all__ = ["TITLE", "FMNIST_FILES", "PERMUTATION_SEED", "N_FINETUNE", "read_idx", "load_fashion_mnist",
           "required_files", "load_fmnist_rotated", "clear_cache"]

TITLE = "Fashion-MNIST"
FMNIST_FILES = {
    "train": ("fashion-mnist/train-images-idx3-ubyte.gz", "fashion-mnist/train-labels-idx1-ubyte.gz"),
    "t10k": ("fashion-mnist/t10k-images-idx3-ubyte.gz", "fashion-mnist/t10k-labels-idx1-ubyte.gz"),
}
_COUNTS = {"train": 60000, "t10k": 10000}
PERMUTATION_SEED = 20250101
"""Seed of the permutation of the 60,000 training images that splits fine-tune/validation."""
N_FINETUNE = 50000
"""Permutation positions [0:N_FINETUNE] fine-tune, the rest (10,000) validation."""


def required_files(name: str) -> list[tuple[str, ...]]:
    """The files ``load_fmnist_rotated`` reads, for any angle (each a 1-tuple)."""
    return [(rel,) for split in ("train", "t10k") for rel in FMNIST_FILES[split]]


def read_idx(path: str | os.PathLike, magic: int, count: int) -> np.ndarray:
    """Decode a gzip'ed big-endian IDX file (magic 2049 labels, 2051 images), checking the
    magic number, the item count and that the payload length matches the header."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataCorruptError(f"{path}: not a valid gzip file ({e}); delete it and re-download") from e
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        got = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise DataCorruptError(f"{path}: IDX magic number {got}, expected {magic}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if dims[0] != count or (ndim == 3 and dims[1:] != [28, 28]):
        raise DataCorruptError(f"{path}: IDX dimensions {dims}, expected [{count}"
                               f"{', 28, 28' if ndim == 3 else ''}]")
    if len(data) != header + int(np.prod(dims)):
        raise DataCorruptError(f"{path}: {len(data) - header} payload bytes, header says "
                               f"{int(np.prod(dims))}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(split: str, data_dir=None, *, download: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 28, 28), labels int64 (n,)) of split ``"train"`` or ``"t10k"``."""
    img_rel, lab_rel = FMNIST_FILES[split]
    n = _COUNTS[split]
    images = read_idx(locate(img_rel, data_dir, download=download), 2051, n)
    labels = read_idx(locate(lab_rel, data_dir, download=download), 2049, n).astype(np.int64)
    if labels.max() > 9:
        raise DataCorruptError(f"{lab_rel}: label {labels.max()} outside 0..9")
    return images, labels


@functools.lru_cache(maxsize=2)
def _upright(root: Path, download: bool) -> tuple[Split, Split]:
    """The upright train/test splits as read-only float32 in [0, 1], shared by all angles."""
    out = []
    for split in ("train", "t10k"):
        images, labels = load_fashion_mnist(split, root, download=download)
        x = (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]
        x.flags.writeable = False
        labels.flags.writeable = False
        out.append(Split(x, labels))
    return out[0], out[1]


def load_fmnist_rotated(degrees: int, root: Path, *, download: bool = True) -> Dataset:
    """Fashion-MNIST with the target domain rotated by ``degrees`` counter-clockwise."""
    train, test = _upright(Path(root), download)
    perm = np.random.default_rng(PERMUTATION_SEED).permutation(len(train))

    def rotated(x: np.ndarray) -> np.ndarray:
        r = rotate_images(x, degrees)
        return np.clip(r, 0.0, 1.0, out=r)  # bilinear weights sum to 1 up to rounding

    ft_idx, val_idx = perm[:N_FINETUNE], perm[N_FINETUNE:]
    notes = (
        f"Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747), pixels scaled to [0, 1]. "
        f"pretrain / pretrain_test: the 60,000 upright training / 10,000 upright test images. "
        f"Target domain: images rotated by {degrees} degrees counter-clockwise about the image "
        f"centre, bilinear interpolation, zeros outside the source image. finetune / validation: "
        f"rotated training images at positions [0:{N_FINETUNE}] / [{N_FINETUNE}:60000] of "
        f"np.random.default_rng({PERMUTATION_SEED}).permutation(60000) (so the fine-tune pool "
        f"holds rotated copies of pretrain images, as in the paper's set-up); test: the 10,000 "
        f"rotated test images.")
    return Dataset(
        name=f"fmnist-rot{degrees}", classes=10, input_shape=(1, 28, 28),
        pretrain=train, pretrain_test=test,
        finetune=Split(rotated(train.x[ft_idx]), train.y[ft_idx]),
        validation=Split(rotated(train.x[val_idx]), train.y[val_idx]),
        test=Split(rotated(test.x), test.y),
        notes=notes)


def clear_cache() -> None:
    """Forget the upright images shared by all angles (e.g. after replacing files)."""
    _upright.cache_clear()
