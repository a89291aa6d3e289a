"""The integer base model: the frozen base network as the programmable logic computes it, bit for bit.

docs/base-numerics.md is the prose form of this file; every constant is in `base_formats`. A
pretrained float network (`skip2lora.nn.network.Network`: LeNet-5 or a batch-norm MLP) is
quantized after training by `calibrate` on source-domain training samples only:

* batch norm is folded into the weight layer before it; each output channel gets int8 weights
  with its own power-of-two exponent, and a bias in the accumulator's unit (``BIAS_BITS``);
* each hidden activation tensor is uint8 after a ReLU (int8 without) with one power-of-two
  exponent: the smallest that saturates nothing on the calibration samples, one octave coarser
  (``HEADROOM``), because the target domain's activations run past the source domain's range;
* a layer's output is ``sat(round_shift(bias + sum w a, shift_c))``: a per-channel right shift,
  rounded half up, saturated to the output range (ReLU = saturating at 0), then 2x2 max-pool
  (which commutes with the monotone requantization, so the engine may pool accumulators first);
* the last layer writes the base logits in the cache's Z format (Q8 int16) directly.

Every tap (the input of a weight layer) is an integer tensor with a power-of-two exponent
``tap_fracs[k]``, so its 4-bit cache code is a right shift of it (`codes`), with the per-tap
cache exponent chosen on the first samples by the rule `quantize.choose_exponent` uses (least
squared error, ties to the coarser scale), computed exactly from a histogram of the integer tap
values (`tap_histograms`) — a few counters per tap value in hardware.

Integer products are evaluated with float matrix products (BLAS), exact because no partial sum
exceeds the layer's proven accumulator bound (`IntLayer.acc_bound`): float32 where that bound is
below 2**24 (all of LeNet-5's layers), float64 (exact below 2**53) otherwise.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import base_formats as BF
from .formats import round_shift
from .quantize import code_range

__all__ = ["IntLayer", "IntBase", "cache_codes", "calibrate", "quantize_input", "from_pretrained", "shipped",
           "calibration_exponents", "fold_layers", "fit_exponent", "CHUNK"]

CHUNK = 512  # samples per forward chunk: bounds the intermediate buffers (~20 MB for LeNet-5)
_HIST_CANDIDATES = 5  # cache exponents tried per tap, as quantize.choose_exponent does


def fit_exponent(vmin: float, vmax: float, lo: int, hi: int) -> int | None:
    """The smallest e with ``floor(v * 2**-e + 1/2)`` inside [lo, hi] for every v in [vmin, vmax].

    None when every value is 0 (any exponent fits). Exact: scaling by a power of two is exact.
    """
    vmin, vmax = float(vmin), float(vmax)
    if not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise ValueError("values contain NaN or Inf")
    peak = max(abs(vmin), abs(vmax))
    if peak == 0.0:
        return None
    e = int(np.floor(np.log2(peak))) - int(hi).bit_length() - 2  # surely too fine
    while not (vmax * 2.0 ** -e < hi + 0.5 and vmin * 2.0 ** -e >= lo - 0.5):
        e += 1
    return e


def _quantize(x, exponent, lo, hi):
    """floor(x * 2**-exponent + 1/2), saturated to [lo, hi] (exponent broadcasts per row)."""
    return np.clip(np.floor(np.asarray(x, np.float64) * 2.0 ** -np.asarray(exponent, np.float64) + 0.5), lo, hi)


def _pool(y):
    return np.maximum(np.maximum(y[:, 0::2, 0::2], y[:, 0::2, 1::2]), np.maximum(y[:, 1::2, 0::2], y[:, 1::2, 1::2]))


@dataclass(frozen=True, eq=False)
class IntLayer:
    """One weight layer with its requantization, ReLU and pooling: what one engine pass computes."""

    name: str
    kind: str            # "conv" (stride 1, zero padding, NHWC) or "dense"
    in_shape: tuple      # (H, W, C) for conv, (fan_in,) for dense
    weight: np.ndarray   # int8 (out, fan_in); conv patches in (channel, ky, kx) order
    bias: np.ndarray     # int64 (out,), in the accumulator's unit 2**acc_frac[c]
    shift: np.ndarray    # int64 (out,): out = sat(round_shift(acc, shift[c]))
    acc_frac: np.ndarray  # int64 (out,): the accumulator of channel c counts 2**acc_frac[c]
    in_frac: int         # the input integers stand for a * 2**in_frac (for layer 0: the tap's view)
    in_signed: bool
    out_frac: int        # output integers stand for y * 2**out_frac (-Z_FRAC for the logits)
    out_lo: int
    out_hi: int
    relu: bool
    pool: bool
    kernel: int = 0
    padding: int = 0

    def __post_init__(self):
        if self.kind not in ("conv", "dense"):
            raise ValueError(f"{self.name}: layer kind must be 'conv' or 'dense', not {self.kind!r}")
        w = np.asarray(self.weight)
        lo, hi = BF.weight_range()
        if w.ndim != 2 or w.shape[1] != self.fan_in:
            raise ValueError(f"{self.name}: weights must have shape (out, {self.fan_in}), not {w.shape}")
        if not np.issubdtype(w.dtype, np.integer) or (w.size and (w.min() < lo or w.max() > hi)):
            raise ValueError(f"{self.name}: weights must be {BF.W_BITS}-bit integers")
        blo, bhi = BF.bias_range()
        for label, v in (("bias", self.bias), ("shift", self.shift), ("acc_frac", self.acc_frac)):
            v = np.asarray(v)
            if v.shape != (w.shape[0],) or not np.issubdtype(v.dtype, np.integer):
                raise ValueError(f"{self.name}: {label} must be {w.shape[0]} integers, not {v.dtype} {v.shape}")
        if np.any(np.asarray(self.bias) < blo) or np.any(np.asarray(self.bias) > bhi):
            raise ValueError(f"{self.name}: biases exceed {BF.BIAS_BITS} bits")
        if np.any(np.asarray(self.shift) < 0) or np.any(np.asarray(self.shift) > BF.SHIFT_MAX):
            raise ValueError(f"{self.name}: shifts must be in [0, {BF.SHIFT_MAX}]")
        if self.pool and (self.kind != "conv" or self.out_shape_unpooled[0] % 2 or self.out_shape_unpooled[1] % 2):
            raise ValueError(f"{self.name}: 2x2 max-pooling needs a conv output of even height and width")
        if BF.signed_bits(self.acc_bound) > BF.ACC_BITS:
            raise ValueError(f"{self.name}: accumulators need {BF.signed_bits(self.acc_bound)} bits, "
                             f"more than the engine's {BF.ACC_BITS}")

    # -- geometry and cost -------------------------------------------------------------------
    @property
    def fan_in(self) -> int:
        if self.kind == "conv":
            return int(self.in_shape[2]) * self.kernel * self.kernel
        return int(self.in_shape[0])

    @property
    def out_channels(self) -> int:
        return int(np.asarray(self.weight).shape[0])

    @property
    def out_shape_unpooled(self) -> tuple:
        if self.kind == "dense":
            return (self.out_channels,)
        h, w, _ = self.in_shape
        o = 2 * self.padding - self.kernel + 1
        return (h + o, w + o, self.out_channels)

    @property
    def out_shape(self) -> tuple:
        s = self.out_shape_unpooled
        return (s[0] // 2, s[1] // 2, s[2]) if self.pool else s

    @property
    def in_range(self) -> tuple[int, int]:
        return BF.act_range(self.in_signed)

    @property
    def macs(self) -> int:
        positions = int(np.prod(self.out_shape_unpooled[:-1])) if self.kind == "conv" else 1
        return positions * self.out_channels * self.fan_in

    @property
    def acc_bound(self) -> int:
        """max_c (|bias_c| + sum_j |w_cj| * max |a|): no accumulator of this layer exceeds it."""
        a_max = max(-self.in_range[0], self.in_range[1])
        w = np.abs(np.asarray(self.weight, np.int64)).sum(axis=1)
        return int((np.abs(np.asarray(self.bias, np.int64)) + w * a_max).max())

    # -- computation --------------------------------------------------------------------------
    @property
    def exact_dtype(self):
        """float32 when every partial sum stays below 2**24 (then exact in float32), else float64.

        A partial sum in any order is at most the sum of the magnitudes of its terms, which
        `acc_bound` bounds, so BLAS's summation order and fused multiply-adds cannot round.
        """
        return np.float32 if self.acc_bound < 1 << 24 else np.float64

    def accumulate(self, a: np.ndarray) -> np.ndarray:
        """Exact accumulators (int64) of a batch of input integers (NHWC for conv, (n, fan_in) for dense)."""
        return self._accumulate(a).astype(np.int64)

    def _accumulate(self, a: np.ndarray) -> np.ndarray:
        """The accumulators as floats holding exact integers."""
        dt = self.exact_dtype
        a = np.asarray(a, dt)
        w = np.asarray(self.weight, dt)
        b = np.asarray(self.bias, dt)
        if self.kind == "dense":
            return a.reshape(len(a), -1) @ w.T + b
        # The convolution as k banded matrix products over image rows (one per kernel row), as
        # `nn.layers.Conv2d` does: no im2col copy. Each band entry is a weight or 0, so the
        # products and sums are the same integers as the direct convolution's.
        k, p, c, o = self.kernel, self.padding, int(self.in_shape[2]), self.out_channels
        if p:
            a = np.pad(a, ((0, 0), (p, p), (p, p), (0, 0)))
        n, hp, wp, _ = a.shape
        oh, ow = hp - k + 1, wp - k + 1
        wk = w.reshape(o, c, k, k)
        band = np.zeros((k, wp, c, ow, o), dt)  # [ky, input column, channel, output column, out]
        cols = np.arange(ow)
        for kx in range(k):
            band[:, cols + kx, :, cols, :] = wk[:, :, :, kx].transpose(2, 1, 0)[None]
        band = band.reshape(k, wp * c, ow * o)
        rows = a.reshape(n, hp, wp * c)
        acc = rows[:, 0:oh].reshape(n * oh, -1) @ band[0]
        for ky in range(1, k):
            acc += rows[:, ky:ky + oh].reshape(n * oh, -1) @ band[ky]
        acc = acc.reshape(n, oh, ow, o)
        acc += b
        return acc

    def requantize(self, acc: np.ndarray) -> np.ndarray:
        """sat(round_shift(acc, shift_c)) (ReLU = saturating at 0), then the 2x2 max-pool."""
        y = np.clip(round_shift(acc, np.asarray(self.shift, np.int64)), self.out_lo, self.out_hi)
        return _pool(y) if self.pool else y

    def apply(self, a: np.ndarray) -> np.ndarray:
        """The layer's output integers (int64). Pools the accumulators first: requantization is
        monotone and its shift is one per channel, so max-pool commutes with it exactly (4x fewer
        requantizations; the engine may do either)."""
        acc = self._accumulate(a)
        if self.pool:
            acc = _pool(acc)
        y = np.clip(round_shift(acc.astype(np.int64), np.asarray(self.shift, np.int64)), self.out_lo, self.out_hi)
        return y

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "in_shape": list(self.in_shape), "in_frac": self.in_frac,
                "in_signed": self.in_signed, "out_frac": self.out_frac, "out_lo": self.out_lo,
                "out_hi": self.out_hi, "relu": self.relu, "pool": self.pool, "kernel": self.kernel,
                "padding": self.padding}


class IntBase:
    """The integer base network: integer inputs in, Z-format logits and integer taps out."""

    def __init__(self, layers: list[IntLayer], input_format: BF.InputFormat, input_shape: tuple,
                 classes: int, name: str = "", calibration: dict | None = None):
        self.layers = list(layers)
        self.input_format = input_format
        self.input_shape = tuple(int(d) for d in input_shape)
        self.classes = int(classes)
        self.name = name
        self.calibration = dict(calibration or {})
        if not self.layers:
            raise ValueError("an integer base needs at least one weight layer")
        last = self.layers[-1]
        if last.out_channels != self.classes or (last.out_lo, last.out_hi) != _z_range() or last.relu or last.pool:
            raise ValueError(f"the last layer must write {self.classes} logits in the Z format "
                             f"(Q{BF.Z_FRAC}, {BF.Z_BITS} bits) without ReLU or pooling")
        shape = self._internal_shape
        for layer in self.layers:
            if tuple(layer.in_shape) != (shape if layer.kind == "conv" else (int(np.prod(shape)),)):
                raise ValueError(f"{layer.name}: expects input {tuple(layer.in_shape)}, gets {shape}")
            shape = layer.out_shape

    # -- description ----------------------------------------------------------------------------
    @property
    def _internal_shape(self) -> tuple:
        s = self.input_shape
        return (s[1], s[2], s[0]) if len(s) == 3 else s  # NCHW samples -> NHWC inside

    @property
    def tap_dims(self) -> list[int]:
        return [int(np.prod(layer.in_shape)) for layer in self.layers]

    @property
    def tap_fracs(self) -> list[int]:
        """Tap k's integers stand for a * 2**tap_fracs[k]: its cache codes are right shifts of them."""
        return [layer.in_frac for layer in self.layers]

    @property
    def tap_signed(self) -> list[bool]:
        return [layer.in_signed for layer in self.layers]

    # -- the host's input conversion ----------------------------------------------------------
    def quantize_input(self, x) -> np.ndarray:
        """Float samples -> the integers the engine reads: sat(floor(x / scale + 1/2)), uint8 or int8."""
        return quantize_input(x, self.input_format, self.input_shape)

    def _check_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        _check_shape(x, self.input_shape)
        lo, hi = BF.act_range(self.input_format.signed)
        kind = "int8" if self.input_format.signed else "uint8"
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"the integer base reads {kind} samples, not {x.dtype}: convert floats with quantize_input")
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"sample values must be {kind} ({lo}..{hi}), found {x.min()}..{x.max()}")
        return x

    # -- computation --------------------------------------------------------------------------
    def forward(self, x, *, taps: bool = False):
        """Base logits (N, C) int16 in the Z format (Q8); with ``taps``, also each tap's integers (N, d_k) int16."""
        x = self._check_input(x)
        logits = np.zeros((len(x), self.classes), np.int16)
        tap_out = [np.zeros((len(x), d), np.int16) for d in self.tap_dims] if taps else None
        for s in range(0, len(x), CHUNK):
            a = x[s:s + CHUNK].astype(np.int64)
            if a.ndim == 4:
                a = a.transpose(0, 2, 3, 1)
            for k, layer in enumerate(self.layers):
                if taps:
                    tap_out[k][s:s + CHUNK] = a.reshape(len(a), -1)
                a = layer.apply(a)
            logits[s:s + CHUNK] = a
        return (logits, tap_out) if taps else logits

    def predict(self, x) -> np.ndarray:
        return self.forward(x).argmax(axis=1)

    # -- the cache ------------------------------------------------------------------------------
    def tap_histograms(self, taps) -> list[np.ndarray]:
        """Per tap, how often each integer value occurs (index = value - the range's low end)."""
        taps = self._check_taps(taps)
        out = []
        for t, signed in zip(taps, self.tap_signed):
            lo, hi = BF.act_range(signed)
            out.append(np.bincount((np.asarray(t, np.int64) - lo).ravel(), minlength=hi - lo + 1))
        return out

    def exponents_from_histograms(self, hists) -> tuple:
        """Per-tap cache exponents: `quantize.choose_exponent`'s rule on the integer tap values, exactly.

        Candidates run from the smallest exponent that clips nothing down to four octaves finer,
        never finer than the tap's own LSB (a finer scale only clips more: its rounding error is
        already 0); the least summed squared error wins, ties to the coarser. The errors are
        exact integers (in units of 4**tap_frac), so the choice never depends on rounding.
        """
        if len(hists) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} histograms, got {len(hists)}")
        out = []
        for k, (h, frac, signed) in enumerate(zip(hists, self.tap_fracs, self.tap_signed)):
            lo, hi = BF.act_range(signed)
            h = np.asarray(h, np.int64)
            if h.shape != (hi - lo + 1,):
                raise ValueError(f"tap {k}: histogram must have {hi - lo + 1} bins, not {h.shape}")
            if h.sum() == 0:
                raise ValueError(f"tap {k}: cannot choose a cache scale from zero values")
            if frac > BF.EXP_MAX:
                raise ValueError(f"tap {k}: activation LSB 2**{frac} is coarser than the cache's largest "
                                 f"scale 2**{BF.EXP_MAX}")
            v = np.arange(lo, hi + 1, dtype=np.int64)
            used = v[h > 0]
            qlo, qhi = code_range(signed)
            s_top = 0
            while used.max() > qhi << s_top or used.min() < qlo << s_top:
                s_top += 1
            e_top = min(max(frac + s_top, BF.EXP_MIN), BF.EXP_MAX)
            best, best_err = None, None
            for e in range(e_top, max(e_top - _HIST_CANDIDATES, frac - 1, BF.EXP_MIN - 1), -1):
                s = e - frac
                back = np.clip(round_shift(v, s), qlo, qhi) << s
                err = int((h * (v - back) ** 2).sum())
                if best_err is None or err < best_err:
                    best, best_err = e, err
            out.append(best)
        return tuple(out)

    def fit_exponents(self, taps) -> tuple:
        """The cache exponents for these samples' taps (the first samples of a cache)."""
        return self.exponents_from_histograms(self.tap_histograms(taps))

    def codes(self, taps, exponents) -> np.ndarray:
        """4-bit cache codes (N, D) int8: tap k's integers shifted right by e_k - tap_fracs[k], saturated."""
        taps = self._check_taps(taps)
        if len(exponents) != len(taps):
            raise ValueError(f"expected {len(taps)} tap exponents, got {len(exponents)}")
        out = []
        for k, (t, e, frac, signed) in enumerate(zip(taps, exponents, self.tap_fracs, self.tap_signed)):
            if isinstance(e, bool) or not isinstance(e, (int, np.integer)):
                raise TypeError(f"tap {k}: exponent must be an integer, not {e!r}")
            if not max(BF.EXP_MIN, frac) <= e <= BF.EXP_MAX:
                raise ValueError(f"tap {k}: exponent must be in [{max(BF.EXP_MIN, frac)}, {BF.EXP_MAX}] "
                                 f"(at least the tap's LSB exponent {frac}), not {e}")
            out.append(cache_codes(t, int(e) - frac, signed))
        return np.concatenate(out, axis=1)

    def encode(self, x, exponents=None):
        """Cache entries of integer samples: (codes (N, D) int8, logits (N, C) int16, exponents, signed).

        Without ``exponents`` they are fitted on these samples (a cache's first samples), as the
        host's `TapQuantizer` does; later samples pass the cache's exponents.
        """
        logits, taps = self.forward(x, taps=True)
        if exponents is None:
            if len(logits) == 0:
                raise ValueError("cannot fit cache scales from zero samples")
            exponents = self.fit_exponents(taps)
        return self.codes(taps, exponents), logits, tuple(int(e) for e in exponents), tuple(self.tap_signed)

    def _check_taps(self, taps):
        if len(taps) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} taps, got {len(taps)}")
        out = []
        for k, (t, d, signed) in enumerate(zip(taps, self.tap_dims, self.tap_signed)):
            t = np.asarray(t)
            lo, hi = BF.act_range(signed)
            if t.ndim != 2 or t.shape[1] != d or not np.issubdtype(t.dtype, np.integer):
                raise ValueError(f"tap {k} must be integers of shape (N, {d}), not {t.dtype} {t.shape}")
            if t.size and (t.min() < lo or t.max() > hi):
                raise ValueError(f"tap {k} values must be in [{lo}, {hi}]")
            out.append(t)
        return out

    # -- cost ------------------------------------------------------------------------------------
    def cost(self) -> list[dict]:
        """Per layer: MACs per sample, weight and bias bytes, buffers, and the accumulator widths."""
        rows = []
        for layer in self.layers:
            out_bytes = 2 if layer is self.layers[-1] else 1
            rows.append({
                "layer": layer.name, "kind": layer.kind, "in_shape": list(layer.in_shape),
                "out_shape": list(layer.out_shape), "macs": layer.macs,
                "weight_bytes": layer.weight.size * BF.W_BITS // 8,
                "bias_shift_bits": layer.out_channels * (BF.BIAS_BITS + BF.SHIFT_BITS),
                "in_buffer_bytes": int(np.prod(layer.in_shape)),
                "out_buffer_bytes": int(np.prod(layer.out_shape_unpooled)) * out_bytes,
                "pooled_out_bytes": int(np.prod(layer.out_shape)) * out_bytes,
                "acc_bits_layer": BF.signed_bits(layer.acc_bound),
                "acc_bits_format": BF.acc_bits(layer.fan_in),
                "shift_range": [int(np.min(layer.shift)), int(np.max(layer.shift))],
                "in_frac": layer.in_frac, "out_frac": layer.out_frac,
            })
        return rows

    # -- files ------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the integer model (weights, biases, shifts, formats) to an .npz, atomically."""
        path = Path(path)
        meta = {"name": self.name, "input_shape": list(self.input_shape), "classes": self.classes,
                "input_format": {"signed": self.input_format.signed, "scale": self.input_format.scale,
                                 "frac": self.input_format.frac, "why": self.input_format.why},
                "layers": [layer.to_dict() for layer in self.layers], "calibration": self.calibration}
        arrays = {"meta": np.array(json.dumps(meta))}
        for i, layer in enumerate(self.layers):
            arrays.update({f"{i}.weight": np.asarray(layer.weight, np.int8), f"{i}.bias": np.asarray(layer.bias, np.int64),
                           f"{i}.shift": np.asarray(layer.shift, np.int64),
                           f"{i}.acc_frac": np.asarray(layer.acc_frac, np.int64)})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path) -> "IntBase":
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            meta = json.loads(str(arrays["meta"]))
            layers = [IntLayer(weight=arrays[f"{i}.weight"], bias=arrays[f"{i}.bias"], shift=arrays[f"{i}.shift"],
                               acc_frac=arrays[f"{i}.acc_frac"], **dict(d, in_shape=tuple(d["in_shape"])))
                      for i, d in enumerate(meta["layers"])]
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: not an integer base model file ({e})") from None
        return cls(layers, BF.InputFormat(**meta["input_format"]), tuple(meta["input_shape"]), meta["classes"],
                   meta["name"], meta["calibration"])


def cache_codes(values, shift: int, signed: bool) -> np.ndarray:
    """A tap's 4-bit cache codes (int8) from its integers: round_shift by e_k - frac_k, saturated to
    the code range (`IntBase.codes`; the PL's cache writer computes the same)."""
    return np.clip(round_shift(values, shift), *code_range(signed)).astype(np.int8)


def _check_shape(x, shape):
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"samples must have shape (n, {', '.join(map(str, shape))}), not {x.shape}")


def quantize_input(x, input_format: BF.InputFormat, input_shape: tuple) -> np.ndarray:
    """How the host converts float samples for the engine: sat(floor(x / scale + 1/2)), uint8 or int8."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"samples must be numbers, not {x.dtype}")
    _check_shape(x, input_shape)
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])
        raise ValueError(f"sample {bad} contains NaN or Inf")
    lo, hi = BF.act_range(input_format.signed)
    q = np.clip(np.floor(x.astype(np.float64) / input_format.scale + 0.5), lo, hi)
    return q.astype(np.int8 if input_format.signed else np.uint8)


def _z_range() -> tuple[int, int]:
    return -(1 << (BF.Z_BITS - 1)), (1 << (BF.Z_BITS - 1)) - 1


def fold_layers(net) -> list[dict]:
    """The network's weight layers as float64 (w (out, fan_in), b) with batch norm folded in, and
    which ReLU / 2x2 max-pool follow each (the layers between two weight layers)."""
    from ..nn.layers import BatchNorm, Conv2d, Dense, Flatten, MaxPool2, MaxPool2d, ReLU

    p = net.params
    specs = []
    for layer in net.layers:
        if isinstance(layer, (Conv2d, Dense)):
            specs.append({"layer": layer, "w": np.asarray(p[layer.w], np.float64).reshape(layer.out_features, -1),
                          "b": np.asarray(p[layer.b], np.float64).copy(), "relu": False, "pool": False})
        elif isinstance(layer, BatchNorm):
            if not specs or specs[-1]["relu"] or specs[-1]["pool"]:
                raise ValueError(f"{layer.name}: batch norm must directly follow a weight layer to be folded")
            s = np.asarray(p[layer.gamma], np.float64) / np.sqrt(np.asarray(p[layer.var], np.float64) + layer.eps)
            spec = specs[-1]
            spec["w"] = spec["w"] * s[:, None]
            spec["b"] = (spec["b"] - np.asarray(p[layer.mean], np.float64)) * s + np.asarray(p[layer.beta], np.float64)
        elif isinstance(layer, ReLU):
            if not specs:
                raise ValueError(f"{layer.name}: a ReLU before the first weight layer is not supported")
            specs[-1]["relu"] = True
        elif isinstance(layer, MaxPool2) or (isinstance(layer, MaxPool2d) and layer.kernel == (2, 2)
                                             and layer.stride == (2, 2) and not any(layer.pads)):
            if not specs or not isinstance(specs[-1]["layer"], Conv2d):
                raise ValueError(f"{layer.name}: max-pooling must follow a convolution")
            specs[-1]["pool"] = True
        elif not isinstance(layer, Flatten):
            raise ValueError(f"{type(layer).__name__} layers have no integer form")
    if not specs:
        raise ValueError("the network has no weight layer")
    if specs[-1]["relu"] or specs[-1]["pool"]:
        raise ValueError("the last weight layer must produce the logits (no ReLU or pooling after it)")
    return specs


def _square_kernel(layer) -> int:
    """The kernel size of a convolution the integer base (and the PL forward engine) computes:
    square, stride 1, the same zero padding on every side."""
    kh, kw = layer.kernel
    t, l, b, r = layer.pads
    if kh != kw or tuple(layer.stride) != (1, 1) or not t == l == b == r or layer.padding_mode != "zeros":
        raise ValueError(f"{layer.name}: the integer base supports square convolutions with stride 1 and equal zero "
                         f"padding on every side, not kernel {layer.kernel}, stride {layer.stride}, "
                         f"padding {layer.pads} ({layer.padding_mode})")
    return int(kh)


def _channel_exponents(w_eff, b):
    """Per output channel: the finest exponent at which int8 weights and the bias both fit (None: all zero)."""
    wlo, whi = BF.weight_range()
    blo, bhi = BF.bias_range()
    out = []
    for row, bias in zip(w_eff, b):
        ew = fit_exponent(row.min(), row.max(), wlo, whi)
        eb = fit_exponent(bias, bias, blo, bhi)
        cands = [e for e in (ew, eb) if e is not None]
        out.append(max(cands) if cands else None)
    return out


def calibrate(net, x, input_format: BF.InputFormat, *, name: str = "", headroom: int = BF.HEADROOM,
              per_channel: bool = True) -> IntBase:
    """Post-training quantization of a float network on calibration samples ``x`` (float, its input shape).

    Layer by layer on the integer model itself (each layer's range is measured on what the
    already-quantized layers before it produce). Deterministic: no randomness, no sampling.
    ``headroom`` and ``per_channel=False`` (one weight exponent per layer) exist for the ablation
    in scripts/int_base_eval.py; the hardware contract is the default.
    """
    if isinstance(headroom, bool) or not isinstance(headroom, (int, np.integer)) or headroom < 0:
        raise ValueError(f"headroom must be a non-negative integer number of octaves, not {headroom!r}")
    from ..nn.layers import Conv2d

    x = np.asarray(x)
    shape = tuple(net.input_shape)
    a = quantize_input(x, input_format, shape).astype(np.int64)
    if len(a) == 0:
        raise ValueError("calibration needs at least one sample")
    specs = fold_layers(net)
    if a.ndim == 4:
        a = a.transpose(0, 2, 3, 1)
    in_frac, in_signed, r_in = input_format.frac, input_format.signed, input_format.scale
    layers, ranges = [], []
    for i, spec in enumerate(specs):
        layer, last = spec["layer"], i == len(specs) - 1
        w_eff = spec["w"] * r_in  # the weights applied to the input integers
        conv = isinstance(layer, Conv2d)
        in_shape = tuple(a.shape[1:]) if conv else (int(np.prod(a.shape[1:])),)
        geo = {"kind": "conv" if conv else "dense", "in_shape": in_shape,
               "kernel": _square_kernel(layer) if conv else 0, "padding": layer.pads[0] if conv else 0}
        fitted_w = _channel_exponents(w_eff, spec["b"])
        if not per_channel:
            common = max((e for e in fitted_w if e is not None), default=None)
            fitted_w = [common] * len(fitted_w)
        prov = [0 if e is None else e for e in fitted_w]

        def build(exps, shift, out_frac, out_lo, out_hi):
            exps = np.asarray(exps, np.int64)
            wq = _quantize(w_eff, exps[:, None], *BF.weight_range()).astype(np.int8)
            bq = _quantize(spec["b"], exps, *BF.bias_range()).astype(np.int64)
            return IntLayer(layer.name, weight=wq, bias=bq, shift=np.asarray(shift, np.int64), acc_frac=exps,
                            in_frac=in_frac, in_signed=in_signed, out_frac=out_frac, out_lo=out_lo, out_hi=out_hi,
                            relu=spec["relu"], pool=spec["pool"], **geo)

        if last:
            out_frac, (out_lo, out_hi), signed_out = -BF.Z_FRAC, _z_range(), True
            vmin = vmax = None
        else:
            # The range of the real pre-activations acc * 2**acc_frac on the calibration samples.
            probe = build(prov, np.zeros(len(prov), np.int64), 0, -(1 << 62), 1 << 62)
            vmin, vmax = np.inf, -np.inf
            scale = 2.0 ** np.asarray(prov, np.float64)
            for s in range(0, len(a), CHUNK):
                real = probe.accumulate(a[s:s + CHUNK]) * scale
                vmin, vmax = min(vmin, float(real.min())), max(vmax, float(real.max()))
            signed_out = not spec["relu"]
            out_lo, out_hi = BF.act_range(signed_out)
            if spec["relu"]:
                vmin, vmax = 0.0, max(vmax, 0.0)
            fitted = fit_exponent(vmin, vmax, out_lo, out_hi)
            out_frac = (-BF.ACT_BITS if fitted is None else fitted) + int(headroom)
        exps = [out_frac - BF.SHIFT_MAX if e is None else max(e, out_frac - BF.SHIFT_MAX) for e in fitted_w]
        shift = out_frac - np.asarray(exps, np.int64)
        if np.any(shift < 0):
            c = int(np.argmax(shift < 0))
            raise ValueError(f"{layer.name}: channel {c}'s weights need the exponent {exps[c]}, coarser than the "
                             f"output's 2**{out_frac}: its outputs cannot be represented")
        q = build(exps, shift, out_frac, out_lo, out_hi)
        layers.append(q)
        ranges.append({"layer": layer.name, "min": vmin, "max": vmax, "out_frac": out_frac})
        if not last:
            a = np.concatenate([q.apply(a[s:s + CHUNK]) for s in range(0, len(a), CHUNK)])
            in_frac, in_signed, r_in = out_frac, signed_out, 2.0 ** out_frac
    calibration = {"samples": int(len(x)), "headroom_octaves": int(headroom), "per_channel": bool(per_channel),
                   "ranges": ranges}
    return IntBase(layers, input_format, shape, net.classes, name, calibration)


def from_pretrained(dataset: str, data_dir=None, *, samples: int = BF.CALIB_SAMPLES, **options) -> IntBase:
    """The integer form of a data set's pretrained base, calibrated on the first ``samples``
    source-domain training samples (the base's pretraining data; never target or test data)."""
    from ..data import load_dataset
    from ..nn.pretrained import base_key, load_base

    key = base_key(dataset)
    if key not in BF.INPUT_FORMATS:
        raise ValueError(f"no integer input format for base {key!r}; known: {', '.join(BF.INPUT_FORMATS)}")
    net, _ = load_base(dataset, data_dir)
    ds = load_dataset(dataset, data_dir)
    base = calibrate(net, ds.pretrain.x[:samples], BF.INPUT_FORMATS[key], name=f"{key}-int8", **options)
    base.calibration["split"] = "pretrain"
    return base


def calibration_exponents(base: IntBase, x) -> tuple:
    """The cache exponents fitted on calibration samples ``x`` (float, source domain): what a PL
    fill takes when no pass over the job's own samples precedes it."""
    _, taps = base.forward(base.quantize_input(x), taps=True)
    return tuple(int(e) for e in base.fit_exponents(taps))


def shipped(key: str) -> IntBase:
    """The calibrated integer form of a pretrained base shipped with the package
    (``skip2lora/pretrained/<key>-int8.npz``, written by `from_pretrained` and
    `calibration_exponents`: its ``calibration["cache_exponents"]``); the PL fill's weights."""
    path = Path(__file__).resolve().parent.parent / "pretrained" / f"{key}-int8.npz"
    if not path.is_file():
        known = sorted(p.name[:-len("-int8.npz")] for p in path.parent.glob("*-int8.npz"))
        raise ValueError(f"no shipped integer base {key!r}; shipped: {', '.join(known) or 'none'}")
    return IntBase.load(path)
