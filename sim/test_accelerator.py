"""cocotb tests of the generated accelerator RTL (toplevel ``skip2lora``).

Launched by ``tests/test_rtl_sim.py`` through ``skip2lora.sim.runner`` (never directly). What a test
runs comes from environment variables set by the launcher:

* ``SKIP2LORA_CONFIG``: the configuration the simulator was built for (JSON).
* ``SKIP2LORA_CASES``: case seeds for `test_random_jobs` (see `skip2lora.sim.tb.random_case`).
* ``SKIP2LORA_VECTOR``: ``make_vector`` keyword arguments (JSON) for `test_vector_job`; with
  ``ddr_latency`` (and optionally ``ddr_addr``) the job runs from a DDR buffer under the memory
  ``DDRTiming(ddr_latency)``.
* ``SKIP2LORA_BACKPRESSURE``: 0 turns the random stalls and gaps off (default on).
* ``SKIP2LORA_REPORT``: where the per-case results go (JSON) for the launcher.

Every test checks results bit for bit against `skip2lora.fixed.vectors` and has a timeout on each
wait; a failing random case is reported with its seed and the command that re-runs it alone.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import warnings

import cocotb

from skip2lora.sim.tb import (FAMILY_SIZE, TB, JobModel, Observed, Report, Scoreboard, case_seeds_from_env,
                              config_from_env, random_case)

# cocotbext-axi 0.1.28 still uses cocotb 1.x spellings (setimmediatevalue, Edge, task.kill, ...).
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.")
log = logging.getLogger("cocotb.skip2lora")
log.setLevel(logging.INFO)

_BACKPRESSURE = os.environ.get("SKIP2LORA_BACKPRESSURE", "1") not in ("0", "false", "no")
_SIM = os.environ.get("SKIP2LORA_SIM", "verilator")


def rerun_command(seed: int) -> str:
    sim = "" if _SIM == "verilator" else f"SIM={_SIM} "
    return f"{sim}pytest tests/test_rtl_sim.py --case-seed {seed}"


async def _fresh_tb(dut, seed: int = 0, *, backpressure: bool | None = None, ddr_latency: int | None = None) -> TB:
    tb = TB(dut, rng=random.Random(seed), backpressure=_BACKPRESSURE if backpressure is None else backpressure,
            ddr_latency=ddr_latency)
    await tb.reset()
    return tb


async def _hard_reset(tb: TB) -> None:
    """Recover from a failed case: aresetn, and empty the bus models' queues."""
    tb.set_backpressure(False)
    await tb.reset(16)
    tb.source.clear()
    tb.sink.clear()


# -- constrained-random regression -------------------------------------------------------------------

@cocotb.test(timeout_time=4, timeout_unit="sec")
async def test_random_jobs(dut):
    """Every case of SKIP2LORA_CASES: load, train, read back under random stalls; bit- and cycle-exact."""
    config = config_from_env()
    seeds = case_seeds_from_env()
    assert seeds, "SKIP2LORA_CASES is empty"
    report = Report()
    tb = await _fresh_tb(dut, seeds[0])
    board = Scoreboard(log)
    failed = []
    for seed in seeds:
        case = random_case(seed)
        if case.config != config:
            # A case of another family (e.g. --case-seed on a hand-made build): run it on this build's
            # geometry only if it matches, never silently on a different one.
            raise AssertionError(f"case {seed} belongs to family {seed // FAMILY_SIZE} "
                                 f"({case.config}), but the simulator was built for {config}")
        vector = case.vector()
        model = JobModel(vector)
        tb.rng = random.Random(seed)
        use_irq = tb.rng.random() < 0.75
        t0 = time.perf_counter()
        try:
            got = await tb.run_model(model, use_irq=use_irq)
            errors = board.compare(model, got)
        except AssertionError as e:  # a protocol error or a timeout
            errors, got = [str(e)], None
        wall = time.perf_counter() - t0
        entry = dict(seed=seed, describe=vector.describe(), cycles=model.cycles, irq=use_irq, wall=round(wall, 3),
                     extreme=case.kw["extreme"])
        if errors:
            msg = "; ".join(errors)
            log.error("FAILED case seed=%d: %s\n    %s\n    re-run: %s", seed, msg, vector.describe(),
                      rerun_command(seed))
            report.fail(seed=seed, error=msg, describe=vector.describe(), rerun=rerun_command(seed))
            failed.append(seed)
            await _hard_reset(tb)
        else:
            log.info("case seed=%d ok: %d cycles, %.2f s (%s)", seed, model.cycles, wall, vector.describe())
            report.add(**entry)
    assert not failed, f"{len(failed)} of {len(seeds)} cases failed, seeds {failed}"


# -- one whole job from explicit make_vector arguments (the KV260 job) ----------------------------------

@cocotb.test(timeout_time=4, timeout_unit="sec")
async def test_vector_job(dut):
    """The job of ``make_vector(config, **SKIP2LORA_VECTOR)``; wall time per phase in the report."""
    from skip2lora.fixed.vectors import make_vector

    from skip2lora.fixed.cycles import DDRTiming

    config = config_from_env()
    kw = json.loads(os.environ["SKIP2LORA_VECTOR"])
    latency = kw.pop("ddr_latency", None)
    ddr_addr = kw.pop("ddr_addr", DDR_ADDR) if latency is not None else None
    if "geometry" in kw:  # the job's geometry (run time), as Geometry.to_dict gives it
        from skip2lora.fixed.model import Geometry

        g = kw.pop("geometry")
        kw["geometry"] = Geometry(tuple(g["dims"]), g["rank"], g["classes"])
    report = Report()
    t0 = time.perf_counter()
    vector = make_vector(config, **kw, ddr=None if latency is None else DDRTiming(latency))
    model = JobModel(vector, ddr_addr=ddr_addr)
    _ = vector.expected  # the bit-exact model run, timed apart from the simulation
    t_model = time.perf_counter() - t0
    log.info("vector %s: %d cycles expected; model %.1f s", model.describe(), model.cycles, t_model)
    tb = await _fresh_tb(dut, kw.get("seed", 0), ddr_latency=latency)
    got = await tb.run_model(model, use_irq=True)
    report.set(vector=model.describe(), cycles=got.cycles, expected_cycles=model.cycles, correct=got.correct,
               model_seconds=round(t_model, 2), **{f"{k}_seconds": round(v, 2) for k, v in got.times.items()})
    log.info("RTL: %d cycles (model %d), correct %s; load %.1f s, job %.1f s, read-back %.1f s",
             got.cycles, model.cycles, got.correct, got.times["load"], got.times["job"], got.times["readback"])
    Scoreboard(log).check(model, got)


# -- directed jobs and error injection (small builds) ---------------------------------------------------

#: STATUS after a reset or a soft reset: idle, no error, no valid adapters, DONE cleared
IDLE_STATUS = {"busy": 0, "done": 0, "error": 0, "loading": 0, "sending": 0, "adapters": 0, "overrun": 0,
               "error_code": 0}


def _small_vector(**kw):
    from skip2lora.fixed.vectors import make_vector

    return make_vector(config_from_env(), **{**dict(samples=4, batch=2, epochs=1, seed=7), **kw})


async def _recover_and_check(tb: TB, *, seed: int = 11) -> None:
    """Soft reset clears everything; then a whole good job is bit-exact again."""
    await tb.soft_reset()
    st = await tb.status()
    assert st == IDLE_STATUS, st
    assert await tb.read_reg("N_LOADED") == 0
    model = JobModel(_small_vector(seed=seed, samples=5, batch=2, epochs=2))
    got = await tb.run_model(model, use_irq=True, fresh=False)
    Scoreboard(log).check(model, got, what="job after recovery")


async def _settle(tb: TB, cycles: int = 8) -> dict:
    await tb.cycles(cycles)
    return await tb.status()


@cocotb.test(timeout_time=200, timeout_unit="ms")
@cocotb.parametrize(job=[dict(samples=6, batch=4, epochs=2), dict(samples=5, batch=1, epochs=1),
                         dict(samples=7, batch=7, epochs=3), dict(samples=9, batch=4, epochs=1, cached=12)],
                    extreme=[False, True])
async def test_directed_jobs(dut, job, extreme):
    """Partial last batch, batch of one, one whole batch, spare cache entries; typical and saturating."""
    tb = await _fresh_tb(dut, 3)
    model = JobModel(_small_vector(seed=100 + job["samples"], extreme=extreme, **job))
    Scoreboard(log).check(model, await tb.run_model(model, use_irq=not extreme))


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_identification_registers(dut):
    from skip2lora.hw.regmap import ACCEL_ID, VERSION

    tb = await _fresh_tb(dut, 1)
    cfg = config_from_env()
    g = cfg.build_geometry   # the build's maxima
    assert await tb.read_reg("ID") == ACCEL_ID
    assert await tb.read_reg("VERSION") == (VERSION[0] << 16) | VERSION[1]
    assert await tb.read_reg("GEOMETRY") == g.taps | (g.rank << 8) | (g.classes << 16)
    assert await tb.read_reg("LANES") == cfg.lanes
    assert await tb.read_reg("CACHE_DEPTH") == cfg.cache_depth
    assert await tb.read_reg("TAP_LINES") == cfg.tap_lines_max
    for k in range(8):  # the job's geometry: read-write, 0 after reset
        assert await tb.read_reg(f"TAP{k}_DIM") == 0, f"TAP{k}_DIM"
    st = await tb.status()
    assert st == IDLE_STATUS, st


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_tlast_early(dut):
    from skip2lora.hw.regmap import ErrorCode

    tb = await _fresh_tb(dut, 21)
    v = _small_vector()
    bb = v.layout.beat_bytes
    tb.set_backpressure(True)
    await tb.write_reg("LOAD_COUNT", len(v.cache))
    await tb.write_reg("CTRL", load_cache=1)
    await tb.send_stream(bytes(v.cache_bytes)[:6 * bb])  # TLAST on beat 6 of many
    st = await _settle(tb)
    assert st["error"] and st["error_code"] == ErrorCode.TLAST_EARLY, st
    assert not st["busy"] and not st["loading"], st
    assert await tb.read_reg("N_LOADED") == 0
    await _recover_and_check(tb)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_tlast_late(dut):
    from skip2lora.hw.regmap import ErrorCode

    tb = await _fresh_tb(dut, 22)
    v = _small_vector()
    bb = v.layout.beat_bytes
    tb.set_backpressure(True)
    await tb.write_reg("LOAD_COUNT", len(v.cache))
    await tb.write_reg("CTRL", load_cache=1)
    extra = bytes(range(1, 1 + 3 * bb))  # three extra beats; TLAST only on the last of them
    await tb.send_stream(bytes(v.cache_bytes) + extra)  # completes only if the core drains to TLAST
    st = await _settle(tb)
    assert st["error"] and st["error_code"] == ErrorCode.TLAST_LATE, st
    assert not st["busy"] and not st["loading"], st
    assert await tb.read_reg("N_LOADED") == 0
    await _recover_and_check(tb)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_unexpected_stream(dut):
    from skip2lora.hw.regmap import ErrorCode

    tb = await _fresh_tb(dut, 23)
    tb.set_backpressure(True)
    await tb.send_stream(bytes(range(3 * tb.beat_bytes)))  # nothing armed: drained to TLAST
    st = await _settle(tb)
    assert st["error"] and st["error_code"] == ErrorCode.STREAM_UNEXPECTED, st
    assert not st["loading"] and not st["busy"], st
    await _recover_and_check(tb)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_cache_overflow(dut):
    from skip2lora.hw.regmap import ErrorCode

    tb = await _fresh_tb(dut, 24)
    v = _small_vector()
    tb.set_backpressure(True)
    await tb.write_reg("LOAD_COUNT", config_from_env().cache_depth + 1)
    await tb.write_reg("CTRL", load_cache=1)
    await tb.send_stream(bytes(v.cache_bytes))  # refused, drained
    st = await _settle(tb)
    assert st["error"] and st["error_code"] == ErrorCode.CACHE_OVERFLOW, st
    assert not st["busy"] and not st["loading"], st
    assert await tb.read_reg("N_LOADED") == 0
    await _recover_and_check(tb)


_BAD = [("SAMPLES", 0), ("SAMPLES", 5), ("BATCH", 0), ("BATCH", 9), ("BATCH", 5), ("EPOCHS", 0), ("LR", 0),
        ("TAP1_CFG", 5), ("TAP0_CFG", 0x30), ("TAP2_CFG", 0x2F), ("OPT", 15)]


@cocotb.test(timeout_time=200, timeout_unit="ms")
@cocotb.parametrize(bad=_BAD)
async def test_bad_config(dut, bad):
    """START with a register out of range: BAD_CONFIG, no job, nothing busy."""
    from skip2lora.hw.regmap import ErrorCode

    field_name, value = bad
    tb = await _fresh_tb(dut, 25)
    v = _small_vector()
    tb.set_backpressure(True)
    await tb.load_cache(bytes(v.cache_bytes), len(v.cache))
    await tb.load_adapters(bytes(v.adapter_bytes))
    await tb.program(JobModel(v).registers)
    await tb.write_reg(field_name, value)
    await tb.start()
    st = await _settle(tb)
    assert st["error"] and st["error_code"] == ErrorCode.BAD_CONFIG, (bad, st)
    assert not st["busy"] and not st["done"], (bad, st)
    await _recover_and_check(tb)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_start_while_busy(dut):
    """Commands during a job: BUSY latched, the job itself undisturbed and bit-exact."""
    from skip2lora.hw.regmap import ErrorCode

    tb = await _fresh_tb(dut, 26)
    model = JobModel(_small_vector(samples=4, batch=2, epochs=2))
    tb.set_backpressure(True)
    await tb.load_cache(model.cache_bytes, model.cache_count)
    await tb.load_adapters(model.adapter_bytes)
    await tb.program(model.registers)
    await tb.write_reg("IRQ_ENABLE", 1)
    await tb.start()
    await tb.start()                                # again, while running
    await tb.write_reg("CTRL", load_cache=1)        # and a load
    await tb.write_reg("CTRL", read_adapters=1)     # and a read-back
    st = await tb.wait_done(model.timeout_cycles)
    assert st["error_code"] == ErrorCode.BUSY and st["overrun"] and st["done"] and not st["busy"], st
    await tb.write_reg("CTRL", clear_error=1)  # the latched error blocks READ_ADAPTERS until cleared
    got = Observed(status=await tb.status(), cycles=await tb.cycles_reg(),
                   correct=await tb.read_reg("CORRECT"), n_loaded=await tb.read_reg("N_LOADED"),
                   epoch_stats=await tb.epoch_stats(2))
    got.adapter_bytes = await tb.read_adapters(model.adapter_beats)
    Scoreboard(log).check(model, got, what="job with commands while busy")
    await _recover_and_check(tb)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_soft_reset_aborts_running_job(dut):
    tb = await _fresh_tb(dut, 27)
    model = JobModel(_small_vector(samples=4, batch=2, epochs=3))
    tb.set_backpressure(True)
    await tb.load_cache(model.cache_bytes, model.cache_count)
    await tb.load_adapters(model.adapter_bytes)
    await tb.program(model.registers)
    await tb.start()
    tb.set_backpressure(False)
    await tb.cycles(model.cycles // 3)
    assert (await tb.status())["busy"] == 1
    await _recover_and_check(tb)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_soft_reset_during_load(dut):
    """Soft reset with a cache load half sent: the stream is dropped and a new job is exact."""
    tb = await _fresh_tb(dut, 28)
    v = _small_vector()
    bb = v.layout.beat_bytes
    await tb.write_reg("LOAD_COUNT", len(v.cache))
    await tb.write_reg("CTRL", load_cache=1)
    await tb.send_stream(bytes(v.cache_bytes)[:3 * bb])  # TLAST early, but: reset before looking
    await _recover_and_check(tb)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_online_appending(dut):
    """Cache entries appended in two loads extend the cache; the job trains on all of them."""
    tb = await _fresh_tb(dut, 29)
    model = JobModel(_small_vector(samples=6, batch=3, epochs=1, cached=6))
    per = model.layout.sample_lines * model.layout.beat_bytes
    tb.set_backpressure(True)
    await tb.soft_reset()
    await tb.load_cache(model.cache_bytes[:2 * per], 2)
    await tb.load_cache(model.cache_bytes[2 * per:], 4)
    assert await tb.read_reg("N_LOADED") == 6
    await tb.load_adapters(model.adapter_bytes)
    await tb.program(model.registers)
    await tb.write_reg("IRQ_ENABLE", 0)
    await tb.start()
    st = await tb.wait_done(model.timeout_cycles, use_irq=False)
    got = Observed(status=st, cycles=await tb.cycles_reg(), correct=await tb.read_reg("CORRECT"),
                   n_loaded=await tb.read_reg("N_LOADED"), epoch_stats=await tb.epoch_stats(1))
    got.adapter_bytes = await tb.read_adapters(model.adapter_beats)
    Scoreboard(log).check(model, got, what="job on an appended cache")


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_status_done_when_busy_falls(dut):
    """STATUS read at every cycle around the end of a job: never busy=0 with done=0.

    A host waits for STATUS.busy=0 and then requires STATUS.done (sw/driver/register_backend.py);
    the read that lands in the cycle where the sequencer returns to IDLE must already show done.
    """
    tb = await _fresh_tb(dut, 30, backpressure=False)
    model = JobModel(_small_vector(seed=109, samples=3, batch=2, epochs=1))
    seen = {}
    for off in range(-6, 4):
        await tb.soft_reset()
        await tb.load_cache(model.cache_bytes, model.cache_count)
        await tb.load_adapters(model.adapter_bytes)
        await tb.program(model.registers)
        await tb.start()
        await tb.cycles(model.cycles + off)
        st = await tb.status()
        seen[off] = (st["busy"], st["done"])
    log.info("(busy, done) by read offset from the end of the job: %s", seen)
    assert (1, 0) in seen.values() and (0, 1) in seen.values(), f"the scan missed the end of the job: {seen}"
    bad = [off for off, v in seen.items() if v == (0, 0)]
    assert not bad, (f"STATUS reads busy=0, done=0 after a finished job (read offsets {bad}): done lags busy "
                     f"by a cycle; {seen}")



# -- the documented behaviours of commands, errors and resets (docs/interface.md) ---------------------

async def _loaded(tb: TB, v) -> None:
    await tb.soft_reset()
    await tb.load_cache(bytes(v.cache_bytes), len(v.cache))
    await tb.load_adapters(bytes(v.adapter_bytes))
    await tb.program(JobModel(v).registers)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_load_count_zero_is_bad_config(dut):
    from skip2lora.hw.regmap import ErrorCode

    tb = await _fresh_tb(dut, 31)
    await tb.write_reg("LOAD_COUNT", 0)
    await tb.write_reg("CTRL", load_cache=1)
    st = await _settle(tb)
    assert st["error_code"] == ErrorCode.BAD_CONFIG and not st["loading"], st
    await _recover_and_check(tb)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_latched_error_blocks_commands_until_cleared(dut):
    """While an error is latched, commands are ignored (OVERRUN); CLEAR_ERROR keeps cache and adapters."""
    from skip2lora.hw.regmap import ErrorCode

    tb = await _fresh_tb(dut, 32)
    v = _small_vector(samples=4, batch=2, epochs=1)
    await _loaded(tb, v)
    await tb.write_reg("LOAD_COUNT", 0)
    await tb.write_reg("CTRL", load_cache=1)        # BAD_CONFIG latched
    await tb.start()                                # ignored
    st = await _settle(tb, 64)
    assert st["error_code"] == ErrorCode.BAD_CONFIG and st["overrun"] and not st["busy"] and not st["done"], st
    await tb.write_reg("CTRL", clear_error=1)
    st = await tb.status()
    assert not st["error"] and not st["overrun"] and st["adapters"], st
    assert await tb.read_reg("N_LOADED") == len(v.cache)
    model = JobModel(v)
    await tb.write_reg("IRQ", 1)
    await tb.start()
    got = Observed(status=await tb.wait_done(model.timeout_cycles, use_irq=False), cycles=await tb.cycles_reg(),
                   correct=await tb.read_reg("CORRECT"), epoch_stats=await tb.epoch_stats(1))
    got.adapter_bytes = await tb.read_adapters(model.adapter_beats)
    Scoreboard(log).check(model, got, what="job after CLEAR_ERROR")


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_soft_reset_invalidates_adapters(dut):
    """After a soft reset START and READ_ADAPTERS report NO_ADAPTERS instead of training from stale A."""
    from skip2lora.hw.regmap import ErrorCode

    tb = await _fresh_tb(dut, 33)
    v = _small_vector()
    await _loaded(tb, v)
    assert (await tb.status())["adapters"]
    await tb.soft_reset()
    await tb.load_cache(bytes(v.cache_bytes), len(v.cache))
    await tb.program(JobModel(v).registers)
    await tb.start()
    st = await _settle(tb)
    assert st["error_code"] == ErrorCode.NO_ADAPTERS and not st["busy"] and not st["adapters"], st
    await tb.write_reg("CTRL", clear_error=1)
    await tb.write_reg("CTRL", read_adapters=1)
    st = await _settle(tb)
    assert st["error_code"] == ErrorCode.NO_ADAPTERS and not st["sending"], st
    assert tb.sink.empty()
    await _recover_and_check(tb)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_failed_adapter_load_leaves_no_adapters(dut):
    from skip2lora.hw.regmap import ErrorCode

    tb = await _fresh_tb(dut, 34)
    v = _small_vector()
    await _loaded(tb, v)
    await tb.write_reg("CTRL", load_adapters=1)
    await tb.send_stream(bytes(v.adapter_bytes)[:2 * tb.beat_bytes])  # TLAST early
    st = await _settle(tb)
    assert st["error_code"] == ErrorCode.TLAST_EARLY and not st["adapters"], st
    await _recover_and_check(tb)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_done_until_start_and_irq_cleared_by_soft_reset(dut):
    """DONE stays through READ_ADAPTERS, LOAD_CACHE and CLEAR_CACHE; START clears it; a soft reset
    clears DONE and the W1C IRQ.done."""
    tb = await _fresh_tb(dut, 35, backpressure=False)
    v = _small_vector(samples=2, batch=2, epochs=1, cached=2)
    model = JobModel(v)
    await _loaded(tb, v)
    await tb.write_reg("IRQ", 1)
    await tb.start()
    await tb.wait_done(model.timeout_cycles, use_irq=False)
    assert (await tb.status())["done"] and await tb.read_reg("IRQ") == 1
    await tb.read_adapters(model.adapter_beats)
    await tb.write_reg("CTRL", clear_cache=1)
    await tb.load_cache(bytes(v.cache_bytes), len(v.cache))
    st = await _settle(tb)
    assert st["done"] and not st["error"], st
    await tb.start()
    await tb.cycles(2)
    assert not (await tb.status())["done"]
    await tb.wait_done(model.timeout_cycles, use_irq=False)
    assert await tb.read_reg("IRQ") == 1
    await tb.soft_reset()
    st = await tb.status()
    assert st == IDLE_STATUS and await tb.read_reg("IRQ") == 0, st


# -- the DDR cache: jobs from a buffer in DDR through m_axi_cache (builds with the DDR path) ----------

#: a 4 KB aligned buffer address above 4 GB (all 40 address bits in use), as tests/core_bench.py
DDR_ADDR = 0x12_3456_7000


def _ddr_config():
    cfg = config_from_env()
    assert cfg.ddr, f"{cfg.name} has no DDR cache path: the DDR tests need a build with one (e.g. SMALL)"
    return cfg


def _ddr_vector(latency: int, **kw):
    from skip2lora.fixed.cycles import DDRTiming
    from skip2lora.fixed.vectors import make_vector

    return make_vector(_ddr_config(), ddr=DDRTiming(latency),
                       **{**dict(samples=12, batch=4, epochs=1, seed=40), **kw})


async def _ddr_loaded(tb: TB, model: JobModel) -> None:
    """A DDR job ready to START: the buffer written, adapters loaded, registers programmed."""
    await tb.soft_reset()
    tb.ddr.write(model.ddr_addr, model.ddr_buffer)
    await tb.load_adapters(model.adapter_bytes)
    await tb.program(model.registers)
    await tb.write_reg("IRQ", 1)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_ddr_registers(dut):
    """DDR_SAMPLES, DDR_BATCH, DDR_STRIDE read the build's limits; CACHE_MODE and DDR_ADDR hold what is
    written (DDR_ADDR_HI its 8 bits); a soft reset keeps them (the job registers are not state)."""
    from skip2lora.fixed.packing import Layout

    cfg = _ddr_config()
    tb = await _fresh_tb(dut, 41, ddr_latency=0)
    assert await tb.read_reg("DDR_SAMPLES") == cfg.ddr_samples
    assert await tb.read_reg("DDR_BATCH") == cfg.ddr_batch
    assert await tb.read_reg("DDR_STRIDE") == Layout(cfg.build_geometry, cfg.lanes).ddr_stride
    assert await tb.read_reg("DDR_STRIDE") == tb.ddr.beat_bytes << (Layout(cfg.build_geometry, cfg.lanes).sample_lines
                                                                    - 1).bit_length()
    for name in ("CACHE_MODE", "DDR_ADDR_LO", "DDR_ADDR_HI"):
        assert await tb.read_reg(name) == 0, f"{name} after reset"
    await tb.write_reg("CACHE_MODE", 0xFFFF_FFFF)
    await tb.write_reg("DDR_ADDR_LO", 0xFFFF_F000)
    await tb.write_reg("DDR_ADDR_HI", 0xFFFF_FFFF)
    assert await tb.read_reg("CACHE_MODE") == 1
    assert await tb.read_reg("DDR_ADDR_LO") == 0xFFFF_F000
    assert await tb.read_reg("DDR_ADDR_HI") == 0xFF  # a 40-bit bus address
    await tb.soft_reset()
    assert await tb.read_reg("CACHE_MODE") == 1 and await tb.read_reg("DDR_ADDR_HI") == 0xFF
    for name in ("DDR_SAMPLES", "DDR_BATCH", "DDR_STRIDE"):  # read-only
        before = await tb.read_reg(name)
        await tb.write_reg(name, 0x1234)
        assert await tb.read_reg(name) == before, f"{name} is read-only"
    assert tb.ddr.bursts == 0 and (await tb.status())["error_code"] == 0


#: (latency, buffer address, make_vector arguments): more samples than the on-chip cache holds, the
#: largest mini-batch, a partial last batch, a batch of one, saturating values, a buffer at address 0
#: and one at the top of the 40-bit space, the latencies from 0 to the most the cycle model covers
_DDR_JOBS = [
    (0, DDR_ADDR, dict(samples=69, batch=8, epochs=2, seed=31, shuffle=True)),
    (None, (1 << 40) - (1 << 20), dict(samples=23, batch=6, epochs=2, seed=32, extreme=True)),
    (13, 0, dict(samples=1, batch=1, epochs=2, seed=33)),
    (7, DDR_ADDR, dict(samples=20, batch=3, epochs=1, seed=34, shuffle=True)),
]


@cocotb.test(timeout_time=20, timeout_unit="sec")
async def test_ddr_jobs_fixed_latency(dut):
    """Jobs from DDR under the fixed-latency memory: adapters, CORRECT, the epochs' statistics bit-exact
    and the cycle counter equal to job_cycles(..., ddr=DDRTiming(latency)); then an on-chip job on the
    same core (CACHE_MODE back to 0) is exact too."""
    from skip2lora.sim.tb import default_ddr_latency

    cfg = _ddr_config()
    tb = await _fresh_tb(dut, 42, ddr_latency=0)
    board = Scoreboard(log)
    for latency, addr, kw in _DDR_JOBS:
        latency = default_ddr_latency(cfg) if latency is None else latency  # SMALL: 27, the model's most
        tb.set_ddr_latency(latency)
        model = JobModel(_ddr_vector(latency, **kw), ddr_addr=addr)
        bursts = tb.ddr.bursts
        got = await tb.run_model(model, use_irq=kw["seed"] % 2 == 1)
        board.check(model, got, what=f"DDR job at latency {latency}")
        per_epoch = tb.ddr.bursts - bursts
        assert per_epoch == model.vector.job.samples * model.vector.job.epochs, (
            f"{per_epoch} bursts: DDR is read once per sample per epoch")
        log.info("DDR job ok: %d cycles (%s)", got.cycles, model.describe())
    assert not tb.ddr.protocol_errors, tb.ddr.protocol_errors
    await _recover_and_check(tb)


@cocotb.test(timeout_time=30, timeout_unit="sec")
async def test_ddr_jobs_axi_ram(dut):
    """cocotbext-axi's AxiRamRead: unpaused it is DDRTiming(AXI_RAM_LATENCY) (cycle-exact); with random
    AR and R pauses the jobs are bit-exact and only slower."""
    from skip2lora.sim.tb import AXI_RAM_LATENCY

    tb = await _fresh_tb(dut, 43)
    assert tb.ddr.latency is None  # AxiRamRead answers
    board = Scoreboard(log)
    model = JobModel(_ddr_vector(AXI_RAM_LATENCY, samples=30, batch=8, epochs=1, seed=44, shuffle=True),
                     ddr_addr=DDR_ADDR)
    board.check(model, await tb.run_model(model), what="DDR job on AxiRamRead")
    for seed, kw in ((45, dict(samples=23, batch=6, epochs=2)), (46, dict(samples=17, batch=8, epochs=1, shuffle=True)),
                     (47, dict(samples=9, batch=1, epochs=1))):
        tb.rng = random.Random(seed)
        tb.set_ddr_pauses(True)
        model = JobModel(_ddr_vector(AXI_RAM_LATENCY, seed=seed, **kw), ddr_addr=DDR_ADDR + seed * (1 << 16),
                         exact_cycles=False)
        got = await tb.run_model(model, use_irq=seed % 2 == 0)
        board.check(model, got, what="DDR job under random AR/R pauses")
        log.info("DDR job under pauses ok: %d cycles, the model's memory %d (%s)", got.cycles, model.min_cycles,
                 model.describe())
        if _BACKPRESSURE:
            assert got.cycles > model.min_cycles, "the pauses cost no cycle: were they on?"
    tb.set_ddr_pauses(False)
    await _recover_and_check(tb)


@cocotb.test(timeout_time=5, timeout_unit="sec")
@cocotb.parametrize(engine=["axi_ram", "fixed"])
async def test_ddr_read_error(dut, engine):
    """An SLVERR on one beat of entry 5: STATUS.error with DDR_READ, the job ends (done, not busy);
    after a soft reset a DDR job and an on-chip job are exact again."""
    from skip2lora.hw.regmap import ErrorCode

    from skip2lora.sim.tb import AXI_RAM_LATENCY

    tb = await _fresh_tb(dut, 48, ddr_latency=3 if engine == "fixed" else None)
    latency = AXI_RAM_LATENCY if engine == "axi_ram" else 3  # the memory's timing (AxiRamRead unpaused)
    model = JobModel(_ddr_vector(latency, samples=12, batch=4, epochs=2, seed=49), ddr_addr=DDR_ADDR)
    layout = model.layout
    tb.ddr.fail(DDR_ADDR + 5 * layout.ddr_stride + 2 * layout.beat_bytes, 1)  # a byte of entry 5's third beat
    tb.set_backpressure(True)
    await _ddr_loaded(tb, model)
    await tb.start()
    st = await tb.wait_done(model.timeout_cycles, use_irq=False)
    assert st["error"] and st["error_code"] == ErrorCode.DDR_READ, st
    assert st["done"] and not st["busy"], st
    tb.ddr.clear_faults()
    await tb.soft_reset()
    assert await tb.status() == IDLE_STATUS
    model = JobModel(_ddr_vector(latency, samples=12, batch=4, epochs=2, seed=50), ddr_addr=DDR_ADDR)
    Scoreboard(log).check(model, await tb.run_model(model), what="DDR job after a read error")
    await _recover_and_check(tb)


@cocotb.test(timeout_time=5, timeout_unit="sec")
@cocotb.parametrize(bad=["alignment", "samples", "batch"])
async def test_ddr_bad_config(dut, bad):
    """START in DDR mode with DDR_ADDR not 4 KB aligned, SAMPLES above DDR_SAMPLES or BATCH above
    DDR_BATCH: BAD_CONFIG, no job, no read of DDR."""
    from skip2lora.hw.regmap import ErrorCode

    cfg = _ddr_config()
    tb = await _fresh_tb(dut, 51, ddr_latency=5)
    model = JobModel(_ddr_vector(5, samples=16, batch=4), ddr_addr=DDR_ADDR)
    tb.set_backpressure(True)
    await _ddr_loaded(tb, model)
    if bad == "alignment":
        await tb.write_reg("DDR_ADDR_LO", (DDR_ADDR + 0x800) & 0xFFFF_FFFF)
    elif bad == "samples":
        assert cfg.ddr_samples < 0xFFFF, "the SAMPLES register cannot exceed this build's DDR_SAMPLES"
        await tb.write_reg("SAMPLES", cfg.ddr_samples + 1)
        await tb.write_reg("BATCH", cfg.ddr_batch)
    else:
        await tb.write_reg("BATCH", cfg.ddr_batch + 2)  # (still <= SAMPLES, an even size)
    await tb.start()
    st = await _settle(tb, 64)
    assert st["error"] and st["error_code"] == ErrorCode.BAD_CONFIG, (bad, st)
    assert not st["busy"] and not st["done"], (bad, st)
    assert tb.ddr.bursts == 0, f"{tb.ddr.bursts} DDR reads for a refused job"
    await _recover_and_check(tb)


@cocotb.test(timeout_time=5, timeout_unit="sec")
async def test_ddr_soft_reset_during_job(dut):
    """A soft reset while a DDR job's fetches are in flight: the reader finishes its bursts (an AXI
    manager cannot drop them), the core is idle afterwards and the next DDR job is exact."""
    from skip2lora.sim.tb import default_ddr_latency

    latency = default_ddr_latency(_ddr_config())
    tb = await _fresh_tb(dut, 52, ddr_latency=latency)
    model = JobModel(_ddr_vector(latency, samples=24, batch=8, epochs=2, seed=53), ddr_addr=DDR_ADDR)
    await _ddr_loaded(tb, model)
    await tb.start()
    tb.set_backpressure(False)
    await tb.cycles(model.cycles // 3)
    assert (await tb.status())["busy"] == 1
    bursts = tb.ddr.bursts
    await tb.soft_reset()
    st = await tb.wait_done(2000, use_irq=False)
    assert not st["busy"] and st["error_code"] == 0, st
    assert bursts < model.vector.job.samples * model.vector.job.epochs, "the job had finished its reads"
    model = JobModel(_ddr_vector(latency, samples=24, batch=8, epochs=2, seed=54), ddr_addr=DDR_ADDR + 0x1000)
    Scoreboard(log).check(model, await tb.run_model(model), what="DDR job after a soft reset mid-job")
    assert not tb.ddr.protocol_errors, tb.ddr.protocol_errors
