"""Memory port signatures for the blocks' boundaries, and the selectors for a port two blocks share.

A block that reads or writes one of the accelerator's memories (`memories.RegisteredMemory`) or a
memory-like store in another block (head unit 0's B, read back beat by beat) declares Amaranth's
own memory port signature for it, ``In(read_port(...))`` / ``In(write_port(...))``, and the core
wires it to the memory with `wiring.connect`. The registered memories answer a read
`memories.READ_LATENCY` cycles after its address (one more than `amaranth.lib.memory`'s ports):
the signature names the wires, the memory's docstring the timing.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .params import invalid

__all__ = ["read_port", "write_port", "ReadPortSelect", "WritePortSelect"]


def read_port(addr_width: int, width: int) -> memory.ReadPort.Signature:
    """A read port, the memory's view: ``addr`` and ``en`` in (``en`` idles at 1), ``data`` out."""
    return memory.ReadPort.Signature(addr_width=addr_width, shape=width)


def write_port(addr_width: int, width: int, granularity: int | None = None) -> memory.WritePort.Signature:
    """A write port, the memory's view: ``addr``, ``data`` and ``en`` (a bit per ``granularity`` bits) in."""
    return memory.WritePort.Signature(addr_width=addr_width, shape=width, granularity=granularity)


def _check(owner, sig, kind):
    if not isinstance(sig, kind):
        raise invalid(owner, TypeError(f"signature must be a {kind.__qualname__}, not {sig!r}"))


class ReadPortSelect(wiring.Component):
    """One memory read port shared by two readers that never read at the same time: ``select``
    picks whose address reaches the memory (0: ``a``, 1: ``b``); both see its data."""

    def __init__(self, signature: memory.ReadPort.Signature):
        _check(self, signature, memory.ReadPort.Signature)
        super().__init__({"memory": In(signature), "a": Out(signature), "b": Out(signature), "select": In(1)})

    def elaborate(self, platform):
        m = Module()
        mem, a, b = self.memory, self.a, self.b
        m.d.comb += [mem.addr.eq(Mux(self.select, b.addr, a.addr)), mem.en.eq(Mux(self.select, b.en, a.en)),
                     a.data.eq(mem.data), b.data.eq(mem.data)]
        return m


class WritePortSelect(wiring.Component):
    """One memory write port shared by two writers: ``select`` picks whose writes reach it
    (0: ``a``, 1: ``b``); the other's are dropped (the core selects the one that may write).
    ``registered``: the chosen write is registered on its way to the memory (a cycle later), so
    the select's decode is not in series with the memory's own bank decode."""

    def __init__(self, signature: memory.WritePort.Signature, *, registered: bool = False):
        _check(self, signature, memory.WritePort.Signature)
        self.registered = bool(registered)
        super().__init__({"memory": In(signature), "a": Out(signature), "b": Out(signature), "select": In(1)})

    def elaborate(self, platform):
        m = Module()
        mem, a, b = self.memory, self.a, self.b
        if self.registered:
            addr, data = Signal.like(mem.addr, reset_less=True), Signal.like(mem.data, reset_less=True)
            en = Signal.like(mem.en)
            m.d.comb += [mem.addr.eq(addr), mem.data.eq(data), mem.en.eq(en)]
            domain = m.d.sync
        else:
            addr, data, en = mem.addr, mem.data, mem.en
            domain = m.d.comb
        domain += [addr.eq(Mux(self.select, b.addr, a.addr)), data.eq(Mux(self.select, b.data, a.data)),
                   en.eq(Mux(self.select, b.en, a.en))]
        return m
