"""Per-volume report files (oct_seg.report): what is written, and that it says what was
computed (the TIFF is the height map, the CSV the ETDRS table, the eye and fovea as given)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from oct_seg.data.phantom import make_phantom_volume
from oct_seg.enface import EnfaceGrid, fluid_height
from oct_seg.etdrs import etdrs_table
from oct_seg.fovea import Fovea, find_fovea
from oct_seg.report import PAGE_DPI, PAGE_INCHES, resolve_eye, write_volume_report
from oct_seg.volumes import Spacing, Volume


@pytest.fixture(scope="module")
def phantom():
    bscans, labels, spacing, fovea = make_phantom_volume(3, n_bscans=9, height=64, width=64,
                                                         fovea=(4, 30))
    volume = Volume("ph", Path("ph.vol"), list(bscans), Spacing(*spacing, "synthetic"), "OD",
                    True)
    return volume, labels


def test_files_hold_the_computed_maps_and_table(tmp_path, phantom):
    volume, labels = phantom
    table = write_volume_report(tmp_path, "ph", volume, labels, volume.spacing)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ph_enface.png", "ph_etdrs.csv", "ph_fluid_height.tif", "ph_report.png"]
    with tifffile.TiffFile(tmp_path / "ph_fluid_height.tif") as tif:
        stored = tif.asarray()
        x_res = tif.pages[0].tags["XResolution"].value
    np.testing.assert_array_equal(stored, fluid_height(labels))
    assert stored.dtype == np.uint16 and x_res[1] / x_res[0] == pytest.approx(
        volume.spacing.lateral_mm, rel=1e-6)
    fovea = find_fovea(volume.bscans)
    grid = EnfaceGrid.of(stored.shape, (fovea.bscan, fovea.column), volume.spacing, True)
    want = etdrs_table(stored, grid, volume.spacing, "OD")
    csv = pd.read_csv(tmp_path / "ph_etdrs.csv")
    pd.testing.assert_frame_equal(csv[want.columns], want, check_dtype=False)
    assert csv.loc[0, ["volume", "eye", "eye_source", "fovea_bscan", "fovea_column"]].tolist() \
        == ["ph", "OD", "from the file", fovea.bscan, fovea.column]
    assert table["fovea_method"].iloc[0] == fovea.method
    page = Image.open(tmp_path / "ph_report.png")
    assert page.size == tuple(round(v * PAGE_DPI) for v in PAGE_INCHES)


def test_given_eye_and_fovea_and_pdf(tmp_path, phantom):
    volume, labels = phantom
    table = write_volume_report(tmp_path, "ph", volume, labels, volume.spacing,
                                fovea=Fovea.given(4, 30, (9, 64)), eye="OS", fmt="pdf")
    assert (tmp_path / "ph_report.pdf").read_bytes().startswith(b"%PDF")
    row = table.iloc[0]
    assert (row["eye"], row["eye_source"]) == ("OS", "given (--eye; the file says OD)")
    assert (row["fovea_bscan"], row["fovea_column"], row["fovea_method"]) == \
        (4, 30, "given (--fovea)")
    od = write_volume_report(tmp_path / "od", "ph", volume, labels, volume.spacing,
                             fovea=Fovea.given(4, 30, (9, 64))).set_index("region")
    os_ = table.set_index("region")
    for ring in "12":  # same fluid, nasal and temporal swapped
        assert os_.loc[f"N{ring}", "fluid_voxels"] == od.loc[f"T{ring}", "fluid_voxels"]
        assert os_.loc[f"T{ring}", "fluid_voxels"] == od.loc[f"N{ring}", "fluid_voxels"]
    with pytest.raises(ValueError, match="report format"):
        write_volume_report(tmp_path / "x", "ph", volume, labels, volume.spacing, fmt="jpg")
    assert not (tmp_path / "x").exists()


def test_pixels_only_volume_still_gets_a_report(tmp_path, phantom):
    volume, labels = phantom
    bare = Volume("ph", Path("ph.tif"), volume.bscans, Spacing(source="none in file"))
    table = write_volume_report(tmp_path, "ph", bare, labels, bare.spacing)
    assert list(table["region"]) == ["scan"] and table["eye"].iloc[0] == ""
    assert table["fluid_voxels"].iloc[0] == labels.sum() and table["volume_mm3"].isna().all()
    assert "assumed" in table["orientation"].iloc[0]
    with tifffile.TiffFile(tmp_path / "ph_fluid_height.tif") as tif:
        assert tif.pages[0].tags["XResolution"].value == (1, 1)  # no mm calibration


def test_resolve_eye():
    assert resolve_eye("OD") == ("OD", "from the file")
    assert resolve_eye(None) == (None, "not in the file; give --eye OD|OS")
    assert resolve_eye(None, "OS") == ("OS", "given (--eye)")
    assert resolve_eye("OS", "OS") == ("OS", "given (--eye)")
    with pytest.raises(ValueError, match="OD, OS"):
        resolve_eye(None, "left")
