"""Per-step scalars of a job: the learning-rate schedule and the batch-mean factor (numeric contract).

The accelerator computes these on chip from its registers (LR, BATCH, SAMPLES, EPOCHS, SCHED);
docs/numerics.md, "Schedule", is the prose form. Every value is an exact integer function of the
registers, evaluated by a sequential divider at the start of each mini-batch (hw/scalar_unit.py).

* Steps are the job's mini-batches, t = 1 .. T with T = epochs * ceil(samples / batch).
* eta_t = round(eta * num / den) (round half up) with
    - t <= W (warm-up of W = SCHED.warmup steps):   num = t,          den = W
    - t > W and SCHED.decay (linear decay):          num = T - t + 1,  den = max(T - W, 1)
    - otherwise:                                     eta_t = eta
  The float backend's recipe "warmup-linear" is W = ceil(samples / batch) (one epoch) with decay.
* The batch mean divides by the batch's own size nb (a last, shorter batch too): the output
  gradient is scaled by rn(nb) = round(2**24 / nb).
* The step size enters the weight update as a 17-bit mantissa and an exponent (a DSP operand and
  a shift): alpha = M * 2**E with M = alpha >> E, E = max(0, bitlength(alpha) - 17).
"""

from __future__ import annotations

from .formats import ALPHA_MANT_BITS, BATCH_MAX, EPOCHS_MAX, LR_BITS, RN_FRAC, SAMPLES_MAX, STEPS_MAX

__all__ = ["steps_per_epoch", "total_steps", "recip_batch", "step_lr", "job_lrs", "mantissa"]


def steps_per_epoch(samples: int, batch: int) -> int:
    return -(-samples // batch)


def total_steps(samples: int, batch: int, epochs: int) -> int:
    return epochs * steps_per_epoch(samples, batch)


def recip_batch(nb: int) -> int:
    """rn(nb) = round(2**24 / nb), the batch-mean factor (Q24)."""
    if not 1 <= nb <= BATCH_MAX:
        raise ValueError(f"batch size must be in [1, {BATCH_MAX}], not {nb}")
    return ((1 << (RN_FRAC + 1)) + nb) // (2 * nb)


def step_lr(eta: int, t: int, total: int, warmup: int, decay: bool) -> int:
    """eta_t (Q24 register units) of step t (1-based) of a job of ``total`` steps."""
    if not 1 <= t <= total:
        raise ValueError(f"step must be in [1, {total}], not {t}")
    if warmup and t <= warmup:
        num, den = t, warmup
    elif decay:
        num, den = total - t + 1, max(total - warmup, 1)
    else:
        return int(eta)
    return (2 * int(eta) * num + den) // (2 * den)


def job_lrs(eta: int, samples: int, batch: int, epochs: int, warmup: int, decay: bool) -> list[int]:
    """eta_t of every step of a job."""
    for name, v, hi in (("samples", samples, SAMPLES_MAX), ("batch", batch, BATCH_MAX),
                        ("epochs", epochs, EPOCHS_MAX)):
        if not 1 <= v <= hi:
            raise ValueError(f"{name} must be in [1, {hi}], not {v}")
    if not 0 <= eta < 1 << LR_BITS:
        raise ValueError(f"eta register must be in [0, 2**{LR_BITS}), not {eta}")
    total = total_steps(samples, batch, epochs)
    if total > STEPS_MAX:
        raise ValueError(f"a job may run at most {STEPS_MAX} mini-batch steps, not {total}")
    return [step_lr(eta, t, total, warmup, decay) for t in range(1, total + 1)]


def mantissa(alpha: int) -> tuple[int, int]:
    """(M, E) with M = alpha >> E the top 17 bits of alpha (truncated), E >= 0."""
    e = max(0, int(alpha).bit_length() - ALPHA_MANT_BITS)
    return int(alpha) >> e, e
