"""cocotb testbench of the generated accelerator (module ``skip2lora``): drivers, model, scoreboard.

In the shape of cocotb's matrix_multiplier example:

* `TB` owns the clock, the reset and the bus models (cocotbext-axi `AxiLiteMaster` on
  ``s_axi_control``, `AxiStreamSource` on ``s_axis``, `AxiStreamSink` on ``m_axis``, and on a build
  with the DDR cache path a `DdrMemory` on ``m_axi_cache``), optional random backpressure / idle
  cycles on every channel and random gaps between register accesses, and the driver methods of the
  accelerator's host protocol (`TB.load_cache`, `TB.load_adapters`, `TB.read_adapters`, `TB.start`,
  `TB.wait_done`, ...). Every wait has a timeout.
* `DdrMemory` is the DDR behind ``m_axi_cache``: a sparse 40-bit byte space served either by
  cocotbext-axi's `AxiRamRead` (its protocol checks; random AR/R pauses) or by `FixedLatencyRead`,
  the memory `skip2lora.fixed.cycles.DDRTiming` describes, cycle for cycle.
* `JobModel` is the transaction-level model: it wraps a `skip2lora.fixed.vectors.TestVector` (the
  only source of stimulus and expected results; nothing is recomputed here), on chip or from a
  DDR buffer.
* `Scoreboard` compares what the RTL reported with the model, bit for bit and cycle for cycle, and
  reports the vector's ``describe()`` on a mismatch.
* `family_config` / `random_case` turn a case seed into a constrained-random configuration and
  job, identically in pytest (to pick the build) and inside the simulator (to run the case).
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CLOCK_NS", "FAMILY_SIZE", "Backpressure", "TB", "JobModel", "Observed", "Scoreboard", "Case",
    "family_config", "random_geometry", "random_case", "config_from_env", "config_from_dict", "case_seeds_from_env",
    "run_job", "Report", "DdrMemory", "FixedLatencyRead", "AXI_RAM_LATENCY", "FIXED_READ_DELAY",
    "DDR_PREFIX", "default_ddr_latency",
]

CLOCK_NS = 10
# Case seed s belongs to geometry family s // FAMILY_SIZE: all its cases share one RTL build.
FAMILY_SIZE = 1000


# -- constrained-random configurations --------------------------------------------------------------

def family_config(family: int):
    """The accelerator configuration of geometry family ``family`` (a pure function of it).

    1-4 taps with dims 1-80 (often tiny, sometimes exactly a multiple of the lanes), rank 1-4,
    classes 2-10, lanes 4/8/16, a cache deep enough for the jobs `random_case` draws; and the
    build's maxima beyond that geometry (run-time geometry): up to 2 more taps, 4 more classes and
    6 more tap lines, each half the time.
    """
    from skip2lora.fixed.config import AcceleratorConfig
    from skip2lora.fixed.model import Geometry

    rng = np.random.default_rng([0x5EED, int(family)])
    lanes = int(rng.choice([4, 8, 16]))
    taps = int(rng.integers(1, 5))
    dims = []
    for _ in range(taps):
        kind = rng.random()
        if kind < 0.25:
            dims.append(int(rng.integers(1, 6)))                    # tiny: one partial line
        elif kind < 0.4:
            dims.append(int(lanes * rng.integers(1, 80 // lanes + 1)))  # whole lines only
        else:
            dims.append(int(rng.integers(1, 81)))
    rank = int(rng.integers(1, 5))
    classes = int(rng.integers(2, 11))
    depth = int(rng.integers(12, 33))
    g = Geometry(tuple(dims), rank, classes)
    lines = sum(-(-d // lanes) for d in dims)
    more = [int(rng.integers(1, n + 1)) if rng.random() < 0.5 else 0 for n in (2, 4, 6)]
    return AcceleratorConfig(f"f{family}", g, lanes, depth, max_taps=taps + more[0], max_classes=classes + more[1],
                             max_tap_lines=max(lines, taps + more[0]) + more[2])


def random_geometry(config, rng):
    """A geometry the build runs (a job's TAPk_DIM / CLASSES, its rank padded): within its maxima,
    every tap at least one line, dims anywhere in their last line."""
    from skip2lora.fixed.model import Geometry

    p, budget = config.lanes, config.tap_lines_max
    taps = int(rng.integers(1, min(config.taps_max, budget) + 1))
    lines = [1] * taps
    for _ in range(int(rng.integers(0, budget - taps + 1))):
        lines[int(rng.integers(0, taps))] += 1
    dims = tuple(int(rng.integers((n - 1) * p + 1, n * p + 1)) for n in lines)
    return Geometry(dims, int(rng.integers(1, config.geometry.rank + 1)),
                    int(rng.integers(2, config.classes_max + 1)))


@dataclass
class Case:
    seed: int
    config: object
    kw: dict  # make_vector keyword arguments (besides config and seed; ``geometry``: the job's)

    def vector(self):
        from skip2lora.fixed.vectors import make_vector

        return make_vector(self.config, seed=self.seed, **self.kw)


def random_case(seed: int, config=None) -> Case:
    """Case ``seed``: N, batch (1, N, divisors and non-divisors), epochs 1-3, learning rate, extreme
    (saturating) values, spare cache entries, and the recipe: shuffled or cache order with a random
    seed, warm-up length, decay, optimizer (drawn by `make_vector`); the job's geometry (the
    build's own, or 70 % of the time another within its maxima: `random_geometry`); on ``config``
    or on its family's configuration."""
    from skip2lora.fixed.formats import BATCH_MAX, LR_BITS, lr_register

    seed = int(seed)
    config = family_config(seed // FAMILY_SIZE) if config is None else config
    rng = np.random.default_rng([0xCA5E, seed])
    depth = config.cache_depth
    samples = int(rng.integers(1, min(depth, 20) + 1))
    cached = samples + (int(rng.integers(0, min(depth - samples, 4) + 1)) if rng.random() < 0.3 else 0)
    divisors = [b for b in range(1, samples + 1) if samples % b == 0]
    others = [b for b in range(1, samples + 1) if samples % b] or divisors
    batch = min(int(rng.choice([1, samples, rng.choice(divisors), rng.choice(others), rng.choice(others)])),
                BATCH_MAX)
    epochs = int(rng.integers(1, 4))
    extreme = bool(rng.random() < 0.3)
    kind = rng.random()
    if kind < 0.4:
        lr = None                                                      # make_vector's own draw
    elif kind < 0.7:
        lr = lr_register(float(10 ** rng.uniform(-3, 0.5)))              # a usual step size
    elif kind < 0.85:
        lr = int(rng.integers(1, 1 << 8))                              # tiny steps (rounding)
    else:
        lr = int(rng.integers(1 << 24, 1 << LR_BITS))                  # huge steps (saturation)
    # the job's geometry, set by registers at run time: the build's own or another within its maxima
    geometry = config.geometry if rng.random() < 0.3 else random_geometry(config, rng)
    return Case(seed, config, dict(samples=samples, batch=batch, epochs=epochs, lr=lr, cached=cached,
                                   extreme=extreme, geometry=geometry))


def config_from_dict(d: dict):
    """`AcceleratorConfig.from_dict` (the DDR limits included: they decide the build's ports)."""
    from skip2lora.fixed.config import AcceleratorConfig

    return AcceleratorConfig.from_dict(d)


def config_from_env():
    """The configuration the simulator was built for (sim/runner.py passes it as JSON)."""
    return config_from_dict(json.loads(os.environ["SKIP2LORA_CONFIG"]))


def case_seeds_from_env(name: str = "SKIP2LORA_CASES") -> list[int]:
    text = os.environ.get(name, "").replace(",", " ").split()
    return [int(s) for s in text]


# -- transaction-level model and scoreboard -------------------------------------------------------

class JobModel:
    """What the accelerator must do with one `TestVector` and what it must report afterwards.

    ``ddr_addr``: the job runs in DDR mode from a buffer at that bus address (`ddr_buffer`, entry i
    at ``ddr_addr + i * DDR_STRIDE``), under the memory timing of ``vector.ddr``. ``exact_cycles``
    False (a memory with random pauses): the cycle count is only bounded below by the model's.
    """

    def __init__(self, vector, *, ddr_addr: int | None = None, exact_cycles: bool = True):
        self.vector = vector
        self.layout = vector.layout
        self.ddr_addr = ddr_addr
        self.exact_cycles = exact_cycles
        if ddr_addr is not None:
            if vector.ddr is None:
                raise ValueError("a DDR-mode job needs a vector made with ddr=DDRTiming(...) (its cycle model)")
            if ddr_addr < 0 or ddr_addr % 4096:
                raise ValueError(f"a DDR buffer address is 4 KB aligned and non-negative, not {ddr_addr:#x}")
        elif not exact_cycles:
            raise ValueError("only a DDR-mode job has inexact cycles (the memory's pauses)")

    @property
    def ddr(self) -> bool:
        """The job reads its cache entries from DDR (CACHE_MODE.ddr)."""
        return self.ddr_addr is not None

    @property
    def ddr_buffer(self) -> bytes:
        """The DDR cache buffer: every entry at the build's stride (`packing.pack_ddr_cache_for`)."""
        return self.vector.ddr_bytes.tobytes()

    @property
    def cache_bytes(self) -> bytes:
        return bytes(self.vector.cache_bytes)

    @property
    def cache_count(self) -> int:
        return len(self.vector.cache)

    @property
    def adapter_bytes(self) -> bytes:
        return bytes(self.vector.adapter_bytes)

    @property
    def registers(self) -> dict:
        """The job's registers; in DDR mode also CACHE_MODE and DDR_ADDR."""
        from skip2lora.driver.registers import job_registers

        regs = job_registers(self.vector.job, self.vector.geometry)
        if self.ddr:
            regs.update(CACHE_MODE=1, DDR_ADDR_LO=self.ddr_addr & 0xFFFF_FFFF, DDR_ADDR_HI=self.ddr_addr >> 32)
        return regs

    @property
    def adapter_beats(self) -> int:
        return self.layout.adapter_beats

    @property
    def cycles(self) -> int | None:
        """The cycle counter's exact value (the cycle model), or None when only bounded (`min_cycles`)."""
        return self.vector.cycles if self.exact_cycles else None

    @property
    def min_cycles(self) -> int:
        """The cycle model's count: no memory slower than ``vector.ddr`` makes the job faster."""
        return self.vector.cycles

    @property
    def correct(self) -> int:
        return int(self.vector.expected.correct[-1])

    @property
    def epoch_stats(self) -> list:
        """(correct, loss, saturated) of each epoch, as the STAT_* registers report them."""
        e = self.vector.expected
        return [(int(c), int(l), min(int(s), (1 << 32) - 1)) for c, l, s in zip(e.correct, e.loss, e.saturated)]

    @property
    def expected_adapters(self):
        return self.vector.expected.adapters

    @property
    def expected_adapter_bytes(self) -> bytes:
        return bytes(self.vector.expected_adapter_bytes)

    @property
    def expected_status(self) -> dict:
        return {"busy": 0, "done": 1, "error": 0, "loading": 0, "sending": 0, "adapters": 1, "overrun": 0,
                "error_code": 0}

    @property
    def timeout_cycles(self) -> int:
        if not self.exact_cycles:  # random pauses on AR and R: each fetch may take several times longer
            return 8 * self.min_cycles + 20_000
        return 2 * self.min_cycles + 2000

    def describe(self) -> str:
        if self.ddr:
            timing = f"latency {self.vector.ddr.latency}" if self.exact_cycles else "random pauses"
            return f"{self.vector.describe()} ddr@{self.ddr_addr:#x} ({timing})"
        return self.vector.describe()


@dataclass
class Observed:
    status: dict = field(default_factory=dict)
    cycles: int | None = None
    correct: int | None = None
    epoch_stats: list | None = None
    n_loaded: int | None = None
    adapter_bytes: bytes = b""
    times: dict = field(default_factory=dict)  # wall seconds per phase


class Scoreboard:
    """Exact comparison of `Observed` against a `JobModel`; collects mismatches, raises on demand."""

    def __init__(self, log=None):
        self.log = log or logging.getLogger("cocotb.scoreboard")
        self.checked = 0
        self.failures: list[str] = []

    def compare(self, model: JobModel, got: Observed) -> list[str]:
        errors = []
        if got.status != model.expected_status:
            errors.append(f"STATUS {got.status} != expected {model.expected_status}")
        if model.cycles is not None and got.cycles != model.cycles:
            errors.append(f"CYCLES {got.cycles} != cycle model {model.cycles}")
        elif model.cycles is None and (got.cycles is None or got.cycles < model.min_cycles):
            errors.append(f"CYCLES {got.cycles} < cycle model {model.min_cycles} (a slower memory cannot be faster)")
        if got.correct != model.correct:
            errors.append(f"CORRECT {got.correct} != expected {model.correct}")
        if got.epoch_stats is not None and got.epoch_stats != model.epoch_stats:
            bad = [e for e, (g, w) in enumerate(zip(got.epoch_stats, model.epoch_stats)) if g != w]
            errors.append(f"STAT_* of epoch {bad[0]}: (correct, loss, saturated) {got.epoch_stats[bad[0]]} != "
                          f"expected {model.epoch_stats[bad[0]]}" if bad else
                          f"{len(got.epoch_stats)} epochs of statistics, expected {len(model.epoch_stats)}")
        if got.n_loaded is not None and got.n_loaded != model.cache_count:
            errors.append(f"N_LOADED {got.n_loaded} != {model.cache_count}")
        errors += self.compare_adapters(model, got.adapter_bytes)
        self.checked += 1
        return errors

    @staticmethod
    def compare_adapters(model: JobModel, data: bytes) -> list[str]:
        want = model.expected_adapter_bytes
        if len(data) != len(want):
            return [f"adapter read-back has {len(data)} bytes, expected {len(want)}"]
        errors = []
        got = model.vector.unpack_adapters(np.frombuffer(data, np.uint8))
        exp = model.expected_adapters
        if not got.equals(exp):
            for name, gl, el in (("A", got.a, exp.a), ("B", got.b, exp.b)):
                for k, (g, e) in enumerate(zip(gl, el)):
                    diff = np.argwhere(g != e)
                    if len(diff):
                        i = tuple(int(x) for x in diff[0])
                        errors.append(f"{name}_{k}: {len(diff)} of {g.size} words differ, first at {i}: "
                                      f"got {int(g[i])}, expected {int(e[i])}")
        elif data != want:
            errors.append("adapter values equal but the padding bytes of the read-back differ from the wire format")
        return errors

    def check(self, model: JobModel, got: Observed, *, what: str = "job") -> None:
        errors = self.compare(model, got)
        if errors:
            msg = f"{what} mismatch ({model.describe()}):\n  " + "\n  ".join(errors)
            self.failures.append(msg)
            raise AssertionError(msg)
        self.log.debug("%s matches the model (%s)", what, model.describe())


# -- the testbench ---------------------------------------------------------------------------------

class Backpressure:
    """Random stall patterns: probability of a pause per cycle, in bursts."""

    def __init__(self, rng: random.Random, p: float = 0.3, burst: int = 4):
        self.rng, self.p, self.burst = rng, p, burst

    def generator(self):
        rng, p, burst = self.rng, self.p, self.burst
        while True:
            if rng.random() < p:
                for _ in range(rng.randint(1, burst)):
                    yield True
            else:
                yield False


# -- the DDR behind m_axi_cache ---------------------------------------------------------------------

DDR_PREFIX = "m_axi_cache"
#: `FixedLatencyRead` drives a burst's first beat ``latency + FIXED_READ_DELAY`` clock edges after
#: its AR handshake edge (its R handshake one edge later): what ``DDRTiming(latency)`` means, measured
#: against the cycle model (the RTL's counter equals `job_cycles` at latencies 0 .. 27 on SMALL).
FIXED_READ_DELAY = 0
#: `AxiRamRead` without pauses is the memory ``DDRTiming(AXI_RAM_LATENCY)``: its R source drives a
#: burst's first beat one clock edge later than `FixedLatencyRead` at latency 0 (measured: the RTL's
#: counter equals `job_cycles(..., ddr=DDRTiming(1))`, batches of 1, 2, 8; test_ddr_jobs_axi_ram
#: checks it). With random pauses it is only slower.
AXI_RAM_LATENCY = 1


def default_ddr_latency(config) -> int:
    """The fixed DDR latency a simulation of ``config`` uses by default: the assumed KV260 memory's
    (`cycles.KV260_DDR`), or the largest latency the cycle model covers with the build's entries if
    that is less (the SMALL build: 3 * 11 - 6 = 27 cycles)."""
    from skip2lora.fixed.cycles import KV260_DDR, DDRTiming
    from skip2lora.fixed.packing import Layout

    layout = Layout(config.geometry, config.lanes)
    for latency in range(KV260_DDR.latency, -1, -1):
        try:
            DDRTiming(latency).fetch_cycles(layout, 1)  # raises beyond what the model covers
            return latency
        except ValueError:
            continue
    return KV260_DDR.latency  # (entries too short for the model at any latency)


def _overlaps(faults, start: int, end: int) -> bool:
    return any(a < end and start < b for a, b in faults)


def _axi_ram_read_class():
    from cocotbext.axi import AxiRamRead

    class FaultyAxiRamRead(AxiRamRead):
        """`AxiRamRead` whose reads of the fault ranges fail: AxiSlaveRead answers them SLVERR."""

        def __init__(self, *args, faults, **kw):
            super().__init__(*args, **kw)
            self.faults = faults

        async def _read(self, address, length):
            address %= self.size
            if _overlaps(self.faults, address, address + length):
                raise OSError(f"injected fault at {address:#x}")
            return self.read(address, length)

    return FaultyAxiRamRead


class FixedLatencyRead:
    """An AXI4 read subordinate that is exactly the memory of `skip2lora.fixed.cycles.DDRTiming`.

    ARREADY is always high; a burst's first beat is driven ``latency + FIXED_READ_DELAY`` edges after
    its AR handshake (or right after the previous burst's last beat, if later), then a beat a cycle
    while RREADY is high. `AxiRamRead` cannot be that memory: it serves one burst at a time from an AR
    queue of two (so it stalls a manager's third and fourth outstanding address) and has no latency of
    its own to set, while this model counts each burst's latency from its own AR handshake.

    Python runs every clock edge only while a burst is in flight or arriving; an idle memory waits
    for ARVALID (a long job's quiet phases cost nothing). Checks the protocol the reader promises:
    INCR bursts of full beats that do not cross 4 KB.
    """

    def __init__(self, bus, clock, reset, mem, faults, *, latency: int, reset_active_level: bool = False,
                 log=None):
        self.bus, self.clock, self.reset, self.mem, self.faults = bus, clock, reset, mem, faults
        self.reset_active_level = reset_active_level
        self.beat_bytes = len(bus.r.rdata) // 8
        self.log = log or logging.getLogger("cocotb.ddr")
        self.latency = latency
        self.bursts = 0         # AR handshakes seen
        self.beats = 0          # R handshakes
        self.protocol_errors: list[str] = []
        self._task = None

    @property
    def latency(self) -> int:
        return self._latency

    @latency.setter
    def latency(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"a DDR latency is a non-negative number of cycles, not {value!r}")
        self._latency = value

    def start(self) -> None:
        import cocotb

        if self._task is None:
            self._task = cocotb.start_soon(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.bus.ar.arready.value = 0
        self.bus.r.rvalid.value = 0

    @property
    def running(self) -> bool:
        return self._task is not None

    def _in_reset(self) -> bool:
        try:
            return bool(int(self.reset.value)) == self.reset_active_level
        except ValueError:
            return True

    async def _run(self):
        from collections import deque

        from cocotb.triggers import ReadOnly, RisingEdge

        ar, r = self.bus.ar, self.bus.r
        bb = self.beat_bytes
        size_code = (bb - 1).bit_length()
        clock_edge = RisingEdge(self.clock)
        ar.arready.value = 1
        r.rvalid.value = 0
        pending = deque()  # [due edge, address, beats, beats accepted]
        shown = False      # a beat is on R
        edge = 0
        while True:
            if not pending and not shown:
                # idle: no Python per cycle until the manager raises ARVALID (a registered output,
                # so its value after this edge is what the next edge samples)
                await ReadOnly()
                if not int(ar.arvalid.value):
                    await RisingEdge(ar.arvalid)
            await clock_edge
            edge += 1
            if self.reset is not None and self._in_reset():
                if pending or shown:
                    r.rvalid.value = 0
                pending.clear()
                shown = False
                continue
            if shown and int(r.rready.value):
                self.beats += 1
                burst = pending[0]
                burst[3] += 1
                if burst[3] == burst[2]:
                    pending.popleft()
                shown = False
            if int(ar.arvalid.value):
                addr, beats = int(ar.araddr.value), int(ar.arlen.value) + 1
                self.bursts += 1
                if int(ar.arburst.value) != 1 or int(ar.arsize.value) != size_code or addr % bb \
                        or (addr % 4096) + beats * bb > 4096:
                    self.protocol_errors.append(
                        f"AR addr {addr:#x} len {beats} size {int(ar.arsize.value)} burst {int(ar.arburst.value)}")
                pending.append([edge + self._latency + FIXED_READ_DELAY, addr, beats, 0])
            if pending and pending[0][0] <= edge:
                if not shown:
                    _, base, beats, done = pending[0]
                    addr = base + done * bb
                    r.rdata.value = int.from_bytes(self.mem.read(addr, bb), "little")
                    r.rresp.value = 2 if _overlaps(self.faults, addr, addr + bb) else 0
                    r.rlast.value = int(done == beats - 1)
                    r.rid.value = 0
                    r.rvalid.value = 1
                    shown = True
            elif not shown:
                r.rvalid.value = 0


class DdrMemory:
    """The DDR behind the accelerator's ``m_axi_cache`` port: a sparse byte space over its whole
    40-bit address range (4 KB pages allocated on first write: a 134 MB buffer anywhere costs 134 MB),
    written and read by the test like a host's buffer, and served to the RTL by one of two engines:

    * ``latency=None``: cocotbext-axi's `AxiRamRead` (it checks the bursts), with random AR / R
      pauses after ``set_pauses(True)``; unpaused it is ``DDRTiming(AXI_RAM_LATENCY)``.
    * ``latency=L``: `FixedLatencyRead`, exactly ``DDRTiming(L)``.

    `set_latency` switches between them (while no burst is in flight: e.g. between jobs). `fail`
    makes every beat overlapping those bytes answer SLVERR (both engines).
    """

    def __init__(self, dut, clock, reset, *, prefix: str = DDR_PREFIX, reset_active_level: bool = False,
                 latency: int | None = None, rng: random.Random | None = None):
        from cocotbext.axi import AxiReadBus
        from cocotbext.axi.sparse_memory import SparseMemory

        self.bus = AxiReadBus.from_prefix(dut, prefix)
        self.addr_bits = len(self.bus.ar.araddr)
        self.beat_bytes = len(self.bus.r.rdata) // 8
        self.size = 1 << self.addr_bits
        self.mem = SparseMemory(self.size)
        self.faults: list[tuple[int, int]] = []
        self.rng = rng or random.Random(0)
        self.log = logging.getLogger("cocotb.ddr")
        self.ram = _axi_ram_read_class()(self.bus, clock, reset, reset_active_level=reset_active_level,
                                         mem=self.mem, faults=self.faults)
        for obj in (self.ram, self.ram.ar_channel, self.ram.r_channel):
            obj.log.setLevel(logging.ERROR)  # (a log line per burst, a warning per injected fault)
        self.fixed = FixedLatencyRead(self.bus, clock, reset, self.mem, self.faults, latency=0,
                                      reset_active_level=reset_active_level, log=self.log)
        self._latency = None
        self._paused = False
        if latency is not None:
            self.set_latency(latency)

    # -- the buffer --------------------------------------------------------------------------------
    def _check(self, addr: int, n: int) -> None:
        if addr < 0 or n < 0 or addr + n > self.size:
            raise ValueError(f"bytes {addr:#x}..{addr + n:#x} are outside the {self.addr_bits}-bit DDR space")

    def write(self, addr: int, data) -> None:
        data = bytes(data)
        self._check(addr, len(data))
        self.mem.write(addr, data)

    def read(self, addr: int, n: int) -> bytes:
        self._check(addr, n)
        return self.mem.read(addr, n)

    def fail(self, addr: int, n: int) -> None:
        """Reads of any beat overlapping bytes ``addr .. addr + n - 1`` answer SLVERR from now on."""
        self._check(addr, n)
        if n > 0:
            self.faults.append((addr, addr + n))

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- timing --------------------------------------------------------------------------------------
    @property
    def latency(self) -> int | None:
        """The fixed latency (`FixedLatencyRead`), or None: `AxiRamRead` answers."""
        return self._latency

    @property
    def bursts(self) -> int:
        """AR handshakes the fixed-latency engine has seen (`AxiRamRead` does not count)."""
        return self.fixed.bursts

    def set_latency(self, latency: int | None) -> None:
        """``latency`` cycles: the exact fixed-latency memory ``DDRTiming(latency)``; None:
        `AxiRamRead` (pauses as set by `set_pauses`). Switch only while no burst is in flight."""
        if latency is None:
            if self._latency is not None:
                self.fixed.stop()
                for obj in (self.ram.ar_channel, self.ram.r_channel, self.ram):
                    obj.assert_reset(False)  # (their runs resume, unless the DUT is in reset)
                self._latency = None
            return
        self.fixed.latency = latency  # (validates)
        if self._latency is None:
            self._set_pauses(False)
            # AxiRamRead's own reset (cocotbext-axi's assert_reset) stops its coroutines and leaves
            # the channels' signals to the fixed-latency engine; assert_reset(False) gives them back.
            for obj in (self.ram, self.ram.ar_channel, self.ram.r_channel):
                obj.assert_reset(True)
            self.fixed.start()
        self._latency = latency

    def set_pauses(self, on: bool) -> None:
        """Random pauses on AR and R (`Backpressure` patterns): switches to `AxiRamRead`."""
        if on:
            self.set_latency(None)
        self._set_pauses(on)

    def _set_pauses(self, on: bool) -> None:
        for ch in (self.ram.ar_channel, self.ram.r_channel):
            if on:
                p = self.rng.choice([0.1, 0.3, 0.6])
                ch.set_pause_generator(Backpressure(self.rng, p, self.rng.choice([1, 3, 8])).generator())
            else:
                ch.clear_pause_generator()
                ch.pause = False
        self._paused = on

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def protocol_errors(self) -> list:
        return self.fixed.protocol_errors


class TB:
    """Clock, reset, bus models and the host-side driver of one ``skip2lora`` instance."""

    def __init__(self, dut, *, rng: random.Random | None = None, backpressure: bool = True,
                 reg_gap: int = 4, clock_ns: int = CLOCK_NS, ddr_latency: int | None = None):
        from cocotb.clock import Clock

        from skip2lora.hw.regmap import REGISTER_MAP

        self.dut = dut
        self.clock_ns = clock_ns
        self.rng = rng or random.Random(0)
        self.backpressure = backpressure
        self.reg_gap = reg_gap
        self.log = logging.getLogger("cocotb.tb")
        self.log.setLevel(logging.INFO)
        self.regs = REGISTER_MAP
        self._clock = Clock(dut.aclk, clock_ns, unit="ns", impl="gpi")  # the clock in C++, not Python
        self._clock.start()
        # Every input defined and the core in reset from the first clock edge (Icarus starts with X
        # everywhere; an Immediate write before time 0 is lost there).
        for name in ("aresetn", "s_axis_tvalid", "s_axis_tlast", "s_axis_tdata", "m_axis_tready",
                     *(f"s_axi_control_{p}" for p in ("awaddr", "awprot", "awvalid", "wdata", "wstrb", "wvalid",
                                                      "bready", "araddr", "arprot", "arvalid", "rready"))):
            getattr(dut, name).value = 0
        # the DDR cache's AXI4 read port (builds with the DDR path): its inputs defined from the start too
        self.has_ddr = hasattr(dut, f"{DDR_PREFIX}_arvalid")
        if self.has_ddr:
            for p in ("arready", "rvalid", "rdata", "rresp", "rlast", "rid"):
                getattr(dut, f"{DDR_PREFIX}_{p}").value = 0
        self._ddr_latency = ddr_latency
        self.ddr: DdrMemory | None = None
        self.axil = self.source = self.sink = None  # created by the first reset(), once outputs are defined
        self.beat_bytes = len(dut.s_axis_tdata) // 8
        self.done_lag_seen = 0  # polls that saw busy=0 with done=0 (the one-cycle window)

    def _create_bus_models(self) -> None:
        from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamSink, AxiStreamSource

        dut = self.dut
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_control"), dut.aclk, dut.aresetn,
                                  reset_active_level=False)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.aclk, dut.aresetn,
                                      reset_active_level=False)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.aclk, dut.aresetn,
                                  reset_active_level=False)
        if self.has_ddr:
            self.ddr = DdrMemory(dut, dut.aclk, dut.aresetn, reset_active_level=False, latency=self._ddr_latency,
                                 rng=self.rng)
        # The bus models log every frame at INFO (a KV260 cache load is megabytes of hex).
        for obj in (self.source, self.sink, self.axil.write_if, self.axil.read_if, *self._lite_channels()):
            obj.log.setLevel(logging.WARNING)

    # -- low level ----------------------------------------------------------------------------------
    async def cycles(self, n: int) -> None:
        from cocotb.triggers import ClockCycles

        if n > 0:
            await ClockCycles(self.dut.aclk, n)

    async def _timed(self, awaitable, cycles: int, what: str):
        from cocotb.triggers import SimTimeoutError, with_timeout

        try:
            return await with_timeout(awaitable, cycles * self.clock_ns, "ns")
        except SimTimeoutError:
            raise AssertionError(f"timeout: {what} did not finish within {cycles} cycles") from None

    def _lite_channels(self):
        w, r = self.axil.write_if, self.axil.read_if
        return (w.aw_channel, w.w_channel, w.b_channel, r.ar_channel, r.r_channel)

    def set_backpressure(self, on: bool, *, lite: bool = True, streams: bool = True) -> None:
        """Random valid/ready stalls on the AXI4-Lite channels and/or both streams (or none)."""
        chans = (self._lite_channels() if lite else ()) + ((self.source, self.sink) if streams else ())
        for ch in chans:
            if on and self.backpressure:
                p = self.rng.choice([0.1, 0.3, 0.6])
                ch.set_pause_generator(Backpressure(self.rng, p, self.rng.choice([1, 3, 8])).generator())
            else:
                ch.clear_pause_generator()
                ch.pause = False

    def set_ddr_pauses(self, on: bool) -> None:
        """Random pauses on the DDR memory's AR and R channels (`AxiRamRead`); nothing without the port."""
        if self.ddr is not None:
            self.ddr.set_pauses(on and self.backpressure)

    def set_ddr_latency(self, latency: int | None) -> None:
        """The DDR memory as ``DDRTiming(latency)`` exactly (None: `AxiRamRead`); see `DdrMemory`."""
        self._require_ddr()
        self.ddr.set_latency(latency)

    def _require_ddr(self) -> None:
        if self.ddr is None:
            raise AssertionError("this build has no DDR cache port (m_axi_cache)" if not self.has_ddr else
                                 "the DDR memory is created by the first reset()")

    async def reset(self, cycles: int = 8) -> None:
        """aresetn low for ``cycles`` clocks (the bus models are created during the first one)."""
        from cocotb.triggers import RisingEdge

        self.dut.aresetn.value = 0
        await self.cycles(cycles)
        if self.axil is None:
            self._create_bus_models()
            await self.cycles(2)
        self.dut.aresetn.value = 1
        await RisingEdge(self.dut.aclk)
        self.log.debug("reset released")

    async def _gap(self) -> None:
        if self.backpressure and self.reg_gap:
            await self.cycles(self.rng.randint(0, self.reg_gap))

    # -- registers ----------------------------------------------------------------------------------
    async def write_reg(self, name: str, value: int | None = None, **fields) -> None:
        from skip2lora.hw.registers import encode

        if value is None:
            value = encode(self.regs[name], **fields)
        await self._gap()
        resp = await self._timed(self.axil.write(self.regs.address(name), int(value).to_bytes(4, "little")),
                                 1000, f"AXI4-Lite write of {name}")
        assert int(resp.resp) == 0, f"write of {name}: BRESP {resp.resp}"

    async def read_reg(self, name: str) -> int:
        await self._gap()
        resp = await self._timed(self.axil.read(self.regs.address(name), 4), 1000, f"AXI4-Lite read of {name}")
        assert int(resp.resp) == 0, f"read of {name}: RRESP {resp.resp}"
        return int.from_bytes(resp.data, "little")

    async def status(self) -> dict:
        from skip2lora.hw.registers import decode

        return decode(self.regs["STATUS"], await self.read_reg("STATUS"))

    async def cycles_reg(self) -> int:
        lo = await self.read_reg("CYCLES_LO")
        hi = await self.read_reg("CYCLES_HI")
        return lo | (hi << 32)

    async def soft_reset(self) -> None:
        await self.write_reg("CTRL", soft_reset=1)

    async def epoch_stats(self, epochs: int) -> list:
        """(correct, loss, saturated) of the last job's epochs, through STAT_EPOCH and STAT_*."""
        out = []
        for e in range(epochs):
            await self.write_reg("STAT_EPOCH", e)
            out.append(tuple([await self.read_reg(n) for n in ("STAT_CORRECT", "STAT_LOSS", "STAT_SAT")]))
        return out

    # -- streams ------------------------------------------------------------------------------------
    async def send_stream(self, data: bytes, *, timeout_cycles: int | None = None) -> None:
        """One AXI4-Stream packet (TLAST on its last beat), waiting until every beat is accepted."""
        from cocotbext.axi import AxiStreamFrame

        data = bytes(data)
        assert len(data) % self.beat_bytes == 0, "whole beats only"
        beats = len(data) // self.beat_bytes
        timeout = timeout_cycles or (20 * beats + 2000)
        if not self.backpressure:  # no random stalls to make: the driver that sleeps while TREADY is low
            await self._timed(self._drive_stream(data), timeout, f"sending {beats} beats on s_axis")
            return
        await self.source.send(AxiStreamFrame(data))
        await self._timed(self.source.wait(), timeout, f"sending {beats} beats on s_axis")

    async def _drive_stream(self, data: bytes) -> None:
        """``data`` on s_axis, TVALID high throughout, TLAST on the last beat. Hand-written because
        cocotbext-axi's source wakes Python every clock while a frame is pending, and a FILL's TREADY
        is low for most of each image's 1,800 cycles (the engines' pace): this driver sleeps until
        TREADY rises (the pattern of `DdrMemory`'s idle wait): the KV260 job's FILL of 1024 images
        simulated in 61 s instead of 106 s (at the 2,000-cycle plan). A beat is taken at an edge
        that samples TREADY high; while TREADY stays high, one wake a beat."""
        from cocotb.triggers import ReadOnly, RisingEdge

        dut, bb = self.dut, self.beat_bytes
        edge, ready_rises = RisingEdge(dut.aclk), RisingEdge(dut.s_axis_tready)
        n = len(data) // bb
        for i in range(n):
            dut.s_axis_tdata.value = int.from_bytes(data[i * bb:(i + 1) * bb], "little")
            dut.s_axis_tlast.value = int(i == n - 1)
            dut.s_axis_tvalid.value = 1
            await edge
            if int(dut.s_axis_tready.value):  # sampled at this edge (as cocotbext-axi reads it): taken
                continue
            while True:
                await ReadOnly()  # TREADY as the next edge samples it
                if int(dut.s_axis_tready.value):
                    await edge
                    break
                await ready_rises
        dut.s_axis_tvalid.value = 0
        dut.s_axis_tlast.value = 0

    async def load_cache(self, data: bytes, count: int) -> None:
        await self.write_reg("LOAD_COUNT", count)
        await self.write_reg("CTRL", load_cache=1)
        await self.send_stream(data)

    async def load_adapters(self, data: bytes) -> None:
        await self.write_reg("CTRL", load_adapters=1)
        await self.send_stream(data)

    async def read_adapters(self, nbeats: int) -> bytes:
        """CTRL.read_adapters, then exactly ``nbeats`` beats with TLAST on the last one only."""
        assert self.sink.empty(), "stale data on m_axis"
        await self.write_reg("CTRL", read_adapters=1)
        frame = await self._timed(self.sink.recv(), 20 * nbeats + 2000, f"receiving {nbeats} beats on m_axis")
        data = bytes(frame.tdata)
        assert len(data) == nbeats * self.beat_bytes, (
            f"TLAST after {len(data) // self.beat_bytes} beats, expected on beat {nbeats}")
        await self.cycles(4)
        assert self.sink.empty() and not self.sink.active, "m_axis sent beats after TLAST"
        return data

    # -- jobs -----------------------------------------------------------------------------------------
    async def program(self, registers: dict) -> None:
        items = list(registers.items())
        if self.backpressure:
            self.rng.shuffle(items)
        for name, value in items:
            await self.write_reg(name, value)

    async def start(self) -> None:
        await self.write_reg("CTRL", start=1)

    async def wait_done(self, timeout_cycles: int, *, use_irq: bool = True) -> dict:
        """Wait for the end of a job: the interrupt line (IRQ_ENABLE=1) or STATUS.busy polling."""
        from cocotb.triggers import RisingEdge

        if use_irq:
            if not int(self.dut.interrupt.value):
                await self._timed(RisingEdge(self.dut.interrupt), timeout_cycles, "the job (interrupt)")
            assert await self.read_reg("IRQ") == 1, "interrupt without IRQ.done"
            await self.write_reg("IRQ", 1)
            await self.cycles(1)
            assert not int(self.dut.interrupt.value), "interrupt still high after clearing IRQ.done"
            return await self.status()

        async def poll():
            while True:
                st = await self.status()
                if not st["busy"]:
                    return st
                await self.cycles(self.rng.randint(1, max(16, min(1024, timeout_cycles // 64))))

        idle = await self._timed(poll(), timeout_cycles + 4000, "the job (STATUS.busy)")
        # STATUS.done is set one cycle after STATUS.busy falls (see test_status_done_when_busy_falls,
        # which checks that window on purpose): the status after the job is the next read.
        self.done_lag_seen += int(not idle["done"])
        return await self.status()

    async def run_model(self, model: JobModel, *, use_irq: bool = True, fresh: bool = True) -> Observed:
        """The whole host flow for one job; returns what the RTL reported."""
        import time

        got = Observed()
        t0 = time.perf_counter()
        if fresh:
            await self.soft_reset()
        self.set_backpressure(True)
        if model.ddr:  # the host's buffer in DDR (no simulated time), the on-chip cache unused
            self._require_ddr()
            self.ddr.write(model.ddr_addr, model.ddr_buffer)
        else:
            await self.load_cache(model.cache_bytes, model.cache_count)
        await self.load_adapters(model.adapter_bytes)
        if not model.ddr:
            got.n_loaded = await self.read_reg("N_LOADED")
        regs = dict(model.registers)
        if self.has_ddr and not model.ddr:
            regs["CACHE_MODE"] = 0  # (the register keeps its value through soft resets)
        await self.program(regs)
        await self.write_reg("IRQ", 1)  # a stale IRQ.done (without a soft reset) would end the wait at once
        await self.write_reg("IRQ_ENABLE", int(use_irq))
        t1 = time.perf_counter()
        self.set_backpressure(False)  # no per-cycle Python while the job runs
        await self.start()
        got.status = await self.wait_done(model.timeout_cycles, use_irq=use_irq)
        t2 = time.perf_counter()
        self.set_backpressure(True)
        got.cycles = await self.cycles_reg()
        got.correct = await self.read_reg("CORRECT")
        got.epoch_stats = await self.epoch_stats(len(model.epoch_stats))
        got.adapter_bytes = await self.read_adapters(model.adapter_beats)
        self.set_backpressure(False)
        got.times = {"load": t1 - t0, "job": t2 - t1, "readback": time.perf_counter() - t2}
        return got


async def run_job(tb: TB, vector, scoreboard: Scoreboard, *, use_irq: bool = True) -> Observed:
    model = JobModel(vector)
    got = await tb.run_model(model, use_irq=use_irq)
    scoreboard.check(model, got)
    return got


class Report:
    """Per-case results written as JSON for the pytest launcher (``SKIP2LORA_REPORT``)."""

    def __init__(self, path: str | None = None):
        self.path = path or os.environ.get("SKIP2LORA_REPORT")
        self.data = {"cases": [], "failures": []}
        if self.path and os.path.isfile(self.path):  # several cocotb tests of one run share the file
            with open(self.path) as f:
                self.data = json.load(f)

    def add(self, **entry) -> None:
        self.data["cases"].append(entry)
        self.flush()

    def fail(self, **entry) -> None:
        self.data["failures"].append(entry)
        self.flush()

    def set(self, **kw) -> None:
        self.data.update(kw)
        self.flush()

    def flush(self) -> None:
        if self.path:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.data, f, indent=1, default=str)
            os.replace(tmp, self.path)

