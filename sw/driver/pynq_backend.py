"""The KV260 backend: the accelerator in the programmable logic, driven through PYNQ.

    from skip2lora.driver.pynq_backend import load
    backend = load()                      # bitstreams/kv260/skip2lora.bit (+ .hwh), or load("my.bit")
    session = Session(base_model, backend)

The package ships no bitstream: build one with ``skip2lora hw bitstream`` (Vivado, on a
workstation; it installs skip2lora.bit/.hwh into bitstreams/kv260/), or copy a .bit with its .hwh
(same basename) built elsewhere to the board and pass its path.

Layering as in FINN's driver: pack (skip2lora.fixed.packing) -> copy into a `pynq.allocate`
buffer -> flush -> AXI DMA (simple mode) -> wait, with a timeout -> check the DMA and
accelerator error bits -> invalidate -> unpack. Registers come from the register map generated
from the hardware (sw/regmap.json); the bitstream's ID/VERSION registers must match it.
pynq is imported only here, and only when a KV260 backend is created.

The DDR cache (``load(cache="ddr")``, or ``"auto"`` past the on-chip cache's 1024 entries): the
entries go into one `pynq.allocate` buffer, allocated when a job first needs it, grown (a new
buffer) only when the entries outgrow it, flushed after each write, and freed by `close`; the
accelerator reads it over S_AXI_HP1_FPD from ``buffer.device_address``.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..fixed.config import AcceleratorConfig
from ..fixed.cycles import CLOCK_MHZ, DDRTiming
from .backend import AcceleratorError, MissingPackageError, check_cache_args
from .register_backend import RegisterBackend
from .registers import RegisterFile, regmap

__all__ = ["PynqBackend", "load", "default_bitfile", "check_bitfile", "forget_cached_metadata",
           "accelerator_ip_class"]

DEFAULT_TIMEOUT = 10.0  # seconds: the floor of every wait for the DMA or the accelerator
DDR_BUFFER_MIN = 4 << 20  # bytes: the DDR cache buffer's first size (2048 KV260 entries), if the build's jobs reach it


def default_bitfile() -> Path:
    from .. import bitstreams

    return Path(bitstreams.__file__).resolve().parent / "kv260" / "skip2lora.bit"


HOW_TO_GET_A_BITSTREAM = (
    "build one with `skip2lora hw bitstream` on a machine with Vivado (it installs skip2lora.bit and "
    "skip2lora.hwh into bitstreams/kv260/), or copy a .bit and its .hwh (same basename) built elsewhere "
    "and pass its path (load(bitfile) / --bitfile)")


def import_pynq():
    """The pynq module, or `MissingPackageError` saying how to get it."""
    try:
        import pynq
    except ImportError as exc:
        raise MissingPackageError(
            "the pynq backend needs PYNQ: on the KV260 the Kria-PYNQ image; elsewhere pip install "
            "'skip2lora[board]' and a pynq.Device (e.g. the virtual KV260); without a board use the "
            "fixed backend (the bit-exact model, same results)") from exc
    return pynq


def check_bitfile(bitfile=None) -> Path:
    """The bitstream's path, checked: it and its .hwh exist (PYNQ needs both), or a message saying
    how to build or obtain them."""
    path = Path(bitfile).expanduser() if bitfile else default_bitfile()
    if path.suffix != ".bit":
        raise ValueError(f"{path} is not a bitstream (.bit file)")
    if not path.is_file():
        where = "no such file" if bitfile else "the package ships none; none has been built and installed here"
        raise FileNotFoundError(f"no bitstream at {path} ({where}): {HOW_TO_GET_A_BITSTREAM}")
    if not path.with_suffix(".hwh").is_file():
        raise FileNotFoundError(f"{path.with_suffix('.hwh')} is missing: PYNQ reads the design from the "
                                f"hardware handoff next to the bitstream ({HOW_TO_GET_A_BITSTREAM})")
    return path


def forget_cached_metadata(path: Path) -> bool:
    """Make PYNQ parse this bitstream's .hwh again; True if a cached state was dropped.

    PYNQ records the last downloaded bitstream (``pynq.pl_server.global_state``) and reuses the
    metadata pickled with it when the same bitstream is loaded again (PYNQ 3.0 matched the path,
    PYNQ 3.1+ the .bit's hash): after a rebuild at the same path, or a new .hwh beside an unchanged
    .bit, that is the old design's. Only a state recorded for this path or these bits is dropped,
    so another design's shutdown bookkeeping survives."""
    try:
        from pynq.pl_server import global_state as gs
    except ImportError:  # an older PYNQ without the global state file
        return False
    try:
        if not gs.global_state_file_exists():
            return False
        state = gs.load_global_state()
        same = state is None or Path(state.bitfile_name).resolve() == path.resolve()
        if not same and getattr(state, "bitfile_hash", "") and hasattr(gs, "bitstream_hash"):
            same = state.bitfile_hash == gs.bitstream_hash(str(path))
        if same:
            gs.clear_global_state()
        return same
    except Exception as exc:  # noqa: BLE001 - a broken or unreadable state file: PYNQ then parses anew too
        import warnings

        warnings.warn(f"could not check PYNQ's cached metadata ({exc}); if the design looks stale, "
                      "reboot the board or call pynq.pl_server.global_state.clear_global_state()", stacklevel=3)
        return False


@lru_cache(maxsize=None)
def accelerator_ip_class():
    """The `DefaultIP` driver of the accelerator, bound by VLNV (defined once pynq is imported)."""
    pynq = import_pynq()

    class Skip2LoRAIP(pynq.DefaultIP):
        """Register access by name for the Skip2-LoRA accelerator (``ol.skip2lora_0.regs``)."""

        bindto = [regmap()["system"]["vlnv"]]

        def __init__(self, description):
            super().__init__(description=description)
            self.regs = RegisterFile(self.read, self.write)

    return Skip2LoRAIP


def load(bitfile=None, *, device=None, timeout: float = DEFAULT_TIMEOUT, cache: str = "auto",
         ddr_timing: DDRTiming | None = None) -> "PynqBackend":
    """One line to a ready backend: downloads the bitstream (default: bitstreams/kv260/skip2lora.bit,
    built by ``skip2lora hw bitstream``), with PYNQ's cached metadata of an earlier build dropped.
    ``cache``: where the cache entries go ("auto", "chip", "ddr"); ``ddr_timing``: the memory the
    DDR jobs' expected times assume (default: `default_ddr_timing`, on the KV260 build its assumed
    memory `cycles.KV260_DDR`; the board's cycle counter measures the real one)."""
    return PynqBackend(bitfile=bitfile, device=device, timeout=timeout, cache=cache, ddr_timing=ddr_timing)


class PynqBackend(RegisterBackend):
    name = "pynq"

    def __init__(self, config: AcceleratorConfig | None = None, *, bitfile=None, overlay=None, device=None,
                 timeout: float = DEFAULT_TIMEOUT, progress=None, cache: str = "auto",
                 ddr_timing: DDRTiming | None = None):
        if config is not None and not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig or None, not {config!r}")
        check_cache_args(cache, ddr_timing, config)
        pynq = import_pynq()
        accelerator_ip_class()  # registered before the overlay binds its IPs
        self.timeout = float(timeout)
        if overlay is None:
            path = check_bitfile(bitfile)
            forget_cached_metadata(path)
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
        self._ddr_buf = None  # the DDR cache buffer, allocated when a job first runs from DDR
        self._attach(config, cache=cache, ddr_timing=ddr_timing)

    def soft_reset(self) -> None:
        super().soft_reset()
        for ch in (self.dma.sendchannel, self.dma.recvchannel):
            if ch is not None and not ch.running:
                ch.start()

    def _reset_dma(self) -> None:
        """Stop a transfer the host gave up on: the core's soft reset (it stops streaming), then the
        AXI DMA's own reset (DMACR.Reset, PG021: both channels) and its channels restarted, so the
        next transfer finds them idle. (PYNQ's channel has no reset call: its control register.)"""
        super().soft_reset()
        ch = self.dma.recvchannel
        ch._mmio.write(ch._offset, 0x4)
        for c in (self.dma.sendchannel, self.dma.recvchannel):
            if c is not None:
                c.start()

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

    def _wait_idle(self, what: str, cycles: int, expected: int | None = None) -> dict:
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
            try:
                command()
                self._dma_wait(self.dma.recvchannel, what)
            except BaseException:  # (an error, a timeout, Ctrl-C) the buffer is about to be freed:
                self._reset_dma()  # the core stops sending and the DMA forgets it first
                raise
            if self.dma.recvchannel.transferred != nbytes:
                raise AcceleratorError(f"{what}: received {self.dma.recvchannel.transferred} bytes, "
                                       f"expected {nbytes}")
            return np.array(out)
        finally:
            out.freebuffer()

    # -- the DDR cache buffer -------------------------------------------------------------------
    def _ddr_buffer(self, nbytes: int) -> int:
        if self._ddr_buf is None or self._ddr_buf.nbytes < nbytes:
            # room for online appending: at least DDR_BUFFER_MIN, doubling, never past the largest DDR job
            old = 0 if self._ddr_buf is None else self._ddr_buf.nbytes
            size = max(nbytes, min(max(2 * old, DDR_BUFFER_MIN), self.build_layout.ddr_bytes(self.config.ddr_samples)))
            self._free_ddr_buffer()
            self._ddr_replaced()
            try:
                self._ddr_buf = self._allocate(shape=(size,), dtype=np.uint8)
            except Exception as exc:  # noqa: BLE001 - PYNQ's allocators raise various errors
                raise AcceleratorError(f"could not allocate the {size / 2**20:.1f} MB DDR cache buffer from PYNQ's "
                                       f"contiguous memory (CMA): {exc}; free other buffers or load fewer entries") from exc
        return int(self._ddr_buf.device_address)

    def _ddr_write(self, offset: int, data) -> None:
        self._ddr_buf[offset:offset + len(data)] = data

    def _ddr_sync(self) -> None:
        self._ddr_buf.flush()

    def _free_ddr_buffer(self) -> None:
        if self._ddr_buf is not None:
            self._ddr_buf.freebuffer()
            self._ddr_buf = None

    def close(self) -> None:
        """Free the DDR cache buffer (the overlay stays loaded)."""
        self._free_ddr_buffer()
