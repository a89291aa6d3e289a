"""An amaranth.sim bench that runs a whole job on `Skip2LoRACore` through its AXI interfaces.

Stimulus and expectations come from `skip2lora.fixed.vectors`; the register addresses from the
hardware's register map.
"""

import os

from amaranth.sim import Simulator

from amaranth_helpers import axil_read, axil_write, from_beats, stream_recv, stream_send, to_beats
from skip2lora.driver.registers import job_registers
from skip2lora.hw.core import Skip2LoRACore
from skip2lora.hw.registers import decode, encode
from skip2lora.hw.regmap import REGISTER_MAP

REGS = REGISTER_MAP


def addr(name):
    return REGS.address(name)


async def write_reg(ctx, bus, name, value=None, **fields):
    if value is None:
        value = encode(REGS[name], **fields)
    await axil_write(ctx, bus, addr(name), value)


async def read_reg(ctx, bus, name):
    return await axil_read(ctx, bus, addr(name))


async def status(ctx, bus):
    return decode(REGS["STATUS"], await read_reg(ctx, bus, "STATUS"))


async def load_cache(ctx, dut, data, count, beat_bytes):
    await write_reg(ctx, dut.bus, "LOAD_COUNT", count)
    await write_reg(ctx, dut.bus, "CTRL", load_cache=1)
    await stream_send(ctx, dut.s_axis, to_beats(data, beat_bytes))


async def load_adapters(ctx, dut, data, beat_bytes):
    await write_reg(ctx, dut.bus, "CTRL", load_adapters=1)
    await stream_send(ctx, dut.s_axis, to_beats(data, beat_bytes))


async def read_adapters(ctx, dut, nbeats, beat_bytes):
    await write_reg(ctx, dut.bus, "CTRL", read_adapters=1)
    beats = await stream_recv(ctx, dut.m_axis, nbeats)
    assert [last for _, last in beats] == [False] * (nbeats - 1) + [True], "TLAST only on the last beat"
    return from_beats(beats, beat_bytes)


async def wait_idle(ctx, bus, timeout):
    for _ in range(max(timeout // 64, 1) + 1):
        st = await status(ctx, bus)
        if not st["busy"]:
            return st
        await ctx.tick().repeat(64)
    raise TimeoutError(f"accelerator still busy after {timeout} cycles")


async def program_job(ctx, bus, vector):
    for name, value in job_registers(vector.job).items():
        await write_reg(ctx, bus, name, value)


async def read_epoch_stats(ctx, bus, epochs):
    """(correct, loss, saturated) of each epoch from the STAT_* registers."""
    out = []
    for e in range(epochs):
        await write_reg(ctx, bus, "STAT_EPOCH", e)
        out.append(tuple([await read_reg(ctx, bus, n) for n in ("STAT_CORRECT", "STAT_LOSS", "STAT_SAT")]))
    return out


def simulate(config, bench, *, vcd_name=None):
    dut = Skip2LoRACore(config)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def testbench(ctx):
        await bench(ctx, dut)

    sim.add_testbench(testbench)
    if vcd_name and os.environ.get("WAVES"):
        with sim.write_vcd(f"{vcd_name}.vcd"):
            sim.run()
    else:
        sim.run()
    return dut


def run_vector(vector, *, vcd_name=None):
    """Load, train, read back; returns a dict of what the hardware reported."""
    out = {}
    bb = vector.layout.beat_bytes

    async def bench(ctx, dut):
        bus = dut.bus
        await load_cache(ctx, dut, vector.cache_bytes, len(vector.cache), bb)
        await load_adapters(ctx, dut, vector.adapter_bytes, bb)
        await program_job(ctx, bus, vector)
        await write_reg(ctx, bus, "CTRL", start=1)
        out["status"] = await wait_idle(ctx, bus, timeout=4 * vector.cycles + 1000)
        lo, hi = await read_reg(ctx, bus, "CYCLES_LO"), await read_reg(ctx, bus, "CYCLES_HI")
        out["cycles"] = lo | (hi << 32)
        out["correct"] = await read_reg(ctx, bus, "CORRECT")
        out["epochs"] = await read_epoch_stats(ctx, bus, vector.job.epochs)
        out["adapters"] = await read_adapters(ctx, dut, vector.layout.adapter_beats, bb)

    simulate(vector.config, bench, vcd_name=vcd_name)
    return out
