"""The weight update of the accelerator's optimizers, elementwise and exact (numeric contract).

After each mini-batch every adapter weight w (A and B, Q14) takes one step from its batch-mean
gradient G (Q22, `formats.GRAD_FRAC`, saturated to `formats.GRAD_BITS`) and the step's size alpha
(`schedule`). The accelerator runs the same arithmetic in `formats.GRAD_BITS`-wide lanes, a chunk
of a line per cycle (hw/optimizer.py); docs/numerics.md, "The update", is the prose form.

* ``sgd``:  w' = sat16(w - round(G * alpha))

The product ``G * alpha`` is a DSP multiply of G by alpha's 17-bit mantissa M (alpha = M * 2**E)
followed by one rounding right shift by ``STEP_SHIFT - E``.
"""

from __future__ import annotations

import enum

import numpy as np

from . import formats as F
from .schedule import mantissa

__all__ = ["Optimizer", "STEP_SHIFT", "grad_from_sum", "OptimizerState", "update"]

# G (Q22) * alpha (Q24) -> weight (Q14)
STEP_SHIFT = F.GRAD_FRAC + F.LR_FRAC - F.A_FRAC


class Optimizer(enum.IntEnum):
    """OPT.kind register values."""

    SGD = 0


def grad_from_sum(total, frac: int):
    """A batch-mean gradient sum in Q``frac`` as the optimizer's input G (round, then saturate)."""
    g = F.round_shift(total, frac - F.GRAD_FRAC) if frac > F.GRAD_FRAC else np.asarray(total, np.int64)
    return F.saturate(g, F.GRAD_BITS)


class OptimizerState:
    """Per-weight optimizer state (empty for SGD); zero at the start of every job."""

    def __init__(self, kind: Optimizer, shape):
        self.kind = Optimizer(kind)
        self.shape = shape


def update(w, g, alpha: int, state: OptimizerState, index=None):
    """New weights and the number of weights whose step saturated.

    ``w`` int weights (Q14), ``g`` their gradients G (Q22, already saturated), ``alpha`` the step's
    size (Q24). ``index`` selects the state entries of these weights (unused by SGD).
    """
    w = np.asarray(w, np.int64)
    g = np.asarray(g, np.int64)
    m, e = mantissa(alpha)
    if state.kind is Optimizer.SGD:
        step = F.round_shift(g * m, STEP_SHIFT - e)
    else:  # pragma: no cover - the enum has no other members yet
        raise ValueError(f"unknown optimizer {state.kind!r}")
    raw = w - step
    lo, hi = F.weight_range()
    return np.clip(raw, lo, hi), int(np.count_nonzero((raw < lo) | (raw > hi)))
