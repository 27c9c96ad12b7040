"""Fovea detection (oct_seg.fovea) on synthetic volumes whose fovea is known by construction,
and the checks on a user's --fovea."""
import numpy as np
import pytest

from oct_seg.data.phantom import make_phantom_volume
from oct_seg.fovea import Fovea, find_fovea


@pytest.mark.parametrize("seed, fovea", [(0, (8, 80)), (1, (15, 50)), (2, None)])
def test_finds_the_pit_of_a_synthetic_volume(seed, fovea):
    bscans, _, _, truth = make_phantom_volume(seed, n_bscans=25, height=128, width=128,
                                              fovea=fovea)
    found = find_fovea(bscans)
    # within one B-scan (0.24 mm) and two A-scans (0.09 mm) of the pit's centre
    assert abs(found.bscan - truth[0]) <= 1 and abs(found.column - truth[1]) <= 2, found
    assert found.method.startswith("deepest point of the foveal pit")


def _layered(surface):
    """Noise-free volume: dark vitreous above `surface` (n, W) rows, bright tissue below."""
    rows = np.arange(64)[None, :, None]
    return np.where(rows >= surface[:, None, :], 0.8, 0.05).astype(np.float32)


def test_no_pit_gives_the_scan_centre():
    n, w = 9, 40
    flat = _layered(np.full((n, w), 20))
    # a tilted retina: its deepest point is a corner, but no pit is there
    tilted = _layered(np.round(10 + np.linspace(0, 30, w))[None, :].repeat(n, 0))
    for bscans in (flat, tilted):
        found = find_fovea(bscans)
        assert (found.bscan, found.column) == (n // 2, w // 2)
        assert "no foveal pit" in found.method


def test_a_pit_in_a_tilted_retina():
    n, w = 11, 60
    b, c = np.meshgrid(np.arange(n), np.arange(w), indexing="ij")
    surface = 10 + 0.4 * c + 12 * np.exp(-((b - 4) ** 2 / 4 + (c - 25) ** 2 / 30))
    found = find_fovea(_layered(np.round(surface)))  # rounding to rows: one A-scan of slack
    assert found.bscan == 4 and abs(found.column - 25) <= 1, found


def test_given_fovea_is_checked():
    assert Fovea.given(3, 7, (5, 8)) == Fovea(3, 7, "given (--fovea)")
    with pytest.raises(ValueError, match=r"eye\.vol: --fovea 5 0 is outside .*0\.\.4"):
        Fovea.given(5, 0, (5, 8), "eye.vol")
    with pytest.raises(ValueError, match=r"scan\.png: --fovea needs a volume"):
        Fovea.given(0, 0, (1, 8), "scan.png")
    with pytest.raises(ValueError, match="needs a volume"):
        find_fovea(np.zeros((1, 8, 8)))
