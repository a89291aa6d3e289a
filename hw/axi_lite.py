"""AXI4-Lite subordinate register bank generated from a :class:`~.registers.RegisterMap`.

A deliberately small, generic and well-tested bridge written by the project because amaranth-soc
is not on the package registries.

Timing and ordering rules (all in the ``sync`` domain, reset by the domain's reset):

* AW and W are accepted independently, in either order or together, into one-entry holding
  registers; the write is applied in the cycle after both are held, and BVALID rises with the
  applied values (W1P pulses appear in that same cycle). ``awready``/``wready`` stay low while
  their holding register is full or a B response is pending, so nothing is lost or duplicated.
* AR is accepted into a holding register; RDATA is captured from it one cycle later into a
  register (no combinational path from ``araddr`` to ``rdata``). ``arready`` stays low while an
  address is held or an R response is pending.
* Write first: the read capture waits while a write is being applied, so a read whose AR is
  accepted in the same cycle as the later of the write's AW and W (or after it) returns the
  written value; a read accepted earlier returns the old one.
* Every response is OKAY: reads of unmapped addresses return 0, writes to unmapped addresses and
  RO bits are ignored. A control bus with a fixed map gains nothing from SLVERR, and drivers
  stay simpler.
* The two low address bits and AWPROT/ARPROT are ignored (word access). WSTRB masks every writable bit (RW, W1P,
  W1C): a field byte is written only if its strobe bit is set.
* W1C: a hardware set pulse wins over a host clear in the same cycle, so no event is lost.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .registers import Access, RegisterMap

__all__ = ["AXI4LiteSignature", "AXI4LiteRegisterBank"]


class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite bus seen from the manager; a subordinate uses ``In(AXI4LiteSignature(...))``."""

    def __init__(self, addr_width, data_width=32):
        if not isinstance(addr_width, int) or isinstance(addr_width, bool) or addr_width < 1:
            raise TypeError(f"Address width must be a positive integer, not {addr_width!r}")
        if data_width != 32:
            raise ValueError(f"Data width must be 32, not {data_width!r}")
        self._addr_width = addr_width
        self._data_width = data_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def data_width(self):
        return self._data_width

    def __eq__(self, other):
        return (type(other) is type(self) and other.addr_width == self.addr_width and
                other.data_width == self.data_width)

    def __repr__(self):
        return f"AXI4LiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


class AXI4LiteRegisterBank(wiring.Component):
    """Register bank: ``bus`` plus one port per field named ``f"{register}_{field}"``.

    RO -> ``In`` (value to read), RW -> ``Out`` (stored value), W1P -> ``Out`` (one-cycle pulse),
    W1C -> ``In`` (set pulse) plus ``Out`` ``f"{register}_{field}_held"`` (held bits, e.g. for
    an interrupt line) and ``In`` ``f"{register}_{field}_clear"`` (a hardware clear, e.g. a soft
    reset; a set pulse in the same cycle still wins).
    """

    def __init__(self, regmap):
        if not isinstance(regmap, RegisterMap):
            self._MustUse__silence = True   # no "unused elaboratable" warning for a failed build
            raise TypeError(f"Register map must be a RegisterMap, not {regmap!r}")
        self.regmap = regmap
        members = {"bus": In(AXI4LiteSignature(regmap.address_width))}
        for reg, field in self._fields():
            port = f"{reg.name}_{field.name}"
            new = {port: In(field.width) if field.access in (Access.RO, Access.W1C)
                   else Out(field.width, init=field.reset)}
            if field.access is Access.W1C:
                new[f"{port}_held"] = Out(field.width, init=field.reset)
                new[f"{port}_clear"] = In(field.width)
            for name in new:
                if name in members:
                    self._MustUse__silence = True
                    raise ValueError(f"Port name {name!r} of field {field.name!r} in register "
                                     f"{reg.name!r} is not unique")
            members.update(new)
        super().__init__(members)

    def _fields(self):
        return [(reg, field) for reg in self.regmap.registers for field in reg.fields]

    def _port(self, reg, field, suffix=""):
        return getattr(self, f"{reg.name}_{field.name}{suffix}")

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        # Write channels: one-entry holding registers for AW and W.
        aw_full, aw_addr = Signal(name="aw_full"), Signal.like(bus.awaddr, name="aw_addr")
        w_full, w_data = Signal(name="w_full"), Signal.like(bus.wdata, name="w_data")
        w_strb, commit = Signal.like(bus.wstrb, name="w_strb"), Signal(name="commit")
        m.d.comb += [
            bus.awready.eq(~aw_full & ~bus.bvalid),
            bus.wready.eq(~w_full & ~bus.bvalid),
            commit.eq(aw_full & w_full),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(commit):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bus.bvalid.eq(1)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        # Bits the host writes: data masked by the byte strobes, only for the addressed register.
        strb_mask = Cat(s.replicate(8) for s in w_strb)
        for reg, field in self._fields():
            sl = slice(field.offset, field.offset + field.width)
            hit = commit & (aw_addr[2:] == reg.address >> 2)
            mask, data = strb_mask[sl], w_data[sl]
            if field.access is Access.RW:
                port = self._port(reg, field)
                with m.If(hit):
                    m.d.sync += port.eq((port & ~mask) | (data & mask))
            elif field.access is Access.W1P:
                m.d.sync += self._port(reg, field).eq(Mux(hit, data & mask, 0))
            elif field.access is Access.W1C:
                held, clear = self._port(reg, field, "_held"), Mux(hit, data & mask, 0)
                hw_clear = self._port(reg, field, "_clear")
                m.d.sync += held.eq((held & ~clear & ~hw_clear) | self._port(reg, field))

        # Read channel: hold AR, then capture the addressed word unless a write is being applied.
        ar_full, ar_addr = Signal(name="ar_full"), Signal.like(bus.araddr, name="ar_addr")
        m.d.comb += bus.arready.eq(~ar_full & ~bus.rvalid)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [ar_full.eq(1), ar_addr.eq(bus.araddr)]
        with m.If(ar_full & ~commit):
            m.d.sync += [ar_full.eq(0), bus.rvalid.eq(1), bus.rdata.eq(0)]
            with m.Switch(ar_addr[2:]):
                for reg in self.regmap.registers:
                    with m.Case(reg.address >> 2):
                        m.d.sync += bus.rdata.eq(self._read_word(reg))
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        return m

    def _read_word(self, reg):
        """The 32-bit value the host reads from ``reg`` (W1P bits and gaps read as 0)."""
        parts, pos = [], 0
        for field in sorted(reg.fields, key=lambda f: f.offset):
            if field.access is Access.W1P:
                continue
            suffix = "_held" if field.access is Access.W1C else ""
            parts += [Const(0, field.offset - pos), self._port(reg, field, suffix)]
            pos = field.offset + field.width
        return Cat(*parts, Const(0, 32 - pos))
