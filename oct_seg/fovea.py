"""The fovea of a raster OCT volume: found from the images, or given, and how it was found.

Detection (:func:`find_fovea`) looks for the deepest point of the foveal pit in the inner
retinal surface the B-scans show:

1. the inner retinal surface (ILM) of every A-scan is the first row, from the top, where the
   B-scan smoothed in depth and laterally (Gaussian, sigma 2 px: speckle) is brighter than the
   volume's Otsu threshold (dark vitreous above, bright retina below);
2. that surface (n_bscans, n_ascans) is median filtered (3 B-scans x 9 A-scans, to remove
   single-A-scan misses) and a quadratic surface is fitted to it: the fit carries the tilt
   and curvature of the eye, the residual the local dents;
3. the fovea is the deepest residual, after a Gaussian smoothing of 2 % of the scan size
   (~0.1 mm on a 6 mm scan, small against a ~1.5 mm wide pit, so that the pit's flat floor
   does not make its centre noisy), within the central half of the scan in both directions
   (fovea-centred protocols put it there; an eccentric fixation still falls inside);
4. a pit shallower than MIN_PIT_DEPTH_PX (5 px, 10-20 um on common devices; a real pit is
   100-200 um) is no pit: the scan centre is taken instead, and the method says so
   (e.g. centre-involving oedema can fill the pit).

Pixels only: no spacing is needed. :meth:`Fovea.given` checks a user's position instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_PIT_DEPTH_PX = 5.0
SEARCH_FRACTION = 0.5     # central part of the scan searched, per direction
SMOOTH_FRACTION = 0.02    # residual smoothing sigma, per direction, of the scan size
_SURFACE_SIGMA_PX = 2.0
_SURFACE_MEDIAN = (3, 9)  # (B-scans, A-scans)


@dataclass(frozen=True)
class Fovea:
    """Position of the fovea: B-scan index and A-scan column, and how it was found."""

    bscan: int
    column: int
    method: str

    @classmethod
    def given(cls, bscan: int, column: int, shape, path="") -> "Fovea":
        """A user's fovea (e.g. --fovea B-SCAN COLUMN) for a volume of `shape` (n_bscans,
        n_ascans); ValueError naming `path` when it lies outside."""
        n, w = shape
        if n < 2:
            raise ValueError(f"{path}: --fovea needs a volume (more than one B-scan), got {n}")
        if not (0 <= bscan < n and 0 <= column < w):
            raise ValueError(f"{path}: --fovea {bscan} {column} is outside the volume "
                             f"(B-scans 0..{n - 1}, A-scan columns 0..{w - 1})")
        return cls(int(bscan), int(column), "given (--fovea)")


def inner_surface(bscans) -> np.ndarray:
    """B-scans (n, H, W) in [0, 1] -> float (n, W): row of the inner retinal surface per
    A-scan (step 1 of the module docstring); NaN where no tissue is brighter than the
    threshold."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    smooth = ndimage.gaussian_filter(np.asarray(bscans, np.float32),
                                     sigma=(0, _SURFACE_SIGMA_PX, _SURFACE_SIGMA_PX))
    tissue = smooth > threshold_otsu(smooth)
    surface = np.argmax(tissue, axis=1).astype(np.float64)
    surface[~tissue.any(axis=1)] = np.nan
    return surface


def find_fovea(bscans) -> Fovea:
    """B-scans of one raster volume, (n, H, W) in [0, 1] with n >= 2 -> its Fovea (steps of
    the module docstring)."""
    from scipy import ndimage

    bscans = np.asarray(bscans)
    if bscans.ndim != 3 or bscans.shape[0] < 2:
        raise ValueError(f"find_fovea needs a volume (n >= 2, H, W), got shape {bscans.shape}")
    n, _, w = bscans.shape
    centre = Fovea(n // 2, w // 2, "scan centre (no foveal pit found in the inner retinal "
                                   "surface)")
    surface = inner_surface(bscans)
    if np.isnan(surface).all():
        return centre
    surface = np.where(np.isnan(surface), np.nanmedian(surface), surface)
    surface = ndimage.median_filter(surface, size=_SURFACE_MEDIAN, mode="nearest")
    depth = ndimage.gaussian_filter(surface - _quadratic_fit(surface),
                                    sigma=(SMOOTH_FRACTION * n, SMOOTH_FRACTION * w))
    rows, cols = (np.abs(np.arange(size) - (size - 1) / 2) <= SEARCH_FRACTION * size / 2
                  for size in (n, w))
    depth[~(rows[:, None] & cols[None, :])] = -np.inf
    b, c = np.unravel_index(np.argmax(depth), depth.shape)
    if depth[b, c] < MIN_PIT_DEPTH_PX:
        return centre
    return Fovea(int(b), int(c), f"deepest point of the foveal pit (inner retinal surface "
                                 f"{depth[b, c]:.0f} px below its smooth fit)")


def _quadratic_fit(surface: np.ndarray) -> np.ndarray:
    """Least-squares quadratic surface a + bx + cy + dx^2 + exy + fy^2 over the grid."""
    y, x = np.meshgrid(np.linspace(-1, 1, surface.shape[0]),
                       np.linspace(-1, 1, surface.shape[1]), indexing="ij")
    design = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(design, surface.ravel(), rcond=None)
    return (design @ coef).reshape(surface.shape)
