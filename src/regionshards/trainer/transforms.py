"""Joint views of an image and its segment map: crop, flip and resize applied identically, then BYOL colour.

numpy/cv2 kernels on uint8 (one core each, no torch in the per-sample path):

* **Geometry.** A crop is drawn in the stored image's pixels exactly like torchvision's ``RandomResizedCrop``
  (area fraction, log-uniform aspect, 10 tries, then a centre crop). Both views' crops are drawn before the
  image is decoded, so a JPEG is decoded at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling) whenever *both* crops
  still have at least ``size`` pixels per side at that scale. The crop is then snapped to the decoded grid and
  the image resized with bicubic interpolation (OpenCV, not antialiased, like the reference TF pipelines'
  ``resize_bicubic``); the mask is sampled nearest at the same continuous positions: output pixel ``(u, v)``
  of a crop ``(x0, y0, w, h)`` of a grid at scale ``s`` looks at the stored-pixel position
  ``(s * (x0 + (u + 0.5) * w / size), s * (y0 + (v + 0.5) * h / size))``; the image interpolates around it and
  the mask takes the stored pixel that contains it. A flip mirrors both (bicubic resizing is symmetric, so
  flipping after resizing equals flipping before).
* **Colour** (torchvision ``ColorJitter``/``RandomGrayscale``/``GaussianBlur``/``RandomSolarize`` semantics on
  uint8, with the asymmetric probabilities of ``ViewConfig``): brightness, contrast and solarize are lookup
  tables, saturation a blend with the grayscale image, hue a shift of the 8-bit hue channel of HSV (as PIL's
  hue adjustment does), blur a separable Gaussian with reflect-101 borders.
* **Normalisation** happens on the tensor batch (``normalize``), on the GPU when there is one, so the loader
  ships uint8 (a quarter of float32's bytes).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .config import ViewConfig

DCT_SCALES = (8, 4, 2, 1)


@dataclass(frozen=True)
class Crop:
    """A crop in stored-image pixels: top-left ``(y, x)``, size ``(h, w)``, and whether the view is flipped."""

    y: int
    x: int
    h: int
    w: int
    flip: bool


def sample_crop(rng: np.random.Generator, height: int, width: int, view: ViewConfig) -> Crop:
    """torchvision ``RandomResizedCrop.get_params`` with numpy randomness, plus the flip draw.

    Area fraction ~ U(crop_scale), log aspect (w/h) ~ U(log crop_ratio); up to 10 tries for a crop that fits,
    else the largest centre crop with the aspect clamped into ``crop_ratio``.
    """
    area = height * width
    log_lo, log_hi = math.log(view.crop_ratio[0]), math.log(view.crop_ratio[1])
    crop = None
    for _ in range(10):
        target = area * rng.uniform(view.crop_scale[0], view.crop_scale[1])
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            y = int(rng.integers(0, height - h + 1))
            x = int(rng.integers(0, width - w + 1))
            crop = (y, x, h, w)
            break
    if crop is None:
        in_ratio = width / height
        if in_ratio < view.crop_ratio[0]:
            w, h = width, int(round(width / view.crop_ratio[0]))
        elif in_ratio > view.crop_ratio[1]:
            h, w = height, int(round(height * view.crop_ratio[1]))
        else:
            w, h = width, height
        crop = ((height - h) // 2, (width - w) // 2, h, w)
    flip = bool(rng.random() < view.flip_p)
    return Crop(*crop, flip=flip)


def dct_scale(crops: list[Crop], size: int, allowed: tuple[int, ...] = DCT_SCALES) -> int:
    """The largest JPEG DCT scale ``s`` at which every crop keeps >= ``size`` pixels per side (1 if none)."""
    smallest = min(min(c.h, c.w) for c in crops)
    return next((s for s in allowed if smallest >= size * s), 1)


def snap(crop: Crop, scale: int, height: int, width: int) -> Crop:
    """A stored-pixel crop moved onto the grid of an image decoded at 1/``scale`` (``height`` x ``width``)."""
    if scale == 1:
        return crop
    h = min(max(1, round(crop.h / scale)), height)
    w = min(max(1, round(crop.w / scale)), width)
    y = min(round(crop.y / scale), height - h)
    x = min(round(crop.x / scale), width - w)
    return Crop(y, x, h, w, crop.flip)


def resize_image(image: np.ndarray, crop: Crop, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """(size, size, C) uint8: ``crop`` (in ``image``'s pixels) resized bicubic, mirrored when flipped; written
    into ``out`` (a C-contiguous (size, size, C) uint8 array, e.g. a batch slot) when given, and returned."""
    roi = image[crop.y : crop.y + crop.h, crop.x : crop.x + crop.w]
    view = cv2.resize(roi, (size, size), dst=out, interpolation=cv2.INTER_CUBIC)
    if crop.flip:
        view = cv2.flip(view, 1, dst=view)  # in place: no second view-sized array
    if out is not None and view is not out:  # cv2 gave a new array (out of another shape or type)
        out[...] = view
        return out
    return view


@functools.cache
def _pixel_centres(size: int) -> np.ndarray:
    centres = np.arange(size) + 0.5
    centres.flags.writeable = False
    return centres


def sample_positions(start: int, length: int, scale: int, limit: int, size: int) -> np.ndarray:
    """(size,) int64 stored-pixel indices: the pixel containing each output pixel's centre, clipped to limit-1."""
    # scale * (start + (i + 0.5) * (length / size)) in that order, in place; the centres are >= 0, so the
    # truncating cast is the floor
    centres = _pixel_centres(size) * (length / size)
    centres += start
    centres *= scale
    positions = centres.astype(np.int64)
    return np.minimum(positions, limit - 1, out=positions)


def mask_positions(crop: Crop, scale: int, shape: tuple[int, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(size,) row and (size,) column indices into the full-resolution mask for a crop on the 1/``scale`` grid;
    columns run right to left when the view is flipped."""
    rows = sample_positions(crop.y, crop.h, scale, shape[0], size)
    cols = sample_positions(crop.x, crop.w, scale, shape[1], size)
    return rows, (cols[::-1].copy() if crop.flip else cols)


def resize_mask(labels: np.ndarray, crop: Crop, scale: int, size: int) -> np.ndarray:
    """(size, size) label map (``labels``' dtype) of a crop given on the 1/``scale`` grid, sampled nearest."""
    rows, cols = mask_positions(crop, scale, labels.shape, size)
    return labels[rows][:, cols]


# ---------------------------------------------------------------------------------------------------- colour


def _lut_apply(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(image, np.clip(np.rint(table), 0, 255).astype(np.uint8))


_RAMP = np.arange(256, dtype=np.float64)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """``image * factor`` clipped (torchvision ``adjust_brightness``)."""
    return _lut_apply(image, _RAMP * factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the mean grey level of the image (torchvision ``adjust_contrast``)."""
    mean = cv2.mean(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))[0]
    return _lut_apply(image, factor * _RAMP + (1.0 - factor) * mean)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the grayscale image (torchvision ``adjust_saturation``)."""
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(image, factor, grey, 1.0 - factor, 0.0)


def adjust_hue(image: np.ndarray, factor: float) -> np.ndarray:
    """Rotate hue by ``factor`` of a turn (|factor| <= 0.5) on the 8-bit hue channel, like PIL's path."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)
    shift = np.uint8(int(round(factor * 256)) % 256)
    hsv[..., 0] += shift  # uint8 arithmetic wraps around the colour circle
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def grayscale(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma replicated to three channels."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def blur_kernel_size(size: int, fraction: float) -> int:
    """Odd kernel side, ``fraction`` of the image side (23 at 224 px, BYOL's)."""
    k = int(size * fraction)
    return max(1, k + 1 if k % 2 == 0 else k)


def gaussian_blur(image: np.ndarray, sigma: float, kernel: int) -> np.ndarray:
    """Separable Gaussian blur with reflect-101 borders (torchvision ``GaussianBlur``'s reflect padding)."""
    k = cv2.getGaussianKernel(kernel, sigma)
    return cv2.sepFilter2D(image, -1, k, k, borderType=cv2.BORDER_REFLECT_101)


def solarize(image: np.ndarray, threshold: int) -> np.ndarray:
    """Invert pixels >= ``threshold`` (torchvision ``solarize``)."""
    return _lut_apply(image, np.where(_RAMP >= threshold, 255 - _RAMP, _RAMP))


def colour_augment(image: np.ndarray, rng: np.random.Generator, view: ViewConfig) -> np.ndarray:
    """BYOL's photometric augmentations of one (H, W, 3) uint8 RGB view (uint8 out; may be ``image``).

    Order: colour jitter (p ``jitter_p``; the four adjustments in a random order, each factor drawn as torchvision
    does), grayscale (p ``grayscale_p``), blur (p ``blur_p``, sigma ~ U(``blur_sigma``)), solarize
    (p ``solarize_p``). Every random number is drawn whether or not its operation applies, so one view's draws
    never shift another's.
    """
    draws = rng.random(8)
    order = rng.permutation(4)
    factors = (1 + view.brightness * (2 * draws[4] - 1), 1 + view.contrast * (2 * draws[5] - 1),
               1 + view.saturation * (2 * draws[6] - 1), view.hue * (2 * draws[7] - 1))
    sigma = rng.uniform(view.blur_sigma[0], view.blur_sigma[1])
    out = image
    if draws[0] < view.jitter_p:
        ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
        for i in order:
            out = ops[i](out, max(factors[i], 0.0) if i < 3 else factors[i])
    if draws[1] < view.grayscale_p:
        out = grayscale(out)
    if draws[2] < view.blur_p:
        out = gaussian_blur(out, sigma, blur_kernel_size(image.shape[0], view.blur_kernel_fraction))
    if draws[3] < view.solarize_p:
        out = solarize(out, view.solarize_threshold)
    return out


# ------------------------------------------------------------------------------------------------ tensors


def normalize(images: Any, mean: tuple[float, ...], std: tuple[float, ...], dtype: Any = None) -> Any:
    """uint8 image batch (B, 3, H, W) (any memory format) → float, ``(x / 255 - mean) / std`` per channel.

    Keeps the memory format (a channels_last uint8 batch gives a channels_last float batch). Runs wherever the
    tensor lives (the GPU in training). ``dtype`` defaults to float32.
    """
    import torch

    dtype = dtype or torch.float32
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1) * 255.0
    return ((images.to(torch.float32) - m) / s).to(dtype)
