"""The training recipe's names, shared by the float reference and the accelerator.

A recipe is a sample order, a learning-rate schedule and an optimizer. The float backend runs it
in NumPy (`skip2lora.finetune`, any `skip2lora.optim` spec); the accelerator runs it on chip from
registers (`skip2lora.fixed.order`, `skip2lora.fixed.schedule`, `skip2lora.fixed.optimizer`),
for the optimizers it implements.
"""

from __future__ import annotations

from .fixed.optimizer import Optimizer
from .fixed.schedule import steps_per_epoch

__all__ = ["ORDERS", "SCHEDULES", "DEFAULT_ORDER", "DEFAULT_SCHEDULE", "ACCELERATOR_OPTIMIZERS",
           "accelerator_optimizer", "accelerator_recipe"]

#: Sample order per epoch: ``shuffle`` draws a new seeded permutation every epoch (SGD as usually
#: run: NumPy's on the float backend, the accelerator's Feistel network on the others);
#: ``feistel`` is the accelerator's order on any backend (the float model of an accelerator job);
#: ``fixed`` replays one order every epoch.
ORDERS = ("shuffle", "feistel", "fixed")
#: Learning rate per step: ``warmup-linear`` rises linearly over the first epoch, then falls
#: linearly to almost zero at the end of the job (the linear schedule with warm-up that LoRA
#: fine-tuning usually runs); ``constant`` is one rate.
SCHEDULES = ("warmup-linear", "constant")
DEFAULT_ORDER, DEFAULT_SCHEDULE = "shuffle", "warmup-linear"

#: The optimizers the accelerator implements, as `skip2lora.optim` specs (the OPT register's kinds).
ACCELERATOR_OPTIMIZERS = {
    "sgd": Optimizer.SGD,
    "adam-pow2:b1=1-2^-3,b2=1-2^-10": Optimizer.ADAM_POW2,
}


def accelerator_optimizer(spec: str) -> Optimizer:
    """The OPT kind of an optimizer spec, or a one-line error naming what the accelerator runs.
    ``adam-pow2`` alone means the accelerator's Adam (its beta1, beta2 are 1 - 2**-3, 1 - 2**-10)."""
    from .optim import make

    if spec == "adam-pow2":
        spec = "adam-pow2:b1=1-2^-3,b2=1-2^-10"
    canonical = make(spec).spec
    for name, kind in ACCELERATOR_OPTIMIZERS.items():
        if make(name).spec == canonical:
            return kind
    raise ValueError(f"the accelerator runs the optimizers {', '.join(ACCELERATOR_OPTIMIZERS)} "
                     f"(adam-pow2 for short), not {spec!r}; use --backend float for others")


def accelerator_recipe(*, samples: int, batch: int, order: str = DEFAULT_ORDER,
                       schedule: str = DEFAULT_SCHEDULE, optimizer: str = "sgd") -> dict:
    """The job registers of a recipe: shuffle, warm-up steps, decay, optimizer."""
    if order not in ORDERS:
        raise ValueError(f"sample order must be one of {', '.join(ORDERS)}, not {order!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"learning-rate schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    warm = schedule == "warmup-linear"
    return {"shuffle": order != "fixed", "warmup": steps_per_epoch(samples, batch) if warm else 0,
            "decay": warm, "optimizer": int(accelerator_optimizer(optimizer))}
