"""The core's DDR mode in amaranth.sim (issue 17): a job whose entries are in a DDR buffer, read
through the core's AXI4 manager from a model memory, is bit-exact against the model and (under a
memory of fixed latency that streams) cycle-exact against the cycle model; under random stalls it
is still bit-exact and only slower; the DDR configuration checks and a read error."""

import pytest

from core_bench import (DDR_ADDR, program_ddr, program_job, load_adapters, run_ddr_vector, simulate_ddr,
                        wait_idle, write_reg)
from skip2lora.fixed.config import SMALL
from skip2lora.fixed.cycles import DDRTiming, FETCH_OVERHEAD
from skip2lora.fixed.packing import Layout, pack_ddr_cache
from skip2lora.fixed.vectors import make_vector
from skip2lora.hw.regmap import ErrorCode
from test_hw_core import check


def test_ddr_job_is_bit_exact_and_cycle_exact():
    """69 samples (more than SMALL's 64 on-chip entries), mini-batches of 8 (the last one odd),
    a shuffled order: each batch's entries fetched while the previous one runs."""
    vector = make_vector(SMALL, samples=69, batch=8, epochs=2, seed=31, shuffle=True, ddr=DDRTiming(20))
    out = run_ddr_vector(vector, latency=20)
    check(vector, out)


def test_ddr_job_under_stalls_is_bit_exact_and_only_slower():
    vector = make_vector(SMALL, samples=23, batch=6, epochs=2, seed=32, ddr=DDRTiming(9))
    out = run_ddr_vector(vector, latency=9, stall=0.3, seed=5)
    assert out["cycles"] > vector.cycles  # the stalls cost cycles; the results do not change
    check(vector, {**out, "cycles": vector.cycles})


def test_fetch_time_in_the_cycle_model():
    """The model's fetch: its overhead, the latency, one cycle a line."""
    layout = Layout(SMALL.geometry, SMALL.lanes)
    assert DDRTiming(7).fetch_cycles(layout, 5) == FETCH_OVERHEAD + 7 + 5 * layout.sample_lines
    with pytest.raises(ValueError, match="does not cover"):
        DDRTiming(1000).fetch_cycles(layout, 5)


def _ddr_error_case(stim, data=b"", **memory):
    seen = {}

    async def bench(ctx, dut):
        await stim(ctx, dut)
        seen["status"] = await wait_idle(ctx, dut.bus, 200_000)

    simulate_ddr(SMALL, bench, data, **memory)
    return seen


@pytest.mark.parametrize("what", ["batch", "samples", "alignment"])
def test_ddr_configuration_checks(what):
    """BATCH above DDR_BATCH, SAMPLES above DDR_SAMPLES, an unaligned buffer: BAD_CONFIG, no job."""
    vector = make_vector(SMALL, samples=20, batch=8, epochs=1, seed=33, ddr=DDRTiming(0))

    async def stim(ctx, dut):
        await load_adapters(ctx, dut, vector.adapter_bytes, vector.layout.beat_bytes)
        await program_job(ctx, dut.bus, vector)
        await program_ddr(ctx, dut.bus, DDR_ADDR + (0x800 if what == "alignment" else 0))
        if what == "batch":
            await write_reg(ctx, dut.bus, "BATCH", SMALL.ddr_batch + 2)
        if what == "samples":
            await write_reg(ctx, dut.bus, "SAMPLES", SMALL.ddr_samples + 1)
        await write_reg(ctx, dut.bus, "CTRL", start=1)

    seen = _ddr_error_case(stim)
    assert seen["status"]["error_code"] == ErrorCode.BAD_CONFIG and not seen["status"]["done"]


def test_ddr_read_error_is_reported_and_the_job_ends():
    vector = make_vector(SMALL, samples=12, batch=4, epochs=2, seed=34, ddr=DDRTiming(0))
    layout = vector.layout
    bad = {DDR_ADDR + 5 * layout.ddr_stride + b * layout.beat_bytes for b in (1, 2)}  # two beats of entry 5

    async def stim(ctx, dut):
        await load_adapters(ctx, dut, vector.adapter_bytes, layout.beat_bytes)
        await program_job(ctx, dut.bus, vector)
        await program_ddr(ctx, dut.bus)
        await write_reg(ctx, dut.bus, "CTRL", start=1)

    seen = _ddr_error_case(stim, pack_ddr_cache(layout, vector.cache).tobytes(), bad=bad)
    st = seen["status"]
    assert st["error_code"] == ErrorCode.DDR_READ and st["done"] and not st["busy"]
    assert not st["overrun"]  # a job's bad beats (two, in each of two epochs) are one error
