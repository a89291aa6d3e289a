"""Image rotation for the rotated Fashion-MNIST domain shift, in NumPy only (no scipy).

The rotation is a fixed linear map of the pixel grid, so the four bilinear source
indices and weights are computed once and applied to all images at once by gathers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rotate_images"]

_CHUNK = 256  # images per gather: small blocks stay in cache, which is what makes it fast


def _quarter_turn_cos_sin(degrees: float) -> tuple[float, float]:
    """cos/sin, exact for multiples of 90 degrees so quarter turns reproduce np.rot90."""
    exact = {0.0: (1.0, 0.0), 90.0: (0.0, 1.0), 180.0: (-1.0, 0.0), 270.0: (0.0, -1.0)}
    if degrees in exact:
        return exact[degrees]
    t = np.deg2rad(degrees)
    return float(np.cos(t)), float(np.sin(t))


def rotate_images(images: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate images by ``degrees`` counter-clockwise (as displayed, row 0 at the top; the
    same sense as ``scipy.ndimage.rotate`` and ``np.rot90``) about the image centre
    ((H-1)/2, (W-1)/2), keeping the shape.

    Interpolation: bilinear.  Each output pixel takes the inverse-rotated source position
    and mixes its four neighbouring pixels with bilinear weights; neighbours outside the
    source image count as 0 (zero padding), so corners rotated in from outside are black.

    ``images`` has shape (..., H, W) of any real dtype; the result has the same shape and
    dtype float32 (float64 input gives float64).  A multiple of 360 degrees returns an
    exact copy of the input, and quarter turns of square images are exactly ``np.rot90``.
    """
    a = np.asarray(images)
    if a.ndim < 2:
        raise ValueError(f"images must have shape (..., H, W), got {a.shape}")
    out_dtype = np.dtype(np.float64 if a.dtype == np.float64 else np.float32)
    deg = float(degrees) % 360.0
    if deg == 0.0:
        return a.astype(out_dtype, copy=True)
    h, w = a.shape[-2:]
    c, s = _quarter_turn_cos_sin(deg)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dr, dc = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    # Inverse map: the source of output (r, c) is (r, c) rotated clockwise about the centre.
    src_r = (dc * s + dr * c + cy).ravel()
    src_c = (dc * c - dr * s + cx).ravel()
    r0 = np.floor(src_r)
    c0 = np.floor(src_c)
    fr = src_r - r0
    fc = src_c - c0
    r0 = r0.astype(np.int64)
    c0 = c0.astype(np.int64)
    idx, wts = [], []  # never empty: the centre pixel always maps into the image
    for rr, cc, wt in ((r0, c0, (1 - fr) * (1 - fc)), (r0, c0 + 1, (1 - fr) * fc),
                       (r0 + 1, c0, fr * (1 - fc)), (r0 + 1, c0 + 1, fr * fc)):
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        wt = np.where(inside, wt, 0.0)
        if not wt.any():
            continue
        idx.append(np.where(inside, rr * w + cc, 0))
        wts.append(wt.astype(out_dtype))
    flat = a.reshape(-1, h * w)
    out = np.empty((flat.shape[0], h * w), dtype=out_dtype)
    buf = np.empty((_CHUNK, h * w), dtype=out_dtype)
    for start in range(0, flat.shape[0], _CHUNK):
        block = flat[start:start + _CHUNK]
        acc = out[start:start + _CHUNK]
        tmp = buf[:block.shape[0]]
        for k, (i, wt) in enumerate(zip(idx, wts)):
            dst = acc if k == 0 else tmp
            if block.dtype == out_dtype:
                np.take(block, i, axis=1, out=dst)
            else:
                dst[...] = block[:, i]
            dst *= wt
            if k:
                acc += tmp
    return out.reshape(a.shape)
