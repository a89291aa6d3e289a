"""The 4-bit cache quantizer: part of the numeric contract (docs/numerics.md, "Cache codes").

Each tap k has one power-of-two scale 2**e_k and a signedness: post-ReLU activations and image
pixels are never negative and use unsigned codes 0..15; a tap with negative values (e.g. the
HAR features in [-1, 1]) uses two's-complement codes -8..7. A code c stands for c * 2**e_k.
Power-of-two scales make the accelerator's rescaling a shift, never a multiply. e_k is chosen
per tap to minimize the mean squared quantization error on the samples being cached (clipping
the rare largest values is often cheaper than a coarser step). Rounding: half up, then clip.
"""

from __future__ import annotations

import numpy as np

from .formats import CODE_BITS, EXP_MAX, EXP_MIN

__all__ = ["CODE_BITS", "EXP_MIN", "EXP_MAX", "code_range", "tap_is_signed", "quantize",
           "dequantize", "choose_exponent", "TapQuantizer"]


def code_range(signed: bool) -> tuple[int, int]:
    return (-(1 << (CODE_BITS - 1)), (1 << (CODE_BITS - 1)) - 1) if signed else (0, (1 << CODE_BITS) - 1)


def tap_is_signed(x: np.ndarray) -> bool:
    return bool(np.min(x) < 0)


def quantize(x: np.ndarray, exponent: int, signed: bool) -> np.ndarray:
    """Codes (int8) of x for scale 2**exponent: floor(x / scale + 1/2), clipped to the code range."""
    if not EXP_MIN <= exponent <= EXP_MAX:
        raise ValueError(f"tap exponent must be in [{EXP_MIN}, {EXP_MAX}], not {exponent}")
    lo, hi = code_range(signed)
    q = np.floor(np.asarray(x, np.float64) * 2.0 ** -exponent + 0.5)
    return np.clip(q, lo, hi).astype(np.int8)


def dequantize(codes: np.ndarray, exponent: int) -> np.ndarray:
    return codes.astype(np.float32) * np.float32(2.0 ** exponent)


def choose_exponent(x: np.ndarray, signed: bool, *, max_values: int = 1 << 16) -> int:
    """The power-of-two scale with the least mean squared error on (a deterministic sample of) x.

    Candidates run from the smallest scale that clips nothing down to four octaves finer (each
    finer step halves the rounding error and clips more); the least-error one wins, ties to the
    coarser scale.
    """
    flat = np.asarray(x, np.float32).ravel()
    if flat.size == 0:
        raise ValueError("cannot choose a quantization scale from zero values")
    if not np.all(np.isfinite(flat)):
        raise ValueError("tap values contain NaN or Inf")
    if flat.size > max_values:
        flat = flat[:: flat.size // max_values + 1]
    lo, hi = code_range(signed)
    peak = max(float(flat.max()) / hi, float(flat.min()) / lo if lo else 0.0, 2.0 ** (EXP_MIN - 1))
    top = int(np.clip(np.ceil(np.log2(peak)), EXP_MIN, EXP_MAX))
    best, best_err = top, np.inf
    for e in range(top, max(top - 5, EXP_MIN - 1), -1):
        err = float(np.mean((dequantize(quantize(flat, e, signed), e) - flat) ** 2))
        if err < best_err:
            best, best_err = e, err
    return best


class TapQuantizer:
    """Per-tap exponents and signedness, fixed when a cache is first filled."""

    def __init__(self, exponents, signed):
        self.exponents = [int(e) for e in exponents]
        self.signed = [bool(s) for s in signed]
        if len(self.exponents) != len(self.signed):
            raise ValueError("one exponent and one signedness per tap")
        for e in self.exponents:
            if not EXP_MIN <= e <= EXP_MAX:
                raise ValueError(f"tap exponent must be in [{EXP_MIN}, {EXP_MAX}], not {e}")

    @classmethod
    def fit(cls, taps: list[np.ndarray]) -> "TapQuantizer":
        signed = [tap_is_signed(t) for t in taps]
        return cls([choose_exponent(t, s) for t, s in zip(taps, signed)], signed)

    def codes(self, taps: list[np.ndarray]) -> list[np.ndarray]:
        if len(taps) != len(self.exponents):
            raise ValueError(f"expected {len(self.exponents)} taps, got {len(taps)}")
        return [quantize(t, e, s) for t, e, s in zip(taps, self.exponents, self.signed)]

    def values(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        return [dequantize(c, e) for c, e in zip(codes, self.exponents)]

    def to_dict(self) -> dict:
        return {"exponents": self.exponents, "signed": self.signed}
