"""En-face fluid height and the ETDRS grid (oct_seg.enface, oct_seg.etdrs) against hand-computed
cases: a fluid cylinder centred on the fovea, eye and B-scan order flips, missing spacing,
sectors partly outside the scan."""
import numpy as np
import pytest

from oct_seg.enface import EnfaceGrid, fluid_height
from oct_seg.etdrs import etdrs_table, outside_fractions, sector_codes, sector_of
from oct_seg.volumes import Spacing

NINE = ["C0", "S1", "N1", "I1", "T1", "S2", "N2", "I2", "T2"]


def test_fluid_height_counts_fluid_pixels_per_ascan():
    labels = np.zeros((2, 5, 3), np.uint8)
    labels[0, 1:4, 0] = 1      # 3 px in A-scan 0 of B-scan 0
    labels[1, 0, 2] = 2        # another fluid class counts as fluid too
    labels[1, 4, 2] = 1
    np.testing.assert_array_equal(fluid_height(labels), [[3, 0, 0], [0, 0, 2]])
    with pytest.raises(ValueError, match="one size"):
        fluid_height([np.zeros((4, 3)), np.zeros((4, 2))])


def test_grid_positions_by_hand():
    grid = EnfaceGrid.of((3, 4), (1, 2), Spacing(0.5, 0.004, 2.0), superior_first=None)
    right, up = grid.centres()
    np.testing.assert_allclose(right[0], [-1.0, -0.5, 0.0, 0.5])
    np.testing.assert_allclose(up[:, 0], [2.0, 0.0, -2.0])  # B-scan 0 on top
    assert grid.extent() == (-1.25, 0.75, -3.0, 3.0) and grid.origin == "upper"
    assert "assumed" in grid.orientation
    flipped = EnfaceGrid.of((3, 4), (0, 2), Spacing(0.5, 0.004, 2.0), superior_first=False)
    np.testing.assert_allclose(flipped.centres()[1][:, 0], [0.0, 2.0, 4.0])  # B-scan 0 lowest
    assert flipped.extent() == (-1.25, 0.75, -1.0, 5.0) and flipped.origin == "lower"
    assert flipped.orientation == "B-scan 0 inferior (from the file)"
    pixels = EnfaceGrid.of((3, 4), (1, 2), Spacing(None, 0.004, 2.0))
    assert pixels.unit == "px" and pixels.step == (1.0, 1.0)


def test_cylinder_at_the_fovea_gives_the_ring_volumes():
    """Fluid 6 px high under every A-scan within 1 mm of the fovea. Each region's value may
    differ from the disc geometry only by A-scan cells cut by its border: at most border
    length x cell diagonal of area (the 'pixel error')."""
    lateral, bscan, axial, height_px, radius = 0.01, 0.015, 0.004, 6, 1.0
    n, w, fovea = 421, 631, (210, 315)  # 6.3 x 6.3 mm, fovea in the middle
    grid = EnfaceGrid.of((n, w), fovea, Spacing(lateral, axial, bscan), True)
    right, up = grid.centres()
    labels = np.zeros((n, 8, w), np.uint8)
    labels[:, 1:1 + height_px, :] = (np.hypot(right, up) <= radius)[:, None, :]
    table = etdrs_table(fluid_height(labels), grid, Spacing(lateral, axial, bscan), "OD")
    table = table.set_index("region")
    assert list(table.index) == NINE + ["circle_1mm", "circle_3mm", "circle_6mm", "scan"]
    cell = np.hypot(lateral, bscan)
    depth = height_px * axial
    central, quarter = np.pi * 0.5 ** 2, np.pi * (radius ** 2 - 0.5 ** 2) / 4
    expected = {"C0": (central, np.pi * 0.5),
                # quarter ring: two arcs and two 0.5 mm pieces of diagonal
                **{q: (quarter, np.pi * (radius + 0.5) / 2 + 2 * (radius - 0.5))
                   for q in ("S1", "N1", "I1", "T1")},
                "circle_3mm": (np.pi * radius ** 2, 2 * np.pi * radius)}
    for region, (area, border) in expected.items():
        assert table.loc[region, "area_mm2"] == pytest.approx(area, abs=border * cell)
        assert table.loc[region, "volume_mm3"] == pytest.approx(area * depth,
                                                                abs=border * cell * depth)
    for region in ("S2", "N2", "I2", "T2"):
        assert table.loc[region, "volume_mm3"] == 0
    fluid = labels.sum()
    assert table.loc["scan", "fluid_voxels"] == fluid
    assert table.loc["scan", "volume_mm3"] == pytest.approx(fluid * lateral * bscan * axial)
    assert table.loc["circle_6mm", "volume_mm3"] == table.loc["circle_3mm", "volume_mm3"]
    assert not table["partial"].any() and (table["outside_fraction"] == 0).all()


def test_laterality_flips_nasal_and_temporal():
    """Fluid 1 mm right of the fovea in the fundus image: nasal in a right eye (the optic disc
    side), temporal in a left eye, just 'right' when the eye is unknown."""
    spacing = Spacing(0.1, 0.005, 0.1)
    grid = EnfaceGrid.of((61, 61), (30, 30), spacing, True)
    height = np.zeros((61, 61), int)
    height[30, 40] = 4                       # 10 columns x 0.1 mm = 1 mm to the right
    height[20, 30] = 2                       # 1 mm above (B-scan 0 is superior)
    found = {}
    for eye in ("OD", "OS", None):
        table = etdrs_table(height, grid, spacing, eye).set_index("region")
        found[eye] = {r: v for r, v in table["fluid_voxels"].items() if v and len(r) == 2}
    assert found == {"OD": {"N1": 4, "S1": 2}, "OS": {"T1": 4, "S1": 2},
                     None: {"R1": 4, "S1": 2}}
    assert sector_codes("OS") == tuple(NINE)
    assert sector_codes(None) == ("C0", "S1", "R1", "I1", "L1", "S2", "R2", "I2", "L2")
    inferior_first = EnfaceGrid.of((61, 61), (30, 30), spacing, False)
    table = etdrs_table(height, inferior_first, spacing, "OD").set_index("region")
    assert table.loc["I1", "fluid_voxels"] == 2 and table.loc["S1", "fluid_voxels"] == 0
    with pytest.raises(ValueError, match="laterality"):
        sector_of(0.0, 1.0, "right")


def test_sector_boundaries():
    # radii 0.5 / 1.5 / 3 mm; diagonals go to the horizontal quadrants
    codes = sector_of([0.49, 0.51, 1.49, 1.51, 2.99, 3.01, 1.0, -1.0, 0.0],
                      [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, -1.0, -2.0], "OD")
    assert list(codes) == ["C0", "N1", "N1", "N2", "N2", "", "N1", "T1", "I2"]


def test_missing_spacing_gives_pixels_not_millimetres():
    height = np.zeros((5, 7), int)
    height[2, 3], height[0, 0] = 5, 2
    no_lateral = Spacing(None, 0.004, 0.1)
    grid = EnfaceGrid.of(height.shape, (2, 3), no_lateral)
    table = etdrs_table(height, grid, no_lateral, "OD")
    assert list(table["region"]) == ["scan"]  # the grid cannot be placed in pixels
    row = table.iloc[0]
    assert (row["ascans"], row["fluid_ascans"], row["fluid_voxels"]) == (35, 2, 7)
    assert np.isnan(row["area_mm2"]) and np.isnan(row["volume_mm3"])
    no_axial = Spacing(0.5, None, 0.5)      # grid placed, areas known, volumes not
    table = etdrs_table(height, EnfaceGrid.of(height.shape, (2, 3), no_axial), no_axial, "OD")
    c0 = table.set_index("region").loc["C0"]
    assert c0["fluid_voxels"] == 5 and c0["area_mm2"] == pytest.approx(0.25)
    assert table["volume_mm3"].isna().all()


def test_sectors_outside_the_scan_are_partial():
    """Fovea on the left edge of a 4 x 8 mm scan: the temporal sectors of a right eye are
    unscanned, the others half scanned except the nasal ones (left edge at -0.01 mm, so
    the fractions are within 0.02 of 1, 1/2 and 0)."""
    spacing = Spacing(0.02, 0.004, 0.02)
    grid = EnfaceGrid.of((401, 200), (200, 0), spacing, True)
    outside = outside_fractions(grid, "OD")
    want = {"C0": 0.5, "S1": 0.5, "N1": 0.0, "I1": 0.5, "T1": 1.0, "S2": 0.5, "N2": 0.0,
            "I2": 0.5, "T2": 1.0, "circle_1mm": 0.5, "circle_3mm": 0.5, "circle_6mm": 0.5}
    assert outside == pytest.approx(want, abs=0.02)
    table = etdrs_table(np.ones(grid.shape, int), grid, spacing, "OD").set_index("region")
    assert list(table.index[table["partial"]]) == ["C0", "S1", "I1", "T1", "S2", "I2", "T2",
                                                   "circle_1mm", "circle_3mm", "circle_6mm"]
    assert table.loc["T2", "ascans"] == 0 and table.loc["N2", "outside_fraction"] == 0
