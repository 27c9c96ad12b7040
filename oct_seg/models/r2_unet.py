"""R2U-Net (Alom et al. 2018), structured as keras-unet-collection 0.1.13 `r2_unet_2d`."""
import keras
from keras import layers

from oct_seg.models.blocks import (conv_stack, decode_step, encode_step, input_with_check,
                                   output_head, recurrent_residual_block, validate_common)


def r2_unet_base(input_tensor, filter_num, stack_num_down=2, stack_num_up=2, recur_num=2,
                 activation="ReLU", batch_norm=False, pool=True, unpool=True, name="r2_unet"):
    """R2U-Net encoder-decoder without head.

    input_tensor: (B, H, W, C), H and W divisible by 2**(len(filter_num)-1).
    Encoder level: [downsample ->] recurrent-residual unit (stack_num_down recurrent convs,
    recur_num recurrences each). Decoder level: upsample -> conv_stack(1) -> concat skip ->
    recurrent-residual unit (stack_num_up). Returns (B, H, W, filter_num[0]).
    """
    validate_common(filter_num, 1, pool, unpool, activation)
    kw = dict(recur_num=recur_num, activation=activation, batch_norm=batch_norm)
    x = recurrent_residual_block(input_tensor, filter_num[0], stack_num_down, name=f"{name}_down0",
                                 **kw)
    skips = [x]
    for i, f in enumerate(filter_num[1:], start=1):
        x = encode_step(x, f, pool, activation=activation, batch_norm=batch_norm,
                        name=f"{name}_down{i}_encode")
        x = recurrent_residual_block(x, f, stack_num_down, name=f"{name}_down{i}", **kw)
        skips.append(x)
    for i, (f, skip) in enumerate(zip(filter_num[-2::-1], skips[-2::-1]), start=1):
        x = decode_step(x, f, unpool, activation=activation, batch_norm=batch_norm,
                        name=f"{name}_up{i}_decode")
        x = conv_stack(x, f, 1, activation, batch_norm, name=f"{name}_up{i}_conv_before_concat")
        x = layers.Concatenate(axis=-1, name=f"{name}_up{i}_concat")([x, skip])
        x = recurrent_residual_block(x, f, stack_num_up, name=f"{name}_up{i}", **kw)
    return x


def build_r2_unet(input_size=(512, 512, 1), filter_num=(64, 128, 256, 512, 1024), n_labels=1,
                  stack_num_down=2, stack_num_up=2, recur_num=2, activation="ReLU",
                  output_activation="Sigmoid", batch_norm=False, pool=True, unpool=True,
                  name="r2_unet"):
    """Build an R2U-Net keras.Model: (B, H, W, C) -> (B, H, W, n_labels).

    Arguments mirror keras-unet-collection `r2_unet_2d` (same layers and parameter count);
    see build_unet for the shared ones and our differences. recur_num: recurrences per
    recurrent conv (each with its own weights, as in keras-unet-collection).
    """
    validate_common(filter_num, n_labels, pool, unpool, activation, output_activation)
    if int(recur_num) != recur_num or recur_num < 0:
        raise ValueError(f"recur_num must be an integer >= 0; got {recur_num!r}")
    inputs, x = input_with_check(input_size, len(filter_num), name)
    x = r2_unet_base(x, list(filter_num), stack_num_down, stack_num_up, recur_num, activation,
                     batch_norm, pool, unpool, name)
    out = output_head(x, n_labels, output_activation, name=f"{name}_output")
    return keras.Model(inputs, out, name=name)
