"""The softmax / cross-entropy unit: from logits y, the label and rn(nb) to gl = (softmax(y) - onehot) / nb.

docs/numerics.md, "Softmax", and `skip2lora.fixed.model.softmax_gradient` are the contract. All
classes are worked on at once, one register after every step (`cycles.softmax_latency` counts the stages):

* capture y, label, rn | the first maximum, a compare tree (ceil(log2 C) stages)
* per class: d = max - y | d * log2(e) (DSP M, P) | t = round(.. >> 15) | 2**-frac(t) from a
  256-entry table | >> int(t): e_c
* the sum of e_c (tree) | recip = floor(2**31 / sum), a 17-cycle restoring division; meanwhile the
  sample's loss -log2 p(label) = t_label + log2(sum / 2**15) (leading one, 64-entry table, add,
  saturate)
* per class: e * recip (DSP M, P) | p = round(.. >> 16) | g = p - [c = label] | g * rn (DSP M, P)
  | gl = round(.. >> 15)

``done`` pulses once ``gl``, ``argmax`` and ``loss`` are valid; they stay until the next start.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .divider import Divider
from .params import invalid
from .pipeline import delay, tree_argmax, tree_levels, tree_sum

__all__ = ["SoftmaxGradient", "GL_BITS"]

GL_BITS = F.acc_bits(1)["gl"]  # |gl| <= 2**24
DIV_BITS = F.RECIP_SHIFT - F.P_FRAC + 1  # 17 quotient bits: 2**15 <= sum
EXP_STAGES = 6   # d | DSP M | DSP P | t | table | shift
PG_STAGES = 7    # DSP M | DSP P | p | g | DSP M | DSP P | gl


class SoftmaxGradient(wiring.Component):
    def __init__(self, classes: int):
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
            raise invalid(self, ValueError(f"classes must be an integer of at least 2, not {classes!r}"))
        self.classes = classes
        super().__init__({
            "start": In(1),
            "y": In(signed(F.Z_BITS)).array(classes),   # captured at start
            "label": In(F.LABEL_BITS),
            "rn": In(F.RN_BITS),
            # the job's classes (constant during a job): the others take no part (y at its minimum,
            # so never the first maximum unless every class is; e = 0, so p = g = gl = 0)
            "class_on": In(1, init=1).array(classes),
            "gl": Out(signed(GL_BITS)).array(classes),
            "argmax": Out(F.LABEL_BITS),
            "loss": Out(F.LOSS_BITS),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.classes
        cbits = max((C - 1).bit_length(), 1)
        levels = tree_levels(C)

        # -- capture ---------------------------------------------------------------------------
        y = [Signal(signed(F.Z_BITS), name=f"y{c}", reset_less=True) for c in range(C)]
        label = Signal(F.LABEL_BITS, reset_less=True)
        rn = Signal(F.RN_BITS, reset_less=True)
        ylo = -(1 << (F.Z_BITS - 1))
        with m.If(self.start):
            m.d.sync += [y[c].eq(Mux(self.class_on[c], self.y[c], ylo)) for c in range(C)]
            m.d.sync += [label.eq(self.label), rn.eq(self.rn)]
        v = Signal()  # valid of the stage being built
        m.d.sync += v.eq(self.start)

        # -- the first maximum -------------------------------------------------------------------
        ymax, imax, _ = tree_argmax(m, y, cbits, "max")
        v = delay(m, v, levels, "v_max", reset_less=False)
        with m.If(v):
            m.d.sync += self.argmax.eq(imax)

        # -- exponentials ----------------------------------------------------------------------
        lut = Array(F.EXP2_LUT)
        e, t_all = [], []
        for c in range(C):
            d = Signal(unsigned(F.Z_BITS + 1), name=f"d{c}", reset_less=True)
            m.d.sync += d.eq(ymax - y[c])
            mm = Signal(unsigned(F.Z_BITS + 1 + 16), name=f"dm{c}", reset_less=True)
            m.d.sync += mm.eq(d * F.LOG2E)
            mp = delay(m, mm, 1, f"dp{c}")
            t = Signal(unsigned(F.Z_BITS + 2), name=f"t{c}", reset_less=True)
            m.d.sync += t.eq((mp + (1 << (F.LOG2E_FRAC - 1))) >> F.LOG2E_FRAC)
            frac = Signal(unsigned(F.P_FRAC + 1), name=f"lut{c}", reset_less=True)
            whole = Signal(unsigned(F.Z_BITS + 2 - F.EXP2_LUT_BITS), name=f"whole{c}", reset_less=True)
            m.d.sync += [frac.eq(lut[t[:F.EXP2_LUT_BITS]]), whole.eq(t[F.EXP2_LUT_BITS:])]
            ec = Signal(unsigned(F.P_FRAC + 1), name=f"e{c}", reset_less=True)
            m.d.sync += ec.eq(Mux((whole >= 31) | ~self.class_on[c], 0, frac >> whole[:5]))
            e.append(ec)
            t_all.append(t)
        # t of the label, taken at the table stage (t is registered there)
        t_label = Signal(unsigned(F.Z_BITS + 2), reset_less=True)
        m.d.sync += t_label.eq(Array(t_all)[label])
        v = delay(m, v, EXP_STAGES, "v_exp", reset_less=False)

        # -- the sum, the reciprocal, the loss ---------------------------------------------------
        sum_bits = F.P_FRAC + 1 + C.bit_length()
        esum, _ = tree_sum(m, e, sum_bits + 1, "esum")
        v = delay(m, v, levels, "v_sum", reset_less=False)
        m.submodules.div = div = Divider(F.RECIP_SHIFT + 1, sum_bits, DIV_BITS)
        m.d.comb += [div.start.eq(v), div.dividend.eq(1 << F.RECIP_SHIFT), div.divisor.eq(esum[:sum_bits])]
        # loss: leading one of esum, the 6 bits below it, the table, t_label + ..., saturate
        lead = Signal(range(sum_bits + 1), reset_less=True)
        tl2 = Signal.like(t_label, reset_less=True)
        top = Signal(range(sum_bits + 1))
        for i in range(F.P_FRAC, sum_bits):
            with m.If(esum[i]):
                m.d.comb += top.eq(i)
        m.d.sync += [lead.eq(top), tl2.eq(t_label)]
        frac6 = Signal(F.LOG2_LUT_BITS, reset_less=True)
        lead2 = Signal.like(lead, reset_less=True)
        tl3 = Signal.like(t_label, reset_less=True)
        # lead2 = lead - P_FRAC, the log's integer part, so the sum below is the stage's one adder
        m.d.sync += [frac6.eq(esum[:sum_bits] >> (lead - F.LOG2_LUT_BITS).as_unsigned()), lead2.eq(lead - F.P_FRAC),
                     tl3.eq(tl2)]
        ell = Signal(unsigned(F.Z_BITS + 3), reset_less=True)
        log2_lut = Array(Const(x, F.LOSS_FRAC) for x in F.LOG2_LUT)
        m.d.sync += ell.eq(tl3 + Cat(log2_lut[frac6], lead2[:C.bit_length() + 1]))
        loss_sat = Signal(F.LOSS_BITS, reset_less=True)
        m.d.sync += loss_sat.eq(Mux(ell >= (1 << F.LOSS_BITS), (1 << F.LOSS_BITS) - 1, ell))
        v = delay(m, div.done, 1, "v_div", reset_less=False)  # the quotient is registered
        recip = Signal(DIV_BITS, reset_less=True)
        m.d.sync += recip.eq(div.quotient)
        with m.If(v):
            m.d.sync += self.loss.eq(loss_sat)

        # -- probabilities and the scaled gradient ---------------------------------------------
        for c in range(C):
            pr = Signal(unsigned(F.P_FRAC + 1 + DIV_BITS), name=f"pr{c}", reset_less=True)
            m.d.sync += pr.eq(e[c] * recip)
            pp = delay(m, pr, 1, f"pp{c}")
            pc = Signal(unsigned(F.P_FRAC + 2), name=f"p{c}", reset_less=True)
            m.d.sync += pc.eq((pp + (1 << F.P_FRAC)) >> (F.P_FRAC + 1))
            g = Signal(signed(F.P_FRAC + 2), name=f"g{c}", reset_less=True)
            m.d.sync += g.eq(pc - Mux(label == c, 1 << F.P_FRAC, 0))
            gg = Signal(signed(F.P_FRAC + 2 + F.RN_BITS + 1), name=f"gg{c}", reset_less=True)
            m.d.sync += gg.eq(g * rn)
            gp = delay(m, gg, 1, f"gp{c}")
            m.d.sync += self.gl[c].eq((gp + (1 << (F.P_FRAC - 1))) >> F.P_FRAC)
        v = delay(m, v, PG_STAGES, "v_pg", reset_less=False)
        m.d.comb += self.done.eq(v)
        return m
