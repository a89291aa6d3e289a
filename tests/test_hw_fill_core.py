"""FILL on the whole core in amaranth.sim: images streamed in, the PL base (hw/fill_pipeline.py) writes
their cache entries where LOAD_CACHE of `pack_cache_for` of `IntBase.encode` would have, bit for bit;
a job on filled entries trains as on loaded ones; FILL_CYCLES is exact; every FILL error path."""

import dataclasses
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from amaranth_helpers import stream_send, to_beats
from core_bench import load_adapters, load_cache, program_job, read_adapters, read_reg, status, wait_idle, write_reg
from skip2lora.fixed import fill_plan as FP
from skip2lora.fixed.config import AcceleratorConfig
from skip2lora.fixed.model import CacheEntries, Geometry
from skip2lora.fixed.packing import Layout, image_beats, pack_cache_for
from skip2lora.fixed.vectors import make_vector
from skip2lora.hw.core import Skip2LoRACore
from skip2lora.hw.params import HwParams
from skip2lora.hw.registers import decode, encode
from skip2lora.hw.regmap import REGISTER_MAP, ErrorCode

from test_fill_pipeline import flat_inputs, tiny_setup

REGS = REGISTER_MAP
N = 3  # images a fill


@pytest.fixture(scope="module")
def setup():
    base, config, x, labels = tiny_setup(seed=5, n=8)
    plan = FP.plan_fill(base, 60)
    _, _, exps, _ = base.encode(x)  # the cache's scales, fitted on all the images
    return base, config, plan, x, labels, exps


def fill_bytes(base, x, labels, beat_bytes):
    """A FILL transfer: per image its label (2 bytes, little-endian), its quantized integers (NHWC
    for images), zeros to whole beats."""
    images = flat_inputs(x).astype(np.uint8)  # int8 inputs as their two's complement bytes
    per = image_beats(beat_bytes, images.shape[1]) * beat_bytes
    out = np.zeros((len(x), per), np.uint8)
    out[:, :2] = np.asarray(labels, "<u2").view(np.uint8).reshape(-1, 2)
    out[:, 2:2 + images.shape[1]] = images
    return out.tobytes()


def entries_bytes(base, config, x, labels, exps):
    """What LOAD_CACHE would take for these images: `pack_cache_for` of `IntBase.encode`."""
    codes, logits, _, _ = base.encode(x, exps)
    g = Geometry(tuple(base.tap_dims), config.geometry.rank, base.classes)
    return pack_cache_for(HwParams(config).layout, Layout(g, config.lanes), CacheEntries(codes, logits, labels))


async def program_fill(ctx, dut, base, exps, count, *, signed=None, dims=None, classes=None):
    """The FILL's registers: TAPk_DIM, CLASSES and TAPk_CFG of the base (overridable), LOAD_COUNT."""
    p = dut.params
    signed = base.tap_signed if signed is None else signed
    dims = base.tap_dims if dims is None else dims
    for k in range(p.K):
        await write_reg(ctx, dut.bus, f"TAP{k}_DIM", dims[k] if k < len(dims) else 0)
        if k < len(exps):
            await write_reg(ctx, dut.bus, f"TAP{k}_CFG", exponent=int(exps[k]) & 63, signed=int(signed[k]))
    await write_reg(ctx, dut.bus, "CLASSES", base.classes if classes is None else classes)
    await write_reg(ctx, dut.bus, "LOAD_COUNT", count)


def simulate(config, base, plan, bench):
    """Run ``bench(ctx, dut, rec)`` on a core with the PL base; ``rec``: the cache's lines as written
    (line -> value), how often each line was written, the cycles (from 0) of each accepted FILL
    command (the cycle before the loader sees it: the core registers it) and of each cycle the stream
    input was offered a beat."""
    dut = Skip2LoRACore(config, base, plan) if base is not None else Skip2LoRACore(config)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    rec = {"lines": {}, "writes": {}, "commands": [], "offered": []}

    async def monitor(ctx):
        cache, loader = dut.blocks["cache"], dut.blocks["loader"]
        cycle = 0
        while True:
            _, _, en, addr, data, cmd, valid = await ctx.tick().sample(
                cache.write.en, cache.write.addr, cache.write.data, loader.fill, dut.s_axis.valid)
            if en:
                rec["lines"][addr] = data
                rec["writes"][addr] = rec["writes"].get(addr, 0) + 1
            if cmd:
                rec["commands"].append(cycle - 1)
            if valid:
                rec["offered"].append(cycle)
            cycle += 1

    async def testbench(ctx):
        await bench(ctx, dut, rec)

    sim.add_testbench(monitor, background=True)
    sim.add_testbench(testbench)
    sim.run()
    return dut, rec


def cache_bytes(rec, p, first, count):
    """Entries first .. first+count-1 as the monitor saw them written (unwritten lines: 0)."""
    S, bb = p.sample_lines, p.beat_bits // 8
    return b"".join(rec["lines"].get(a, 0).to_bytes(bb, "little") for a in range(first * S, (first + count) * S))


def used_lines(base, config):
    """The lines of an entry the base writes (and a job of its geometry reads)."""
    return Layout(Geometry(tuple(base.tap_dims), config.geometry.rank, base.classes), config.lanes).sample_lines


async def fill(ctx, dut, base, x, labels, exps, *, gaps=None, tlast_at=None, extra=0, delay=0):
    """Program and run a FILL of images ``x``; ``tlast_at``: TLAST on that beat (default the
    last); ``extra`` beats more after the expected ones; ``delay`` cycles before the first beat."""
    bb = dut.params.beat_bits // 8
    await program_fill(ctx, dut, base, exps, len(x))
    beats = to_beats(fill_bytes(base, x, labels, bb), bb)
    if extra:      # TLAST only on the last extra beat
        beats = [(d, False) for d, _ in beats] + [(0, False)] * (extra - 1) + [(0, True)]
    if tlast_at is not None:  # the transfer ends (TLAST) early, on that beat
        beats = [(d, i == tlast_at) for i, (d, _) in enumerate(beats[:tlast_at + 1])]
    await write_reg(ctx, dut.bus, "CTRL", fill=1)
    if delay:
        await ctx.tick().repeat(delay)
    await stream_send(ctx, dut.s_axis, beats, gaps=gaps)


def _wide(config):
    """16 lanes (8-byte beats: an image's first beat holds its label and 6 bytes) and maxima
    (entries in slots longer than the base's entry)."""
    return AcceleratorConfig("tinywide", config.geometry, 16, 6, max_taps=5, max_classes=4, max_tap_lines=12)


@pytest.mark.parametrize("wide, delay", [(False, 0), (False, 7), (True, 0)],
                         ids=["lanes4", "lanes4_late_stream", "lanes16_maxima"])
def test_fill_writes_pack_cache_for_after_loaded_entries_and_fill_cycles_is_exact(setup, wide, delay):
    """LOAD_CACHE 2 entries, then FILL 3 images: the filled entries follow (appended), each line
    what LOAD_CACHE of `pack_cache_for(IntBase.encode)` would have written, the loaded ones untouched;
    N_LOADED, FILL_INFO; FILL_CYCLES = `fill_plan.fill_command_cycles` exactly."""
    base, config, plan, x, labels, exps = setup
    if wide:
        config = _wide(config)
    p = HwParams(config)
    rng = np.random.default_rng(1)
    loaded = rng.integers(0, 256, 2 * p.sample_lines * p.beat_bits // 8).astype(np.uint8)
    seen = {}

    async def bench(ctx, dut, rec):
        bb = p.beat_bits // 8
        await load_cache(ctx, dut, loaded, 2, bb)
        await wait_idle(ctx, dut.bus, 1000)
        await fill(ctx, dut, base, x[:N], labels[:N], exps, delay=delay)
        seen["status"] = await wait_idle(ctx, dut.bus, 100_000)
        for name in ("N_LOADED", "FILL_CYCLES", "FILL_INFO"):
            seen[name] = await read_reg(ctx, dut.bus, name)

    dut, rec = simulate(config, base, plan, bench)
    assert not seen["status"]["error"] and not seen["status"]["loading"], seen["status"]
    assert seen["N_LOADED"] == 2 + N
    info = decode(REGS["FILL_INFO"], seen["FILL_INFO"])
    assert info == {"present": 1, "image_beats": image_beats(p.beat_bits // 8, 36)}
    assert cache_bytes(rec, p, 0, 2) == loaded.tobytes()
    S, U, bb = p.sample_lines, used_lines(base, config), p.beat_bits // 8
    want = entries_bytes(base, config, x[:N], labels[:N], exps).reshape(N, S, bb)[:, :U]
    got = np.frombuffer(cache_bytes(rec, p, 2, N), np.uint8).reshape(N, S, bb)[:, :U]
    np.testing.assert_array_equal(got, want)
    filled = [a for a in rec["writes"] if a >= 2 * S]
    assert sorted(filled) == [(2 + i) * S + line for i in range(N) for line in range(U)]
    assert all(rec["writes"][a] == 1 for a in filled), "a filled line was written twice"
    cmd = rec["commands"][-1]
    first_beat = min(c for c in rec["offered"] if c > cmd) - cmd
    assert first_beat > delay
    assert seen["FILL_CYCLES"] == FP.fill_command_cycles(base, plan, N, p.beat_bits, first_beat)


def test_a_job_on_filled_entries_trains_as_on_loaded_ones(setup):
    """The contract: FILL then a job gives the adapters, statistics and cycles of LOAD_CACHE of the
    same entries then the job (and of the bit-exact model)."""
    base, config, plan, x, labels, exps = setup
    n = 4
    g = Geometry(tuple(base.tap_dims), config.geometry.rank, base.classes)
    codes, logits, _, _ = base.encode(x[:n], exps)
    vector = make_vector(config, samples=n, batch=2, epochs=2, seed=7, geometry=g)
    vector = dataclasses.replace(vector, cache=CacheEntries(codes, logits, labels[:n]),
                                 job=dataclasses.replace(vector.job, exponents=tuple(exps),
                                                         signed=tuple(base.tap_signed)))
    lay = vector.layout
    runs = []

    async def train(ctx, dut):
        await load_adapters(ctx, dut, vector.adapter_bytes, lay.beat_bytes)
        await program_job(ctx, dut.bus, vector)
        await write_reg(ctx, dut.bus, "CTRL", start=1)
        st = await wait_idle(ctx, dut.bus, 4 * vector.cycles + 1000)
        lo, hi = await read_reg(ctx, dut.bus, "CYCLES_LO"), await read_reg(ctx, dut.bus, "CYCLES_HI")
        runs.append({"status": st, "cycles": lo | hi << 32, "correct": await read_reg(ctx, dut.bus, "CORRECT"),
                     "adapters": await read_adapters(ctx, dut, lay.adapter_beats, lay.beat_bytes)})

    async def bench(ctx, dut, rec):
        await fill(ctx, dut, base, x[:n], labels[:n], exps)
        await wait_idle(ctx, dut.bus, 100_000)
        await train(ctx, dut)
        await write_reg(ctx, dut.bus, "CTRL", clear_cache=1)
        await load_cache(ctx, dut, vector.cache_bytes, n, lay.beat_bytes)
        await train(ctx, dut)

    simulate(config, base, plan, bench)
    filled, loaded = runs
    assert not filled["status"]["error"] and not loaded["status"]["error"]
    assert filled == loaded
    assert filled["cycles"] == vector.cycles
    got = vector.unpack_adapters(np.frombuffer(filled["adapters"], np.uint8))
    for k in range(g.taps):
        np.testing.assert_array_equal(got.a[k], vector.expected.adapters.a[k])
        np.testing.assert_array_equal(got.b[k], vector.expected.adapters.b[k])


def test_fill_errors(setup):
    """Every FILL error, one a line: the code latched, nothing armed or committed; after each, a
    good fill still works (a failed fill resets the feeder and the pipeline)."""
    base, config, plan, x, labels, exps = setup
    p = HwParams(config)
    bb = p.beat_bits // 8
    fracs, K = base.tap_fracs, len(base.tap_dims)
    seen = []

    async def expect(ctx, dut, code, n_loaded):
        st = await status(ctx, dut.bus)
        seen.append((ErrorCode(st["error_code"]), st["loading"], await read_reg(ctx, dut.bus, "N_LOADED")))
        assert seen[-1] == (code, 0, n_loaded), (code, seen[-1])
        await write_reg(ctx, dut.bus, "CTRL", clear_error=1)

    async def command(ctx, dut, count=N, **regs):
        await program_fill(ctx, dut, base, exps, count, **regs)
        await write_reg(ctx, dut.bus, "CTRL", fill=1)

    async def bench(ctx, dut, rec):
        await command(ctx, dut, count=0)
        await expect(ctx, dut, ErrorCode.BAD_CONFIG, 0)                                   # LOAD_COUNT 0
        await command(ctx, dut, dims=[*base.tap_dims[:1], base.tap_dims[1] + 1, *base.tap_dims[2:]])
        await expect(ctx, dut, ErrorCode.BAD_CONFIG, 0)                                   # a tap's dim
        await command(ctx, dut, classes=base.classes - 1)
        await expect(ctx, dut, ErrorCode.BAD_CONFIG, 0)                                   # classes
        await command(ctx, dut, signed=[not s for s in base.tap_signed])
        await expect(ctx, dut, ErrorCode.BAD_CONFIG, 0)                                   # signedness
        for k in range(K):                                                                # shift below 0
            await program_fill(ctx, dut, base, [fracs[j] - (j == k) for j in range(K)], N)
            await write_reg(ctx, dut.bus, "CTRL", fill=1)
            await expect(ctx, dut, ErrorCode.BAD_CONFIG, 0)
        await command(ctx, dut, count=p.n_max + 1)
        await expect(ctx, dut, ErrorCode.CACHE_OVERFLOW, 0)                               # no room
        await command(ctx, dut)
        await write_reg(ctx, dut.bus, "CTRL", fill=1)                                     # busy (still armed)
        st = await status(ctx, dut.bus)
        seen.append((ErrorCode(st["error_code"]), st["loading"], st["busy"]))
        assert seen[-1] == (ErrorCode.BUSY, 1, 1), seen[-1]
        bb_ = to_beats(fill_bytes(base, x[:N], labels[:N], bb), bb)
        await stream_send(ctx, dut.s_axis, bb_[:5])                                      # a fill under way,
        await write_reg(ctx, dut.bus, "CTRL", soft_reset=1)                               # aborted by a soft reset
        st = await status(ctx, dut.bus)
        assert (st["error"], st["loading"], await read_reg(ctx, dut.bus, "N_LOADED")) == (0, 0, 0)
        await fill(ctx, dut, base, x[:N], labels[:N], exps, tlast_at=N * image_beats(p.beat_bits // 8, 36) - 2)
        await expect(ctx, dut, ErrorCode.TLAST_EARLY, 0)                                  # TLAST early
        await fill(ctx, dut, base, x[:N], labels[:N], exps, extra=2)
        await wait_idle(ctx, dut.bus, 100_000)
        await expect(ctx, dut, ErrorCode.TLAST_LATE, 0)                                   # TLAST late
        await fill(ctx, dut, base, x[N:2 * N], labels[N:2 * N], exps)                     # a good fill
        st = await wait_idle(ctx, dut.bus, 100_000)
        seen.append((st["error"], await read_reg(ctx, dut.bus, "N_LOADED")))

    dut, rec = simulate(config, base, plan, bench)
    assert seen[-1] == (0, N)
    S, U = p.sample_lines, used_lines(base, config)
    want = entries_bytes(base, config, x[N:2 * N], labels[N:2 * N], exps).reshape(N, S, bb)[:, :U]
    got = np.frombuffer(cache_bytes(rec, p, 0, N), np.uint8).reshape(N, S, bb)[:, :U]
    np.testing.assert_array_equal(got, want)


def test_fill_without_a_pl_base_is_bad_config(setup):
    base, config, _, x, labels, exps = setup
    seen = {}

    async def bench(ctx, dut, rec):
        seen["info"] = await read_reg(ctx, dut.bus, "FILL_INFO")
        await program_fill(ctx, dut, base, exps, 1)
        await write_reg(ctx, dut.bus, "CTRL", fill=1)
        seen["status"] = await status(ctx, dut.bus)
        await write_reg(ctx, dut.bus, "CTRL", clear_error=1)
        # the stream is not armed: a FILL transfer is unexpected
        bb = dut.params.beat_bits // 8
        await stream_send(ctx, dut.s_axis, to_beats(fill_bytes(base, x[:1], labels[:1], bb), bb))
        seen["after"] = await status(ctx, dut.bus)

    simulate(config, None, None, bench)
    assert seen["info"] == 0
    assert ErrorCode(seen["status"]["error_code"]) is ErrorCode.BAD_CONFIG and not seen["status"]["loading"]
    assert ErrorCode(seen["after"]["error_code"]) is ErrorCode.STREAM_UNEXPECTED


def test_a_stalled_gappy_stream_changes_nothing_but_time(setup):
    base, config, plan, x, labels, exps = setup
    p = HwParams(config)
    bb = p.beat_bits // 8
    beats = N * image_beats(p.beat_bits // 8, 36)
    pick = random.Random(4)
    gaps = [pick.choice([0, 0, 0, 1, 3, 17]) for _ in range(beats)]
    seen = {}

    async def bench(ctx, dut, rec):
        await fill(ctx, dut, base, x[:N], labels[:N], exps, gaps=gaps)
        seen["status"] = await wait_idle(ctx, dut.bus, 100_000)
        seen["n"] = await read_reg(ctx, dut.bus, "N_LOADED")
        seen["cycles"] = await read_reg(ctx, dut.bus, "FILL_CYCLES")

    dut, rec = simulate(config, base, plan, bench)
    assert not seen["status"]["error"] and seen["n"] == N
    S, U = p.sample_lines, used_lines(base, config)
    want = entries_bytes(base, config, x[:N], labels[:N], exps).reshape(N, S, bb)[:, :U]
    got = np.frombuffer(cache_bytes(rec, p, 0, N), np.uint8).reshape(N, S, bb)[:, :U]
    np.testing.assert_array_equal(got, want)
    cmd = rec["commands"][-1]
    assert seen["cycles"] >= FP.fill_command_cycles(base, plan, N, p.beat_bits, min(c for c in rec["offered"] if c > cmd) - cmd)


def test_core_checks_its_fill_arguments(setup):
    base, config, plan, *_ = setup
    with pytest.raises(TypeError, match="fill_base must be an IntBase"):
        Skip2LoRACore(config, fill_base="lenet")
    with pytest.raises(TypeError, match="fill_plan needs a fill_base"):
        Skip2LoRACore(config, fill_plan=plan)
    with pytest.raises(TypeError, match="plan must be a FillPlan"):
        Skip2LoRACore(config, base, fill_plan=[1])
    from skip2lora.fixed.config import SMALL
    with pytest.raises(ValueError, match="do not fit the build"):
        Skip2LoRACore(SMALL, base)


@pytest.mark.parametrize("key", ["mlp-har", "mlp-fan-damage1"])
def test_fill_with_a_shipped_mlp_base(key):
    """A core whose PL base is a shipped MLP (`base_int.shipped`: HAR's signed int8 features, Fan's
    uint8 spectra; its calibration exponents in TAPk_CFG): the filled entries are
    `pack_cache_for(IntBase.encode)` bit for bit and FILL_CYCLES is the model's."""
    from skip2lora.fixed.base_int import shipped

    base = shipped(key)
    config = AcceleratorConfig(f"{key}-core", Geometry(tuple(base.tap_dims), 2, base.classes), 16, 4)
    plan = FP.plan_fill(base, 600)
    p = HwParams(config)
    rng = np.random.default_rng(3)
    xf = rng.random((N,) + (base.tap_dims[0],))
    x = base.quantize_input(2 * xf - 1 if base.tap_signed[0] else xf)
    labels = rng.integers(0, base.classes, N)
    exps = tuple(base.calibration["cache_exponents"])
    seen = {}

    async def bench(ctx, dut, rec):
        await fill(ctx, dut, base, x, labels, exps)
        seen["status"] = await wait_idle(ctx, dut.bus, 100_000)
        for name in ("N_LOADED", "FILL_CYCLES"):
            seen[name] = await read_reg(ctx, dut.bus, name)

    dut, rec = simulate(config, base, plan, bench)
    assert not seen["status"]["error"], seen["status"]
    assert seen["N_LOADED"] == N
    S, bb = p.sample_lines, p.beat_bits // 8
    want = entries_bytes(base, config, x, labels, exps).reshape(N, S, bb)
    got = np.frombuffer(cache_bytes(rec, p, 0, N), np.uint8).reshape(N, S, bb)
    np.testing.assert_array_equal(got, want)
    assert len({int(v) for v in np.unique(want)}) > 16, "the entries are not degenerate"
    cmd = rec["commands"][-1]
    first_beat = min(c for c in rec["offered"] if c > cmd) - cmd
    assert seen["FILL_CYCLES"] == FP.fill_command_cycles(base, plan, N, p.beat_bits, first_beat)
