"""The integer base model's number formats: the one place its constants live.

The integer (post-training-quantized) base model (`skip2lora.fixed.base_int`) is what the
programmable logic runs to fill the cache and serve predictions; docs/base-numerics.md explains
every choice here and why each width suffices. As in `formats`, an integer ``v`` with exponent
``f`` stands for ``v * 2**f``; every narrowing saturates, every right shift rounds half up.

* weights: int8, one power-of-two exponent per output channel (folded batch norm included);
* hidden activations: uint8 after a ReLU (int8 where a layer has none), one power-of-two exponent
  per tensor, calibrated with one octave of headroom above the calibration maximum;
* biases: ``BIAS_BITS`` signed, in the accumulator's unit; accumulators exact (``acc_bits``);
* requantization: a per-channel right shift (``SHIFT_BITS`` wide), round half up, saturate; the
  last layer writes the cache's base logits directly (``formats.Z_FRAC`` / ``Z_BITS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formats import CODE_BITS, EXP_MAX, EXP_MIN, Z_BITS, Z_FRAC

__all__ = [
    "W_BITS", "ACT_BITS", "BIAS_BITS", "SHIFT_BITS", "SHIFT_MAX", "ACC_BITS", "HEADROOM", "CALIB_SAMPLES",
    "CODE_BITS", "EXP_MIN", "EXP_MAX", "Z_BITS", "Z_FRAC", "InputFormat", "INPUT_FORMATS",
    "weight_range", "act_range", "bias_range", "signed_bits", "acc_bits",
]

W_BITS = 8          # weights: int8 -128..127
ACT_BITS = 8        # activations: uint8 0..255 after a ReLU, int8 -128..127 otherwise
BIAS_BITS = 24      # biases, in the accumulator's unit 2**(per-channel exponent)
SHIFT_BITS = 5      # per-channel requantization shift 0..31
SHIFT_MAX = (1 << SHIFT_BITS) - 1
ACC_BITS = 32       # the engine's accumulator; `acc_bits` proves what each layer needs
HEADROOM = 1        # octaves of activation range above the calibration maximum (domain shift)
CALIB_SAMPLES = 10000  # calibration: the first samples of the source-domain training split


@dataclass(frozen=True)
class InputFormat:
    """How the host turns a float sample into the integers the engine reads from the DMA.

    ``X = sat(floor(x / scale + 1/2))`` in the signed or unsigned ``ACT_BITS`` range; the first
    layer's weights absorb ``scale`` exactly (they are quantized from ``w * scale``). The cache
    sees the input tap as ``X * 2**frac`` (``frac`` = the power of two nearest ``scale``).
    """

    signed: bool
    scale: float
    frac: int
    why: str

    def __post_init__(self):
        if not self.scale > 0 or not np.isfinite(self.scale):
            raise ValueError(f"input scale must be a positive finite number, not {self.scale!r}")


# By base model (`skip2lora.nn.pretrained.base_key`): each data set's documented value range.
INPUT_FORMATS = {
    # Fashion-MNIST pixels are bytes v / 255; rotated images are floats in [0, 1]. X = round(255 x)
    # gives back the original byte of every upright pixel. The cache's tap 0 is X * 2**-8
    # (x * 255/256: the adapters see a 0.4 % smaller input, the same in training and inference).
    "lenet5-fmnist": InputFormat(False, 1 / 255, -8, "uint8 pixel bytes, x = X / 255"),
    # UCI HAR features are normalized to [-1, 1]: int8 in steps of 2**-7 (+1 saturates to 127/128).
    "mlp-har": InputFormat(True, 2.0 ** -7, -7, "int8, x = X * 2**-7, [-1, 127/128]"),
    # Fan spectra lie in [0, 1): uint8 in steps of 2**-8.
    "mlp-fan-damage1": InputFormat(False, 2.0 ** -8, -8, "uint8, x = X * 2**-8, [0, 255/256]"),
    "mlp-fan-damage2": InputFormat(False, 2.0 ** -8, -8, "uint8, x = X * 2**-8, [0, 255/256]"),
}


def weight_range() -> tuple[int, int]:
    return -(1 << (W_BITS - 1)), (1 << (W_BITS - 1)) - 1


def act_range(signed: bool) -> tuple[int, int]:
    """An activation's integer range: int8 for signed tensors, uint8 after a ReLU."""
    return (-(1 << (ACT_BITS - 1)), (1 << (ACT_BITS - 1)) - 1) if signed else (0, (1 << ACT_BITS) - 1)


def bias_range() -> tuple[int, int]:
    return -(1 << (BIAS_BITS - 1)), (1 << (BIAS_BITS - 1)) - 1


def signed_bits(bound: int) -> int:
    """Two's-complement width holding every integer of magnitude at most ``bound``."""
    return int(bound).bit_length() + 1


def acc_bits(fan_in: int) -> int:
    """Accumulator width that cannot overflow for any layer of ``fan_in`` inputs in these formats.

    ``|acc| <= |bias| + sum_j |w_j| |a_j| <= 2**(BIAS_BITS-1) + fan_in * 128 * 255`` (int8 weights,
    uint8 activations; int8 activations give at most 128). `base_int.IntLayer.acc_bound` gives a
    layer's own, tighter bound from its weights.
    """
    if isinstance(fan_in, bool) or not isinstance(fan_in, (int, np.integer)) or fan_in < 1:
        raise ValueError(f"fan_in must be a positive integer, not {fan_in!r}")
    a_max = (1 << ACT_BITS) - 1
    return signed_bits(int(fan_in) * (1 << (W_BITS - 1)) * a_max + (1 << (BIAS_BITS - 1)))
