"""The host side of the DDR cache (docs/ddr-cache.md): where each backend keeps the cache entries.

* The placement rules (``cache="auto" | "chip" | "ddr"``), their limits and messages, the result's
  ``cache`` and its cycle count (the cycle model with the DDR timing the backend assumes), on the
  fixed backend.
* A job from DDR is bit-identical to the same job on chip (the arithmetic never sees where an
  entry came from).
* The RTL simulation (SMALL build): a session that outgrows the on-chip cache runs from DDR,
  bit-identical to the fixed backend, its cycle counter equal to the cycle model under the
  simulated memory's latency; a DDR read error is reported as such.
* The virtual KV260: the PYNQ backend, unchanged, runs the same session from a `pynq.allocate`
  buffer the virtual board hands to the simulation.
"""

import json
import re
from dataclasses import replace
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from skip2lora.driver import AcceleratorError, FixedBackend, Session, default_ddr_timing, make_backend
from skip2lora.driver.backend import check_cache_args, largest_ddr_latency
from skip2lora.fixed.config import KV260, SMALL
from skip2lora.fixed.cycles import KV260_DDR, DDRTiming, job_cycles
from skip2lora.fixed.model import CacheEntries
from skip2lora.fixed.packing import Layout
from skip2lora.fixed.vectors import make_vector
from small_model import CONFIG as NO_DDR, data, small_base

ROOT = Path(__file__).resolve().parents[1]
PYNQ_PYTHON = ROOT / ".venv-pynq" / "bin" / "python"


def entries(config, n, seed=0):
    """n valid cache entries for a build (from a random test vector)."""
    return make_vector(config, samples=n, batch=1, epochs=1, seed=seed,
                       ddr=KV260_DDR if n > config.cache_depth else None).cache


# -- arguments ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,message", [
    ({"cache": 1}, TypeError, "cache must be one of 'auto', 'chip', 'ddr', not 1"),
    ({"cache": "DDR"}, ValueError, "cache must be one of 'auto', 'chip', 'ddr', not 'DDR'"),
    ({"ddr_timing": 100}, TypeError, "ddr_timing must be a skip2lora.fixed.cycles.DDRTiming or None, not 100"),
    ({"ddr_timing": DDRTiming(28)}, ValueError,
     "ddr_timing: the cycle model does not cover a DDR latency of 28 cycles with 11-line entries (at most 27)"),
])
def test_bad_cache_arguments_are_refused(kwargs, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        FixedBackend(SMALL, **kwargs)


def test_ddr_placement_needs_a_build_with_the_ddr_path():
    with pytest.raises(ValueError, match="cache='ddr' needs a build with the DDR cache path; the small4 build has "
                                         "none .* use cache='chip' or 'auto' .its on-chip cache holds 32 entries"):
        FixedBackend(NO_DDR, cache="ddr")
    backend = FixedBackend(NO_DDR, ddr_timing=KV260_DDR)  # auto: on chip; a timing is kept but never used
    assert backend.cache_mode == "chip" and backend.ddr_timing is None and backend.cache_limit == 32
    with pytest.raises(ValueError, match="cache='ddr' needs"):  # the same check, before a simulator starts
        check_cache_args("ddr", None, NO_DDR)


def test_the_default_ddr_timing_is_the_kv260_assumption_where_the_model_covers_it():
    assert default_ddr_timing(KV260) is KV260_DDR and default_ddr_timing(Layout(KV260.geometry, 32)) is KV260_DDR
    small = default_ddr_timing(SMALL)
    assert small.latency == largest_ddr_latency(SMALL) == 27 and "largest latency the cycle model covers" in small.source
    layout = Layout(SMALL.geometry, SMALL.lanes)
    small.fetch_cycles(layout, 8)  # covered
    with pytest.raises(ValueError, match="does not cover"):
        DDRTiming(28).fetch_cycles(layout, 8)
    assert FixedBackend(KV260).ddr_timing is KV260_DDR and FixedBackend(SMALL).ddr_timing == small
    assert FixedBackend(SMALL, ddr_timing=DDRTiming(3, "mine")).ddr_timing == DDRTiming(3, "mine")
    with pytest.raises(TypeError, match="expected a Layout or an AcceleratorConfig"):
        default_ddr_timing("kv260")


# -- placement -----------------------------------------------------------------------------------

def test_auto_runs_on_chip_while_the_entries_fit_then_from_ddr():
    backend = FixedBackend(SMALL)
    assert backend.cache_placement == "auto" and backend.cache_limit == SMALL.ddr_samples
    backend.load_cache(entries(SMALL, 64))
    assert backend.cache_mode == "chip" and backend.n_loaded == 64
    backend.load_cache(entries(SMALL, 1, seed=1))
    assert backend.cache_mode == "ddr" and backend.n_loaded == 65
    backend.clear_cache()
    assert backend.cache_mode == "chip" and backend.n_loaded == 0


def test_chip_placement_stops_at_the_on_chip_cache_and_says_what_to_do():
    backend = FixedBackend(SMALL, cache="chip")
    assert backend.cache_limit == 64 and backend.cache_mode == "chip"
    with pytest.raises(ValueError) as err:
        backend.check_room(65)
    assert str(err.value) == ("the on-chip cache holds 64 entries: 0 are loaded, 65 more do not fit; "
                              "cache='ddr' (or 'auto') runs up to 1024 from DDR")
    backend.load_cache(entries(SMALL, 60))
    with pytest.raises(ValueError, match="60 are loaded, 5 more do not fit; cache='ddr' .or 'auto'. runs up to 1024 "
                                         "from DDR, or clear the cache .clear_samples. first$"):
        backend.load_cache(entries(SMALL, 5))
    assert backend.n_loaded == 60
    with pytest.raises(ValueError, match="the on-chip cache holds 1024 entries: 0 are loaded, 1025 more do not fit; "
                                         "cache='ddr' .or 'auto'. runs up to 65535 from DDR"):
        FixedBackend(KV260, cache="chip").check_room(1025)


@pytest.mark.parametrize("cache", ["auto", "ddr"])
def test_the_ddr_limit_is_ddr_samples(cache):
    backend = FixedBackend(SMALL, cache=cache)
    backend.check_room(SMALL.ddr_samples)
    with pytest.raises(ValueError) as err:
        backend.check_room(SMALL.ddr_samples + 1)
    assert str(err.value) == ("the DDR cache runs jobs of up to 1024 entries (DDR_SAMPLES, the SAMPLES register's "
                              "range): 0 are loaded, 1025 more do not fit; load fewer")
    with pytest.raises(ValueError, match="count must be a non-negative integer"):
        backend.check_room(-1)


def test_ddr_placement_holds_every_entry_in_ddr():
    backend = FixedBackend(SMALL, cache="ddr")
    assert backend.cache_mode == "ddr"
    backend.load_cache(entries(SMALL, 4))
    assert backend.cache_mode == "ddr" and backend.n_loaded == 4


def test_a_ddr_job_reports_its_placement_and_the_cycle_model_under_the_ddr_timing():
    v = make_vector(SMALL, samples=24, batch=4, epochs=2, seed=5)

    def run(**kwargs):
        backend = FixedBackend(SMALL, **kwargs)
        backend.load_cache(v.cache)
        backend.load_adapters(v.adapters)
        return backend.layout, backend.run(v.job)

    def model(layout, ddr):
        return job_cycles(layout, 24, 4, 2, shuffle=v.job.shuffle, ddr=ddr)

    layout, chip = run(cache="chip")
    assert chip["cache"] == "chip" and chip["cycles"] == model(layout, None)
    _, ddr = run(cache="ddr")  # under the default timing: for SMALL's 11-line entries 27 cycles
    assert ddr["cache"] == "ddr" and ddr["cycles"] == model(layout, default_ddr_timing(SMALL)) > chip["cycles"]
    timing = DDRTiming(9, "a test memory")
    _, given = run(cache="ddr", ddr_timing=timing)
    assert given["cycles"] == model(layout, timing) < ddr["cycles"]


def test_a_ddr_job_takes_mini_batches_up_to_ddr_batch():
    v = make_vector(SMALL, samples=70, batch=10, epochs=1, seed=2, ddr=KV260_DDR)
    backend = FixedBackend(SMALL)  # auto: 70 entries are in DDR
    backend.load_cache(v.cache)
    backend.load_adapters(v.adapters)
    with pytest.raises(ValueError) as err:
        backend.run(v.job)
    assert str(err.value) == ("a job from the DDR cache takes mini-batches of at most 8 samples (the small build's "
                              "DDR_BATCH), not 10: use batch <= 8, or load at most 64 entries to run on chip")
    forced = FixedBackend(SMALL, cache="ddr")
    forced.load_cache(v.cache.subset(slice(0, 20)))
    forced.load_adapters(v.adapters)
    with pytest.raises(ValueError, match="use batch <= 8, or cache='chip' / 'auto' with at most 64 entries"):
        forced.run(replace(v.job, samples=20))
    chip = FixedBackend(SMALL, cache="chip")  # on chip any batch runs
    chip.load_cache(v.cache.subset(slice(0, 20)))
    chip.load_adapters(v.adapters)
    assert chip.run(replace(v.job, samples=20))["cache"] == "chip"


# -- bit-identical wherever the entries are -----------------------------------------------------

def _fixed_pair(config, v):
    out = {}
    for cache in ("chip", "ddr"):
        backend = FixedBackend(config, cache=cache)
        backend.load_cache(v.cache)
        backend.load_adapters(v.adapters)
        result = backend.run(v.job)
        out[cache] = (backend.read_adapters(), result)
    return out


@pytest.mark.parametrize("config,samples,batch,epochs", [(SMALL, 40, 8, 3), (KV260, 48, 16, 1)],
                         ids=["small", "kv260-reduced"])
def test_a_job_from_ddr_is_bit_identical_to_the_job_on_chip(config, samples, batch, epochs):
    v = make_vector(config, samples=samples, batch=batch, epochs=epochs, seed=11, shuffle=True)
    got = _fixed_pair(config, v)
    (a_chip, r_chip), (a_ddr, r_ddr) = got["chip"], got["ddr"]
    assert a_chip.equals(a_ddr) and a_ddr.equals(v.expected.adapters)
    stats = ("correct", "correct_per_epoch", "loss_sum_per_epoch", "saturated_per_epoch")
    assert all(r_chip[k] == r_ddr[k] for k in stats)
    assert r_chip["cache"] == "chip" and r_ddr["cache"] == "ddr" and r_ddr["cycles"] > 0


def test_a_session_past_the_on_chip_cache_runs_from_ddr_unchanged():
    """Session.add_samples and finetune work the same on either side of the on-chip limit."""
    x, y = data(80)

    def run(cache):
        s = Session(small_base(), FixedBackend(SMALL, cache=cache), seed=0)
        s.add_samples(x[:60], y[:60])
        first = s.finetune(epochs=1, batch=6, lr=0.2)
        s.add_samples(x[60:], y[60:])  # 80 > 64: auto moves to DDR
        second = s.finetune(epochs=1, batch=8, lr=0.2)
        return s, first, second

    auto, a1, a2 = run("auto")
    ddr, d1, d2 = run("ddr")
    assert (a1["cache"], a2["cache"], d1["cache"], d2["cache"]) == ("chip", "ddr", "ddr", "ddr")
    assert auto.adapters.equals(ddr.adapters) and a2["correct_per_epoch"] == d2["correct_per_epoch"]
    with pytest.raises(ValueError, match="the on-chip cache holds 64 entries: 60 are loaded, 20 more do not fit"):
        run("chip")


def test_make_backend_passes_the_placement():
    backend = make_backend("fixed", KV260, cache="ddr", ddr_timing=DDRTiming(50, "x"))
    assert backend.cache_mode == "ddr" and backend.ddr_timing.latency == 50


# -- the RTL simulation ---------------------------------------------------------------------------

def _fixed_session_steps(timing, steps, cache="auto"):
    """The reference: the same session steps on the fixed backend under ``timing``."""
    s = Session(small_base(), FixedBackend(SMALL, cache=cache, ddr_timing=timing), seed=0)
    return s, [step(s) for step in steps]


def _steps():
    """A session that starts on chip and outgrows the SMALL build's 64-entry on-chip cache."""
    x, y = data(80)

    def result(out):
        return {k: out[k] for k in ("cycles", "cache", "correct", "correct_per_epoch", "loss_sum_per_epoch",
                                    "saturated_per_epoch")}

    return [
        lambda s: (s.add_samples(x[:12], y[:12]), result(s.finetune(epochs=2, batch=4, lr=0.2)))[1],
        lambda s: (s.add_samples(x[12:72], y[12:72]), result(s.finetune(epochs=1, batch=8, lr=0.2)))[1],
        lambda s: (s.add_samples(x[72:], y[72:]), result(s.finetune(epochs=1, batch=6, lr=0.2, samples=78)))[1],
    ]


def test_sim_backend_runs_from_ddr_bit_identical_to_the_fixed_backend():
    from skip2lora.driver.sim_backend import SimBackend
    from skip2lora.sim.runner import require_simulator

    require_simulator()
    with SimBackend(SMALL) as backend:
        assert backend.ddr_timing == DDRTiming(backend.link.ddr_latency_cycles, "the simulation's memory model")
        s = Session(small_base(), backend, seed=0)
        got = [step(s) for step in _steps()]
        adapters = s.adapters
    ref_session, ref = _fixed_session_steps(backend.ddr_timing, _steps())
    assert [r["cache"] for r in got] == ["chip", "ddr", "ddr"]
    assert got == ref  # cycles (the RTL's counter = the cycle model under the simulated latency), statistics
    assert adapters.equals(ref_session.adapters)


def test_sim_backend_reports_a_ddr_read_error_as_such():
    from skip2lora.driver.sim_backend import SIM_DDR_ADDR, SimBackend
    from skip2lora.sim.runner import require_simulator

    require_simulator()
    timing = DDRTiming(5, "a test memory")
    x, y = data(16)
    with SimBackend(SMALL, cache="ddr", ddr_timing=timing) as backend:
        assert backend.ddr_timing == timing
        s = Session(small_base(), backend, seed=0)
        s.add_samples(x, y)
        good = s.finetune(epochs=1, batch=4, lr=0.2)
        stride = backend.build_layout.ddr_stride
        backend.link.ddr_fail(SIM_DDR_ADDR + 5 * stride, stride)  # entry 5 answers SLVERR
        with pytest.raises(AcceleratorError) as err:
            s.finetune(epochs=1, batch=4, lr=0.2)
        status = backend.status()
        backend.link.ddr_clear_faults()  # the memory mended: the next job runs, with adapters loaded again
        backend.load_adapters(s.adapters)
        again = s.finetune(epochs=1, batch=4, lr=0.2)
    assert str(err.value).startswith(f"the fine-tuning job: reading the DDR cache buffer at {SIM_DDR_ADDR:#x} failed "
                                     "(the accelerator reports DDR_READ")
    assert "its adapters and statistics are not valid" in str(err.value)
    assert status["error"] == 0 and status["busy"] == 0  # cleared: ready for the next command
    _, [ref_good] = _fixed_session_steps(timing, [lambda f: (f.add_samples(x, y),
                                                             f.finetune(epochs=1, batch=4, lr=0.2))[1]], cache="ddr")
    # the simulated memory answers at the given latency: the counter is the cycle model's under it
    assert good["cache"] == again["cache"] == "ddr" and good["cycles"] == ref_good["cycles"] == again["cycles"]


# -- the virtual KV260 ----------------------------------------------------------------------------

VIRTUAL_DDR_SESSION = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    from small_model import data, small_base
    from skip2lora.driver import Session
    from skip2lora.driver.pynq_backend import load
    from skip2lora.driver.virtual_kv260 import VirtualKV260
    from skip2lora.fixed.config import SMALL

    board = VirtualKV260(SMALL)
    try:
        backend = load(board.bitfile, device=board, timeout=120)
        s = Session(small_base(), backend, seed=0)
        x, y = data(80)
        keys = ("cycles", "cache", "correct", "correct_per_epoch", "loss_sum_per_epoch", "saturated_per_epoch")
        results = []
        for lo, hi, kw in ((0, 12, dict(epochs=2, batch=4)), (12, 72, dict(epochs=1, batch=8)),
                           (72, 80, dict(epochs=1, batch=6, samples=78))):
            s.add_samples(x[lo:hi], y[lo:hi])
            out = s.finetune(lr=0.2, **kw)
            results.append({k: out[k] for k in keys})
        a = s.adapters
        live = len(board._live)
        backend.close()
        print(json.dumps({
            "results": results, "a": [m.tolist() for m in a.a], "b": [m.tolist() for m in a.b],
            "sim_latency": board.link.ddr_latency_cycles, "timing": [backend.ddr_timing.latency,
                                                                     backend.ddr_timing.source],
            "copies": board.ddr_copies, "live_before_close": live, "live_after_close": len(board._live),
            "hp1": board.port_width("S_AXI_HP1_FPD"), "hp0": board.port_width("S_AXI_HP0_FPD"),
            "numpy": np.__version__}))
    finally:
        board.close()
""")


@pytest.mark.requires_pynq
def test_pynq_backend_on_the_virtual_kv260_runs_from_ddr_bit_identical():
    from test_virtual_kv260 import pynq_env

    proc = subprocess.run([str(PYNQ_PYTHON), "-c", VIRTUAL_DDR_SESSION, str(ROOT / "tests")], env=pynq_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["numpy"].startswith("1.")  # the board's numpy generation
    # the PYNQ backend's default is its build's default timing; the virtual board's memory has that latency
    assert out["timing"][0] == out["sim_latency"] == default_ddr_timing(SMALL).latency
    ref_session, ref = _fixed_session_steps(default_ddr_timing(SMALL), _steps())
    assert [r["cache"] for r in out["results"]] == ["chip", "ddr", "ddr"]
    assert out["results"] == ref
    ref_a = ref_session.adapters
    for k in range(SMALL.geometry.taps):
        assert np.array_equal(np.array(out["a"][k]), ref_a.a[k]) and np.array_equal(np.array(out["b"][k]), ref_a.b[k])
    # each DDR job's range was handed to the simulation, from one buffer (allocated once, freed by close)
    stride = Layout(SMALL.geometry, SMALL.lanes).ddr_stride
    (addr, n1), (addr2, n2) = out["copies"]
    assert addr == addr2 and addr % 4096 == 0 and (n1, n2) == (72 * stride, 78 * stride)
    assert out["live_after_close"] == out["live_before_close"] - 1
    assert out["hp0"] == 128


VIRTUAL_BOARD_WITHOUT_SIMULATION = textwrap.dedent("""
    import json
    import skip2lora.driver.virtual_kv260 as vk

    class NoSimulation:  # the board's PS side only: nothing here reaches the accelerator
        def __init__(self, config, **kw):
            self.ddr_latency_cycles = None
        def read(self, addr, advance=0):
            return 0
        def write(self, addr, value):
            pass
        def close(self):
            pass

    vk.SimLink = NoSimulation
    import pynq
    from skip2lora.fixed.config import KV260
    from skip2lora.fixed.packing import Layout

    board = vk.VirtualKV260(KV260)
    try:
        pynq.Overlay(str(board.bitfile), device=board)  # the download sets the PS ports' widths from the .hwh
        widths = {p: board.port_width(p) for p in ("M_AXI_HPM0_FPD", "S_AXI_HP0_FPD", "S_AXI_HP1_FPD", "S_AXI_HP2_FPD")}
        # the allocator: a 65,535-entry KV260 DDR cache buffer fits; freed space is reused, live never overlapped
        full = Layout(KV260.geometry, KV260.lanes).ddr_bytes(KV260.ddr_samples)
        a = pynq.allocate(shape=(full,), dtype="u1")
        b = pynq.allocate(shape=(1000,), dtype="u1")
        c = pynq.allocate(shape=(vk.DDR_BASE + vk.DDR_SIZE - b.device_address - 4096,), dtype="u1")  # the rest
        spans = [(x.device_address, x.nbytes) for x in (a, b, c)]
        a.freebuffer()
        d = pynq.allocate(shape=(full,), dtype="u1")  # fits only where a was
        spans.append((d.device_address, d.nbytes))
        try:
            pynq.allocate(shape=(1,), dtype="u1")
            refused = None
        except RuntimeError as exc:
            refused = str(exc)
        print(json.dumps({"widths": widths, "full": full, "spans": spans, "refused": refused,
                          "base": vk.DDR_BASE, "size": vk.DDR_SIZE}))
    finally:
        board.close()
""")


@pytest.mark.requires_pynq
def test_the_virtual_board_sets_hp1_and_holds_a_full_kv260_ddr_buffer():
    """What PYNQ does at download on a ZynqMP (the PS ports' widths from the .hwh: HP1 carries the
    DDR cache's reads on the KV260 build), and the board's DDR allocator, without a simulation."""
    proc = subprocess.run([str(PYNQ_PYTHON), "-c", VIRTUAL_BOARD_WITHOUT_SIMULATION], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["widths"] == {"M_AXI_HPM0_FPD": 32, "S_AXI_HP0_FPD": 128, "S_AXI_HP1_FPD": 128, "S_AXI_HP2_FPD": None}
    assert out["full"] == 65535 * 2048
    (a, na), (b, nb), (c, nc), (d, nd) = out["spans"]
    assert a == d == out["base"] and a + na <= b and b + nb <= c and c + nc == out["base"] + out["size"]
    assert all(s % 4096 == 0 for s, _ in out["spans"])  # a's space reused when freed, live ones never overlapped
    assert out["refused"].startswith("virtual KV260: no 1 bytes free in its 512 MB of DDR")
