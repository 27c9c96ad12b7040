"""U-Net (Ronneberger et al. 2015), structured as keras-unet-collection 0.1.13 `unet_2d`."""
import keras
from keras import layers

from oct_seg.models.blocks import (conv_stack, decode_step, encode_step, input_with_check,
                                   output_head, validate_common)


def unet_encoder(x, filter_num, stack_num_down=2, activation="ReLU", batch_norm=False, pool=True,
                 name="unet"):
    """U-Net encoder: level 0 conv_stack, then (downsample -> conv_stack) per level.

    Returns the list of features, shallowest first: level i is (B, H/2**i, W/2**i, filter_num[i]).
    """
    x = conv_stack(x, filter_num[0], stack_num_down, activation, batch_norm,
                   name=f"{name}_down0")
    skips = [x]
    for i, f in enumerate(filter_num[1:], start=1):
        x = encode_step(x, f, pool, activation=activation, batch_norm=batch_norm,
                        name=f"{name}_down{i}_encode")
        x = conv_stack(x, f, stack_num_down, activation, batch_norm, name=f"{name}_down{i}_conv")
        skips.append(x)
    return skips


def unet_base(input_tensor, filter_num, stack_num_down=2, stack_num_up=2, activation="ReLU",
              batch_norm=False, pool=True, unpool=True, name="unet"):
    """U-Net encoder-decoder without head.

    input_tensor: (B, H, W, C), H and W divisible by 2**(len(filter_num)-1).
    Encoder: unet_encoder; decoder: unet_decoder. Returns the full-resolution decoder features (B, H, W, filter_num[0]).
    """
    validate_common(filter_num, 1, pool, unpool, activation)
    skips = unet_encoder(input_tensor, filter_num, stack_num_down, activation, batch_norm, pool,
                         name)
    return unet_decoder(skips[-1], skips[:-1], filter_num, stack_num_up, activation, batch_norm,
                        unpool, name)


def unet_decoder(x, skips, filter_num, stack_num_up=2, activation="ReLU", batch_norm=False,
                 unpool=True, name="unet"):
    """U-Net decoder (also TransUNet's): per level, deepest first, upsample -> conv_stack(1)
    -> concat skip -> conv_stack(stack_num_up).

    x: deepest features (B, H/2**L, W/2**L, filter_num[-1]), L = len(filter_num) - 1; skips: the
    L shallower encoder features, shallowest first. Returns (B, H, W, filter_num[0]).
    """
    for i, (f, skip) in enumerate(zip(filter_num[-2::-1], skips[::-1])):
        x = decode_step(x, f, unpool, activation=activation, batch_norm=batch_norm,
                        name=f"{name}_up{i}_decode")
        x = conv_stack(x, f, 1, activation, batch_norm, name=f"{name}_up{i}_conv_before_concat")
        x = layers.Concatenate(axis=-1, name=f"{name}_up{i}_concat")([x, skip])
        x = conv_stack(x, f, stack_num_up, activation, batch_norm,
                       name=f"{name}_up{i}_conv_after_concat")
    return x


def build_unet(input_size=(512, 512, 1), filter_num=(64, 128, 256, 512, 1024), n_labels=1,
               stack_num_down=2, stack_num_up=2, activation="ReLU", output_activation="Sigmoid",
               batch_norm=False, pool=True, unpool=True, name="unet"):
    """Build a U-Net keras.Model: (B, H, W, C) -> (B, H, W, n_labels).

    Arguments mirror keras-unet-collection `unet_2d` (same layers, same parameter count) except:
    defaults input_size=(512, 512, 1), n_labels=1, output_activation="Sigmoid",
    filter_num=(64, ..., 1024); no backbone/weights options (ImageNet RGB backbones do not fit
    grey OCT). input_size may be (None, None, C): any H, W divisible by 2**(levels-1).

    filter_num: channels per level (len = number of levels). stack_num_down / stack_num_up:
    convs per encoder / decoder level. activation: see blocks.get_activation.
    output_activation: "Sigmoid", "Softmax" (n_labels >= 2) or None (logits).
    pool: True/"max", "ave" or False (strided conv); unpool: True/"bilinear", "nearest" or
    False (transposed conv).
    """
    validate_common(filter_num, n_labels, pool, unpool, activation, output_activation)
    inputs, x = input_with_check(input_size, len(filter_num), name)
    x = unet_base(x, list(filter_num), stack_num_down, stack_num_up, activation, batch_norm,
                  pool, unpool, name)
    out = output_head(x, n_labels, output_activation, name=f"{name}_output")
    return keras.Model(inputs, out, name=name)
