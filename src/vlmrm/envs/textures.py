"""Procedural textures for the paper's realistic look, generated in numpy (no image files).

Every generator is deterministic (fixed seed) so all workers and runs see the same scene, and
returns a C-contiguous uint8 array ``[H, W, 3]``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["floor_tiles", "robot_skin", "value_noise"]


def value_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth, tileable noise in [0, 1], shape ``[size, size]`` (bilinear value noise)."""
    grid = rng.random((cells, cells))
    coords = np.arange(size) * cells / size
    i0 = np.floor(coords).astype(int)
    frac = coords - i0
    frac = frac * frac * (3 - 2 * frac)  # smoothstep hides the grid lines
    i1 = (i0 + 1) % cells  # wrap around so the texture tiles seamlessly
    top = grid[i0][:, i0] * (1 - frac)[None, :] + grid[i0][:, i1] * frac[None, :]
    bottom = grid[i1][:, i0] * (1 - frac)[None, :] + grid[i1][:, i1] * frac[None, :]
    return top * (1 - frac)[:, None] + bottom * frac[:, None]


def _fractal_noise(size: int, rng: np.random.Generator, octaves: tuple[int, ...]) -> np.ndarray:
    noise = sum(value_noise(size, c, rng) / (i + 1) for i, c in enumerate(octaves))
    noise = noise - noise.min()
    return noise / max(float(noise.max()), 1e-8)


def floor_tiles(size: int = 512, tiles: int = 4, seed: int = 0) -> np.ndarray:
    """Light stone floor tiles with darker grout, ``tiles x tiles`` tiles per texture repeat.

    Each tile gets its own shade and a grain so the floor reads as a real tiled floor (the
    paper found CLIP needs a realistic scene), not as a checkerboard.
    """
    rng = np.random.default_rng(seed)
    base = np.array([196.0, 186.0, 170.0])  # warm light-grey stone
    tile_px = size // tiles
    shade = rng.uniform(-14, 14, (tiles, tiles))
    shade_map = np.kron(shade, np.ones((tile_px, tile_px)))
    grain = _fractal_noise(size, rng, (16, 32, 64)) - 0.5
    image = base[None, None, :] + shade_map[..., None] + 30 * grain[..., None]
    # Grout lines at each tile border, a few pixels wide, slightly darker at their centre.
    pos = np.arange(size) % tile_px
    dist = np.minimum(pos, tile_px - 1 - pos)
    grout = np.minimum(dist[:, None], dist[None, :]) < max(2, size // 160)
    image[grout] = np.array([120.0, 114.0, 104.0]) + 10 * grain[grout][:, None]
    return np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))


def robot_skin(size: int = 128, seed: int = 1) -> np.ndarray:
    """Brushed light-grey metal with faint panel seams: a robot, not a wooden mannequin."""
    rng = np.random.default_rng(seed)
    brushed = value_noise(size, 64, rng)[:, :1].repeat(size, axis=1)  # streaks along one axis
    speckle = _fractal_noise(size, rng, (8, 32))
    grey = 170 + 40 * (brushed - 0.5) + 30 * (speckle - 0.5)
    image = np.stack([grey * 0.95, grey * 0.98, grey * 1.05], axis=-1)
    seam = (np.arange(size) % (size // 2)) < max(1, size // 64)
    image[seam, :, :] *= 0.6
    image[:, seam, :] *= 0.6
    return np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))
