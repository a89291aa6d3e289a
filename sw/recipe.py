"""The training recipe's names, shared by the float reference and the accelerator.

A recipe is a sample order, a learning-rate schedule and an optimizer. The float backend runs it
in NumPy (`skip2lora.finetune`); the accelerator runs it on chip, from registers
(`skip2lora.fixed.order`, `skip2lora.fixed.schedule`, `skip2lora.fixed.optimizer`).
"""

from __future__ import annotations

from .fixed.optimizer import Optimizer
from .fixed.schedule import steps_per_epoch

__all__ = ["ORDERS", "SCHEDULES", "ACCELERATOR_OPTIMIZERS", "DEFAULT_ORDER", "DEFAULT_SCHEDULE",
           "accelerator_recipe"]

#: Sample order per epoch: ``shuffle`` draws a new permutation every epoch (SGD as usually run);
#: ``fixed`` replays one order every epoch.
ORDERS = ("shuffle", "fixed")
#: Learning rate per step: ``warmup-linear`` rises linearly over the first epoch, then falls
#: linearly to almost zero at the end of the job; ``constant`` is one rate.
SCHEDULES = ("warmup-linear", "constant")
DEFAULT_ORDER, DEFAULT_SCHEDULE = "shuffle", "warmup-linear"
#: The optimizers the accelerator implements (the OPT register's values).
ACCELERATOR_OPTIMIZERS = tuple(o.name.lower().replace("_", "-") for o in Optimizer)


def accelerator_recipe(*, samples: int, batch: int, order: str = DEFAULT_ORDER,
                       schedule: str = DEFAULT_SCHEDULE, optimizer: str = "sgd") -> dict:
    """The job registers of a recipe: shuffle, warm-up steps, decay, optimizer."""
    if order not in ORDERS:
        raise ValueError(f"sample order must be one of {', '.join(ORDERS)}, not {order!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"learning-rate schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    if optimizer not in ACCELERATOR_OPTIMIZERS:
        raise ValueError(f"the accelerator's optimizers are {', '.join(ACCELERATOR_OPTIMIZERS)}, not {optimizer!r}")
    warm = schedule == "warmup-linear"
    return {"shuffle": order == "shuffle", "warmup": steps_per_epoch(samples, batch) if warm else 0,
            "decay": warm, "optimizer": int(Optimizer[optimizer.upper().replace("-", "_")])}
