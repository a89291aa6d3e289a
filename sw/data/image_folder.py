"""Bring your own data: a folder of images, one sub-folder per class, as a `Dataset`.

    photos/train/<class>/*.png    photos/test/<class>/*.png    [photos/val/<class>/*.png]
    photos/<class>/*.png          (no train/ folder: the test split is carved, see below)

Classes are the sub-folder names in sorted order (labels 0, 1, ...; ``Dataset.class_names``),
taken from ``train/`` (a test or val class that ``train/`` lacks is an error). Images are .png,
.jpg, .jpeg or .bmp (other and hidden files are ignored), read with Pillow (the ``images``
extra), as one gray channel when every image is gray, else as RGB (alpha dropped), scaled to
[0, 1] and stored (N, C, H, W). All images must have one size, or give ``size=(H, W)`` to resize.

Without a ``train/`` folder, each class's files in sorted name order are split deterministically:
every 5th (positions 4, 9, 14, ...) is a test image, the rest are training images. The validation
split then comes from `from_arrays` (every 10th training row) unless ``val/`` exists.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from .arrays import from_arrays
from .dataset import Dataset
from .errors import DataFormatError, DataNotFoundError

__all__ = ["load_image_folder", "require_pillow", "IMAGE_SUFFIXES", "TEST_STRIDE"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TEST_STRIDE = 5
_GRAY = ("1", "L", "LA")
_SPLIT_DIRS = {"train": ("train",), "test": ("test",), "val": ("val", "validation")}


def require_pillow():
    """PIL.Image, or a one-line error that names the extra to install."""
    try:  # an optional package, imported when an image folder is read
        return importlib.import_module("PIL.Image")
    except ImportError:
        raise ModuleNotFoundError("reading an image folder needs Pillow: pip install 'skip2lora[images]'",
                                  name="PIL") from None


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES)


def _class_files(folder: Path, classes: list[str] | None, what: str) -> dict[str, list[Path]]:
    dirs = _visible_dirs(folder)
    if not dirs:
        raise DataFormatError(f"{folder} has no class sub-folders (one per class, holding its images)")
    if classes is not None:
        unknown = [d.name for d in dirs if d.name not in classes]
        if unknown:
            raise DataFormatError(f"{folder}: class folder {unknown[0]!r} is not among the training classes "
                                  f"({', '.join(classes)})")
    out = {}
    for d in dirs:
        files = _images(d)
        if not files:
            raise DataFormatError(f"{what} class folder {d} has no images ({', '.join(IMAGE_SUFFIXES)})")
        out[d.name] = files
    return out


def _read(files: list[Path], size, Image):
    """The images as float32 (N, C, H, W) in [0, 1]; gray unless one of them has color."""
    opened, color = [], False
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
                if img.mode in ("I", "I;16", "I;16B", "F"):
                    raise DataFormatError(f"{f}: {img.mode} images (16-bit or float) are not supported; "
                                          f"save 8-bit images")
                color = color or img.mode not in _GRAY and not (img.mode == "P" and _gray_palette(img))
                opened.append(img.copy())
        except DataFormatError:
            raise
        except Exception as exc:  # PIL.UnidentifiedImageError, truncated files, ...
            raise DataFormatError(f"cannot read the image {f}: {exc}") from None
    mode = "RGB" if color else "L"
    first = tuple(reversed(opened[0].size)) if size is None else tuple(size)
    out = np.empty((len(files), 3 if color else 1) + first, np.float32)
    for i, (f, img) in enumerate(zip(files, opened)):
        if size is not None:
            img = img.resize((first[1], first[0]), Image.BILINEAR)
        elif img.size[::-1] != first:
            raise DataFormatError(f"{f} is {img.size[1]}x{img.size[0]} pixels, {files[0]} is "
                                  f"{first[0]}x{first[1]}: give every image one size (or pass size=(H, W))")
        a = np.asarray(img.convert(mode), np.float32) / 255.0
        out[i] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return out


def _gray_palette(img) -> bool:
    rgb = img.convert("RGB")
    a = np.asarray(rgb)
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def load_image_folder(path: str | os.PathLike, *, size=None) -> Dataset:
    """The data set in image folder ``path`` (see the module docstring for its layout)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a folder name, not {type(path).__name__}")
    if size is not None and (len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                                                   or s < 1 for s in size)):
        raise ValueError(f"size must be (height, width) in pixels, not {size!r}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"no image folder {root}")
    Image = require_pillow()
    found = {role: next((root / n for n in names if (root / n).is_dir()), None) for role, names in _SPLIT_DIRS.items()}
    if found["train"] is not None:
        if found["test"] is None:
            raise DataFormatError(f"{root} has train/ but no test/ folder (both hold one sub-folder per class)")
        train = _class_files(found["train"], None, "training")
        classes = sorted(train)
        parts = {"train": train, "test": _class_files(found["test"], classes, "test")}
        if found["val"] is not None:
            parts["val"] = _class_files(found["val"], classes, "validation")
        how = f"train/, test/{', ' + found['val'].name + '/' if found['val'] is not None else ''} folders"
    else:
        if found["test"] is not None:
            raise DataFormatError(f"{root} has test/ but no train/ folder (both hold one sub-folder per class)")
        every = _class_files(root, None, "the")
        classes = sorted(every)
        parts = {"train": {c: [f for i, f in enumerate(fs) if i % TEST_STRIDE != TEST_STRIDE - 1]
                           for c, fs in every.items()},
                 "test": {c: fs[TEST_STRIDE - 1::TEST_STRIDE] for c, fs in every.items()}}
        if not any(parts["test"].values()):
            raise DataFormatError(f"{root}: no class has {TEST_STRIDE} images, so no test image can be held out "
                                  f"(every {TEST_STRIDE}th image per class is); add images or a train/, test/ layout")
        how = f"one folder per class; every {TEST_STRIDE}th image of a class (sorted by name) is a test image"
    arrays = {}
    for role, by_class in parts.items():
        files = [f for c in classes for f in by_class.get(c, [])]
        labels = np.array([i for i, c in enumerate(classes) for _ in by_class.get(c, [])], np.int64)
        arrays[f"x_{role}"], arrays[f"y_{role}"] = files, labels
    everything = [f for role in parts for f in arrays[f"x_{role}"]]
    pixels = _read(everything, size, Image)  # one pass: one color mode and one size for all splits
    start = 0
    for role in parts:
        n = len(arrays[f"x_{role}"])
        arrays[f"x_{role}"] = pixels[start:start + n]
        start += n
    return from_arrays(**arrays, classes=len(classes), class_names=classes, name=root.name, origin=str(root),
                       notes=f"Images from {root} ({how}), pixels scaled to [0, 1].")
