"""Reading a Vivado hardware handoff (``.hwh``) and checking it against the description.

The same check runs on the real build's handoff and on the virtual KV260's (sw/driver/hwh.py), so
the two cannot drift apart.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .design import AXI_CACHE, DDR_WINDOWS, PS_CACHE, PS_MASTER, Design, design

__all__ = ["hwh_summary", "check_hwh"]

# The PS parameters that carry a port's width: the HDL generic PYNQ programs the PS from at
# download (pynq.pl_server.embedded_device.set_axi_port_width) and the user parameter.
_PS_WIDTH_PARAMS = {
    "control": ("C_MAXIGP0_DATA_WIDTH", "PSU__MAXIGP0__DATA_WIDTH"),
    "data": ("C_SAXIGP2_DATA_WIDTH", "PSU__SAXIGP2__DATA_WIDTH"),
    "cache": ("C_SAXIGP3_DATA_WIDTH", "PSU__SAXIGP3__DATA_WIDTH"),  # only checked where HP1 is used
}


def _int(v):
    if v is None:
        return None
    v = str(v).strip()
    try:
        return int(v, 0)
    except ValueError:
        return int(float(v))


def hwh_summary(hwh) -> dict:
    """Instances, VLNVs, address maps (every master's MEMRANGEs: the PS's peripherals, the
    accelerator's view of the DDR), DMA parameters and the PL clock of a Vivado hardware handoff
    (``.hwh``) file or text."""
    text = Path(hwh).read_text() if not str(hwh).lstrip().startswith("<") else str(hwh)
    root = ET.fromstring(text)
    modules, ranges = {}, []
    for mod in root.iter("MODULE"):
        inst = mod.get("INSTANCE")
        params = {p.get("NAME"): p.get("VALUE") for p in mod.iter("PARAMETER")}
        modules[inst] = {"vlnv": mod.get("VLNV"), "modtype": mod.get("MODTYPE"), "parameters": params}
        for mr in mod.iter("MEMRANGE"):
            base, high = _int(mr.get("BASEVALUE")), _int(mr.get("HIGHVALUE"))
            ranges.append({"master_instance": inst, "master": mr.get("MASTERBUSINTERFACE"),
                           "instance": mr.get("INSTANCE"), "slave": mr.get("SLAVEBUSINTERFACE"),
                           "block": mr.get("ADDRESSBLOCK"),
                           "base": base, "range": (high - base + 1) if base is not None and high is not None else None})
    sysinfo = root.find("SYSTEMINFO")
    pl0 = None
    for mod in modules.values():
        v = mod["parameters"].get("PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ")
        if v:
            pl0 = float(v)
    return {"vivado_version": root.get("VIVADOVERSION"),
            "board": sysinfo.get("BOARD") if sysinfo is not None else None,
            "modules": modules, "ranges": ranges, "pl0_act_mhz": pl0}


def check_hwh(hwh, design_: Design | None = None, *, system=None, config="kv260") -> list:
    """Differences between a hardware handoff and the description (empty list: all good)."""
    d = design_ or design(config, system=system)
    s = d.system
    h = hwh_summary(hwh)
    problems = []
    acc = h["modules"].get(s["accelerator"]["name"])
    if acc is None:
        problems.append(f"no instance {s['accelerator']['name']!r} in the hwh")
    elif acc["vlnv"] != s["vlnv"]:
        problems.append(f"{s['accelerator']['name']} has VLNV {acc['vlnv']!r}, not {s['vlnv']!r}")
    for key in ("accelerator", "dma"):
        seg = s[key]
        hits = [r for r in h["ranges"] if r["instance"] == seg["name"] and r["master"] == PS_MASTER]
        if not hits:
            problems.append(f"{seg['name']} is not mapped on {PS_MASTER}")
        elif (hits[0]["base"], hits[0]["range"]) != (seg["base"], seg["range"]):
            problems.append(f"{seg['name']} is at {hits[0]['base']:#x}+{hits[0]['range']:#x}, "
                            f"not {seg['base']:#x}+{seg['range']:#x}")
    dma = h["modules"].get(s["dma"]["name"])
    if dma is None:
        problems.append(f"no instance {s['dma']['name']!r} in the hwh")
    else:
        p = {k.lower(): v for k, v in dma["parameters"].items()}
        want = {"c_include_sg": 0, "c_sg_length_width": int(s["dma_length_width"]), "c_include_mm2s": 1,
                "c_include_s2mm": 1, "c_m_axis_mm2s_tdata_width": d.stream_width,
                "c_s_axis_s2mm_tdata_width": d.stream_width,
                "c_m_axi_mm2s_data_width": d.mm_width, "c_m_axi_s2mm_data_width": d.mm_width}
        for k, v in want.items():
            if k in p and _int(p[k]) != v:
                problems.append(f"{s['dma']['name']} {k} = {p[k]}, not {v}")
    problems += _check_cache_path(h, d)
    ps = next((m for m in h["modules"].values() if m["modtype"] == "zynq_ultra_ps_e"), None)
    if ps is not None:
        for role, names in _PS_WIDTH_PARAMS.items():
            if role == "cache" and not d.cache_connected:
                continue  # HP1 is off in a build without the DDR path: its (default) width means nothing
            port = s["ps_ports"][role]
            for name in names:
                value = ps["parameters"].get(name)
                if value is not None and _int(value) != port["width"]:
                    problems.append(f"the PS's {port['port']} is {value} bits wide ({name}), "
                                    f"not {port['width']}")
        use = ps["parameters"].get("PSU__USE__S_AXI_GP3")
        if d.cache_connected and use is not None and _int(use) != 1:
            problems.append(f"the PS's {PS_CACHE} is not enabled (PSU__USE__S_AXI_GP3 = {use})")
    target = float(s["pl_clock_mhz"])
    if h["pl0_act_mhz"] is not None and abs(h["pl0_act_mhz"] - target) > 0.01 * target:
        problems.append(f"pl_clk0 runs at {h['pl0_act_mhz']} MHz, not {s['pl_clock_mhz']} MHz")
    return problems


def _check_cache_path(h: dict, d: Design) -> list:
    """The accelerator's m_axi_cache reaches exactly the DDR windows, through the PS's HP1 port."""
    if not d.cache_connected:
        return []
    acc = d.system["accelerator"]["name"]
    seen = [r for r in h["ranges"] if r["master_instance"] == acc and r["master"] == AXI_CACHE]
    problems = []
    for name, base, rng in DDR_WINDOWS:
        hits = [r for r in seen if (r["base"], r["range"]) == (base, rng)]
        if not hits:
            problems.append(f"{acc}/{AXI_CACHE} does not reach the PS's {name} at {base:#x}+{rng:#x}")
        elif hits[0]["slave"] != PS_CACHE:
            problems.append(f"{acc}/{AXI_CACHE} reaches {name} through {hits[0]['instance']}/{hits[0]['slave']}, "
                            f"not {PS_CACHE}")
    windows = {(base, rng) for _, base, rng in DDR_WINDOWS}
    for r in seen:
        if (r["base"], r["range"]) not in windows:
            problems.append(f"{acc}/{AXI_CACHE} also reaches {r['instance']} {r['block']} at "
                            f"{r['base']:#x}+{r['range']:#x}")
    return problems
