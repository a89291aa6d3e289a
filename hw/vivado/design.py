"""The description one bitstream build is generated from, checked for consistency.

Three sources, none typed twice: ``hw/system.py`` (IP identity, address map, PS ports, DMA, clock,
part), the accelerator's top-level signature (port names and widths, hence the stream width) and
the register map.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ...fixed.config import AcceleratorConfig, config_named
from ..system import AXI_MIN_WIDTH, DDR_WINDOWS as SYSTEM_DDR_WINDOWS, system_dict

__all__ = [
    "MIN_VIVADO", "BASENAME", "DESIGN_NAME", "PS_NAME", "PS_MASTER", "PS_SLAVE", "PS_CACHE", "PS_CACHE_SEGMENTS",
    "HPM0_FPD_WINDOW", "DDR_WINDOWS", "DMA_ADDR_WIDTH", "DMA_BURST", "PS_PORT_WIDTHS", "SMARTCONNECT_MIN_WIDTH",
    "AXI_LITE", "AXIS_IN", "AXIS_OUT", "AXI_CACHE", "CLOCK", "RESET", "IRQ", "Design", "design",
]

MIN_VIVADO = "2022.2"
BASENAME = "skip2lora"            # skip2lora.bit + skip2lora.hwh (PYNQ: same basename)
DESIGN_NAME = "skip2lora_system"  # the block design; must differ from the IP's module name
PS_NAME = "zynq_ultra_ps_e_0"
PS_MASTER = "M_AXI_HPM0_FPD"      # the PS port the script enables for control (PSU__USE__M_AXI_GP0)
PS_SLAVE = "S_AXI_HP0_FPD"        # ... and for the DMA's data (PSU__USE__S_AXI_GP2)
PS_CACHE = "S_AXI_HP1_FPD"        # ... and for the accelerator's DDR cache reads (PSU__USE__S_AXI_GP3)
PS_CACHE_SEGMENTS = "SAXIGP3"     # IP integrator's name for HP1's slave side: SAXIGP3/HP1_DDR_LOW, ...
HPM0_FPD_WINDOW = (0xA000_0000, 0x1000_0000)  # M_AXI_HPM0_FPD: 0xA000_0000..0xAFFF_FFFF
DMA_ADDR_WIDTH = 64               # the DMA reaches all of DDR (PYNQ writes the MSB registers)
DMA_BURST = 16                    # max burst beats of both DMA channels
PS_PORT_WIDTHS = (32, 64, 128)    # what the Zynq UltraScale+ PS's AXI ports can be set to
# The DDR windows m_axi_cache is given and the narrowest AXI4 interface the block design connects:
# the system description's (hw/system.py), which the virtual board's handoff reads too.
DDR_WINDOWS, SMARTCONNECT_MIN_WIDTH = SYSTEM_DDR_WINDOWS, AXI_MIN_WIDTH

# The top's bus interfaces: port-name prefixes (Vivado's IP packager conventions).
AXI_LITE, AXIS_IN, AXIS_OUT, CLOCK, RESET, IRQ = "s_axi_control", "s_axis", "m_axis", "aclk", "aresetn", "interrupt"
AXI_CACHE = "m_axi_cache"  # the AXI4 read manager of a build with the DDR cache path (hw/top.py)


@dataclass(frozen=True)
class Design:
    """Everything ``build.tcl`` depends on."""

    system: dict         # hw/system.py system_dict() form
    config: dict         # AcceleratorConfig.to_dict()
    ports: tuple         # ((name, "in"|"out", width), ...) of the Verilog top
    top: str             # Verilog top module
    stream_width: int    # AXI4-Stream TDATA bits
    address_width: int   # AXI4-Lite address bits
    registers: tuple     # REGISTER_MAP.to_dict()["registers"]
    cache_width: int = 0       # m_axi_cache RDATA bits (0: the build has no DDR cache path)
    cache_addr_width: int = 0  # m_axi_cache ARADDR bits
    cache_id_width: int = 0    # m_axi_cache ARID bits
    cache_outstanding: int = 0  # read bursts the accelerator keeps in flight (the DDR reader's)

    @property
    def has_cache(self) -> bool:
        """The accelerator has the ``m_axi_cache`` manager (its IP declares the interface)."""
        return self.cache_width > 0

    @property
    def cache_connected(self) -> bool:
        """The block design connects ``m_axi_cache`` to the PS's S_AXI_HP1_FPD (the DDR path is built).

        Not for a manager narrower than AXI infrastructure takes: no SmartConnect, width converter
        or HP port accepts it, so the interface is left unconnected (see `warnings`)."""
        return self.has_cache and self.cache_width >= SMARTCONNECT_MIN_WIDTH

    @property
    def warnings(self) -> tuple:
        if self.has_cache and not self.cache_connected:
            return (f"the {self.config['name']} build's {AXI_CACHE} is {self.cache_width} bits wide, narrower "
                    f"than the {SMARTCONNECT_MIN_WIDTH} bits AMD's AXI infrastructure and the PS's "
                    f"{PS_CACHE} take: it is left unconnected (its inputs read 0), so this bitstream has no "
                    f"DDR cache path and a CACHE_MODE.ddr job never finishes",)
        return ()

    @property
    def cache_path(self) -> dict | None:
        """What the block design builds for the DDR cache path (None: the accelerator has none)."""
        if not self.has_cache:
            return None
        port = self.system["ps_ports"]["cache"]
        return {"interface": AXI_CACHE, "width": self.cache_width, "addr_width": self.cache_addr_width,
                "connected": self.cache_connected, "ps_port": port["port"], "ps_width": port["width"],
                "windows": [{"segment": f"{PS_CACHE_SEGMENTS}/HP1_{name}", "base": base, "range": rng}
                            for name, base, rng in DDR_WINDOWS] if self.cache_connected else []}

    @property
    def mm_width(self) -> int:
        """DMA memory-map data width: at least the stream width and at least 32 bits."""
        return max(32, self.stream_width)

    @property
    def vlnv(self) -> tuple:
        return tuple(self.system["vlnv"].split(":"))

    def to_dict(self) -> dict:
        return {"system": self.system, "config": self.config, "top": self.top,
                "stream_width": self.stream_width, "mm_width": self.mm_width,
                "address_width": self.address_width, "dma_addr_width": DMA_ADDR_WIDTH,
                "cache_path": self.cache_path, "warnings": list(self.warnings),
                "design_name": DESIGN_NAME, "basename": BASENAME, "min_vivado": MIN_VIVADO}


def _top_ports(cfg: AcceleratorConfig):
    from amaranth.hdl import Shape
    from amaranth.lib.wiring import Flow

    from ..top import TOP_NAME, Skip2LoRATop

    top = Skip2LoRATop(cfg)
    top._MustUse__silence = True  # only the signature is read: never elaborated here
    sig = top.signature
    ports = tuple((name, "in" if m.flow == Flow.In else "out", Shape.cast(m.shape).width)
                  for name, m in sig.members.items())
    return TOP_NAME, ports


def _register_dicts(register_map):
    if register_map is None:
        from ..regmap import REGISTER_MAP

        register_map = REGISTER_MAP
    d = register_map if isinstance(register_map, dict) else register_map.to_dict()
    return d["address_width"], tuple(d["registers"])


def _check_ps_ports(ports) -> None:
    want = {"control": PS_MASTER, "data": PS_SLAVE, "cache": PS_CACHE}
    required = ("control", "data")  # "cache" only matters to a build with the DDR path (checked in design())
    if not isinstance(ports, dict) or not set(required) <= set(ports) or not set(ports) <= set(want):
        raise ValueError(f"ps_ports must name the 'control' and 'data' ports and may name the 'cache' port "
                         f"(nothing else), not {ports!r}")
    for role, port in want.items():
        if role not in ports:
            continue
        if not isinstance(ports[role], dict):
            raise ValueError(f"the {role} port must be a {{'port': ..., 'width': ...}} mapping, not {ports[role]!r}")
        if ports[role].get("port") != port:
            raise ValueError(f"the {role} port must be {port} (the flow enables that one), "
                             f"not {ports[role].get('port')!r}")
        if ports[role].get("width") not in PS_PORT_WIDTHS:
            raise ValueError(f"the {role} port's width must be one of {PS_PORT_WIDTHS}, "
                             f"not {ports[role].get('width')!r}")


def _check_system(s: dict) -> dict:
    s = json.loads(json.dumps(s))  # a private deep copy
    for key in ("vlnv", "accelerator", "dma", "dma_length_width", "pl_clock_mhz", "part", "board_part",
                "ps_ports"):
        if key not in s:
            raise ValueError(f"system description lacks {key!r}")
    if len(s["vlnv"].split(":")) != 4 or not all(s["vlnv"].split(":")):
        raise ValueError(f"VLNV must be vendor:library:name:version, not {s['vlnv']!r}")
    if len(s["board_part"].split(":")) != 3:
        raise ValueError(f"board_part must be vendor:board:component (no version: the newest installed "
                         f"one is used), not {s['board_part']!r}")
    _check_ps_ports(s["ps_ports"])
    lo, size = HPM0_FPD_WINDOW
    spans = []
    for key in ("accelerator", "dma"):
        seg = s[key]
        base, rng, name = seg["base"], seg["range"], seg["name"]
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise ValueError(f"{key} instance name {name!r} is not a block-design cell name")
        if rng < 0x1000 or rng & (rng - 1):
            raise ValueError(f"{key} range {rng:#x} must be a power of two of at least 4 KiB")
        if base % rng:
            raise ValueError(f"{key} base {base:#x} must be aligned to its range {rng:#x}")
        if not (lo <= base and base + rng <= lo + size):
            raise ValueError(f"{key} window {base:#x}+{rng:#x} is outside {PS_MASTER} "
                             f"({lo:#x}..{lo + size - 1:#x})")
        spans.append((base, base + rng, key))
    spans.sort()
    if spans[0][1] > spans[1][0]:
        raise ValueError(f"the {spans[0][2]} and {spans[1][2]} address windows overlap")
    if s["accelerator"]["name"] == s["dma"]["name"]:
        raise ValueError("the accelerator and the DMA need different instance names")
    if not 8 <= int(s["dma_length_width"]) <= 26:
        raise ValueError(f"dma_length_width must be 8..26 (AXI DMA), not {s['dma_length_width']!r}")
    if not 0 < float(s["pl_clock_mhz"]) <= 500:
        raise ValueError(f"pl_clock_mhz must be in (0, 500], not {s['pl_clock_mhz']!r}")
    return s


def design(config="kv260", *, system=None, register_map=None) -> Design:
    """Collect and check the description of one build (no Verilog is generated)."""
    cfg = config_named(config)
    sysd = _check_system(system_dict() if system is None else system)
    top, ports = _top_ports(cfg)
    aw, regs = _register_dicts(register_map)
    widths = {name: width for name, _, width in ports}
    for name in (f"{AXI_LITE}_awaddr", f"{AXIS_IN}_tdata", f"{AXIS_OUT}_tdata", f"{AXIS_OUT}_tkeep",
                 CLOCK, RESET, IRQ):
        if name not in widths:
            raise ValueError(f"the top {top!r} has no port {name!r}")
    if widths[f"{AXIS_IN}_tdata"] != widths[f"{AXIS_OUT}_tdata"]:
        raise ValueError("s_axis and m_axis must have the same TDATA width")
    stream = widths[f"{AXIS_IN}_tdata"]
    if stream < 8 or stream > 1024 or stream & (stream - 1):
        raise ValueError(f"the AXI DMA needs a power-of-two stream width of 8..1024 bits, not {stream}")
    if widths[f"{AXIS_OUT}_tkeep"] != stream // 8:
        raise ValueError(f"m_axis_tkeep must have one bit per TDATA byte ({stream // 8}), "
                         f"not {widths[f'{AXIS_OUT}_tkeep']}")
    if widths[f"{AXI_LITE}_awaddr"] != aw:
        raise ValueError(f"s_axi_control address width {widths[f'{AXI_LITE}_awaddr']} differs from the "
                         f"register map's {aw}")
    if sysd["accelerator"]["range"] < 2 ** aw:
        raise ValueError(f"the accelerator window {sysd['accelerator']['range']:#x} is smaller than its "
                         f"register space {2 ** aw:#x}")
    cache = _check_cache(top, widths, sysd) if any(n.startswith(AXI_CACHE + "_") for n in widths) else {}
    return Design(sysd, cfg.to_dict(), ports, top, stream, aw, regs, **cache)


def _reader_outstanding() -> int:
    """Bursts the DDR reader keeps in flight (its ``outstanding`` default, which the core uses)."""
    import inspect

    from ..ddr_reader import DDRReader

    return inspect.signature(DDRReader.__init__).parameters["outstanding"].default


def _check_cache(top, widths, sysd) -> dict:
    """The m_axi_cache manager's widths, checked against AXI4 and the system description."""
    p = f"{AXI_CACHE}_"
    for sig in ("araddr", "arlen", "arsize", "arburst", "arvalid", "arready", "rdata", "rresp", "rlast",
                "rvalid", "rready"):
        if p + sig not in widths:
            raise ValueError(f"the top {top!r} has {AXI_CACHE} ports but no {p + sig!r} (an AXI4 read manager "
                             f"needs it)")
    writes = sorted(n for n in widths if n.startswith((p + "aw", p + "w", p + "b")))
    if writes:
        raise ValueError(f"{AXI_CACHE} is packaged and connected as a read-only manager, but the top has "
                         f"write-channel ports {writes}")
    data, addr, arlen = widths[p + "rdata"], widths[p + "araddr"], widths[p + "arlen"]
    if data < 8 or data > 1024 or data & (data - 1):
        raise ValueError(f"{AXI_CACHE}_rdata must be a power of two of 8..1024 bits (AXI4), not {data}")
    if arlen != 8 or widths[p + "arsize"] != 3 or widths[p + "arburst"] != 2:
        raise ValueError(f"{AXI_CACHE} must have AXI4's ARLEN[7:0], ARSIZE[2:0] and ARBURST[1:0]")
    if "cache" not in sysd["ps_ports"]:
        raise ValueError(f"the accelerator has {AXI_CACHE} (the DDR cache path) but ps_ports names no 'cache' "
                         f"port (expected {{'port': '{PS_CACHE}', 'width': ...}})")
    top_end = max(base + rng for _, base, rng in DDR_WINDOWS)
    if top_end > 2 ** addr:
        raise ValueError(f"{AXI_CACHE} has {addr} address bits: it cannot reach the DDR up to {top_end - 1:#x}")
    return {"cache_width": data, "cache_addr_width": addr, "cache_id_width": widths.get(p + "arid", 0),
            "cache_outstanding": _reader_outstanding()}
