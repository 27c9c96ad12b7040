"""ETDRS grid: fluid area (mm^2, seen en face) and volume (mm^3) in the 9 sectors and circles.

The grid is centred on the fovea: the central subfield C0 (1 mm diameter), the inner ring
(1-3 mm) and the outer ring (3-6 mm), each ring split by the diagonals into superior, nasal,
inferior and temporal quadrants: S1 N1 I1 T1 (inner), S2 N2 I2 T2 (outer). Nasal is towards
the optic disc: the right of the fundus image for a right eye (OD), the left for a left eye
(OS). Without laterality the horizontal quadrants are named by image side, R1 L1 R2 L2
(right / left), never guessed. The circles: circle_1mm = C0, circle_3mm = C0 + inner ring,
circle_6mm = all nine; `scan` is the whole scanned area.

Each A-scan counts in the region its centre lies in (:class:`oct_seg.enface.EnfaceGrid`), with
its cell of lateral x B-scan spacing: area_mm2 = fluid A-scans x cell, volume_mm3 = fluid
pixels x cell x axial spacing, so a region's values are exact to about one cell along its
border. A region partly outside the scanned area (outside_fraction > 0, sampled on a
0.01 mm grid) is marked partial: its values cover only the scanned part.

Units: mm needs the lateral and B-scan spacing (area) and also the axial spacing (volume).
Without the first two the grid cannot be placed and only the `scan` row is given; unknown
values are NaN, and the pixel counts (ascans, fluid_ascans, fluid_voxels) are always there.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from oct_seg.enface import EnfaceGrid
from oct_seg.names import EYES
from oct_seg.volumes import Spacing

RADII_MM = (0.5, 1.5, 3.0)  # the 1, 3 and 6 mm circles
COVERAGE_STEP_MM = 0.01     # sampling step of the outside fractions (error ~0.5 % of a sector)
_SIDES = {"OD": ("N", "T"), "OS": ("T", "N"), None: ("R", "L")}  # (right, left) letters
_WORDS = {"S": "superior", "I": "inferior", "N": "nasal", "T": "temporal", "R": "right",
          "L": "left"}
COLUMNS = ("region", "description", "ascans", "fluid_ascans", "fluid_voxels", "area_mm2",
           "volume_mm3", "outside_fraction", "partial")


def _sides(laterality) -> tuple[str, str]:
    """Letters of the image's right and left quadrants for this eye."""
    if laterality not in EYES + (None,):
        raise ValueError(f"laterality must be one of {EYES} or None, got {laterality!r}")
    return _SIDES[laterality]


def sector_codes(laterality=None) -> tuple[str, ...]:
    """The 9 sector codes in table order: C0, then superior, nasal (right for OD / left for
    OS), inferior, temporal of the inner ring (1) and the outer ring (2); R / L (image right
    / left) instead of N / T when laterality is None."""
    right, left = _sides(laterality)
    order = ("S", right, "I", left) if laterality is None else ("S", "N", "I", "T")
    return ("C0",) + tuple(f"{q}{ring}" for ring in (1, 2) for q in order)


def sector_of(right_mm, up_mm, laterality=None) -> np.ndarray:
    """Sector code of every point (right, up: mm from the fovea in fundus view) -> array of
    str ("" outside the 6 mm circle). Points on a diagonal go to the horizontal quadrant."""
    right, up = np.broadcast_arrays(np.asarray(right_mm, float), np.asarray(up_mm, float))
    ring = np.digitize(np.hypot(right, up), RADII_MM)  # 0 central, 1 inner, 2 outer, 3 out
    vertical = np.abs(up) > np.abs(right)
    quadrant = np.where(vertical, np.where(up > 0, 0, 2), np.where(right > 0, 1, 3))
    right_letter, left_letter = _sides(laterality)
    names = ["C0"] + [f"{q}{r}" for r in (1, 2) for q in ("S", right_letter, "I", left_letter)]
    index = np.where(ring == 0, 0, np.where(ring == 3, 9, 1 + 4 * (ring - 1) + quadrant))
    return np.array(names + [""])[index]


def _regions(laterality):
    """(code, description, membership test on sector codes) in table order."""
    sectors = sector_codes(laterality)
    rows = [("C0", "central 1 mm", lambda s: s == "C0")]
    for code in sectors[1:]:
        ring = "inner" if code.endswith("1") else "outer"
        rows.append((code, f"{ring} {_WORDS[code[0]]}", lambda s, c=code: s == c))
    rows += [("circle_1mm", "1 mm circle", lambda s: s == "C0"),
             ("circle_3mm", "3 mm circle", lambda s: np.isin(s, sectors[:5])),
             ("circle_6mm", "6 mm circle", lambda s: s != "")]
    return rows


def outside_fractions(grid: EnfaceGrid, laterality=None) -> dict[str, float]:
    """Fraction of each region's area (mm^2) outside the scanned area of an mm grid, sampled
    on a COVERAGE_STEP_MM grid over the 6 mm circle: {region code: fraction in [0, 1]}."""
    if grid.unit != "mm":
        raise ValueError("outside fractions need a grid in mm (lateral and B-scan spacing)")
    half = RADII_MM[-1]
    axis = np.arange(-half + COVERAGE_STEP_MM / 2, half, COVERAGE_STEP_MM)
    right, up = np.meshgrid(axis, axis)
    codes = sector_of(right, up, laterality)
    left, right_edge, bottom, top = grid.extent()
    scanned = (right >= left) & (right <= right_edge) & (up >= bottom) & (up <= top)
    fractions = {}
    for code, _, member in _regions(laterality):
        inside = member(codes)
        fractions[code] = float(1.0 - scanned[inside].sum() / inside.sum())
    return fractions


def etdrs_table(height_px, grid: EnfaceGrid, spacing: Spacing, laterality=None) -> pd.DataFrame:
    """ETDRS table of a fluid height map.

    height_px: (n_bscans, n_ascans) fluid pixels per A-scan (oct_seg.enface.fluid_height);
    grid: where those A-scans lie (same shape); spacing: its geometry in mm (None values:
    unknown); laterality: "OD", "OS" or None. Returns one row per region (C0, the 8 ring
    sectors, circle_1mm, circle_3mm, circle_6mm, scan; only `scan` when the grid is in
    pixels) with COLUMNS: ascans (A-scans whose centre lies in the region), fluid_ascans
    (those with fluid), fluid_voxels (fluid pixels in them), area_mm2, volume_mm3 (NaN when
    the spacing they need is unknown), outside_fraction, partial (outside_fraction > 0).
    """
    height_px = np.asarray(height_px)
    if height_px.shape != grid.shape:
        raise ValueError(f"height map {height_px.shape} and grid {grid.shape} differ in shape")
    cell = spacing.bscan_mm * spacing.lateral_mm if grid.unit == "mm" else np.nan
    voxel = cell * spacing.known("axial") if spacing.known("axial") else np.nan
    regions = [("scan", "whole scan", lambda s: np.ones(s.shape, bool))]
    outside = {"scan": 0.0}
    codes = np.full(grid.shape, "")
    if grid.unit == "mm":
        codes = sector_of(*grid.centres(), laterality)
        regions = _regions(laterality) + regions
        outside.update(outside_fractions(grid, laterality))
    rows = []
    for code, description, member in regions:
        heights = height_px[member(codes)]
        fluid = int(np.count_nonzero(heights))
        voxels = int(heights.sum())
        rows.append(dict(region=code, description=description, ascans=heights.size,
                         fluid_ascans=fluid, fluid_voxels=voxels, area_mm2=fluid * cell,
                         volume_mm3=voxels * voxel, outside_fraction=round(outside[code], 4),
                         partial=outside[code] > 0))
    return pd.DataFrame(rows, columns=list(COLUMNS))
