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
    for name, value in job_registers(vector.job, vector.geometry).items():
        await write_reg(ctx, bus, name, value)


async def load_job(ctx, dut, vector):
    """A vector's cache entries and adapters loaded, its job's registers written (START not yet)."""
    bb = vector.layout.beat_bytes
    await load_cache(ctx, dut, vector.cache_bytes, len(vector.cache), bb)
    await load_adapters(ctx, dut, vector.adapter_bytes, bb)
    await program_job(ctx, dut.bus, vector)


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
        await load_job(ctx, dut, vector)
        await write_reg(ctx, bus, "CTRL", start=1)
        out["status"] = await wait_idle(ctx, bus, timeout=4 * vector.cycles + 1000)
        lo, hi = await read_reg(ctx, bus, "CYCLES_LO"), await read_reg(ctx, bus, "CYCLES_HI")
        out["cycles"] = lo | (hi << 32)
        out["correct"] = await read_reg(ctx, bus, "CORRECT")
        out["epochs"] = await read_epoch_stats(ctx, bus, vector.job.epochs)
        out["adapters"] = await read_adapters(ctx, dut, vector.layout.adapter_beats, bb)

    simulate(vector.config, bench, vcd_name=vcd_name)
    return out


DDR_ADDR = 0x12_3456_7000  # a 4 KB aligned buffer address on the 40-bit bus


def axi_memory(dut, data: bytes, *, base: int = DDR_ADDR, latency: int = 0, stall: float = 0.0, seed: int = 0,
               bad=None, log=None):
    """Two background testbenches that serve ``dut.m_axi``'s reads from ``data`` at ``base``: each
    burst's first beat ``latency`` cycles after its AR handshake at the earliest, then one beat a
    cycle, bursts back to back; ``stall`` > 0 adds random AR and R stalls. ``bad``: beat addresses
    answered with SLVERR. ``log`` collects (araddr, beats) of every burst."""
    import random

    rng = random.Random(seed)
    axi, beat_bytes = dut.m_axi, len(dut.m_axi.rdata) // 8
    state = {"cycle": 0, "pending": []}

    async def ar_channel(ctx):
        while True:
            ready = int(rng.random() >= stall)
            ctx.set(axi.arready, ready)
            _, _, valid, addr, length = await ctx.tick().sample(axi.arvalid, axi.araddr, axi.arlen)
            state["cycle"] += 1
            if valid and ready:
                state["pending"].append([state["cycle"] + latency, addr, length + 1, 0])
                if log is not None:
                    log.append((addr, length + 1))

    async def r_channel(ctx):
        while True:
            pending = state["pending"]
            if pending and pending[0][0] <= state["cycle"] and rng.random() >= stall:
                burst = pending[0]
                addr = burst[1] + burst[3] * beat_bytes
                off = addr - base
                beat = int.from_bytes(bytes(data[off:off + beat_bytes]), "little") if 0 <= off < len(data) else 0
                ctx.set(axi.rvalid, 1)
                ctx.set(axi.rdata, beat)
                ctx.set(axi.rlast, int(burst[3] == burst[2] - 1))
                ctx.set(axi.rresp, 2 if bad and addr in bad else 0)
                _, _, ready = await ctx.tick().sample(axi.rready)
                if ready:
                    burst[3] += 1
                    if burst[3] == burst[2]:
                        pending.pop(0)
            else:
                ctx.set(axi.rvalid, 0)
                await ctx.tick()

    return ar_channel, r_channel


def simulate_ddr(config, bench, data: bytes, *, vcd_name=None, **memory):
    """`simulate` with the DDR buffer ``data`` at `DDR_ADDR` served on ``m_axi`` (`axi_memory`)."""
    dut = Skip2LoRACore(config)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def testbench(ctx):
        await bench(ctx, dut)

    sim.add_testbench(testbench)
    for proc in axi_memory(dut, data, **memory):
        sim.add_testbench(proc, background=True)
    if vcd_name and os.environ.get("WAVES"):
        with sim.write_vcd(f"{vcd_name}.vcd"):
            sim.run()
    else:
        sim.run()
    return dut


async def program_ddr(ctx, bus, addr=DDR_ADDR):
    for name, value in (("CACHE_MODE", 1), ("DDR_ADDR_LO", addr & 0xFFFF_FFFF), ("DDR_ADDR_HI", addr >> 32)):
        await write_reg(ctx, bus, name, value)


def run_ddr_vector(vector, *, vcd_name=None, **memory):
    """`run_vector` for a job in DDR mode: the entries in a DDR buffer served by `axi_memory`."""

    out = {}
    bb = vector.layout.beat_bytes

    async def bench(ctx, dut):
        bus = dut.bus
        await load_adapters(ctx, dut, vector.adapter_bytes, bb)
        await program_job(ctx, bus, vector)
        await program_ddr(ctx, bus)
        await write_reg(ctx, bus, "CTRL", start=1)
        out["status"] = await wait_idle(ctx, bus, timeout=8 * vector.cycles + 10_000)
        c_lo, c_hi = await read_reg(ctx, bus, "CYCLES_LO"), await read_reg(ctx, bus, "CYCLES_HI")
        out["cycles"] = c_lo | (c_hi << 32)
        out["correct"] = await read_reg(ctx, bus, "CORRECT")
        out["epochs"] = await read_epoch_stats(ctx, bus, vector.job.epochs)
        await write_reg(ctx, bus, "CTRL", clear_error=1)  # (a latched error blocks READ_ADAPTERS)
        out["adapters"] = await read_adapters(ctx, dut, vector.layout.adapter_beats, bb)

    simulate_ddr(vector.config, bench, vector.ddr_bytes.tobytes(), vcd_name=vcd_name,
                 **memory)
    return out
