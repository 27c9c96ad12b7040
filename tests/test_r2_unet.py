"""R2U-Net: shared model tests plus the recurrent-residual unit against a hand count."""
import keras
import pytest
from model_tester import ModelTester

from oct_seg.models.blocks import recurrent_residual_block
from oct_seg.models.r2_unet import build_r2_unet


class TestR2UNet(ModelTester):
    builder = staticmethod(build_r2_unet)
    kwargs = dict(filter_num=[4, 8, 16], stack_num_down=1, stack_num_up=1, recur_num=1)
    input_hw = (32, 32)


@pytest.mark.parametrize("stack_num, recur_num", [(1, 0), (2, 2), (1, 3)])
def test_recurrent_unit_param_count(stack_num, recur_num):
    # 1x1 projection 3->4 (16) + stack_num * (recur_num + 1) 3x3 convs 4->4 (148 each)
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, recurrent_residual_block(inp, 4, stack_num, recur_num))
    assert model.count_params() == 16 + stack_num * (recur_num + 1) * 148


def test_bad_recur_num():
    with pytest.raises(ValueError, match="recur_num"):
        build_r2_unet((32, 32, 1), [2, 4], recur_num=-1)
