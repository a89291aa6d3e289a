"""Bring your own data: arrays, .npz files and image folders become a `Dataset` with the same checks and
one-line errors that name the problem (no data files of the project needed)."""

from __future__ import annotations

import numpy as np
import pytest

from skip2lora.data import (DataCorruptError, DataError, DataFormatError, DataNotFoundError, Dataset,
                            from_arrays, load_image_folder, load_npz, open_dataset)
from skip2lora.data.arrays import holdout_rows


def arrays(n=50, m=10, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.normal(size=(n, features)), y_train=np.arange(n) % classes,
                x_test=rng.normal(size=(m, features)), y_test=np.arange(m) % classes)


def one_line_error(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text and text, text
    return text


def test_arrays_become_a_dataset_with_every_10th_training_row_for_validation():
    a = arrays()
    ds = from_arrays(**a)
    assert isinstance(ds, Dataset) and not ds.builtin and ds.origin == "arrays"
    assert ds.classes == 3 and ds.input_shape == (8,)
    assert len(ds.finetune) == 45 and len(ds.validation) == 5 and len(ds.test) == 10
    np.testing.assert_array_equal(ds.validation.y, np.array([9, 19, 29, 39, 49]) % 3)
    np.testing.assert_array_equal(ds.validation.x, a["x_train"][[9, 19, 29, 39, 49]].astype(np.float32))
    assert len(ds.pretrain) == 0 and len(ds.pretrain_test) == 0  # no source domain
    assert ds.finetune.x.dtype == np.float32 and ds.finetune.y.dtype == np.int64
    assert not ds.finetune.x.flags.writeable and not ds.test.y.flags.writeable
    assert holdout_rows(19).sum() == 0 and from_arrays(**arrays(n=19)).validation is None  # too few rows


def test_given_validation_arrays_are_used_and_the_training_rows_kept():
    a = arrays()
    ds = from_arrays(**a, x_val=a["x_test"][:4], y_val=a["y_test"][:4])
    assert len(ds.finetune) == 50 and len(ds.validation) == 4


def test_one_channel_images_get_a_channel_axis_and_whole_float_labels_are_accepted():
    ds = from_arrays(np.zeros((3, 5, 4)), np.array([0.0, 1.0, 2.0]), np.zeros((2, 5, 4)), np.array([1, 0]))
    assert ds.input_shape == (1, 5, 4) and ds.finetune.y.tolist() == [0, 1, 2]


def test_classes_and_class_names():
    ds = from_arrays(**arrays(), classes=5, class_names=list("abcde"))
    assert ds.classes == 5 and ds.class_names == ("a", "b", "c", "d", "e")


def _with(**changes):
    a = arrays()
    a.update(changes)
    return a


NAN = arrays()["x_train"].copy()
NAN[7, 2] = np.nan


@pytest.mark.parametrize("kwargs, message", [
    (_with(x_train=NAN), "x_train row 7 contains NaN or Inf"),
    (_with(x_test=np.full((2, 8), 1e39)), "x_test row 0 contains NaN or Inf"),  # overflows float32
    (_with(y_train=-(np.arange(50) % 3)), "y_train[1] is -1: labels must be 0..classes-1"),
    (_with(y_train=np.full(50, 0.5)), "y_train[0] is 0.5: labels must be whole numbers"),
    (_with(y_train=np.array(["a"] * 50)), "y_train must hold integer class labels"),
    (_with(y_train=np.zeros(49, int)), "y_train must hold one label per sample, shape (50,), not (49,)"),
    (_with(x_test=np.zeros((10, 7))), "x_test samples have shape (7,), x_train's (8,)"),
    (_with(x_train=np.zeros(50)), "x_train must have one row per sample"),
    (_with(x_test=np.zeros((0, 8)), y_test=np.zeros(0, int)), "x_test has no samples"),
    (_with(x_val=np.zeros((2, 8))), "x_val is given without y_val"),
    (_with(y_train=np.zeros(50, int), y_test=np.zeros(10, int)), "a classifier needs at least 2 classes"),
])
def test_bad_arrays_are_one_line_errors_naming_the_problem(kwargs, message):
    with pytest.raises(DataFormatError) as excinfo:
        from_arrays(**kwargs)
    assert message in one_line_error(excinfo)


def test_labels_beyond_the_given_classes_are_refused():
    with pytest.raises(DataFormatError, match=r"y_train\[2\] is 2: labels must be 0..1 \(2 classes\)"):
        from_arrays(**arrays(), classes=2)


def test_an_npz_file_is_a_dataset_named_after_it(tmp_path):
    a = arrays()
    np.savez(tmp_path / "mine.npz", **a, class_names=np.array(["x", "y", "z"]), notes=np.zeros(1))
    ds = load_npz(tmp_path / "mine.npz")
    assert ds.name == "mine.npz" and ds.origin == str(tmp_path / "mine.npz") and ds.class_names == ("x", "y", "z")
    assert len(ds.finetune) == 45 and open_dataset(tmp_path / "mine.npz").name == "mine.npz"
    np.testing.assert_array_equal(ds.test.x, a["x_test"].astype(np.float32))


def test_npz_problems_are_one_line_errors(tmp_path):
    a = arrays()
    np.savez(tmp_path / "missing.npz", x_train=a["x_train"], y_train=a["y_train"], x_test=a["x_test"])
    with pytest.raises(DataFormatError) as excinfo:
        load_npz(tmp_path / "missing.npz")
    assert "lacks y_test (a data set needs x_train, y_train, x_test, y_test" in one_line_error(excinfo)
    assert "found: x_test, x_train, y_train" in str(excinfo.value)

    np.savez(tmp_path / "nan.npz", **_with(x_train=NAN))
    with pytest.raises(DataFormatError, match=r"nan.npz: x_train row 7 contains NaN or Inf"):
        load_npz(tmp_path / "nan.npz")

    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(DataFormatError, match="holds one array, not the arrays of a data set"):
        load_npz(tmp_path / "one.npz")

    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataCorruptError) as excinfo:
        load_npz(tmp_path / "junk.npz")
    assert "cannot read" in one_line_error(excinfo)

    np.savez(tmp_path / "objects.npz", **_with(x_train=np.array([object()] * 50)))
    with pytest.raises(DataFormatError, match="x_train is an object array"):
        load_npz(tmp_path / "objects.npz")

    with pytest.raises(DataNotFoundError, match="no data file"):
        load_npz(tmp_path / "absent.npz")
    with pytest.raises(TypeError, match="path must be a file name"):
        load_npz(3)


def test_open_dataset_tells_names_paths_and_formats_apart(tmp_path):
    ds = from_arrays(**arrays())
    assert open_dataset(ds) is ds
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(DataFormatError, match="unknown data format"):
        open_dataset(tmp_path / "data.csv")
    with pytest.raises(DataNotFoundError, match="no data file .*absent.npz"):
        open_dataset(str(tmp_path / "absent.npz"))
    with pytest.raises(DataNotFoundError, match="no data file or folder .*absent"):
        open_dataset(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="unknown data set 'fmnist-rot3600'.*or an .npz file or image folder"):
        open_dataset("fmnist-rot3600")
    with pytest.raises(TypeError, match="a data set is a name, a path or a Dataset"):
        open_dataset(42)
    assert issubclass(DataFormatError, DataError) and issubclass(DataFormatError, ValueError)


# -- image folders ------------------------------------------------------------------------------

@pytest.fixture
def Image():
    try:
        from PIL import Image
    except ImportError:
        pytest.skip("Pillow is not installed (pip install 'skip2lora[images]')")
    return Image


def _write(Image, path, pixels, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8), mode).save(path)


def test_an_image_folder_with_one_folder_per_class(tmp_path, Image):
    for c, value in (("cat", 0), ("dog", 255)):
        for i in range(6):
            _write(Image, tmp_path / "pets" / c / f"{i:02d}.png", np.full((5, 4), value))
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path / "pets")
    assert ds.class_names == ("cat", "dog") and ds.classes == 2 and ds.input_shape == (1, 5, 4)
    # every 5th image of a class (sorted by name) is a test image: 04.png of each
    assert len(ds.test) == 2 and ds.test.y.tolist() == [0, 1] and len(ds.finetune) == 10
    assert ds.validation is None  # 10 training rows: fewer than 20
    assert ds.finetune.x.min() == 0.0 and ds.finetune.x.max() == 1.0  # scaled to [0, 1]
    assert open_dataset(tmp_path / "pets").class_names == ("cat", "dog")


def test_an_image_folder_with_train_and_test_folders_and_color(tmp_path, Image):
    root = tmp_path / "photos"
    rgb = np.zeros((3, 3, 3))
    rgb[..., 0] = 255
    for split, n in (("train", 3), ("test", 1), ("val", 1)):
        for c in ("a", "b"):
            for i in range(n):
                _write(Image, root / split / c / f"{i}.png", np.full((3, 3), 128))
    _write(Image, root / "train" / "b" / "red.png", rgb, "RGB")
    ds = load_image_folder(root)
    assert ds.input_shape == (3, 3, 3)  # one color image: every image is read as RGB
    assert len(ds.finetune) == 7 and len(ds.test) == 2 and len(ds.validation) == 2
    red = ds.finetune.x[ds.finetune.y == 1][-1]
    np.testing.assert_array_equal(red[:, 0, 0], [1.0, 0.0, 0.0])


def test_image_folder_problems_are_one_line_errors(tmp_path, Image):
    for i in range(5):
        _write(Image, tmp_path / "r" / "x" / f"{i}.png", np.zeros((4, 4)))
        _write(Image, tmp_path / "r" / "y" / f"{i}.png", np.zeros((5, 4)))
    with pytest.raises(DataFormatError, match=r"y/0.png is 5x4 pixels, .*x/0.png is 4x4: give every image one size"):
        load_image_folder(tmp_path / "r")
    resized = load_image_folder(tmp_path / "r", size=(2, 2))
    assert resized.input_shape == (1, 2, 2) and len(resized.test) == 2
    _write(Image, tmp_path / "a" / "x" / "0.png", np.zeros((4, 4)))
    with pytest.raises(DataFormatError, match="no class has 5 images"):
        load_image_folder(tmp_path / "a")
    (tmp_path / "b" / "train" / "x").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="has train/ but no test/ folder"):
        load_image_folder(tmp_path / "b")
    (tmp_path / "c" / "empty").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="class folder .*empty has no images"):
        load_image_folder(tmp_path / "c")
    with pytest.raises(DataNotFoundError, match="no image folder"):
        load_image_folder(tmp_path / "absent")


def test_without_pillow_an_image_folder_is_a_one_line_install_hint(tmp_path, monkeypatch):
    import sys

    (tmp_path / "x").mkdir()
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(ModuleNotFoundError, match=r"needs Pillow: pip install 'skip2lora\[images\]'") as excinfo:
        load_image_folder(tmp_path)
    assert excinfo.value.name == "PIL"
