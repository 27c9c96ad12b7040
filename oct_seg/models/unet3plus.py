"""UNet 3+ (Huang et al. 2020), structured as keras-unet-collection 0.1.13 `unet_3plus_2d`.

Full-scale skips: decoder level d concatenates every encoder level k <= d (max-pooled /
strided down to level d) and every deeper decoder level (upsampled), each through a 3x3 conv
with filter_num_skip[d] channels, then fuses them with conv-BN-activation
(filter_num_aggregate channels; BN always, as in the paper and keras-unet-collection).

Deliberate difference from keras-unet-collection 0.1.13: there, each decoder level misses the
full-resolution encoder level 0 (its loop stops one level short); here all levels feed every
decoder, as in Huang et al. 2020 (tests/test_parity_kuc.py asserts the exact extra parameters).
The optional classification-guided module of the paper is not implemented (nor is it in
keras-unet-collection): it needs image-level labels that the fluid datasets do not provide.
"""
import keras
from keras import layers

from oct_seg.models.blocks import (conv_stack, decode_step, deep_supervision_head, encode_step,
                                   input_with_check, output_head, validate_common)
from oct_seg.models.unet import unet_encoder


def _resolve_widths(filter_num_down, filter_num_skip, filter_num_aggregate):
    """Apply the "auto" rules: skip = [f0] * (levels-1), aggregate = levels * f0."""
    depth = len(filter_num_down)
    if isinstance(filter_num_skip, str) and filter_num_skip == "auto":
        filter_num_skip = [filter_num_down[0]] * (depth - 1)
    if isinstance(filter_num_aggregate, str) and filter_num_aggregate == "auto":
        filter_num_aggregate = depth * filter_num_down[0]
    if not isinstance(filter_num_skip, (list, tuple)) or len(filter_num_skip) != depth - 1:
        raise ValueError(f"filter_num_skip must be 'auto' or a list of {depth - 1} ints (one per "
                         f"decoder level, deepest first); got {filter_num_skip!r}")
    if int(filter_num_aggregate) != filter_num_aggregate or filter_num_aggregate < 1:
        raise ValueError(f"filter_num_aggregate must be 'auto' or a positive int; "
                         f"got {filter_num_aggregate!r}")
    return list(filter_num_skip), int(filter_num_aggregate)


def unet3plus_base(input_tensor, filter_num_down, filter_num_skip="auto",
                   filter_num_aggregate="auto", stack_num_down=2, stack_num_up=1,
                   activation="ReLU", batch_norm=False, pool=True, unpool=True, name="unet3plus"):
    """UNet 3+ encoder-decoder without head.

    input_tensor: (B, H, W, C), H and W divisible by 2**(len(filter_num_down)-1).
    filter_num_skip: channels of each full-scale skip conv per decoder level, deepest decoder
    first ("auto": filter_num_down[0]). filter_num_aggregate: channels after fusion ("auto":
    levels * filter_num_down[0]). Returns the decoder features shallowest first:
    [D0 (B, H, W, agg), D1 (H/2), ..., D_{n-2}, E_{n-1} (deepest encoder output)].
    """
    validate_common(filter_num_down, 1, pool, unpool, activation, arg="filter_num_down")
    skip_widths, agg = _resolve_widths(filter_num_down, filter_num_skip, filter_num_aggregate)
    enc = unet_encoder(input_tensor, filter_num_down, stack_num_down, activation, batch_norm,
                       pool, name)
    n = len(enc) - 1  # index of the deepest level
    dec = {n: enc[n]}
    for i, d in enumerate(range(n - 1, -1, -1)):
        f = skip_widths[i]
        branches = []
        for k in range(n + 1):
            tag = f"{name}_{i}_from{k}"
            if k < d:
                x = encode_step(enc[k], f, pool, 2 ** (d - k), activation, batch_norm,
                                name=f"{tag}_down")
            elif k == d:
                x = enc[k]
            else:
                x = decode_step(dec[k], f, unpool, 2 ** (k - d), activation, batch_norm,
                                name=f"{tag}_up")
            branches.append(conv_stack(x, f, 1, activation, batch_norm, name=f"{tag}_conv"))
        x = layers.Concatenate(axis=-1, name=f"{name}_concat_{i}")(branches)
        dec[d] = conv_stack(x, agg, stack_num_up, activation, batch_norm=True,
                            name=f"{name}_fusion_conv_{i}")
    return [dec[d] for d in range(n + 1)]


def build_unet3plus(input_size=(512, 512, 1), n_labels=1,
                    filter_num_down=(64, 128, 256, 512, 1024), filter_num_skip="auto",
                    filter_num_aggregate="auto", stack_num_down=2, stack_num_up=1,
                    activation="ReLU", output_activation="Sigmoid", batch_norm=False, pool=True,
                    unpool=True, deep_supervision=False, name="unet3plus"):
    """Build a UNet 3+ keras.Model: (B, H, W, C) -> (B, H, W, n_labels).

    Arguments mirror keras-unet-collection `unet_3plus_2d` (see module docstring for the one
    structural difference, and build_unet for defaults / no backbone / any-size input).
    The head is a 3x3 conv + activation. deep_supervision=True: the model has n_levels outputs,
    all (B, H, W, n_labels): side outputs of D1, ..., D_{n-2}, E_{n-1} (3x3 conv, upsampled)
    then the final output LAST (inference uses the last output). Give Keras one loss per
    output (or a single loss, applied to all).
    """
    validate_common(filter_num_down, n_labels, pool, unpool, activation, output_activation,
                    arg="filter_num_down")
    _resolve_widths(filter_num_down, filter_num_skip, filter_num_aggregate)
    inputs, x = input_with_check(input_size, len(filter_num_down), name)
    dec = unet3plus_base(x, list(filter_num_down), filter_num_skip, filter_num_aggregate,
                         stack_num_down, stack_num_up, activation, batch_norm, pool, unpool, name)
    final = output_head(dec[0], n_labels, output_activation, kernel_size=3,
                        name=f"{name}_output_final")
    if not deep_supervision:
        return keras.Model(inputs, final, name=name)
    sides = [deep_supervision_head(dec[d], n_labels, 2 ** d, unpool, output_activation,
                                   name=f"{name}_output_sup{d - 1}")
             for d in range(1, len(dec))]
    return keras.Model(inputs, sides + [final], name=name)
