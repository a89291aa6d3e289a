"""Optimizers of the float reference: each updates parameter arrays in place from their gradients.

The accelerator implements the chosen one in fixed point, so every rule below is the exact
arithmetic per element at step t = 1, 2, ... with the rate ``lr`` the schedule set for that step
(``opt.lr = ...`` before ``opt.step``). ``g`` is the batch's *mean* gradient (the last, shorter
batch is divided by its own sample count). State arrays start at 0 and have the parameter's dtype.

* ``sgd``: p -= lr g.
* ``momentum`` (heavy ball, beta 0.9; PyTorch's convention): b = beta b + g; p -= lr b.
  ``nesterov``: the same b, then p -= lr (g + beta b). (The moving-average form b' = beta b' +
  (1-beta) g, which keeps b' in the gradient's range, is the same optimizer at rate lr/(1-beta).)
* ``adam`` (b1 0.9, b2 0.999, eps 1e-8): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
  p -= a_t m / (sqrt(v) + e_t). The bias correction is folded into the per-step rate,
  a_t = lr sqrt(1 - b2^t) / (1 - b1^t), and e_t = eps sqrt(1 - b2^t): algebraically Kingma and Ba's
  m_hat / (sqrt(v_hat) + eps) with m_hat = m/(1-b1^t), v_hat = v/(1-b2^t), so the moments are
  stored uncorrected and the correction costs nothing per element (tests check it against the
  textbook formula and torch.optim.Adam). ``bias_correction=0``: a_t = lr, e_t = eps. The moving
  averages are computed as m += (1-b1)(g - m), v += (1-b2)(g^2 - v); with b = 1 - 2**-k that is
  ``x += (y - x) >> k`` in fixed point (write b1=1-2^-3: the value parser takes that form).
* ``adam-pow2``: Adam whose 1/(sqrt(v) + e_t) is replaced by P(v + e_t^2), the power of two
  nearest to 1/sqrt(v + e_t^2) in the log domain: P(x) = 2**-floor(log2(x)/2 + 1/2). In integers,
  with n = floor(log2 x) the position of x's leading one, P(x) = 2**-floor((n + 1)/2): a
  leading-zero count and a shift. The rate a_t and e_t are Adam's (bias correction folded into
  the rate); ``fold=0`` applies v's correction before rounding instead, P(v/(1-b2^t) + eps^2) with
  a_t = lr/(1-b1^t) (not the same: the rounding does not commute with the factor).
  ``adam-pow2h`` (half octaves): P(x) = 2**(-j/2), j = floor(log2 x + 1/2) = n + [x >= sqrt(2) 2**n]
  (one more comparison, and a multiply by 1/sqrt(2) when j is odd).
* ``lion`` (b1 0.9, b2 0.99, weight_decay 0; Chen et al. 2023): c = b1 m + (1-b1) g;
  p -= lr (sign(c) + weight_decay p) with sign(0) = 0; then m = b2 m + (1-b2) g. No second moment
  and no bias correction: without weight decay the update is +-lr or 0 per element.
* ``adam-factored``: Adam whose v is factored as in Adafactor (Shazeer and Stern 2018), for every
  2-D parameter (rows x cols, e.g. A_k: R x d_k): row means r = b2 r + (1-b2) mean_cols(g^2),
  column means c = b2 c + (1-b2) mean_rows(g^2), v_ij = r_i c_j / mean(r); the rest as ``adam``
  (m full, bias correction in the rate). State rows + cols per matrix instead of rows x cols;
  1-D parameters keep a full v.

A spec names one and optionally overrides hyper-parameters: ``adam``, ``adam:b2=0.99,eps=1e-6``,
``adam:b1=1-2^-3,b2=1-2^-10``, ``lion:weight_decay=0.01``. `make` turns a spec into an optimizer.
The update arithmetic runs in the parameter's dtype with preallocated scratch arrays: a step on
one array is a fixed handful of ufunc calls (Skip2-LoRA's adapters are one flat array).
"""

from __future__ import annotations

import math
import re

import numpy as np

__all__ = ["OPTIMIZERS", "Optimizer", "SGD", "Momentum", "Nesterov", "Adam", "AdamPow2", "AdamPow2Half", "Lion",
           "AdamFactored", "make", "parse_spec", "pow2_rsqrt", "pow2h_rsqrt"]


class Optimizer:
    """In-place update of parameters from gradients; per-parameter state keyed like the parameters.

    ``step(params, grads)`` takes two dicts (the keys of ``grads`` are updated) or two sequences of
    the same length; every call is one step (t += 1) at the current ``lr``. ``elementwise``
    optimizers give the same result on one flat array as on its pieces.
    """

    name = ""
    elementwise = True
    defaults: dict = {}

    def __init__(self, lr: float = 0.0, **hyper):
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise ValueError(f"optimizer {self.name} has no hyper-parameter {', '.join(sorted(unknown))} "
                             f"(it has: {', '.join(self.defaults) or 'none'})")
        self.hyper = {**self.defaults, **{k: float(v) for k, v in hyper.items()}}
        for k, v in self.hyper.items():
            if not math.isfinite(v):
                raise ValueError(f"optimizer {self.name}: {k} must be finite, not {v}")
        self._check()
        self.lr = float(lr)
        self.t = 0
        self.state: dict = {}

    def _check(self) -> None:
        for k in ("b1", "b2", "beta"):
            if k in self.hyper and not 0 <= self.hyper[k] < 1:
                raise ValueError(f"optimizer {self.name}: {k} must lie in [0, 1), not {self.hyper[k]:g}")
        if self.hyper.get("eps", 1.0) <= 0:
            raise ValueError(f"optimizer {self.name}: eps must be positive, not {self.hyper['eps']:g}")

    @property
    def spec(self) -> str:
        """The spec that rebuilds this optimizer (hyper-parameters that differ from the defaults)."""
        changed = [f"{k}={_format(v)}" for k, v in self.hyper.items() if v != self.defaults[k]]
        return self.name + (":" + ",".join(changed) if changed else "")

    def reset(self) -> None:
        self.t, self.state = 0, {}

    def step(self, params, grads) -> None:
        self.t += 1
        coef = self._coefficients()  # Python floats: NumPy computes in the arrays' dtype
        state = self.state
        for key in (grads.keys() if isinstance(grads, dict) else range(len(grads))):
            p = params[key]
            st = state.get(key)
            if st is None:
                st = state[key] = self._new_state(p)
            self._update(p, grads[key], st, coef)

    # -- per optimizer ------------------------------------------------------------------------
    def _coefficients(self) -> dict:
        return {"lr": self.lr}

    def _new_state(self, p) -> dict:
        return {"tmp": np.empty_like(p)}

    def _update(self, p, g, st, c) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    name = "sgd"

    def _update(self, p, g, st, c):
        tmp = st["tmp"]
        np.multiply(g, c["lr"], out=tmp)
        np.subtract(p, tmp, out=p)


class Momentum(Optimizer):
    name = "momentum"
    defaults = {"beta": 0.9}
    nesterov = False

    def _new_state(self, p):
        return {"b": np.zeros_like(p), "tmp": np.empty_like(p)}

    def _coefficients(self):
        return {"lr": self.lr, "beta": self.hyper["beta"]}

    def _update(self, p, g, st, c):
        b, tmp = st["b"], st["tmp"]
        np.multiply(b, c["beta"], out=b)
        np.add(b, g, out=b)
        if self.nesterov:
            np.multiply(b, c["beta"], out=tmp)
            np.add(tmp, g, out=tmp)
            np.multiply(tmp, c["lr"], out=tmp)
        else:
            np.multiply(b, c["lr"], out=tmp)
        np.subtract(p, tmp, out=p)


class Nesterov(Momentum):
    name = "nesterov"
    nesterov = True


class Adam(Optimizer):
    name = "adam"
    defaults = {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "bias_correction": 1.0}

    def _new_state(self, p):
        return {"m": np.zeros_like(p), "v": np.zeros_like(p), "tmp": np.empty_like(p)}

    def _coefficients(self):
        h = self.hyper
        c1 = 1 - h["b1"] ** self.t if h["bias_correction"] else 1.0
        c2 = 1 - h["b2"] ** self.t if h["bias_correction"] else 1.0
        return {"rate": self.lr * math.sqrt(c2) / c1, "eps": h["eps"] * math.sqrt(c2),
                "k1": 1 - h["b1"], "k2": 1 - h["b2"], "c2": c2, "c1": c1}

    def _moments(self, g, st, c):
        """m += (1-b1)(g - m), v += (1-b2)(g^2 - v): the moving averages, one product each."""
        m, v, tmp = st["m"], st["v"], st["tmp"]
        np.subtract(g, m, out=tmp)
        np.multiply(tmp, c["k1"], out=tmp)
        np.add(m, tmp, out=m)
        if v is not None:
            np.square(g, out=tmp)
            np.subtract(tmp, v, out=tmp)
            np.multiply(tmp, c["k2"], out=tmp)
            np.add(v, tmp, out=v)

    def _update(self, p, g, st, c):
        self._moments(g, st, c)
        tmp = st["tmp"]
        np.sqrt(st["v"], out=tmp)
        np.add(tmp, c["eps"], out=tmp)
        np.divide(st["m"], tmp, out=tmp)
        np.multiply(tmp, c["rate"], out=tmp)
        np.subtract(p, tmp, out=p)


def pow2_rsqrt(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """2**-floor(log2(x)/2 + 1/2) for positive normal float32/float64 x, exactly, from x's exponent
    field E = n + bias (x = 1.f 2**n): the result's exponent field is floor((3 bias - E)/2), so it
    takes four integer operations in place (``out`` may be ``x``)."""
    x = np.asarray(x)
    itype, mbits, bias = _float_layout(x.dtype)
    if out is None:
        out = np.empty_like(x)
    if out is not x:
        np.copyto(out, x)
    bits = out.view(itype)
    np.right_shift(bits, mbits, out=bits)  # E
    np.subtract(3 * bias, bits, out=bits)
    np.right_shift(bits, 1, out=bits)
    np.left_shift(bits, mbits, out=bits)
    return out


def pow2h_rsqrt(x: np.ndarray) -> np.ndarray:
    """2**(-j/2), j = floor(log2 x + 1/2), for positive normal x: the half-octave approximation of
    1/sqrt(x). j = n + [1.f >= sqrt(2)] with x = 1.f 2**n; 2**(-j/2) = 2**-floor(j/2), times the
    format's 1/sqrt(2) when j is odd."""
    x = np.asarray(x)
    itype, mbits, bias = _float_layout(x.dtype)
    bits = x.view(itype)
    n = (bits >> mbits) - bias
    mantissa = ((bits & ((1 << mbits) - 1)) | (bias << mbits)).view(x.dtype)  # 1.f, exact
    j = n + (mantissa.astype(np.float64) >= math.sqrt(2))  # float64 sqrt(2): exact for float32 and float64 1.f
    scale = np.where(j & 1, x.dtype.type(math.sqrt(0.5)), x.dtype.type(1))
    return np.ldexp(scale, -(j >> 1)).astype(x.dtype, copy=False)


def _float_layout(dtype):
    if dtype == np.float32:
        return np.int32, 23, 127
    if dtype == np.float64:
        return np.int64, 52, 1023
    raise TypeError(f"power-of-two rounding needs float32 or float64, not {dtype}")


class AdamPow2(Adam):
    name = "adam-pow2"
    defaults = {**Adam.defaults, "fold": 1.0}
    half_octave = False

    def _coefficients(self):
        c = super()._coefficients()
        if not self.hyper["fold"]:  # P(v / c2 + eps^2): the rate keeps only m's correction
            c.update(rate=self.lr / c["c1"], eps=self.hyper["eps"], inv_c2=1 / c["c2"])
        return c

    def _update(self, p, g, st, c):
        self._moments(g, st, c)
        tmp = st["tmp"]
        if "inv_c2" in c:
            np.multiply(st["v"], c["inv_c2"], out=tmp)
            np.add(tmp, c["eps"] * c["eps"], out=tmp)
        else:
            np.add(st["v"], c["eps"] * c["eps"], out=tmp)
        if self.half_octave:
            np.copyto(tmp, pow2h_rsqrt(tmp))
        else:
            pow2_rsqrt(tmp, out=tmp)
        np.multiply(tmp, st["m"], out=tmp)
        np.multiply(tmp, c["rate"], out=tmp)
        np.subtract(p, tmp, out=p)


class AdamPow2Half(AdamPow2):
    name = "adam-pow2h"
    half_octave = True


class Lion(Optimizer):
    name = "lion"
    defaults = {"b1": 0.9, "b2": 0.99, "weight_decay": 0.0}

    def _new_state(self, p):
        return {"m": np.zeros_like(p), "tmp": np.empty_like(p)}

    def _coefficients(self):
        h = self.hyper
        return {"lr": self.lr, "k1": 1 - h["b1"], "k2": 1 - h["b2"], "decay": 1 - self.lr * h["weight_decay"]}

    def _update(self, p, g, st, c):
        m, tmp = st["m"], st["tmp"]
        np.subtract(g, m, out=tmp)  # c = m + (1-b1)(g - m)
        np.multiply(tmp, c["k1"], out=tmp)
        np.add(tmp, m, out=tmp)
        np.sign(tmp, out=tmp)
        np.multiply(tmp, c["lr"], out=tmp)
        if self.hyper["weight_decay"]:
            np.multiply(p, c["decay"], out=p)
        np.subtract(p, tmp, out=p)
        np.subtract(g, m, out=tmp)  # m += (1-b2)(g - m)
        np.multiply(tmp, c["k2"], out=tmp)
        np.add(m, tmp, out=m)


class AdamFactored(Adam):
    name = "adam-factored"
    elementwise = False

    def _new_state(self, p):
        st = {"m": np.zeros_like(p), "tmp": np.empty_like(p), "v": None}
        if p.ndim == 2:
            st.update(r=np.zeros(p.shape[0], p.dtype), c=np.zeros(p.shape[1], p.dtype))
        else:
            st["v"] = np.zeros_like(p)
        return st

    def _update(self, p, g, st, c):
        self._moments(g, st, c)
        tmp = st["tmp"]
        if st["v"] is None:
            np.square(g, out=tmp)
            r, col = st["r"], st["c"]
            r += c["k2"] * (tmp.mean(axis=1) - r)
            col += c["k2"] * (tmp.mean(axis=0) - col)
            mean_r = r.mean()
            np.multiply(r[:, None], col[None, :], out=tmp)
            if mean_r > 0:
                tmp /= mean_r
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(st["v"], out=tmp)
        np.add(tmp, c["eps"], out=tmp)
        np.divide(st["m"], tmp, out=tmp)
        np.multiply(tmp, c["rate"], out=tmp)
        np.subtract(p, tmp, out=p)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Nesterov, Adam, AdamPow2, AdamPow2Half, Lion, AdamFactored)}

_POW = re.compile(r"^(1-)?2\^(-?\d+)$")


def _format(v: float) -> str:
    """A hyper-parameter as a spec writes it: 1-2^-k and 2^k exactly where the value is one of them."""
    for k in range(2, 31):
        if v == 1 - 2.0 ** -k:
            return f"1-2^-{k}"
    m, e = math.frexp(v)
    if m == 0.5 and abs(e) > 4:
        return f"2^{e - 1}"
    return f"{v:.10g}"


def _value(key: str, text: str) -> float:
    """A hyper-parameter value: a number, or 2^k / 1-2^k (exact in binary: the hardware's form)."""
    t = text.strip().replace(" ", "").replace("**", "^")
    m = _POW.match(t)
    if m:
        x = 2.0 ** int(m.group(2))
        return 1 - x if m.group(1) else x
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"optimizer hyper-parameter {key} needs a number (or 1-2^-k), not {text!r}") from None


def parse_spec(spec: str) -> tuple[str, dict]:
    """``name[:key=value,...]`` -> (name, hyper-parameters)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"optimizer must be a name such as {', '.join(OPTIMIZERS)}, not {spec!r}")
    name, _, rest = spec.strip().partition(":")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    hyper = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"optimizer setting {item!r} must read key=value (e.g. {name}:b2=0.99)")
        hyper[key.strip()] = _value(key.strip(), value)
    return name, hyper


def make(spec, lr: float = 0.0) -> Optimizer:
    """An optimizer from a spec string (see the module docstring), or a fresh copy of an optimizer."""
    if isinstance(spec, Optimizer):
        spec = spec.spec
    name, hyper = parse_spec(spec)
    return OPTIMIZERS[name](lr, **hyper)
