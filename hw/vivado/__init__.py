"""The Vivado bitstream flow for the KV260: a batch Tcl script generated from the system description.

    skip2lora hw bitstream [--config kv260] [--out DIR] [--jobs N] [--dry-run] [--json]

One module per job:

* ``design``    the description a build is generated from, checked: ``hw/system.py`` (the IP's
                VLNV, instance names, base addresses and ranges, PS ports, DMA buffer length width,
                PL clock, part and board part), the accelerator's top-level signature
                (:class:`~skip2lora.hw.top.Skip2LoRATop`: port names and widths, hence the AXI4-Stream
                width; a build with the DDR cache path adds the AXI4 read manager ``m_axi_cache``)
                and the register map (the packaged IP's address block and registers);
* ``tcl``       ``build.tcl``: the Tcl templates in ``templates/`` filled in from the description;
* ``run``       finding and running Vivado in batch mode;
* ``reports``   parsing Vivado's timing summary;
* ``handoff``   reading the ``.hwh`` and checking it against the description;
* ``manifest``  ``manifest.json`` (hashes, git commit, Vivado version, timing) and the install into
                ``bitstreams/kv260/``;
* ``flow``      the command: :func:`build_bitstream`.

The script packages the exported Verilog as an IP (``ipx::``), builds a Zynq UltraScale+ block
design (PS + AXI DMA in simple mode + the accelerator + SmartConnects + reset + interrupts; with the
DDR cache path, the accelerator's ``m_axi_cache`` through a SmartConnect to ``S_AXI_HP1_FPD`` with
the PS's DDR mapped into its address space), assigns the address map, runs synthesis and
implementation and writes ``skip2lora.bit`` / ``skip2lora.hwh`` (PYNQ wants the same basename) and
a timing summary into ``<build>/out``. Every Xilinx IP is looked up in the catalog by name, never by
version, and the board part is the newest installed ``kv260_som``. Vivado is not needed to generate or test any of this; only :func:`build_bitstream`
without ``dry_run`` runs it.
"""

from .design import (AXI_CACHE, BASENAME, DDR_WINDOWS, DESIGN_NAME, DMA_ADDR_WIDTH, DMA_BURST, HPM0_FPD_WINDOW,
                     MIN_VIVADO, PS_CACHE, PS_MASTER, PS_NAME, PS_SLAVE, SMARTCONNECT_MIN_WIDTH, Design, design)
from .flow import build_bitstream, summary_text
from .handoff import check_hwh, hwh_summary
from .manifest import OUTPUT_FILES, check_install_dir, install, pynq_dir, write_manifest
from .reports import parse_timing_summary, parse_vivado_version
from .run import VivadoNotFound, default_jobs, find_vivado, vivado_command
from .tcl import TEMPLATES, tcl_text, template_fields, template_text, write_build

__all__ = [
    "MIN_VIVADO", "BASENAME", "DESIGN_NAME", "PS_NAME", "PS_MASTER", "PS_SLAVE", "PS_CACHE", "HPM0_FPD_WINDOW",
    "DDR_WINDOWS", "AXI_CACHE", "SMARTCONNECT_MIN_WIDTH", "DMA_ADDR_WIDTH", "DMA_BURST", "VivadoNotFound", "Design", "design", "tcl_text", "TEMPLATES",
    "template_text", "template_fields", "write_build", "vivado_command", "find_vivado",
    "parse_timing_summary", "parse_vivado_version", "hwh_summary", "check_hwh", "write_manifest",
    "install", "check_install_dir", "pynq_dir", "build_bitstream", "summary_text", "OUTPUT_FILES",
    "default_jobs",
]
