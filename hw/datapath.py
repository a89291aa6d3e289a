"""The line pipeline: every cycle the sequencer issues one line of one pass, and this runs it.

A line op names a pass (``Op``), a line of the sample (0..S-1) and the sample's cache address.

* ``FWD``  forward pass of adapter k over its lines:  u_k = sat(round(sum_lines A_k q >> (4 - e_k)))
           (tail lines instead deliver the base logits z and the label to the head unit)
* ``BWD``  backward pass of adapter k:  dA_k[r, j] += t_k[r] * q_j  (read-modify-write of the dA line)
* ``UPD``  SGD update of an A line:    A = sat(A - round(dA >> 8)), dA = 0
* ``CLR``  dA = 0 (job start)

Stages: c0 issue (memory addresses) -> c1 memory data, products -> c2 dA/A write, lane sums ->
c3 accumulate over a tap's lines -> c4 u_k final. ``sample_done`` pulses in the c4 cycle of a
forward pass's last line, when u, z and the label are all valid.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Signal, signed
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .arith import round_shift_var, saturate
from .mac_array import MacArray
from .params import HwParams, require_params
from .sgd_update import SgdUpdate, accumulator_start

__all__ = ["Datapath", "Op"]


class Op(enum.Enum, shape=2):
    FWD = 0
    BWD = 1
    UPD = 2
    CLR = 3


class Datapath(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        abits = p.line_bits
        super().__init__({
            # issue, from the sequencer
            "issue_valid": In(1),
            "issue_op": In(Op),
            "issue_line": In(p.line_addr_bits),
            "issue_base": In(p.cache_addr_bits),   # cache address of the sample's first line
            "issue_last": In(1),                   # last line of this pass
            "issue_epoch_first": In(1),
            "t_take": In(1),                       # copy the head's t into the backward operand
            # per-tap configuration
            "tap_signed": In(1).array(p.K),
            "u_shift": In(6).array(p.K),
            # to and from the head unit
            "u": Out(signed(F.U_BITS)).array(p.K, p.R),
            "z": Out(signed(F.Z_BITS)).array(p.C),
            "label": Out(F.LABEL_BITS),
            "sample_done": Out(1),
            "epoch_first": Out(1),
            "t_next": In(signed(F.T_BITS)).array(p.K, p.R),
            # memories
            "cache_addr": Out(p.cache_addr_bits),
            "cache_data": In(p.beat_bits),
            "a_rd_addr": Out(abits), "a_rd_data": In(p.a_line_bits),
            "a_wr_addr": Out(abits), "a_wr_data": Out(p.a_line_bits), "a_wr_en": Out(1),
            "g_rd_addr": Out(abits), "g_rd_data": In(p.R * p.P * p.da_bits),
            "g_wr_addr": Out(abits), "g_wr_data": Out(p.R * p.P * p.da_bits), "g_wr_en": Out(1),
        })

    def _meta(self, m, name):
        p = self.params
        kbits = max(p.K.bit_length(), 1)
        return {
            "valid": Signal(name=f"{name}_valid"), "op": Signal(Op, name=f"{name}_op"),
            "line": Signal(p.line_addr_bits, name=f"{name}_line"), "k": Signal(kbits, name=f"{name}_k"),
            "tail": Signal(name=f"{name}_tail"), "first": Signal(name=f"{name}_first"),
            "lastk": Signal(name=f"{name}_lastk"), "last": Signal(name=f"{name}_last"),
            "ef": Signal(name=f"{name}_ef"),
        }

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.mac = mac = MacArray(p)
        m.submodules.upd = upd = SgdUpdate(p.R * p.P, p.da_bits, F.T_FRAC - F.A_FRAC)
        da_start = accumulator_start(F.T_FRAC - F.A_FRAC)

        # -- c0: line -> tap, first/last line of the tap, tail line ----------------------------
        m0 = self._meta(m, "m0")
        m.d.comb += [m0["valid"].eq(self.issue_valid), m0["op"].eq(self.issue_op),
                     m0["line"].eq(self.issue_line), m0["last"].eq(self.issue_last),
                     m0["ef"].eq(self.issue_epoch_first)]
        with m.Switch(self.issue_line):
            for line in range(p.S):
                with m.Case(line):
                    if line < p.SL:
                        k = p.tap_of_line[line]
                        first = p.first_line_of_tap[k]
                        m.d.comb += [m0["k"].eq(k), m0["first"].eq(line == first),
                                     m0["lastk"].eq(line == first + p.lines_per_tap[k] - 1)]
                    else:
                        m.d.comb += m0["tail"].eq(1)
        m.d.comb += [self.cache_addr.eq(self.issue_base + self.issue_line),
                     self.a_rd_addr.eq(self.issue_line), self.g_rd_addr.eq(self.issue_line)]
        stages = [m0] + [self._meta(m, f"m{i}") for i in range(1, 5)]
        for prev, cur in zip(stages, stages[1:]):
            m.d.sync += [cur[key].eq(prev[key]) for key in cur]
        m1, m2, m3, m4 = stages[1:]

        # -- c1: memory data; products; the update's arithmetic ---------------------------------
        # t_cur holds -t_k: the dA accumulators count down (see sgd_update.accumulator_start).
        t_cur = [[Signal(signed(F.T_BITS + 1), name=f"tcur{k}_{r}") for r in range(p.R)] for k in range(p.K)]
        with m.If(self.t_take):
            m.d.sync += [t_cur[k][r].eq(-self.t_next[k][r]) for k in range(p.K) for r in range(p.R)]
        t_rows = Array(Array(row) for row in t_cur)
        signed_tap = Array(self.tap_signed)
        m.d.comb += [
            mac.codes.eq(self.cache_data), mac.signed_codes.eq(signed_tap[m1["k"]]),
            mac.a_line.eq(self.a_rd_data), mac.acc.eq(self.g_rd_data),
            upd.weights.eq(self.a_rd_data), upd.accs.eq(self.g_rd_data),
        ]
        m.d.comb += [mac.t[r].eq(t_rows[m1["k"]][r]) for r in range(p.R)]

        # Tail lines carry the base logits (16 bits each) then the label, little-endian.
        tail_index = Signal(range(max(p.T, 2)))
        m.d.comb += tail_index.eq(m1["line"] - p.SL)
        fields = [(self.z[c], c) for c in range(p.C)] + [(self.label, p.C)]
        with m.If(m1["valid"] & m1["tail"] & (m1["op"] == Op.FWD)):
            for sig, i in fields:
                line, bit = divmod(16 * i, p.beat_bits)
                with m.If(tail_index == line):
                    m.d.sync += sig.eq(self.cache_data[bit:bit + 16])

        # -- c2: backward pass and update write back --------------------------------------------
        # The backward pass of adapter k: the MAC array added -t_k[r] * q_j to each dA accumulator.
        start_line = Cat(*[Const(da_start, signed(p.da_bits))] * (p.R * p.P))
        m.d.comb += [self.g_wr_addr.eq(m2["line"]), self.a_wr_addr.eq(m2["line"]),
                     self.a_wr_data.eq(upd.updated)]
        with m.If(m2["valid"]):
            with m.Switch(m2["op"]):
                with m.Case(Op.BWD):
                    m.d.comb += [self.g_wr_data.eq(mac.acc_next), self.g_wr_en.eq(1)]
                with m.Case(Op.UPD):
                    m.d.comb += [self.g_wr_data.eq(start_line), self.g_wr_en.eq(1), self.a_wr_en.eq(1)]
                with m.Case(Op.CLR):
                    m.d.comb += [self.g_wr_data.eq(start_line), self.g_wr_en.eq(1)]

        # -- c3: accumulate a tap's lines; c4: u_k = sat(round(acc >> (4 - e_k))) ---------------
        acc = [Signal(signed(p.u_acc_bits), name=f"uacc{r}") for r in range(p.R)]
        with m.If(m3["valid"] & (m3["op"] == Op.FWD) & ~m3["tail"]):
            for r in range(p.R):
                m.d.sync += acc[r].eq(mac.sums[r] + (acc[r] & ~m3["first"].replicate(p.u_acc_bits)).as_signed())
        shift = Signal(6)
        m.d.comb += shift.eq(Array(self.u_shift)[m4["k"]])
        fwd4 = m4["valid"] & (m4["op"] == Op.FWD)
        u_new = [saturate(m, round_shift_var(m, acc[r], shift, p.u_acc_bits, f"ush{r}"), F.U_BITS, f"usat{r}")
                 for r in range(p.R)]
        with m.If(fwd4 & ~m4["tail"] & m4["lastk"]):
            with m.Switch(m4["k"]):
                for k in range(p.K):
                    with m.Case(k):
                        m.d.sync += [self.u[k][r].eq(u_new[r]) for r in range(p.R)]
        m.d.comb += [self.sample_done.eq(fwd4 & m4["last"]), self.epoch_first.eq(m4["ef"])]
        return m
