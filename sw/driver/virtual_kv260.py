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

The DDR cache: on a board the accelerator reads the cache buffer the driver allocated straight
from DDR (AXI4 over S_AXI_HP1_FPD). The simulation runs in another process with its own memory
model, so when the host writes CTRL.start with CACHE_MODE.ddr set, the virtual board first copies
the range the job reads (DDR_ADDR .. + SAMPLES * DDR_STRIDE) from its NumPy DDR into the
simulation's memory (``link.ddr_write``), then forwards the write: that copy is the virtual
board's stand-in for the HP1 port (a range outside its DDR is answered with error responses, as a
board's interconnect would). Buffers are allocated from the NumPy DDR and returned to it when
PYNQ frees them; the PS port widths PYNQ programs from the .hwh at download are kept
(`port_width`), as a ZynqMP's AFIFM / SLCR registers keep them.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from ..fixed.config import KV260, AcceleratorConfig
from .hwh import make_hwh
from .registers import RegisterFile, regmap
from .sim_link import SimLink

__all__ = ["VirtualKV260", "AxiDmaModel", "DDR_BASE", "DDR_SIZE"]

# 512 MB (np.zeros is lazy: only what is written takes memory): a 65,535-entry KV260 DDR cache
# buffer (128 MB) and the driver's other buffers fit, below the PL's address window at 0xA000_0000.
DDR_BASE, DDR_SIZE = 0x6000_0000, 512 << 20
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


# The PS's port-width registers PYNQ sets at a ZynqMP download (pynq.pl_server.embedded_device):
# the AXI FIFO interfaces of the PL -> PS ports and the SLCRs of the PS -> PL ones.
AFIFM = {"S_AXI_HPC0_FPD": 0xFD36_0000, "S_AXI_HPC1_FPD": 0xFD37_0000, "S_AXI_HP0_FPD": 0xFD38_0000,
         "S_AXI_HP1_FPD": 0xFD39_0000, "S_AXI_HP2_FPD": 0xFD3A_0000, "S_AXI_HP3_FPD": 0xFD3B_0000,
         "S_AXI_LPD": 0xFF9B_0000}
AFIFM_WIDTH = {0: 128, 1: 64, 2: 32}  # RDCTRL.FABRIC_WIDTH
SLCR = {"M_AXI_HPM0_FPD": (0xFD61_5000, 8), "M_AXI_HPM0_LPD": (0xFF41_9000, 8)}  # (HPM1_FPD shares HPM0's)
SLCR_WIDTH = {0: 32, 1: 64, 2: 128}   # AXI_FS.DW_SSn_SEL


class _Accelerator:
    """The accelerator's AXI4-Lite registers, served by the simulated RTL; a START in DDR mode first
    copies the job's DDR cache range into the simulation (see the module's docstring)."""

    def __init__(self, board):
        self.board, self.link, self.faults = board, board.link, board.faults
        self.regs = RegisterFile(self.link.read, self.link.write)  # no time passes on these reads
        self._ctrl = self.regs.address("CTRL")
        self._start = 1 << self.regs.map["CTRL"].field("start").offset
        self.ddr_copies = []  # (address, bytes) of each DDR range copied into the simulation

    def read(self, off):
        if off in self.faults.get("registers", {}):
            return self.faults["registers"][off]
        return self.link.read(off, advance=READ_ADVANCE)

    def write(self, off, value):
        if off == self._ctrl and value & self._start and self.board.config.ddr and self.regs.read("CACHE_MODE"):
            self._copy_ddr_range()
        self.link.write(off, value)

    def _copy_ddr_range(self):
        addr = self.regs.read("DDR_ADDR_LO") | (self.regs.read("DDR_ADDR_HI") << 32)
        nbytes = self.regs.read("SAMPLES") * self.regs.read("DDR_STRIDE")
        try:
            data = self.board.ddr_read(addr, nbytes)
        except IndexError:  # outside the board's DDR: the interconnect answers with errors
            self.link.ddr_fail(addr, nbytes)
            return
        self.link.ddr_write(addr, data)
        self.ddr_copies.append((addr, nbytes))


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
            self._live = {}                             # allocated buffers: physical address -> bytes
            self.flushes = self.invalidates = 0
            self.dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="virtual-kv260-"))
            self.dir.mkdir(parents=True, exist_ok=True)
            self.bitfile = self.dir / "skip2lora.bit"
            self.bitfile.write_bytes(b"")                # placeholder: never read by this device
            # the build's handoff: its DDR cache manager on HP1 only if it has the DDR path
            (self.dir / "skip2lora.hwh").write_text(make_hwh(4 * config.lanes, cache_bits=None if config.ddr else 0))
            system = regmap()["system"]
            self.link = SimLink(config.to_dict(), sim=sim, log=log)
            self.dma_model = AxiDmaModel(self)
            self.accelerator = _Accelerator(self)
            self.regions = [
                (system["accelerator"]["base"], system["accelerator"]["range"], self.accelerator),
                (system["dma"]["base"], system["dma"]["range"], self.dma_model),
                (CRL_APB, 0x1000, _RegFile({0x20: 0x00015A00, 0xC0: 0x01010500})),
                (CRF_APB, 0x1000, _RegFile({0x20: 0x00014800, 0x2C: 0x00014000, 0x60: 0x00000200})),
                *((base, 0x1000, _RegFile()) for base in sorted(set(AFIFM.values()) | {b for b, _ in SLCR.values()})),
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
            if parser is not None and hasattr(parser, "ps_name"):
                # as a ZynqMP download does: the PS ports' widths from the .hwh into the PS's registers
                try:
                    from pynq.pl_server.embedded_device import EmbeddedDevice
                except ImportError:  # a PYNQ without it: the widths stay unset (port_width None)
                    EmbeddedDevice = None
                if EmbeddedDevice is not None:
                    EmbeddedDevice.set_axi_port_width(self, parser)
            self.post_download(bitstream, parser, self.name)

        def port_width(self, port: str):
            """The data width PYNQ set for a PS port at download (e.g. "S_AXI_HP1_FPD"), or None if it
            set none (the .hwh does not configure that port)."""
            if port in AFIFM:
                model, off = self._find(AFIFM[port])
                return AFIFM_WIDTH.get(model.regs[off] & 3) if off in model.regs else None
            if port in SLCR:
                (base, shift) = SLCR[port]
                model, off = self._find(base)
                return SLCR_WIDTH.get((model.regs[off] >> shift) & 3) if off in model.regs else None
            raise ValueError(f"unknown PS port {port!r}; one of {', '.join([*AFIFM, *SLCR])}")

        @property
        def ddr_copies(self):
            """(address, bytes) of every DDR cache range copied into the simulation at a START."""
            return list(self.accelerator.ddr_copies)

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
            phys = self._place(max(nbytes, 1))
            self._live[phys] = max(nbytes, 1)
            self._next = phys + max(nbytes, 1)
            buf = PynqBuffer(shape, dtype, buffer=self.ddr.data, offset=phys - DDR_BASE, device=self,
                             device_address=phys, bo=phys, coherent=False)
            # PynqBuffer.freebuffer gives the address back (return_pointer) once; "freed" keeps it from
            # unmapping memory it never mapped when called again (by __del__)
            buf.memory = buf.return_to = self
            buf.pointer, buf.freed = phys, True
            return buf

        def _place(self, size):
            """The first 4 KB aligned free range of ``size`` bytes from the last allocation on (then
            from the start of DDR): freed buffers are reused, live ones never overlapped."""
            live = sorted(self._live.items())
            for start in (self._next, DDR_BASE):
                phys = (start + 0xFFF) & ~0xFFF
                for base, n in live:
                    if base + n <= phys:
                        continue
                    if phys + size <= base:
                        break
                    phys = (base + n + 0xFFF) & ~0xFFF
                if phys + size <= DDR_BASE + DDR_SIZE:
                    return phys
            raise RuntimeError(f"virtual KV260: no {size} bytes free in its {DDR_SIZE >> 20} MB of DDR "
                               f"({sum(self._live.values())} bytes allocated)")

        def return_pointer(self, pointer):
            """PYNQ freed the buffer at ``pointer`` (`PynqBuffer.freebuffer`)."""
            self._live.pop(pointer, None)

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
