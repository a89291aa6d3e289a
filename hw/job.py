"""A job's registers as the blocks receive them: copied from the register bank when START is
accepted and constant while the job runs, so the host may write the next job's values meanwhile.

`JOB_LAYOUT` takes every field's width from the register map (its one source); the sequencer, the
scalar unit, the order unit and the optimizer each take the whole view (``job``: In(JOB_LAYOUT)).
"""

from __future__ import annotations

from amaranth.lib import data

from .regmap import REGISTER_MAP

__all__ = ["JOB_FIELDS", "JOB_LAYOUT"]

#: layout field -> (register, field) in `regmap.REGISTER_MAP`
JOB_FIELDS = {
    "samples": ("SAMPLES", "value"), "batch": ("BATCH", "value"), "epochs": ("EPOCHS", "value"),
    "eta": ("LR", "value"), "warmup": ("WARMUP", "value"), "decay": ("SCHED", "decay"),
    "shuffle": ("ORDER", "shuffle"), "seed": ("SEED", "value"), "kind": ("OPT", "kind"),
    "ddr": ("CACHE_MODE", "ddr"), "ddr_lo": ("DDR_ADDR_LO", "value"), "ddr_hi": ("DDR_ADDR_HI", "value"),
}

JOB_LAYOUT = data.StructLayout({name: REGISTER_MAP.field(*where).width for name, where in JOB_FIELDS.items()})
