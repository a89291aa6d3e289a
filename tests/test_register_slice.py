"""The register slice (hw/register_slice.py): every beat once, in order, under random pauses on both
sides; a beat a cycle when the sink always takes; no combinational path through it."""

import random

import pytest
from amaranth.hdl import signed
from amaranth.sim import Simulator

from skip2lora.hw.register_slice import RegisterSlice


def run(beats, in_gap, out_gap, seed):
    dut = RegisterSlice(signed(12))
    rng = random.Random(seed)
    got, taken_in, taken_out = [], [], []

    async def source(ctx):
        for cycle_value in beats:
            while rng.random() < in_gap:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, cycle_value)
            await ctx.tick().until(dut.i.ready)
            taken_in.append(cycle_value)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        cycle = 0
        while len(got) < len(beats):
            ready = rng.random() >= out_gap
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                got.append(payload)
                taken_out.append(cycle)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run_until(1e-8 * 20 * (len(beats) + 10))
    return got, taken_out


@pytest.mark.parametrize("in_gap,out_gap,seed", [(0.0, 0.0, 0), (0.3, 0.0, 1), (0.0, 0.4, 2), (0.5, 0.5, 3)])
def test_register_slice_passes_every_beat_once_in_order(in_gap, out_gap, seed):
    beats = [random.Random(seed).randrange(-2048, 2048) for _ in range(200)]
    got, taken = run(beats, in_gap, out_gap, seed)
    assert got == beats
    if in_gap == out_gap == 0:
        # full throughput: a beat a cycle once the first has crossed (one cycle of latency)
        assert taken == list(range(1, len(beats) + 1))


def test_register_slice_has_no_combinational_path():
    """``i.ready`` does not follow ``o.ready``, nor ``o.valid`` / ``o.payload`` follow ``i``, within a cycle."""
    dut = RegisterSlice(signed(12))

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 5)
        await ctx.tick()                      # 5 into o
        assert (ctx.get(dut.o.valid), ctx.get(dut.o.payload)) == (1, 5)
        ctx.set(dut.i.payload, 6)
        await ctx.tick()                      # o holds: 6 waits in the skid register
        assert ctx.get(dut.i.ready) == 0
        ctx.set(dut.o.ready, 1)               # the sink takes now: i.ready stays low this cycle
        assert ctx.get(dut.i.ready) == 0
        ctx.set(dut.i.payload, 7)
        assert (ctx.get(dut.o.valid), ctx.get(dut.o.payload)) == (1, 5)
        await ctx.tick()                      # 5 taken; 6 moves to o
        assert ctx.get(dut.i.ready) == 1 and ctx.get(dut.o.payload) == 6

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_register_slice_rejects_a_non_shape():
    with pytest.raises(TypeError, match="shape-castable"):
        RegisterSlice("wide")
