"""The three real data sets of the experiments (rotated Fashion-MNIST, UCI HAR, the
cooling-fan spectra), each split into a source domain and a target domain.

Files are looked up in ``data_dir``, ``$SKIP2LORA_DATA`` or the user cache, verified by
sha256, and downloaded when missing (``python -m skip2lora.data`` fetches them ahead).

Layers, each importing only those above it: ``errors``, ``dataset`` (Split, Dataset),
``catalogue`` (the files, hashes, sources) -> ``integrity`` (sha256) -> ``fetch``
(download, atomic writes) -> ``lookup`` (where files are; ``locate``) -> ``har_archive``,
``fan_build`` (obtaining files that are not plain downloads) -> the loaders ``fmnist``,
``har``, ``fan`` -> ``registry`` (names -> loaders, ``load_dataset``; ``open_dataset`` for a name or a user's data).

A user's own data (no download, no hash): ``arrays`` (``from_arrays``, the checks every user
data set passes) -> ``npz_file`` (``load_npz``), ``image_folder`` (``load_image_folder``, needs
Pillow: the ``images`` extra).
"""

from .arrays import from_arrays
from .dataset import Dataset, Split
from .errors import DataCorruptError, DataError, DataFormatError, DataNotFoundError
from .image_folder import load_image_folder
from .lookup import resolve_data_dir
from .npz_file import load_npz
from .registry import (DATASET_NAMES, canonical_name, clear_cache, dataset_title, is_builtin_name,
                       load_dataset, missing_files, open_dataset)
from .rotate import rotate_images

__all__ = ["DATASET_NAMES", "Split", "Dataset", "load_dataset", "resolve_data_dir",
           "DataError", "DataNotFoundError", "DataCorruptError", "DataFormatError", "rotate_images",
           "canonical_name", "dataset_title", "missing_files", "clear_cache", "open_dataset",
           "is_builtin_name", "from_arrays", "load_npz", "load_image_folder"]
