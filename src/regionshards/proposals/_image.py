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


_SKIMAGE_INTEGERS = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")
_SKIMAGE_FLOATS = ("float16", "float32", "float64")


def skimage_channels(image: np.ndarray, channel_axis: int | None = -1) -> np.ndarray:
    """The (H, W, C) image ``skimage.segmentation.felzenszwalb`` segments, before its ``img_as_float64``.

    2-D arrays are one channel (``channel_axis`` None or naming the last axis); 3-D arrays have their
    channels at ``channel_axis`` (moved last). Raises ``ValueError`` naming the input for anything skimage
    would refuse or that is not supported here: other dimensions, a 3-D array with ``channel_axis=None``,
    a 2-D array with ``channel_axis`` on its first axis (skimage would segment the transpose), empty
    images, more than 128 channels, dtypes other than bool, (u)int8–64 and float16–64, NaN or infinity.
    """
    a = np.asarray(image)
    if a.ndim == 2:
        if channel_axis is not None and channel_axis not in (-1, 1):
            raise ValueError(
                f"channel_axis={channel_axis} on a 2-D image: pass channel_axis=None or -1 for a grey image"
            )
        a = a[:, :, None]
    elif a.ndim == 3:
        if channel_axis is None:
            raise ValueError(f"image of shape {a.shape} has 3 dimensions but channel_axis=None")
        if not -3 <= channel_axis <= 2:
            raise ValueError(f"channel_axis={channel_axis} is out of range for an image of shape {a.shape}")
        a = np.moveaxis(a, channel_axis, -1)
    else:
        raise ValueError(f"image must be 2-D (H, W) or 3-D with a channel axis; got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0 or a.shape[2] == 0:
        raise ValueError(f"image is empty: shape {a.shape}")
    if a.shape[2] > 128:
        raise ValueError(f"image has {a.shape[2]} channels; at most 128 are supported")
    if a.dtype != np.bool_ and a.dtype.name not in _SKIMAGE_INTEGERS + _SKIMAGE_FLOATS:
        raise ValueError(
            f"unsupported image dtype {a.dtype}: use bool, (u)int8/16/32/64 or float16/32/64 (skimage's kinds)"
        )
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{a.dtype} image contains NaN or infinite values")
    return a


def skimage_float64(a: np.ndarray) -> np.ndarray:
    """``skimage.util.img_as_float64`` of an array ``skimage_channels`` accepted, as a C-contiguous copy.

    bool and floats: values as given; unsigned ints: ``x * (1 / max)``; signed ints: the same, clipped at
    -1 (the most negative value maps to -1).
    """
    if a.dtype == np.bool_ or a.dtype.kind == "f":
        return np.ascontiguousarray(a, dtype=np.float64)
    out = np.multiply(a, 1.0 / np.iinfo(a.dtype).max, dtype=np.float64)
    if a.dtype.kind == "i":
        np.maximum(out, -1.0, out=out)
    return np.ascontiguousarray(out)
