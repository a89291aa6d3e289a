"""The cycle model: a job's exact cycle count in closed form, following the RTL's schedule.

The sequencer (hw/sequencer.py) runs a job as

    INIT  |  per epoch: EPOCH, [ORDER], per mini-batch of nb samples:
             PREFETCH, BATCH, F (ceil(nb/2) forward passes), WAIT_T, B (line-major backward), [OPT_A, OPT_B]
          |  EPOCH_END

Every pass runs `PASS_SAMPLES` = 2 samples (a pair: slots 2i and 2i+1 of the mini-batch): one read
of an A line feeds both samples' forward products, and one backward op adds both samples' t q
into a line's gradient sums, so F takes a sample pair's lines per pair and B
``max(pairs, a_chunks)`` cycles a line. Two head units take the pair's samples side by side.
OPT_A and OPT_B (the optimizer's last A line, then B) hold the sequencer only after an epoch's
last batch; within an epoch they run under the next batch's PREFETCH and BATCH, whose step waits
`Timing.batch_gate` cycles after the last backward op.

A job in DDR mode (CACHE_MODE.ddr) also waits for its mini-batches' entries: the fetcher starts
the epoch's first batch with its PREFETCH and each next batch when the current one's BATCH steps,
and a BATCH steps only once its entries are in the batch buffer (`DDRTiming.fetch_cycles` after
the fetch's start, under a memory that returns a burst's first beat `DDRTiming.latency` cycles
after its address and then one beat a cycle).

Every block's pipeline latency below is the number of register stages the RTL has (each
block's test measures it against this module). The cycle counter counts the cycles the
sequencer is busy, which is what `job_cycles` returns. The projected time is cycles / an assumed
clock (200 MHz by default): no Vivado timing exists here, so every projection says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import formats as F
from .config import AcceleratorConfig
from .order import ROUNDS, domain
from .packing import Layout
from .schedule import steps_per_epoch

__all__ = ["OPT_LANES_MAX", "CLOCK_MHZ", "tree_levels", "divider_latency", "STEP_LATENCY", "INIT_LATENCY",
           "ORDER_PIPE", "order_cycles", "softmax_latency", "head_latency", "fwd_latency", "BWD_LATENCY",
           "OPT_LATENCY", "PASS_SAMPLES", "DDRTiming", "KV260_DDR", "DDR_OUTSTANDING", "FETCH_OVERHEAD", "pairs", "Timing", "batch_cycles", "epoch_cycles", "job_cycles", "useful_macs", "report"]

OPT_LANES_MAX = 16   # weights the optimizer updates per cycle (a chunk of an A line or of a tap's B)
PASS_SAMPLES = 2     # samples per forward / backward pass (two cache ports, two head units)
CLOCK_MHZ = 200.0    # assumed clock for projections


def pairs(nb: int) -> int:
    """Passes of a mini-batch of nb samples: ceil(nb / PASS_SAMPLES) (an odd batch's last pair has one)."""
    return -(-nb // PASS_SAMPLES)


def tree_levels(n: int) -> int:
    """Register stages of a balanced binary reduction of n terms (one level per stage)."""
    return max(n - 1, 0).bit_length()


def divider_latency(quotient_bits: int) -> int:
    """The sequential divider: start -> done, one quotient bit per cycle."""
    return quotient_bits + 1


# -- the scalar unit (hw/scalar_unit.py): one divider sized for the per-step division -------------
_DIV = 1 + divider_latency(F.LR_BITS)  # the operands registered; eta_t <= eta < 2**28
_MUL = 1 + 32                      # the shift-add multiplier: operands registered, then one bit of a 32-bit operand per cycle
_SQRT = 30                         # the bit-serial square root, two radicand bits per cycle
#: ``step`` pulse -> the next step's alpha ready: select | eta_t's division | beta**t (3) | the
#: square root | the product | Adam's division | normalization (every optimizer takes the same time).
STEP_LATENCY = 1 + _DIV + 3 + _SQRT + 1 + (_MUL + 1) + _DIV + 2
#: job start -> the job's constants and step 1's alpha ready: ceil(N / B) | T = E * spe | rn(B) |
#: rn(nb_last) | eta * (T - W) | step 1.
INIT_LATENCY = 1 + (_DIV + 1) + (_MUL + 1) + (_DIV + 1) + (_DIV + 1) + (1 + _MUL + 1) + STEP_LATENCY

# -- the order unit (hw/order_unit.py) ------------------------------------------------------------
ORDER_PIPE = ROUNDS * 4 + 4  # 4 stages a round; the image, the range check, the address product (2)


def order_cycles(samples: int) -> int:
    """One epoch's order: ``epoch_start`` -> ``done``: round keys, masks, 2**(2h) candidates, pipeline."""
    return ROUNDS + 1 + domain(samples) + ORDER_PIPE + 1


# -- the head unit (hw/head.py, hw/softmax.py) ----------------------------------------------------
_SMX_EXP, _SMX_PG = 6, 7
_SMX_DIV = divider_latency(F.RECIP_SHIFT - F.P_FRAC + 1)  # 17 quotient bits


def softmax_latency(classes: int) -> int:
    """capture | max tree | exp (6) | sum tree | division | recip register | probabilities (7)."""
    lv = tree_levels(classes)
    return 1 + lv + _SMX_EXP + lv + _SMX_DIV + 1 + _SMX_PG


def head_latency(taps: int, rank: int, classes: int) -> int:
    """The head unit's ``start`` -> ``done`` (it takes the next sample in the ``done`` cycle).

    Y: K issue cycles, row select, DSP M, P, the sum over r, the sum over k; round, + z, softmax
    start (3); the softmax; SB: K issue cycles, row select, M, P, the sum over c, shift, round,
    saturate, the t write; then done.
    """
    y = taps + (3 + tree_levels(rank) + 1) + 3
    sb = taps + (3 + tree_levels(classes) + 4)
    return y + softmax_latency(classes) + sb


# -- the datapath (hw/datapath.py) and the optimizer (hw/optimizer.py) ------------------------------
def fwd_latency(lanes: int) -> int:
    """A pair's last line issued -> ``sample_done``: read, output register, DSP inputs, M, P, the
    lane tree, the tap sum, the shift, the rounding add, the saturation."""
    return 5 + tree_levels(lanes) + 4


#: a line's last backward op issued -> the line's gradient sums to the optimizer: read, output
#: register, DSP inputs, M, the pair's two products summed, the accumulator
BWD_LATENCY = 6
OPT_LATENCY = 13  # a chunk selected -> its weights written and its saturation count added


# -- the DDR path (hw/fetcher.py, hw/ddr_reader.py) -------------------------------------------------
DDR_OUTSTANDING = 4   # bursts the DDR reader keeps in flight
FETCH_REQUEST = 6     # cycles between two of the fetcher's requests (the order read, the handshake)
#: the fetch's start -> its ``ready``, besides the memory's latency and one cycle a line: the
#: request (the order buffer's read, the handshake), the reader's AR register, the beat's write
#: register, ``filled``, the fetcher's count
FETCH_OVERHEAD = 8


@dataclass(frozen=True)
class DDRTiming:
    """The DDR path's memory, as the cycle model assumes it: each burst's first beat ``latency``
    cycles after its address handshake, then one line (beat) a cycle, bursts back to back."""

    latency: int
    source: str = ""

    def __post_init__(self):
        if isinstance(self.latency, bool) or not isinstance(self.latency, int) or self.latency < 0:
            raise ValueError(f"the DDR latency must be a non-negative number of cycles, not {self.latency!r}")

    def fetch_cycles(self, layout: Layout, nb: int) -> int:
        """A mini-batch's fetch: from its start (the cycle the fetcher sees it) to its ``ready``."""
        s = layout.sample_lines
        # the model holds while the requests outpace the data and the reader's outstanding bursts
        # cover the latency (the KV260 build: up to ~250 cycles); beyond, the RTL is slower
        if s < FETCH_REQUEST or self.latency > (DDR_OUTSTANDING - 1) * s - FETCH_REQUEST:
            raise ValueError(f"the cycle model does not cover a DDR latency of {self.latency} cycles with "
                             f"{s}-line entries (at most {(DDR_OUTSTANDING - 1) * s - FETCH_REQUEST})")
        return FETCH_OVERHEAD + self.latency + nb * s


#: The KV260 figure assumed for projections: 100 cycles (500 ns at 200 MHz) from an HP port read's
#: address to its first beat, then one 128-bit beat a cycle (3.2 GB/s at 200 MHz). An assumption,
#: not a measurement: no board here; it is on the slow side of what PS DDR reads through an HP port
#: take, and one beat a cycle is an HP port's width at the PL clock, far under the 64-bit DDR4's peak.
KV260_DDR = DDRTiming(100, "assumed: 100 cycles to the first beat, then a 128-bit beat a cycle")


@dataclass(frozen=True)
class Timing:
    """Every latency and phase length of a job's schedule on a build (the sequencer's numbers).

    ``layout`` is the job's (its geometry's lines: the passes, the gaps); ``build`` the build's
    maxima (`AcceleratorConfig.build_geometry`: the head units' taps and classes, the optimizer's
    chunks and B rows), the job's own layout when the build is made for it."""

    layout: Layout
    build: Layout | None = None

    @classmethod
    def of(cls, layout: Layout, build: "Layout | AcceleratorConfig | None" = None) -> "Timing":
        if isinstance(build, AcceleratorConfig):
            build = Layout(build.build_geometry, build.lanes)
        if build is not None and build.lanes != layout.lanes:
            raise ValueError(f"a {layout.lanes}-lane layout cannot run on a {build.lanes}-lane build")
        return cls(layout, None if build == layout else build)

    @property
    def geometry(self):
        """The build's geometry: the sizes of its head units and optimizer."""
        return (self.build or self.layout).geometry

    # the optimizer's chunks
    @property
    def opt_lanes(self) -> int:
        return min(OPT_LANES_MAX, self.geometry.rank * self.layout.lanes)

    @property
    def a_chunks(self) -> int:
        return -(-self.geometry.rank * self.layout.lanes // self.opt_lanes)

    @property
    def b_chunks(self) -> int:
        g = self.geometry
        return -(-g.classes * g.rank // self.opt_lanes)

    # latencies
    @property
    def fwd(self) -> int:
        return fwd_latency(self.layout.lanes)

    @property
    def head(self) -> int:
        g = self.geometry
        return head_latency(g.taps, g.rank, g.classes)

    @property
    def f_gap(self) -> int:
        """Idle cycles between two forward passes: the head units must be free when u arrives."""
        return max(0, self.head - self.layout.sample_lines)

    @property
    def wait_t(self) -> int:
        """WAIT_T lasts max(0, wait_t - pairs(nb)) cycles: the last pair's t is read
        pairs(nb) - 1 cycles after the backward pass starts."""
        return self.fwd + self.head

    @property
    def opt_a_wait(self) -> int:
        """The last backward op -> the optimizer may start B (its last A chunk is out)."""
        return BWD_LATENCY + self.a_chunks

    @property
    def opt_b_cycles(self) -> int:
        """B: per tap a row fetch and its chunks; then the optimizer's last write and count land."""
        return self.geometry.taps * (1 + self.b_chunks) + OPT_LATENCY

    @property
    def state_rows(self) -> int:
        """Rows of the optimizer's state memory: a_chunks per line of A, b_chunks per tap's B (the build's)."""
        return (self.build or self.layout).tap_lines * self.a_chunks + self.geometry.taps * self.b_chunks

    @property
    def init(self) -> int:
        """INIT: the scalar unit's job-start sequence, or the optimizer's state clear if longer."""
        return max(INIT_LATENCY, self.state_rows + 1)

    def prefetch(self, nb: int) -> int:
        return nb + 2

    def passes(self, nb: int) -> int:
        """A batch after its BATCH cycle up to its last backward op: F, WAIT_T, B."""
        if nb < 1:
            raise ValueError(f"a batch has at least one sample, not {nb}")
        lay = self.layout
        n = pairs(nb)
        forward = n * lay.sample_lines + (n - 1) * self.f_gap
        wait = max(0, self.wait_t - n)
        backward = (lay.tap_lines - 1) * max(n, self.a_chunks) + n
        return forward + wait + backward

    def after_step(self, nb: int) -> int:
        """A batch after its BATCH cycle when the sequencer waits for the optimizer (an epoch's
        last batch): F, WAIT_T, B, OPT_A, OPT_B."""
        return self.passes(nb) + self.opt_a_wait + self.opt_b_cycles

    @property
    def batch_gate(self) -> int:
        """Within an epoch the next batch does not wait for the optimizer: its PREFETCH follows the
        last backward op, and its BATCH may come this many cycles after that op (the optimizer's
        A and B updates finish in the background). The gate keeps three orders: the scalar unit
        steps only after ``b_start`` (the optimizer has taken this batch's step size for B); the
        last A line's writes land before the next forward pass reads that line; B's writes and
        the optimizer's row fetches end before the head units take the next batch's first pair."""
        lay = self.layout
        return max(self.opt_a_wait + 1,
                   self.opt_a_wait + OPT_LATENCY + 3 - lay.tap_lines,
                   self.opt_a_wait + self.opt_b_cycles + 1 - lay.sample_lines - self.fwd)

    @property
    def max_wait(self) -> int:
        return max(self.f_gap, self.wait_t, self.opt_a_wait, self.opt_b_cycles, self.a_chunks)


def batch_cycles(timing: Timing, nb: int, *, last: bool = False) -> int:
    """A mini-batch of nb samples in a long epoch, without BATCH's wait for the scalar unit: from
    the previous batch's last backward op to this one's (PREFETCH, the gate, BATCH, F, WAIT_T, B);
    ``last``: an epoch's last batch, PREFETCH to OPT_B after an epoch's start."""
    if last:
        return timing.prefetch(nb) + 1 + timing.after_step(nb)
    return max(timing.prefetch(nb) + 1, timing.batch_gate) + timing.passes(nb)


def _epoch_batches(samples: int, batch: int) -> list:
    full, rest = divmod(samples, batch)
    return [batch] * full + ([rest] if rest else [])


def epoch_cycles(timing: Timing, samples: int, batch: int, shuffle: bool, *, first: bool = True,
                 ddr: DDRTiming | None = None) -> int:
    """One epoch, EPOCH to EPOCH_END. A batch's BATCH (the cycle it leaves that state) comes after
    its PREFETCH; within the epoch also `Timing.batch_gate` cycles after the previous batch's last
    backward op (the next PREFETCH follows that op at once); and STEP_LATENCY cycles after the
    previous batch's BATCH (the scalar unit computes each step's alpha in that time). The epoch's
    last batch waits for the optimizer (OPT_A, OPT_B) before EPOCH_END. ``first``: the job's
    first epoch, whose first batch finds step 1 ready. ``ddr``: a job in DDR mode, whose BATCH
    also waits for the batch's fetch (started with the epoch's first PREFETCH, then with the
    previous batch's BATCH)."""
    sizes = _epoch_batches(samples, batch)
    start = 1 + (order_cycles(samples) if shuffle else 0)
    # cycles counted from the epoch's first (EPOCH) cycle; the previous epoch's last BATCH came
    # after_step(last) + 2 cycles before it (its passes, OPT_A, OPT_B, EPOCH_END)
    prev_step = None if first else -(timing.after_step(sizes[-1]) + 2)
    t_prefetch, last_b = start, None
    fetch_seen = start  # the cycle the fetcher sees the batch's start
    for nb in sizes:
        step = t_prefetch + timing.prefetch(nb)
        if last_b is not None:
            step = max(step, last_b + timing.batch_gate)
        if prev_step is not None:
            step = max(step, prev_step + STEP_LATENCY)
        if ddr is not None:
            step = max(step, fetch_seen + ddr.fetch_cycles(timing.layout, nb))
            fetch_seen = step + 1
        last_b = step + timing.passes(nb)
        prev_step, t_prefetch = step, last_b + 1
    return last_b + timing.opt_a_wait + timing.opt_b_cycles + 2


def job_cycles(layout: Layout, samples: int, batch: int, epochs: int, *, shuffle: bool = False,
               ddr: DDRTiming | None = None, build: "Layout | AcceleratorConfig | None" = None) -> int:
    """Cycles the accelerator's counter reports for a job (the sequencer's busy cycles); ``ddr``:
    the job runs in DDR mode under that memory; ``build``: the build it runs on (a build with
    other maxima than the job's geometry), else one made for ``layout``'s geometry."""
    for name, v in (("samples", samples), ("batch", batch), ("epochs", epochs)):
        if v < 1:
            raise ValueError(f"{name} must be at least 1, not {v}")
    t = Timing.of(layout, build)
    return (t.init + epoch_cycles(t, samples, batch, shuffle, ddr=ddr)
            + (epochs - 1) * epoch_cycles(t, samples, batch, shuffle, first=False, ddr=ddr))


def useful_macs(layout: Layout, samples: int, epochs: int) -> int:
    """Multiply-accumulates of the forward and backward passes (2 R sum d_k per sample)."""
    g = layout.geometry
    return 2 * g.rank * g.total_dim * samples * epochs


def report(config: AcceleratorConfig, samples: int, batch: int, epochs: int, *, shuffle: bool = False,
           clock_mhz: float = CLOCK_MHZ, ddr: DDRTiming | None = None, geometry=None) -> dict:
    """A job's cycles and projected time on ``config``; ``geometry``: the job's model (default: the
    build's own)."""
    layout = Layout(config.check_geometry(geometry or config.geometry), config.lanes)
    cyc = job_cycles(layout, samples, batch, epochs, shuffle=shuffle, ddr=ddr, build=config)
    lanes = PASS_SAMPLES * config.lanes * config.geometry.rank
    return {
        "config": config.name, "samples": samples, "batch": batch, "epochs": epochs, "shuffle": shuffle,
        "cache": "ddr" if ddr is not None else "chip",
        **({"ddr_latency": ddr.latency, "ddr_model": ddr.source} if ddr is not None else {}),
        "steps": epochs * steps_per_epoch(samples, batch),
        "cycles": cyc, "clock_mhz": clock_mhz, "projected_ms": cyc / (clock_mhz * 1e3),
        "projection": f"cycles / {clock_mhz:g} MHz (an assumed clock: no timing closure here)",
        "lanes": config.lanes, "multipliers": lanes,
        "utilization": useful_macs(layout, samples, epochs) / (lanes * cyc),
        "macs": useful_macs(layout, samples, epochs),
    }
