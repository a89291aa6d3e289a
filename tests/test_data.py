"""Tests of the data layer on the real data sets, wherever the loaders' look-up finds them
($SKIP2LORA_DATA or the user cache; see ``requires_data`` in conftest.py).

The expected values are the ones stated in the shared data folder's README.  Downloads are
tested against a local HTTP server (the mirror mechanism), never the internet.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from skip2lora.data import (DATASET_NAMES, DataCorruptError, DataError, DataNotFoundError, Dataset,
                            Split, clear_cache, load_dataset, resolve_data_dir, rotate_images)
from skip2lora.data import catalogue, fan_build, fmnist, har, lookup

FM_LABELS = "fashion-mnist/t10k-labels-idx1-ubyte.gz"
HAR_FILES = ("uci-har/X_train.txt.gz", "uci-har/y_train.txt", "uci-har/subject_train.txt")
HAR_SIZES = {"pretrain": 5206, "pretrain_test": 460, "finetune": 896, "test": 510}


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Keep the real user cache and any mirror setting out of every test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(catalogue.MIRROR_ENV, raising=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """A local HTTP server for ``directory``; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def mirror(data_root):
    with serve(data_root) as url:
        yield url


@pytest.fixture(scope="module")
def fm(data_root):
    return load_dataset("fmnist-rot75", data_root)


@pytest.fixture(scope="module")
def har_ds(data_root):
    return load_dataset("har", data_root)


@pytest.fixture(scope="module")
def har_labels(data_root):
    """(y 0..5, subject) read from the small label files (no feature parse)."""
    y = np.loadtxt(data_root / "uci-har/y_train.txt", dtype=np.int64) - 1
    subject = np.loadtxt(data_root / "uci-har/subject_train.txt", dtype=np.int64)
    return y, subject


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part") or p.name.startswith(".probe")]


# --------------------------------------------------------------------------- API

def test_names_and_unknown_names(data_root):
    assert DATASET_NAMES == ("fmnist-rot75", "har", "fan-damage1", "fan-damage2")
    for bad in ("mnist", "HAR", "fmnist-rot360", "fmnist-rot-5", "fmnist-rot075", "fmnist-rotx",
                "fan-damage3", ""):
        with pytest.raises(ValueError) as e:
            load_dataset(bad, data_root)
        assert repr(bad) in str(e.value) and "fmnist-rot75" in str(e.value) and "fan-damage2" in str(e.value)


def test_error_hierarchy():
    assert issubclass(DataNotFoundError, DataError) and issubclass(DataCorruptError, DataError)
    assert issubclass(DataNotFoundError, FileNotFoundError) and issubclass(DataCorruptError, ValueError)


def test_split_validation_and_subset():
    s = Split(np.zeros((4, 3), np.float64), np.array([0, 1, 2, 1], np.int32))
    assert s.x.dtype == np.float32 and s.y.dtype == np.int64 and len(s) == 4
    sub = s.subset(np.array([1, 3]))
    assert len(sub) == 2 and sub.y.tolist() == [1, 1]
    assert len(s.subset(slice(0, 3))) == 3
    with pytest.raises(ValueError):
        Split(np.zeros((4, 3), np.float32), np.zeros(5, np.int64))
    with pytest.raises(ValueError):
        Split(np.zeros((4, 3), np.float32), np.zeros((4, 1), np.int64))
    with pytest.raises(Exception):
        s.x = np.zeros(1)  # frozen


@pytest.mark.requires_data("har")
def test_cached_and_read_only(data_root, har_ds):
    assert load_dataset("har", data_root) is har_ds
    for split in har_ds.splits().values():
        assert not split.x.flags.writeable and not split.y.flags.writeable
    with pytest.raises(ValueError):
        har_ds.finetune.x[0, 0] = 1.0


# --------------------------------------------------------------------------- Fashion-MNIST

@pytest.mark.requires_data("fmnist-rot75")
def test_fmnist_expected_values(fm):
    assert isinstance(fm, Dataset)
    assert fm.name == "fmnist-rot75" and fm.classes == 10 and fm.input_shape == (1, 28, 28)
    sizes = {k: len(v) for k, v in fm.splits().items()}
    assert sizes == {"pretrain": 60000, "pretrain_test": 10000, "finetune": 50000,
                     "validation": 10000, "test": 10000}
    for split in fm.splits().values():
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert split.x.shape[1:] == (1, 28, 28)
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
        assert not split.x.flags.writeable
    assert fm.pretrain.y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert fm.pretrain_test.y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert np.bincount(fm.pretrain.y).tolist() == [6000] * 10
    assert np.bincount(fm.pretrain_test.y).tolist() == [1000] * 10
    assert round(float(fm.pretrain.x.mean(dtype=np.float64)) * 255, 2) == 72.94
    assert round(float(fm.pretrain_test.x.mean(dtype=np.float64)) * 255, 2) == 73.15
    assert fm.pretrain.x.max() == 1.0
    # the exact IDX bytes: upright pixels are k/255
    assert np.array_equal(np.round(fm.pretrain.x[:100] * 255) / np.float32(255), fm.pretrain.x[:100])
    perm = np.random.default_rng(20250101).permutation(60000)
    assert np.array_equal(fm.finetune.y, fm.pretrain.y[perm[:50000]])
    assert np.array_equal(fm.validation.y, fm.pretrain.y[perm[50000:]])
    assert np.array_equal(fm.test.y, fm.pretrain_test.y)
    expect = np.clip(rotate_images(fm.pretrain.x[perm[[0, 1, 49999]]], 75), 0, 1)
    assert np.array_equal(fm.finetune.x[[0, 1, 49999]], expect)
    assert np.array_equal(fm.validation.x[:2], np.clip(rotate_images(fm.pretrain.x[perm[50000:50002]], 75), 0, 1))
    assert np.array_equal(fm.test.x[-3:], np.clip(rotate_images(fm.pretrain_test.x[-3:], 75), 0, 1))
    assert "bilinear" in fm.notes and "20250101" in fm.notes


@pytest.mark.requires_data("fmnist-rot75")
def test_fmnist_rot0_is_upright(data_root, fm):
    ds = load_dataset("fmnist-rot0", data_root)
    perm = np.random.default_rng(20250101).permutation(60000)
    assert ds.pretrain.x is fm.pretrain.x  # upright arrays are shared between angles
    assert np.array_equal(ds.finetune.x, fm.pretrain.x[perm[:50000]])
    assert np.array_equal(ds.test.x, fm.pretrain_test.x)


@pytest.mark.requires_data(FM_LABELS)
def test_read_idx_checks_structure(data_root, tmp_path):
    good = gzip.decompress((data_root / FM_LABELS).read_bytes())
    cases = {
        "magic": b"\x00\x00\x08\x03" + good[4:],
        "count": good[:4] + (9999).to_bytes(4, "big") + good[8:],
        "short": good[:-1],
    }
    for name, raw in cases.items():
        p = tmp_path / f"{name}.gz"
        p.write_bytes(gzip.compress(raw))
        with pytest.raises(DataCorruptError):
            fmnist.read_idx(p, 2049, 10000)
    p = tmp_path / "notgzip.gz"
    p.write_bytes(good)
    with pytest.raises(DataCorruptError):
        fmnist.read_idx(p, 2049, 10000)
    p = tmp_path / "truncgzip.gz"
    p.write_bytes((data_root / FM_LABELS).read_bytes()[:-100])
    with pytest.raises(DataCorruptError):
        fmnist.read_idx(p, 2049, 10000)
    p = tmp_path / "ok.gz"
    p.write_bytes(gzip.compress(good))
    assert fmnist.read_idx(p, 2049, 10000).shape == (10000,)


# --------------------------------------------------------------------------- rotation

def test_rotation_identities():
    rng = np.random.default_rng(0)
    x = rng.random((7, 2, 28, 28), dtype=np.float32)
    for deg in (0, 360, -360, 720):
        r = rotate_images(x, deg)
        assert r.dtype == np.float32 and np.array_equal(r, x) and r is not x
    for k in (1, 2, 3, 5, -1):
        assert np.array_equal(rotate_images(x, 90 * k), np.rot90(x, k, axes=(-2, -1)))
    u8 = (x * 255).astype(np.uint8)
    r = rotate_images(u8, 90)
    assert r.dtype == np.float32 and np.array_equal(r, np.rot90(u8, 1, axes=(-2, -1)).astype(np.float32))
    x64 = rng.random((5, 5))
    assert rotate_images(x64, 270).dtype == np.float64
    assert np.array_equal(rotate_images(x64, 270), np.rot90(x64, 3))
    rr, cc = np.mgrid[0:28, 0:28]
    blob = np.exp(-((rr - 12.0) ** 2 + (cc - 15.0) ** 2) / 30.0).astype(np.float32)
    back = rotate_images(rotate_images(blob, 30), -30)  # lossy, but close for smooth images
    assert np.abs(back - blob).max() < 0.05
    assert rotate_images(x, 37).shape == x.shape
    assert rotate_images(x[0, 0], 37).shape == (28, 28)


def test_rotation_sense_and_hand_computed_quarter_turn():
    img = np.zeros((5, 5), np.float32)
    img[0, 2] = 1.0  # top middle
    img[0, 4] = 2.0  # top right corner
    r = rotate_images(img, 90)  # counter-clockwise: top middle -> left middle
    expect = np.zeros((5, 5), np.float32)
    expect[2, 0] = 1.0
    expect[0, 0] = 2.0  # top right -> top left
    assert np.array_equal(r, expect)
    assert np.array_equal(rotate_images(img, -90)[2, 4], 1.0)  # clockwise: to right middle


def test_rotation_is_bilinear_about_the_centre_with_zeros_outside():
    h = w = 28
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float64)
    ramp = (0.5 + 0.01 * rr + 0.02 * cc).astype(np.float64)
    deg = 20.0
    out = rotate_images(ramp, deg)
    t = np.deg2rad(deg)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    src_r = (cc - cx) * np.sin(t) + (rr - cy) * np.cos(t) + cy
    src_c = (cc - cx) * np.cos(t) - (rr - cy) * np.sin(t) + cx
    inside = (src_r >= 0) & (src_r <= h - 1) & (src_c >= 0) & (src_c <= w - 1)
    # bilinear interpolation reproduces a linear function exactly wherever it is defined
    assert np.allclose(out[inside], (0.5 + 0.01 * src_r + 0.02 * src_c)[inside], atol=1e-12)
    far = (src_r < -1) | (src_r > h) | (src_c < -1) | (src_c > w)
    assert far.any() and np.all(out[far] == 0)
    ones = rotate_images(np.ones((28, 28), np.float32), 45)
    assert ones[0, 0] == 0 and ones[14, 14] == 1.0
    # centre pixel of an odd-sized image is fixed by any rotation
    odd = np.arange(49, dtype=np.float32).reshape(7, 7)
    assert rotate_images(odd, 33)[3, 3] == odd[3, 3]


def test_rotation_is_vectorised_per_image():
    rng = np.random.default_rng(1)
    x = rng.random((300, 1, 28, 28), dtype=np.float32)
    batch = rotate_images(x, 75)
    assert np.array_equal(batch[123, 0], rotate_images(x[123, 0], 75))
    assert np.array_equal(batch[299], rotate_images(x[299], 75))


# --------------------------------------------------------------------------- UCI HAR

@pytest.mark.requires_data("har")
def test_har_expected_values(har_ds, har_labels):
    y, subject = har_labels
    assert np.bincount(y).tolist() == [1226, 1073, 986, 1286, 1374, 1407]
    assert np.unique(subject).tolist() == [1, 3, 5, 6, 7, 8, 11, 14, 15, 16, 17, 19, 21, 22, 23, 25,
                                           26, 27, 28, 29, 30]
    ds = har_ds
    assert ds.name == "har" and ds.classes == 6 and ds.input_shape == (561,)
    assert ds.validation is None
    assert {k: len(v) for k, v in ds.splits().items()} == HAR_SIZES
    for split in ds.splits().values():
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert split.x.min() >= -1.0 and split.x.max() <= 1.0
        assert split.y.min() >= 0 and split.y.max() <= 5
    # first row of X_train (subject 1, the first window, is pretrain row 0)
    assert np.array_equal(ds.pretrain.x[0, :3], np.array([0.28858451, -0.020294171, -0.13290514], np.float32))
    # every split covers all six activities
    for split in ds.splits().values():
        assert (np.bincount(split.y, minlength=6) > 0).all()
    assert "9" in ds.notes and "absent" in ds.notes


@pytest.mark.requires_data("har")
def test_har_split_is_by_subject_group_and_time_blocked(har_ds, har_labels):
    y, subject = har_labels
    pre, pre_test = har.group1_split(y, subject)
    ft, te = har.group2_split(y, subject)
    assert (len(pre), len(pre_test), len(ft), len(te)) == tuple(HAR_SIZES.values())
    for part, idx in (("pretrain", pre), ("pretrain_test", pre_test), ("finetune", ft), ("test", te)):
        assert np.array_equal(getattr(har_ds, part).y, y[idx])
        assert np.all(np.diff(idx) > 0)  # row (time) order kept
    g2 = np.isin(subject, har.GROUP2_SUBJECTS)
    assert g2.sum() == 1458 and not (subject == 9).any()
    assert g2[ft].all() and g2[te].all()
    assert not g2[pre].any() and not g2[pre_test].any()
    assert sorted(set(subject[ft])) == sorted(set(subject[te])) == [14, 16, 19, 25]
    everything = np.concatenate([pre, pre_test, ft, te])
    assert len(np.unique(everything)) == len(everything)  # disjoint
    # the rows themselves are disjoint too (no duplicated feature vectors across splits)
    rows = lambda s: {r.tobytes() for r in s.x}  # noqa: E731
    assert not rows(har_ds.finetune) & rows(har_ds.test)
    assert not (rows(har_ds.pretrain) | rows(har_ds.pretrain_test)) & (rows(har_ds.finetune) | rows(har_ds.test))

    def no_overlapping_neighbours(a, b):
        """No window of ``a`` is next to one of ``b`` within a protocol segment (same
        subject, same label run); 50 % overlapping windows would leak across."""
        in_b = np.zeros(len(y), bool)
        in_b[b] = True
        for d in (-1, 1):
            j = a + d
            ok = (j >= 0) & (j < len(y))
            a2, j = a[ok], j[ok]
            same_segment = (subject[a2] == subject[j]) & (y[a2] == y[j])
            assert not (in_b[j] & same_segment).any()

    no_overlapping_neighbours(ft, te)
    no_overlapping_neighbours(pre, pre_test)
    # the fine-tune block of each segment comes first in time: per segment, ft < test
    for s in (14, 16, 19, 25):
        rows_s = np.flatnonzero(subject == s)
        cut = np.flatnonzero(np.diff(y[rows_s])) + 1
        for seg in np.split(rows_s, cut):
            f, t = np.intersect1d(seg, ft), np.intersect1d(seg, te)
            assert len(f) == -(-6 * len(seg) // 10)
            assert len(t) == max(len(seg) - len(f) - 1, 0)
            if len(t):
                assert f.max() + 1 < t.min()


def test_har_int_file_checks(tmp_path):
    p = tmp_path / "y.txt"
    p.write_text("1\n" * 7351 + "7\n")
    with pytest.raises(DataCorruptError):
        har._read_ints(p, 1, 6)
    p.write_text("1\n" * 7351)
    with pytest.raises(DataCorruptError):
        har._read_ints(p, 1, 6)
    p.write_text("1\n" * 7351 + "x\n")
    with pytest.raises(DataCorruptError):
        har._read_ints(p, 1, 6)


# --------------------------------------------------------------------------- Fan

@pytest.mark.parametrize("name,damage", [
    pytest.param(f"fan-{d}", d, marks=pytest.mark.requires_data(f"fan-{d}")) for d in ("damage1", "damage2")])
def test_fan_expected_values(data_root, name, damage):
    ds = load_dataset(name, data_root)
    assert ds.classes == 3 and ds.input_shape == (256,) and ds.validation is None
    exp = fan_build.EXPECTED[damage]
    for part, code in (("pretrain", 0), ("finetune", 1), ("test", 2), ("pretrain_test", 3)):
        split = getattr(ds, part)
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert np.bincount(split.y, minlength=3).tolist() == exp[code]
        assert split.x.min() >= 0.0 and split.x.max() <= np.float32(0.99999)
        assert (split.x[:, 0] == 0).all()
    assert len(ds.pretrain) == len(ds.finetune) == len(ds.test) == 470 and len(ds.pretrain_test) == 1410
    assert np.array_equal(ds.pretrain.x[0, :5],
                          np.array([0, 0.040549, 0.025874, 0.026238, 0.049747], np.float32))
    assert ds.pretrain.y[0] == 0 and ds.test.y[-1] == 2
    means = {"damage1": (0.0700, 0.1447, 0.1464), "damage2": (0.0887, 0.1619, 0.1442)}[damage]
    got = tuple(round(float(s.x.mean(dtype=np.float64)), 4) for s in (ds.pretrain, ds.finetune, ds.test))
    assert got == means
    assert "reconstruction" in ds.notes and "3b" in ds.notes


@pytest.mark.requires_data("cooling-fan/raw/", "fan-damage2")
def test_fan_builder_reproduces_the_npz_exactly(data_root):
    raw = data_root / "cooling-fan" / "raw"
    arrays = fan_build.build_arrays("damage2", {n: raw / f"{n}.zip" for n in fan_build.run_names("damage2")})
    with np.load(data_root / "cooling-fan/fan_damage2_spectra256.npz") as z:
        assert list(arrays) == list(z.files)
        for k in z.files:
            assert arrays[k].dtype == z[k].dtype and np.array_equal(arrays[k], z[k]), k


@pytest.mark.requires_data("cooling-fan/raw/", "fan-damage1")
def test_fan_npz_is_built_from_downloaded_raw_zips(data_root, tmp_path, monkeypatch):
    """No npz and no mirror: the 12 raw zips come from their canonical URL (here a local
    server standing in for GitHub) and the npz is built from them."""
    root = tmp_path / "data"
    with serve(data_root / "cooling-fan" / "raw") as url:
        monkeypatch.setattr(catalogue, "FAN_RAW_BASE_URL", url)
        ds = load_dataset("fan-damage1", root)
    for name in fan_build.run_names("damage1"):
        assert (root / "cooling-fan/raw" / f"{name}.zip").is_file()
    built = root / "cooling-fan/fan_damage1_spectra256.npz"
    sidecar = built.with_name(built.name + ".sha256")
    assert built.is_file() and sidecar.is_file() and not _leftovers(root)
    digest = hashlib.sha256(built.read_bytes()).hexdigest()
    assert sidecar.read_text().split()[0] == digest
    # (with numpy's fixed zip time stamps the bytes may even equal the published file's;
    # the sidecar covers other numpy/zlib versions, see test_fan_npz_sidecar_hash)
    with np.load(built) as a, np.load(data_root / "cooling-fan/fan_damage1_spectra256.npz") as b:
        assert list(a.files) == list(b.files)
        for k in b.files:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    ref = load_dataset("fan-damage1", data_root)
    assert np.array_equal(ds.finetune.x, ref.finetune.x) and np.array_equal(ds.test.y, ref.test.y)
    clear_cache()
    assert len(load_dataset("fan-damage1", root, download=False).test) == 470  # via the sidecar
    # a modified npz matches neither hash
    data = bytearray(built.read_bytes())
    data[len(data) // 2] ^= 0xFF
    built.write_bytes(bytes(data))
    clear_cache()
    with pytest.raises(DataCorruptError, match="sha256"):
        load_dataset("fan-damage1", root, download=False)


@pytest.mark.requires_data("fan-damage2")
def test_fan_npz_sidecar_hash(data_root, tmp_path):
    """A rebuilt npz whose bytes differ from the published one is accepted only when its
    hash is recorded in the sidecar the builder writes."""
    root = tmp_path / "data"
    rel = "cooling-fan/fan_damage2_spectra256.npz"
    (root / "cooling-fan").mkdir(parents=True)
    with np.load(data_root / rel) as z:
        np.savez(root / rel, **{k: z[k] for k in z.files})  # same arrays, other bytes
    with pytest.raises(DataCorruptError, match="sha256"):
        load_dataset("fan-damage2", root, download=False)
    digest = hashlib.sha256((root / rel).read_bytes()).hexdigest()
    (root / (rel + ".sha256")).write_text(f"{digest}  fan_damage2_spectra256.npz\n")
    ds = load_dataset("fan-damage2", root, download=False)
    assert np.bincount(ds.finetune.y).tolist() == [177, 178, 115]


@pytest.mark.requires_data("fan-damage1")
def test_fan_check_arrays_rejects_wrong_values(data_root):
    with np.load(data_root / "cooling-fan/fan_damage1_spectra256.npz") as z:
        arrays = {k: z[k] for k in z.files}
    fan_build.check_arrays(arrays, "damage1", "ok")
    with pytest.raises(DataCorruptError, match="class counts"):
        fan_build.check_arrays(arrays, "damage2", "swapped")
    bad = dict(arrays, X_pretrain=arrays["X_pretrain"] * 1.5)
    with pytest.raises(DataCorruptError):
        fan_build.check_arrays(bad, "damage1", "scaled")
    with pytest.raises(DataCorruptError, match="missing"):
        fan_build.check_arrays({k: v for k, v in arrays.items() if k != "pos"}, "damage1", "short")


# --------------------------------------------------------------------------- look-up order

def test_resolve_data_dir_order(monkeypatch, tmp_path):
    explicit, env, xdg = tmp_path / "explicit", tmp_path / "env", tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.setenv(lookup.DATA_ENV, str(env))
    assert resolve_data_dir(explicit) == explicit
    assert resolve_data_dir(str(explicit)) == explicit
    assert resolve_data_dir() == env
    monkeypatch.delenv(lookup.DATA_ENV)
    if os.name != "nt":
        assert resolve_data_dir() == xdg / "skip2lora" / "data"
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert resolve_data_dir() == tmp_path / "home" / ".cache" / "skip2lora" / "data"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert resolve_data_dir() == tmp_path / "home" / ".cache" / "skip2lora" / "data"


@pytest.mark.requires_data(FM_LABELS)
def test_canonical_fmnist_url(data_root, tmp_path, monkeypatch):
    assert catalogue.FILES[FM_LABELS].source_description() == \
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz"
    with serve(data_root / "fashion-mnist") as url:
        monkeypatch.setattr(catalogue, "FMNIST_BASE_URL", url)
        path = lookup.locate(FM_LABELS, tmp_path / "root")
    assert path.read_bytes() == (data_root / FM_LABELS).read_bytes()


@pytest.mark.requires_data(FM_LABELS)
def test_locate_prefers_root_then_cache(data_root, tmp_path):
    root = tmp_path / "root"
    cache = lookup.user_cache_dir()
    (cache / "fashion-mnist").mkdir(parents=True)
    shutil.copy(data_root / FM_LABELS, cache / FM_LABELS)
    assert lookup.locate(FM_LABELS, root, download=False) == cache / FM_LABELS
    (root / "fashion-mnist").mkdir(parents=True)
    shutil.copy(data_root / FM_LABELS, root / FM_LABELS)
    assert lookup.locate(FM_LABELS, root, download=False) == root / FM_LABELS


# --------------------------------------------------------------------------- corruption

@pytest.mark.requires_data("fmnist-rot75")
@pytest.mark.parametrize("damage", ["truncated", "one byte"])
def test_corrupt_file_raises(data_root, tmp_path, damage):
    root = tmp_path / "data"
    (root / "fashion-mnist").mkdir(parents=True)
    for rel in fmnist.FMNIST_FILES["train"] + fmnist.FMNIST_FILES["t10k"]:
        os.symlink(data_root / rel, root / rel)
    target = root / fmnist.FMNIST_FILES["train"][1]
    data = bytearray((data_root / fmnist.FMNIST_FILES["train"][1]).read_bytes())
    target.unlink()
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[1000] ^= 0x01
    target.write_bytes(bytes(data))
    spec = catalogue.FILES[fmnist.FMNIST_FILES["train"][1]]
    with pytest.raises(DataCorruptError) as e:
        lookup.locate(spec.relpath, root, download=False)
    msg = str(e.value)
    assert str(target) in msg and spec.sha256 in msg and hashlib.sha256(data).hexdigest() in msg
    assert "elete" in msg  # tells the user what to do
    with pytest.raises(DataCorruptError):
        load_dataset("fmnist-rot75", root)  # never loads silently, never re-downloads over it


# --------------------------------------------------------------------------- downloads

@pytest.mark.requires_data(FM_LABELS, *HAR_FILES, "fan-damage2")
def test_download_through_mirror(data_root, tmp_path, monkeypatch, mirror, har_ds, capsys):
    root = tmp_path / "empty"
    monkeypatch.setenv(catalogue.MIRROR_ENV, mirror)
    path = lookup.locate(FM_LABELS, root)
    assert path == root / FM_LABELS and path.read_bytes() == (data_root / FM_LABELS).read_bytes()
    assert "downloading" in capsys.readouterr().err

    ds = load_dataset("har", root)
    for rel in HAR_FILES:
        assert (root / rel).read_bytes() == (data_root / rel).read_bytes()
    assert not (root / "uci-har/X_train.txt").exists()
    assert np.array_equal(ds.finetune.x, har_ds.finetune.x) and np.array_equal(ds.test.y, har_ds.test.y)

    ds = load_dataset("fan-damage2", root)
    assert (root / "cooling-fan/fan_damage2_spectra256.npz").is_file()
    assert np.bincount(ds.test.y).tolist() == [178, 180, 112]
    assert not _leftovers(root)


@pytest.mark.requires_data(FM_LABELS)
def test_download_falls_back_to_cache_when_root_is_not_writable(tmp_path, monkeypatch, mirror):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    root = blocker / "data"  # cannot be created
    monkeypatch.setenv(catalogue.MIRROR_ENV, mirror)
    path = lookup.locate(FM_LABELS, root)
    assert path == lookup.user_cache_dir() / FM_LABELS
    monkeypatch.setenv(catalogue.MIRROR_ENV, "http://127.0.0.1:9/unused")
    assert lookup.locate(FM_LABELS, root, download=False) == path  # found there later


@pytest.mark.requires_data(FM_LABELS)
def test_corrupt_mirror_leaves_nothing(data_root, tmp_path, monkeypatch):
    served = tmp_path / "served"
    (served / "fashion-mnist").mkdir(parents=True)
    data = bytearray((data_root / FM_LABELS).read_bytes())
    data[100] ^= 0xFF
    (served / FM_LABELS).write_bytes(bytes(data))
    root = tmp_path / "root"
    with serve(served) as url:
        monkeypatch.setenv(catalogue.MIRROR_ENV, url)
        with pytest.raises(DataCorruptError) as e:
            lookup.locate(FM_LABELS, root)
    assert FM_LABELS in str(e.value)
    assert not (root / FM_LABELS).exists()
    assert [p for p in root.rglob("*") if p.is_file()] == []


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_mirror_raises_not_found_quickly(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/mirror"
    monkeypatch.setenv(catalogue.MIRROR_ENV, url)
    root = tmp_path / "root"
    t0 = time.monotonic()
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("fmnist-rot75", root)
    assert time.monotonic() - t0 < 10
    msg = str(e.value)
    assert "fashion-mnist/train-images-idx3-ubyte.gz" in msg and url in msg
    assert lookup.DATA_ENV in msg and str(root) in msg
    assert not _leftovers(root) and not [p for p in root.rglob("*") if p.is_file()]


def test_missing_mirror_file_is_not_found(tmp_path, monkeypatch):
    (tmp_path / "nothing-here").mkdir()
    with serve(tmp_path / "nothing-here") as url:
        monkeypatch.setenv(catalogue.MIRROR_ENV, url)
        with pytest.raises(DataNotFoundError, match="404"):
            lookup.locate(FM_LABELS, tmp_path / "root")


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_download_false_on_empty_dir(tmp_path, monkeypatch, name):
    monkeypatch.setenv(catalogue.MIRROR_ENV, f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(DataNotFoundError, match="download=False"):
        load_dataset(name, tmp_path / "empty", download=False)
    assert not (tmp_path / "empty").exists()


def _har_archive(data_root: Path, directory: Path, nested: bool = True) -> Path:
    """A zip laid out like the UCI download: a zip holding 'UCI HAR Dataset.zip' (with
    the three files the loader reads, a resource fork and a member it does not read)."""
    x_gz = data_root / "uci-har/X_train.txt.gz"
    x_text = gzip.decompress(x_gz.read_bytes()) if x_gz.exists() else (data_root / "uci-har/X_train.txt").read_bytes()
    inner_path = directory / "UCI HAR Dataset.zip"
    with zipfile.ZipFile(inner_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("UCI HAR Dataset/train/X_train.txt", x_text)
        z.write(data_root / "uci-har/y_train.txt", "UCI HAR Dataset/train/y_train.txt")
        z.write(data_root / "uci-har/subject_train.txt", "UCI HAR Dataset/train/subject_train.txt")
        z.writestr("__MACOSX/UCI HAR Dataset/train/._X_train.txt", b"resource fork junk")
        z.writestr("UCI HAR Dataset/features.txt", "1 tBodyAcc-mean()-X\n2 tBodyAcc-mean()-Y\n")
    outer_path = directory / "har.zip"
    with zipfile.ZipFile(outer_path, "w", zipfile.ZIP_STORED) as z:
        if nested:
            z.write(inner_path, "UCI HAR Dataset.zip")
        z.writestr("UCI HAR Dataset.names", "description")
    inner_path.unlink()
    return outer_path


@pytest.mark.requires_data("har")
def test_har_extracted_from_uci_zip_in_zip(data_root, tmp_path, monkeypatch, har_ds):
    served = tmp_path / "served"
    served.mkdir()
    _har_archive(data_root, served)
    root = tmp_path / "root"
    with serve(served) as url:
        monkeypatch.setattr(catalogue, "HAR_ZIP_URL", f"{url}/har.zip")
        ds = load_dataset("har", root)
    assert hashlib.sha256((root / "uci-har/X_train.txt").read_bytes()).hexdigest() == \
        catalogue.FILES["uci-har/X_train.txt"].sha256
    for rel in ("uci-har/y_train.txt", "uci-har/subject_train.txt"):
        assert (root / rel).read_bytes() == (data_root / rel).read_bytes()
    assert not (root / "uci-har/X_train.txt.gz").exists() and not _leftovers(root)
    assert sorted(p.name for p in (root / "uci-har").iterdir()) == ["X_train.txt", "subject_train.txt",
                                                                    "y_train.txt"]
    for part in HAR_SIZES:
        assert np.array_equal(getattr(ds, part).x, getattr(har_ds, part).x)
        assert np.array_equal(getattr(ds, part).y, getattr(har_ds, part).y)


def test_har_archive_without_dataset_is_corrupt(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "har.zip", "w") as z:
        z.writestr("UCI HAR Dataset.names", "description only")
    (served / "notzip.zip").write_bytes(b"this is not a zip file" * 100)
    root = tmp_path / "root"
    with serve(served) as url:
        for name in ("har.zip", "notzip.zip"):
            monkeypatch.setattr(catalogue, "HAR_ZIP_URL", f"{url}/{name}")
            with pytest.raises(DataCorruptError):
                har.read_har_train(root)
            assert [p for p in root.rglob("*") if p.is_file()] == []
            assert not root.exists()  # nor a folder: only a download that succeeds creates one


# --------------------------------------------------------------------------- no side effects

def test_a_failed_download_creates_no_folder(tmp_path, monkeypatch):
    """$SKIP2LORA_DATA naming a folder that does not exist: the look-up and a failed download
    create nothing (neither there nor in the user cache) and the error names the folder."""
    root = tmp_path / "nonexistent" / "data"
    monkeypatch.setenv(lookup.DATA_ENV, str(root))
    monkeypatch.setenv(catalogue.MIRROR_ENV, f"http://127.0.0.1:{_closed_port()}")
    for name in DATASET_NAMES:
        for download in (False, True):
            with pytest.raises(DataNotFoundError) as e:
                load_dataset(name, download=download)
            assert f"the data folder {root} (set by $SKIP2LORA_DATA) does not exist" in str(e.value)
    assert not (tmp_path / "nonexistent").exists() and not lookup.user_cache_dir().exists()
    assert not [p for p in tmp_path.rglob("*") if p.name != "xdg-cache"]


@pytest.mark.requires_data(FM_LABELS)
def test_a_download_creates_its_folder_and_says_where(data_root, tmp_path, monkeypatch, capsys):
    root = tmp_path / "new" / "data"
    with serve(data_root) as url:
        monkeypatch.setenv(catalogue.MIRROR_ENV, url)
        path = lookup.locate(FM_LABELS, root)
    assert path == root / FM_LABELS and path.read_bytes() == (data_root / FM_LABELS).read_bytes()
    err = capsys.readouterr().err
    assert f"downloading {FM_LABELS} (0.0 MB) from {url}/{FM_LABELS} to {path}" in err
    assert f"{FM_LABELS}: done {path.stat().st_size} bytes" in err  # stderr is not a terminal here


def test_missing_files_and_the_fetch_command(data_root, tmp_path, capsys):
    from skip2lora.data import missing_files
    from skip2lora.data.__main__ import main

    empty = tmp_path / "empty"
    assert missing_files("har", empty) == ["uci-har/X_train.txt.gz or uci-har/X_train.txt",
                                           "uci-har/y_train.txt", "uci-har/subject_train.txt"]
    assert missing_files("fmnist-rot30", empty) == [r for s in ("train", "t10k") for r in fmnist.FMNIST_FILES[s]]
    assert missing_files("fan-damage2", empty) == ["cooling-fan/fan_damage2_spectra256.npz"]
    assert main(["--check", "--data-dir", str(empty), "har"]) == 1
    assert "UCI HAR (har): missing uci-har/X_train.txt.gz or uci-har/X_train.txt" in capsys.readouterr().out
    assert not empty.exists()
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        missing_files("mnist")
    if not missing_files("fan-damage1", data_root):
        assert main(["--data-dir", str(data_root), "fan-damage1"]) == 0
        assert "(fan-damage1): ok (pretrain 470, pretrain_test 1410, finetune 470, test 470)" in capsys.readouterr().out


def test_progress_bar_for_downloads():
    import io

    from skip2lora.progress import Progress

    out = io.StringIO()
    bar = Progress(3_000_000, "file.gz", enabled=True, stream=out, unit=" MB", scale=1e6)
    bar.update(1_500_000)
    bar.close("done")
    assert "file.gz [##############              ]  50.0% 1.5/3.0 MB" in out.getvalue()
    assert out.getvalue().endswith("s done\x1b[K\n")
    out = io.StringIO()
    bar = Progress(None, "archive", enabled=True, stream=out, unit=" MB", scale=1e6)  # no Content-Length
    bar.update(2_500_000)
    bar.close("failed")
    assert "archive 2.5 MB" in out.getvalue() and "%" not in out.getvalue() and "failed" in out.getvalue()
    quiet = io.StringIO()
    with Progress(10, "epochs", stream=quiet) as bar:  # StringIO is not a terminal: silent
        bar.update(10)
    assert quiet.getvalue() == ""


def test_data_modules_import_downward():
    """No import cycles in sw/data and no import inside a function to dodge one."""
    import ast

    folder = Path(fmnist.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        local = [n for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not local, f"{path.name}: import inside a function (line {local[0].lineno})"
        deps = set()
        for n in tree.body:
            if isinstance(n, ast.ImportFrom) and n.level == 1:
                deps |= {n.module} if n.module else {a.name for a in n.names}
        graph[path.stem] = deps & {p.stem for p in folder.glob("*.py")}
    order = []
    while graph:
        leaves = sorted(m for m, d in graph.items() if d <= set(order))
        assert leaves, f"import cycle among {sorted(graph)}"
        order += leaves
        for m in leaves:
            del graph[m]
    assert order.index("errors") < order.index("lookup") < order.index("fan_build") < order.index("fan") \
        < order.index("registry") < order.index("__init__")
