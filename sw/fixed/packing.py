"""The wire format between host and accelerator: how cache entries and adapters become stream beats.

A beat (one AXI4-Stream transfer, one cache line) is 4*P bits, little-endian bytes.

* Cache entry = S = sum_k L_k + T beats. Tap k takes L_k = ceil(d_k / P) beats; code j of a beat
  occupies bits 4j..4j+3 (two's complement for a signed tap), codes past d_k are 0. The T tail
  beats hold the C base logits as 16-bit two's complement fields, then the label (16 bits), then
  zeros.
* Image (a FILL transfer, for a build with the base model on the PL) = ceil((2 + I) / (P / 2))
  beats: the label (16 bits), then the I bytes of the quantized image (`IntBase.quantize_input`,
  NHWC order), then zeros.
* Adapters = the A lines then B. A line i (tap k, line l) is R*P 16-bit words, word r*P + p
  holding A_k[r, l*P + p] (0 past d_k), i.e. 4R beats; then the K*C*R words of B in (k, c, r)
  order, zero-padded to a whole beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .model import Adapters, CacheEntries, Geometry

__all__ = ["LABEL_BYTES", "Layout", "pack_cache", "pack_ddr_cache", "unpack_cache", "pack_adapters", "unpack_adapters",
           "pack_cache_for", "pack_ddr_cache_for", "pack_adapters_for", "unpack_adapters_for", "image_beats",
           "pack_images", "RESULT_ABORT", "result_beats", "pack_results", "unpack_results"]


LABEL_BYTES = 2  # a FILL image's label, at the start of its first beat


@dataclass(frozen=True)
class Layout:
    geometry: Geometry
    lanes: int

    @cached_property
    def lines_per_tap(self) -> tuple:
        return tuple(-(-d // self.lanes) for d in self.geometry.dims)

    @property
    def tap_lines(self) -> int:
        return sum(self.lines_per_tap)

    @property
    def beat_bits(self) -> int:
        return 4 * self.lanes

    @property
    def beat_bytes(self) -> int:
        return self.beat_bits // 8

    @property
    def tail_lines(self) -> int:
        return -(-16 * (self.geometry.classes + 1) // self.beat_bits)

    @property
    def sample_lines(self) -> int:
        return self.tap_lines + self.tail_lines

    @property
    def words_per_beat(self) -> int:
        return self.lanes // 4

    @property
    def a_beats(self) -> int:
        return self.tap_lines * 4 * self.geometry.rank

    @property
    def b_words(self) -> int:
        g = self.geometry
        return g.taps * g.classes * g.rank

    @property
    def b_beats(self) -> int:
        return -(-self.b_words // self.words_per_beat)

    @property
    def adapter_beats(self) -> int:
        return self.a_beats + self.b_beats

    def cache_bytes(self, n: int) -> int:
        return n * self.sample_lines * self.beat_bytes

    @property
    def ddr_stride(self) -> int:
        """Bytes between two entries of the DDR cache buffer: an entry's beats rounded up to a power
        of two (an entry then never crosses a 4 KB page unless it fills whole pages)."""
        return (1 << (self.sample_lines - 1).bit_length()) * self.beat_bytes

    def ddr_bytes(self, n: int) -> int:
        """Size of a DDR cache buffer of n entries."""
        return n * self.ddr_stride

    def _code_columns(self):
        """Column of each (padded) lane position in the concatenated codes, or -1 for padding."""
        cols, off = [], self.geometry.offsets
        for k, lines in enumerate(self.lines_per_tap):
            pos = np.arange(lines * self.lanes)
            cols.append(np.where(pos < self.geometry.dims[k], off[k] + pos, -1))
        return np.concatenate(cols)


def pack_cache(layout: Layout, entries: CacheEntries) -> np.ndarray:
    """Cache entries as the byte stream the accelerator receives (uint8, n * S * 4P/8 bytes)."""
    g = layout.geometry
    codes = np.asarray(entries.codes)
    n = codes.shape[0]
    cols = layout._code_columns()
    padded = np.zeros((n, cols.size), np.uint8)
    valid = cols >= 0
    padded[:, valid] = codes[:, cols[valid]].astype(np.int64) & 0xF
    tap_bytes = (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)
    tail = np.zeros((n, layout.tail_lines * layout.beat_bytes // 2), np.uint16)
    tail[:, :g.classes] = np.asarray(entries.logits).astype(np.int64) & 0xFFFF
    tail[:, g.classes] = np.asarray(entries.labels)
    tail_bytes = tail.astype("<u2").view(np.uint8).reshape(n, -1)
    return np.concatenate([tap_bytes, tail_bytes], axis=1).reshape(-1)


def pack_ddr_cache(layout: Layout, entries: CacheEntries) -> np.ndarray:
    """Cache entries as the DDR cache buffer holds them (uint8, n * ddr_stride bytes): each entry's
    stream bytes (`pack_cache`) at the start of its stride, zeros after."""
    return pack_ddr_cache_for(layout, layout, entries)


def unpack_cache(layout: Layout, data, signed) -> CacheEntries:
    g = layout.geometry
    data = np.asarray(data, np.uint8)
    per = layout.sample_lines * layout.beat_bytes
    if data.size % per:
        raise ValueError(f"cache stream of {data.size} bytes is not a whole number of {per}-byte entries")
    rows = data.reshape(-1, per)
    tap_bytes = rows[:, :layout.tap_lines * layout.beat_bytes]
    nib = np.empty((rows.shape[0], tap_bytes.shape[1] * 2), np.int64)
    nib[:, 0::2], nib[:, 1::2] = tap_bytes & 0xF, tap_bytes >> 4
    cols = layout._code_columns()
    codes = np.zeros((rows.shape[0], g.total_dim), np.int8)
    valid = cols >= 0
    vals = nib[:, valid]
    sign = np.repeat(np.asarray(signed, bool), g.dims)[cols[valid]]
    vals = np.where(sign & (vals >= 8), vals - 16, vals)
    codes[:, cols[valid]] = vals
    tail = rows[:, tap_bytes.shape[1]:].copy().view("<u2").astype(np.int64)
    logits = np.where(tail[:, :g.classes] >= 1 << 15, tail[:, :g.classes] - (1 << 16), tail[:, :g.classes])
    return CacheEntries(codes, logits.astype(np.int16), tail[:, g.classes].astype(np.int64))


def pack_adapters(layout: Layout, adapters: Adapters) -> np.ndarray:
    """The adapter image of ``layout``'s geometry: A line-major (each tap's lines, R x P words a
    line), then B (taps x classes x rank words), zero padded to whole beats."""
    return pack_adapters_for(layout, layout, adapters)


def unpack_adapters(layout: Layout, data) -> Adapters:
    return unpack_adapters_for(layout, layout, data)


# -- a job's geometry on a build with larger maxima (one bitstream for many models) ----------------
# The build takes its streams in its own sizes (`AcceleratorConfig.build_geometry`): a cache entry
# of the build's lines (the job's entry, then zero lines: only the job's lines are read), and an
# adapter image of the build's A lines and taps x classes x rank of B (the job's weights, zero
# elsewhere: a zero row of A, a zero column or row of B and a missing tap's B stay zero in
# training, so the job's results are its own geometry's bit for bit).

def _check_fit(build: Layout, layout: Layout):
    gb, g = build.geometry, layout.geometry
    if (build.lanes != layout.lanes or g.taps > gb.taps or g.classes > gb.classes or g.rank > gb.rank
            or layout.tap_lines > build.tap_lines):
        raise ValueError(f"geometry {g.to_dict()} does not fit the build's {gb.to_dict()} at {build.lanes} lanes")


def _entries_in(width: int, layout: Layout, entries: CacheEntries) -> np.ndarray:
    """`pack_cache` of ``layout``, each entry at the start of ``width`` bytes, zeros after."""
    stream = pack_cache(layout, entries).reshape(-1, layout.sample_lines * layout.beat_bytes)
    out = np.zeros((stream.shape[0], width), np.uint8)
    out[:, :stream.shape[1]] = stream
    return out.reshape(-1)


def pack_cache_for(build: Layout, layout: Layout, entries: CacheEntries) -> np.ndarray:
    """`pack_cache` of the job's layout, each entry zero padded to the build's entry lines."""
    _check_fit(build, layout)
    return _entries_in(build.sample_lines * build.beat_bytes, layout, entries)


def pack_ddr_cache_for(build: Layout, layout: Layout, entries: CacheEntries) -> np.ndarray:
    """The DDR cache buffer of a job on a build: the job's entries at the build's stride."""
    _check_fit(build, layout)
    return _entries_in(build.ddr_stride, layout, entries)


def pack_adapters_for(build: Layout, layout: Layout, adapters: Adapters) -> np.ndarray:
    """The build's adapter image holding a job's adapters (`pack_adapters` when they are equal)."""
    _check_fit(build, layout)
    gb, g, p = build.geometry, layout.geometry, layout.lanes
    lines = np.zeros((build.tap_lines, gb.rank, p), np.int64)
    pos = 0
    for k, n in enumerate(layout.lines_per_tap):
        a = np.zeros((gb.rank, n * p), np.int64)
        a[:g.rank, :g.dims[k]] = adapters.a[k]
        lines[pos:pos + n] = a.reshape(gb.rank, n, p).transpose(1, 0, 2)
        pos += n
    b = np.zeros((gb.taps, gb.classes, gb.rank), np.int64)
    for k in range(g.taps):
        b[k, :g.classes, :g.rank] = adapters.b[k]
    flat = np.concatenate([lines.reshape(-1), b.reshape(-1)])
    out = np.zeros(build.adapter_beats * build.words_per_beat, np.int64)
    out[:flat.size] = flat
    return (out & 0xFFFF).astype("<u2").view(np.uint8)


def unpack_adapters_for(build: Layout, layout: Layout, data) -> Adapters:
    """The job's adapters from the build's adapter image (the inverse of `pack_adapters_for`)."""
    _check_fit(build, layout)
    gb, g, p = build.geometry, layout.geometry, layout.lanes
    data = np.asarray(data, np.uint8)
    expect = build.adapter_beats * build.beat_bytes
    if data.size != expect:
        raise ValueError(f"adapter stream must be {expect} bytes for this geometry, not {data.size}")
    w = data.view("<u2").astype(np.int64)
    w = np.where(w >= 1 << 15, w - (1 << 16), w)
    lines = w[:build.tap_lines * gb.rank * p].reshape(build.tap_lines, gb.rank, p)
    a, pos = [], 0
    for k, n in enumerate(layout.lines_per_tap):
        block = lines[pos:pos + n].transpose(1, 0, 2).reshape(gb.rank, n * p)
        a.append(block[:g.rank, :g.dims[k]].astype(np.int16))
        pos += n
    off = build.tap_lines * gb.rank * p
    b = w[off:off + gb.taps * gb.classes * gb.rank].reshape(gb.taps, gb.classes, gb.rank)
    return Adapters(a, [b[k, :g.classes, :g.rank].astype(np.int16) for k in range(g.taps)])


def image_beats(beat_bytes: int, image_bytes: int) -> int:
    """Beats of one image in a FILL transfer: its label (`LABEL_BYTES`) and its bytes, zero padded."""
    for name, v in (("beat_bytes", beat_bytes), ("image_bytes", image_bytes)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    return -(-(LABEL_BYTES + int(image_bytes)) // int(beat_bytes))


def pack_images(layout: Layout, images, labels) -> np.ndarray:
    """A FILL transfer's bytes: per image (N, I) uint8 (quantized, NHWC, flattened) its label as a
    little-endian 16-bit word, its bytes, then zeros to a whole beat (`image_beats`)."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 2 or images.shape[0] == 0:
        raise ValueError(f"images must be (n, bytes) with n >= 1, not {images.shape}")
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (the quantized input's raw bytes), not {images.dtype}")
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {images.shape[0]} integers, not {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= 1 << 16:
        raise ValueError("labels must fit 16 bits")
    n, size = images.shape
    width = image_beats(layout.beat_bytes, size) * layout.beat_bytes
    out = np.zeros((n, width), np.uint8)
    out[:, 0] = labels & 0xFF
    out[:, 1] = labels >> 8
    out[:, 2:2 + size] = images
    return out.reshape(-1)


#: PREDICT's output: the class word of the beat that ends an aborted frame (no class)
RESULT_ABORT = 0xFFFF


def result_beats(classes: int, beat_bits: int) -> int:
    """Beats of one PREDICT result: ``classes`` y words (the build's C), then the class word."""
    for name, v in (("classes", classes), ("beat_bits", beat_bits)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    return -(-(int(classes) + 1) * 16 // int(beat_bits))


def pack_results(y, classes, build_classes: int, beat_bits: int) -> np.ndarray:
    """PREDICT's output stream as int16 words: per image its y (int, (n, c) with c <= the build's
    C, zeros up to C), its class, zeros to a whole beat (`result_beats`)."""
    y = np.asarray(y)
    classes = np.asarray(classes)
    n, c = y.shape
    if c > build_classes or classes.shape != (n,):
        raise ValueError(f"y {y.shape} and classes {classes.shape} do not fit {build_classes} classes")
    width = result_beats(build_classes, beat_bits) * beat_bits // 16
    out = np.zeros((n, width), np.int64)
    out[:, :c] = y
    out[:, build_classes] = classes
    return out.astype(np.int16).reshape(-1)


def unpack_results(words, n: int, build_classes: int, beat_bits: int, classes: int | None = None):
    """(y, class) of ``n`` results from PREDICT's int16 output words (`pack_results`); y keeps
    the job's ``classes`` columns (default: the build's)."""
    width = result_beats(build_classes, beat_bits) * beat_bits // 16
    words = np.asarray(words).astype(np.int16).reshape(-1)
    if words.size < n * width:
        raise ValueError(f"{words.size} result words hold fewer than {n} results of {width}")
    rows = words[:n * width].reshape(n, width).astype(np.int64)
    c = build_classes if classes is None else classes
    return rows[:, :c], rows[:, build_classes] & 0xFFFF
