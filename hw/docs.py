"""The generated parts of docs/numerics.md and docs/interface.md: numbers from their one source.

Every number those pages state - formats, widths, shifts, register addresses and fields, error
codes, stream layouts, latencies - is rendered here from `skip2lora.fixed.formats`, the register
map (`hw/regmap.py`), the wire format (`skip2lora.fixed.packing`) and the cycle model, into the
blocks between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``. ``skip2lora hw docs``
rewrites them; ``skip2lora hw docs --check`` (and tests/test_docs.py) fails when a page is stale.
The prose around the blocks names no number.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..fixed import cycles
from ..fixed import formats as F
from ..fixed.config import KV260
from ..fixed.optimizer import (ADAM_SHIFT, BETA1_SHIFT, BETA2_SHIFT, BIAS_FRAC, M_BITS, M_FRAC, STEP_SHIFT, V_BITS,
                               V_FRAC, Optimizer)
from ..fixed.order import KEY_SALT, ROUNDS
from ..fixed.packing import Layout
from .optimizer import DB_SHIFT, db_bits
from .regmap import ACCEL_ID, ERROR_DOCS, REGISTER_MAP, VERSION, ErrorCode
from .registers import Access

__all__ = ["BLOCKS", "render", "update_docs", "DocsStale"]


class DocsStale(RuntimeError):
    """A generated block of a documentation page differs from its source."""


def _table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def numerics_formats() -> str:
    y_shift = F.B_FRAC + F.U_FRAC - F.Y_FRAC
    gl_shift = F.P_FRAC + F.RN_FRAC - F.GL_FRAC
    u_shift = F.A_FRAC - F.U_FRAC
    t_shift = F.B_FRAC + F.GL_FRAC - F.T_FRAC
    acc = F.acc_bits(2048)
    rows = [
        ("cache code", "`q_kj`", "4-bit code", F.CODE_BITS, "unsigned 0..15 or signed -8..7 per tap"),
        ("tap value", f"`x_kj = q_kj * 2**e_k`", "", "", f"`e_k` in [{F.EXP_MIN}, {F.EXP_MAX}], per tap"),
        ("adapter A", "`A_k[r, j]`", f"Q{F.A_FRAC}", F.W_BITS, f"[-{2 ** (F.W_BITS - 1 - F.A_FRAC)}, "
                                                             f"{2 ** (F.W_BITS - 1 - F.A_FRAC)})"),
        ("adapter B", "`B_k[c, r]`", f"Q{F.B_FRAC}", F.W_BITS, f"[-{2 ** (F.W_BITS - 1 - F.B_FRAC)}, "
                                                             f"{2 ** (F.W_BITS - 1 - F.B_FRAC)})"),
        ("bottleneck", f"`u_k[r] = sat{F.U_BITS}(round(sum_j A_k[r,j] q_kj >> ({u_shift} - e_k)))`",
         f"Q{F.U_FRAC}", F.U_BITS, f"the sum is exact ({acc['u_acc']} bits for a 2048-wide tap)"),
        ("base logit", "`z_c`", f"Q{F.Z_FRAC}", F.Z_BITS, "cached per sample"),
        ("logit", f"`y_c = sat{F.Z_BITS}(z_c + round(sum_(k,r) B_k[c,r] u_k[r] >> {y_shift}))`",
         f"Q{F.Y_FRAC}", F.Z_BITS, ""),
        ("softmax", "see below", f"Q{F.P_FRAC}", F.P_FRAC + 2, "`p_c` in [0, 1]"),
        ("output gradient", "`g_c = p_c - [c = label]`", f"Q{F.P_FRAC}", F.P_FRAC + 2, "[-1, 1]"),
        ("batch-mean factor", f"`rn = round(2**{F.RN_FRAC} / nb)`", f"Q{F.RN_FRAC}", F.RN_BITS,
         "nb = the batch's own size (a last, shorter batch too)"),
        ("scaled gradient", f"`gl_c = round(g_c * rn >> {gl_shift})`", f"Q{F.GL_FRAC}", acc["gl"], "g / nb"),
        ("B gradient sum", "`dB_k[c, r] += gl_c u_k[r]`", f"Q{F.GL_FRAC + F.U_FRAC}", db_bits(),
         "over the batch, exact"),
        ("A row factor", f"`t_k[r] = sat{F.T_BITS}(round(sum_c B_k[c,r] gl_c >> ({t_shift} - e_k)))`",
         f"Q{F.T_FRAC}", F.T_BITS, "`= (B_k^T g)[r] * 2**e_k / nb`"),
        ("A gradient sum", "`dA_k[r, j] += t_k[r] q_kj`", f"Q{F.T_FRAC}", acc["da_acc"], "over the batch, exact"),
        ("optimizer input", f"`G = sat{F.GRAD_BITS}(dA)`, `G = sat{F.GRAD_BITS}(round(dB >> {DB_SHIFT}))`",
         f"Q{F.GRAD_FRAC}", F.GRAD_BITS, "the batch-mean gradient of a weight"),
        ("step size", "`alpha_t = M * 2**E`", f"Q{F.LR_FRAC}", F.LR_BITS,
         f"`M`: the top {F.ALPHA_MANT_BITS} bits of eta_t (`schedule.mantissa`)"),
        ("training loss", f"`l = sat{F.LOSS_BITS}(t_label + log2(sum_c e_c / 2**{F.P_FRAC}))`",
         f"Q{F.LOSS_FRAC} (bits)", F.LOSS_BITS, f"-log2 p(label), fraction from a {2 ** F.LOG2_LUT_BITS}-entry table"),
    ]
    return _table(("step", "formula", "format", "width", "notes"), rows)


def numerics_update() -> str:
    rows = [(o.name.lower().replace("_", "-"), o.value, {
        Optimizer.SGD: f"`w' = sat{F.W_BITS}(w - round(G * M >> ({STEP_SHIFT} - E)))`",
        Optimizer.ADAM_POW2: (
            f"`m' = sat{M_BITS}(m - round(m >> {BETA1_SHIFT}) + G)` (Q{M_FRAC}); "
            f"`v' = usat{V_BITS}(v - round(v >> {BETA2_SHIFT}) + G*G)` (Q{V_FRAC}); "
            f"`s = floor((n - {V_FRAC - 1}) / 2)`, n the leading one of `v' + 1`; "
            f"`w' = sat{F.W_BITS}(w - round(m' * M >> ({ADAM_SHIFT} - E + s)))`"),
    }[o]) for o in Optimizer]
    rate = ("Adam's rate: `alpha_t = round(eta_t * sqrt(1 - beta2**t) / (1 - beta1**t))` with "
            f"`beta1 = 1 - 2**-{BETA1_SHIFT}`, `beta2 = 1 - 2**-{BETA2_SHIFT}`, `beta**t` in Q{BIAS_FRAC} by "
            f"`p <- p - round(p >> k)` and the square root `floor(sqrt(c2 << {BIAS_FRAC}))` (c2 = `1 - beta2**t`); "
            "SGD's rate is `eta_t`. Either way `alpha_t = M * 2**E`, M its top "
            f"{F.ALPHA_MANT_BITS} bits.")
    return _table(("optimizer", "OPT.kind", "update of a weight w (A or B, Q14)"), rows) + "\n\n" + rate


def numerics_constants() -> str:
    rows = [
        ("`LOG2E`", F.LOG2E, f"log2(e) in Q{F.LOG2E_FRAC}"),
        ("`EXP2[i]`", f"round(2**{F.P_FRAC} * 2**(-i/{2 ** F.EXP2_LUT_BITS}))", f"{2 ** F.EXP2_LUT_BITS} entries"),
        ("`LOG2[i]`", f"round(2**{F.LOSS_FRAC} * log2(1 + (i + 1/2) / {2 ** F.LOG2_LUT_BITS}))",
         f"{2 ** F.LOG2_LUT_BITS} entries"),
        ("reciprocal", f"floor(2**{F.RECIP_SHIFT} / S)", f"{F.RECIP_SHIFT - F.P_FRAC + 1} quotient bits"),
        ("`BATCH_MAX`", F.BATCH_MAX, "largest mini-batch"),
        ("`EPOCHS_MAX`", F.EPOCHS_MAX, ""),
        ("`SAMPLES_MAX`", F.SAMPLES_MAX, ""),
        ("`STAT_EPOCHS`", F.STAT_EPOCHS, "epochs of statistics kept on chip"),
        ("Feistel rounds", ROUNDS, f"key generator: xorshift32 from `SEED ^ {KEY_SALT:#010x}`"),
    ]
    return _table(("constant", "value", "notes"), rows)


def numerics_kv260() -> str:
    lay = Layout(KV260.geometry, KV260.lanes)
    build = Layout(KV260.build_geometry, KV260.lanes)
    t = cycles.Timing.of(lay, KV260)
    rows = [
        ("the build's maxima (run-time geometry)", f"{KV260.taps_max} taps, {KV260.tap_lines_max} tap lines, "
                                                   f"{KV260.classes_max} classes, rank {KV260.geometry.rank}"),
        ("LeNet-5's lines per sample (taps + tail)", f"{lay.sample_lines} ({lay.tap_lines} + {lay.tail_lines})"),
        ("line width", f"{lay.beat_bits} bits ({KV260.lanes} codes)"),
        ("cache", f"{KV260.cache_depth} entries x {build.sample_lines} lines (the build's most)"),
        ("optimizer lanes, chunks per A line / per tap's B", f"{t.opt_lanes}, {t.a_chunks} / {t.b_chunks}"),
        ("samples per forward / backward pass", f"{cycles.PASS_SAMPLES} (two cache read ports, two head units)"),
        ("forward latency / head unit / softmax", f"{t.fwd} / {t.head} / {cycles.softmax_latency(KV260.classes_max)} cycles"),
        ("job start (scalar unit) / order per epoch (1024 samples)",
         f"{cycles.INIT_LATENCY} / {cycles.order_cycles(1024)} cycles"),
        ("a batch of 16 (its last op to the next's; an epoch's last, with the optimizer's tail)",
         f"{cycles.batch_cycles(t, 16)} / {cycles.batch_cycles(t, 16, last=True)} cycles"),
        ("the KV260 job (1024 x 10 epochs, batch 16, a new order every epoch)",
         f"{cycles.job_cycles(lay, 1024, 16, 10, shuffle=True, build=KV260):,} cycles"),
    ]
    return _table(("KV260 build", "value"), rows)


def _access(f) -> str:
    return {Access.RO: "RO", Access.RW: "RW", Access.W1P: "W1P (write 1: pulse)",
            Access.W1C: "W1C (write 1: clear)"}[f.access]


def interface_registers() -> str:
    rows = []
    for reg in REGISTER_MAP:
        for f in reg.fields:
            bits = f"[{f.offset + f.width - 1}:{f.offset}]" if f.width > 1 else f"[{f.offset}]"
            rows.append((f"`{reg.address:#04x}`", reg.name, f.name, bits, _access(f), f.reset,
                         f.doc.replace("|", "/")))
    return _table(("address", "register", "field", "bits", "access", "reset", "meaning"), rows)


def interface_errors() -> str:
    return _table(("code", "name", "set when"), [(int(e), e.name, ERROR_DOCS[e]) for e in ErrorCode])


def interface_identity() -> str:
    return (f"`ID` reads `{ACCEL_ID:#010x}`; `VERSION` reads major {VERSION[0]}, minor {VERSION[1]} "
            f"(a new major version changes the register map, the wire format or the job's meaning). "
            f"The register space spans {2 ** REGISTER_MAP.address_width} bytes "
            f"({REGISTER_MAP.address_width} address bits).")


def interface_kv260_stream() -> str:
    lay = Layout(KV260.geometry, KV260.lanes)
    build = Layout(KV260.build_geometry, KV260.lanes)
    g, gb = KV260.geometry, KV260.build_geometry
    rows = [
        ("beat (TDATA)", f"{lay.beat_bits} bits = {lay.beat_bytes} bytes"),
        ("cache entry (ENTRY_LINES)", f"{build.sample_lines} beats: the job's entry, then zero beats"),
        ("LeNet-5's entry", f"{lay.sample_lines} beats: taps {', '.join(map(str, lay.lines_per_tap))} beats "
                            f"(dims {', '.join(map(str, g.dims))}), then {lay.tail_lines} tail beats"),
        ("tail", "the job's CLASSES logits (16 bits each) then the label (16 bits), zeros after"),
        ("adapter image", f"{build.adapter_beats} beats: {build.a_beats} of A ({build.tap_lines} lines x "
                          f"{4 * gb.rank} beats: the job's tap lines, then zeros), {build.b_beats} of B "
                          f"({gb.taps} taps x {gb.classes} classes x {gb.rank} ranks: the job's, zeros elsewhere)"),
        ("cache bytes for 1024 samples", f"{build.cache_bytes(1024):,}"),
    ]
    return _table(("KV260 build", "value"), rows)


BLOCKS = {
    "docs/numerics.md": {"formats": numerics_formats, "update": numerics_update, "constants": numerics_constants,
                         "kv260": numerics_kv260},
    "docs/interface.md": {"identity": interface_identity, "registers": interface_registers,
                          "errors": interface_errors, "kv260-stream": interface_kv260_stream},
}

_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def render(text: str, blocks: dict) -> str:
    """``text`` with every generated block re-rendered (each named block must exist once)."""
    seen = set()

    def fill(m):
        name = m.group("name")
        if name not in blocks:
            raise KeyError(f"unknown generated block {name!r}")
        seen.add(name)
        return m.group(1) + blocks[name]() + "\n" + m.group(4)

    out = _BLOCK.sub(fill, text)
    missing = set(blocks) - seen
    if missing:
        raise KeyError(f"generated blocks missing from the page: {', '.join(sorted(missing))}")
    return out


def update_docs(root, *, check: bool = False) -> list[str]:
    """Re-render the generated blocks of every page under ``root`` (the repository); with
    ``check``, raise `DocsStale` naming the stale pages instead of writing. Returns the pages
    written (or found stale)."""
    changed = []
    for rel, blocks in BLOCKS.items():
        path = Path(root) / rel
        text = path.read_text()
        new = render(text, blocks)
        if new != text:
            changed.append(rel)
            if not check:
                path.write_text(new)
    if check and changed:
        raise DocsStale(f"stale generated documentation: {', '.join(changed)} (run `skip2lora hw docs`)")
    return changed
