"""The KV260 backend: the accelerator in the programmable logic, driven through PYNQ.

    from skip2lora.driver.pynq_backend import load
    backend = load()                      # the bitstream shipped in bitstreams/kv260/
    session = Session(base_model, backend)

Layering as in FINN's driver: pack (skip2lora.fixed.packing) -> copy into a `pynq.allocate`
buffer -> flush -> AXI DMA (simple mode) -> wait, with a timeout -> check the DMA and
accelerator error bits -> invalidate -> unpack. Registers come from the register map generated
from the hardware (sw/regmap.json); the bitstream's ID/VERSION registers must match it.
pynq is imported only here, and only when a KV260 backend is created.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..fixed.config import AcceleratorConfig
from ..fixed.model import Adapters, CacheEntries, Geometry, JobConfig
from ..fixed.packing import pack_adapters, pack_cache, unpack_adapters
from .backend import AcceleratorError, Backend
from .registers import RegisterFile, regmap

__all__ = ["PynqBackend", "load", "default_bitfile", "accelerator_ip_class"]

DEFAULT_TIMEOUT = 10.0  # seconds for any DMA transfer or register wait


def default_bitfile() -> Path:
    from .. import bitstreams  # noqa: F401 - the package holding bitstreams/kv260/

    return Path(bitstreams.__file__).resolve().parent / "kv260" / "skip2lora.bit"


def _pynq():
    try:
        import pynq
    except ImportError as exc:
        raise ImportError("the pynq backend needs PYNQ (on the KV260: the Kria-PYNQ image; elsewhere "
                          "pip install 'skip2lora[board]' and a pynq.Device)") from exc
    return pynq


@lru_cache(maxsize=None)
def accelerator_ip_class():
    """The `DefaultIP` driver of the accelerator, bound by VLNV (created once pynq is imported)."""
    pynq = _pynq()
    rm = regmap()

    class Skip2LoRAIP(pynq.DefaultIP):
        """Register access by name for the Skip2-LoRA accelerator (ol.skip2lora_0)."""

        bindto = [rm["system"]["vlnv"]]

        def __init__(self, description):
            super().__init__(description=description)
            self.regs = RegisterFile(self.read, self.write)

    return Skip2LoRAIP


def load(bitfile=None, *, device=None, timeout: float = DEFAULT_TIMEOUT) -> "PynqBackend":
    """One line to a ready backend: download the bitstream (default: the one shipped in bitstreams/)."""
    return PynqBackend(bitfile=bitfile, device=device, timeout=timeout)


class PynqBackend(Backend):
    name = "pynq"

    def __init__(self, config: AcceleratorConfig | None = None, *, bitfile=None, overlay=None, device=None,
                 timeout: float = DEFAULT_TIMEOUT, progress=None):
        pynq = _pynq()
        accelerator_ip_class()  # register the driver before the overlay binds its IPs
        rm = regmap()
        self.timeout = float(timeout)
        if overlay is None:
            path = Path(bitfile) if bitfile else default_bitfile()
            if not path.exists():
                raise FileNotFoundError(f"no bitstream at {path}: build one with `skip2lora hw bitstream` "
                                        f"(needs Vivado) or pass bitfile=")
            overlay = pynq.Overlay(str(path), device=device) if device is not None else pynq.Overlay(str(path))
        self.overlay = overlay
        self.ip = getattr(overlay, rm["system"]["accelerator"]["name"])
        self.dma = getattr(overlay, rm["system"]["dma"]["name"])
        self.regs = getattr(self.ip, "regs", None) or RegisterFile(self.ip.read, self.ip.write)
        self._check_identity(rm)
        found = self._read_config()
        if config is not None and (config.geometry != found.geometry or config.lanes != found.lanes):
            raise AcceleratorError(f"the bitstream's accelerator is {found.to_dict()}, the job needs "
                                   f"{config.to_dict()}")
        super().__init__(config if config is not None else found)
        self._allocate = pynq.allocate
        self.soft_reset()

    # -- identity and configuration ---------------------------------------------------------------
    def _check_identity(self, rm):
        ident, version = self.regs.read("ID"), self.regs.read_fields("VERSION")
        if ident != rm["id"]:
            raise AcceleratorError(f"the bitstream's IP at {self.ip} is not a Skip2-LoRA accelerator "
                                   f"(ID {ident:#010x}, expected {rm['id']:#010x})")
        if version["major"] != rm["version"][0]:
            raise AcceleratorError(f"the bitstream's accelerator is version {version['major']}.{version['minor']}, "
                                   f"this driver needs {rm['version'][0]}.x: rebuild the bitstream or update skip2lora")

    def _read_config(self) -> AcceleratorConfig:
        geo = self.regs.read_fields("GEOMETRY")
        dims = tuple(self.regs.read(f"TAP{k}_DIM") for k in range(geo["taps"]))
        return AcceleratorConfig("kv260-bitstream", Geometry(dims, geo["rank"], geo["classes"]),
                                 self.regs.read("LANES"), self.regs.read("CACHE_DEPTH"))

    # -- accelerator status -----------------------------------------------------------------------
    def status(self) -> dict:
        return self.regs.read_fields("STATUS")

    def _check_error(self, what: str) -> None:
        st = self.status()
        if st["error"]:
            name = {v: k for k, v in regmap()["error_codes"].items()}.get(st["error_code"], st["error_code"])
            raise AcceleratorError(f"{what}: the accelerator reports error {name} (soft reset to recover)")

    def soft_reset(self) -> None:
        self.regs.write("CTRL", soft_reset=1)
        self._dma_reset()

    def _dma_reset(self):
        for ch in (self.dma.sendchannel, self.dma.recvchannel):
            if ch is not None and not ch.running:
                ch.start()

    def _wait(self, channel, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not (channel.idle or channel.error):
            if time.monotonic() > deadline:
                raise AcceleratorError(f"{what}: the DMA did not finish within {self.timeout:g} s "
                                       f"(accelerator status {self.status()})")
        try:
            channel.wait()
        except RuntimeError as exc:
            raise AcceleratorError(f"{what}: {exc}") from exc

    def _wait_idle(self, what: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if not st["busy"]:
                return st
            if time.monotonic() > deadline:
                raise AcceleratorError(f"{what}: the accelerator is still busy after {timeout:g} s")
            time.sleep(0.001)

    def _send(self, data: np.ndarray, what: str) -> None:
        buf = self._allocate(shape=(data.size,), dtype=np.uint8)
        try:
            buf[:] = data
            self.dma.sendchannel.transfer(buf)
            self._wait(self.dma.sendchannel, what)
        finally:
            buf.freebuffer()
        self._wait_idle(what, self.timeout)
        self._check_error(what)

    # -- Backend interface --------------------------------------------------------------------------
    @property
    def n_loaded(self) -> int:
        return self.regs.read("N_LOADED")

    def load_cache(self, entries: CacheEntries) -> None:
        self.check_room(len(entries))
        self._check_error("before loading the cache")
        self.regs.write("LOAD_COUNT", len(entries))
        self.regs.write("CTRL", load_cache=1)
        self._check_error("arming the cache load")
        self._send(pack_cache(self.layout, entries), f"loading {len(entries)} cache entries")

    def clear_cache(self) -> None:
        self.regs.write("CTRL", clear_cache=1)
        self._check_error("clearing the cache")

    def load_adapters(self, adapters: Adapters) -> None:
        adapters.validate(self.config.geometry)
        self.regs.write("CTRL", load_adapters=1)
        self._send(pack_adapters(self.layout, adapters), "loading the adapters")

    def read_adapters(self) -> Adapters:
        nbytes = self.layout.adapter_beats * self.layout.beat_bytes
        out = self._allocate(shape=(nbytes,), dtype=np.uint8)
        try:
            self.dma.recvchannel.transfer(out)  # the receive is armed before the accelerator sends
            self.regs.write("CTRL", read_adapters=1)
            self._wait(self.dma.recvchannel, "reading the adapters")
            data = np.array(out)
        finally:
            out.freebuffer()
        self._check_error("reading the adapters")
        return unpack_adapters(self.layout, data)

    def run(self, job: JobConfig) -> dict:
        job.validate(self.config.geometry, self.n_loaded)
        from ..fixed.vectors import register_values

        for name, value in register_values(job).items():
            self.regs.write(name, value)
        self.regs.write("IRQ", done=1)
        self.regs.write("CTRL", start=1)
        self._check_error("starting the job")
        from ..fixed.cycles import CLOCK_MHZ, job_cycles

        expected = job_cycles(self.layout, job.samples, job.batch, job.epochs)
        st = self._wait_idle("the fine-tuning job", max(self.timeout, 20 * expected / (CLOCK_MHZ * 1e6)))
        if not st["done"]:
            raise AcceleratorError(f"the job ended without DONE (status {st})")
        self._check_error("the fine-tuning job")
        cycles = self.regs.read("CYCLES_LO") | (self.regs.read("CYCLES_HI") << 32)
        return {"cycles": cycles, "correct": self.regs.read("CORRECT")}

    def close(self) -> None:
        pass
