"""Training health from the accelerator's per-epoch statistics: accuracy and loss curves, divergence.

The accelerator saturates instead of overflowing, so a diverging job never shows NaN as a float
run does. It shows weights pinned at the ends of their range and a loss that stays high. Measured
on the KV260 job (fixed backend, `skip2lora finetune --backend fixed --lr ...`): healthy runs clamp
no weight update at all and end near 0.55 nats; runs at 3x the tuned rate and beyond clamp 5-60 %
of the updates of their last epoch, end at 2.2-96 nats, and test at 10-49 %.
`training_health` turns the STAT_* registers (every backend reports them) into curves and a
verdict, the same on every backend.
"""

from __future__ import annotations

import math

from ..fixed import formats as F
from ..fixed.schedule import steps_per_epoch

__all__ = ["training_health", "CLAMPED_LIMIT"]

#: A job diverged when more than this share of its last epoch's weight updates were clamped.
CLAMPED_LIMIT = 0.01


def training_health(stats: dict, *, samples: int, batch: int, geometry) -> dict:
    """Per-epoch training accuracy and mean loss (nats), and whether the job diverged (with why).

    Diverged: the last epoch clamped more than `CLAMPED_LIMIT` of its weight updates, or its mean
    training loss is above both a uniform guess (ln C) and the first epoch's.
    """
    correct = stats["correct_per_epoch"]
    loss = [v * 2.0 ** -F.LOSS_FRAC * math.log(2) / samples for v in stats["loss_sum_per_epoch"]]
    acc = [c / samples for c in correct]
    weights = geometry.rank * geometry.total_dim + geometry.taps * geometry.classes * geometry.rank
    updates = steps_per_epoch(samples, batch) * weights
    clamped = stats["saturated_per_epoch"][-1] / updates
    chance = math.log(geometry.classes)
    reason = None
    if clamped > CLAMPED_LIMIT:
        reason = (f"{100 * clamped:.1f} % of the last epoch's weight updates hit the weight range "
                  f"(training loss {loss[-1]:.3g} nats, training accuracy {100 * acc[-1]:.1f} %)")
    elif loss[-1] > max(loss[0], chance):
        reason = (f"the training loss rose from {loss[0]:.3g} to {loss[-1]:.3g} nats, above a uniform "
                  f"guess ({chance:.3g}); training accuracy {100 * acc[-1]:.1f} %")
    return {"train_accuracy_per_epoch": acc, "train_loss_per_epoch": loss,
            "clamped_share_last_epoch": clamped, "diverged": reason is not None, "divergence": reason}
