"""The DDR reader (hw/ddr_reader.py) against a model AXI4 memory with random latency and stalls:
every entry lands whole in its slot, bursts stay within 4 KB, ``filled`` follows the requests."""

import random

import pytest
from amaranth.sim import Simulator

from skip2lora.hw.axi4 import BOUNDARY_BYTES, BURST_INCR
from skip2lora.hw.ddr_reader import DDRReader, entry_bytes

BASE = 0x8_0000_0000 >> 4  # a 4 KB aligned buffer address (a 40-bit bus)


def _entry_beats(entry, lines, beat_bits):
    rng = random.Random(entry)
    return [rng.getrandbits(beat_bits) for _ in range(lines)]


def _run(dut, *, requests, stall, latency, seed, bad_beats=(), cycles_out=None):
    """Drive ``requests`` (entry, slot); the memory answers with per-channel random stalls and a
    random AR -> first R latency; returns (buffer writes, filled slots, error beats, AR log)."""
    rng = random.Random(seed)
    S, beat_bytes = dut.sample_lines, dut.beat_bits // 8
    stride = entry_bytes(S, dut.beat_bits)
    buf, filled, errors, ars, pending = {}, [], [], [], []
    state = {"done": False, "cycles": 0}

    def mem_beat(addr):
        off = addr - BASE
        entry, rest = divmod(off, stride)
        return _entry_beats(entry, S, dut.beat_bits)[rest // beat_bytes]

    async def driver(ctx):
        ctx.set(dut.base, BASE)
        for req in requests:
            while rng.random() < stall:
                await ctx.tick()
            ctx.set(dut.requests.p.entry, req[0])
            ctx.set(dut.requests.p.slot, req[1])
            ctx.set(dut.requests.valid, 1)
            await ctx.tick().until(dut.requests.ready)
            ctx.set(dut.requests.valid, 0)
        n = 0
        while len(filled) < len(requests) or not ctx.get(dut.idle):
            await ctx.tick()
            n += 1
            assert n < 100_000, "the reader hangs"
        state["done"] = True

    async def ar_channel(ctx):
        while True:
            ready = int(rng.random() >= stall)
            ctx.set(dut.axi.arready, ready)
            _, _, valid, addr, length, size, burst = await ctx.tick().sample(
                dut.axi.arvalid, dut.axi.araddr, dut.axi.arlen, dut.axi.arsize, dut.axi.arburst)
            if valid and ready:
                ars.append((addr, length + 1, size, burst))
                pending.append((state["cycles"] + rng.randint(0, latency), addr, length + 1))

    async def r_channel(ctx):
        beat_no = 0
        while True:
            if pending and pending[0][0] <= state["cycles"] and rng.random() >= stall:
                _, addr, beats = pending[0]
                ctx.set(dut.axi.rvalid, 1)
                ctx.set(dut.axi.rdata, mem_beat(addr + beat_no * beat_bytes))
                ctx.set(dut.axi.rlast, int(beat_no == beats - 1))
                ctx.set(dut.axi.rresp, 2 if (addr, beat_no) in bad_beats else 0)
                _, _, ready = await ctx.tick().sample(dut.axi.rready)
                if ready:
                    beat_no += 1
                    if beat_no == beats:
                        pending.pop(0)
                        beat_no = 0
            else:
                ctx.set(dut.axi.rvalid, 0)
                await ctx.tick()

    async def monitor(ctx):
        while True:
            _, _, en, addr, d, fv, fs, err = await ctx.tick().sample(
                dut.write.en, dut.write.addr, dut.write.data, dut.filled.valid, dut.filled.p, dut.error)
            state["cycles"] += 1
            if en:
                buf[addr] = d
            if fv:
                filled.append(fs)
            if err:
                errors.append(state["cycles"])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    for proc in (ar_channel, r_channel, monitor):
        sim.add_testbench(proc, background=True)
    sim.run()
    if cycles_out is not None:
        cycles_out.append(state["cycles"])
    return buf, filled, errors, ars


@pytest.mark.parametrize("lines, beat_bits", [(84, 128), (300, 128), (84, 256), (1, 128)],
                         ids=["kv260", "two_bursts", "wide_bus", "one_line"])
@pytest.mark.parametrize("stall", [0.0, 0.4], ids=["streaming", "stalls"])
def test_reader_lands_every_entry_in_its_slot(lines, beat_bits, stall):
    slots = 6
    dut = DDRReader(addr_width=40, beat_bits=beat_bits, sample_lines=lines, slots=slots, outstanding=3)
    rng = random.Random(lines + beat_bits)
    requests = [(rng.randrange(1 << 12), rng.randrange(slots)) for _ in range(9)]
    buf, filled, errors, ars = _run(dut, requests=requests, stall=stall, latency=20, seed=lines)
    assert filled == [s for _, s in requests] and errors == []
    last = {}
    for entry, slot in requests:
        last[slot] = entry
    for slot, entry in last.items():  # a slot holds the last entry fetched into it
        assert [buf[slot * lines + i] for i in range(lines)] == _entry_beats(entry, lines, beat_bits)
    beat_bytes = beat_bits // 8
    for addr, beats, size, burst in ars:
        assert (1 << size, burst) == (beat_bytes, BURST_INCR)
        assert addr // BOUNDARY_BYTES == (addr + beats * beat_bytes - 1) // BOUNDARY_BYTES  # within 4 KB
    assert sum(beats for _, beats, _, _ in ars) == lines * len(requests)
    assert len(ars) == len(requests) * -(-lines // min(256, BOUNDARY_BYTES // beat_bytes))


def test_reader_streams_one_beat_a_cycle():
    """An always-ready memory without latency: 16 entries of 84 beats in 16 x 84 cycles + a few."""
    dut = DDRReader(addr_width=40, beat_bits=128, sample_lines=84, slots=16)
    cycles = []
    _run(dut, requests=[(i, i) for i in range(16)], stall=0.0, latency=0, seed=1, cycles_out=cycles)
    assert 16 * 84 <= cycles[0] <= 16 * 84 + 8


def test_reader_flags_error_responses():
    dut = DDRReader(addr_width=40, beat_bits=128, sample_lines=10, slots=2)
    stride = entry_bytes(10, 128)
    bad = {(BASE + 3 * stride, 4)}
    _, filled, errors, _ = _run(dut, requests=[(2, 0), (3, 1)], stall=0.2, latency=5, seed=3, bad_beats=bad)
    assert filled == [0, 1] and len(errors) == 1


@pytest.mark.parametrize("kw, exc", [
    (dict(sample_lines=0), TypeError), (dict(beat_bits=96), ValueError), (dict(addr_width=20), ValueError),
    (dict(outstanding=True), TypeError),
])
def test_reader_checks_its_parameters(kw, exc):
    args = {**dict(addr_width=40, beat_bits=128, sample_lines=84, slots=4), **kw}
    with pytest.raises(exc):
        DDRReader(**args)


@pytest.mark.parametrize("lines, pause", [(84, 0.0), (84, 0.3), (300, 0.3)], ids=["kv260", "kv260-pauses", "two-bursts"])
def test_reader_against_cocotbext_axi_memory(lines, pause):
    """The reader's Verilog in a simulator against cocotbext-axi's AxiRamRead (its burst protocol
    checks), random AR/R pauses, 24 requests into 8 slots (sim/test_ddr_reader_axi.py)."""
    import json

    from skip2lora.sim.blocks import run_block

    dut = DDRReader(addr_width=40, beat_bits=128, sample_lines=lines, slots=8, entry_bits=12, outstanding=3)
    cfg = dict(lines=lines, beat_bits=128, slots=8, entry_bits=12, stride=entry_bytes(lines, 128), entries=12,
               requests=24, pause=pause, seed=lines + int(10 * pause))
    run_block("ddr_reader", dut, "skip2lora.sim.test_ddr_reader_axi", "ddr_reader_fills_slots",
              env={"SKIP2LORA_BLOCK": json.dumps(cfg)})
