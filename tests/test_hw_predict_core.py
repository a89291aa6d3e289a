"""PREDICT on the whole core in amaranth.sim: images streamed in, one result an image streamed out,
each the bit-exact model's y (`fixed.model.forward` of `IntBase.encode`'s entries under the adapters
held) and class; the cache, the adapters and a following job are unchanged; PREDICT_CYCLES is
`fill_plan.predict_command_cycles` exactly; the ring's credits hold the input while the output
is held; every error is one code and the output frame still ends."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from amaranth_helpers import stream_send, to_beats
from core_bench import (axi_memory, load_adapters, load_cache, program_ddr, program_job, read_adapters, read_reg,
                        wait_idle, write_reg)
from skip2lora.fixed import fill_plan as FP
from skip2lora.fixed.model import CacheEntries, Geometry, forward
from skip2lora.fixed.packing import RESULT_ABORT, image_beats, result_beats, unpack_results
from skip2lora.fixed.vectors import make_vector
from skip2lora.hw.core import Skip2LoRACore
from skip2lora.hw.params import RING_ENTRIES, HwParams
from skip2lora.hw.regmap import ErrorCode
from skip2lora.hw.stream_out import OUT_DEPTH, RESULT_DEPTH

from test_fill_pipeline import flat_inputs, tiny_setup
from test_hw_fill_core import _wide, fill_bytes, program_fill

N = 14  # images a PREDICT: more than the ring's slots


@pytest.fixture(scope="module")
def setup():
    base, config, x, labels = tiny_setup(seed=5, n=N)
    plan = FP.plan_fill(base, 80)  # 72 cycles an image: the passes (63) keep up, as on KV260
    _, _, exps, _ = base.encode(x)
    g = Geometry(tuple(base.tap_dims), config.geometry.rank, base.classes)
    vector = make_vector(config, samples=4, batch=2, epochs=2, seed=7, geometry=g)
    return base, config, plan, x, labels, exps, g, vector


def model_results(base, g, x, exps, adapters):
    codes, logits, _, _ = base.encode(x, exps)
    y = forward(g, codes, logits, adapters, exps)
    return y, y.argmax(axis=1)


def simulate(config, base, plan, bench, *, ready=None, ddr_data=None):
    """Run ``bench(ctx, dut, rec)``; a background receiver takes m_axis beats into ``rec["out"]``
    (``ready(cycle)``: TREADY in that cycle; default always 1) and counts s_axis beats taken;
    ``ddr_data``: a DDR buffer served on m_axi (a build with the DDR path)."""
    dut = Skip2LoRACore(config, base, plan)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    if ddr_data is not None:
        for proc in axi_memory(dut, ddr_data, latency=5):
            sim.add_testbench(proc, background=True)
    rec = {"out": [], "taken": [], "commands": [], "offered": [], "slot_wait": 0}

    async def receiver(ctx):
        cycle = 0
        while True:
            ctx.set(dut.m_axis.ready, 1 if ready is None else ready(cycle))
            _, _, v, r, d, last, sv, sr, cmd, wait = await ctx.tick().sample(
                dut.m_axis.valid, dut.m_axis.ready, dut.m_axis.p.data, dut.m_axis.p.last,
                dut.s_axis.valid, dut.s_axis.ready, dut.blocks["loader"].predict, dut.blocks["loader"].slot_wait)
            rec["slot_wait"] += wait
            if v and r:
                rec["out"].append((d, last, cycle))
            if sv and sr:
                rec["taken"].append(cycle)
            if sv:
                rec["offered"].append(cycle)
            if cmd:
                rec["commands"].append(cycle - 1)
            cycle += 1

    async def testbench(ctx):
        await bench(ctx, dut, rec)

    sim.add_testbench(receiver, background=True)
    sim.add_testbench(testbench)
    sim.run()
    return dut, rec


async def predict(ctx, dut, base, x, labels, exps, *, gaps=None, tlast_at=None, after_command=None):
    """Program and run a PREDICT of images ``x``; ``after_command``: awaited between the command and
    the stream (a delay, another command)."""
    bb = dut.params.beat_bits // 8
    await program_fill(ctx, dut, base, exps, len(x))
    beats = to_beats(fill_bytes(base, x, labels, bb), bb)
    if tlast_at is not None:
        beats = [(d, i == tlast_at) for i, (d, _) in enumerate(beats[:tlast_at + 1])]
    await write_reg(ctx, dut.bus, "CTRL", predict=1)
    if after_command is not None:
        await after_command()
    await stream_send(ctx, dut.s_axis, beats, gaps=gaps)


def results_of(rec, p, n):
    words = np.frombuffer(b"".join(int(d).to_bytes(p.beat_bits // 8, "little") for d, _, _ in rec["out"]), "<i2")
    return unpack_results(words, n, p.C, p.beat_bits)


def check_results(rec, p, g, want_y, want_cls):
    """The output frame: N results of `result_beats` beats, TLAST only on the last; y and classes."""
    n = len(want_cls)
    RB = result_beats(p.C, p.beat_bits)
    assert len(rec["out"]) == n * RB
    assert [last for _, last, _ in rec["out"]] == [False] * (n * RB - 1) + [True]
    y, cls = results_of(rec, p, n)
    np.testing.assert_array_equal(y[:, :g.classes], want_y)
    assert not y[:, g.classes:].any(), "y past the job's classes is zero"
    np.testing.assert_array_equal(cls, want_cls)


@pytest.mark.parametrize("wide, delay", [(False, 0), (False, 9), (True, 0)],
                         ids=["lanes4", "lanes4_late_stream", "lanes16_maxima"])
def test_predict_streams_the_models_results_and_predict_cycles_is_exact(setup, wide, delay):
    """14 images (more than the ring's slots): each result is `fixed.model.forward`'s y of the
    image's `IntBase.encode` entry under the adapters held, and its argmax; CORRECT counts the
    images whose class is their label; N_LOADED and CYCLES stay; PREDICT_CYCLES is
    `fill_plan.predict_command_cycles` and no image waited for a ring slot."""
    base, config, plan, x, labels, exps, g, vector = setup
    if wide:
        config = _wide(config)
        vector = make_vector(config, samples=4, batch=2, epochs=2, seed=7, geometry=g)
    p = HwParams(config)
    seen = {}

    async def bench(ctx, dut, rec):
        await load_adapters(ctx, dut, vector.adapter_bytes, p.beat_bits // 8)

        async def wait():
            await ctx.tick().repeat(delay)
        await predict(ctx, dut, base, x, labels, exps, after_command=wait if delay else None)
        seen["status"] = await wait_idle(ctx, dut.bus, 100_000)
        for name in ("N_LOADED", "PREDICT_CYCLES", "CORRECT", "CYCLES_LO", "FILL_CYCLES"):
            seen[name] = await read_reg(ctx, dut.bus, name)

    dut, rec = simulate(config, base, plan, bench)
    assert not seen["status"]["error"] and not seen["status"]["done"], seen["status"]
    want_y, want_cls = model_results(base, g, x, exps, vector.adapters)
    check_results(rec, p, g, want_y, want_cls)
    assert (seen["N_LOADED"], seen["CYCLES_LO"], seen["FILL_CYCLES"]) == (0, 0, 0)
    assert seen["CORRECT"] == int((want_cls == labels).sum())
    cmd = rec["commands"][-1]
    first_beat = min(c for c in rec["offered"] if c > cmd) - cmd
    assert first_beat > delay
    assert rec["slot_wait"] == 0
    assert seen["PREDICT_CYCLES"] == FP.predict_command_cycles(base, plan, N, config, first_beat)


def test_a_held_output_holds_the_input_and_nothing_is_lost(setup):
    """m_axis held low for 4,000 cycles: the passes stop when the result FIFO is full, the ring's
    credits then stop the input (images taken: the ring's slots and the passes done), then every
    result comes, the same."""
    base, config, plan, _, _, exps, g, vector = setup
    _, _, x, labels = tiny_setup(seed=5, n=24)  # the same base; more images than the ring and FIFOs hold
    p = HwParams(config)
    held = 4000
    seen = {}

    async def bench(ctx, dut, rec):
        await load_adapters(ctx, dut, vector.adapter_bytes, p.beat_bits // 8)
        seen["start"] = len(rec["taken"])
        await predict(ctx, dut, base, x, labels, exps)
        seen["status"] = await wait_idle(ctx, dut.bus, 100_000)

    cycle0 = {}

    def ready(cycle):
        cycle0.setdefault("c", cycle)
        return int(cycle - cycle0["c"] > held)

    dut, rec = simulate(config, base, plan, bench, ready=ready)
    assert not seen["status"]["error"], seen["status"]
    check_results(rec, p, g, *model_results(base, g, x, exps, vector.adapters))
    assert rec["slot_wait"] > 0, "the credits bound"
    beats = image_beats(p.beat_bits // 8, flat_inputs(x).shape[1])
    taken = [c for c in rec["taken"] if c < held - 100]
    # the adapters' beats, then the images: the ring's slots, and one a pass done before the
    # result FIFO (RESULT_DEPTH), the streamer's result and its output FIFO filled up
    images_in = (len(taken) - p.layout.a_beats - p.layout.b_beats) / beats
    passes = RESULT_DEPTH + 1 + -(-OUT_DEPTH // result_beats(p.C, p.beat_bits))
    assert RING_ENTRIES <= images_in <= RING_ENTRIES + passes, images_in
    assert images_in < len(x)


def test_random_stream_stalls_change_nothing_but_time(setup):
    """Random m_axis TREADY and s_axis gaps: the same results, TLAST once, no error."""
    base, config, plan, x, labels, exps, g, vector = setup
    p = HwParams(config)
    rng = np.random.default_rng(3)
    pattern = rng.random(200_000) < 0.4
    seen = {}

    async def bench(ctx, dut, rec):
        await load_adapters(ctx, dut, vector.adapter_bytes, p.beat_bits // 8)
        gaps = [int(v) for v in rng.integers(0, 4, 10_000)]
        await predict(ctx, dut, base, x, labels, exps, gaps=gaps)
        seen["status"] = await wait_idle(ctx, dut.bus, 200_000)

    dut, rec = simulate(config, base, plan, bench, ready=lambda c: int(pattern[c]))
    assert not seen["status"]["error"], seen["status"]
    check_results(rec, p, g, *model_results(base, g, x, exps, vector.adapters))


def test_predict_leaves_the_cache_and_the_adapters_and_a_following_job_is_unchanged(setup):
    """LOAD_CACHE 4 entries, PREDICT, then a job: the job's adapters, CORRECT and CYCLES are those
    of the same job without the PREDICT; N_LOADED stays 4; READ_ADAPTERS before the job gives the
    adapters loaded."""
    base, config, plan, x, labels, exps, g, vector0 = setup
    n = 4
    codes, logits, _, _ = base.encode(x[:n], exps)
    vector = dataclasses.replace(vector0, cache=CacheEntries(codes, logits, labels[:n]),
                                 job=dataclasses.replace(vector0.job, exponents=tuple(exps),
                                                         signed=tuple(base.tap_signed)))
    lay = vector.layout
    runs = []

    def run(with_predict):
        seen = {}

        async def bench(ctx, dut, rec):
            await load_cache(ctx, dut, vector.cache_bytes, n, lay.beat_bytes)
            await load_adapters(ctx, dut, vector.adapter_bytes, lay.beat_bytes)
            if with_predict:
                await predict(ctx, dut, base, x, labels, exps)
                seen["predict"] = await wait_idle(ctx, dut.bus, 100_000)
                seen["n_loaded"] = await read_reg(ctx, dut.bus, "N_LOADED")
                rec["out"].clear()
                seen["adapters_after"] = await read_adapters(ctx, dut, lay.adapter_beats, lay.beat_bytes)
            await program_job(ctx, dut.bus, vector)
            await write_reg(ctx, dut.bus, "CTRL", start=1)
            seen["status"] = await wait_idle(ctx, dut.bus, 4 * vector.cycles + 1000)
            lo, hi = await read_reg(ctx, dut.bus, "CYCLES_LO"), await read_reg(ctx, dut.bus, "CYCLES_HI")
            seen["job"] = (lo | hi << 32, await read_reg(ctx, dut.bus, "CORRECT"),
                           await read_reg(ctx, dut.bus, "EPOCH"))
            rec["out"].clear()
            seen["adapters"] = await read_adapters(ctx, dut, lay.adapter_beats, lay.beat_bytes)

        simulate(config, base, plan, bench)
        return seen

    plain, after = run(False), run(True)
    assert not after["predict"]["error"] and after["n_loaded"] == n
    assert after["adapters_after"] == bytes(vector.adapter_bytes)
    assert not after["status"]["error"] and after["status"]["done"]
    assert after["job"] == plain["job"] and after["adapters"] == plain["adapters"]


def test_predict_after_a_ddr_job_reads_the_ring(setup):
    """A build with the DDR path: a job from DDR (CACHE_MODE.ddr) leaves the datapath's cache / batch
    buffer select at DDR; a PREDICT after it still reads its ring on chip: the model's results."""
    import dataclasses as dc

    base, config, plan, x, labels, exps, g, vector0 = setup
    config = dc.replace(config, name="tinyfill-ddr", ddr_samples=64, ddr_batch=8)
    p = HwParams(config)
    n = 4
    codes, logits, _, _ = base.encode(x[:n], exps)
    vector = make_vector(config, samples=n, batch=2, epochs=1, seed=7, geometry=g)
    vector = dataclasses.replace(vector, cache=CacheEntries(codes, logits, labels[:n]),
                                 job=dataclasses.replace(vector.job, exponents=tuple(exps),
                                                         signed=tuple(base.tap_signed)))
    seen = {}

    async def bench(ctx, dut, rec):
        bb = p.beat_bits // 8
        await load_adapters(ctx, dut, vector.adapter_bytes, bb)
        await program_job(ctx, dut.bus, vector)
        await program_ddr(ctx, dut.bus)
        await write_reg(ctx, dut.bus, "CTRL", start=1)
        seen["job"] = await wait_idle(ctx, dut.bus, 100_000)
        rec["out"].clear()
        seen["adapters"] = await read_adapters(ctx, dut, vector.layout.adapter_beats, bb)
        rec["out"].clear()
        await predict(ctx, dut, base, x, labels, exps)
        seen["predict"] = await wait_idle(ctx, dut.bus, 100_000)

    dut, rec = simulate(config, base, plan, bench, ddr_data=bytes(vector.ddr_bytes))
    assert seen["job"]["done"] and not seen["job"]["error"], seen["job"]
    assert not seen["predict"]["error"], seen["predict"]
    trained = vector.unpack_adapters(np.frombuffer(seen["adapters"], np.uint8))
    check_results(rec, p, g, *model_results(base, g, x, exps, trained))


@pytest.mark.parametrize("case", ["no_adapters", "count0", "classes", "no_base", "exponent"])
def test_a_bad_predict_command_is_one_error_and_arms_nothing(setup, case):
    base, config, plan, x, labels, exps, g, vector = setup
    p = HwParams(config)
    seen = {}
    want = ErrorCode.NO_ADAPTERS if case == "no_adapters" else ErrorCode.BAD_CONFIG
    if case == "exponent":  # within FILL's range (the base's LSB exponent + 0..31), above START's
        from skip2lora.fixed import formats as F
        exps = (exps[0], F.EXP_MAX + 1) + tuple(exps[2:])
        assert base.tap_fracs[1] <= exps[1] <= base.tap_fracs[1] + 31

    async def bench(ctx, dut, rec):
        if case != "no_adapters":
            await load_adapters(ctx, dut, vector.adapter_bytes, p.beat_bits // 8)
        await program_fill(ctx, dut, base, exps, 0 if case == "count0" else N,
                           classes=base.classes + 1 if case == "classes" else None)
        await write_reg(ctx, dut.bus, "CTRL", predict=1)
        seen["status"] = await wait_idle(ctx, dut.bus, 1000)

    if case == "no_base":
        dut = Skip2LoRACore(config)
        sim = Simulator(dut)
        sim.add_clock(1e-8)

        async def tb(ctx):
            await bench(ctx, dut, None)
        sim.add_testbench(tb)
        sim.run()
    else:
        simulate(config, base, plan, bench)
    st = seen["status"]
    assert st["error"] and st["error_code"] == want and not st["loading"] and not st["sending"], st


@pytest.mark.parametrize("where", ["early", "late"])
def test_a_tlast_error_ends_the_output_frame_and_the_next_predict_is_exact(setup, where):
    """TLAST in image 6's second beat (early) or none on the last beat (late): TLAST_EARLY / LATE,
    the output frame ends with one beat of 0xFFFF words and TLAST after whole results, the core
    goes idle; after CLEAR_ERROR a PREDICT of the images gives the model's results."""
    base, config, plan, x, labels, exps, g, vector = setup
    p = HwParams(config)
    bb = p.beat_bits // 8
    RB = result_beats(p.C, p.beat_bits)
    seen = {}

    async def bench(ctx, dut, rec):
        await load_adapters(ctx, dut, vector.adapter_bytes, bb)
        await program_fill(ctx, dut, base, exps, N)
        beats = to_beats(fill_bytes(base, x, labels, bb), bb)
        per = len(beats) // N
        if where == "early":
            cut = 6 * per + 1
            beats = [(d, i == cut) for i, (d, _) in enumerate(beats[:cut + 1])]
        else:
            beats = [(d, False) for d, _ in beats] + [(0, True)]
        await write_reg(ctx, dut.bus, "CTRL", predict=1)
        await stream_send(ctx, dut.s_axis, beats)
        seen["status"] = await wait_idle(ctx, dut.bus, 100_000)
        seen["frame"] = list(rec["out"])
        rec["out"].clear()
        await write_reg(ctx, dut.bus, "CTRL", clear_error=1)
        await predict(ctx, dut, base, x, labels, exps)
        seen["again"] = await wait_idle(ctx, dut.bus, 100_000)

    dut, rec = simulate(config, base, plan, bench)
    want = ErrorCode.TLAST_EARLY if where == "early" else ErrorCode.TLAST_LATE
    assert seen["status"]["error_code"] == want and not seen["status"]["overrun"], seen["status"]
    frame = seen["frame"]
    assert [last for _, last, _ in frame] == [False] * (len(frame) - 1) + [True]
    assert (len(frame) - 1) % RB == 0, "whole results, then the abort beat"
    assert frame[-1][0] == (1 << p.beat_bits) - 1
    done = (len(frame) - 1) // RB
    want_y, want_cls = model_results(base, g, x, exps, vector.adapters)
    y, cls = results_of({"out": frame[:-1]}, p, done)
    np.testing.assert_array_equal(cls, want_cls[:done])
    assert int(RESULT_ABORT) == 0xFFFF
    assert not seen["again"]["error"], seen["again"]
    check_results(rec, p, g, want_y, want_cls)


def test_a_command_during_predict_is_busy_and_the_results_still_come(setup):
    base, config, plan, x, labels, exps, g, vector = setup
    p = HwParams(config)
    seen = {}

    async def bench(ctx, dut, rec):
        await load_adapters(ctx, dut, vector.adapter_bytes, p.beat_bits // 8)
        await predict(ctx, dut, base, x, labels, exps,
                      after_command=lambda: write_reg(ctx, dut.bus, "CTRL", start=1))
        seen["status"] = await wait_idle(ctx, dut.bus, 100_000)

    dut, rec = simulate(config, base, plan, bench)
    assert seen["status"]["error_code"] == ErrorCode.BUSY, seen["status"]
    check_results(rec, p, g, *model_results(base, g, x, exps, vector.adapters))
