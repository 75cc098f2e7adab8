"""Synthetic training data with a known truth: blob volumes and user-like sparse brush labels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BACKGROUND, BLOB = 1, 2


def make_blobs_volume(shape: tuple[int, ...] = (48, 64, 64), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image of bright round cells on a dark, unevenly lit background, and its truth.

    Returns (raw uint8, truth uint8) of `shape` (2-D or 3-D); truth is 1 = background, 2 = blob.
    """
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    blobs = np.zeros(shape, dtype=bool)
    min_side = min(shape)
    radius_range = (max(2.0, min_side / 14), max(3.0, min_side / 7))
    while blobs.mean() < 0.25:
        centre = np.array([rng.uniform(0, n) for n in shape], dtype=np.float32)
        radii = rng.uniform(*radius_range) * rng.uniform(0.8, 1.25, size=len(shape))
        distance = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
        blobs |= distance <= 1.0
    truth = np.where(blobs, BLOB, BACKGROUND).astype(np.uint8)

    illumination = sum(g / max(n - 1, 1) for g, n in zip(grid, shape)) / len(shape)  # 0 … 1 ramp
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    texture /= max(float(np.abs(texture).max()), 1e-6)
    signal = 60.0 + 25.0 * illumination + 110.0 * ndimage.gaussian_filter(blobs.astype(np.float32), 1.0)
    raw = signal + 12.0 * texture * blobs + rng.normal(0.0, 14.0, size=shape)
    return np.clip(np.rint(raw), 0, 255).astype(np.uint8), truth


def sparse_labels(truth: np.ndarray, strokes_per_class: int = 6, seed: int = 0,
                  length: int = 24, radius: int = 1) -> np.ndarray:
    """User-like annotations: a few short brush strokes per class, each drawn in one 2-D (y, x) slice
    and painted only where the truth has that class. Same shape as `truth`, 0 = unlabelled."""
    rng = np.random.default_rng(seed)
    truth_3d = truth[np.newaxis] if truth.ndim == 2 else truth
    labels = np.zeros_like(truth_3d, dtype=np.uint8)
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
               if dy * dy + dx * dx <= radius * radius]
    _, height, width = truth_3d.shape
    for value in np.unique(truth_3d[truth_3d > 0]):
        candidates = np.argwhere(truth_3d == value)
        for _ in range(strokes_per_class):
            z, y, x = candidates[rng.integers(len(candidates))].astype(float)
            angle = rng.uniform(0, 2 * np.pi)
            for _ in range(length):
                angle += rng.normal(0, 0.3)  # a slightly wobbly hand
                y = min(max(y + np.sin(angle), 0), height - 1)
                x = min(max(x + np.cos(angle), 0), width - 1)
                for dy, dx in offsets:
                    py, px = int(round(y)) + dy, int(round(x)) + dx
                    if 0 <= py < height and 0 <= px < width and truth_3d[int(z), py, px] == value:
                        labels[int(z), py, px] = value
    return labels[0] if truth.ndim == 2 else labels
