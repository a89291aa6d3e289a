"""The sim backend: the accelerator's RTL (Verilator or Icarus, under cocotb) instead of the board.

The same driver code as the KV260 backend (`RegisterBackend`); registers and streams go to the
simulation through `SimLink`. Needs the development tools (``pip install 'skip2lora[dev]'``);
the first use of a configuration exports its Verilog and compiles it (minutes for the KV260
build; cached afterwards).

The DDR cache: the simulation serves the accelerator's DDR reads from its own memory model, at
`SIM_DDR_ADDR`, with a fixed latency (``link.ddr_latency``); the backend's `ddr_timing` is that
memory, so a DDR job's cycle counter equals the cycle model's under it.
"""

from __future__ import annotations

import os
from importlib.util import find_spec

import numpy as np

from ..fixed.config import AcceleratorConfig
from ..fixed.cycles import DDRTiming
from ..progress import Progress
from .backend import AcceleratorError, BackendUnavailable, check_cache_args, default_ddr_timing
from .register_backend import RegisterBackend
from .registers import RegisterFile
from .sim_link import SimLink, SimLinkError

__all__ = ["SimBackend", "missing_tools", "require_tools", "SIM_DDR_ADDR"]

JOB_CHUNK = 50_000  # cycles simulated between two looks at STATUS while a job runs
SIM_DDR_ADDR = 0x6000_0000  # where the DDR cache buffer is in the simulated memory (4 KB aligned)
SIM_MEMORY = "the simulation's memory model"
SIM_PACKAGES = ("amaranth", "cocotb", "cocotbext.axi")  # what the simulator process imports


def _importable(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ImportError:  # a missing parent package
        return False


def missing_tools(sim: str | None = None) -> str | None:
    """Why the RTL simulation cannot start from this environment (None: it can), checked before the
    simulator process is started. A simulator in another environment (``SKIP2LORA_SIM_PYTHON``)
    checks itself when it starts."""
    if os.environ.get("SKIP2LORA_SIM_PYTHON"):
        return None
    missing = [m for m in SIM_PACKAGES if not _importable(m)]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed"
    from ..sim.runner import simulator_missing  # standard library only

    return simulator_missing(sim)


def require_tools(sim: str | None = None) -> None:
    """`BackendUnavailable`, saying what to do instead, when the RTL simulation cannot run here."""
    reason = missing_tools(sim)
    if reason:
        raise BackendUnavailable(
            f"the sim backend runs the accelerator's RTL and needs the development tools ({reason}): "
            "pip install 'skip2lora[dev]'; without them use the fixed backend (`--backend fixed`: the "
            "bit-exact model, same results) or a KV260 (`--backend pynq`)")


class SimBackend(RegisterBackend):
    name = "sim"

    def __init__(self, config: AcceleratorConfig, *, cache: str = "auto", ddr_timing: DDRTiming | None = None,
                 sim: str | None = None, progress: bool | None = None, log=None):
        """``cache``: where the entries are ("auto", "chip", "ddr"); ``ddr_timing``: the latency the
        simulated memory answers DDR reads with (default: the simulation's own, ``link.ddr_latency_cycles``)."""
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        check_cache_args(cache, ddr_timing, config)
        require_tools(sim)
        self.progress = progress
        self.link = SimLink(config.to_dict(), sim=sim, log=log)
        self.regs = RegisterFile(self.link.read, self.link.write)
        try:
            timing = ddr_timing
            if config.ddr:
                if ddr_timing is None:
                    timing = DDRTiming(int(self.link.ddr_latency_cycles), SIM_MEMORY)
                else:
                    self.link.ddr_latency(ddr_timing.latency)
            self._attach(config, cache=cache, ddr_timing=timing)
            self._ddr_timing_given = ddr_timing  # None: the simulation's memory follows the job's entries
        except Exception:
            self.link.close()
            raise

    def _default_ddr_timing(self, layout):
        """The simulated memory's latency for a job's entries unless one was given: the default
        (`default_ddr_timing`: the KV260's assumed memory, or the most the cycle model covers)."""
        return DDRTiming(default_ddr_timing(layout).latency, SIM_MEMORY)

    def set_geometry(self, geometry=None):
        """`Backend.set_geometry`; the simulated memory then answers at the new ``ddr_timing``'s latency
        (a job's cycle counter stays the cycle model's under it)."""
        g = super().set_geometry(geometry)
        if self.ddr_timing is not None and self.ddr_timing.latency != self.link.ddr_latency_cycles:
            self.link.ddr_latency(self.ddr_timing.latency)
        return g

    def _send(self, data, what: str) -> None:
        try:
            self.link.send(np.asarray(data, np.uint8).tobytes())
        except SimLinkError as exc:
            raise AcceleratorError(f"{what}: {exc}") from exc

    def _recv(self, nbytes: int, what: str, command):
        command()
        data = self.link.recv(timeout_cycles=64 * nbytes + 10_000)
        if data is None:
            raise AcceleratorError(f"{what}: no packet from the accelerator within the timeout "
                                   f"(status {self.status()})")
        if len(data) != nbytes:
            raise AcceleratorError(f"{what}: received {len(data)} bytes, expected {nbytes}")
        return np.frombuffer(data, np.uint8).copy()

    def _wait_idle(self, what: str, cycles: int, expected: int | None = None) -> dict:
        status = self.regs.map.address("STATUS")
        if cycles <= JOB_CHUNK:
            try:
                self.link.wait_idle(status, 1, cycles, poll=64)
            except SimLinkError as exc:
                raise AcceleratorError(f"{what}: {exc}") from exc
            return self.status()
        waited = 0
        # the bar's total is the job's expected length (the timeout, `cycles`, allows twice that)
        total = min(expected or cycles, cycles)
        with Progress(total, f"RTL simulation: {what}", enabled=self.progress, unit=" cycles") as bar:
            while True:
                st = self.status()
                if not st["busy"]:
                    bar.update(total)  # the last chunk ran past the end: show it complete
                    return st
                if waited >= cycles:
                    raise AcceleratorError(f"{what}: the accelerator is still busy after {waited} cycles")
                self.link.run(JOB_CHUNK)
                waited += JOB_CHUNK
                bar.update(JOB_CHUNK)

    def _ddr_buffer(self, nbytes: int) -> int:
        return SIM_DDR_ADDR  # the simulated memory holds any size at this address

    def _ddr_write(self, offset: int, data) -> None:
        try:
            self.link.ddr_write(SIM_DDR_ADDR + offset, np.ascontiguousarray(data, np.uint8))
        except SimLinkError as exc:
            raise AcceleratorError(f"writing the DDR cache buffer into the simulation: {exc}") from exc

    def close(self) -> None:
        self.link.close()
