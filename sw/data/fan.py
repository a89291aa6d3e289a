"""Cooling-fan vibration spectra (the paper's "Fan" data, Damage1 and Damage2), loaded
from their npz files (see :mod:`.fan_build` for their layout and how they are built from
the public raw zips when they cannot be downloaded).

The paper does not publish its split, so the ``.npz`` files are a documented
reconstruction (data README section 3b): silent room = source domain, the noisy room
near a ventilation fan = target domain; classes 0 normal fan running, 1 damaged fan
running, 2 fan stopped.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .dataset import Dataset, Split
from .errors import DataCorruptError
from .fan_build import N_BINS, build_npz_file, check_arrays, npz_relpath
from .lookup import locate

__all__ = ["TITLE", "FAN_DATASETS", "required_files", "load_fan"]

TITLE = "the cooling-fan spectra"
FAN_DATASETS = {"fan-damage1": "damage1", "fan-damage2": "damage2"}


def required_files(name: str) -> list[tuple[str, ...]]:
    """The files ``load_fan(name)`` reads (each a tuple of interchangeable ones)."""
    return [(npz_relpath(FAN_DATASETS[name]),)]


def load_fan(name: str, root: Path, *, download: bool = True) -> Dataset:
    """Fan Damage1 / Damage2 from its npz (see module doc)."""
    damage = FAN_DATASETS[name]
    path = locate(npz_relpath(damage), root, download=download, obtain=build_npz_file)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataCorruptError(f"{path}: not a readable npz ({e})") from e
    check_arrays(arrays, damage, str(path))
    extra = arrays["split"] == 3
    notes = (
        f"Cooling-fan vibration spectra, 12 cm fan, normal vs {damage} (github.com/matutani/"
        f"cooling-fan @ fcd19b7; Sunaga, Kondo, Matsutani, IEEE Micro 2023); features = the first "
        f"256 spectrum bins, unscaled; classes 0 normal fan running, 1 damaged fan running, 2 fan "
        f"stopped. The split is a documented reconstruction of the paper's set-up (data README "
        f"section 3b), not confirmed by the paper: pretrain = silent room A take 1, finetune = "
        f"noisy room (near a ventilation fan) take 1, test = noisy room take 2, pretrain_test = "
        f"the extra silent takes (silent A take 2, silent B takes 1 and 2; split == 3). No "
        f"validation split.")
    return Dataset(
        name=name, classes=3, input_shape=(N_BINS,),
        pretrain=Split(arrays["X_pretrain"], arrays["y_pretrain"]),
        pretrain_test=Split(arrays["X"][extra], arrays["y"][extra]),
        finetune=Split(arrays["X_finetune"], arrays["y_finetune"]),
        validation=None,
        test=Split(arrays["X_test"], arrays["y_test"]),
        notes=notes)
