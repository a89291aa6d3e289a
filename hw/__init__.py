"""The Skip2-LoRA accelerator in Amaranth 0.5 (`skip2lora.hw`): what lives where.

The core and its frame
    core.py          the blocks wired together, commands, errors; top.py the Vivado-facing ports
    regmap.py        the register map (the one definition; registers.py its generic types),
                     axi_lite.py the AXI4-Lite register bank generated from it
    params.py        a build's derived sizes (HwParams); memories.py every memory (registered reads)
The training job
    sequencer.py     runs a job (epochs, mini-batches, phases) with no host involvement
    scalar_unit.py   per-job constants and each step's size (divider.py: the sequential divider)
    order_unit.py    each epoch's pseudo-random sample order (a Feistel network)
    datapath.py      the line pipeline: forward passes, the line-major backward pass (MAC array)
    head.py          per sample: logits, softmax.py (softmax, gradient, loss), t factors, B and dB
    optimizer.py     SGD / Adam updates of A lines and B rows, a chunk of lanes per cycle
    stream_in.py, stream_out.py   AXI4-Stream loads and the adapter read-back
    pipeline.py      register-per-level trees, delays, the leading-one detector
The integer base (cache fill, inference)
    forward_engine.py  one layer pass of fixed/base_int.py's IntLayer (conv or dense, lanes of
                     MACs, bias, round-half-up shift, saturation, 2x2 max-pool), bit-exact
Flows and reports
    export.py        Verilog export (cached), yosys resource estimates; timing_proxy.py logic depth
    vivado/          the Vivado batch flow (Tcl templates); system.py the KV260 system around the IP
    docs.py          the generated tables of docs/numerics.md and docs/interface.md
    build_paths.py   where builds go
"""
