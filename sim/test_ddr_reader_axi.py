"""cocotb test of the DDR reader (hw/ddr_reader.py) against cocotbext-axi's AXI4 memory model.

`AxiRamRead` answers the reader's bursts (and checks their protocol), with random pauses on the
AR and R channels; the test writes random cache entries into the memory, asks for them in a
random order into random slots, and checks every beat the reader writes and every ``filled``.
``SKIP2LORA_BLOCK`` (JSON) carries the build's parameters and the case's seed.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge


def _pauses(rng, p):
    while True:
        yield rng.random() < p


@cocotb.test()
async def ddr_reader_fills_slots(dut):
    from cocotbext.axi import AxiReadBus, AxiRamRead

    cfg = json.loads(os.environ["SKIP2LORA_BLOCK"])
    lines, beat_bytes, slots, stride = cfg["lines"], cfg["beat_bits"] // 8, cfg["slots"], cfg["stride"]
    rng = random.Random(cfg["seed"])
    base = 0x1_0000
    ram = AxiRamRead(AxiReadBus.from_prefix(dut, "axi_"), dut.clk, dut.rst, reset_active_level=True,
                     size=base + cfg["entries"] * stride)
    ram.ar_channel.set_pause_generator(_pauses(random.Random(rng.random()), cfg["pause"]))
    ram.r_channel.set_pause_generator(_pauses(random.Random(rng.random()), cfg["pause"]))
    entries = {}
    for e in range(cfg["entries"]):
        entries[e] = [rng.getrandbits(8 * beat_bytes) for _ in range(lines)]
        ram.write(base + e * stride, b"".join(v.to_bytes(beat_bytes, "little") for v in entries[e]))

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.requests__valid.value = 0
    dut.base.value = base
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    requests = [(rng.randrange(cfg["entries"]), rng.randrange(slots)) for _ in range(cfg["requests"])]
    buffer, filled, errors = {}, [], []

    async def monitor():
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if dut.write__en.value:
                buffer[int(dut.write__addr.value)] = int(dut.write__data.value)
            if dut.filled__valid.value:
                filled.append(int(dut.filled__payload.value))
            if dut.error.value:
                errors.append(1)

    cocotb.start_soon(monitor())
    entry_bits = cfg["entry_bits"]
    for entry, slot in requests:
        while rng.random() < 0.3:
            await RisingEdge(dut.clk)
        dut.requests__payload.value = entry | (slot << entry_bits)
        dut.requests__valid.value = 1
        while True:  # taken at the edge that ends a cycle with ready high
            await ReadOnly()
            taken = bool(dut.requests__ready.value)
            await RisingEdge(dut.clk)
            if taken:
                break
        dut.requests__valid.value = 0
    for _ in range(200_000):
        await RisingEdge(dut.clk)
        if len(filled) == len(requests) and dut.idle.value:
            break
    assert filled == [s for _, s in requests], "filled slots out of order or missing"
    assert not errors, "error pulses from an OKAY memory"
    last = {}
    for entry, slot in requests:
        last[slot] = entry
    for slot, entry in last.items():
        got = [buffer.get(slot * lines + i) for i in range(lines)]
        assert got == entries[entry], f"slot {slot} does not hold entry {entry}"
