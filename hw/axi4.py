"""AXI4 (full) read channels, the manager's view: what the accelerator drives to read DDR.

Flat member names as in the AXI4 specification (``araddr``, ``rdata``, ...), so a top level that
prefixes them (``m_axi_cache_araddr``) is what Vivado's IP packager and cocotbext-axi's
``AxiReadBus.from_prefix`` recognise. Only what a read-only manager needs: one ID (``arid`` and
``rid`` are present because the protocol requires them and carry 0), INCR bursts.
"""

from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AXI4ReadSignature", "BURST_INCR", "RESP_OKAY", "MAX_BURST_BEATS", "BOUNDARY_BYTES"]

BURST_INCR = 0b01
RESP_OKAY = 0b00
MAX_BURST_BEATS = 256     # AXI4 INCR: ARLEN up to 255
BOUNDARY_BYTES = 4096     # a burst never crosses a 4 KB address boundary


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TypeError(f"{name} must be a positive integer, not {value!r}")


class AXI4ReadSignature(wiring.Signature):
    """AXI4 read address and read data channels, seen from the manager (a subordinate, or a test
    memory, uses ``In(AXI4ReadSignature(...))``)."""

    def __init__(self, addr_width: int, data_width: int, id_width: int = 1):
        for name, value in (("addr_width", addr_width), ("data_width", data_width), ("id_width", id_width)):
            _positive(name, value)
        if data_width % 8 or data_width & (data_width - 1):
            raise ValueError(f"data_width must be a power of two number of bytes, not {data_width}")
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        super().__init__({
            "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
            "arburst": Out(2), "arcache": Out(4), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
            "rready": Out(1),
        })

    def __eq__(self, other):
        return (isinstance(other, AXI4ReadSignature) and (self.addr_width, self.data_width, self.id_width)
                == (other.addr_width, other.data_width, other.id_width))

    def __repr__(self):
        return f"AXI4ReadSignature({self.addr_width}, {self.data_width}, {self.id_width})"
