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
from ..fixed.cycles import CLOCK_MHZ
from .backend import AcceleratorError
from .register_backend import RegisterBackend
from .registers import RegisterFile, regmap

__all__ = ["PynqBackend", "load", "default_bitfile", "accelerator_ip_class"]

DEFAULT_TIMEOUT = 10.0  # seconds: the floor of every wait for the DMA or the accelerator


def default_bitfile() -> Path:
    from .. import bitstreams

    return Path(bitstreams.__file__).resolve().parent / "kv260" / "skip2lora.bit"


def _pynq():
    try:
        import pynq
    except ImportError as exc:
        raise ImportError("the pynq backend needs PYNQ: on the KV260 the Kria-PYNQ image; elsewhere "
                          "pip install 'skip2lora[board]' and a pynq.Device (e.g. the virtual KV260)") from exc
    return pynq


@lru_cache(maxsize=None)
def accelerator_ip_class():
    """The `DefaultIP` driver of the accelerator, bound by VLNV (defined once pynq is imported)."""
    pynq = _pynq()

    class Skip2LoRAIP(pynq.DefaultIP):
        """Register access by name for the Skip2-LoRA accelerator (``ol.skip2lora_0.regs``)."""

        bindto = [regmap()["system"]["vlnv"]]

        def __init__(self, description):
            super().__init__(description=description)
            self.regs = RegisterFile(self.read, self.write)

    return Skip2LoRAIP


def load(bitfile=None, *, device=None, timeout: float = DEFAULT_TIMEOUT) -> "PynqBackend":
    """One line to a ready backend (default: the bitstream shipped in bitstreams/kv260/)."""
    return PynqBackend(bitfile=bitfile, device=device, timeout=timeout)


class PynqBackend(RegisterBackend):
    name = "pynq"

    def __init__(self, config: AcceleratorConfig | None = None, *, bitfile=None, overlay=None, device=None,
                 timeout: float = DEFAULT_TIMEOUT, progress=None):
        pynq = _pynq()
        accelerator_ip_class()  # registered before the overlay binds its IPs
        self.timeout = float(timeout)
        if overlay is None:
            path = Path(bitfile) if bitfile else default_bitfile()
            if not path.exists():
                raise FileNotFoundError(f"no bitstream at {path}: build one with `skip2lora hw bitstream` "
                                        f"(needs Vivado), or pass bitfile=")
            overlay = pynq.Overlay(str(path), device=device) if device is not None else pynq.Overlay(str(path))
        system = regmap()["system"]
        self.overlay = overlay
        self.ip = getattr(overlay, system["accelerator"]["name"])
        self.dma = getattr(overlay, system["dma"]["name"])
        if not isinstance(self.ip, accelerator_ip_class()):
            raise AcceleratorError(f"{system['accelerator']['name']} in {getattr(overlay, 'bitfile_name', overlay)} "
                                   f"is not bound to the Skip2-LoRA driver (VLNV {system['vlnv']} expected)")
        self.regs = self.ip.regs
        self._allocate = pynq.allocate
        self._attach(config)

    def soft_reset(self) -> None:
        super().soft_reset()
        for ch in (self.dma.sendchannel, self.dma.recvchannel):
            if ch is not None and not ch.running:
                ch.start()

    def _dma_wait(self, channel, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not (channel.idle or channel.error):
            if time.monotonic() > deadline:
                raise AcceleratorError(f"{what}: the DMA did not finish within {self.timeout:g} s "
                                       f"(accelerator status {self.status()})")
        try:
            channel.wait()
        except RuntimeError as exc:  # pynq's DMA error bits: internal, slave, decode
            raise AcceleratorError(f"{what}: {exc}") from exc

    def _wait_idle(self, what: str, cycles: int) -> dict:
        timeout = max(self.timeout, 10 * cycles / (CLOCK_MHZ * 1e6))
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if not st["busy"]:
                return st
            if time.monotonic() > deadline:
                raise AcceleratorError(f"{what}: the accelerator is still busy after {timeout:g} s")
            time.sleep(0.0005)

    def _send(self, data, what: str) -> None:
        buf = self._allocate(shape=(len(data),), dtype=np.uint8)
        try:
            buf[:] = data
            self.dma.sendchannel.transfer(buf)
            self._dma_wait(self.dma.sendchannel, what)
        finally:
            buf.freebuffer()

    def _recv(self, nbytes: int, what: str, command):
        out = self._allocate(shape=(nbytes,), dtype=np.uint8)
        try:
            self.dma.recvchannel.transfer(out)  # armed before the accelerator starts sending
            command()
            self._dma_wait(self.dma.recvchannel, what)
            if self.dma.recvchannel.transferred != nbytes:
                raise AcceleratorError(f"{what}: received {self.dma.recvchannel.transferred} bytes, "
                                       f"expected {nbytes}")
            return np.array(out)
        finally:
            out.freebuffer()
