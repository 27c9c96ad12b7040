"""The real Duke DME scans (fixture duke_dir): loading, folds, augmentation, noise."""
import numpy as np
import pytest
from PIL import Image

from oct_seg.data import add_gaussian_noise, make_dataset, make_folds, read_dataset


@pytest.fixture(scope="module")
def duke(duke_dir):
    return read_dataset(duke_dir)


def test_all_88_pairs_load_with_index_values(duke, duke_dir):
    assert len(duke) == 88
    assert sorted(duke.index["subject"].unique()) == list(range(1, 9))
    raw = np.asarray(Image.open(duke_dir / "images" / "subject03_annot04.png"))
    np.testing.assert_array_equal(duke.subset(["subject03_annot04"]).images[0] * 255, raw.astype(np.float32))
    for img, mask, row in zip(duke.images, duke.masks, duke.index.itertuples()):
        assert img.shape == mask.shape == (row.height, row.width) == (496, 768)
        assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1 and img.std() > 0.05
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert mask.mean() == pytest.approx(row.fluid_fraction, abs=1e-6)
    # index.csv has 26 empty masks (the shared README says 25: off by one, checked against the files)
    assert sum(m.sum() == 0 for m in duke.masks) == (duke.index["n_fluid_components"] == 0).sum() == 26


def test_folds_by_patient_on_real_index(duke):
    folds = make_folds(duke.index, n_folds=5, seed=0)
    subject = dict(zip(duke.index["name"], duke.index["subject"]))
    val = [{subject[n] for n in f["val"]} for f in folds]
    assert sorted(s for v in val for s in v) == list(range(1, 9))
    for f, v in zip(folds, val):
        assert not v & {subject[n] for n in f["train"]}
        assert len(f["train"]) + len(f["val"]) == 88
        assert any(duke.masks[duke.names.index(n)].any() for n in f["val"])   # every fold has fluid
    with pytest.raises(ValueError, match="maximum is n_folds=8"):
        make_folds(duke.index, n_folds=9)


def test_augmented_real_batch_is_valid_and_reproducible(duke):
    few = duke.subset(["subject01_annot03", "subject05_annot05", "subject08_annot00"])
    build = lambda seed: make_dataset(few.images, few.masks, (128, 128), batch_size=3, training=True, seed=seed)
    (x1, y1), = [(x.numpy(), y.numpy()) for x, y in build(0)]
    (x2, y2), = [(x.numpy(), y.numpy()) for x, y in build(0)]
    (x3, _), = [(x.numpy(), y.numpy()) for x, y in build(1)]
    np.testing.assert_allclose(x1, x2, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(y1, y2)
    assert np.abs(x1 - x3).max() > 0.1
    assert x1.shape == (3, 128, 128, 1) and 0 <= x1.min() and x1.max() <= 1 and set(np.unique(y1)) <= {0, 1}
    fluid = y1[..., 0] > 0
    assert fluid.any() and x1[..., 0][fluid].mean() < x1[..., 0][~fluid].mean() + 0.1


@pytest.mark.parametrize("std", [0.05, 0.1])
def test_noise_raises_residual_std_by_std(duke, std):
    img = duke.images[10]
    noisy = add_gaussian_noise(img, std, duke.names[10])
    away = (img > 4 * std) & (img < 1 - 4 * std)          # far from clipping
    assert away.mean() > 0.05
    residual = (noisy - img)[away]
    assert residual.std() == pytest.approx(std, rel=0.03) and abs(residual.mean()) < 0.003
    # the image's own variance rises by std^2 where nothing clips
    assert noisy[away].var() == pytest.approx(img[away].var() + std**2, rel=0.05)
    np.testing.assert_array_equal(noisy, add_gaussian_noise(img, std, duke.names[10]))
