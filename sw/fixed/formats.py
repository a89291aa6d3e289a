"""The accelerator's number formats: the one place the numeric contract's constants live.

Every value is a two's-complement integer ``v`` standing for ``v * 2**-FRAC`` (docs/numerics.md
explains each choice and why each width suffices). The RTL reads these constants from here; the
bit-exact model (`skip2lora.fixed.model`) is their executable form.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CODE_BITS", "W_BITS", "A_FRAC", "B_FRAC", "U_BITS", "U_FRAC", "Z_BITS", "Z_FRAC", "Y_FRAC",
    "P_FRAC", "LR_BITS", "LR_FRAC", "GL_FRAC", "RN_BITS", "RN_FRAC", "T_BITS", "T_FRAC", "GRAD_BITS",
    "GRAD_FRAC", "ALPHA_MANT_BITS", "EXP_MIN", "EXP_MAX", "BATCH_MAX", "EPOCHS_MAX", "SAMPLES_MAX",
    "STEPS_MAX", "LABEL_BITS", "EXP2_LUT", "EXP2_LUT_BITS", "LOG2E", "LOG2E_FRAC", "RECIP_SHIFT",
    "LOSS_FRAC", "LOSS_BITS", "LOG2_LUT", "LOG2_LUT_BITS", "SEED_BITS", "STAT_EPOCHS",
    "round_shift", "saturate", "lr_register", "lr_value", "u_shift", "t_shift", "acc_bits",
    "weight_range", "to_fixed", "from_fixed",
]

CODE_BITS = 4          # cached activations: unsigned 0..15 or signed -8..7 per tap
W_BITS = 16            # adapter weights A and B
A_FRAC = 14            # A in [-2, 2), step 2**-14
B_FRAC = 14            # B in [-2, 2), step 2**-14
U_BITS, U_FRAC = 16, 10  # adapter bottleneck u_k = A_k x_k in [-32, 32)
Z_BITS, Z_FRAC = 16, 8   # cached base logits in [-128, 128)
Y_FRAC = Z_FRAC          # logits y = z + sum_k B_k u_k, same format as z
P_FRAC = 15              # probabilities and the output gradient g = p - onehot, |g| <= 1
LR_BITS, LR_FRAC = 28, 24  # learning-rate register: the peak step size eta in [2**-24, 16)
RN_BITS, RN_FRAC = 25, 24  # 1 / nb, the batch-mean factor of a batch of nb samples (Q24, nb = 1: 2**24)
GL_FRAC = 24             # gl = g / nb, the output gradient's share of the batch mean
T_BITS, T_FRAC = 24, A_FRAC + 8  # t_k = B_k^T gl * 2**e_k, the per-sample row factor of dA
GRAD_BITS, GRAD_FRAC = 27, T_FRAC  # the optimizer's gradient input: a batch-mean gradient, |G| < 16
ALPHA_MANT_BITS = 17     # the step size alpha_t enters the update as a 17-bit mantissa (a DSP operand)
BATCH_MAX = 256          # largest mini-batch (sizes the gradient accumulators)
EPOCHS_MAX = 65535
SAMPLES_MAX = 65535      # SAMPLES register (16 bits)
STEPS_MAX = (1 << 24) - 1  # mini-batch steps in one job (the schedule's step counter)
LABEL_BITS = 16
SEED_BITS = 32           # the sample-order seed register
STAT_EPOCHS = 1024       # per-epoch statistics kept on chip (epoch e in slot e mod 1024)

# Per-tap exponent range: the shifts that rescale u and t must stay right shifts (>= 0).
EXP_MIN = -15
EXP_MAX = A_FRAC - U_FRAC  # 4: a tap's codes may stand for values up to 15 * 16 = 240

# Softmax: exp(-d) = 2**(-d * log2 e); 2**-f for the fraction f comes from a 256-entry table.
LOG2E_FRAC = 15
LOG2E = round(np.log2(np.e) * 2 ** LOG2E_FRAC)  # 47274
EXP2_LUT_BITS = 8
EXP2_LUT = tuple(int(round(2 ** P_FRAC * 2 ** (-i / 2 ** EXP2_LUT_BITS))) for i in range(2 ** EXP2_LUT_BITS))
RECIP_SHIFT = 31  # the divider computes floor(2**31 / sum_c e_c)

# Training loss per sample, -log2 p(label) in Q8 (saturated to 16 bits): the softmax's own
# t_label plus log2 of its exponential sum, whose fraction comes from a 64-entry table.
LOSS_FRAC, LOSS_BITS = 8, 16
LOG2_LUT_BITS = 6
LOG2_LUT = tuple(int(round(2 ** LOSS_FRAC * np.log2(1 + (i + 0.5) / 2 ** LOG2_LUT_BITS)))
                 for i in range(2 ** LOG2_LUT_BITS))


def round_shift(x, shift):
    """``x * 2**-shift`` rounded half up (add half an LSB, arithmetic shift right): one adder in RTL.

    ``shift`` may be an int or an integer array broadcasting against ``x`` (one shift per tap).
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(shift < 0):
        raise ValueError("round_shift needs non-negative shifts")
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return np.right_shift(x + half, shift)


def saturate(x, bits: int):
    """Clamp to the signed ``bits``-bit range: every narrowing saturates, never wraps."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def weight_range() -> tuple[int, int]:
    return -(1 << (W_BITS - 1)), (1 << (W_BITS - 1)) - 1


def to_fixed(x, frac: int, bits: int):
    """Nearest representable value (round half up), saturated: how the host converts floats."""
    return saturate(np.floor(np.asarray(x, dtype=np.float64) * 2.0 ** frac + 0.5), bits)


def from_fixed(v, frac: int):
    return np.asarray(v, dtype=np.float64) * 2.0 ** -frac


def lr_register(eta: float) -> int:
    """The learning-rate register for a peak step size ``eta``: round(eta * 2**24).

    The gradients are batch means (a last, shorter batch is divided by its own size), and the
    schedule scales eta step by step (`skip2lora.fixed.schedule`).
    """
    if isinstance(eta, bool) or not isinstance(eta, (int, float, np.integer, np.floating)) \
            or not np.isfinite(eta) or eta <= 0:
        raise ValueError(f"learning rate must be a positive finite number, not {eta!r}")
    reg = int(np.floor(float(eta) * 2 ** LR_FRAC + 0.5))
    if not 1 <= reg < 1 << LR_BITS:
        raise ValueError(f"learning rate {eta:.6g} is outside the accelerator's range "
                         f"[{2.0 ** -LR_FRAC:.3g}, {(1 << LR_BITS - LR_FRAC) - 2.0 ** -LR_FRAC:.6g}]")
    return reg


def lr_value(reg: int) -> float:
    return reg * 2.0 ** -LR_FRAC


def u_shift(exponent):
    """Right shift that turns sum_j A q_j (scale 2**(e - A_FRAC)) into u (scale 2**-U_FRAC)."""
    return A_FRAC - U_FRAC - np.asarray(exponent)


def t_shift(exponent):
    """Right shift that turns sum_c B gl_c (scale 2**-(B_FRAC+GL_FRAC)) into t = that * 2**e (2**-T_FRAC)."""
    return B_FRAC + GL_FRAC - T_FRAC - np.asarray(exponent)


def acc_bits(max_dim: int) -> dict[str, int]:
    """Accumulator widths that can never overflow (see docs/numerics.md for the bounds)."""
    code_max = (1 << CODE_BITS) - 1  # |q| <= 15
    bits = lambda bound: int(bound).bit_length() + 1  # noqa: E731 - signed width holding |v| <= bound
    w = 1 << (W_BITS - 1)
    return {
        "u_acc": bits(w * code_max * max_dim),                       # sum_j A q
        "da_acc": bits((1 << (T_BITS - 1)) * code_max * BATCH_MAX),  # sum_batch t q
        "gl": bits((1 << P_FRAC) * (1 << RN_FRAC) >> P_FRAC),         # g / nb, nb >= 1
    }
