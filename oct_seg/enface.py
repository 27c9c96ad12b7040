"""En-face fluid map: the fluid of a raster volume seen from the front, one value per A-scan.

A label volume (n_bscans, H, W) -- B-scan k's label map, H rows of depth, W A-scans -- gives
the fluid height map (n_bscans, W): the number of fluid pixels (label > 0, every fluid class)
in each A-scan. Times the axial spacing it is the fluid height in mm, the total thickness of
fluid that A-scan passes through.

Where the A-scans lie (:class:`EnfaceGrid`), in fundus view (as a fundus photograph or SLO
image is shown: superior up, A-scan column 0 at the left, as vendors acquire horizontal
raster B-scans): map row k is B-scan k, k x bscan_mm from B-scan 0; column j lies j x
lateral_mm from column 0. Both spacings give the true aspect ratio; without either of them
the grid counts in pixels (one A-scan by one B-scan), never in made-up millimetres.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oct_seg.volumes import Spacing


def fluid_height(labels) -> np.ndarray:
    """Label maps of one volume, a list of n (H, W) arrays or an (n, H, W) array (fluid =
    label > 0) -> int32 (n, W): fluid pixels in every A-scan (column) of every B-scan."""
    shapes = {np.shape(lab) for lab in labels}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"expected label maps (H, W) of one size, got shapes {sorted(shapes)}")
    return np.stack([np.count_nonzero(np.asarray(lab) > 0, axis=0) for lab in labels]
                    ).astype(np.int32)


@dataclass(frozen=True)
class EnfaceGrid:
    """Positions of a raster volume's A-scans in fundus view, relative to the fovea.

    shape: (n_bscans, n_ascans). fovea: (bscan, column) index of the fovea's A-scan.
    step: (bscan step, A-scan step), in `unit` ("mm", or "px" when either spacing is
    unknown: one B-scan and one A-scan). superior_first: B-scan 0 is the most superior
    (drawn at the top); None (the file does not say) is taken as True, the order image rows
    are stored in, and :attr:`orientation` says it was assumed.
    """

    shape: tuple[int, int]
    fovea: tuple[int, int]
    step: tuple[float, float]
    unit: str
    superior_first: bool | None = None

    @classmethod
    def of(cls, shape, fovea, spacing: Spacing, superior_first=None) -> "EnfaceGrid":
        """Grid of an (n_bscans, n_ascans) map: in mm when the lateral and B-scan spacing are
        known, else in pixels."""
        if spacing.known("lateral") and spacing.known("bscan"):
            step, unit = (spacing.bscan_mm, spacing.lateral_mm), "mm"
        else:
            step, unit = (1.0, 1.0), "px"
        return cls(tuple(int(v) for v in shape), tuple(int(v) for v in fovea), step, unit,
                   superior_first)

    @property
    def orientation(self) -> str:
        """Which end of the B-scan order is superior, and whether the file said so."""
        top = "B-scan 0 superior" if self.superior_first is not False else \
            "B-scan 0 inferior"
        return top + (" (from the file)" if self.superior_first is not None else
                      " (assumed; the file does not say)")

    def _up_sign(self) -> float:
        return 1.0 if self.superior_first is not False else -1.0

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(right, up): (n_bscans, n_ascans) positions of the A-scan centres relative to the
        fovea, in `unit`; right = towards the right of the fundus image, up = superior."""
        rows = np.arange(self.shape[0], dtype=np.float64)[:, None] - self.fovea[0]
        cols = np.arange(self.shape[1], dtype=np.float64)[None, :] - self.fovea[1]
        right = np.broadcast_to(cols * self.step[1], self.shape)
        up = np.broadcast_to(-self._up_sign() * rows * self.step[0], self.shape)
        return right, up

    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) of the scanned area (A-scan cells, relative to the
        fovea, in `unit`), matplotlib's imshow `extent` with origin :attr:`origin`."""
        (n, w), (b, c), (dy, dx) = self.shape, self.fovea, self.step
        left, right = (-c - 0.5) * dx, (w - 1 - c + 0.5) * dx
        first, last = b + 0.5, -(n - 1 - b) - 0.5  # up-coordinate of B-scan 0's and n-1's edge
        top, bottom = (first, last) if self._up_sign() > 0 else (-last, -first)
        return left, right, bottom * dy, top * dy

    @property
    def origin(self) -> str:
        """imshow origin that puts B-scan 0 where :meth:`extent` has it."""
        return "upper" if self._up_sign() > 0 else "lower"
