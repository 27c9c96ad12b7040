"""Parameter-count parity with keras-unet-collection 0.1.13 (the implementations compared by
Darooei et al. 2023). Same options -> same number of weights, except the deliberate
differences asserted below with hand-derived counts."""
import contextlib
import io

import pytest

kuc = pytest.importorskip("keras_unet_collection.models")

from oct_seg.models.att_unet import build_att_unet  # noqa: E402
from oct_seg.models.r2_unet import build_r2_unet  # noqa: E402
from oct_seg.models.unet import build_unet  # noqa: E402
from oct_seg.models.unet3plus import build_unet3plus  # noqa: E402

SIZE = (32, 32, 1)
# every pool / unpool kind, with and without batch norm, in three builds per network
OPTIONS = [dict(batch_norm=False, pool=True, unpool=True),
           dict(batch_norm=True, pool=False, unpool=False),
           dict(batch_norm=True, pool="ave", unpool="nearest")]


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):  # unet_3plus_2d prints its settings
        return fn(*args, **kwargs)


@pytest.mark.parametrize("opts", OPTIONS, ids=str)
@pytest.mark.parametrize("ours, theirs, extra", [
    (build_unet, kuc.unet_2d, {}),
    (build_att_unet, kuc.att_unet_2d, dict(attention="multiply")),
    (build_att_unet, kuc.att_unet_2d, {}),
    (build_r2_unet, kuc.r2_unet_2d, dict(recur_num=1)),
], ids=["unet", "att_unet_multiply", "att_unet", "r2_unet"])
def test_same_param_count(ours, theirs, extra, opts):
    kw = dict(stack_num_down=2, stack_num_up=1, **extra, **opts)
    a = ours(SIZE, [4, 8, 16], n_labels=2, output_activation="Softmax", **kw)
    b = theirs(SIZE, [4, 8, 16], 2, output_activation="Softmax", **kw)
    assert a.count_params() == b.count_params()
    assert a.output_shape == b.output_shape


def _unet3plus_extra(f0, skip, agg, levels, batch_norm, pool):
    """Weights of the level-0 encoder branches kuc 0.1.13 omits (one per decoder level d)."""
    norm = 4 if batch_norm else 1  # BN gamma, beta, mean, variance; else the conv bias
    total = 0
    for d in range(levels - 1):
        down = 0 if d == 0 or pool is not False else (2 ** d) ** 2 * f0 * skip + norm * skip
        conv_in = skip if (d > 0 and pool is False) else f0
        total += down + 9 * conv_in * skip + norm * skip + 9 * skip * agg
    return total


@pytest.mark.parametrize("opts, deep_supervision", [(OPTIONS[0], False), (OPTIONS[1], True),
                                                    (OPTIONS[2], False)], ids=str)
def test_unet3plus_differs_only_by_level0_skips(opts, deep_supervision):
    # Deliberate difference: kuc's decoders never receive encoder level 0 (loop stops one level
    # short); Huang et al. 2020 feed every level to every decoder, and so do we.
    filters = [4, 8, 16, 32]
    kw = dict(stack_num_down=2, stack_num_up=1, deep_supervision=deep_supervision, **opts)
    a = build_unet3plus(SIZE, 2, filters, **kw)
    b = _quiet(kuc.unet_3plus_2d, SIZE, 2, filters, **kw)
    extra = _unet3plus_extra(4, 4, 16, 4, opts["batch_norm"], opts["pool"])
    assert a.count_params() - b.count_params() == extra
    assert [o.shape for o in a.outputs] == [o.shape for o in b.outputs]


def test_unet3plus_hand_count_of_difference():
    # The formula above against a by-hand value (pool=True, no BN, f0 = skip = 4, agg = 16,
    # 3 decoders): each adds conv 3x3 4->4 (144 + 4 bias) and 4 more fusion inputs (9*4*16).
    assert _unet3plus_extra(4, 4, 16, 4, False, True) == 3 * (144 + 4 + 576) == 2172


def test_prelu_shares_slopes_over_space():
    # Deliberate difference: kuc's PReLU learns one slope per pixel and channel (needs a fixed
    # input size); ours one per channel. 2 levels [4, 8], one conv per stack, 32 x 32 input:
    # PReLU layers at 32x32x4 (down0, up0 before concat, up0 after concat) and 16x16x8 (down1).
    kw = dict(stack_num_down=1, stack_num_up=1, activation="PReLU")
    a = build_unet(SIZE, [4, 8], 2, output_activation="Softmax", **kw)
    b = kuc.unet_2d(SIZE, [4, 8], 2, output_activation="Softmax", **kw)
    assert b.count_params() - a.count_params() == (3 * 32 * 32 * 4 + 16 * 16 * 8) - (3 * 4 + 8)
