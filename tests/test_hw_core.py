"""The whole accelerator core in amaranth.sim: jobs bit-exact against the model, cycle counts equal to
the cycle model, and every hardware error path (with recovery by soft reset)."""

import numpy as np
import pytest

from amaranth_helpers import stream_recv, stream_send, to_beats
from core_bench import (load_adapters, load_cache, load_job, program_job, read_adapters, read_reg, run_vector, simulate,
                        status, wait_idle, write_reg)
from skip2lora.fixed.packing import Layout
from skip2lora.fixed.config import SMALL, AcceleratorConfig
from skip2lora.fixed.model import Geometry
from skip2lora.fixed.vectors import make_vector
from skip2lora.hw.regmap import ACCEL_ID, VERSION, ErrorCode

CONFIGS = [
    (SMALL, dict(samples=6, batch=4, epochs=2)),                          # partial last batch
    (SMALL, dict(samples=5, batch=1, epochs=1)),                          # batch of one
    (SMALL, dict(samples=17, batch=5, epochs=2, shuffle=True, warmup=4, decay=True)),  # the float recipe
    (AcceleratorConfig("one", Geometry((9,), 1, 2), 4, 8), dict(samples=8, batch=8, epochs=2)),
    (AcceleratorConfig("wide", Geometry((33, 16, 70, 5), 3, 7), 16, 8), dict(samples=7, batch=3, epochs=1)),
    (AcceleratorConfig("p8", Geometry((20, 8), 4, 10), 8, 12), dict(samples=12, batch=5, epochs=2)),
]


def check(vector, out):
    got = vector.unpack_adapters(np.frombuffer(out["adapters"], np.uint8))
    assert not out["status"]["error"], out["status"]
    assert out["cycles"] == vector.cycles, "cycle counter differs from the cycle model"
    assert out["correct"] == vector.expected.correct[-1]
    e = vector.expected
    if "epochs" in out:
        assert out["epochs"] == list(zip(e.correct, e.loss, e.saturated)), "per-epoch statistics differ"
    for k in range(vector.geometry.taps):
        assert np.array_equal(got.a[k], vector.expected.adapters.a[k]), f"A_{k} differs ({vector.describe()})"
        assert np.array_equal(got.b[k], vector.expected.adapters.b[k]), f"B_{k} differs ({vector.describe()})"


@pytest.mark.parametrize("extreme", [False, True], ids=["typical", "saturating"])
@pytest.mark.parametrize("case", range(len(CONFIGS)))
def test_job_is_bit_exact_and_cycle_exact(case, extreme):
    config, job = CONFIGS[case]
    vector = make_vector(config, seed=100 + case, extreme=extreme, **job)
    check(vector, run_vector(vector, vcd_name=f"core_{case}"))


#: geometries the small build (taps 12, 7, 5 at 4 lanes = 7 tap lines, rank 2, 3 classes) runs at
#: run time: fewer taps, other dims, a lower rank, fewer classes, every tap line in one tap
RUNTIME_GEOMETRIES = [Geometry((5, 9), 1, 2), Geometry((16,), 2, 3), Geometry((4, 4, 4), 2, 2),
                      Geometry((28,), 1, 3), Geometry((1, 2, 3), 2, 3), Geometry((9, 13), 2, 2)]


@pytest.mark.parametrize("extreme", [False, True], ids=["typical", "saturating"])
@pytest.mark.parametrize("geometry", RUNTIME_GEOMETRIES, ids=lambda g: f"{'-'.join(map(str, g.dims))}_r{g.rank}_c{g.classes}")
def test_runtime_geometry_job_is_its_own_geometrys_bit_for_bit(geometry, extreme):
    """One build, many models: a job whose TAPk_DIM / CLASSES set another geometry than the build's
    trains exactly as the bit-exact model of that geometry, in the cycles the model gives for it on
    this build."""
    vector = make_vector(SMALL, geometry=geometry, samples=9, batch=4, epochs=2, seed=hash(geometry) % 1000,
                         extreme=extreme)
    check(vector, run_vector(vector))


@pytest.mark.parametrize("dims, classes", [((28, 4), 3), ((0, 5), 3), ((5, 0, 5), 3), ((0,), 3), ((12, 7, 5), 4),
                                           ((12, 7, 5), 1)],
                         ids=["too_many_lines", "first_absent", "tap_after_absent", "no_tap", "too_many_classes",
                              "one_class"])
def test_a_geometry_the_build_does_not_run_is_bad_config_and_trains_nothing(dims, classes):
    vector = _vector()
    seen = {}

    async def bench(ctx, dut):
        await load_job(ctx, dut, vector)
        for k in range(3):
            await write_reg(ctx, dut.bus, f"TAP{k}_DIM", dims[k] if k < len(dims) else 0)
        await write_reg(ctx, dut.bus, "CLASSES", classes)
        await write_reg(ctx, dut.bus, "CTRL", start=1)
        seen["status"] = await wait_idle(ctx, dut.bus, timeout=5000)
        await write_reg(ctx, dut.bus, "CTRL", clear_error=1)
        seen["adapters"] = await read_adapters(ctx, dut, vector.layout.adapter_beats, vector.layout.beat_bytes)

    simulate(SMALL, bench)
    st = seen["status"]
    assert st["error"] and st["error_code"] == ErrorCode.BAD_CONFIG and not st["done"], st
    assert np.frombuffer(seen["adapters"], np.uint8).tobytes() == vector.adapter_bytes.tobytes()


def _vector(**kw):
    return make_vector(SMALL, **{**dict(samples=4, batch=2, epochs=1, seed=7), **kw})


def test_identification_and_geometry_registers():
    seen = {}

    async def bench(ctx, dut):
        for name in ("ID", "VERSION", "GEOMETRY", "LANES", "CACHE_DEPTH", "TAP_LINES", "ENTRY_LINES", "TAP0_DIM"):
            seen[name] = await read_reg(ctx, dut.bus, name)
        await write_reg(ctx, dut.bus, "TAP2_DIM", 1234)   # the job's geometry: read-write
        await write_reg(ctx, dut.bus, "CLASSES", 3)
        seen["TAP2_DIM"], seen["CLASSES"] = await read_reg(ctx, dut.bus, "TAP2_DIM"), await read_reg(ctx, dut.bus, "CLASSES")

    simulate(SMALL, bench)
    g = SMALL.geometry
    lay = Layout(g, SMALL.lanes)
    assert seen["ID"] == ACCEL_ID and seen["VERSION"] == (VERSION[0] << 16) | VERSION[1]
    assert seen["GEOMETRY"] == g.taps | (g.rank << 8) | (g.classes << 16)
    assert seen["LANES"] == SMALL.lanes and seen["CACHE_DEPTH"] == SMALL.cache_depth
    assert (seen["TAP_LINES"], seen["ENTRY_LINES"]) == (lay.tap_lines, lay.sample_lines)
    assert (seen["TAP0_DIM"], seen["TAP2_DIM"], seen["CLASSES"]) == (0, 1234, 3)


def _run_recovery(ctx, dut, vector, result):
    """Soft reset, then a whole good job: it must be bit-exact again."""
    async def go():
        await write_reg(ctx, dut.bus, "CTRL", soft_reset=1)
        st = await status(ctx, dut.bus)
        assert st == {"busy": 0, "done": 0, "error": 0, "loading": 0, "sending": 0, "adapters": 0, "overrun": 0,
                      "error_code": 0}
        assert await read_reg(ctx, dut.bus, "N_LOADED") == 0
        await load_job(ctx, dut, vector)
        await write_reg(ctx, dut.bus, "CTRL", start=1)
        result["status"] = await wait_idle(ctx, dut.bus, 4 * vector.cycles + 1000)
        lo, hi = await read_reg(ctx, dut.bus, "CYCLES_LO"), await read_reg(ctx, dut.bus, "CYCLES_HI")
        result["cycles"] = lo | (hi << 32)
        result["correct"] = await read_reg(ctx, dut.bus, "CORRECT")
        result["adapters"] = await read_adapters(ctx, dut, vector.layout.adapter_beats, vector.layout.beat_bytes)
    return go()


def _error_case(stimulus):
    """Run `stimulus`, record STATUS, check the core is not stuck, then recover with a good job."""
    vector = _vector()
    seen, result = {}, {}

    async def bench(ctx, dut):
        await stimulus(ctx, dut, vector)
        await ctx.tick().repeat(5)
        seen["status"] = await status(ctx, dut.bus)
        seen["n_loaded"] = await read_reg(ctx, dut.bus, "N_LOADED")
        await _run_recovery(ctx, dut, vector, result)

    simulate(SMALL, bench)
    check(vector, result)
    return seen


def test_tlast_early_drops_the_transfer():
    async def stim(ctx, dut, v):
        beats = to_beats(v.cache_bytes, v.layout.beat_bytes)
        beats = beats[:5] + [(beats[5][0], True)]  # TLAST on beat 6 of many
        await write_reg(ctx, dut.bus, "LOAD_COUNT", len(v.cache))
        await write_reg(ctx, dut.bus, "CTRL", load_cache=1)
        await stream_send(ctx, dut.s_axis, beats)

    seen = _error_case(stim)
    assert seen["status"]["error"] and seen["status"]["error_code"] == ErrorCode.TLAST_EARLY
    assert not seen["status"]["busy"] and seen["n_loaded"] == 0


def test_tlast_late_is_drained_to_tlast():
    async def stim(ctx, dut, v):
        beats = [(d, False) for d, _ in to_beats(v.cache_bytes, v.layout.beat_bytes)]
        beats += [(0x1234, False), (0x5678, True)]  # two extra beats, TLAST on the last
        await write_reg(ctx, dut.bus, "LOAD_COUNT", len(v.cache))
        await write_reg(ctx, dut.bus, "CTRL", load_cache=1)
        await stream_send(ctx, dut.s_axis, beats)

    seen = _error_case(stim)
    assert seen["status"]["error_code"] == ErrorCode.TLAST_LATE
    assert not seen["status"]["busy"] and not seen["status"]["loading"] and seen["n_loaded"] == 0


def test_unexpected_stream_is_drained():
    async def stim(ctx, dut, v):
        await stream_send(ctx, dut.s_axis, [(1, False), (2, False), (3, True)])

    seen = _error_case(stim)
    assert seen["status"]["error_code"] == ErrorCode.STREAM_UNEXPECTED and not seen["status"]["loading"]


def test_cache_overflow_is_refused_and_the_stream_drained():
    async def stim(ctx, dut, v):
        await write_reg(ctx, dut.bus, "LOAD_COUNT", SMALL.cache_depth + 1)
        await write_reg(ctx, dut.bus, "CTRL", load_cache=1)
        await stream_send(ctx, dut.s_axis, to_beats(v.cache_bytes, v.layout.beat_bytes))

    seen = _error_case(stim)
    assert seen["status"]["error_code"] == ErrorCode.CACHE_OVERFLOW and seen["n_loaded"] == 0


@pytest.mark.parametrize("field,value", [("SAMPLES", 0), ("SAMPLES", 5), ("BATCH", 0), ("BATCH", 9),
                                         ("EPOCHS", 0), ("LR", 0), ("TAP1_CFG", 5), ("TAP0_CFG", 0x30),
                                         ("OPT", 7)])
def test_bad_configuration_is_refused(field, value):
    async def stim(ctx, dut, v):
        await load_cache(ctx, dut, v.cache_bytes, len(v.cache), v.layout.beat_bytes)
        await load_adapters(ctx, dut, v.adapter_bytes, v.layout.beat_bytes)
        await program_job(ctx, dut.bus, v)
        await write_reg(ctx, dut.bus, field, value)
        await write_reg(ctx, dut.bus, "CTRL", start=1)

    seen = _error_case(stim)
    assert seen["status"]["error_code"] == ErrorCode.BAD_CONFIG and not seen["status"]["busy"]
    assert not seen["status"]["done"]


def test_start_while_busy_is_an_error_and_the_job_still_exact():
    vector = _vector(samples=4, batch=2, epochs=2)
    out = {}

    async def bench(ctx, dut):
        await load_job(ctx, dut, vector)
        await write_reg(ctx, dut.bus, "CTRL", start=1)
        await write_reg(ctx, dut.bus, "CTRL", start=1)         # again, while running
        await write_reg(ctx, dut.bus, "CTRL", load_cache=1)    # and a load
        out["status"] = await wait_idle(ctx, dut.bus, 4 * vector.cycles + 1000)
        await write_reg(ctx, dut.bus, "CTRL", clear_error=1)  # a latched error blocks READ_ADAPTERS
        lo = await read_reg(ctx, dut.bus, "CYCLES_LO")
        out["cycles"], out["correct"] = lo, await read_reg(ctx, dut.bus, "CORRECT")
        out["adapters"] = await read_adapters(ctx, dut, vector.layout.adapter_beats, vector.layout.beat_bytes)

    simulate(SMALL, bench)
    assert out["status"]["error_code"] == ErrorCode.BUSY and out["status"]["done"] and out["status"]["overrun"]
    out["status"]["error"] = 0  # the job itself was not disturbed:
    check(vector, out)


def test_soft_reset_aborts_a_running_job_and_recovers():
    vector = _vector(samples=4, batch=2, epochs=3)
    seen, result = {}, {}

    async def bench(ctx, dut):
        await load_job(ctx, dut, vector)
        await write_reg(ctx, dut.bus, "CTRL", start=1)
        await ctx.tick().repeat(vector.cycles // 3)
        seen["busy"] = (await status(ctx, dut.bus))["busy"]
        await _run_recovery(ctx, dut, vector, result)

    simulate(SMALL, bench)
    assert seen["busy"] == 1
    check(vector, result)


def test_interrupt_and_readback_under_backpressure():
    vector = _vector(samples=3, batch=2, epochs=1)
    seen = {}

    async def bench(ctx, dut):
        await load_job(ctx, dut, vector)
        await write_reg(ctx, dut.bus, "IRQ_ENABLE", 1)
        await write_reg(ctx, dut.bus, "CTRL", start=1)
        await ctx.tick().until(dut.irq)
        seen["irq_status"] = await read_reg(ctx, dut.bus, "IRQ")
        await write_reg(ctx, dut.bus, "IRQ", 1)
        seen["irq_after_clear"] = ctx.get(dut.irq)
        await write_reg(ctx, dut.bus, "CTRL", read_adapters=1)
        n = vector.layout.adapter_beats
        stalls = [(i * 7) % 4 for i in range(n)]
        seen["beats"] = await stream_recv(ctx, dut.m_axis, n, stalls=stalls)

    simulate(SMALL, bench)
    assert seen["irq_status"] == 1 and seen["irq_after_clear"] == 0
    data = b"".join(int(d).to_bytes(vector.layout.beat_bytes, "little") for d, _ in seen["beats"])
    assert vector.unpack_adapters(np.frombuffer(data, np.uint8)).equals(vector.expected.adapters)
    assert [last for _, last in seen["beats"]][-1] and not any(last for _, last in seen["beats"][:-1])


def test_online_appending_between_jobs():
    """Cache entries appended after a job extend the cache; a second job trains on all of them."""
    full = make_vector(SMALL, samples=6, batch=3, epochs=1, seed=7, cached=6)
    out = {}

    async def bench(ctx, dut):
        bb = full.layout.beat_bytes
        per = full.layout.sample_lines * bb
        await load_cache(ctx, dut, full.cache_bytes[:3 * per], 3, bb)
        await load_cache(ctx, dut, full.cache_bytes[3 * per:], 3, bb)
        out["n_loaded"] = await read_reg(ctx, dut.bus, "N_LOADED")
        await load_adapters(ctx, dut, full.adapter_bytes, bb)
        await program_job(ctx, dut.bus, full)
        await write_reg(ctx, dut.bus, "CTRL", start=1)
        out["status"] = await wait_idle(ctx, dut.bus, 4 * full.cycles + 1000)
        out["cycles"] = await read_reg(ctx, dut.bus, "CYCLES_LO")
        out["correct"] = await read_reg(ctx, dut.bus, "CORRECT")
        out["adapters"] = await read_adapters(ctx, dut, full.layout.adapter_beats, bb)

    simulate(SMALL, bench)
    assert out["n_loaded"] == 6
    check(full, out)


def test_backward_factor_at_its_negative_limit():
    """Regression: t saturated at -2**23 must stay negative when the datapath negates it."""
    config = AcceleratorConfig("neg", Geometry((12, 13, 18), 2, 5), 16, 15)
    vector = make_vector(config, samples=3, batch=1, epochs=1, seed=306088397, cached=15, extreme=True,
                         lr=(1 << 28) - 1)
    check(vector, run_vector(vector))
