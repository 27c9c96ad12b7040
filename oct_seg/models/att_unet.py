"""Attention U-Net (Oktay et al. 2018), structured as keras-unet-collection 0.1.13 `att_unet_2d`."""
import keras
from keras import layers

from oct_seg.models.blocks import (attention_gate, conv_stack, decode_step, get_activation,
                                   input_with_check, output_head, validate_common)
from oct_seg.models.unet import unet_encoder


def att_unet_base(input_tensor, filter_num, stack_num_down=2, stack_num_up=2, activation="ReLU",
                  atten_activation="ReLU", attention="add", batch_norm=False, pool=True,
                  unpool=True, name="attunet"):
    """Attention U-Net encoder-decoder without head.

    input_tensor: (B, H, W, C), H and W divisible by 2**(len(filter_num)-1).
    Each decoder level: upsample (filters f) -> attention gate on the skip (gated by the
    upsampled features, f // 2 intermediate channels) -> concat -> conv_stack(stack_num_up).
    Returns the full-resolution decoder features (B, H, W, filter_num[0]).
    """
    validate_common(filter_num, 1, pool, unpool, activation)
    skips = unet_encoder(input_tensor, filter_num, stack_num_down, activation, batch_norm, pool,
                         name)
    x = skips[-1]
    for i, (f, skip) in enumerate(zip(filter_num[-2::-1], skips[-2::-1])):
        x = decode_step(x, f, unpool, activation=activation, batch_norm=batch_norm,
                        name=f"{name}_up{i}_decode")
        gated = attention_gate(skip, x, max(f // 2, 1), atten_activation, attention,
                               name=f"{name}_up{i}_att")
        x = layers.Concatenate(axis=-1, name=f"{name}_up{i}_concat")([x, gated])
        x = conv_stack(x, f, stack_num_up, activation, batch_norm,
                       name=f"{name}_up{i}_conv_after_concat")
    return x


def build_att_unet(input_size=(512, 512, 1), filter_num=(64, 128, 256, 512, 1024), n_labels=1,
                   stack_num_down=2, stack_num_up=2, activation="ReLU", atten_activation="ReLU",
                   attention="add", output_activation="Sigmoid", batch_norm=False, pool=True,
                   unpool=True, name="attunet"):
    """Build an Attention U-Net keras.Model: (B, H, W, C) -> (B, H, W, n_labels).

    Arguments mirror keras-unet-collection `att_unet_2d` (same layers and parameter count);
    see build_unet for the shared ones and our differences (defaults, no backbone, any-size
    input). atten_activation: activation inside the gate (sigma_1 of Oktay et al., "ReLU");
    attention: "add" (additive attention of the paper) or "multiply".
    """
    validate_common(filter_num, n_labels, pool, unpool, activation, output_activation)
    get_activation(atten_activation)
    if attention not in ("add", "multiply"):
        raise ValueError(f"attention must be 'add' or 'multiply'; got {attention!r}")
    inputs, x = input_with_check(input_size, len(filter_num), name)
    x = att_unet_base(x, list(filter_num), stack_num_down, stack_num_up, activation,
                      atten_activation, attention, batch_norm, pool, unpool, name)
    out = output_head(x, n_labels, output_activation, name=f"{name}_output")
    return keras.Model(inputs, out, name=name)
