"""The line pipeline: every cycle the sequencer issues one line op, and this runs it.

An op names a pass (`Op`), a line of a sample (0 .. sample_lines-1), the sample's cache address
and its slot in the mini-batch:

* ``FWD``  the forward pass of a sample, line by line: u_k = sat(round(sum_lines A_k q >> (4 - e_k)))
           (tail lines instead deliver the base logits z and the label to the head unit);
* ``BWD``  the backward pass, line-major: for a line of A, every sample j of the batch in turn adds
           t_jk[r] * q_j to the line's accumulators (the DSPs' P registers), so after the batch's
           last sample the accumulators hold the line's exact gradient sum dA_k (Q22), which goes
           to the optimizer with the line's weights, read again from the A memory.

Stages (one register after every step; `cycles.Timing` counts them):
c0 issue: addresses | c1 memory read | c2 memory output register | c3 codes decoded (q), A words,
t factors: the DSP input registers | c4 DSP M | c5 DSP P (BWD: the accumulator, handed to the
optimizer in this cycle) | FWD: c6.. the sum over the P lanes (tree) | the sum over a tap's lines |
round-shift | saturate: u_k.
``sample_done`` pulses `cycles.fwd_latency` cycles after a sample's last line was issued, with
u, z, the label, the slot and the epoch-first flag valid; ``a_line`` pulses `cycles.BWD_LATENCY`
cycles after a line's last BWD op.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .params import HwParams, require_params
from .pipeline import delay, tree_levels, tree_sum

__all__ = ["Datapath", "Op", "issue_layout", "issue_signature", "FWD_MAC_STAGES"]

FWD_MAC_STAGES = 5  # c1 read, c2 output register, c3 DSP inputs, c4 M, c5 P


class Op(enum.Enum, shape=1):
    FWD = 0
    BWD = 1


def issue_layout(p: HwParams) -> data.StructLayout:
    return data.StructLayout({
        "op": Op, "line": p.line_addr_bits, "base": p.cache_addr_bits, "slot": p.slot_bits,
        "first": 1,         # FWD: unused (taps restart on their own first line); BWD: the line's first sample
        "last": 1,          # FWD: the sample's last line; BWD: the line's last sample
        "epoch_first": 1,   # FWD: the epoch's first sample
    })


def issue_signature(p: HwParams) -> stream.Signature:
    """The sequencer -> datapath issue stream: one op per cycle, never back-pressured."""
    return stream.Signature(issue_layout(p), always_ready=True)


class Datapath(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        super().__init__({
            "issue": In(issue_signature(p)),
            # per-tap configuration, registered at the job's start
            "tap_signed": In(1).array(p.K),
            "u_shift": In(6).array(p.K),
            # memories (registered reads, `memories.READ_LATENCY`)
            "cache_addr": Out(p.cache_addr_bits), "cache_data": In(p.beat_bits),
            "a_rd_addr": Out(p.line_bits), "a_rd_data": In(p.a_line_bits),
            "t_rd_addr": Out(p.slot_bits + p.tap_bits), "t_rd_data": In(p.R * F.T_BITS),
            # a sample to the head unit
            "sample_done": Out(1),
            "u": Out(signed(F.U_BITS)).array(p.K, p.R),
            "z": Out(signed(F.Z_BITS)).array(p.C),
            "label": Out(F.LABEL_BITS),
            "slot": Out(p.slot_bits),
            "epoch_first": Out(1),
            # a line of A to the optimizer
            "a_line": Out(1),
            "a_line_index": Out(p.line_bits),
            "a_grad": Out(p.a_words * p.da_bits),
            "a_weights": Out(p.a_line_bits),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        R, P, K = p.R, p.P, p.K
        iss = self.issue

        # -- c0: addresses, the line's tap --------------------------------------------------------
        tap0, tapfirst0, taplast0, tail0 = Signal(p.tap_bits), Signal(), Signal(), Signal()
        with m.Switch(iss.p.line):
            for line in range(p.sample_lines):
                with m.Case(line):
                    if line < p.tap_lines:
                        k = p.tap_of_line[line]
                        first = p.first_line_of_tap[k]
                        m.d.comb += [tap0.eq(k), tapfirst0.eq(line == first),
                                     taplast0.eq(line == first + p.lines_per_tap[k] - 1)]
                    else:
                        m.d.comb += tail0.eq(1)
        m.d.comb += [self.cache_addr.eq(iss.p.base + iss.p.line), self.t_rd_addr.eq(Cat(tap0, iss.p.slot))]
        fwd0 = iss.valid & (iss.p.op == Op.FWD)
        bwd0 = iss.valid & (iss.p.op == Op.BWD)
        # The A memory: FWD reads the line at c0; BWD reads it at c3 of the line's last op, so the
        # weights arrive with the finished accumulators at c5.
        bwd_last3 = delay(m, bwd0 & iss.p.last, 3, "bwd_last", reset_less=False)
        line3 = delay(m, iss.p.line, 3, "line")
        m.d.comb += self.a_rd_addr.eq(Mux(bwd_last3, line3, iss.p.line))

        # -- c1..c3: meta data along the pipeline; the tap's signedness at c2 ------------------------
        depth = 5 + tree_levels(P) + 4
        fwd = [fwd0] + [None] * depth
        for i in range(1, depth + 1):
            fwd[i] = delay(m, fwd[i - 1], 1, f"fwd{i}", reset_less=False)
        tap1 = delay(m, tap0, 1, "tap1")
        sgn2 = Signal(reset_less=True)
        m.d.sync += sgn2.eq(Array(self.tap_signed)[tap1])
        bwd4 = delay(m, bwd0, 4, "bwd4", reset_less=False)
        first4 = delay(m, iss.p.first, 4, "first")
        last = delay(m, iss.p.last, 1, "last")
        tail = delay(m, tail0, 1, "tail")
        line2 = delay(m, iss.p.line, 2, "lin")

        # -- c3: the DSP inputs: decoded codes q, A words, t factors ---------------------------------
        q3 = [Signal(signed(p.code_bits), name=f"q{j}", reset_less=True) for j in range(P)]
        for j in range(P):
            raw = self.cache_data[4 * j:4 * j + 4]
            m.d.sync += q3[j].eq(Mux(sgn2, raw.as_signed(), raw.as_unsigned()))
        a3 = [Signal(signed(F.W_BITS), name=f"a{i}", reset_less=True) for i in range(R * P)]
        m.d.sync += [a3[i].eq(self.a_rd_data[i * F.W_BITS:(i + 1) * F.W_BITS].as_signed()) for i in range(R * P)]
        t3 = [Signal(signed(F.T_BITS), name=f"t{r}", reset_less=True) for r in range(R)]
        m.d.sync += [t3[r].eq(self.t_rd_data[r * F.T_BITS:(r + 1) * F.T_BITS].as_signed()) for r in range(R)]
        # Tail lines carry the base logits (16 bits each) then the label, little-endian.
        tail2 = delay(m, tail, 1, "tail2")
        fields = [(self.z[c], c) for c in range(p.C)] + [(self.label, p.C)]
        with m.If(fwd[2] & tail2):
            for sig, i in fields:
                line, bit = divmod(16 * i, p.beat_bits)
                with m.If(line2 == p.tap_lines + line):
                    m.d.sync += sig.eq(self.cache_data[bit:bit + 16])

        # -- c4 (M) and c5 (P): forward products; backward products accumulated ------------------
        prod_bits = F.W_BITS + p.code_bits
        pf4 = [[Signal(signed(prod_bits), name=f"pf{r}_{j}", reset_less=True) for j in range(P)] for r in range(R)]
        m.d.sync += [pf4[r][j].eq(a3[r * P + j] * q3[j]) for r in range(R) for j in range(P)]
        pf5 = [[delay(m, pf4[r][j], 1, f"pfp{r}_{j}") for j in range(P)] for r in range(R)]
        pb4 = [[Signal(signed(F.T_BITS + p.code_bits), name=f"pb{r}_{j}", reset_less=True) for j in range(P)]
               for r in range(R)]
        m.d.sync += [pb4[r][j].eq(t3[r] * q3[j]) for r in range(R) for j in range(P)]
        acc = [[Signal(signed(p.da_bits), name=f"acc{r}_{j}", reset_less=True) for j in range(P)] for r in range(R)]
        with m.If(bwd4):
            m.d.sync += [acc[r][j].eq(Mux(first4, 0, acc[r][j]) + pb4[r][j]) for r in range(R) for j in range(P)]

        # -- c5: a finished line of dA (the next line's first op overwrites it at c5's end), with its
        # weights, to the optimizer
        a_line = delay(m, bwd_last3, 2, "a_line", reset_less=False)
        m.d.comb += [self.a_line.eq(a_line), self.a_line_index.eq(delay(m, line3, 2, "a_line_index")),
                     self.a_grad.eq(Cat(acc[r][j] for r in range(R) for j in range(P))),
                     self.a_weights.eq(self.a_rd_data)]

        # -- c6..: the forward sums over the lanes, over a tap's lines, rounded and saturated -------
        sum_bits = prod_bits + tree_levels(P) + 1
        sums = [tree_sum(m, pf5[r], sum_bits, f"lane{r}")[0] for r in range(R)]
        lv = 5 + tree_levels(P)  # the stage the lane sums are valid at
        fwd_t, tap_t = fwd[lv], delay(m, tap0, lv, "tapt")
        tail_t = delay(m, tail0, lv, "tailt")
        tf_t, tl_t = delay(m, tapfirst0, lv, "tft"), delay(m, taplast0, lv, "tlt")
        uacc = [Signal(signed(p.u_acc_bits), name=f"uacc{r}", reset_less=True) for r in range(R)]
        with m.If(fwd_t & ~tail_t):
            m.d.sync += [uacc[r].eq(Mux(tf_t, 0, uacc[r]) + sums[r]) for r in range(R)]
        self._probe = dict(fwd_t=fwd_t, tail_t=tail_t, tf_t=tf_t, tl_t=tl_t, uacc0=uacc[0], sum0=sums[0], q0=q3[0], a0=a3[0])
        # round_half_up(x >> s) = ((2x >> s) + 1) >> 1, s = u_shift of the tap
        tap_a, last_a = delay(m, tap_t, 1, "tapa"), delay(m, fwd_t & ~tail_t & tl_t, 1, "lasta", reset_less=False)
        shift = Signal(6, reset_less=True)  # the tap's shift, selected with tap_a's register
        m.d.sync += shift.eq(Array(self.u_shift)[tap_t])
        ush = [Signal(signed(p.u_acc_bits + 1), name=f"ush{r}", reset_less=True) for r in range(R)]
        m.d.sync += [ush[r].eq((uacc[r] << 1) >> shift) for r in range(R)]
        tap_b, last_b = delay(m, tap_a, 1, "tapb"), delay(m, last_a, 1, "lastb", reset_less=False)
        ulo, uhi = -(1 << (F.U_BITS - 1)), (1 << (F.U_BITS - 1)) - 1
        for r in range(R):
            ur = Signal(signed(p.u_acc_bits + 1), name=f"ur{r}")
            m.d.comb += ur.eq((ush[r] + 1) >> 1)
            with m.If(last_b):
                with m.Switch(tap_b):
                    for k in range(K):
                        with m.Case(k):
                            m.d.sync += self.u[k][r].eq(Mux(ur > uhi, uhi, Mux(ur < ulo, ulo, ur)))
        # the sample is done when its last line has passed the u stages
        done_stage = lv + 3
        m.d.comb += self.sample_done.eq(fwd[done_stage] & delay(m, last, done_stage - 1, "lastd"))
        m.d.comb += [self.slot.eq(delay(m, iss.p.slot, done_stage, "slotd")),
                     self.epoch_first.eq(delay(m, iss.p.epoch_first, done_stage, "efd"))]
        return m
