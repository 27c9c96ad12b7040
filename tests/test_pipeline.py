"""tf.data pipeline: size fitting, joint augmentation, determinism, Gaussian noise."""
import numpy as np
import pytest
from scipy import ndimage

from oct_seg.data import Augment, add_gaussian_noise, fit_to_size, make_dataset, make_phantom
from oct_seg.data.phantom import FLUID_LEVEL
from oct_seg.data.pipeline import GEOMETRY_ONLY, make_patch_dataset

NONE = Augment(rotation=0, shift=0, crop=1.0, flip=False, brightness=0, contrast=0, gamma=0)


def _phantoms(n=4, size=(64, 96), speckle=True, seed=0):
    pairs = [make_phantom(seed + i, *size, n_cysts=3, speckle=speckle) for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_fit_to_size_resize_and_pad_by_hand():
    checker = np.array([[0, 1], [1, 0]], np.uint8)
    np.testing.assert_array_equal(fit_to_size(checker, (4, 4), mask=True), np.kron(checker, np.ones((2, 2), np.uint8)))
    np.testing.assert_allclose(fit_to_size(np.full((10, 30), 0.3, np.float32), (16, 16)), 0.3, atol=1e-6)
    padded = fit_to_size(np.ones((10, 20), np.float32), (20, 20), policy="pad")
    assert padded.shape == (20, 20) and padded[5:15].min() == 1 and padded[:5].max() == 0 and padded[15:].max() == 0
    shrunk = fit_to_size(np.ones((40, 80, 1), np.float32), (20, 20), policy="pad")   # aspect kept: 10 x 20
    assert shrunk.shape == (20, 20, 1) and shrunk[:, :, 0].sum(axis=0).tolist() == [10.0] * 20
    m = fit_to_size(np.ones((7, 5), np.uint8), (10, 10), policy="pad", mask=True)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    with pytest.raises(ValueError, match="policy"):
        fit_to_size(checker, (4, 4), policy="crop")


def test_eval_dataset_is_fitted_data_in_order():
    images, masks = _phantoms(3, (48, 80))
    ds = make_dataset(images, masks, image_size=(32, 32), batch_size=2)
    batches = _batches(ds)
    assert [b[0].shape for b in batches] == [(2, 32, 32, 1), (1, 32, 32, 1)]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.dtype == np.float32 and y.dtype == np.float32 and set(np.unique(y)) <= {0.0, 1.0}
    for i in range(3):
        np.testing.assert_allclose(x[i, ..., 0], fit_to_size(images[i], (32, 32)), atol=1e-6)
        np.testing.assert_array_equal(y[i, ..., 0], fit_to_size(masks[i], (32, 32), mask=True))
    assert len(_batches(make_dataset(images, masks, (32, 32), batch_size=2, drop_remainder=True))) == 1
    (xp, yp), _ = _batches(make_dataset(images, masks, (32, 32), batch_size=2, policy="pad"))
    np.testing.assert_allclose(xp[0, ..., 0], fit_to_size(images[0], (32, 32), "pad"), atol=1e-6)
    assert xp[:, :6].max() == 0 and xp[:, 26:].max() == 0 and yp[:, :6].max() == 0    # 48x80 -> 19x32 + pad


def test_same_seed_same_batches_other_seed_and_epoch_differ():
    images, masks = _phantoms(4)

    def build(seed):
        return make_dataset(images, masks, (48, 48), batch_size=2, training=True, seed=seed,
                            augment=Augment(noise=0.02))

    a, b, c = build(7), build(7), build(8)
    a1, a2 = _batches(a), _batches(a)
    b1, b2 = _batches(b), _batches(b)
    for (xa, ya), (xb, yb) in zip(a1 + a2, b1 + b2):
        # images agree to float32 rounding (TF graph rewrites may differ by 1 ulp under load)
        np.testing.assert_allclose(xa, xb, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(ya, yb)
    assert np.abs(a1[0][0] - a2[0][0]).max() > 0.1          # a new epoch, new draws
    assert np.abs(a1[0][0] - _batches(c)[0][0]).max() > 0.1


def test_augmented_mask_sits_on_dark_pockets():
    images, masks = _phantoms(4, (128, 192))
    ds = make_dataset(images, masks, (96, 128), batch_size=4, training=True, seed=3)
    checked = 0
    for x, y in _batches(ds) + _batches(ds):
        assert set(np.unique(y)) <= {0.0, 1.0}
        for i, (xi, yi) in enumerate(zip(x[..., 0], y[..., 0].astype(bool))):
            inside = ndimage.binary_erosion(yi)
            if inside.sum() < 5:
                continue
            ring = ndimage.binary_dilation(yi, iterations=4) & ~ndimage.binary_dilation(yi, iterations=2)
            # brightness / contrast shift all levels, so compare differences: pocket << tissue around
            assert xi[ring].mean() - xi[inside].mean() > 0.2
            checked += 1
    assert checked >= 6


def test_augmented_mask_equals_rederived_pocket_mask():
    images, masks = _phantoms(4, (96, 128), speckle=False, seed=10)
    ds = make_dataset(images, masks, (96, 128), batch_size=4, training=True, augment=GEOMETRY_ONLY, seed=1)
    (x, y), = _batches(ds)
    derived = np.abs(x[..., 0] - FLUID_LEVEL) < 0.004
    truth = y[..., 0].astype(bool)
    moved = 0
    for d, t, m in zip(derived, truth, masks):
        assert d.sum() > 0.5 * t.sum() > 10
        band = ndimage.binary_dilation(t, iterations=2) & ~ndimage.binary_erosion(t, iterations=2)
        assert not np.any((d ^ t) & ~band)
        moved += not np.array_equal(t, m.astype(bool))
    assert moved >= 3                                         # the transform did change geometry
    assert np.any((derived[0] ^ truth[1]) & ~ndimage.binary_dilation(truth[1], iterations=2))


def test_flip_only_mirrors_and_none_is_identity():
    images, masks = _phantoms(4, (40, 56))
    x0, y0 = _batches(make_dataset(images, masks, (40, 56), batch_size=4))[0]
    xn, yn = _batches(make_dataset(images, masks, (40, 56), batch_size=4, training=True, shuffle=False,
                                   augment=NONE, noise_std=0.0))[0]
    np.testing.assert_allclose(xn, x0, atol=1e-6)
    np.testing.assert_array_equal(yn, y0)
    flip = Augment(rotation=0, shift=0, crop=1.0, flip=True, brightness=0, contrast=0, gamma=0)
    ds = make_dataset(images, masks, (40, 56), batch_size=4, training=True, shuffle=False, augment=flip, seed=2)
    kinds = set()
    for _ in range(3):
        (xf, yf), = _batches(ds)
        for i in range(4):
            if np.allclose(xf[i], x0[i], atol=1e-6):
                kinds.add("same")
                np.testing.assert_array_equal(yf[i], y0[i])
            else:
                np.testing.assert_allclose(xf[i], x0[i, :, ::-1], atol=1e-5)
                np.testing.assert_array_equal(yf[i], y0[i, :, ::-1])
                kinds.add("flipped")
    assert kinds == {"same", "flipped"}


def test_add_gaussian_noise_std_seed_and_clipping():
    grey = np.full((200, 200), 0.5, np.float32)
    a = add_gaussian_noise(grey, 0.05, "subject01_annot00")
    np.testing.assert_array_equal(a, add_gaussian_noise(grey, 0.05, "subject01_annot00"))
    assert not np.array_equal(a, add_gaussian_noise(grey, 0.05, "subject01_annot01"))
    assert a.dtype == np.float32 and abs((a - grey).std() - 0.05) < 0.002 and abs((a - grey).mean()) < 0.002
    dark = add_gaussian_noise(np.zeros((100, 100), np.float32), 0.05, 1)
    assert dark.min() == 0.0 and dark.std() < 0.04                    # clipping lowers the realised std
    np.testing.assert_array_equal(add_gaussian_noise(grey, 0.0, 0), grey)
    with pytest.raises(ValueError, match="std"):
        add_gaussian_noise(grey, -1.0, 0)
    with pytest.raises(ValueError, match="seed"):
        add_gaussian_noise(grey, 0.1, -3)


def test_noise_in_eval_and_training_modes():
    grey = [np.full((32, 32), 0.5, np.float32)] * 2
    masks = [np.zeros((32, 32), np.uint8)] * 2
    (x, _), = _batches(make_dataset(grey, masks, (32, 32), batch_size=2, noise_std=0.1, seed=4))
    np.testing.assert_allclose(x[1, ..., 0], add_gaussian_noise(grey[1], 0.1, (4, 1)), atol=1e-6)
    (xn, _), = _batches(make_dataset(grey, masks, (32, 32), batch_size=2, noise_std=0.1, seed=4,
                                     names=["a", "b"]))
    np.testing.assert_allclose(xn[1, ..., 0], add_gaussian_noise(grey[1], 0.1, (4, "b")), atol=1e-6)
    with pytest.raises(ValueError, match="Augment"):          # training noise is an augmentation
        make_dataset(grey, masks, (32, 32), training=True, noise_std=0.1)


def test_training_noise_std_is_drawn_per_sample():
    # 400 flat grey samples with Augment(noise=0.1) only: each sample's noise std is one draw
    # of U(0, 0.1) (measured on 32 x 32 = 1024 pixels: +-2 % of itself), so the 400 measured
    # stds spread evenly over [0, 0.1]: mean 0.05, deciles near 0.01 ... 0.09
    grey = [np.full((32, 32), 0.5, np.float32)] * 400
    masks = [np.zeros((32, 32), np.uint8)] * 400
    noisy = Augment(rotation=0, shift=0, crop=1.0, flip=False, brightness=0, contrast=0,
                    gamma=0, noise=0.1)
    (x, _), = _batches(make_dataset(grey, masks, (32, 32), batch_size=400, training=True,
                                    augment=noisy, seed=4))
    stds = (x[..., 0] - 0.5).reshape(400, -1).std(axis=1)
    assert stds.max() < 0.1 * 1.1 and stds.min() < 0.01
    np.testing.assert_allclose(stds.mean(), 0.05, atol=0.005)
    np.testing.assert_allclose(np.quantile(stds, [0.1, 0.5, 0.9]), [0.01, 0.05, 0.09], atol=0.01)
    with pytest.raises(ValueError, match="noise"):
        Augment(noise=-0.1)


def test_bad_arguments():
    images, masks = _phantoms(2, (40, 40))
    with pytest.raises(ValueError, match="2 images but 1 masks"):
        make_dataset(images, masks[:1])
    with pytest.raises(ValueError, match="shape"):
        make_dataset(images, [masks[0], masks[1][:30]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_dataset([im * 255 for im in images], masks)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(images, masks, batch_size=0)
    with pytest.raises(TypeError, match="augment"):
        make_dataset(images, masks, augment="strong")
    with pytest.raises(ValueError, match="crop"):
        Augment(crop=0.0)


def _locate(patch, canvas):
    """(row, col) offsets where ``patch`` equals a window of ``canvas`` exactly."""
    ph, pw = patch.shape
    hits = [(r, c) for r in range(canvas.shape[0] - ph + 1) for c in range(canvas.shape[1] - pw + 1)
            if np.array_equal(canvas[r:r + ph, c:c + pw], patch)]
    return hits


def test_patches_are_native_windows_of_image_and_mask():
    # unique pixel values: a patch can only come from one window, its mask from the same one
    rng = np.random.default_rng(0)
    image = rng.permutation(40 * 56).reshape(40, 56).astype(np.float32) / (40 * 56)
    mask = (rng.random((40, 56)) < 0.1).astype(np.uint8)
    ds = make_patch_dataset([image], [mask], patch_size=(16, 24), batch_size=1, augment=False,
                            foreground=0.5, seed=3)
    for x, y in ds.repeat(5):
        assert x.shape == (1, 16, 24, 1) and y.shape == (1, 16, 24, 1)
        (r, c), = _locate(x.numpy()[0, ..., 0], image)
        np.testing.assert_array_equal(y.numpy()[0, ..., 0], mask[r:r + 16, c:c + 24])


def test_foreground_oversampling_by_hand():
    # one fluid pixel in a 64 x 64 scan, 16 x 16 patches: a uniform patch holds it with
    # probability 16 * 16 / (49 * 49) = 0.107 (pixel far from the border); foreground=1 always
    image = np.full((64, 64), 0.5, np.float32)
    mask = np.zeros((64, 64), np.uint8)
    mask[30, 40] = 1

    def share(foreground):
        ds = make_patch_dataset([image] * 50, [mask] * 50, (16, 16), batch_size=50,
                                augment=False, foreground=foreground, seed=1)
        hits = [y.numpy().reshape(50, -1).max(axis=1) for _, y in ds.repeat(8)]
        return float(np.mean(hits))

    assert share(1.0) == 1.0
    assert abs(share(0.0) - 16 * 16 / 49 ** 2) < 0.04          # 400 draws: sd 0.015
    assert abs(share(0.5) - (0.5 + 0.5 * 16 * 16 / 49 ** 2)) < 0.06


def test_patch_larger_than_scan_is_zero_padded_and_same_seed_repeats():
    images, masks = _phantoms(3, (40, 56))
    ds = make_patch_dataset(images, masks, (48, 64), batch_size=3, augment=False, seed=5)
    x, y = next(iter(ds))
    assert x.shape == (3, 48, 64, 1)
    found = sorted(i for xi in x.numpy()[..., 0] for i, img in enumerate(images)
                   if _locate(img, xi) == [(4, 4)])                 # centred in a 48 x 64 canvas
    assert found == [0, 1, 2]                                          # (in shuffled order)
    assert y.numpy().sum() == sum(int((m > 0).sum()) for m in masks)
    again = make_patch_dataset(images, masks, (48, 64), batch_size=3, augment=True, seed=5)
    other = make_patch_dataset(images, masks, (48, 64), batch_size=3, augment=True, seed=6)
    a, b, c = (next(iter(d))[0].numpy() for d in (again, make_patch_dataset(
        images, masks, (48, 64), batch_size=3, augment=True, seed=5), other))
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("kwargs, match", [
    (dict(patch_size=(0, 8)), "patch_size"), (dict(foreground=1.5), "foreground"),
    (dict(batch_size=0), "batch_size"),
    (dict(augment="yes"), "augment")])
def test_patch_dataset_bad_arguments(kwargs, match):
    images, masks = _phantoms(1, (32, 32))
    with pytest.raises((ValueError, TypeError), match=match):
        make_patch_dataset(images, masks, **{"patch_size": (16, 16), **kwargs})


def _fluid_types(n=3, size=(64, 96)):
    pairs = [make_phantom(i, *size, n_cysts=3, subretinal=True, ped=True, fluid_types=True,
                          speckle=False) for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def test_multiclass_targets_are_one_hot_class_ids():
    images, labels = _fluid_types()
    eye = np.eye(4, dtype=np.float32)
    (x, y), = _batches(make_dataset(images, labels, image_size=(64, 96), batch_size=3,
                                    n_labels=4))
    np.testing.assert_array_equal(y, eye[np.stack(labels)])
    # a flip-only warp moves image and classes together: each y is the one-hot of the
    # labels or of their mirror, the one whose fluid pixels the flipped clean image shows
    flip = Augment(rotation=0, shift=0, crop=1.0, flip=True, brightness=0, contrast=0, gamma=0)
    seen = set()
    for epoch in range(3):
        ds = make_dataset(images, labels, image_size=(64, 96), batch_size=3, training=True,
                          augment=flip, seed=epoch, shuffle=False, n_labels=4)
        (x, y), = _batches(ds)
        for k in range(3):
            mirrored = not np.allclose(x[k, ..., 0], images[k], atol=1e-6)
            want = labels[k][:, ::-1] if mirrored else labels[k]
            np.testing.assert_array_equal(y[k], eye[want])
            seen.add(mirrored)
    assert seen == {True, False}
    # a rotating warp keeps one class per pixel and every class
    rot = Augment(rotation=10, shift=0.05, crop=0.9, flip=True, brightness=0, contrast=0, gamma=0)
    (x, y), = _batches(make_dataset(images, labels, image_size=(64, 96), batch_size=3,
                                    training=True, augment=rot, n_labels=4))
    np.testing.assert_array_equal(y.sum(-1), 1.0)
    assert (y[..., 1:].sum(axis=(0, 1, 2)) > 0).all()
    with pytest.raises(ValueError, match=r"masks\[0\] holds class ids \[3\] outside 0..2"):
        make_dataset(images, labels, image_size=(64, 96), n_labels=3)


def test_multiclass_patches_are_centred_on_any_fluid_class():
    images, labels = _fluid_types(4, (64, 96))
    ds = make_patch_dataset(images, labels, (16, 32), batch_size=4, augment=False,
                            foreground=1.0, n_labels=4)
    for x, y in ds.take(3):
        x, y = x.numpy(), y.numpy()
        assert y.shape == (4, 16, 32, 4) and np.array_equal(y.sum(-1), np.ones((4, 16, 32)))
        assert (y[..., 0] < 0.5).any(axis=(1, 2)).all()       # every patch holds fluid
        # the patch's classes are where the clean image is at the fluid level
        np.testing.assert_array_equal(y[..., 0] < 0.5, np.isclose(x[..., 0], FLUID_LEVEL))
