"""The cache writer: every tap's values, the logits and the labels in, concurrently; 4-bit cache entries out.

The PL fill (issue 15) runs a chain of forward engines, one per layer of the integer base
(`skip2lora.fixed.base_int`), with samples overlapping: while engine k works on sample n, engine
k+1 works on sample n-1. Each engine's input is a tap (tap 0 the image) and the last one's output
the base logits, so values of different samples arrive at the same time from different sources.
This block turns them into the cache entries the host would have streamed
(`skip2lora.fixed.packing.pack_cache`), bit for bit.

Ports (``g`` = the build's model geometry `HwParams.model_geometry`: K taps of d_k values, C
classes; P = ``lanes`` 4-bit codes a line, W = P / 4 16-bit words a tail line):

    taps[k]     In stream, signed(VALUE_BITS): tap k's d_k values a sample, sample after sample.
                A value becomes its code ``clip(round_shift(v, shift_k), code range)``
                (`base_int.cache_codes`) in its lane of the tap's line; a tap's last line zero padded
    logits      In stream, signed(VALUE_BITS): C base logits (Z format) a sample
    label       In stream, LABEL_BITS: one label a sample, early (when its image starts): a queue of
                `LABEL_DEPTH`, not ready while full. The tail takes a sample's C logits, then its
                label from the queue, as 16-bit words into the tail lines (zero padded); until the
                label is there, ``logits`` is not ready
    shift[k]    In SHIFT_BITS: e_k - frac_k (configuration; 17..31 all give 0)
    tap_signed[k]  In 1: codes -8..7, else 0..15 (configuration)
    start, first_line  In: a fill begins (while the writer is idle; values from the next cycle
                on): positions, pointers and counts reset, entry 0 at ``first_line``. The label
                queue is left as it is (a fill uses every label it queues)
    write       the cache's write port (`ports.write_port`): one line a cycle, registered
    entries     Out: entries completely written since ``start`` (every source wrote its lines)
    done        Out: a one-cycle pulse in the cycle ``entries`` increments, `DONE_LAG` cycles
                after ``write`` carries the entry's last line

Placement (`packing.pack_cache_for`: the entries' own layout, each in a slot of ``stride`` lines):
entry n at line ``first_line + n * stride``; tap k's lines at the entry's line ``sum_{j<k} L_j``
(L_j = ceil(d_j / P)), the tail's at ``sum_j L_j``. The entries' geometry is ``geometry`` (default:
the build's model geometry `HwParams.model_geometry`) and ``stride`` its entry lines by default
(`packing.pack_cache`); the core passes the build's entry lines `HwParams.sample_lines` (ENTRY_LINES),
where its jobs read entry n, so on a build with maxima the slot's lines past the entry (the
padding `pack_cache_for` zeroes) are not written: a job reads only its own layout's lines (the
geometry unit's line table and ``s_last``). Each of the K + 1 sources (the taps, the tail) has its own assembler: its
sample position and lane, line register, holding register and line pointer (it steps a line at a
time and, past the source's last line of an entry, to its first line of the next).

Pipeline of a source (a register stage each; a source's stages stall together):

    1  the value (the tail: the logit, or the queue's label) and its place registered
    2  t = (2 v) >> shift_k                     (a barrel shifter; the tail's value passes)
    3  the code: u = (t + 1) >> 1 is round_shift(v, shift_k); saturated by comparing t itself
       (u > hi iff t > 2 hi, u < lo iff t < 2 lo - 1), so only u's low 4 bits need an adder
    4  the code (word) enters the line, a shift register (the newest at the top lane: a full line
       holds its first value in lane 0); a completed line goes to the holding register (a sample's
       short last line shifted down to lanes 0..rem-1, zeros above) with its address, and the
       arbiter registers its grant
    5  the granted holding register onto ``write`` (en, addr, data registered)

A value taken in cycle c (presented with ``ready`` high) that completes a line has its line on
``write`` in cycle c + `LATENCY` - 1 when no other source competes (the tail's last line: the
label taken the cycle after the last logit).

Arbitration and back-pressure. One line a cycle goes to ``write``, round robin over the taps
that hold a line or load one this cycle (the priority passes a granted tap a cycle after its
grant), except that the tail's lines go first: an entry's last line is the tail's, so ``done``
never waits behind another source (the PL fill's cycle model is exact). A tap's line waits about
K + 1 cycles plus the tail's lines written meanwhile; every line is written exactly once,
each source's in its order. A source is not ready only when its stage 3 completes a line while
its holding register still holds one that is not being written this cycle (one line assembling,
one waiting; the tail also while it waits for the label). So a source whose lines each take
clearly more values than there are sources never stalls at one value a cycle (the KV260 build's
taps: >= 16 values a line, 6 sources; the tests run them all at full rate at once); a short line
(a tap's last line followed at once by the next sample's first, the tail's label line) may stall
it a cycle or two under contention. No value is lost or reordered.

The ring (``ring_entries`` W > 0, PREDICT: docs/pl-predict.md): while ``ring`` is 1 at ``start``,
entry n goes to line ``first_line + (n mod W) * stride`` instead: each source's pointer goes back
to its first line past its W-th entry (a register of that line, taken at ``start``).

``entries``: each source counts the samples it has finished (last line written) that ``entries``
has not counted yet; when every count is nonzero, all drop by one and ``entries`` steps (at most
every other cycle: an entry takes far longer). Every path is registered (``ready`` is a LUT or
two from registers); only state and valid bits reset; <= 6 LUT levels, one carry
chain a path (yosys ``synth_xilinx -family xcup``, the timing proxy).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from ..fixed import forward_cycles as FC
from ..fixed.model import Geometry
from ..fixed.packing import Layout
from .params import HwParams, invalid, require_params
from .ports import write_port

__all__ = ["CacheWriter", "VALUE_BITS", "SHIFT_BITS", "SHIFT_SAT", "LABEL_DEPTH", "LATENCY", "DONE_LAG"]

VALUE_BITS = F.Z_BITS   # the widest value: a Q8 int16 logit (activations are 8-bit)
SHIFT_BITS = 5          # a tap's e_k - frac_k: 0..31 (an int16 shifted by 17 or more is its sign)
SHIFT_SAT = VALUE_BITS + 1  # round_shift(v, s) of an int16 is 0 for every s >= 17: shifts saturate here
LABEL_DEPTH = 16        # labels queued: samples in flight between the image's start and the logits
LATENCY = FC.WRITER_LATENCY  # a value taken in cycle c -> its line on ``write`` in cycle c + LATENCY - 1
DONE_LAG = 2            # ``write`` carries an entry's last line in cycle c -> ``done`` in cycle c + 2


def _round_robin(requests, prio):
    """One-hot grant of the first request at or after the one-hot ``prio`` (cyclically)."""
    n = len(requests)
    grants = []
    for i in range(n):
        terms = []
        for q in range(n):
            free = [~requests[j % n] for j in range(q, q + ((i - q) % n))]  # q .. i-1, cyclically
            t = prio[q]
            for f in free:
                t = t & f
            terms.append(t)
        any_ = terms[0]
        for t in terms[1:]:
            any_ = any_ | t
        grants.append(requests[i] & any_)
    return grants


class _Source(wiring.Component):
    """One source's assembler: values in (one a beat), complete lines out to the arbiter.

    ``words`` False: tap values to codes in ``lanes`` nibbles a line; True: 16-bit words, ``lanes``
    words a line, passed unchanged. ``count`` values a sample; the pointer starts at
    ``first_line + offset`` and jumps ``stride - lines + 1`` past the sample's last line (with
    ``ring`` at ``start`` and ``ring_entries`` W: back to ``first_line + offset`` past every W-th)."""

    def __init__(self, params: HwParams, *, count: int, lanes: int, words: bool, offset: int, stride: int,
                 ring_entries: int = 0):
        self.params, self.count, self.lanes, self.words = params, count, lanes, words
        self.offset, self.stride, self.ring_entries = offset, stride, ring_entries
        self.lines = -(-count // lanes)
        p = params
        super().__init__({
            "i": In(stream.Signature(signed(VALUE_BITS))),
            "shift": In(SHIFT_BITS),
            "tap_signed": In(1),
            "start": In(1),
            "first_line": In(p.cache_addr_bits),
            "ring": In(1),                    # at start: entries wrap every ring_entries
            "grant": In(1),                   # the arbiter writes the held line this cycle
            "request": Out(1),                # a line is held next cycle (to the arbiter)
            "line": Out(p.beat_bits),         # the held line, its address, the sample's last line
            "addr": Out(p.cache_addr_bits),
            "last": Out(1),
            "next_last": Out(1),              # the next value taken is the sample's last
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        lanes, width = self.lanes, (16 if self.words else F.CODE_BITS)
        stall = Signal()
        run = ~stall
        # -- stage 0: the value's place (sample position, lane), counted at the edge it is taken
        pos = Signal(range(self.count))
        lane = Signal(range(lanes))
        last_of = pos == self.count - 1
        m.d.comb += self.next_last.eq(last_of)
        flush = last_of | (lane == lanes - 1)
        take = self.i.valid & run
        m.d.comb += self.i.ready.eq(run)
        with m.If(take):
            m.d.sync += [pos.eq(Mux(last_of, 0, pos + 1)), lane.eq(Mux(flush, 0, lane + 1))]
        # configuration, registered once: the saturated shift, the code range
        s = Signal(range(SHIFT_SAT + 1), reset_less=True)
        sgn = Signal(reset_less=True)
        m.d.sync += [s.eq(Mux(self.shift > SHIFT_SAT, SHIFT_SAT, self.shift)), sgn.eq(self.tap_signed)]
        # -- stages 1..3 (all hold while stalled) ---------------------------------------------------
        v1 = Signal(signed(VALUE_BITS), reset_less=True)
        flush1, flush2, flush3 = (Signal(name=f"flush{i}", reset_less=True) for i in (1, 2, 3))
        end1, end2, end3 = (Signal(name=f"end{i}", reset_less=True) for i in (1, 2, 3))
        valid1, valid2, valid3 = (Signal(name=f"valid{i}") for i in (1, 2, 3))
        t2 = Signal(signed(VALUE_BITS + 1), reset_less=True)   # 2 v >> s; the tail: v
        val3 = Signal(width, reset_less=True)                   # the code; the tail: the word
        with m.If(run):
            m.d.sync += [v1.eq(self.i.p), flush1.eq(flush), end1.eq(last_of), valid1.eq(take),
                         flush2.eq(flush1), end2.eq(end1), valid2.eq(valid1),
                         flush3.eq(flush2), end3.eq(end2), valid3.eq(valid2)]
            if self.words:
                m.d.sync += [t2.eq(v1), val3.eq(t2[:16])]
            else:
                m.d.sync += t2.eq((v1 << 1) >> s)
                # u = (t + 1) >> 1 = round_shift(v, s); saturate by comparing t (u > hi iff t > 2 hi,
                # u < lo iff t < 2 lo - 1); the code is u's low bits, (t + 1)'s bits 1..4
                half = 1 << (F.CODE_BITS - 1)
                over = Mux(sgn, t2 > 2 * (half - 1), t2 > 2 * (2 * half - 1))
                under = Mux(sgn, t2 < 2 * -half - 1, t2 < -1)
                u = (t2[:F.CODE_BITS + 1] + 1)[1:F.CODE_BITS + 1]
                hi = Mux(sgn, half - 1, 2 * half - 1)
                lo = Mux(sgn, half, 0)  # -half as 4 bits
                m.d.sync += val3.eq(Mux(over, hi, Mux(under, lo, u)))
        # -- stage 4: into the line; a complete line to the holding register ----------------------
        # The line is a shift register: each value enters at the top lane, so a full line holds its
        # first value in lane 0. A sample's last line of ``rem`` < lanes values goes to the holding
        # register shifted down to lanes 0..rem-1, zeros above (no lane decoder, nothing cleared).
        line = Signal(p.beat_bits, reset_less=True)
        shifted = Cat(line[width:], val3)
        rem = self.count - (self.lines - 1) * lanes
        merged = shifted
        if rem < lanes:
            short = Cat(shifted[width * (lanes - rem):], Const(0, width * (lanes - rem)))
            merged = Mux(end3, short, shifted)
        full = Signal()                        # the holding register holds a line
        completes = valid3 & flush3
        m.d.comb += stall.eq(completes & full & ~self.grant)
        load = completes & ~stall
        with m.If(valid3 & run):
            m.d.sync += line.eq(shifted)
        ptr = Signal(p.cache_addr_bits)
        held = Signal(p.beat_bits, reset_less=True)          # the holding register: line, address,
        held_addr = Signal(p.cache_addr_bits, reset_less=True)  # the sample's last line
        held_last = Signal(reset_less=True)
        m.d.comb += [self.line.eq(held), self.addr.eq(held_addr), self.last.eq(held_last)]
        step = ptr + Mux(end3, self.stride - self.lines + 1, 1)
        W = self.ring_entries
        if W:  # the ring: back to the first entry's line past the W-th (registered at start)
            first = Signal(p.cache_addr_bits, reset_less=True)
            ring = Signal()
            slot = Signal(range(W))
            wrap = Signal()
            m.d.comb += wrap.eq(ring & (slot == W - 1))
            with m.If(load & end3):
                m.d.sync += slot.eq(Mux(slot == W - 1, 0, slot + 1))
            step = Mux(end3 & wrap, first, step)
            with m.If(self.start):
                m.d.sync += [first.eq(self.first_line + self.offset), ring.eq(self.ring), slot.eq(0)]
        with m.If(load):
            m.d.sync += [held.eq(merged), held_addr.eq(ptr), held_last.eq(end3), ptr.eq(step)]
        m.d.comb += self.request.eq((full & ~self.grant) | load)
        m.d.sync += full.eq(self.request)
        with m.If(self.start):
            m.d.sync += [pos.eq(0), lane.eq(0), ptr.eq(self.first_line + self.offset)]
        return m


class CacheWriter(wiring.Component):
    def __init__(self, params: HwParams, geometry: Geometry | None = None, stride: int | None = None,
                 ring_entries: int = 0):
        self.params = require_params(self, params)
        p = params
        if geometry is None:
            geometry = p.model_geometry
        if not isinstance(geometry, Geometry):
            raise invalid(self, TypeError(f"geometry must be a Geometry, not {geometry!r}"))
        self.geometry = g = geometry
        self.layout = Layout(g, p.P)
        if g.taps > p.K or g.classes > p.C or self.layout.tap_lines > p.tap_lines:
            raise invalid(self, ValueError(f"entries of taps {g.dims} and {g.classes} classes do not fit the "
                                           f"build's {p.K} taps, {p.tap_lines} tap lines and {p.C} classes"))
        if stride is None:
            stride = self.layout.sample_lines
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < self.layout.sample_lines:
            raise invalid(self, ValueError(f"stride must be an int of at least the entry's "
                                           f"{self.layout.sample_lines} lines, not {stride!r}"))
        self.stride = stride
        if isinstance(ring_entries, bool) or not isinstance(ring_entries, int) or ring_entries < 0:
            raise invalid(self, ValueError(f"ring_entries must be a non-negative int, not {ring_entries!r}"))
        self.ring_entries = ring_entries
        super().__init__({
            "taps": In(stream.Signature(signed(VALUE_BITS))).array(g.taps),  # tap k's values, sample by sample
            "logits": In(stream.Signature(signed(VALUE_BITS))),      # C base logits a sample
            "label": In(stream.Signature(F.LABEL_BITS)),              # a sample's label, early (queued)
            "shift": In(SHIFT_BITS).array(g.taps),      # per tap: e_k - frac_k (configuration)
            "tap_signed": In(1).array(g.taps),          # per tap: codes -8..7, else 0..15
            "start": In(1),                             # a fill begins: entry 0 at first_line
            "first_line": In(p.cache_addr_bits),
            "ring": In(1),                              # at start: entry n at first_line + (n mod W) * stride
            "write": In(write_port(p.cache_addr_bits, p.beat_bits)),
            "entries": Out(16),                         # entries completely written since start
            "done": Out(1),                             # one-cycle pulse: entries incremented
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        g, layout = self.geometry, self.layout  # the entries' own layout (a build with maxima runs others)
        S, K = self.stride, g.taps
        offsets = [sum(layout.lines_per_tap[:k]) for k in range(K)] + [layout.tap_lines]
        sources = []
        for k in range(K + 1):
            tail = k == K
            src = _Source(p, count=g.classes + 1 if tail else g.dims[k], words=tail,
                          lanes=p.words_per_beat if tail else p.P, offset=offsets[k], stride=S,
                          ring_entries=self.ring_entries)
            m.submodules["tail" if tail else f"tap{k}"] = src
            m.d.comb += [src.start.eq(self.start), src.first_line.eq(self.first_line), src.ring.eq(self.ring)]
            if not tail:
                wiring.connect(m, wiring.flipped(self.taps[k]), src.i)
                m.d.comb += [src.shift.eq(self.shift[k]), src.tap_signed.eq(self.tap_signed[k])]
            sources.append(src)
        # -- the tail: C logits, then the label from the queue ---------------------------------------
        tail = sources[K]
        m.submodules.labels = labels = SyncFIFOBuffered(width=F.LABEL_BITS, depth=LABEL_DEPTH)
        m.d.comb += [labels.w_data.eq(self.label.p), labels.w_en.eq(self.label.valid),
                     self.label.ready.eq(labels.w_rdy)]
        at_label = tail.next_last              # the tail's next value is the label
        m.d.comb += [tail.i.valid.eq(Mux(at_label, labels.r_rdy, self.logits.valid)),
                     tail.i.p.eq(Mux(at_label, labels.r_data, self.logits.p)),
                     self.logits.ready.eq(tail.i.ready & ~at_label),
                     labels.r_en.eq(tail.i.ready & at_label)]
        # -- the arbiter: one line a cycle, round robin -------------------------------------------------
        # The tail goes first, the taps round robin: an entry's last line is the tail's, and a
        # tail line never waits, so the tail never stalls and ``done`` never waits for another
        # source's line (the PL fill's cycle model is exact). The tail's lines are few (C + 1
        # values an entry), so in a fill it cannot starve the taps.
        n = len(sources)
        grant = Signal(n)                      # one-hot: whose held line is written this cycle
        prio = Signal(K, init=1)               # one-hot: which tap goes first next
        urgent = tail.request
        rr = _round_robin([s.request for s in sources[:K]], prio)
        nxt = Cat(*[g & ~urgent for g in rr], urgent)
        m.d.comb += [s.grant.eq(grant[i]) for i, s in enumerate(sources)]
        m.d.sync += grant.eq(nxt)
        with m.If(grant[:K].any()):  # the tap after the one being written goes first (a cycle later)
            m.d.sync += prio.eq(Cat(grant[K - 1], grant[:K - 1]))
        wr = self.write
        data = Const(0, p.beat_bits)
        addr = Const(0, p.cache_addr_bits)
        for i, s in enumerate(sources):
            data = data | Mux(grant[i], s.line, 0)
            addr = addr | Mux(grant[i], s.addr, 0)
        wdata = Signal(p.beat_bits, reset_less=True)
        waddr = Signal(p.cache_addr_bits, reset_less=True)
        wen = Signal()
        m.d.sync += [wdata.eq(data), waddr.eq(addr), wen.eq(grant.any())]
        m.d.comb += [wr.data.eq(wdata), wr.addr.eq(waddr), wr.en.eq(wen)]
        # -- entries: a credit per source and finished sample; all nonzero -> one more entry ---------
        every = Signal()                       # every source has a finished sample not yet counted
        credits = []
        for i, s in enumerate(sources):
            c = Signal(p.sample_bits, name=f"credit{i}")
            up = grant[i] & s.last
            m.d.sync += c.eq(c + up - every)
            credits.append(c)
        all_nonzero = credits[0] != 0
        for c in credits[1:]:
            all_nonzero = all_nonzero & (c != 0)
        m.d.sync += [every.eq(all_nonzero & ~every), self.done.eq(every), self.entries.eq(self.entries + every)]
        with m.If(self.start):
            m.d.sync += [every.eq(0), self.entries.eq(0)] + [c.eq(0) for c in credits]
        return m
