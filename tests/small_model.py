"""A tiny base model and data whose geometry fits the small accelerator build (shared by the driver tests,
which also run in the pynq environment, so no pytest here)."""

import numpy as np

from skip2lora.fixed.config import AcceleratorConfig
from skip2lora.fixed.model import Geometry
from skip2lora.nn.layers import BatchNorm, Dense, ReLU
from skip2lora.nn.network import Network

CONFIG = AcceleratorConfig("small4", Geometry((12, 7, 5), 4, 3), 4, 32)


def small_base(seed=0):
    """A 12-7-5-3 MLP: its taps (12, 7, 5) match `CONFIG`."""
    layers = [Dense("fc1", 12, 7), BatchNorm("bn1", 7), ReLU("r1"), Dense("fc2", 7, 5), ReLU("r2"),
              Dense("fc3", 5, 3)]
    return Network("mlp", layers, (12,), 3, {"arch": "custom"}).init(seed)


def data(n, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 12)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)


def other_base(seed=0):
    """A 9-5-2 MLP: taps (9, 5), 2 classes -- another model than `small_base`, within the SMALL build's
    maxima (3 taps, 7 tap lines at 4 lanes, 3 classes, rank 2): the same bitstream runs it."""
    layers = [Dense("fc1", 9, 5), ReLU("r1"), Dense("fc2", 5, 2)]
    return Network("mlp", layers, (9,), 2, {"arch": "custom"}).init(seed)


def other_data(n, seed=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 9)).astype(np.float32)
    return x, (x[:, 0] - x[:, 3] > 0).astype(np.int64)
