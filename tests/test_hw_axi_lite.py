"""Tests of the register description (hw/registers.py) and the AXI4-Lite register bank.

The bank is driven from the manager side by small async helpers (axil_write/axil_read) with
optional AW/W skew and B/R backpressure; a background monitor checks the AXI rules on every run
(responses held until accepted, OKAY only, no ready while a response is pending, no duplicate
responses). Set WAVES=1 to dump a VCD per simulation into pytest's tmp_path.
"""

import json
import os
import random
from contextlib import nullcontext

import pytest
from amaranth.back import verilog
from amaranth.hdl import ClockDomain, Module, Shape
from amaranth.lib.wiring import Flow
from amaranth.sim import Simulator

from skip2lora.hw.axi_lite import AXI4LiteRegisterBank, AXI4LiteSignature
from skip2lora.hw.registers import Access, Field, Register, RegisterMap, decode, encode

from amaranth_helpers import OKAY, axil_read, axil_write  # noqa: E402

RW, RO, W1P, W1C = Access.RW, Access.RO, Access.W1P, Access.W1C
ID_VALUE = 0x5EC0_2A01


def make_regmap():
    return RegisterMap([
        Register("ctrl", 0x00, (
            Field("enable", 0, 1, RW, reset=1, doc="run the engine"),
            Field("start", 1, 1, W1P, doc="start one job"),
            Field("mode", 8, 4, RW, reset=5),
            Field("cmd", 16, 8, W1P),
        ), doc="control"),
        Register("scale", 0x04, (Field("value", 0, 32, RW, reset=0x1234_5678),)),
        Register("span", 0x08, (Field("lo", 4, 8, RW, reset=0xAB), Field("hi", 20, 8, RW))),
        Register("status", 0x10, (
            Field("busy", 0, 1, RO),
            Field("done", 1, 1, W1C),
            Field("error", 2, 2, W1C, reset=2),
            Field("count", 8, 16, RO),
        )),
        Register("id", 0x1C, (Field("value", 0, 32, RO),)),
    ])


UNMAPPED = (0x0C, 0x14, 0x18)


# --- simulation helpers -------------------------------------------------------------------------

def protocol_monitor(bus, counts):
    """Background checker of the subordinate's side of the AXI4-Lite rules."""
    async def monitor(ctx):
        last = None
        async for _, rst, *v in ctx.tick().sample(
                bus.awready, bus.wready, bus.arready, bus.bvalid, bus.bready, bus.bresp,
                bus.rvalid, bus.rready, bus.rdata, bus.rresp):
            awready, wready, arready, bvalid, bready, bresp, rvalid, rready, rdata, rresp = v
            if rst:
                last = None
                continue
            if last is not None:
                if last["b_stalled"]:
                    assert bvalid and bresp == last["bresp"], "B response not held"
                if last["r_stalled"]:
                    assert rvalid and (rdata, rresp) == last["r"], "R response not held"
            assert not (bvalid and (awready or wready)), "AW/W ready while B pending"
            assert not (rvalid and arready), "AR ready while R pending"
            assert not bvalid or bresp == OKAY
            assert not rvalid or rresp == OKAY
            counts["b"] += bool(bvalid and bready)
            counts["r"] += bool(rvalid and rready)
            last = {"b_stalled": bvalid and not bready, "bresp": bresp,
                    "r_stalled": rvalid and not rready, "r": (rdata, rresp)}
    return monitor


def pulse_recorder(signal, log):
    """Background recorder of every cycle in which `signal` is non-zero."""
    async def record(ctx):
        async for _, _, value in ctx.tick().sample(signal):
            if value:
                log.append(value)
    return record


def run(bank, *benches, background=(), cd=None, max_cycles=5000, tmp_path=None, name="sim"):
    """Simulate `bank` with the given testbenches; returns the monitor's handshake counts."""
    m = Module()
    m.domains.sync = cd if cd is not None else ClockDomain("sync")
    m.submodules.bank = bank
    sim = Simulator(m)
    sim.add_clock(1e-8)
    for bench in benches:
        sim.add_testbench(bench)
    counts = {"b": 0, "r": 0}
    sim.add_testbench(protocol_monitor(bank.bus, counts), background=True)
    for proc in background:
        sim.add_testbench(proc, background=True)

    async def watchdog(ctx):
        cycles = 0
        async for _ in ctx.tick():   # counts through domain resets, unlike .repeat()
            cycles += 1
            if cycles == max_cycles:
                break
        raise AssertionError(f"testbench still running after {max_cycles} cycles")
    sim.add_testbench(watchdog, background=True)
    waves = os.environ.get("WAVES") == "1" and tmp_path is not None
    with sim.write_vcd(str(tmp_path / f"{name}.vcd")) if waves else nullcontext():
        sim.run()
    return counts


def expected_word(reg, rw_state, ro_values=None, held=None):
    """Read value of `reg` from a model: RW stored values, RO inputs, W1C held bits."""
    ro_values, held = ro_values or {}, held or {}
    values = {}
    for f in reg.fields:
        if f.access is RW:
            values[f.name] = rw_state[(reg.name, f.name)]
        elif f.access is RO:
            values[f.name] = ro_values.get((reg.name, f.name), 0)
        elif f.access is W1C:
            values[f.name] = held.get((reg.name, f.name), f.reset)
    return encode(reg, **values)


def reset_rw_state(regmap):
    return {(r.name, f.name): f.reset for r in regmap for f in r.fields if f.access is RW}


def strobe_mask(strb):
    return sum(0xFF << (8 * i) for i in range(4) if strb >> i & 1)


@pytest.fixture
def regmap():
    return make_regmap()


@pytest.fixture
def bank(regmap):
    bank = AXI4LiteRegisterBank(regmap)
    bank._MustUse__silence = True   # tests of the signature never elaborate it
    return bank


# --- register bank behaviour --------------------------------------------------------------------

def test_reset_values_and_domain_reset(bank, regmap, tmp_path):
    cd = ClockDomain("sync")
    state = reset_rw_state(regmap)

    async def bench(ctx):
        for reg in regmap:
            assert await axil_read(ctx, bank.bus, reg.address) == expected_word(reg, state)
        assert ctx.get(bank.ctrl_enable) == 1 and ctx.get(bank.ctrl_mode) == 5
        assert ctx.get(bank.scale_value) == 0x1234_5678
        assert ctx.get(bank.span_lo) == 0xAB and ctx.get(bank.span_hi) == 0
        assert ctx.get(bank.status_error_held) == 2 and ctx.get(bank.status_done_held) == 0
        await axil_write(ctx, bank.bus, 0x04, 0xDEAD_BEEF)
        await axil_write(ctx, bank.bus, 0x00, encode(regmap["ctrl"], enable=0, mode=9))
        await axil_write(ctx, bank.bus, 0x10, encode(regmap["status"], error=3))
        # Leave a write response pending across the reset: it must be dropped.
        ctx.set(bank.bus.awvalid, 1)
        ctx.set(bank.bus.wvalid, 1)
        ctx.set(bank.bus.awaddr, 0x08)
        await ctx.tick().repeat(3)
        ctx.set(bank.bus.awvalid, 0)
        ctx.set(bank.bus.wvalid, 0)
        assert ctx.get(bank.bus.bvalid) == 1
        ctx.set(cd.rst, 1)
        await ctx.tick()
        ctx.set(cd.rst, 0)
        assert ctx.get(bank.bus.bvalid) == 0 and ctx.get(bank.bus.awready) == 1
        assert ctx.get(bank.scale_value) == 0x1234_5678
        assert ctx.get(bank.ctrl_enable) == 1 and ctx.get(bank.ctrl_mode) == 5
        assert ctx.get(bank.status_error_held) == 2
        for reg in regmap:
            assert await axil_read(ctx, bank.bus, reg.address) == expected_word(reg, state)

    run(bank, bench, cd=cd, tmp_path=tmp_path, name="reset")


def test_rw_round_trip_with_byte_strobes(bank, regmap, tmp_path):
    span = regmap["span"]

    async def bench(ctx):
        await axil_write(ctx, bank.bus, 0x04, 0xCAFE_F00D)
        assert await axil_read(ctx, bank.bus, 0x04) == 0xCAFE_F00D
        assert ctx.get(bank.scale_value) == 0xCAFE_F00D
        value = 0xCAFE_F00D
        for strb, data in [(0b0001, 0x1111_1111), (0b0100, 0x2222_2222), (0b1010, 0x3333_3333),
                           (0b0000, 0x4444_4444), (0b1111, 0x0102_0304)]:
            await axil_write(ctx, bank.bus, 0x04, data, strb)
            value = (value & ~strobe_mask(strb)) | (data & strobe_mask(strb))
            assert await axil_read(ctx, bank.bus, 0x04) == value
            assert ctx.get(bank.scale_value) == value
        # span.lo (bits 4..11) straddles bytes 0 and 1: each byte updates only with its strobe.
        await axil_write(ctx, bank.bus, 0x08, encode(span, lo=0x5C, hi=0x7E), strb=0b0001)
        assert ctx.get(bank.span_lo) == 0xAC and ctx.get(bank.span_hi) == 0
        await axil_write(ctx, bank.bus, 0x08, encode(span, lo=0x5C, hi=0x7E), strb=0b0110)
        assert ctx.get(bank.span_lo) == 0x5C and ctx.get(bank.span_hi) == 0x0E
        await axil_write(ctx, bank.bus, 0x08, encode(span, lo=0x5C, hi=0x7E), strb=0b1000)
        assert ctx.get(bank.span_hi) == 0x7E
        assert decode(span, await axil_read(ctx, bank.bus, 0x08)) == {"lo": 0x5C, "hi": 0x7E}
        # Bits outside fields read back as 0; the low address bits are ignored.
        await axil_write(ctx, bank.bus, 0x08, 0xFFFF_FFFF)
        assert await axil_read(ctx, bank.bus, 0x0B) == span.fields[0].mask | span.fields[1].mask

    run(bank, bench, tmp_path=tmp_path, name="rw")


def test_ro_reflects_hardware_and_ignores_writes(bank, regmap, tmp_path):
    status = regmap["status"]

    async def bench(ctx):
        ctx.set(bank.id_value, ID_VALUE)
        assert await axil_read(ctx, bank.bus, 0x1C) == ID_VALUE
        ctx.set(bank.status_busy, 1)
        ctx.set(bank.status_count, 0xBEEF)
        word = await axil_read(ctx, bank.bus, 0x10)
        assert decode(status, word) == {"busy": 1, "done": 0, "error": 2, "count": 0xBEEF}
        ctx.set(bank.status_count, 7)
        assert decode(status, await axil_read(ctx, bank.bus, 0x10))["count"] == 7
        await axil_write(ctx, bank.bus, 0x1C, 0)
        await axil_write(ctx, bank.bus, 0x10, encode(status, busy=0, count=0))
        assert await axil_read(ctx, bank.bus, 0x1C) == ID_VALUE
        assert decode(status, await axil_read(ctx, bank.bus, 0x10)) == {
            "busy": 1, "done": 0, "error": 2, "count": 7}

    run(bank, bench, tmp_path=tmp_path, name="ro")


def test_unmapped_reads_zero_and_writes_ignored(bank, regmap, tmp_path):
    state = reset_rw_state(regmap)

    async def bench(ctx):
        ctx.set(bank.id_value, ID_VALUE)
        for addr in UNMAPPED:
            await axil_write(ctx, bank.bus, addr, 0xFFFF_FFFF)
            assert await axil_read(ctx, bank.bus, addr) == 0
        ro = {("id", "value"): ID_VALUE}
        for reg in regmap:
            assert await axil_read(ctx, bank.bus, reg.address) == expected_word(reg, state, ro)

    run(bank, bench, tmp_path=tmp_path, name="unmapped")


def test_w1p_one_pulse_per_write_with_written_bits(bank, regmap, tmp_path):
    ctrl = regmap["ctrl"]
    start, cmd = [], []

    async def bench(ctx):
        await axil_write(ctx, bank.bus, 0x00, encode(ctrl, enable=1, start=1, cmd=0xA5, mode=3))
        await ctx.tick().repeat(3)
        assert start == [1] and cmd == [0xA5]
        assert ctx.get(bank.ctrl_mode) == 3   # RW fields of a mixed register are written too
        assert decode(ctrl, await axil_read(ctx, bank.bus, 0x00)) == {
            "enable": 1, "start": 0, "mode": 3, "cmd": 0}  # W1P reads as 0
        await axil_write(ctx, bank.bus, 0x00, encode(ctrl, enable=1, mode=3))  # no ones: no pulse
        await axil_write(ctx, bank.bus, 0x00, encode(ctrl, cmd=0xFF, mode=3), strb=0b0011)
        await ctx.tick().repeat(3)
        assert start == [1] and cmd == [0xA5]
        await axil_write(ctx, bank.bus, 0x00, encode(ctrl, start=1, cmd=0x0F, mode=3))
        await axil_write(ctx, bank.bus, 0x00, encode(ctrl, start=1, cmd=0xF0, mode=3))
        await ctx.tick().repeat(3)
        assert start == [1, 1, 1] and cmd == [0xA5, 0x0F, 0xF0]
        assert ctx.get(bank.ctrl_enable) == 0

    run(bank, bench, background=[pulse_recorder(bank.ctrl_start, start),
                                 pulse_recorder(bank.ctrl_cmd, cmd)],
        tmp_path=tmp_path, name="w1p")


def test_w1c_set_hold_clear(bank, regmap, tmp_path):
    status = regmap["status"]

    async def pulse(ctx, port, value):
        ctx.set(port, value)
        await ctx.tick()
        ctx.set(port, 0)

    async def bench(ctx):
        await axil_write(ctx, bank.bus, 0x10, encode(status, error=3))   # clear reset value
        assert ctx.get(bank.status_error_held) == 0
        await pulse(ctx, bank.status_done, 1)
        await ctx.tick().repeat(5)
        assert ctx.get(bank.status_done_held) == 1
        assert decode(status, await axil_read(ctx, bank.bus, 0x10))["done"] == 1
        await axil_write(ctx, bank.bus, 0x10, encode(status, done=0))     # writing 0: no effect
        await axil_write(ctx, bank.bus, 0x10, encode(status, done=1), strb=0b1110)  # masked
        assert decode(status, await axil_read(ctx, bank.bus, 0x10))["done"] == 1
        await axil_write(ctx, bank.bus, 0x10, encode(status, done=1))
        assert ctx.get(bank.status_done_held) == 0
        assert decode(status, await axil_read(ctx, bank.bus, 0x10))["done"] == 0
        # Multi-bit: set bits accumulate, clears are per bit.
        await pulse(ctx, bank.status_error, 0b01)
        await pulse(ctx, bank.status_error, 0b10)
        assert ctx.get(bank.status_error_held) == 0b11
        await axil_write(ctx, bank.bus, 0x10, encode(status, error=0b01))
        assert decode(status, await axil_read(ctx, bank.bus, 0x10))["error"] == 0b10
        # A set during the clear wins (set held through the whole write).
        ctx.set(bank.status_done, 1)
        await axil_write(ctx, bank.bus, 0x10, encode(status, done=1, error=0b10))
        ctx.set(bank.status_done, 0)
        assert decode(status, await axil_read(ctx, bank.bus, 0x10)) == {
            "busy": 0, "done": 1, "error": 0, "count": 0}
        # The hardware clear (a soft reset) clears per bit like a write of ones.
        await pulse(ctx, bank.status_error, 0b11)
        await pulse(ctx, bank.status_error_clear, 0b10)
        assert ctx.get(bank.status_error_held) == 0b01
        await pulse(ctx, bank.status_done_clear, 1)
        assert ctx.get(bank.status_done_held) == 0

    run(bank, bench, tmp_path=tmp_path, name="w1c")


@pytest.mark.parametrize("aw_delay,w_delay", [(0, 0), (0, 1), (0, 4), (1, 0), (4, 0), (2, 2)])
def test_aw_w_ordering(bank, aw_delay, w_delay, tmp_path):
    async def bench(ctx):
        data = 0x0100_0000 * (aw_delay + 1) + w_delay
        await axil_write(ctx, bank.bus, 0x04, data, aw_delay=aw_delay, w_delay=w_delay)
        assert ctx.get(bank.scale_value) == data
        assert await axil_read(ctx, bank.bus, 0x04) == data

    counts = run(bank, bench, tmp_path=tmp_path, name=f"order_{aw_delay}_{w_delay}")
    assert counts == {"b": 1, "r": 1}


@pytest.mark.parametrize("b_delay,r_delay", [(1, 0), (0, 1), (3, 5)])
def test_backpressure_on_b_and_r(bank, b_delay, r_delay, tmp_path):
    async def bench(ctx):
        await axil_write(ctx, bank.bus, 0x04, 0xA5A5_0000 + b_delay, b_delay=b_delay)
        # While R is held, no further read address is accepted (one outstanding read).
        ctx.set(bank.bus.araddr, 0x04)
        ctx.set(bank.bus.arvalid, 1)
        await ctx.tick().until(bank.bus.arready)
        ctx.set(bank.bus.arvalid, 0)
        for _ in range(r_delay + 2):
            await ctx.tick()
            assert not ctx.get(bank.bus.arready)
        assert ctx.get(bank.bus.rvalid)
        ctx.set(bank.bus.rready, 1)
        rdata, = await ctx.tick().sample(bank.bus.rdata).until(bank.bus.rvalid)
        ctx.set(bank.bus.rready, 0)
        assert rdata == 0xA5A5_0000 + b_delay
        assert await axil_read(ctx, bank.bus, 0x04, r_delay=r_delay) == 0xA5A5_0000 + b_delay

    counts = run(bank, bench, tmp_path=tmp_path, name=f"bp_{b_delay}_{r_delay}")
    assert counts == {"b": 1, "r": 2}


def test_back_to_back_transactions(bank, regmap, tmp_path):
    values = [0x1000_0001 * i for i in range(1, 9)]

    async def bench(ctx):
        for v in values:
            await axil_write(ctx, bank.bus, 0x04, v)
            assert await axil_read(ctx, bank.bus, 0x04) == v
        for v in values:
            await axil_write(ctx, bank.bus, 0x04, v)
        for addr in (0x04, 0x04, 0x0C, 0x08):
            await axil_read(ctx, bank.bus, addr)

    counts = run(bank, bench, tmp_path=tmp_path, name="b2b")
    assert counts == {"b": 16, "r": 12}


def test_concurrent_read_and_write_channels(bank, tmp_path):
    """Writes and reads issued from independent managers: nothing lost or duplicated."""
    reads = []

    async def writer(ctx):
        for i in range(10):
            await axil_write(ctx, bank.bus, 0x04, i, aw_delay=i % 3, w_delay=(i + 1) % 2)

    async def reader(ctx):
        ctx.set(bank.id_value, ID_VALUE)
        for i in range(10):
            reads.append(await axil_read(ctx, bank.bus, 0x1C, ar_delay=i % 2, r_delay=i % 3))

    counts = run(bank, writer, reader, tmp_path=tmp_path, name="concurrent")
    assert reads == [ID_VALUE] * 10 and counts == {"b": 10, "r": 10}


@pytest.mark.parametrize("aw_start,w_start", [(6, 0), (0, 6), (0, 0)])
def test_independent_channel_managers(bank, regmap, aw_start, w_start, tmp_path):
    """AW, W and B driven by separate processes, W running ahead of AW (or behind): each data
    beat pairs with its own address, exactly one B per write."""
    writes = [(0x04, 0x1111_1111), (0x08, encode(regmap["span"], lo=0x22, hi=0x33)),
              (0x04, 0x4444_4444), (0x14, 0x5555_5555), (0x08, encode(regmap["span"], lo=0x66))]
    responses = []

    async def send(ctx, valid, ready, start, beats):
        if start:
            await ctx.tick().repeat(start)
        for beat in beats:
            for sig, value in beat:
                ctx.set(sig, value)
            ctx.set(valid, 1)
            await ctx.tick().until(ready)
            ctx.set(valid, 0)

    async def aw(ctx):
        await send(ctx, bank.bus.awvalid, bank.bus.awready, aw_start,
                   [[(bank.bus.awaddr, a)] for a, _ in writes])

    async def w(ctx):
        await send(ctx, bank.bus.wvalid, bank.bus.wready, w_start,
                   [[(bank.bus.wdata, d), (bank.bus.wstrb, 0xF)] for _, d in writes])

    async def b(ctx):
        ctx.set(bank.bus.bready, 1)
        for _ in writes:
            responses.append(await ctx.tick().sample(bank.bus.bresp).until(bank.bus.bvalid))
            assert ctx.get(bank.scale_value) in (0x1234_5678, 0x1111_1111, 0x4444_4444)
        ctx.set(bank.bus.bready, 0)
        await ctx.tick().repeat(10)
        assert ctx.get(bank.scale_value) == 0x4444_4444
        assert (ctx.get(bank.span_lo), ctx.get(bank.span_hi)) == (0x66, 0)

    counts = run(bank, aw, w, b, tmp_path=tmp_path, name=f"channels_{aw_start}_{w_start}")
    assert responses == [(OKAY,)] * len(writes) and counts == {"b": len(writes), "r": 0}


def test_w1c_set_wins_over_clear_in_the_same_cycle(bank, regmap, tmp_path):
    status = regmap["status"]

    async def host(ctx):
        # AW and W are accepted at edge 0, so the write is applied at edge 1.
        await axil_write(ctx, bank.bus, 0x10, encode(status, done=1, error=0b11))
        assert ctx.get(bank.status_done_held) == 1 and ctx.get(bank.status_error_held) == 0

    async def hardware(ctx):
        await ctx.tick()
        ctx.set(bank.status_done, 1)   # high only at edge 1, the clearing edge
        await ctx.tick()
        ctx.set(bank.status_done, 0)

    run(bank, host, hardware, tmp_path=tmp_path, name="w1c_race")


@pytest.mark.parametrize("ar_delay,expect_new", [(0, False), (1, True), (2, True)])
def test_write_first_when_read_and_write_coincide(bank, ar_delay, expect_new, tmp_path):
    """AW and W are accepted at edge 1: a read accepted at the same edge or later sees the
    written value (write first); one accepted at edge 0, before the write, sees the old one."""
    got = []

    async def writer(ctx):
        await axil_write(ctx, bank.bus, 0x04, 0xCAFE_F00D, aw_delay=1, w_delay=1)

    async def reader(ctx):
        # axil_read raises ARVALID after ar_delay edges; it is accepted at edge ar_delay.
        got.append(await axil_read(ctx, bank.bus, 0x04, ar_delay=ar_delay))

    run(bank, writer, reader, tmp_path=tmp_path, name=f"priority_{ar_delay}")
    assert got == [0xCAFE_F00D if expect_new else 0x1234_5678]


def test_randomised_against_model(bank, regmap, tmp_path):
    rng = random.Random(2024)
    state = reset_rw_state(regmap)
    ro = {("id", "value"): ID_VALUE}
    addresses = [r.address for r in regmap] + list(UNMAPPED)
    n_writes = n_reads = 0

    async def bench(ctx):
        nonlocal n_writes, n_reads
        ctx.set(bank.id_value, ID_VALUE)
        for _ in range(120):
            addr = rng.choice(addresses)
            delays = {k: rng.choice([0, 0, 1, 3]) for k in ("aw", "w", "b", "ar", "r")}
            if rng.random() < 0.5:
                data, strb = rng.getrandbits(32), rng.choice([0xF, 0xF, rng.getrandbits(4)])
                await axil_write(ctx, bank.bus, addr, data, strb, aw_delay=delays["aw"],
                                 w_delay=delays["w"], b_delay=delays["b"])
                n_writes += 1
                reg = next((r for r in regmap if r.address == addr), None)
                for f in reg.fields if reg else ():
                    if f.access is RW:
                        m = strobe_mask(strb) & f.mask
                        old = state[(reg.name, f.name)] << f.offset
                        state[(reg.name, f.name)] = ((old & ~m) | (data & m)) >> f.offset
            else:
                reg = next((r for r in regmap if r.address == addr), None)
                # W1C fields only change when the host clears them: track the held value.
                held = {(reg.name, f.name): ctx.get(getattr(bank, f"{reg.name}_{f.name}_held"))
                        for f in reg.fields if f.access is W1C} if reg else {}
                want = expected_word(reg, state, ro, held) if reg else 0
                got = await axil_read(ctx, bank.bus, addr,
                                      ar_delay=delays["ar"], r_delay=delays["r"])
                n_reads += 1
                assert got == want, f"read {addr:#x}: {got:#x} != {want:#x}"

    counts = run(bank, bench, max_cycles=20000, tmp_path=tmp_path, name="random")
    assert counts == {"b": n_writes, "r": n_reads}


def test_verilog_export(bank):
    text = verilog.convert(bank, name="regbank")
    assert "module regbank" in text
    for port in ("bus__awaddr", "bus__rdata", "ctrl_enable", "ctrl_start", "status_done",
                 "status_done_held", "id_value"):
        assert port in text


# --- signature and component construction -------------------------------------------------------

def test_signature_members_and_flip():
    sig = AXI4LiteSignature(6)
    assert sig.addr_width == 6 and sig.data_width == 32
    outs = {"awaddr": 6, "awprot": 3, "awvalid": 1, "wdata": 32, "wstrb": 4, "wvalid": 1,
            "bready": 1, "araddr": 6, "arprot": 3, "arvalid": 1, "rready": 1}
    ins = {"awready": 1, "wready": 1, "bresp": 2, "bvalid": 1, "arready": 1, "rdata": 32,
           "rresp": 2, "rvalid": 1}
    assert set(sig.members) == set(outs) | set(ins)
    for name, width in outs.items():
        assert sig.members[name].flow is Flow.Out and Shape.cast(sig.members[name].shape).width == width
    for name, width in ins.items():
        assert sig.members[name].flow is Flow.In and Shape.cast(sig.members[name].shape).width == width
    assert sig.flip().members["awvalid"].flow is Flow.In
    assert sig == AXI4LiteSignature(6) and sig != AXI4LiteSignature(7)
    assert repr(sig) == "AXI4LiteSignature(addr_width=6, data_width=32)"
    with pytest.raises(TypeError, match=r"Address width must be a positive integer, not 0"):
        AXI4LiteSignature(0)
    with pytest.raises(ValueError, match=r"Data width must be 32, not 64"):
        AXI4LiteSignature(6, data_width=64)


def test_bank_ports(bank, regmap):
    members = bank.signature.members
    assert members["bus"].flow is Flow.In
    assert members["bus"].signature.flip() == AXI4LiteSignature(regmap.address_width)
    expected = {"ctrl_enable": (Flow.Out, 1, 1), "ctrl_start": (Flow.Out, 1, 0),
                "ctrl_mode": (Flow.Out, 4, 5), "ctrl_cmd": (Flow.Out, 8, 0),
                "scale_value": (Flow.Out, 32, 0x1234_5678), "span_lo": (Flow.Out, 8, 0xAB),
                "span_hi": (Flow.Out, 8, 0), "status_busy": (Flow.In, 1, 0),
                "status_done": (Flow.In, 1, 0), "status_done_held": (Flow.Out, 1, 0),
                "status_error": (Flow.In, 2, 0), "status_error_held": (Flow.Out, 2, 2),
                "status_count": (Flow.In, 16, 0), "id_value": (Flow.In, 32, 0),
                "status_done_clear": (Flow.In, 1, 0), "status_error_clear": (Flow.In, 2, 0)}
    assert set(members) == {"bus"} | set(expected)
    for name, (flow, width, init) in expected.items():
        assert (members[name].flow, Shape.cast(members[name].shape).width, members[name].init or 0) == \
            (flow, width, init), name


def test_bank_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"Register map must be a RegisterMap, not \[\]"):
        AXI4LiteRegisterBank([])
    clash = RegisterMap([Register("a_b", 0, (Field("c", 0, 1, RW),)),
                         Register("a", 4, (Field("b_c", 0, 1, RW),))])
    with pytest.raises(ValueError, match=r"Port name 'a_b_c' of field 'b_c' in register 'a'"):
        AXI4LiteRegisterBank(clash)


# --- register description -----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(name=3), TypeError, r"Field name must be a string, not 3"),
    (dict(name="1x"), ValueError, r"Field name must be an identifier .* not '1x'"),
    (dict(name="_x"), ValueError, r"not '_x'"),
    (dict(offset="0"), TypeError, r"Field 'f': offset must be an integer, not '0'"),
    (dict(offset=-1), ValueError, r"Field 'f': offset must be a non-negative integer, not -1"),
    (dict(width=1.0), TypeError, r"Field 'f': width must be a positive integer, not 1.0"),
    (dict(width=True), TypeError, r"Field 'f': width must be a positive integer, not True"),
    (dict(width=0), ValueError, r"Field 'f': width must be a positive integer, not 0"),
    (dict(offset=30, width=3), ValueError,
     r"Field 'f': offset \+ width must be at most 32, not 30 \+ 3 = 33"),
    (dict(access="RW"), TypeError, r"Field 'f': access must be an Access, not 'RW'"),
    (dict(reset=None), TypeError, r"Field 'f': reset must be an integer, not None"),
    (dict(width=4, reset=16), ValueError, r"Field 'f': reset must be in range \[0, 16\), not 16"),
    (dict(reset=-1), ValueError, r"Field 'f': reset must be in range \[0, 2\), not -1"),
    (dict(access=Access.RO, reset=1), ValueError, r"Field 'f': reset must be 0 for RO fields"),
    (dict(access=Access.W1P, reset=1), ValueError, r"Field 'f': reset must be 0 for W1P"),
    (dict(doc=None), TypeError, r"Field 'f': doc must be a string, not None"),
])
def test_field_validation(kwargs, exc, match):
    args = dict(name="f", offset=0, width=1, access=Access.RW) | kwargs
    with pytest.raises(exc, match=match):
        Field(**args)


def test_field_properties():
    f = Field("lo", 4, 8, Access.RW, reset=0xAB, doc="low")
    assert f.mask == 0xFF0 and f.reset == 0xAB
    assert Field("w", 0, 32, Access.W1C, reset=2**32 - 1).mask == 0xFFFF_FFFF
    with pytest.raises(Exception):
        f.width = 3  # frozen


@pytest.mark.parametrize("args,exc,match", [
    (("r-1", 0, ()), ValueError, r"Register name must be an identifier .* not 'r-1'"),
    ((None, 0, ()), TypeError, r"Register name must be a string, not None"),
    (("r", 2, (Field("a", 0, 1, RW),)), ValueError,
     r"Register 'r': address must be a non-negative multiple of 4, not 0x2"),
    (("r", -4, (Field("a", 0, 1, RW),)), ValueError, r"Register 'r': address must be"),
    (("r", 4.0, (Field("a", 0, 1, RW),)), TypeError,
     r"Register 'r': address must be an integer, not 4.0"),
    (("r", 0, ()), ValueError, r"Register 'r': must have at least one field"),
    (("r", 0, 5), TypeError, r"Register 'r': fields must be an iterable of Field, not 5"),
    (("r", 0, "ab"), TypeError, r"Register 'r': fields must be an iterable of Field"),
    (("r", 0, ("a",)), TypeError, r"Register 'r': fields must be Field objects, not 'a'"),
    (("r", 0, (Field("a", 0, 1, RW), Field("a", 1, 1, RW))), ValueError,
     r"Register 'r': duplicate field name 'a'"),
    (("r", 0, (Field("a", 0, 8, RW), Field("b", 7, 2, RO))), ValueError,
     r"Register 'r': field 'b' at bits \[8:7\] overlaps another field"),
])
def test_register_validation(args, exc, match):
    with pytest.raises(exc, match=match):
        Register(*args)


def test_register_accepts_list_and_mixed_access():
    reg = Register("r", 8, [Field("a", 0, 1, RW), Field("b", 1, 1, W1C), Field("c", 2, 3, RO)])
    assert isinstance(reg.fields, tuple) and reg.field("c").width == 3
    with pytest.raises(KeyError, match=r"Register 'r' has no field 'z'"):
        reg.field("z")


def test_register_map(regmap):
    assert regmap.data_width == 32
    assert regmap.address_width == 5    # highest register 0x1C: bytes 0..0x1F
    assert [r.name for r in regmap.registers] == ["ctrl", "scale", "span", "status", "id"]
    assert regmap["span"].address == 0x08 and regmap.address("status") == 0x10
    assert regmap.field("ctrl", "mode") == Field("mode", 8, 4, RW, reset=5)
    assert "ctrl" in regmap and "nope" not in regmap and len(regmap) == 5
    with pytest.raises(KeyError, match=r"No register named 'nope'"):
        regmap["nope"]
    with pytest.raises(KeyError, match=r"Register 'ctrl' has no field 'nope'"):
        regmap.field("ctrl", "nope")
    one = lambda name, addr: Register(name, addr, (Field("f", 0, 1, RW),))
    assert RegisterMap([]).address_width == 4
    assert RegisterMap([one("a", 0)]).address_width == 4
    assert RegisterMap([one("a", 0xC)]).address_width == 4
    assert RegisterMap([one("a", 0x10)]).address_width == 5
    assert RegisterMap([one("a", 0x3FC)]).address_width == 10
    with pytest.raises(ValueError, match=r"Duplicate register name 'a'"):
        RegisterMap([one("a", 0), one("a", 4)])
    with pytest.raises(ValueError, match=r"Register 'b': address 0x4 is already used by "
                                         r"register 'a'"):
        RegisterMap([one("a", 4), one("b", 4)])
    with pytest.raises(TypeError, match=r"Registers must be Register objects, not 'a'"):
        RegisterMap(["a"])


def test_to_dict_from_dict_round_trip(regmap):
    d = regmap.to_dict()
    assert d["data_width"] == 32 and d["address_width"] == 5
    assert d["registers"][0] == {
        "name": "ctrl", "address": 0, "doc": "control", "fields": [
            {"name": "enable", "offset": 0, "width": 1, "access": "RW", "reset": 1,
             "doc": "run the engine"},
            {"name": "start", "offset": 1, "width": 1, "access": "W1P", "reset": 0,
             "doc": "start one job"},
            {"name": "mode", "offset": 8, "width": 4, "access": "RW", "reset": 5, "doc": ""},
            {"name": "cmd", "offset": 16, "width": 8, "access": "W1P", "reset": 0, "doc": ""}]}
    text = json.dumps(d)
    back = RegisterMap.from_dict(json.loads(text))
    assert back == regmap and back.to_dict() == d and json.dumps(back.to_dict()) == text
    with pytest.raises(ValueError, match=r"address_width must be 5 for these registers, not 9"):
        RegisterMap.from_dict(d | {"address_width": 9})
    with pytest.raises(ValueError, match=r"data_width must be 32, not 64"):
        RegisterMap.from_dict(d | {"data_width": 64})
    with pytest.raises(ValueError, match=r"'XX' is not a valid Access"):
        bad = json.loads(text)
        bad["registers"][0]["fields"][0]["access"] = "XX"
        RegisterMap.from_dict(bad)


def test_encode_decode(regmap):
    ctrl, status = regmap["ctrl"], regmap["status"]
    assert encode(ctrl) == 0
    assert encode(ctrl, enable=1, start=1, mode=0xA, cmd=0x5A) == 0x005A_0A03
    assert decode(ctrl, 0x005A_0A03) == {"enable": 1, "start": 1, "mode": 0xA, "cmd": 0x5A}
    assert decode(ctrl, 0xFF00_F0F0) == {"enable": 0, "start": 0, "mode": 0, "cmd": 0}
    assert decode(status, encode(status, count=0xFFFF, error=3)) == {
        "busy": 0, "done": 0, "error": 3, "count": 0xFFFF}
    with pytest.raises(ValueError, match=r"Field 'mode': value must be in range \[0, 16\), not 16"):
        encode(ctrl, mode=16)
    with pytest.raises(ValueError, match=r"Field 'mode': value must be in range .* not -1"):
        encode(ctrl, mode=-1)
    with pytest.raises(TypeError, match=r"Field 'mode': value must be an integer, not 1.5"):
        encode(ctrl, mode=1.5)
    with pytest.raises(ValueError, match=r"Register 'ctrl' has no field 'speed'"):
        encode(ctrl, speed=1)
    with pytest.raises(ValueError, match=r"Register 'ctrl': value must be in range"):
        decode(ctrl, 2**32)
    with pytest.raises(TypeError, match=r"Register 'ctrl': value must be an integer, not '1'"):
        decode(ctrl, "1")


def test_registers_module_does_not_import_amaranth():
    import subprocess
    import sys
    from skip2lora.hw import registers
    code = ("import sys, importlib.util; "
            f"spec = importlib.util.spec_from_file_location('regs', {registers.__file__!r}); "
            "mod = importlib.util.module_from_spec(spec); sys.modules['regs'] = mod; "
            "spec.loader.exec_module(mod); "
            "print(any(m == 'amaranth' or m.startswith('amaranth.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
