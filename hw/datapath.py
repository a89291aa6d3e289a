"""The line pipeline: every cycle the sequencer issues one line op, and this runs it.

An op names a pass (`Op`), a line of a sample (0 .. sample_lines-1), and a PAIR of samples of the
mini-batch (slots 2i and 2i+1, `cycles.PASS_SAMPLES`): their cache addresses (the cache's two read
ports), the pair's index and whether its second sample is present (``odd``; an odd batch's last
pair has none):

* ``FWD``  the forward pass of both samples, line by line: one read of the line of A feeds both
           samples' products, u_k = sat(round(sum_lines A_k q >> (4 - e_k))) per sample
           (tail lines instead deliver each sample's base logits z and label to its head unit);
* ``BWD``  the backward pass, line-major: for a line of A, every pair of the batch in turn adds
           t_2i,k[r] * q_2i + t_2i+1,k[r] * q_2i+1 to the line's accumulators (t = 0 for an absent
           second sample), so after the batch's last pair the accumulators hold the line's exact
           gradient sum dA_k (Q22), which goes to the optimizer with the line's weights, read again
           from the A memory.

Stages (one register after every step; `cycles.Timing` counts them):
c0 issue: addresses | c1 memory read | c2 memory output register | c3 codes decoded (q), A words,
t factors: the DSP input registers | c4 DSP M | c5 DSP P (FWD); BWD: the pair's two products
summed | c6 BWD: the accumulator, handed to the optimizer in this cycle | FWD: the sum over the P
lanes (tree) | the sum over a tap's lines | round-shift | + 1 (the rounding) | saturate: u_k.
``pairs`` (`pair_signature`) is valid `cycles.fwd_latency` cycles after a pair's last line was
issued, with both samples' u, z, labels, the pair, ``odd`` and the epoch-first flag; ``a_lines``
(`optimizer.a_line_signature`) is valid `cycles.BWD_LATENCY` cycles after a line's last BWD op.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .optimizer import a_line_signature
from .geometry_unit import line_info_layout
from .params import HwParams, bits_for, require_params
from .pipeline import delay, tree_levels, tree_sum
from .ports import read_port, write_port

__all__ = ["Datapath", "Op", "issue_layout", "issue_signature", "pair_layout", "pair_signature", "FWD_MAC_STAGES"]

FWD_MAC_STAGES = 5  # c1 read, c2 output register, c3 DSP inputs, c4 M, c5 P


class Op(enum.Enum, shape=1):
    FWD = 0
    BWD = 1


def issue_layout(p: HwParams) -> data.StructLayout:
    return data.StructLayout({
        "op": Op, "line": p.line_addr_bits,
        "base": data.ArrayLayout(p.cache_addr_bits, p.pair),  # the pair's cache addresses
        "pair": p.pair_bits,
        "odd": 1,           # the pair's second sample is present
        "first": 1,         # FWD: unused (taps restart on their own first line); BWD: the line's first pair
        "last": 1,          # FWD: the pair's last line; BWD: the line's last pair
        "epoch_first": 1,   # FWD: the epoch's first pair
    })


def issue_signature(p: HwParams) -> stream.Signature:
    """The sequencer -> datapath issue stream: one op per cycle, never back-pressured."""
    return stream.Signature(issue_layout(p), always_ready=True)


def pair_layout(p: HwParams) -> data.StructLayout:
    """A sample pair's forward results: u_k, the base logits z and the label of each sample
    (even slot, odd slot), the pair's index in the batch, whether its odd sample is present."""
    return data.StructLayout({
        "u": data.ArrayLayout(data.ArrayLayout(data.ArrayLayout(signed(F.U_BITS), p.R), p.K), p.pair),
        "z": data.ArrayLayout(data.ArrayLayout(signed(F.Z_BITS), p.C), p.pair),
        "label": data.ArrayLayout(F.LABEL_BITS, p.pair),
        "pair": p.pair_bits,
        "odd": 1,
        "epoch_first": 1,   # the epoch's first pair: the statistics restart
    })


def pair_signature(p: HwParams) -> stream.Signature:
    """The datapath -> head units stream: a pair per ``valid`` pulse (the units are free by then:
    the sequencer spaces the pairs, `cycles.Timing.f_gap`), never back-pressured."""
    return stream.Signature(pair_layout(p), always_ready=True)


class Datapath(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        super().__init__({
            "issue": In(issue_signature(p)),
            # per-tap configuration, registered at the job's start
            "tap_signed": In(1).array(p.K),
            "u_shift": In(6).array(p.K),
            # the job's geometry (`geometry_unit.GeometryUnit`): the line table's writes, the label's place
            "info_wr": Out(write_port(p.line_addr_bits, line_info_layout(p).size)),
            "label_line": In(bits_for(p.tail_lines - 1)),
            "label_word": In(bits_for(max(p.beat_bits // 16 - 1, 1))),
            # memories (registered reads, `memories.READ_LATENCY`): the cache's two read ports and
            # the two t buffers (one per head unit) are one per sample of the pair
            "cache_rd": In(read_port(p.cache_addr_bits, p.beat_bits)).array(p.pair),
            "a_rd": In(read_port(p.line_bits, p.a_line_bits)),
            "t_rd": In(read_port(p.pair_bits + p.tap_bits, p.R * F.T_BITS)).array(p.pair),
            "pairs": Out(pair_signature(p)),        # a pair of samples to the head units
            "a_lines": Out(a_line_signature(p)),    # a line of A to the optimizer
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        R, P, K, S2 = p.R, p.P, p.K, p.pair
        iss = self.issue

        # -- c0: addresses, the line's tap: the job's line table (LUTRAM, read combinationally
        # from the issue register; written by the geometry unit at the job's start) ------------------
        m.submodules.line_table = table = memory.Memory(shape=line_info_layout(p), depth=p.sample_lines, init=[],
                                                        attrs={"ram_style": "distributed"})
        info_rd, info_wr = table.read_port(domain="comb"), table.write_port()
        m.d.comb += [info_wr.addr.eq(self.info_wr.addr), info_wr.data.eq(self.info_wr.data),
                     info_wr.en.eq(self.info_wr.en), info_rd.addr.eq(iss.p.line)]
        info0 = info_rd.data
        tap0, tapfirst0, taplast0, tail0 = info0.tap, info0.first, info0.last, info0.tail
        m.d.comb += [self.cache_rd[s].addr.eq(iss.p.base[s] + iss.p.line) for s in range(S2)]
        m.d.comb += [self.t_rd[s].addr.eq(Cat(tap0, iss.p.pair)) for s in range(S2)]
        fwd0 = iss.valid & (iss.p.op == Op.FWD)
        bwd0 = iss.valid & (iss.p.op == Op.BWD)
        # The A memory: FWD reads the line at c0; BWD reads it at c4 of the line's last op, so the
        # weights arrive with the finished accumulators at c6.
        bwd_last4 = delay(m, bwd0 & iss.p.last, 4, "bwd_last", reset_less=False)
        line4 = delay(m, iss.p.line, 4, "line")
        m.d.comb += self.a_rd.addr.eq(Mux(bwd_last4, line4, iss.p.line))

        # -- c1..c3: meta data along the pipeline; the tap's signedness at c2 ------------------------
        depth = 5 + tree_levels(P) + 5
        fwd = [fwd0] + [None] * depth
        for i in range(1, depth + 1):
            fwd[i] = delay(m, fwd[i - 1], 1, f"fwd{i}", reset_less=False)
        tap1 = delay(m, tap0, 1, "tap1")
        sgn2 = Signal(reset_less=True)
        m.d.sync += sgn2.eq(Array(self.tap_signed)[tap1])
        bwd5 = delay(m, bwd0, 5, "bwd5", reset_less=False)
        first5 = delay(m, iss.p.first, 5, "first")
        odd2 = delay(m, iss.p.odd, 2, "odd")
        last = delay(m, iss.p.last, 1, "last")
        tail = delay(m, tail0, 1, "tail")

        # -- c3: the DSP inputs: decoded codes q (per sample), A words, t factors (per sample) -------
        q3 = [[Signal(signed(p.code_bits), name=f"q{s}_{j}", reset_less=True) for j in range(P)] for s in range(S2)]
        for s in range(S2):
            for j in range(P):
                raw = self.cache_rd[s].data[4 * j:4 * j + 4]
                m.d.sync += q3[s][j].eq(Mux(sgn2, raw.as_signed(), raw.as_unsigned()))
        a3 = [Signal(signed(F.W_BITS), name=f"a{i}", reset_less=True) for i in range(R * P)]
        m.d.sync += [a3[i].eq(self.a_rd.data[i * F.W_BITS:(i + 1) * F.W_BITS].as_signed()) for i in range(R * P)]
        t3 = [[Signal(signed(F.T_BITS), name=f"t{s}_{r}", reset_less=True) for r in range(R)] for s in range(S2)]
        for s in range(S2):
            for r in range(R):
                t_rd = self.t_rd[s].data[r * F.T_BITS:(r + 1) * F.T_BITS].as_signed()
                # an absent second sample adds t = 0
                m.d.sync += t3[s][r].eq(t_rd if s == 0 else Mux(odd2, t_rd, 0))
        # Tail lines carry the base logits (16 bits each) then the label, little-endian.
        out = self.pairs.p
        z = [[Signal(signed(F.Z_BITS), name=f"z{s}_{c}", reset_less=True) for c in range(p.C)] for s in range(S2)]
        label = [Signal(F.LABEL_BITS, name=f"label{s}", reset_less=True) for s in range(S2)]
        label_line_data = [Signal(p.beat_bits, name=f"label_line{s}", reset_less=True) for s in range(S2)]
        m.d.comb += [out.z[s][c].eq(z[s][c]) for s in range(S2) for c in range(p.C)]
        m.d.comb += [out.label[s].eq(label[s]) for s in range(S2)]
        tail2 = delay(m, tail, 1, "tail2")
        tail_line2 = delay(m, info0.tail_line, 2, "tail_line")
        with m.If(fwd[2] & tail2):
            for s in range(S2):
                for c in range(p.C):  # the logits of classes beyond the job's are left out by the softmax
                    line, bit = divmod(16 * c, p.beat_bits)
                    with m.If(tail_line2 == line):
                        m.d.sync += z[s][c].eq(self.cache_rd[s].data[bit:bit + 16])
                with m.If(tail_line2 == self.label_line):  # the line of the word after the job's last logit
                    m.d.sync += label_line_data[s].eq(self.cache_rd[s].data)
        # the label: its word of that line, a stage later (the pair's results leave `cycles.fwd_latency`
        # cycles after its last line, the next pair's tail comes `Timing.head` cycles after its own)
        m.d.sync += [label[s].eq(label_line_data[s].word_select(self.label_word, 16)) for s in range(S2)]

        # -- c4 (M), c5 (P): forward products per sample; backward products, the pair's sum -----------
        prod_bits = F.W_BITS + p.code_bits
        pf4 = [[[Signal(signed(prod_bits), name=f"pf{s}_{r}_{j}", reset_less=True) for j in range(P)]
                for r in range(R)] for s in range(S2)]
        m.d.sync += [pf4[s][r][j].eq(a3[r * P + j] * q3[s][j]) for s in range(S2) for r in range(R) for j in range(P)]
        pf5 = [[[delay(m, pf4[s][r][j], 1, f"pfp{s}_{r}_{j}") for j in range(P)] for r in range(R)] for s in range(S2)]
        pb_bits = F.T_BITS + p.code_bits
        pb4 = [[[Signal(signed(pb_bits), name=f"pb{s}_{r}_{j}", reset_less=True) for j in range(P)]
                for r in range(R)] for s in range(S2)]
        m.d.sync += [pb4[s][r][j].eq(t3[s][r] * q3[s][j]) for s in range(S2) for r in range(R) for j in range(P)]
        pb5 = [[Signal(signed(pb_bits + 1), name=f"pbs{r}_{j}", reset_less=True) for j in range(P)] for r in range(R)]
        m.d.sync += [pb5[r][j].eq(sum(pb4[s][r][j] for s in range(S2))) for r in range(R) for j in range(P)]
        acc = [[Signal(signed(p.da_bits), name=f"acc{r}_{j}", reset_less=True) for j in range(P)] for r in range(R)]
        with m.If(bwd5):
            m.d.sync += [acc[r][j].eq(Mux(first5, 0, acc[r][j]) + pb5[r][j]) for r in range(R) for j in range(P)]

        # -- c6: a finished line of dA (the next line's first op overwrites it at c6's end), with its
        # weights, to the optimizer
        a_line = delay(m, bwd_last4, 2, "a_line", reset_less=False)
        m.d.comb += [self.a_lines.valid.eq(a_line), self.a_lines.p.index.eq(delay(m, line4, 2, "a_line_index")),
                     self.a_lines.p.grad.eq(Cat(acc[r][j] for r in range(R) for j in range(P))),
                     self.a_lines.p.weights.eq(self.a_rd.data)]

        # -- c6..: the forward sums over the lanes, over a tap's lines, rounded and saturated -------
        sum_bits = prod_bits + tree_levels(P) + 1
        sums = [[tree_sum(m, pf5[s][r], sum_bits, f"lane{s}_{r}")[0] for r in range(R)] for s in range(S2)]
        lv = 5 + tree_levels(P)  # the stage the lane sums are valid at
        fwd_t, tap_t = fwd[lv], delay(m, tap0, lv, "tapt")
        tail_t = delay(m, tail0, lv, "tailt")
        tf_t, tl_t = delay(m, tapfirst0, lv, "tft"), delay(m, taplast0, lv, "tlt")
        uacc = [[Signal(signed(p.u_acc_bits), name=f"uacc{s}_{r}", reset_less=True) for r in range(R)]
                for s in range(S2)]
        with m.If(fwd_t & ~tail_t):
            m.d.sync += [uacc[s][r].eq(Mux(tf_t, 0, uacc[s][r]) + sums[s][r]) for s in range(S2) for r in range(R)]
        self._probe = dict(fwd_t=fwd_t, tail_t=tail_t, tf_t=tf_t, tl_t=tl_t, uacc0=uacc[0][0], sum0=sums[0][0],
                           q0=q3[0][0], a0=a3[0])
        # round_half_up(x >> s) = ((2x >> s) + 1) >> 1, s = u_shift of the tap: the shift, the + 1
        # and the saturation each in their own stage
        tap_a, last_a = delay(m, tap_t, 1, "tapa"), delay(m, fwd_t & ~tail_t & tl_t, 1, "lasta", reset_less=False)
        shift = Signal(6, reset_less=True)  # the tap's shift, selected with tap_a's register
        m.d.sync += shift.eq(Array(self.u_shift)[tap_t])
        ush = [[Signal(signed(p.u_acc_bits + 1), name=f"ush{s}_{r}", reset_less=True) for r in range(R)]
               for s in range(S2)]
        m.d.sync += [ush[s][r].eq((uacc[s][r] << 1) >> shift) for s in range(S2) for r in range(R)]
        ur = [[Signal(signed(p.u_acc_bits + 1), name=f"ur{s}_{r}", reset_less=True) for r in range(R)]
              for s in range(S2)]
        m.d.sync += [ur[s][r].eq((ush[s][r] + 1) >> 1) for s in range(S2) for r in range(R)]
        tap_c, last_c = delay(m, tap_a, 2, "tapc"), delay(m, last_a, 2, "lastc", reset_less=False)
        ulo, uhi = -(1 << (F.U_BITS - 1)), (1 << (F.U_BITS - 1)) - 1
        u = [[[Signal(signed(F.U_BITS), name=f"u{s}_{k}_{r}", reset_less=True) for r in range(R)] for k in range(K)]
             for s in range(S2)]
        m.d.comb += [out.u[s][k][r].eq(u[s][k][r]) for s in range(S2) for k in range(K) for r in range(R)]
        with m.If(last_c):
            with m.Switch(tap_c):
                for k in range(K):
                    with m.Case(k):
                        m.d.sync += [u[s][k][r].eq(Mux(ur[s][r] > uhi, uhi, Mux(ur[s][r] < ulo, ulo, ur[s][r])))
                                     for s in range(S2) for r in range(R)]
        # the pair is done when its last line has passed the u stages
        done_stage = lv + 4
        m.d.comb += self.pairs.valid.eq(fwd[done_stage] & delay(m, last, done_stage - 1, "lastd"))
        m.d.comb += [out.pair.eq(delay(m, iss.p.pair, done_stage, "paird")),
                     out.odd.eq(delay(m, iss.p.odd, done_stage, "oddd")),
                     out.epoch_first.eq(delay(m, iss.p.epoch_first, done_stage, "efd"))]
        return m
