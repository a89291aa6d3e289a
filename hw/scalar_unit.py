"""The scalar unit: a job's derived values and each mini-batch's step size, computed on chip.

Per step: eta_t (the schedule), then Adam's bias correction folded into the rate,
alpha = round(eta_t * sqrt(1 - beta2**t) / (1 - beta1**t)) (`skip2lora.fixed.optimizer.adam_rate`),
computed for every optimizer so a step always takes `cycles.STEP_LATENCY` cycles (SGD keeps eta_t).

At a job's start (``start``) it derives, from the registers, the steps per epoch and in the job,
the size of the last (shorter) batch, the batch-mean factors rn(B) and rn(nb_last), and the step
size of step 1; then every ``step`` pulse (a mini-batch's start) moves ``alpha`` to the batch now
starting and computes the next step's in the background. `skip2lora.fixed.schedule` is the
contract; one sequential divider and one shift-add multiplier do all the arithmetic, so the unit
is small and never deeper than one subtractor: the divider's and the multiplier's operands are
registered first (one cycle each), and beta**t's update takes three cycles (round, subtract, 1 - beta**t).

Schedule of a job start (`cycles.INIT_LATENCY` counts it; `cycles.STEP_LATENCY` a step's): spe = ceil(N / B) | T = E * spe |
rn(B) | rn(nb_last) | eta * (T - W) | the step-1 division | normalization.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from ..fixed.optimizer import BETA1_SHIFT, BETA2_SHIFT, BIAS_FRAC, Optimizer
from .divider import Divider
from .job import JOB_LAYOUT
from .optimizer import alpha_signature

__all__ = ["control_signature", "ScalarUnit", "STEP_BITS", "MUL_CYCLES", "ETA_Q_BITS"]

STEP_BITS = 32                       # T = epochs * steps per epoch < 2**32
MUL_CYCLES = STEP_BITS               # the shift-add multiplier takes one bit of its second operand per cycle
ETA_Q_BITS = F.LR_BITS               # eta_t <= eta < 2**28
_DIVIDEND_BITS = 1 + F.LR_BITS + STEP_BITS + 1  # 2 * eta * num + den
_DIVISOR_BITS = STEP_BITS + 1                    # 2 * den


def control_signature() -> wiring.Signature:
    """Sequencer -> scalar unit, the sequencer's view: ``start`` (a job starts: its registers are
    valid and stay so), ``step`` (a mini-batch starts: alpha <- the next, compute the one after);
    ``ready`` (the job's constants and step 1's alpha are valid), ``next_ready`` (the next step's
    alpha is computed: a ``step`` may come), ``rn_full`` = rn(batch), ``rn_last`` = rn(nb_last)."""
    return wiring.Signature({"start": Out(1), "step": Out(1), "ready": In(1), "next_ready": In(1),
                             "rn_full": In(F.RN_BITS), "rn_last": In(F.RN_BITS)})


class ScalarUnit(wiring.Component):
    """Job registers in, per-job constants and per-step step sizes out (see the module docstring)."""

    def __init__(self):
        super().__init__({
            "ctl": In(control_signature()),  # the sequencer's: start, step; ready, next_ready, rn(nb)
            "job": In(JOB_LAYOUT),           # samples, batch, epochs, eta, warmup, decay, kind (Adam folds
                                             # its bias correction into alpha)
            "steps_per_epoch": Out(16),
            "nb_last": Out(16),             # samples in an epoch's last batch
            "alpha": Out(alpha_signature()),  # this batch's step size, mantissa and exponent
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.div = div = Divider(_DIVIDEND_BITS, _DIVISOR_BITS, ETA_Q_BITS)
        # The divider is sized for the per-step division; the job-start ones use its low bits.
        total = Signal(STEP_BITS)
        den_decay = Signal(STEP_BITS)
        x = Signal(F.LR_BITS + STEP_BITS)       # eta * num of the step being computed
        x_decay = Signal(F.LR_BITS + STEP_BITS)  # eta * (T - W): num at the first decay step
        t = Signal(STEP_BITS)                    # the step being computed (1-based)
        next_m, next_e = Signal(F.ALPHA_MANT_BITS), Signal(4)
        eta_t = Signal(ETA_Q_BITS)
        # Adam's bias correction: beta**t in Q30, a bit-serial square root, a product, a division
        one = 1 << BIAS_FRAC
        p1, p2 = Signal(BIAS_FRAC + 1, init=one), Signal(BIAS_FRAC + 1, init=one)
        c1 = Signal(BIAS_FRAC + 1)
        r1, r2 = Signal(BIAS_FRAC + 1, reset_less=True), Signal(BIAS_FRAC + 1, reset_less=True)
        rad = Signal(2 * BIAS_FRAC)           # the square root's radicand, two bits out per cycle
        root = Signal(BIAS_FRAC + 1)
        rem = Signal(BIAS_FRAC + 3)
        sq_n = Signal(range(BIAS_FRAC + 1))
        alpha = Signal(ETA_Q_BITS)
        # The shift-add multiplier: acc += a << i for each set bit i of b (one bit per cycle).
        mul_a, mul_b, mul_acc = Signal(F.LR_BITS + STEP_BITS), Signal(STEP_BITS), Signal(F.LR_BITS + STEP_BITS)
        mul_n = Signal(range(MUL_CYCLES + 1))
        n = Signal(range(MUL_CYCLES + 1))

        # Comparisons against the job's registers and t, registered: t changes once a step (in
        # after_step) and is read again no earlier than the next cycle; the job's registers stay.
        warm = Signal(reset_less=True)           # (W != 0) & (t <= W): step t is a warm-up step
        warm_more = Signal(reset_less=True)      # t < W
        steps_left = Signal(reset_less=True)     # t <= T
        warm_on = Signal(reset_less=True)        # W != 0
        adam = Signal(reset_less=True)           # kind == ADAM_POW2
        spe_num = Signal(17, reset_less=True)    # N + B - 1
        m.d.sync += [warm.eq((self.job.warmup != 0) & (t <= self.job.warmup)), warm_more.eq(t < self.job.warmup),
                     steps_left.eq(t <= total), warm_on.eq(self.job.warmup != 0),
                     adam.eq(self.job.kind == Optimizer.ADAM_POW2), spe_num.eq(self.job.samples + self.job.batch - 1)]

        # the divider's operands, registered: the operand muxes and adders stay out of its first step
        div_start = Signal()
        div_dividend = Signal(_DIVIDEND_BITS, reset_less=True)
        div_divisor = Signal(_DIVISOR_BITS, reset_less=True)
        m.d.sync += div_start.eq(0)
        m.d.comb += [div.start.eq(div_start), div.dividend.eq(div_dividend), div.divisor.eq(div_divisor)]

        def divide(dividend, divisor):
            m.d.sync += [div_start.eq(1), div_dividend.eq(dividend), div_divisor.eq(divisor)]

        # The multiplier's operands are registered first (one cycle), then loaded: the states'
        # operand selection and the shift-add loop do not share one multiplexer level.
        mul_load = Signal()
        in_a, in_b, in_acc = (Signal.like(mul_a, reset_less=True), Signal.like(mul_b, reset_less=True),
                              Signal.like(mul_acc, reset_less=True))

        def multiply(a, b, acc=0):
            """mul_acc <- acc + a * b, 1 + MUL_CYCLES cycles from now."""
            m.d.sync += [in_a.eq(a), in_b.eq(b), in_acc.eq(acc), mul_load.eq(1), mul_busy.eq(1)]

        mul_busy = Signal()  # the product is not ready yet, as a register
        m.d.sync += mul_load.eq(0)
        with m.If(mul_load):
            m.d.sync += [mul_a.eq(in_a), mul_b.eq(in_b), mul_acc.eq(in_acc), mul_n.eq(MUL_CYCLES)]
        with m.Elif(mul_busy):
            m.d.sync += [mul_acc.eq(mul_acc + Mux(mul_b[0], mul_a, 0)), mul_a.eq(mul_a << 1),
                         mul_b.eq(mul_b >> 1), mul_n.eq(mul_n - 1)]
            with m.If(mul_n == 1):
                m.d.sync += mul_busy.eq(0)

        # normalization: E = max(0, bitlength(alpha) - 17), M = alpha >> E; E is found from the
        # quotient in the cycle alpha is registered (the highest set bit among alpha's top bits)
        alpha_new = Signal(ETA_Q_BITS)
        m.d.comb += alpha_new.eq(Mux(adam, div.quotient, eta_t))
        over_new, over = Signal(4), Signal(4, reset_less=True)
        for i in range(F.ALPHA_MANT_BITS, ETA_Q_BITS):
            with m.If(alpha_new[i]):
                m.d.comb += over_new.eq(i + 1 - F.ALPHA_MANT_BITS)

        def after_step(fsm_next):
            """The step's quotient is in eta_t: advance x to the following step."""
            with m.If(warm & warm_more):
                m.d.sync += x.eq(x + self.job.eta)
            with m.Elif(warm):
                m.d.sync += x.eq(x_decay)
            with m.Elif(self.job.decay):
                m.d.sync += x.eq(x - self.job.eta)
            m.d.sync += t.eq(t + 1)
            m.next = fsm_next

        trial = Signal(BIAS_FRAC + 3)
        shifted_rem = Signal(BIAS_FRAC + 3)
        m.d.comb += [shifted_rem.eq(Cat(rad[-2:], rem)), trial.eq(Cat(Const(1, 2), root))]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.ctl.start):
                    m.d.sync += [self.ctl.ready.eq(0), t.eq(1), p1.eq(one), p2.eq(one)]
                    m.next = "SPE"
            with m.State("SPE"):  # ceil(N / B) and the last batch's size from one division
                divide(spe_num, self.job.batch)
                m.next = "SPE_WAIT"
            with m.State("SPE_WAIT"):
                with m.If(div.done):
                    m.d.sync += [self.steps_per_epoch.eq(div.quotient), self.nb_last.eq(div.remainder + 1)]
                    multiply(self.job.epochs, div.quotient[:16])
                    m.next = "TOTAL"
            with m.State("TOTAL"):
                with m.If(~mul_busy):
                    m.d.sync += total.eq(mul_acc)
                    m.next = "RN_FULL"
            with m.State("RN_FULL"):  # rn(nb) = floor((2**25 + nb) / (2 nb))
                divide(Cat(self.job.batch, Const(1 << (F.RN_FRAC + 1 - 16), F.RN_FRAC + 2 - 16)), self.job.batch << 1)
                m.next = "RN_FULL_WAIT"
            with m.State("RN_FULL_WAIT"):
                with m.If(div.done):
                    m.d.sync += self.ctl.rn_full.eq(div.quotient)
                    m.next = "RN_LAST"
            with m.State("RN_LAST"):
                divide(Cat(self.nb_last, Const(1 << (F.RN_FRAC + 1 - 16), F.RN_FRAC + 2 - 16)), self.nb_last << 1)
                m.next = "RN_LAST_WAIT"
            with m.State("RN_LAST_WAIT"):
                with m.If(div.done):
                    m.d.sync += [self.ctl.rn_last.eq(div.quotient),
                                 den_decay.eq(Mux(total > self.job.warmup, total - self.job.warmup, 1))]
                    m.next = "DECAY"
            with m.State("DECAY"):  # eta * (T - W), the numerator of the first decay step
                multiply(self.job.eta, den_decay)
                m.next = "DECAY_WAIT"
            with m.State("DECAY_WAIT"):
                with m.If(~mul_busy):
                    m.d.sync += [x_decay.eq(mul_acc), x.eq(Mux(warm_on, self.job.eta, mul_acc))]
                    m.next = "STEP"
            with m.State("STEP"):  # eta_t = round(x / den) unless the rate is constant
                den = Mux(warm, self.job.warmup, den_decay)
                with m.If(warm | self.job.decay):
                    divide(Cat(Const(0, 1), x) + den, den << 1)
                    m.next = "STEP_WAIT"
                with m.Else():
                    m.d.sync += [eta_t.eq(self.job.eta), n.eq(Divider.latency(ETA_Q_BITS))]
                    m.next = "CONST_WAIT"
            with m.State("CONST_WAIT"):  # the same latency as a division
                m.d.sync += n.eq(n - 1)
                with m.If(n == 0):
                    after_step("BIAS")
            with m.State("STEP_WAIT"):
                with m.If(div.done):
                    m.d.sync += eta_t.eq(div.quotient)
                    after_step("BIAS")
            with m.State("BIAS"):  # beta**t <- beta**(t-1) - round(beta**(t-1) >> k): the rounded shares
                m.d.sync += [r1.eq((p1 + (1 << (BETA1_SHIFT - 1))) >> BETA1_SHIFT),
                             r2.eq((p2 + (1 << (BETA2_SHIFT - 1))) >> BETA2_SHIFT)]
                m.next = "BIAS_SUB"
            with m.State("BIAS_SUB"):
                m.d.sync += [p1.eq(p1 - r1), p2.eq(p2 - r2)]
                m.next = "BIAS_ONE"
            with m.State("BIAS_ONE"):  # 1 - beta1**t; the root's radicand (1 - beta2**t) << 30
                m.d.sync += [c1.eq(one - p1), rad.eq(Cat(Const(0, BIAS_FRAC), (one - p2)[:BIAS_FRAC + 1])),
                             root.eq(0), rem.eq(0), sq_n.eq(BIAS_FRAC)]
                m.next = "SQRT"
            with m.State("SQRT"):  # root = floor(sqrt((1 - beta2**t) << 30)), two radicand bits a cycle
                m.d.sync += [rad.eq(rad << 2), sq_n.eq(sq_n - 1)]
                with m.If(shifted_rem >= trial):
                    m.d.sync += [rem.eq(shifted_rem - trial), root.eq(Cat(Const(1, 1), root))]
                with m.Else():
                    m.d.sync += [rem.eq(shifted_rem), root.eq(Cat(Const(0, 1), root))]
                with m.If(sq_n == 1):
                    m.next = "RATE_MUL"
            with m.State("RATE_MUL"):  # the product already doubled and offset: Adam's dividend
                multiply(Cat(Const(0, 1), eta_t), root, acc=c1)
                m.next = "RATE_MUL_WAIT"
            with m.State("RATE_MUL_WAIT"):
                with m.If(~mul_busy):
                    divide(mul_acc, c1 << 1)  # 2 eta_t root + c1 (< 2**60: mul_acc holds it)
                    m.next = "RATE_DIV"
            with m.State("RATE_DIV"):  # alpha = round(eta_t * root / (1 - beta1**t))
                with m.If(div.done):
                    m.d.sync += [alpha.eq(alpha_new), over.eq(over_new)]
                    m.next = "NORM"
            with m.State("NORM"):
                m.d.sync += [next_e.eq(over), next_m.eq(alpha >> over)]
                m.next = "READY"
            with m.State("READY"):
                m.d.sync += self.ctl.ready.eq(1)
                m.d.comb += self.ctl.next_ready.eq(1)
                with m.If(self.ctl.start):
                    m.d.sync += [self.ctl.ready.eq(0), t.eq(1), p1.eq(one), p2.eq(one)]
                    m.next = "SPE"
                with m.Elif(self.ctl.step):
                    m.d.sync += [self.alpha.m.eq(next_m), self.alpha.e.eq(next_e)]
                    with m.If(steps_left):
                        m.next = "STEP"
        return m
