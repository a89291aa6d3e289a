"""The accelerator's memories, each with a registered read (read register + output register).

Every read returns its data two cycles after the address (`READ_LATENCY`): the memory's own read
register and an output register behind it (a BRAM's DO*_REG / an UltraRAM's OREG), so no logic
ever sits between a memory and the next register. A memory deeper than one UltraRAM (the KV260
cache: 21 x 4096 lines) is built as banks of `URAM_DEPTH` lines, each with its own read and output
registers; the bank select (registered with the read, one LUT level or two) comes after the output
registers, so it sits in front of the reader's register, not between a memory and its register.

* `CacheMemory`  every cached sample's lines: 4-bit tap codes, base logits, label (UltraRAM when
  large: the KV260 build holds 1024 samples x `Layout.sample_lines` lines of `Layout.beat_bits`).
  Two read ports (a sample pair's lines in one cycle): the second is the memory's other port,
  which the stream loader's writes share (they never overlap a job: ``port_b_read``).
* `AMemory`      adapter A, one line (all R ranks x P lanes) per address, written a stream beat or
  an optimizer chunk at a time (its write granularity is one beat).
* `TBuffer`      t_k of one sample of each pair of the current mini-batch, at (pair, k) (one per
  head unit).
* `OrderBuffer`  the epoch's sample order as cache addresses, or as sample indices for a job in
  DDR (written by the order unit).
* `BatchBufferBank` the DDR path's batch buffer, two banks (a pair's samples, one per bank): the
  current mini-batch's entries and the next one's, fetched from DDR while the current one runs.
* `StatsMemory`  per-epoch training statistics (written by the sequencer, read by the host).
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .params import HwParams, bits_for, invalid
from .ports import read_port, write_port

__all__ = ["READ_LATENCY", "URAM_DEPTH", "RegisteredMemory", "CacheMemory", "AMemory", "TBuffer", "OrderBuffer", "BatchBufferBank",
           "StatsMemory", "STATS_BITS"]

READ_LATENCY = 2
URAM_THRESHOLD_BITS = 1 << 20  # smaller caches are left to the tools (BRAM / LUTRAM)
URAM_DEPTH = 4096              # URAM288: 4096 x 72; a deeper UltraRAM memory is banked at this depth
BRAM_DEPTH = 4096              # RAMB36E2 as 4K x 9: a deeper block-RAM memory is banked at this depth, so
                               # no depth mux sits between a RAMB36 and its output register (measured:
                               # the KV260's 64K-entry order buffer, 32 RAMB36 either way)
STATS_BITS = 16 + 32 + 32      # correct, loss sum, saturated updates


class RegisteredMemory(wiring.Component):
    """One write port (optionally with a byte-lane-like granularity) and one registered read port,
    each with Amaranth's memory port signature (`ports.write_port`, `ports.read_port`): ``write``
    and ``read``; a read's ``en`` is the memory's read enable (the readers leave it at 1).

    ``bank_depth``: a memory deeper than this is built as banks of ``bank_depth`` words, each with
    its read register and output register; the bank select (the read address' high bits, delayed
    with the read) follows the output registers. The read latency is `READ_LATENCY` either way.
    ``second_read``: a second registered read port (``read2``) on the write port's address (the
    memory's second port, read/write): while ``port_b_read`` is 1 it reads ``read2.addr`` and the
    writes are ignored; while 0 it takes the writes. ``addr_bits``: the ports' address width when
    wider than the depth needs (the cache's, with or without PREDICT's ring).
    """

    def __init__(self, width: int, depth: int, *, granularity: int | None = None, attrs=None,
                 bank_depth: int | None = None, second_read: bool = False, addr_bits: int = 0):
        for name, v in (("width", width), ("depth", depth)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise invalid(self, TypeError(f"{name} must be a positive integer, not {v!r}"))
        if granularity is not None and width % granularity:
            raise invalid(self, ValueError(f"width {width} is not a multiple of the granularity {granularity}"))
        if bank_depth is not None and (isinstance(bank_depth, bool) or not isinstance(bank_depth, int)
                                       or bank_depth < 2 or bank_depth & (bank_depth - 1)):
            raise invalid(self, ValueError(f"bank depth must be a power of two >= 2, not {bank_depth!r}"))
        self.width, self.depth, self.granularity, self.attrs = width, depth, granularity, attrs
        self.second_read = bool(second_read)
        if self.second_read:
            # Reads and writes never meet (reads while port_b_read, writes otherwise): no_rw_check
            # tells yosys so. Without it, an UltraRAM port (read/write collisions: no-change mode)
            # cannot hold Amaranth's read-old-data port, and yosys maps a second UltraRAM set.
            self.attrs = {**(attrs or {}), "no_rw_check": 1}
        self.bank_depth = bank_depth if bank_depth is not None and depth > bank_depth else None
        self.banks = -(-depth // self.bank_depth) if self.bank_depth else 1
        abits = max(bits_for(depth - 1), addr_bits)
        ports = {"write": Out(write_port(abits, width, granularity)), "read": Out(read_port(abits, width))}
        if self.second_read:
            ports.update({"port_b_read": In(1), "read2": Out(read_port(abits, width))})
        super().__init__(ports)

    def _port_b(self, m, mem, wp, lanes_en, addr_bits, name):
        """The write port's address, shared with the second read port (registered twice as the first)."""
        if not self.second_read:
            m.d.comb += [wp.addr.eq(self.write.addr[:addr_bits]), wp.en.eq(lanes_en)]
            return None
        addr_b = Signal(addr_bits, name=f"addr_b{name}")
        m.d.comb += [addr_b.eq(Mux(self.port_b_read, self.read2.addr[:addr_bits], self.write.addr[:addr_bits])),
                     wp.addr.eq(addr_b), wp.en.eq(lanes_en & (~self.port_b_read).replicate(len(lanes_en)))]
        rp2 = mem.read_port()
        m.d.comb += [rp2.addr.eq(addr_b), rp2.en.eq(self.read2.en)]
        out2 = Signal(self.width, name=f"out2{name}", reset_less=True)
        m.d.sync += out2.eq(rp2.data)
        return out2

    def elaborate(self, platform):
        if self.bank_depth:
            return self._banked()
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.width, depth=self.depth, init=[], attrs=self.attrs)
        wp = mem.write_port(granularity=self.granularity)
        rp = mem.read_port()
        out = Signal(self.width, reset_less=True)
        m.d.sync += out.eq(rp.data)
        m.d.comb += [wp.data.eq(self.write.data), rp.addr.eq(self.read.addr), rp.en.eq(self.read.en),
                     self.read.data.eq(out)]
        out2 = self._port_b(m, mem, wp, self.write.en, len(wp.addr), "")
        if out2 is not None:
            m.d.comb += self.read2.data.eq(out2)
        return m

    def _banked(self):
        m = Module()
        lo = self.bank_depth.bit_length() - 1
        outs, outs2 = [], []
        for b in range(self.banks):
            depth = min(self.bank_depth, self.depth - b * self.bank_depth)
            mem = memory.Memory(shape=self.width, depth=depth, init=[], attrs=self.attrs)
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port(granularity=self.granularity)
            rp = mem.read_port()
            out = Signal(self.width, name=f"out{b}", reset_less=True)  # the bank's output register
            m.d.sync += out.eq(rp.data)
            hit = self.write.addr[lo:] == b
            m.d.comb += [wp.data.eq(self.write.data), rp.addr.eq(self.read.addr[:len(rp.addr)]),
                         rp.en.eq(self.read.en)]
            outs2.append(self._port_b(m, mem, wp, self.write.en & hit.replicate(len(self.write.en)), len(wp.addr), b))
            outs.append(out)
        for port, banks in ((self.read, outs), (self.read2, outs2) if self.second_read else (None, None)):
            if port is None:
                continue
            addr, data = port.addr, port.data
            sel1 = Signal(len(addr) - lo, reset_less=True)
            sel2 = Signal(len(addr) - lo, reset_less=True)
            with m.If(port.en):  # held with the banks' read registers
                m.d.sync += sel1.eq(addr[lo:])
            m.d.sync += sel2.eq(sel1)
            m.d.comb += data.eq(Array(banks)[sel2])
        return m


def _params(params) -> HwParams:
    if not isinstance(params, HwParams):
        raise TypeError(f"params must be HwParams, not {params!r}")
    return params


def CacheMemory(params: HwParams, ring: bool = False) -> RegisteredMemory:
    """``ring``: PREDICT's ring past the entries (`HwParams.ring_lines`), a build with a PL base."""
    p = _params(params)
    lines = p.cache_lines + (p.ring_lines if ring else 0)
    big = p.cache_lines * p.beat_bits >= URAM_THRESHOLD_BITS
    return RegisteredMemory(p.beat_bits, lines, attrs={"ram_style": "ultra"} if big else None, addr_bits=p.cache_addr_bits,
                            bank_depth=URAM_DEPTH if big else None, second_read=True)


def AMemory(params: HwParams) -> RegisteredMemory:
    # Block RAM: wide (R*P words) and shallow (tap lines); as LUTRAM it would cost ~15k LUTs.
    p = _params(params)
    return RegisteredMemory(p.a_line_bits, p.tap_lines, granularity=p.beat_bits, attrs={"ram_style": "block"})


def TBuffer(params: HwParams) -> RegisteredMemory:
    p = _params(params)
    return RegisteredMemory(p.R * F.T_BITS, 1 << (p.pair_bits + p.tap_bits))


def OrderBuffer(params: HwParams) -> RegisteredMemory:
    p = _params(params)
    return RegisteredMemory(p.order_bits, p.order_depth, bank_depth=BRAM_DEPTH)


def BatchBufferBank(params: HwParams) -> RegisteredMemory:
    """One bank of the DDR path's batch buffer: the even (or odd) slots of two mini-batches, one
    being read by the passes while the DDR reader fills the other (UltraRAM when large)."""
    p = _params(params)
    big = p.bbuf_lines * p.beat_bits >= URAM_THRESHOLD_BITS // 4
    return RegisteredMemory(p.beat_bits, p.bbuf_lines, attrs={"ram_style": "ultra"} if big else None,
                            bank_depth=URAM_DEPTH if big else None)


def StatsMemory() -> RegisteredMemory:
    return RegisteredMemory(STATS_BITS, F.STAT_EPOCHS)
