"""Conversion of the accepted input arrays to the one form the algorithms work on: (H, W, 3) uint8 RGB."""

from __future__ import annotations

import numpy as np


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a C-contiguous (H, W, 3) uint8 RGB array.

    Accepted inputs and their documented conversion:

    * (H, W, 3) uint8 RGB: returned as is (made contiguous).
    * (H, W) or (H, W, 1) grey: the grey value is copied to R, G and B (what ``PIL.Image.convert("RGB")``
      does), so a grey photo segments exactly as its RGB copy would.
    * (H, W, 4) RGBA: alpha is dropped (not composited): segments and proposals describe the stored colours.
    * uint16: ``round(x / 257)``, the exact inverse of the 8→16 bit expansion ``x * 257``.
    * float (any float dtype): values must lie in [0, 1] (skimage's convention); ``round(x * 255)``.
      NaN or values outside [0, 1] raise ``ValueError``.
    * bool: ``True`` → 255, ``False`` → 0.

    Anything else (other dtypes, other shapes, empty images) raises ``ValueError`` naming the problem.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image is empty: shape {a.shape}")
    a = _to_uint8(a)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype == np.uint16:
        # (x + 128) // 257 == round(x / 257) for every uint16, without float rounding doubts.
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError("float image contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"float image values must lie in [0, 1]; got range [{lo}, {hi}]")
        return np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {a.dtype}: use uint8, uint16, bool or float in [0, 1]")
