"""The weight update of the accelerator's optimizers, elementwise and exact (numeric contract).

After each mini-batch every adapter weight w (A and B, Q14) takes one step from its batch-mean
gradient G (Q22, `formats.GRAD_FRAC`, saturated to `formats.GRAD_BITS`) and the step's size alpha
(`schedule`; for Adam with the bias correction folded in, `adam_rate`). The accelerator runs the
same arithmetic in lanes, a chunk of a line per cycle (hw/optimizer.py); docs/numerics.md, "The
update", is the prose form.

* ``sgd``:        w' = sat16(w - round(G * alpha))
* ``adam_pow2``:  Adam (beta1 = 1 - 2**-3, beta2 = 1 - 2**-10) whose 1 / sqrt(v) is the nearest
  power of two in the log domain (a leading-one detector and a shift in hardware):

      m' = sat27(m - round(m >> 3) + G)           m in Q25: (1 - beta1) G is G itself
      v' = usat56(v - round(v >> 10) + G * G)     v in Q54: (1 - beta2) G**2 is G**2 itself
      s  = floor((n - 53) / 2),  n = the position of the leading one of v' + 1
      w' = sat16(w - round(m' * M >> (35 - E + s)))      (alpha = M * 2**E)

  i.e. w -= alpha * m * P(v + eps**2) with P(x) = 2**-floor(log2(x)/2 + 1/2) and eps**2 = 2**-54,
  the float reference's `adam-pow2` (sw/optim.py). Only the moving averages' decay terms round;
  their input terms are exact. The bias correction is folded into alpha (`adam_rate`).

The product ``G * M`` (or ``m' * M``) is a DSP multiply by alpha's 17-bit mantissa M followed by
one rounding shift.
"""

from __future__ import annotations

import enum
import math

import numpy as np

from . import formats as F
from .schedule import mantissa

__all__ = ["Optimizer", "STEP_SHIFT", "M_BITS", "M_FRAC", "V_BITS", "V_FRAC", "BETA1_SHIFT", "BETA2_SHIFT",
           "ADAM_SHIFT", "BIAS_FRAC", "grad_from_sum", "OptimizerState", "update", "adam_rate", "isqrt"]

# G (Q22) * alpha (Q24) -> weight (Q14)
STEP_SHIFT = F.GRAD_FRAC + F.LR_FRAC - F.A_FRAC
# Adam's moments: beta1 = 1 - 2**-BETA1_SHIFT, beta2 = 1 - 2**-BETA2_SHIFT
BETA1_SHIFT, BETA2_SHIFT = 3, 10
M_BITS, M_FRAC = F.GRAD_BITS, F.GRAD_FRAC + BETA1_SHIFT      # |m| < 2, Q25: a DSP operand
V_BITS, V_FRAC = 56, 2 * F.GRAD_FRAC + BETA2_SHIFT           # 0 <= v < 4, Q54
# m (Q25) * alpha (Q24) * P, P = 2**-s in real units -> weight (Q14): shift = ADAM_SHIFT - E + s
ADAM_SHIFT = M_FRAC + F.LR_FRAC - F.A_FRAC
BIAS_FRAC = 30                                               # beta**t and the correction in Q30


class Optimizer(enum.IntEnum):
    """OPT.kind register values."""

    SGD = 0
    ADAM_POW2 = 1


def grad_from_sum(total, frac: int):
    """A batch-mean gradient sum in Q``frac`` as the optimizer's input G (round, then saturate)."""
    g = F.round_shift(total, frac - F.GRAD_FRAC) if frac > F.GRAD_FRAC else np.asarray(total, np.int64)
    return F.saturate(g, F.GRAD_BITS)


def isqrt(x: int) -> int:
    """floor(sqrt(x)) of a non-negative integer (the scalar unit's bit-serial square root)."""
    return math.isqrt(int(x))


def adam_rate(eta_t: int, t: int, state: "OptimizerState") -> int:
    """alpha_t = round(eta_t * sqrt(1 - beta2**t) / (1 - beta1**t)) (Q24) for step t (1-based).

    beta**t are kept in Q30 by the recurrence p <- p - round(p >> k) (one subtraction a step);
    state.p1 / p2 must hold beta1**(t-1), beta2**(t-1) and are advanced here.
    """
    one = 1 << BIAS_FRAC
    state.p1 = state.p1 - ((state.p1 + (1 << (BETA1_SHIFT - 1))) >> BETA1_SHIFT)
    state.p2 = state.p2 - ((state.p2 + (1 << (BETA2_SHIFT - 1))) >> BETA2_SHIFT)
    c1, c2 = one - state.p1, one - state.p2
    r2 = isqrt(c2 << BIAS_FRAC)  # sqrt(1 - beta2**t) in Q30
    return (2 * int(eta_t) * r2 + c1) // (2 * c1)


class OptimizerState:
    """Per-weight optimizer state, zero at the start of every job (and beta**t for Adam's rate)."""

    def __init__(self, kind, size: int = 0):
        self.kind = Optimizer(kind)
        self.m = np.zeros(size, np.int64)
        self.v = np.zeros(size, np.int64)
        self.p1 = self.p2 = 1 << BIAS_FRAC

    def rate(self, eta_t: int, t: int) -> int:
        """The step's size alpha_t (Q24) from the schedule's eta_t."""
        return adam_rate(eta_t, t, self) if self.kind is Optimizer.ADAM_POW2 else int(eta_t)


def _leading_one(x: np.ndarray) -> np.ndarray:
    """The position of the leading one of positive integers below 2**53 (exact)."""
    return np.frexp(np.asarray(x, np.float64))[1].astype(np.int64) - 1


def update(w, g, alpha: int, state: OptimizerState, index=None):
    """New weights and the number of weights whose step saturated.

    ``w`` int weights (Q14), ``g`` their gradients G (Q22, already saturated), ``alpha`` the step's
    size (Q24). ``index`` selects the state entries of these weights (Adam).
    """
    w = np.asarray(w, np.int64)
    g = np.asarray(g, np.int64)
    mm, e = mantissa(alpha)
    if state.kind is Optimizer.SGD:
        step = F.round_shift(g * mm, STEP_SHIFT - e)
    elif state.kind is Optimizer.ADAM_POW2:
        idx = slice(None) if index is None else index
        m = F.saturate(state.m[idx] - F.round_shift(state.m[idx], BETA1_SHIFT) + g, M_BITS)
        v = np.clip(state.v[idx] - F.round_shift(state.v[idx], BETA2_SHIFT) + g * g, 0, (1 << V_BITS) - 1)
        state.m[idx], state.v[idx] = m, v
        # v + 1 < 2**56: the leading one in float64 is exact only below 2**53, so split
        hi = (v + 1) >> 3
        n = np.where(hi > 0, _leading_one(np.maximum(hi, 1)) + 3, _leading_one(v + 1))
        s = (n - (V_FRAC - 1)) // 2
        shift = ADAM_SHIFT - e + s  # >= ADAM_SHIFT - 11 - 27 = -3
        step = F.round_shift((m * mm) << 4, shift + 4)
    else:  # pragma: no cover - every member is handled above
        raise ValueError(f"unknown optimizer {state.kind!r}")
    raw = w - step
    lo, hi = F.weight_range()
    return np.clip(raw, lo, hi), int(np.count_nonzero((raw < lo) | (raw > hi)))
