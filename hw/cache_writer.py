"""The cache writer: a sample's tap values in, its 4-bit cache entry out, line by line into the cache.

The PL forward engine (issue 15) produces each sample's taps — the input of every adapted layer,
as the integer base's activations (`skip2lora.fixed.base_int`) — and its base logits. This block
turns them into the cache entry the host would have streamed (`skip2lora.fixed.packing`), bit for
bit:

* ``values`` carries one integer a beat, in the entry's order: tap 0's d_0 activations, tap 1's,
  ..., then the C base logits (Z format), then the label;
* a tap value becomes its code ``clip(round_shift(v, shift_k), code range)`` — ``shift_k`` is
  e_k - frac_k (the cache exponent over the activation's LSB exponent: `IntBase.codes`), the code
  range 0..15 or -8..7 by ``tap_signed[k]`` (`quantize.code_range`) — and lands in its lane of the
  tap's current line (``lanes`` 4-bit codes a line, a tap's last line zero padded);
* the logits and the label land as 16-bit little-endian words in the tail lines, zero padded;
* each line is written through ``write`` (the cache's write port) when it is complete, at
  ``first_line`` (taken at ``start``) and the lines after it, entry after entry; ``done`` pulses
  with an entry's last line.

One value a cycle, never back-pressured (a line is written at most once a cycle). Pipeline: the
value and its tap's shift and half LSB registered | + half | >> shift | saturate to the code |
into the line register | the write (every step one register stage, `LATENCY`).
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from ..fixed import forward_cycles as FC
from .params import HwParams, require_params
from .pipeline import delay
from .ports import write_port

__all__ = ["CacheWriter", "VALUE_BITS", "SHIFT_BITS", "SHIFT_SAT", "LATENCY"]

VALUE_BITS = F.Z_BITS   # the widest value: a Q8 int16 logit (activations are 8-bit, the label small)
SHIFT_BITS = 5          # a tap's e_k - frac_k: 0..31 (an int16 shifted by 17 or more is its sign)
SHIFT_SAT = VALUE_BITS + 1  # round_shift(v, s) of an int16 is 0 for every s >= 17: shifts saturate here
LATENCY = FC.WRITER_LATENCY  # a value accepted -> its line written (when it completes the line)


class CacheWriter(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        super().__init__({
            "values": In(stream.Signature(signed(VALUE_BITS))),
            "shift": In(SHIFT_BITS).array(p.K),     # per tap: e_k - frac_k (configuration)
            "tap_signed": In(1).array(p.K),         # per tap: codes -8..7, else 0..15
            "start": In(1),                         # first_line is the next entry's first line
            "first_line": In(p.cache_addr_bits),
            "write": In(write_port(p.cache_addr_bits, p.beat_bits)),
            "done": Out(1),                         # one-cycle pulse: an entry's last line written
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        g = p.model_geometry  # the model the entries are of (a build with maxima runs others too)
        K, P, C = g.taps, p.P, g.classes
        words = p.beat_bits // 16              # 16-bit words a tail line
        # -- where the accepted value goes: tap k (or the tail), its position --------------------
        # counters in the entry's order; every decision below compares them with constants
        tap = Signal(range(K + 1))             # K: the tail (logits, then the label)
        pos = Signal(range(max(max(g.dims), C + 1) + 1))  # position in the tap, or in the tail
        lane = Signal(range(max(P, words)))    # lane of the current line (a tail word in the tail)
        ends = Array(Const(e, len(pos)) for e in [d - 1 for d in g.dims] + [C])  # the tail: C logits, the label
        tail = tap == K
        last_of_tap = pos == ends[tap]
        line_full = Mux(tail, lane == words - 1, lane == P - 1)
        take = self.values.valid           # always ready: one value a cycle
        m.d.comb += self.values.ready.eq(1)
        with m.If(take):
            m.d.sync += [pos.eq(pos + 1), lane.eq(lane + 1)]
            with m.If(line_full | last_of_tap):
                m.d.sync += lane.eq(0)
            with m.If(last_of_tap):
                m.d.sync += pos.eq(0)
                m.d.sync += tap.eq(Mux(tail, 0, tap + 1))

        # -- stage 1: the value, its tap's shift and half LSB, its place ---------------------------
        v1 = Signal(signed(VALUE_BITS), reset_less=True)
        s1 = Signal(range(SHIFT_SAT + 1), reset_less=True)
        half1 = Signal(VALUE_BITS + 1, reset_less=True)
        sgn1, tail1 = Signal(reset_less=True), Signal(reset_less=True)
        lane1 = Signal.like(lane, reset_less=True)
        flush1, end1, valid1 = Signal(reset_less=True), Signal(reset_less=True), Signal()
        # (in the tail: any tap's, unused); above SHIFT_SAT every 16-bit value rounds to 0 alike
        shift_k = Signal(range(SHIFT_SAT + 1))
        m.d.comb += shift_k.eq(Mux(Array(self.shift)[tap] > SHIFT_SAT, SHIFT_SAT, Array(self.shift)[tap]))
        m.d.sync += [v1.eq(self.values.p), s1.eq(shift_k), sgn1.eq(Array(self.tap_signed)[tap]), tail1.eq(tail),
                     half1.eq((Const(1, VALUE_BITS + 2) << shift_k) >> 1),
                     lane1.eq(lane), flush1.eq(line_full | last_of_tap), end1.eq(tail & (pos == C)),
                     valid1.eq(take)]
        # -- stage 2: + half; stage 3: >> shift; stage 4: saturate to the code ----------------------
        sum2 = Signal(signed(VALUE_BITS + 2), reset_less=True)
        m.d.sync += sum2.eq(v1 + half1)
        sh3 = Signal(signed(VALUE_BITS + 2), reset_less=True)
        m.d.sync += sh3.eq(sum2 >> delay(m, s1, 1, "s2"))
        sgn3 = delay(m, sgn1, 2, "sgn")
        raw4 = delay(m, v1, 3, "raw")     # a tail word passes unchanged (stage 4, beside the code)
        code4 = Signal(4, reset_less=True)
        lo = Mux(sgn3, -(1 << (F.CODE_BITS - 1)), 0)
        hi = Mux(sgn3, (1 << (F.CODE_BITS - 1)) - 1, (1 << F.CODE_BITS) - 1)
        m.d.sync += code4.eq(Mux(sh3 < lo, lo, Mux(sh3 > hi, hi, sh3))[:4])
        tail4, lane4 = delay(m, tail1, 3, "tail"), delay(m, lane1, 3, "lane")
        flush4, end4 = delay(m, flush1, 3, "flush"), delay(m, end1, 3, "end")
        valid4 = delay(m, valid1, 3, "valid", reset_less=False)
        # -- stage 5: into the line register (a nibble or a 16-bit word); a complete line to the write
        line = Signal(p.beat_bits, reset_less=True)
        merged = Signal(p.beat_bits)
        m.d.comb += merged.eq(line)
        with m.If(valid4):
            with m.If(tail4):
                with m.Switch(lane4):
                    for i in range(words):
                        with m.Case(i):
                            m.d.comb += merged[16 * i:16 * i + 16].eq(raw4[:16])
            with m.Else():
                with m.Switch(lane4):
                    for i in range(P):
                        with m.Case(i):
                            m.d.comb += merged[4 * i:4 * i + 4].eq(code4)
            m.d.sync += line.eq(Mux(flush4, 0, merged))
        ptr = Signal(p.cache_addr_bits)
        wr = self.write
        m.d.sync += [wr.en.eq(valid4 & flush4), wr.data.eq(merged), wr.addr.eq(ptr), self.done.eq(valid4 & end4)]
        with m.If(valid4 & flush4):
            m.d.sync += ptr.eq(ptr + 1)
        with m.If(self.start):
            m.d.sync += [ptr.eq(self.first_line), tap.eq(0), pos.eq(0), lane.eq(0)]
        return m
