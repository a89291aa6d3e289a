"""A virtual KV260: a `pynq.Device` whose registers and DMA are served by the accelerator's RTL.

    from skip2lora.driver.virtual_kv260 import VirtualKV260
    board = VirtualKV260()                       # simulates the KV260 build (or config=SMALL)
    backend = pynq_backend.load(board.bitfile, device=board, timeout=board.timeout)

PYNQ itself (Overlay, DefaultIP, MMIO, allocate, the AXI DMA driver) runs unmodified: the
accelerator's AXI4-Lite registers are the simulated RTL's (through `SimLink`), the AXI DMA is a
register-level model of Xilinx's AXI DMA in simple mode (PG021) that moves buffer bytes into and
out of the simulated streams, and buffers live in a NumPy "DDR" with fake physical addresses.
The overlay's .hwh is generated from the system description (`make_hwh`); its .bit is an empty
placeholder (the virtual device never reads it). Each register read lets simulated time pass,
as it does on a board while the host polls.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from ..fixed.config import KV260, AcceleratorConfig
from .hwh import make_hwh
from .registers import regmap
from .sim_link import SimLink

__all__ = ["VirtualKV260", "AxiDmaModel"]

DDR_BASE, DDR_SIZE = 0x6000_0000, 64 << 20
CRL_APB, CRF_APB = 0xFF5E_0000, 0xFD1A_0000  # PS clock registers that Overlay.download programs
READ_ADVANCE = 2048   # simulated cycles that pass before each register read
S2MM_POLL = 4096      # simulated cycles waited for the accelerator's packet per DMASR poll


class _RegFile:
    """A plain 32-bit register space (unmodelled peripherals, the PS clock registers)."""

    def __init__(self, init=None):
        self.regs = dict(init or {})

    def read(self, off):
        return self.regs.get(off, 0)

    def write(self, off, value):
        self.regs[off] = value


class _Accelerator:
    def __init__(self, link: SimLink, faults: dict):
        self.link, self.faults = link, faults

    def read(self, off):
        if off in self.faults.get("registers", {}):
            return self.faults["registers"][off]
        return self.link.read(off, advance=READ_ADVANCE)

    def write(self, off, value):
        self.link.write(off, value)


class AxiDmaModel:
    """AXI DMA v7.1 in simple mode: MM2S at 0x00, S2MM at 0x30 (DMACR, DMASR, SA/DA, LENGTH)."""

    HALTED, IDLE, DECERR, IOC = 0x1, 0x2, 0x40, 0x1000

    def __init__(self, board: "VirtualKV260"):
        self.board = board
        self.ch = {0x00: self._reset(), 0x30: self._reset()}

    @staticmethod
    def _reset():
        return {"cr": 0, "sr": AxiDmaModel.HALTED, "addr": 0, "len": 0, "busy": False}

    def read(self, off):
        base = 0x30 if off >= 0x30 else 0x00
        c, r = self.ch[base], off - base
        if r == 0x04:
            self._advance(base, c)
            return c["sr"]
        return {0x00: c["cr"], 0x18: c["addr"] & 0xFFFFFFFF, 0x1C: c["addr"] >> 32, 0x28: c["len"]}.get(r, 0)

    def write(self, off, value):
        base = 0x30 if off >= 0x30 else 0x00
        c, r = self.ch[base], off - base
        if r == 0x00:
            if value & 0x4:  # soft reset of the whole DMA
                self.ch = {0x00: self._reset(), 0x30: self._reset()}
                return
            c["cr"] = value
            c["sr"] = (c["sr"] & ~self.HALTED) if value & 1 else (c["sr"] | self.HALTED)
        elif r == 0x04:
            c["sr"] &= ~(value & 0x7000)
        elif r == 0x18:
            c["addr"] = (c["addr"] & ~0xFFFFFFFF) | value
        elif r == 0x1C:
            c["addr"] = (c["addr"] & 0xFFFFFFFF) | (value << 32)
        elif r == 0x28 and c["cr"] & 1:  # writing LENGTH starts a transfer
            c["len"], c["busy"] = value, True
            c["sr"] &= ~self.IDLE
            self._advance(base, c)

    def _advance(self, base, c):
        if not c["busy"]:
            return
        try:
            if base == 0x00:  # MM2S: DDR -> s_axis, one packet with TLAST on its last beat
                self.board.link.send(self.board.ddr_read(c["addr"], c["len"]))
                self._done(c, c["len"])
            elif not self.board.faults.get("drop_s2mm"):  # S2MM: m_axis -> DDR, once a packet arrives
                data = self.board.link.recv(timeout_cycles=S2MM_POLL)
                if data is not None:
                    self.board.ddr_write(c["addr"], data[:c["len"]])
                    self._done(c, min(len(data), c["len"]))
        except IndexError:  # an address outside the DDR model
            c["sr"] |= self.DECERR | self.IDLE
            c["busy"] = False

    def _done(self, c, nbytes):
        c["len"], c["busy"] = nbytes, False
        c["sr"] |= self.IDLE | self.IOC


def _device_base():
    try:
        import pynq
    except ImportError as exc:
        raise ImportError("the virtual KV260 needs the real pynq package (scripts/setup.sh --with-pynq "
                          "creates .venv-pynq with it)") from exc
    return pynq


def _make_class():
    pynq = _device_base()
    from pynq.buffer import PynqBuffer

    class _VirtualKV260(pynq.Device):
        def __init__(self, config: AcceleratorConfig = KV260, *, directory=None, sim=None, faults=None,
                     timeout: float = 1800.0, log=None):
            super().__init__("virtual_kv260")
            self.name = "virtual_kv260"
            self.arch = "aarch64"                       # pynq.Clocks takes the Zynq UltraScale+ path
            self.capabilities = {"REGISTER_RW": True}   # MMIO goes through read/write_registers
            self.config = config
            self.timeout = timeout                      # suggested driver timeout: simulation is slow
            self.faults = dict(faults or {})
            self.ddr = np.zeros(DDR_SIZE, np.uint8)
            self._next = DDR_BASE
            self.flushes = self.invalidates = 0
            self.dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="virtual-kv260-"))
            self.dir.mkdir(parents=True, exist_ok=True)
            self.bitfile = self.dir / "skip2lora.bit"
            self.bitfile.write_bytes(b"")                # placeholder: never read by this device
            (self.dir / "skip2lora.hwh").write_text(make_hwh(4 * config.lanes))
            system = regmap()["system"]
            self.link = SimLink(config.to_dict(), sim=sim, log=log)
            self.dma_model = AxiDmaModel(self)
            self.regions = [
                (system["accelerator"]["base"], system["accelerator"]["range"], _Accelerator(self.link, self.faults)),
                (system["dma"]["base"], system["dma"]["range"], self.dma_model),
                (CRL_APB, 0x1000, _RegFile({0x20: 0x00015A00, 0xC0: 0x01010500})),
                (CRF_APB, 0x1000, _RegFile({0x20: 0x00014800, 0x2C: 0x00014000, 0x60: 0x00000200})),
            ]

        # -- bitstream -----------------------------------------------------------------------------
        def get_bitfile_metadata(self, bitfile_name, partial=False):
            from pynqmetadata.frontends import Metadata
            from pynqmetadata.views.runtime import RuntimeMetadataParser

            parser = RuntimeMetadataParser(Metadata(input=os.path.splitext(bitfile_name)[0] + ".hwh"))
            for ip in parser.ip_dict.values():
                base = ip.get("phys_addr")
                if base is not None and not any(b <= base < b + s for b, s, _ in self.regions):
                    self.regions.append((base, ip["addr_range"], _RegFile()))
            return parser

        def download(self, bitstream, parser=None):
            self.post_download(bitstream, parser, self.name)

        def insert_device_tree(self, abs_dtbo):
            pass

        def remove_device_tree(self, abs_dtbo):
            pass

        # -- registers -----------------------------------------------------------------------------
        def _find(self, addr):
            for base, size, model in self.regions:
                if base <= addr < base + size:
                    return model, addr - base
            raise RuntimeError(f"virtual KV260: bus error at {addr:#x} (no peripheral there)")

        def read_registers(self, address, length):
            out = b""
            for a in range(address, address + length, 4):
                model, off = self._find(a)
                out += struct.pack("<I", model.read(off) & 0xFFFFFFFF)
            return out[:length]

        def write_registers(self, address, data):
            data = bytes(data)
            for i in range(0, len(data), 4):
                (value,) = struct.unpack("<I", data[i:i + 4].ljust(4, b"\0"))
                model, off = self._find(address + i)
                model.write(off, value)

        # -- memory --------------------------------------------------------------------------------
        def allocate(self, shape, dtype, cacheable=False, **kwargs):
            dtype = np.dtype(dtype)
            nbytes = int(np.prod(shape)) * dtype.itemsize
            phys = (self._next + 0xFFF) & ~0xFFF
            if phys + nbytes > DDR_BASE + DDR_SIZE:
                self._next = DDR_BASE  # a ring: old buffers are long freed in practice
                phys = DDR_BASE
            self._next = phys + max(nbytes, 1)
            return PynqBuffer(shape, dtype, buffer=self.ddr.data, offset=phys - DDR_BASE, device=self,
                              device_address=phys, bo=phys, coherent=False)

        def flush(self, bo, offset, vaddr, nbytes):
            self.flushes += 1

        def invalidate(self, bo, offset, vaddr, nbytes):
            self.invalidates += 1

        def ddr_read(self, phys, n):
            o = phys - DDR_BASE
            if o < 0 or o + n > DDR_SIZE:
                raise IndexError(phys)
            return self.ddr[o:o + n].tobytes()

        def ddr_write(self, phys, data):
            o = phys - DDR_BASE
            if o < 0 or o + len(data) > DDR_SIZE:
                raise IndexError(phys)
            self.ddr[o:o + len(data)] = np.frombuffer(data, np.uint8)

        def close(self):
            self.link.close()

        def activate(self):
            """Make this the active PYNQ device (PYNQ keeps class-level singletons)."""
            pynq.Device.active_device = self
            if hasattr(pynq.Clocks, "_real_instance"):
                del pynq.Clocks._real_instance
            return self

    return _VirtualKV260


_CLASS = None


def VirtualKV260(*args, **kwargs):  # noqa: N802 - a factory that reads like the class it builds
    """Create the virtual board (the class is built on first use, once pynq can be imported)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _make_class()
    return _CLASS(*args, **kwargs).activate()
