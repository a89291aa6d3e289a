"""Cooling-fan vibration spectra (the paper's "Fan" data, Damage1 and Damage2).

The paper does not publish its split, so the ``.npz`` files are a documented
reconstruction (data README section 3b): silent room = source domain, the noisy room
near a ventilation fan = target domain; classes 0 normal fan running, 1 damaged fan
running, 2 fan stopped.  ``build_arrays`` re-creates the npz arrays exactly from the
public raw zips, which is how the npz is obtained when it cannot be downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from .datasets import Dataset, Split
from .store import FILES, DataCorruptError, DataFile, locate, write_verified

__all__ = ["FAN_DATASETS", "RUN_BOUNDARIES", "EXPECTED", "N_BINS", "npz_relpath", "run_names",
           "read_run", "build_arrays", "check_arrays", "build_npz_file", "load_fan"]

FAN_DATASETS = {"fan-damage1": "damage1", "fan-damage2": "damage2"}
N_BINS = 256
"""Features = the first 256 spectrum bins (0..255 Hz) of the 512 in each CSV."""
SPECTRA_PER_RUN = 235

RUN_BOUNDARIES: dict[str, tuple[int, int, int]] = {
    # speed-segment boundaries b1, b2, b3 (h < b1 <= m < b2 <= l < b3 <= o), README 3a
    "12cm_hmlo_normal_silentA_1": (61, 120, 177), "12cm_hmlo_normal_silentA_2": (60, 122, 179),
    "12cm_hmlo_normal_silentB_1": (61, 119, 177), "12cm_hmlo_normal_silentB_2": (60, 119, 176),
    "12cm_hmlo_normal_noisy_1": (61, 118, 177), "12cm_hmlo_normal_noisy_2": (61, 119, 178),
    "12cm_hmlo_damage1_silentA_1": (59, 120, 177), "12cm_hmlo_damage1_silentA_2": (62, 121, 179),
    "12cm_hmlo_damage1_silentB_1": (61, 120, 178), "12cm_hmlo_damage1_silentB_2": (60, 120, 179),
    "12cm_hmlo_damage1_noisy_1": (60, 120, 178), "12cm_hmlo_damage1_noisy_2": (60, 120, 178),
    "12cm_hmlo_damage2_silentA_1": (59, 118, 177), "12cm_hmlo_damage2_silentA_2": (62, 120, 178),
    "12cm_hmlo_damage2_silentB_1": (61, 119, 178), "12cm_hmlo_damage2_silentB_2": (63, 123, 181),
    "12cm_hmlo_damage2_noisy_1": (62, 120, 178), "12cm_hmlo_damage2_noisy_2": (63, 122, 180),
}

# Run order of the npz (split 0, 1, 2, then the extra silent takes as split 3), each as
# (room/take, split code, env code); normal run first, then the damaged run.
_RUN_ORDER = (("silentA_1", 0, 0), ("noisy_1", 1, 2), ("noisy_2", 2, 2),
              ("silentA_2", 3, 0), ("silentB_1", 3, 1), ("silentB_2", 3, 1))

EXPECTED = {
    # class counts [normal, damaged, stopped] per split code, and X_pretrain[0, :5]
    "damage1": {0: [177, 177, 116], 1: [177, 178, 115], 2: [178, 178, 114], 3: [532, 536, 342]},
    "damage2": {0: [177, 177, 116], 1: [177, 178, 115], 2: [178, 180, 112], 3: [532, 537, 341]},
    "head": [0.0, 0.040549, 0.025874, 0.026238, 0.049747],
}
_KEYS = ("X", "y", "split", "domain", "env", "speed", "fan", "rec", "pos", "rec_names",
         "X_pretrain", "y_pretrain", "X_finetune", "y_finetune", "X_test", "y_test")


def npz_relpath(damage: str) -> str:
    return f"cooling-fan/fan_{damage}_spectra256.npz"


def run_names(damage: str) -> list[str]:
    """The 12 runs of a data set in npz order (rows are grouped by run in this order)."""
    return [f"12cm_hmlo_{fan}_{room}" for room, _, _ in _RUN_ORDER for fan in ("normal", damage)]


def read_run(zip_path: str | os.PathLike) -> np.ndarray:
    """The (235, 512) float64 magnitude spectra of one raw run, CSVs in file-name order."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = sorted(n for n in z.namelist() if n.endswith(".csv"))
            text = b"".join(z.read(n).rstrip(b"\r\n") + b"\n" for n in names)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataCorruptError(f"{zip_path}: not a valid zip ({e})") from e
    if len(names) != SPECTRA_PER_RUN:
        raise DataCorruptError(f"{zip_path}: {len(names)} CSV files, expected {SPECTRA_PER_RUN}")
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise DataCorruptError(f"{zip_path}: malformed CSV ({e})") from e
    if table.shape != (SPECTRA_PER_RUN * 512, 2) or not np.array_equal(
            table[:, 0], np.tile(np.arange(512.0), SPECTRA_PER_RUN)):
        raise DataCorruptError(f"{zip_path}: every CSV must have rows 'index, value' for index 0..511")
    return table[:, 1].reshape(SPECTRA_PER_RUN, 512)


def build_arrays(damage: str, zip_paths: dict[str, Path]) -> dict[str, np.ndarray]:
    """The npz arrays of data set ``damage`` from the raw run zips (README 3b recipe)."""
    cols: dict[str, list] = {k: [] for k in ("X", "y", "split", "domain", "env", "speed", "fan",
                                              "rec", "pos")}
    names = run_names(damage)
    for rec, name in enumerate(names):
        room = name.split("_", 3)[3]
        _, split, env = next(r for r in _RUN_ORDER if r[0] == room)
        is_damaged = int(damage in name)
        pos = np.arange(SPECTRA_PER_RUN)
        b1, b2, b3 = RUN_BOUNDARIES[name]
        speed = np.searchsorted(np.array([b1, b2, b3]), pos, side="right")
        n = SPECTRA_PER_RUN
        cols["X"].append(read_run(zip_paths[name])[:, :N_BINS].astype(np.float32))
        cols["y"].append(np.where(speed == 3, 2, is_damaged))
        cols["split"].append(np.full(n, split))
        cols["domain"].append(np.full(n, int(env == 2)))
        cols["env"].append(np.full(n, env))
        cols["speed"].append(speed)
        cols["fan"].append(np.full(n, is_damaged))
        cols["rec"].append(np.full(n, rec))
        cols["pos"].append(pos)
    out = {k: np.concatenate(v).astype(np.float32 if k == "X" else np.int64) for k, v in cols.items()}
    out["rec_names"] = np.array(names)
    for code, key in ((0, "pretrain"), (1, "finetune"), (2, "test")):
        out[f"X_{key}"] = out["X"][out["split"] == code]
        out[f"y_{key}"] = out["y"][out["split"] == code]
    return {k: out[k] for k in _KEYS}


def check_arrays(arrays, damage: str, where: str) -> None:
    """Check the structure and the README's expected values; DataCorruptError if off."""
    try:
        a = {k: np.asarray(arrays[k]) for k in _KEYS}
    except KeyError as e:
        raise DataCorruptError(f"{where}: missing array {e}") from e
    n = 12 * SPECTRA_PER_RUN
    if a["X"].shape != (n, N_BINS) or a["X"].dtype != np.float32:
        raise DataCorruptError(f"{where}: X is {a['X'].dtype} {a['X'].shape}, expected float32 {(n, N_BINS)}")
    for k in ("y", "split"):
        if a[k].shape != (n,) or not np.issubdtype(a[k].dtype, np.integer):
            raise DataCorruptError(f"{where}: {k} has shape {a[k].shape} / dtype {a[k].dtype}")
    if not np.isfinite(a["X"]).all() or a["X"].min() < 0 or a["X"].max() > 0.99999 + 1e-6:
        raise DataCorruptError(f"{where}: X outside [0, 0.99999]")
    for code in range(4):
        counts = np.bincount(a["y"][a["split"] == code], minlength=3).tolist()
        if counts != EXPECTED[damage][code]:
            raise DataCorruptError(f"{where}: split {code} class counts {counts}, expected "
                                   f"{EXPECTED[damage][code]}")
    for code, key in ((0, "pretrain"), (1, "finetune"), (2, "test")):
        sel = a["split"] == code
        if not (np.array_equal(a[f"X_{key}"], a["X"][sel]) and np.array_equal(a[f"y_{key}"], a["y"][sel])):
            raise DataCorruptError(f"{where}: X_{key}/y_{key} differ from X/y[split == {code}]")
    if not np.array_equal(a["X_pretrain"][0, :5], np.array(EXPECTED["head"], dtype=np.float32)):
        raise DataCorruptError(f"{where}: X_pretrain[0, :5] = {a['X_pretrain'][0, :5]}, expected "
                               f"{EXPECTED['head']}")


def build_npz_file(relpath: str, dest: Path, root: Path, *, download: bool = True) -> None:
    """Build ``dest`` from the raw zips (located below ``root``, fetched if missing), check
    it against the README's expected values, and record its sha256 in ``<dest>.sha256``:
    the arrays are exactly the published ones, but the npz bytes can differ from the
    published file (zip headers, zlib or numpy version), so its hash may not match."""
    damage = next(d for d in FAN_DATASETS.values() if npz_relpath(d) == relpath)
    paths = {name: locate(f"cooling-fan/raw/{name}.zip", root, download=download)
             for name in run_names(damage)}
    arrays = build_arrays(damage, paths)
    check_arrays(arrays, damage, f"{dest} (built from the raw zips)")
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    # The sidecar goes first: a sidecar without its npz is harmless, the reverse is not.
    side = dest.with_name(dest.name + ".sha256")
    side_text = f"{digest}  {dest.name}\n".encode("ascii")
    write_verified(side, DataFile(side.name, hashlib.sha256(side_text).hexdigest(), "build"),
                   lambda f: f.write(side_text))
    write_verified(dest, dataclasses.replace(FILES[relpath], sha256=digest), lambda f: f.write(data))


def load_fan(name: str, root: Path, *, download: bool = True) -> Dataset:
    """Fan Damage1 / Damage2 from its npz (see module doc)."""
    damage = FAN_DATASETS[name]
    path = locate(npz_relpath(damage), root, download=download)
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
