"""Synthetic phantom: reproducible, masks exact, pockets dark, written as a labelled dataset."""
import numpy as np
import pandas as pd
import pytest

from oct_seg.data import make_phantom, read_dataset, write_phantom_dataset
from oct_seg.data.phantom import FLUID_LEVEL, LEVELS


def test_seeded_and_shapes():
    a_img, a_mask = make_phantom(3, 64, 96)
    b_img, b_mask = make_phantom(np.random.default_rng(3), 64, 96)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert a_img.dtype == np.float32 and a_img.shape == (64, 96) and 0 <= a_img.min() and a_img.max() <= 1
    assert a_mask.dtype == np.uint8 and set(np.unique(a_mask)) <= {0, 1}
    assert not np.array_equal(make_phantom(4, 64, 96)[0], a_img)


def test_clean_phantom_mask_is_exactly_the_fluid_level():
    img, mask = make_phantom(0, 128, 192, n_cysts=4, subretinal=True, speckle=False)
    assert mask.sum() > 50
    np.testing.assert_array_equal(np.isclose(img, FLUID_LEVEL), mask.astype(bool))
    levels = np.array(list(LEVELS.values()))
    others = np.unique(img[mask == 0])
    assert np.all(np.abs(others[:, None] - levels[None, :]).min(axis=1) < 1e-6)
    # pockets lie inside the retina: tissue, never vitreous, right above each pocket column
    for c in np.where(mask.any(axis=0))[0]:
        top = np.argmax(mask[:, c])
        assert top > 0 and not np.isclose(img[top - 1, c], LEVELS["vitreous"])


def test_speckled_pockets_are_dark_and_fluid_free_scans_exist():
    img, mask = make_phantom(1, 128, 192, n_cysts=3)
    retina = (img > 0) & (np.arange(128)[:, None] > 30)
    assert img[mask == 1].mean() < 0.3 * img[retina & (mask == 0)].mean()
    empty = [make_phantom(s, 64, 64)[1].sum() == 0 for s in range(12)]
    assert any(empty) and not all(empty)
    with pytest.raises(ValueError, match=">= 32"):
        make_phantom(0, 16, 64)


def test_write_phantom_dataset_is_labelled_synthetic(tmp_path):
    out = write_phantom_dataset(tmp_path / "ph", n_subjects=2, per_subject=3, height=48, width=64, seed=5)
    index = pd.read_csv(out / "index.csv")
    assert list(index["name"]) == [f"phantom{s:02d}_scan{k:02d}" for s in (1, 2) for k in range(3)]
    assert set(index["source"]) == {"synthetic"} and list(index["subject"].unique()) == ["phantom01", "phantom02"]
    scans = read_dataset(out)
    img, mask = make_phantom(np.random.default_rng([5, 2, 1]), 48, 64)
    np.testing.assert_allclose(scans.images[4], img, atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(scans.masks[4], mask)
    np.testing.assert_allclose(scans.index["fluid_fraction"], [m.mean() for m in scans.masks], atol=1e-6)
    with pytest.raises(FileExistsError):
        write_phantom_dataset(out, n_subjects=1, per_subject=1, height=48, width=64)


def test_phantom_volume_geometry_and_exact_fluid():
    from oct_seg.data.phantom import make_phantom_volume

    bscans, labels, spacing, fovea = make_phantom_volume(4, n_bscans=6, height=48, width=40,
                                                         field_mm=3.0, speckle=False)
    assert bscans.shape == labels.shape == (6, 48, 40) and bscans.dtype == np.float32
    assert spacing == pytest.approx((3.0 / 40, 2.0 / 48, 3.0 / 6)) and fovea == (3, 20)
    assert labels.any()
    np.testing.assert_array_equal(np.isclose(bscans, FLUID_LEVEL), labels.astype(bool))
    again = make_phantom_volume(np.random.default_rng(4), n_bscans=6, height=48, width=40,
                                field_mm=3.0)
    np.testing.assert_array_equal(again[1], labels)  # the fluid does not depend on speckle


def test_fluid_types_lie_in_their_anatomical_places():
    """In the clean phantom, the tissue next to each fluid type tells where it lies: IRF has
    inner-retina tissue above it and ends above the RPE, SRF rests on the RPE, PED lies right
    under the RPE band (whose level no fluid pixel has)."""
    img, labels = make_phantom(7, 128, 192, n_cysts=4, subretinal=True, ped=True,
                               fluid_types=True, speckle=False)
    binary = make_phantom(7, 128, 192, n_cysts=4, subretinal=True, ped=True, speckle=False)[1]
    np.testing.assert_array_equal(labels > 0, binary.astype(bool))
    np.testing.assert_array_equal(np.isclose(img, FLUID_LEVEL), labels > 0)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    inner = [LEVELS[t] for t in ("nfl", "gcl", "ipl", "inl", "opl", "onl")]
    checked = {1: 0, 2: 0, 3: 0}
    for c in range(192):
        rpe = np.where(np.isclose(img[:, c], LEVELS["rpe"]))[0]
        for cid in (1, 2, 3):
            fluid = np.where(labels[:, c] == cid)[0]
            if not fluid.size:
                continue
            checked[cid] += 1
            if cid == 1:
                assert np.isclose(img[fluid.min() - 1, c], inner).any() and fluid.max() < rpe.min()
            elif cid == 2:
                assert fluid.max() + 1 == rpe.min()
            else:
                assert fluid.min() - 1 == rpe.max()
    assert min(checked.values()) >= 3


def test_multiclass_phantom_dataset(tmp_path):
    out = write_phantom_dataset(tmp_path / "mc", n_subjects=2, per_subject=4, height=64,
                                width=96, seed=1, fluid_types=True)
    scans = read_dataset(out)
    assert scans.classes == ("IRF", "SRF", "PED")
    pooled = np.concatenate([m.ravel() for m in scans.masks])
    assert set(np.unique(pooled)) == {0, 1, 2, 3}
    rng = np.random.default_rng([1, 2, 3])
    kinds = dict(subretinal=bool(rng.random() < 0.6), ped=bool(rng.random() < 0.6))
    np.testing.assert_array_equal(scans.masks[7], make_phantom(rng, 64, 96, fluid_types=True,
                                                               dome_peak=(0.15, 0.3), **kinds)[1])
    for cid, cname in enumerate(("IRF", "SRF", "PED"), start=1):
        np.testing.assert_allclose(scans.index[f"{cname}_fraction"],
                                   [np.mean(m == cid) for m in scans.masks], atol=1e-6)
