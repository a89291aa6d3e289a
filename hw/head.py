"""The head unit: everything per sample that is not a pass over the cache line by line.

Between a sample's forward pass (u_k = A_k x_k, done by the MAC array) and its backward pass
(dA_k += t_k q^T, also the MAC array), the head unit, with the adapter B and its gradient sums,

1. Y   (K+1 cycles) y_c = sat(z_c + round(sum_{k,r} B_k[c,r] u_k[r] >> 18)), one tap per cycle
2.     (1 cycle)    hand y to the softmax / cross-entropy-gradient unit (3C + 19 cycles) -> gl
3. SB  (K+1 cycles) per tap k: t_k[r] = sat(round(sum_c B_k[c,r] gl_c >> (16 - e_k)))  (= lr B_k^T g 2**e_k)
                    and the B gradient sums dB_k[c,r] += gl_c u_k[r]

so ``t_ready`` rises `latency(K, C)` = 2K + 3C + 23 cycles after ``start``. At the end of a
mini-batch, ``b_update`` applies B_k -= round(dB_k >> 20) (saturating) to one tap per cycle.
B is K*C*R registers; the dB sums are a K-row memory (one tap's row per cycle), restarted by
``clear_grads`` at a job's start (K cycles, inside the sequencer's CLR phase).
The unit also counts the samples whose prediction (argmax y) equals the label.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .arith import round_shift, round_shift_var, saturate
from .params import HwParams, require_params
from .sgd_update import SgdUpdate, accumulator_start
from .softmax import GL_BITS, SoftmaxGradient

__all__ = ["HeadUnit"]


class HeadUnit(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        self.db_bits = GL_BITS + F.U_BITS + (F.BATCH_MAX - 1).bit_length() + 1
        super().__init__({
            # one sample from the forward pass
            "start": In(1),
            "u": In(signed(F.U_BITS)).array(p.K, p.R),
            "z": In(signed(F.Z_BITS)).array(p.C),
            "label": In(F.LABEL_BITS),
            "epoch_first": In(1),          # first sample of an epoch: restart the correct count
            # job configuration
            "lr": In(F.LR_BITS),
            "t_shift": In(6).array(p.K),   # formats.t_shift(e_k) per tap
            # to the backward pass
            "t": Out(signed(F.T_BITS)).array(p.K, p.R),
            "t_ready": Out(1),
            "t_take": In(1),               # the backward pass consumed t
            # end of a mini-batch, start of a job
            "b_update": In(1),
            "clear_grads": In(1),
            "busy": Out(1),
            "correct": Out(16),
            # B load (stream beats) and read-back
            "b_load_valid": In(1),
            "b_load_beat": In(16),
            "b_load_data": In(p.beat_bits),
            "b_read_beat": In(16),
            "b_read_data": Out(p.beat_bits),
        })

    @staticmethod
    def latency(taps: int, classes: int) -> int:
        return (taps + 1) + 1 + 1 + SoftmaxGradient.latency(classes) + (taps + 1)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        K, R, C = p.K, p.R, p.C
        m.submodules.softmax = smx = SoftmaxGradient(C)
        db_shift = F.GL_FRAC + F.U_FRAC - F.B_FRAC
        m.submodules.bupd = bupd = SgdUpdate(C * R, self.db_bits, db_shift)
        db_start = accumulator_start(db_shift)  # dB counts down from here (see sgd_update)

        B = [[[Signal(signed(F.W_BITS), name=f"b{k}_{c}_{r}") for r in range(R)] for c in range(C)]
             for k in range(K)]
        # dB lives in a K-row memory (LUTRAM): one row (all c, r of a tap) read and written per cycle.
        row_bits = C * R * self.db_bits
        start_row = sum((db_start & ((1 << self.db_bits) - 1)) << (i * self.db_bits) for i in range(C * R))
        m.submodules.db_mem = db_mem = memory.Memory(shape=row_bits, depth=K, init=[start_row] * K)
        db_rd = db_mem.read_port(domain="comb")
        db_wr = db_mem.write_port()
        u = [[Signal(signed(F.U_BITS), name=f"u{k}_{r}") for r in range(R)] for k in range(K)]
        z = [Signal(signed(F.Z_BITS), name=f"z{c}") for c in range(C)]
        label = Signal(F.LABEL_BITS)
        epoch_first = Signal()
        y = [Signal(signed(F.Z_BITS), name=f"y{c}") for c in range(C)]
        kbits = max(K.bit_length(), 1)
        k = Signal(kbits)
        k1, v1 = Signal(kbits), Signal()  # stage-2 tap index and valid

        # The row of B (and of dB, u) of the tap being worked on: a K-way selection.
        b_row = [[Signal(signed(F.W_BITS), name=f"brow{c}_{r}") for r in range(R)] for c in range(C)]
        u_row = [Signal(signed(F.U_BITS), name=f"urow{r}") for r in range(R)]
        db_row = [[Signal(signed(self.db_bits), name=f"dbrow{c}_{r}") for r in range(R)] for c in range(C)]
        with m.Switch(k):
            for kk in range(K):
                with m.Case(kk):
                    m.d.comb += [b_row[c][r].eq(B[kk][c][r]) for c in range(C) for r in range(R)]
                    m.d.comb += [u_row[r].eq(u[kk][r]) for r in range(R)]

        m.d.comb += db_rd.addr.eq(k)
        for c in range(C):
            for r in range(R):
                i = c * R + r
                m.d.comb += db_row[c][r].eq(db_rd.data[i * self.db_bits:(i + 1) * self.db_bits].as_signed())

        # Stage-1 product registers of the Y and SB phases.
        prod_y = [[Signal(signed(2 * F.W_BITS), name=f"py{c}_{r}") for r in range(R)] for c in range(C)]
        prod_s = [[Signal(signed(F.W_BITS + GL_BITS), name=f"ps{c}_{r}") for r in range(R)] for c in range(C)]
        prod_d = [[Signal(signed(GL_BITS + F.U_BITS), name=f"pd{c}_{r}") for r in range(R)] for c in range(C)]
        db_reg = [[Signal(signed(self.db_bits), name=f"dbr{c}_{r}") for r in range(R)] for c in range(C)]
        yacc = [Signal(signed(2 * F.W_BITS + (K * R).bit_length() + 1), name=f"yacc{c}") for c in range(C)]
        sum_bits = F.W_BITS + GL_BITS + C.bit_length() + 1

        m.d.comb += [smx.y[c].eq(y[c]) for c in range(C)]
        m.d.comb += [smx.label.eq(label), smx.lr.eq(self.lr)]
        m.d.sync += [smx.start.eq(0), v1.eq(0)]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [u[kk][r].eq(self.u[kk][r]) for kk in range(K) for r in range(R)]
                    m.d.sync += [z[c].eq(self.z[c]) for c in range(C)]
                    m.d.sync += [label.eq(self.label), epoch_first.eq(self.epoch_first), k.eq(0)]
                    m.next = "Y"
                with m.Elif(self.b_update):
                    m.d.sync += k.eq(0)
                    m.next = "UPDATE"
                with m.Elif(self.clear_grads):
                    m.d.sync += k.eq(0)
                    m.next = "CLEAR"
            with m.State("CLEAR"):  # dB = start, one tap per cycle (job start)
                m.d.comb += [db_wr.addr.eq(k), db_wr.data.eq(start_row), db_wr.en.eq(1)]
                m.d.sync += k.eq(k + 1)
                with m.If(k == K - 1):
                    m.next = "IDLE"
            with m.State("Y"):  # stage 1: B_k[c, r] * u_k[r]
                m.d.sync += [prod_y[c][r].eq(b_row[c][r] * u_row[r]) for c in range(C) for r in range(R)]
                m.d.sync += [v1.eq(1), k1.eq(k), k.eq(k + 1)]
                with m.If(k == K - 1):
                    m.next = "Y_LAST"
            with m.State("Y_LAST"):  # stage 2 of the last tap happens here
                m.next = "Y_OUT"
            with m.State("Y_OUT"):  # y_c = sat(z_c + round(yacc_c >> 18)); softmax starts next cycle
                for c in range(C):
                    s = round_shift(m, yacc[c], F.B_FRAC + F.U_FRAC - F.Y_FRAC, yacc[c].shape().width, f"ys{c}")
                    m.d.sync += y[c].eq(saturate(m, z[c] + s, F.Z_BITS, f"ysat{c}"))
                m.d.sync += [smx.start.eq(1), k.eq(0)]
                m.next = "SOFTMAX"
            with m.State("SOFTMAX"):
                with m.If(smx.done):
                    hit = smx.argmax == label
                    with m.If(epoch_first):
                        m.d.sync += self.correct.eq(hit)
                    with m.Else():
                        m.d.sync += self.correct.eq(self.correct + hit)
                    # stage 1 of tap 0 of SB in this same cycle
                    m.d.sync += k.eq(1)
                    self._sb_products(m, b_row, u_row, db_row, prod_s, prod_d, db_reg, smx)
                    m.d.sync += [v1.eq(1), k1.eq(0)]
                    m.next = "SB_LAST" if K == 1 else "SB"
            with m.State("SB"):
                self._sb_products(m, b_row, u_row, db_row, prod_s, prod_d, db_reg, smx)
                m.d.sync += [v1.eq(1), k1.eq(k), k.eq(k + 1)]
                with m.If(k == K - 1):
                    m.next = "SB_LAST"
            with m.State("SB_LAST"):  # stage 2 of the last tap; t is complete at the end of it
                m.d.sync += self.t_ready.eq(1)
                m.next = "IDLE"
            with m.State("UPDATE"):  # B_k -= round(dB_k >> 20), one tap per cycle, then dB_k restarts
                m.d.sync += [v1.eq(1), k1.eq(k), k.eq(k + 1)]
                with m.If(k == K - 1):
                    m.next = "UPDATE_LAST"
            with m.State("UPDATE_LAST"):
                m.next = "IDLE"

        # Stage 2 of the Y phase: accumulate over taps.
        with m.If(v1 & (fsm.ongoing("Y") | fsm.ongoing("Y_LAST"))):
            for c in range(C):
                total = sum(prod_y[c][r] for r in range(R))
                with m.If(k1 == 0):
                    m.d.sync += yacc[c].eq(total)
                with m.Else():
                    m.d.sync += yacc[c].eq(yacc[c] + total)

        # Stage 2 of the SB phase: t_k and dB_k of tap k1.
        shift_k1 = Signal(6)
        with m.Switch(k1):
            for kk in range(K):
                with m.Case(kk):
                    m.d.comb += shift_k1.eq(self.t_shift[kk])
        with m.If(v1 & (fsm.ongoing("SB") | fsm.ongoing("SB_LAST"))):
            for r in range(R):
                sl = Signal(signed(sum_bits), name=f"sl{r}")
                m.d.comb += sl.eq(sum(prod_s[c][r] for c in range(C)))
                t_new = saturate(m, round_shift_var(m, sl, shift_k1, sum_bits, f"tsh{r}"), F.T_BITS, f"tsat{r}")
                with m.Switch(k1):
                    for kk in range(K):
                        with m.Case(kk):
                            m.d.sync += self.t[kk][r].eq(t_new)
            db_new = [[Signal(signed(self.db_bits), name=f"dbn{c}_{r}") for r in range(R)] for c in range(C)]
            m.d.comb += [db_new[c][r].eq(db_reg[c][r] + prod_d[c][r]) for c in range(C) for r in range(R)]
            m.d.comb += [db_wr.addr.eq(k1), db_wr.data.eq(Cat(db_new[c][r] for c in range(C) for r in range(R))),
                         db_wr.en.eq(1)]

        # B update: the SGD unit sees tap k's B and dB; its registered result lands one cycle later.
        m.d.comb += [bupd.weights.eq(Cat(b_row[c][r] for c in range(C) for r in range(R)))]
        m.d.comb += bupd.accs.eq(Cat(db_row[c][r] for c in range(C) for r in range(R)))
        with m.If(v1 & (fsm.ongoing("UPDATE") | fsm.ongoing("UPDATE_LAST"))):
            with m.Switch(k1):
                for kk in range(K):
                    with m.Case(kk):
                        for c in range(C):
                            for r in range(R):
                                i = c * R + r
                                m.d.sync += B[kk][c][r].eq(bupd.updated[i * F.W_BITS:(i + 1) * F.W_BITS])
            m.d.comb += [db_wr.addr.eq(k1), db_wr.data.eq(start_row), db_wr.en.eq(1)]

        with m.If(self.t_take):
            m.d.sync += self.t_ready.eq(0)
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))

        # Load and read back B as stream beats: word w = (k*C + c)*R + r sits in beat w // (P/4).
        wpb = p.words_per_beat
        for kk in range(K):
            for c in range(C):
                for r in range(R):
                    w = (kk * C + c) * R + r
                    beat, slot = divmod(w, wpb)
                    with m.If(self.b_load_valid & (self.b_load_beat == beat)):
                        m.d.sync += B[kk][c][r].eq(self.b_load_data[slot * F.W_BITS:(slot + 1) * F.W_BITS])
        words = [B[kk][c][r] for kk in range(K) for c in range(C) for r in range(R)]
        with m.Switch(self.b_read_beat):
            for beat in range(-(-len(words) // wpb)):
                with m.Case(beat):
                    chunk = words[beat * wpb:(beat + 1) * wpb]
                    m.d.comb += self.b_read_data.eq(Cat(*(x.as_unsigned() for x in chunk)))
        return m

    def _sb_products(self, m, b_row, u_row, db_row, prod_s, prod_d, db_reg, smx):
        """Stage 1 of SB for the current tap: B_k[c, r] * gl_c, -gl_c * u_k[r] (dB counts down) and
        the tap's dB row."""
        p = self.params
        for c in range(p.C):
            for r in range(p.R):
                m.d.sync += [prod_s[c][r].eq(b_row[c][r] * smx.gl[c]), prod_d[c][r].eq(-smx.gl[c] * u_row[r]),
                             db_reg[c][r].eq(db_row[c][r])]
