"""The softmax / cross-entropy-gradient unit: from logits y and the label to gl = lr * (softmax(y) - onehot).

Fixed schedule, one class per cycle (docs/numerics.md, "Softmax"; the cycle model counts it):

* MAX  C cycles:  m = max_c y_c and the first index reaching it (the predicted class)
* EXP  C+1:       t = (m - y_c) * log2(e); e_c = 2**-frac(t) from a 256-entry table >> int(t); S = sum e_c
* DIV  17:        recip = floor(2**31 / S), restoring division, one quotient bit per cycle
* PG   C+1:       p_c = (e_c * recip + 2**15) >> 16;  g_c = p_c - [c == label];  gl_c = round(g_c * lr >> 15)

``done`` rises for one cycle ``3C + 19`` cycles after ``start``; ``gl`` and ``argmax`` are then valid
and stay until the next start.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .arith import round_shift

from .params import invalid

__all__ = ["SoftmaxGradient", "GL_BITS", "DIV_CYCLES"]

GL_BITS = F.acc_bits(1)["gl"]  # |gl| <= 2**24
DIV_CYCLES = 17  # quotient bits of floor(2**31 / S) with 2**15 <= S: at most 2**16


class SoftmaxGradient(wiring.Component):
    def __init__(self, classes: int):
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
            raise invalid(self, ValueError(f"classes must be an integer of at least 2, not {classes!r}"))
        self.classes = classes
        super().__init__({
            "start": In(1),
            "y": In(signed(F.Z_BITS)).array(classes),   # held stable until done
            "label": In(F.LABEL_BITS),
            "lr": In(F.LR_BITS),
            "gl": Out(signed(GL_BITS)).array(classes),
            "argmax": Out(F.LABEL_BITS),
            "done": Out(1),
        })

    @staticmethod
    def latency(classes: int) -> int:
        return 3 * classes + 19

    def elaborate(self, platform):
        m = Module()
        C = self.classes
        y = Array(self.y)
        cbits = max(C.bit_length(), 1)
        c = Signal(cbits)
        step = Signal(range(DIV_CYCLES + 1))
        ymax = Signal(signed(F.Z_BITS))
        e = Array(Signal(unsigned(F.P_FRAC + 1), name=f"e{i}") for i in range(C))
        esum = Signal(unsigned(F.P_FRAC + 1 + C.bit_length()))
        rem = Signal(unsigned(esum.shape().width + 1))
        recip = Signal(unsigned(F.P_FRAC + 2))
        gl = Array(self.gl)

        # Pipeline registers of the EXP and PG phases (stage A -> stage B).
        a_valid, a_c = Signal(), Signal(cbits)
        t = Signal(unsigned(F.Z_BITS + 2))
        b_valid, b_c = Signal(), Signal(cbits)
        g = Signal(signed(F.P_FRAC + 2))

        lut = Array(F.EXP2_LUT)
        frac = t[:F.EXP2_LUT_BITS]
        whole = t[F.EXP2_LUT_BITS:]
        e_now = Signal(unsigned(F.P_FRAC + 1))
        m.d.comb += e_now.eq(Mux(whole >= 31, 0, lut[frac] >> whole))
        with m.If(a_valid):  # EXP stage B
            m.d.sync += [e[a_c].eq(e_now), esum.eq(esum + e_now)]
        prod = Signal(signed(GL_BITS + F.P_FRAC + 2))
        m.d.comb += prod.eq(g * self.lr)
        gl_now = round_shift(m, prod, F.P_FRAC + F.LR_FRAC - F.GL_FRAC, GL_BITS + 1, "gl_now")
        with m.If(b_valid):  # PG stage B
            m.d.sync += gl[b_c].eq(gl_now)
        m.d.sync += [a_valid.eq(0), b_valid.eq(0), self.done.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [ymax.eq(y[0]), self.argmax.eq(0), c.eq(1)]
                    m.next = "MAX"
            with m.State("MAX"):
                with m.If(y[c] > ymax):
                    m.d.sync += [ymax.eq(y[c]), self.argmax.eq(c)]
                m.d.sync += c.eq(c + 1)
                with m.If(c == C - 1):
                    m.d.sync += [c.eq(0), esum.eq(0)]
                    m.next = "EXP"
            with m.State("EXP"):  # stage A: t = (m - y_c) * log2(e) in Q8
                d = Signal(unsigned(F.Z_BITS + 1))
                m.d.comb += d.eq(ymax - y[c])
                m.d.sync += [t.eq((d * F.LOG2E + (1 << (F.LOG2E_FRAC - 1))) >> F.LOG2E_FRAC),
                             a_c.eq(c), a_valid.eq(1), c.eq(c + 1)]
                with m.If(c == C - 1):
                    m.next = "EXP_LAST"
            with m.State("EXP_LAST"):  # stage B of the last class; set up the division
                m.d.sync += [rem.eq(1 << (F.RECIP_SHIFT - DIV_CYCLES)), recip.eq(0), step.eq(0)]
                m.next = "DIV"
            with m.State("DIV"):
                shifted = Signal(unsigned(rem.shape().width + 1))
                m.d.comb += shifted.eq(rem << 1)
                with m.If(shifted >= esum):
                    m.d.sync += [rem.eq(shifted - esum), recip.eq((recip << 1) | 1)]
                with m.Else():
                    m.d.sync += [rem.eq(shifted), recip.eq(recip << 1)]
                m.d.sync += step.eq(step + 1)
                with m.If(step == DIV_CYCLES - 1):
                    m.d.sync += c.eq(0)
                    m.next = "PG"
            with m.State("PG"):  # stage A: p_c and g_c = p_c - onehot
                p = Signal(unsigned(F.P_FRAC + 2))
                m.d.comb += p.eq((e[c] * recip + (1 << F.P_FRAC)) >> (F.P_FRAC + 1))
                m.d.sync += [g.eq(p - Mux(c == self.label, 1 << F.P_FRAC, 0)), b_c.eq(c),
                             b_valid.eq(1), c.eq(c + 1)]
                with m.If(c == C - 1):
                    m.next = "PG_LAST"
            with m.State("PG_LAST"):  # stage B of the last class
                m.d.sync += self.done.eq(1)
                m.next = "IDLE"
        return m
