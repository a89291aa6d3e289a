"""The cooling-fan npz files: their layout, the values the data README states for them,
and how to build them exactly from the public raw zips (one zip of 235 spectrum CSVs per
recording run), which is how an npz is obtained when it cannot be downloaded.

The split the npz encodes is a documented reconstruction (data README section 3b): silent
room = source domain, the noisy room near a ventilation fan = target domain; classes
0 normal fan running, 1 damaged fan running, 2 fan stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from .catalogue import DataFile
from .errors import DataCorruptError
from .fetch import write_verified
from .lookup import locate

__all__ = ["DAMAGES", "RUN_BOUNDARIES", "EXPECTED", "N_BINS", "npz_relpath", "run_names",
           "read_run", "build_arrays", "check_arrays", "build_npz_file"]

DAMAGES = ("damage1", "damage2")
"""The two damaged fans; each gives one data set (normal vs that damage)."""
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


def build_npz_file(spec: DataFile, dest: Path, root: Path, *, download: bool = True) -> None:
    """The look-up's ``obtain`` for the npz files: build ``dest`` (the file ``spec``) from
    the raw zips (located below ``root``, fetched if missing), check it against the
    README's expected values, and record its sha256 in ``<dest>.sha256``:
    the arrays are exactly the published ones, but the npz bytes can differ from the
    published file (zip headers, zlib or numpy version), so its hash may not match."""
    damage = next(d for d in DAMAGES if npz_relpath(d) == spec.relpath)
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
    write_verified(dest, dataclasses.replace(spec, sha256=digest), lambda f: f.write(data))
