"""Text tables and plots of results (matplotlib is imported only when a plot is asked for)."""

from __future__ import annotations

__all__ = ["finetune_text", "compare_text", "bench_text", "plot_curves"]


def _pct(v):
    return "   n/a" if v is None else f"{100 * v:5.2f}%"


def _secs(v):
    if v is None:
        return "n/a"
    return f"{v * 1e3:.2f} ms" if v < 1 else f"{v:.2f} s"


def finetune_text(r: dict) -> str:
    if r.get("diverged"):
        return f"{r['method']} on {r['dataset']} ({r['backend']}): DIVERGED - {r.get('error')}"
    recipe = ", ".join(str(r[k]) for k in ("order", "schedule", "optimizer") if r.get(k))
    lines = [
        f"{r['method']} on {r['dataset']} ({r['backend']} backend{', ' + r['config'] + ' build' if r.get('config') else ''}): "
        f"{r['samples']} samples, {r['epochs']} epochs, batch {r['batch']}, lr {r['lr']:g}, seed {r['seed']}"
        + (f"\n  recipe: {recipe}" if recipe else "")
        + (f"\n  base model: {r['model']}" if r.get("model") else "")
        + (f"\n  settings: {r['hparams']['source']}" + (f" (given: {', '.join(r['hparams']['given'])})"
                                                          if r["hparams"].get("given") else "")
           if r.get("hparams") else ""),
        f"  accuracy before fine-tuning  {_pct(r.get('accuracy_before'))}",
        f"  accuracy after fine-tuning   {_pct(r.get('accuracy'))}",
        f"  fine-tuning wall time        {_secs(r.get('ft_seconds'))}",
    ]
    if r.get("epoch_seconds") is not None:
        lines.append(f"  mean epoch after the first   {_secs(r['epoch_seconds'])}")
    if r.get("cycles") is not None:
        where = "KV260 build" if r.get("kv260_build", True) else f"{r.get('config')} build (not the KV260's)"
        lines.append(f"  accelerator cycles           {r['cycles']:,}")
        ddr = (f"; cache in DDR, its memory {r['ddr_model']}" if r.get("cache") == "ddr" and r.get("ddr_model")
               else "")
        lines.append(f"  projected time, {where}  {r['projected_ms']:.3f} ms "
                     f"(projection: cycles / {r['clock_mhz']:g} MHz assumed clock{ddr})")
        if r.get("fill_cycles") is not None:
            lines.append(f"  cache fill on the PL         {r['fill_cycles']:,} cycles (FILL_CYCLES: "
                         f"{r['samples']} images through the integer base)")
            lines.append(f"  projected end to end         {r['end_to_end_ms']:.3f} ms "
                         f"(fill + training: {r['end_to_end_cycles']:,} cycles / {r['clock_mhz']:g} MHz assumed clock)")
    p = r.get("predict")
    if p and p.get("predict_cycles"):
        check = (f"; the host's {p['checked_against_host']} equal, the test set's accuracy from the host"
                 if p.get("checked_against_host") else "")
        lines.append(f"  predictions on the PL        {p['images']} images in {p['predict_cycles']:,} cycles, "
                     f"{p['images_per_s']:,.0f} images/s (PREDICT_CYCLES / {r['clock_mhz']:g} MHz assumed clock{check})")
    if r.get("wall_seconds") is not None:
        lines.append(f"  wall time (this machine)     {_secs(r['wall_seconds'])}")
    if r.get("train_accuracy_per_epoch"):
        lines.append("  training accuracy per epoch  " + " ".join(f"{100 * a:.1f}" for a in r["train_accuracy_per_epoch"])
                     + " %")
    if r.get("adapters_file"):
        lines.append(f"  adapters saved to            {r['adapters_file']}")
    return "\n".join(lines)


def compare_text(out: dict) -> str:
    head = (f"{'method':<17} {'before':>7} {'after':>7} {'± std':>6} {'FT time':>10} {'epoch':>10} "
            f"{'fwd/batch':>10} {'bwd/batch':>10} {'upd/batch':>10}")
    lines = [f"{out['dataset']}: mean over {out['seeds']} seed(s), {out.get('order', 'shuffle')} sample order, "
             f"{out.get('schedule', 'warmup-linear')} learning rate ({out['machine']}, {out['date']})", head,
             "-" * len(head)]
    for r in out["results"]:
        if r["accuracy"] is None:
            lines.append(f"{r['method']:<17} DIVERGED: {'; '.join(r['errors'])}")
            continue
        t = r["time_per_batch"]
        runs = r.get("seeds", out["seeds"]) - r.get("diverged", 0)
        std = f"{100 * r['accuracy_std']:5.2f}" if runs > 1 else "  n/a"  # one run has no spread
        lines.append(f"{r['method']:<17} {_pct(r['accuracy_before']):>7} {_pct(r['accuracy']):>7} "
                     f"{std}  {_secs(r['ft_seconds']):>10} {_secs(r['epoch_seconds']):>10} "
                     f"{_secs(t['forward']):>10} {_secs(t['backward']):>10} {_secs(t['update']):>10}")
    for m, s in out.get("speedup_vs_lora_all", {}).items():
        epoch = f"{s['epoch']:.1f}x" if s["epoch"] else "n/a"
        lines.append(f"{m} vs lora-all: whole job {s['job']:.1f}x faster, each epoch after the first {epoch}")
    return "\n".join(lines)


def bench_text(r) -> str:
    """The `skip2lora bench` report as text."""
    a = r["anchors_ms"]
    lines = [
        f"KV260 job ({r['samples']} samples, {r['epochs']} epochs, batch {r['batch']}) on the {r['config']} build "
        f"({r['date']}, {r['machine']}):",
        f"  accelerator cycles                {r['cycles']:,} (cycle model"
        + (f"; RTL simulation: {r['rtl_cycles']:,}" if r.get("rtl_cycles") else "") + f"; target <= {r['target_cycles']:,})",
        f"  projected time                    {r['projected_ms']:.3f} ms  [{r['projection']}]",
        f"  MAC-lane utilization              {100 * r['utilization']:.1f} % of {r['multipliers']} multipliers "
        f"({r['lanes']} lanes x rank)",
        f"  InstantFT on the KV260            {a['instantft_kv260_ms']:.0f} ms  ({r['speedup_vs_instantft']:.0f}x)",
        f"  RPi Zero 2W Quant Skip2-LoRA      {a['rpi_zero2w_quant_skip2lora_ms']:.0f} ms  ({r['speedup_vs_rpi']:.0f}x)",
        f"  physical limit                    ~{a['design_physical_limit_ms']:.1f} ms (DESIGN.md, 3.2e8 MACs / "
        f"1248 DSP at 300 MHz); {a['physical_limit_ms']:.2f} ms for this datapath's {r['macs'] / 1e6:.0f} M MACs",
    ]
    if r.get("pl_fill"):
        f = r["pl_fill"]
        lines.append(f"  end to end, the cache filled on the PL: {f['fill_cycles']:,} fill + {f['cycles']:,} training "
                     f"= {f['end_to_end_cycles']:,} cycles, {f['end_to_end_ms']:.2f} ms  [{f['label']}]; the fill "
                     f"{f['fill_images_per_s']:,.0f} images/s in {f['fill_dsps']} DSPs")
        if f.get("predict_cycles"):
            lines.append(f"  predictions on the PL: {f['predict_images']:,} images in {f['predict_cycles']:,} cycles, "
                         f"{f['predict_ms']:.2f} ms, {f['predict_images_per_s']:,.0f} images/s  [{f['label']}]")
        if f.get("host_fill"):
            h = f["host_fill"]
            lines.append(f"  the host fill instead (this CPU)  {h['seconds']:.2f} s for the images' float base forward"
                         + (f", accuracy {100 * h['accuracy']:.2f} %" if h.get("accuracy") is not None else ""))
    for d in r.get("ddr_jobs", []):
        lines.append(f"  from the DDR cache, {d['samples']:>6,} samples {d['cycles']:>12,} cycles, {d['projected_ms']:.2f} ms "
                     f"[cycles / {r['clock_mhz']:g} MHz; DDR {r['ddr_model']}]")
    if r.get("rtl"):
        lines.append(f"  RTL simulation of the job         {r['sim_wall_seconds']:.1f} s wall, "
                     f"accuracy {100 * r['rtl']['accuracy']:.2f} %")
    if r.get("cpu"):
        lines.append("CPU (NumPy, one BLAS thread):")
        lines += ["  " + line for line in compare_text(r["cpu"]).splitlines()]
    if r.get("torch"):
        t = r["torch"]
        lines.append(f"  PyTorch {t['torch']} LoRA-All: {t['ft_seconds']:.2f} s, accuracy {100 * t['accuracy']:.2f} % "
                     f"-> Skip2-LoRA is {r['cpu_speedup_vs_torch']:.1f}x faster")
    if r.get("resources"):
        res = r["resources"]
        lines.append("Resources (" + res["tool"] + "):")
        lines.append("  " + ", ".join(f"{k.upper()} {res[k]:,}/{res['budget'][k]:,} ({res['percent'][k]:.1f} %)"
                                      for k in ("lut", "ff", "dsp", "bram36", "uram")))
    return "\n".join(lines)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", ":", "-.")
CLOSE = 0.01  # curves closer than this fraction of the y axis's span, at every epoch, would hide each other


def plot_curves(curves: dict, path, title: str = "", ylabel: str = "test accuracy (%)") -> list:
    """Accuracy per epoch per method (mean over seeds) saved to ``path``.

    Every method gets its own marker. A curve within CLOSE of the plot's height of an earlier one
    at every epoch (1 %: 0.6 pp on a 60 pp axis) is
    drawn over it dashed (then dotted, ...) with larger open markers and labelled "= <method>"
    (identical) or "≈ <method>" (with the largest difference), so that neither hides the other.
    The legend sits beside the axes, never over the curves; epochs are whole numbers. Returns the
    legend's labels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from exc
    import numpy as np

    means = {}
    for method, runs in curves.items():
        runs = [r for r in (runs or []) if r]
        if runs:
            means[method] = 100 * np.mean(np.array(runs, dtype=float), axis=0)
    if not means:
        raise ValueError("no accuracy curves to plot")
    fig, ax = plt.subplots(figsize=(9, 4.8))
    values = np.concatenate(list(means.values()))
    close_pp = CLOSE * max(float(values.max() - values.min()), 1.0)
    drawn = []  # (method, curve, how many curves it is drawn over)
    for i, (method, acc) in enumerate(means.items()):
        epochs = np.arange(1, len(acc) + 1)
        marker = MARKERS[i % len(MARKERS)]
        close = [(m, float(np.max(np.abs(a - acc)))) for m, a, _ in drawn if a.shape == acc.shape
                 and np.max(np.abs(a - acc)) <= close_pp]
        if not close:
            ax.plot(epochs, acc, marker=marker, ms=5, lw=1.6, label=method)
            drawn.append((method, acc, 0))
            continue
        under = 1 + max(n for m, _, n in drawn if m in dict(close))
        first, diff = close[0]
        note = f"= {first}" if diff < 1e-9 else f"\N{ALMOST EQUAL TO} {first}, within {diff:.2g} pp"
        ax.plot(epochs, acc, marker=marker, ms=5 + 3 * under, lw=1.4, ls=LINESTYLES[under % len(LINESTYLES)],
                mfc="none", mew=1.3, label=f"{method} ({note})")
        drawn.append((method, acc, under))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    legend = ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [t.get_text() for t in legend.get_texts()]
