"""The three real data sets of the experiments (rotated Fashion-MNIST, UCI HAR, the
cooling-fan spectra), each split into a source domain and a target domain.

Files are looked up in ``data_dir``, ``$SKIP2LORA_DATA`` or the user cache, verified by
sha256, and downloaded when missing; see :mod:`skip2lora.data.store`.
"""

from .datasets import DATASET_NAMES, Dataset, Split, load_dataset
from .rotate import rotate_images
from .store import DataCorruptError, DataError, DataNotFoundError, resolve_data_dir

__all__ = ["DATASET_NAMES", "Split", "Dataset", "load_dataset", "resolve_data_dir",
           "DataError", "DataNotFoundError", "DataCorruptError", "rotate_images"]
