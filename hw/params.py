"""Hardware parameters derived from an `AcceleratorConfig`: line counts, widths and address sizes.

Number formats come from the numeric contract (`skip2lora.fixed.formats`), the stream layout from
the wire format (`skip2lora.fixed.packing.Layout`) and every pipeline latency from the cycle model
(`skip2lora.fixed.cycles`); nothing here restates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..fixed import cycles
from ..fixed import formats as F
from ..fixed.config import MAX_TAP_SLOTS, AcceleratorConfig
from ..fixed.fill_plan import RING_ENTRIES
from ..fixed.packing import Layout

__all__ = ["HwParams", "MAX_TAPS", "RING_ENTRIES", "bits_for", "invalid", "require_params"]

MAX_TAPS = MAX_TAP_SLOTS  # tap register slots in the (configuration-independent) register map


def bits_for(n: int) -> int:
    """Unsigned width that holds 0..n."""
    return max(int(n).bit_length(), 1)


def require_params(component, params) -> "HwParams":
    """A block's one parameter: the `HwParams` of the build (TypeError otherwise)."""
    if not isinstance(params, HwParams):
        raise invalid(component, TypeError(f"params must be HwParams, not {params!r}"))
    return params


def invalid(component, exc: Exception) -> Exception:
    """A parameter error for a half-built component, without Amaranth's "created but never used"
    warning when it is garbage collected (``raise invalid(self, TypeError(...))``)."""
    component._MustUse__silence = True
    return exc


@dataclass(frozen=True)
class HwParams:
    config: AcceleratorConfig

    def __post_init__(self):
        if not isinstance(self.config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {self.config!r}")
        if self.config.geometry.taps > MAX_TAPS:
            raise ValueError(f"at most {MAX_TAPS} taps are supported, not {self.config.geometry.taps}")
        if self.config.cache_depth > F.SAMPLES_MAX:
            raise ValueError(f"cache depth must be at most {F.SAMPLES_MAX}, not {self.config.cache_depth}")

    # -- geometry: the build's maxima (a job's own geometry is set by registers) -----------------
    @property
    def geometry(self):
        """The build's maxima as a geometry (`AcceleratorConfig.build_geometry`): every size below."""
        return self.config.build_geometry

    @property
    def model_geometry(self):
        """The model the build is named for (its default job)."""
        return self.config.geometry

    @property
    def K(self):
        return self.geometry.taps

    @property
    def R(self):
        return self.geometry.rank

    @property
    def C(self):
        return self.geometry.classes

    @property
    def P(self):
        return self.config.lanes

    @property
    def n_max(self):
        return self.config.cache_depth

    @cached_property
    def layout(self) -> Layout:
        return Layout(self.geometry, self.P)

    @property
    def tap_lines(self):
        """Tap lines per sample (= lines of A)."""
        return self.layout.tap_lines

    @property
    def tail_lines(self):
        return self.layout.tail_lines

    @property
    def sample_lines(self):
        return self.layout.sample_lines

    @cached_property
    def timing(self) -> "cycles.Timing":
        """Every latency of the schedule (the cycle model's and the RTL's one source)."""
        return cycles.Timing.of(self.layout)

    # -- widths --------------------------------------------------------------------------------
    @property
    def beat_bits(self):
        return self.layout.beat_bits

    @property
    def words_per_beat(self):
        return self.layout.words_per_beat

    @property
    def line_bits(self):
        """Address width of an A line (0..tap_lines-1)."""
        return max((self.tap_lines - 1).bit_length(), 1)

    @property
    def segments(self):
        """Stream beats per A line (the A memory's write granularity)."""
        return self.a_line_bits // self.beat_bits

    @property
    def a_words(self):
        """Weights per A line (all R ranks x P lanes)."""
        return self.R * self.P

    @property
    def a_line_bits(self):
        return self.a_words * F.W_BITS

    @property
    def b_words(self):
        """Weights of one tap's B (C x R)."""
        return self.C * self.R

    # -- the optimizer: OPT lanes update a chunk of an A line (or of a tap's B) per cycle ------
    @property
    def opt_lanes(self):
        return self.timing.opt_lanes

    @property
    def a_chunks(self):
        return self.timing.a_chunks

    @property
    def b_chunks(self):
        return self.timing.b_chunks

    @property
    def chunk_segments(self):
        """Stream-beat segments of the A memory per optimizer chunk."""
        return self.opt_lanes * F.W_BITS // self.beat_bits

    # -- accumulators and addresses ------------------------------------------------------------
    @property
    def code_bits(self):
        return F.CODE_BITS + 1  # codes sign- or zero-extended to a signed 5-bit operand

    @cached_property
    def acc(self) -> dict:
        return F.acc_bits(self.tap_lines * self.P)  # one tap may take every tap line

    @property
    def da_bits(self):
        return self.acc["da_acc"]

    @property
    def u_acc_bits(self):
        return self.acc["u_acc"]

    @property
    def cache_lines(self):
        return self.n_max * self.sample_lines

    @property
    def line_addr_bits(self):
        return bits_for(self.sample_lines - 1)

    @property
    def ring_lines(self):
        """Lines of PREDICT's ring (`RING_ENTRIES` entry slots past the cache's entries): a build
        with a PL base declares its cache this much deeper (the KV260's last UltraRAM bank has them spare)."""
        return RING_ENTRIES * self.sample_lines

    @property
    def cache_addr_bits(self):
        """A cache line's address: the entries' lines and the ring's (every build, so the width
        does not depend on whether the core has a PL base)."""
        return bits_for(self.cache_lines + self.ring_lines - 1)

    @property
    def sample_bits(self):
        return bits_for(self.n_max)

    @property
    def slot_bits(self):
        """A sample's position inside its mini-batch (0..BATCH_MAX-1)."""
        return bits_for(F.BATCH_MAX - 1)

    # -- the DDR cache path (`AcceleratorConfig.ddr_samples`, ``ddr_batch``) -----------------------
    @property
    def ddr(self) -> bool:
        return self.config.ddr

    @property
    def ddr_batch(self):
        return self.config.ddr_batch

    @property
    def order_depth(self):
        """Entries of the order buffer: the most samples of any job (on chip or in DDR)."""
        return max(self.n_max, self.config.ddr_samples)

    @property
    def order_bits(self):
        """An order buffer entry: a cache address (on-chip jobs) or a sample index (DDR jobs)."""
        return max(self.cache_addr_bits, bits_for(self.config.ddr_samples - 1) if self.ddr else 1)

    @property
    def bbuf_lines(self):
        """Lines of each of the batch buffer's two banks: two halves of ddr_batch / 2 slots."""
        return self.ddr_batch * self.sample_lines

    @property
    def bbuf_addr_bits(self):
        return bits_for(self.bbuf_lines - 1)

    @property
    def pair(self):
        """Samples per pass (`cycles.PASS_SAMPLES`): slots 2i and 2i+1 of a mini-batch run together."""
        return cycles.PASS_SAMPLES

    @property
    def pair_bits(self):
        """A pair's position inside its mini-batch (0..BATCH_MAX/2-1): the t buffers' row."""
        return bits_for(-(-F.BATCH_MAX // self.pair) - 1)

    @property
    def tap_bits(self):
        return bits_for(self.K - 1)
