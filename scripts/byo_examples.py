"""Write the "bring your own model and data" examples of the README: a model file and a data file each.

    python scripts/byo_examples.py --out build/byo        # then, e.g.:
    skip2lora finetune --model build/byo/lenet.onnx --data build/byo/fmnist75.npz --backend float

* ``lenet.onnx`` + ``fmnist75.npz``: the project's own pretrained LeNet-5 exported to ONNX, and the
  built-in Fashion-MNIST rotated by 75 degrees as arrays (the fine-tuning pool as x_train, the first
  2000 validation images as x_val, the test images as x_test). Fine-tuning them must give the
  built-in job's figures (`skip2lora finetune --dataset fmnist-rot75`): the same model, data and
  default recipe, reached through the import path.
* ``mlp.onnx`` + ``shifted.npz``: a non-image case. A 256-96-96-3 MLP with batch norm built in
  PyTorch, trained briefly on synthetic source-domain data (three Gaussian classes), exported to
  ONNX; the data are the same classes after a domain shift (each feature scaled and offset, as a
  sensor re-calibration would do), 2000 training rows and 600 test rows.
* ``deep16.onnx`` + ``shifted16.npz``: a model of another shape than the built-in ones, for the one
  KV260 bitstream: a 256-192-160-128-96-64-16 MLP (six layers: six taps) over 16 Gaussian classes,
  trained on the source domain, the data shifted as above (4000 training rows, 1600 test rows).

Needs onnx (both) and torch (the MLP). Deterministic: fixed seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def lenet_example(out: Path, data_dir=None) -> None:
    from skip2lora.data import load_dataset
    from skip2lora.nn.onnx_export import to_onnx
    from skip2lora.nn.pretrained import load_base

    ds = load_dataset("fmnist-rot75", data_dir)
    net, _ = load_base("fmnist-rot75", data_dir)
    to_onnx(net, out / "lenet.onnx")
    np.savez(out / "fmnist75.npz", x_train=ds.finetune.x, y_train=ds.finetune.y,
             x_val=ds.validation.x[:2000], y_val=ds.validation.y[:2000], x_test=ds.test.x, y_test=ds.test.y)


def shifted_gaussians(n: int, rng, means, scale=None, offset=None):
    """``n`` samples of Gaussian classes (one a row of ``means``); the target domain scales and offsets every feature."""
    y = rng.integers(0, len(means), n)
    x = means[y] + rng.normal(0, 1.0, (n, means.shape[1]))
    if scale is not None:
        x = x * scale + offset
    return x.astype(np.float32), y.astype(np.int64)


def mlp_example(out: Path, *, seed: int = 0, epochs: int = 5, widths=(256, 96, 96), classes: int = 3,
                spread: float = 0.15, rows=(3000, 2000, 600), names=("mlp.onnx", "shifted.npz")) -> dict:
    """An MLP ``widths`` -> ``classes`` (batch norm after every hidden layer), trained on the source
    domain and exported to ONNX, and the shifted target-domain data as an .npz."""
    import torch

    rng = np.random.default_rng(seed)
    features = widths[0]
    means = rng.normal(0, spread, (classes, features))  # overlapping classes
    xs, ys = shifted_gaussians(rows[0], rng, means)
    scale, offset = rng.uniform(0.3, 1.7, features), rng.normal(0, 1.5, features)
    x_train, y_train = shifted_gaussians(rows[1], rng, means, scale, offset)
    x_test, y_test = shifted_gaussians(rows[2], rng, means, scale, offset)

    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.BatchNorm1d(b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(xs), torch.from_numpy(ys)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        source = float((model(xt).argmax(1) == yt).float().mean())
        target = float((model(torch.from_numpy(x_test)).argmax(1) == torch.from_numpy(y_test)).float().mean())
    torch.onnx.export(model, (torch.zeros(1, features),), str(out / names[0]), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}})
    np.savez(out / names[1], x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return {"source_accuracy": source, "target_accuracy_before": target}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the files (created)")
    p.add_argument("--data-dir", help="data root of the built-in data sets (default: $SKIP2LORA_DATA)")
    p.add_argument("--only", choices=("lenet", "mlp", "deep16"), help="write one example")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "lenet"):
        lenet_example(out, args.data_dir)
        print(f"wrote {out / 'lenet.onnx'} and {out / 'fmnist75.npz'}", file=sys.stderr)
    if args.only in (None, "mlp"):
        figures = mlp_example(out)
        print(f"wrote {out / 'mlp.onnx'} and {out / 'shifted.npz'}: the MLP's accuracy on its source domain "
              f"{100 * figures['source_accuracy']:.1f} %, on the shifted test data "
              f"{100 * figures['target_accuracy_before']:.1f} %", file=sys.stderr)
    if args.only in (None, "deep16"):
        figures = deep16_example(out)
        print(f"wrote {out / 'deep16.onnx'} and {out / 'shifted16.npz'}: the model's accuracy on its source domain "
              f"{100 * figures['source_accuracy']:.1f} %, on the shifted test data "
              f"{100 * figures['target_accuracy_before']:.1f} %", file=sys.stderr)
    return 0


def deep16_example(out: Path) -> dict:
    """Six taps, 16 classes: a shape none of the built-in models has (the KV260 bitstream runs it)."""
    return mlp_example(out, seed=1, epochs=8, widths=(256, 192, 160, 128, 96, 64), classes=16, spread=0.25,
                       rows=(8000, 4000, 1600), names=("deep16.onnx", "shifted16.npz"))


if __name__ == "__main__":
    sys.exit(main())
