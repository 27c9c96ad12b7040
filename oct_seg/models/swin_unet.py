"""Swin-UNet (Cao et al. 2021) as compared by Darooei et al. 2023, any input size.

Arguments mirror keras-unet-collection (kuc) 0.1.13 `swin_unet_2d`; defaults are kuc's
documented example (filter_num_begin=64, depth=4, stack_num_down=stack_num_up=2,
patch_size=(4, 4), num_heads=[4, 8, 8, 8], window_size=[4, 2, 2, 2], num_mlp=512) with a
512 x 512 x 1 input and one sigmoid channel.

Structure: PatchEmbedding (Conv2D kernel = stride = patch, LayerNorm) -> per level
`stack_num_down` Swin blocks (window attention, every second block shifted by window // 2
when shift_window) -> PatchMerging between levels (C doubles, grid halves). Decoder per level:
PatchExpanding x2 (C halves) -> concat skip -> bias-free Dense(C) -> `stack_num_up` Swin
blocks. LayerNorm -> PatchExpanding by the patch size to full resolution (C = filter_num_begin,
as Swin-Unet) -> 1 x 1 conv head. MLPs are Dense(num_mlp) -> GELU -> Dense(C), num_mlp is the
same at every level (kuc). No dropout / drop-path (kuc turns them off).

Choices:
* filter_num_begin = 64 (kuc's example) rather than Swin-T's 96: the dense layers dominate
  the cost and scale with C^2, so 96 (heads 3, 6, 12, 24) has 15.8 M instead of 8.0 M
  parameters and about twice the dense-layer FLOPs (at 512 x 512 the first level already has
  128 x 128 = 16384 tokens); 64 keeps CPU training of 496 x 768 B-scans practical.
* Any size: no absolute position embedding (Swin default, kuc adds one, which fixes the size);
  the relative position bias is per window and the shift mask is built inside call() from the
  dynamic grid size, so one model accepts every H, W that is a multiple of
  lcm over levels i of patch * 2**i * window_size[i] (64 by default: 496 x 768 B-scans are
  padded to 512 x 768 by oct_seg.inference.predict_image). SizeCheck states this multiple.
* The shift is applied at every level, also where the grid equals one window (official Swin
  switches it off there, which would make the net's behaviour depend on the input size).
* PatchMerging has the Swin LayerNorm before its projection (kuc omits it).
"""
import math

import keras
from keras import layers

from oct_seg.models.blocks import output_head, sized_input
from oct_seg.models.transformer import (PatchEmbedding, PatchExpanding, PatchMerging,
                                        SwinTransformerBlock, _pair, _positive_int)


def _per_level(value, depth, what):
    values = [value] * depth if isinstance(value, int) else list(value)
    if len(values) != depth:
        raise ValueError(f"{what} needs one entry per level (depth={depth}); got {value!r}")
    return [_positive_int(v, what) for v in values]


def size_multiple(patch_size, window_size):
    """H, W must be multiples of lcm_i(patch * 2**i * window_size[i]) (both patch axes)."""
    ph, pw = _pair(patch_size, "patch_size")
    steps = [p * 2 ** i * ws for i, ws in enumerate(window_size) for p in (ph, pw)]
    return math.lcm(*steps)


def _validate(filter_num_begin, depth, stack_num_down, stack_num_up, patch_size, num_heads,
              window_size, num_mlp):
    embed_dim = _positive_int(filter_num_begin, "filter_num_begin")
    depth = _positive_int(depth, "depth")
    _positive_int(stack_num_down, "stack_num_down")
    _positive_int(stack_num_up, "stack_num_up")
    _positive_int(num_mlp, "num_mlp")
    patch = _pair(patch_size, "patch_size")
    heads = _per_level(num_heads, depth, "num_heads")
    windows = _per_level(window_size, depth, "window_size")
    for i, h in enumerate(heads):
        dim = embed_dim * 2 ** i
        if dim % h:
            raise ValueError(f"level {i} has {dim} channels (filter_num_begin * 2**{i}), not "
                             f"divisible by num_heads[{i}]={h}; use a divisor of {dim}")
    return embed_dim, depth, patch, heads, windows


def _swin_stack(x, n, num_heads, window, num_mlp, shift_window, name):
    shift = window // 2 if shift_window else 0
    for j in range(n):
        x = SwinTransformerBlock(num_heads, window, shift if j % 2 else 0, num_mlp,
                                 name=f"{name}_swin{j}")(x)
    return x


def swin_unet_base(input_tensor, filter_num_begin=64, depth=4, stack_num_down=2,
                   stack_num_up=2, patch_size=(4, 4), num_heads=(4, 8, 8, 8),
                   window_size=(4, 2, 2, 2), num_mlp=512, shift_window=True, name="swin_unet"):
    """Swin-UNet without head: (B, H, W, C) -> (B, H, W, filter_num_begin).

    H, W must be multiples of size_multiple(patch_size, window_size) (see module docstring).
    """
    dim, depth, patch, heads, windows = _validate(filter_num_begin, depth, stack_num_down,
                                                  stack_num_up, patch_size, num_heads,
                                                  window_size, num_mlp)
    x = PatchEmbedding(patch, dim, normalize=True, name=f"{name}_patch_embed")(input_tensor)
    skips = []
    for i in range(depth):
        if i:
            x = PatchMerging(name=f"{name}_down{i}_merge")(x)
        x = _swin_stack(x, stack_num_down, heads[i], windows[i], num_mlp, shift_window,
                        f"{name}_down{i}")
        skips.append(x)
    for i in range(depth - 2, -1, -1):
        x = PatchExpanding(2, name=f"{name}_up{i}_expand")(x)
        x = layers.Concatenate(axis=-1, name=f"{name}_up{i}_concat")([x, skips[i]])
        x = layers.Dense(dim * 2 ** i, use_bias=False, name=f"{name}_up{i}_proj")(x)
        x = _swin_stack(x, stack_num_up, heads[i], windows[i], num_mlp, shift_window,
                        f"{name}_up{i}")
    x = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm_up")(x)
    return PatchExpanding(patch, out_dim=dim, name=f"{name}_final_expand")(x)


def build_swin_unet(input_size=(512, 512, 1), filter_num_begin=64, n_labels=1, depth=4,
                    stack_num_down=2, stack_num_up=2, patch_size=(4, 4), num_heads=(4, 8, 8, 8),
                    window_size=(4, 2, 2, 2), num_mlp=512, output_activation="Sigmoid",
                    shift_window=True, name="swin_unet"):
    """Build Swin-UNet: (B, H, W, C) -> (B, H, W, n_labels) probabilities (or logits).

    filter_num_begin: channels (= embedding dim) of level 0, doubled per level; depth: number
    of levels (depth - 1 patch mergings); stack_num_down / stack_num_up: Swin blocks per
    encoder / decoder level; patch_size: (ph, pw) patch of the embedding; num_heads,
    window_size: per level (int = same for all); num_mlp: MLP units; shift_window: alternate
    plain and shifted windows; output_activation: "Sigmoid", "Softmax" (n_labels >= 2) or None.
    input_size (H, W, C) may have None H, W; H, W must be multiples of
    size_multiple(patch_size, window_size) (64 by default). Raises ValueError otherwise.
    """
    _, depth, patch, heads, windows = _validate(filter_num_begin, depth, stack_num_down,
                                                stack_num_up, patch_size, num_heads,
                                                window_size, num_mlp)
    _positive_int(n_labels, "n_labels")  # output_activation is checked by output_head
    context = (f"{name} (depth {depth}, patch {patch[0]}x{patch[1]}, windows {windows}: "
               "lcm of patch * 2**level * window)")
    inputs, x = sized_input(input_size, size_multiple(patch, windows), context, name,
                            "or reduce depth / window_size / patch_size")
    x = swin_unet_base(x, filter_num_begin, depth, stack_num_down, stack_num_up, patch, heads,
                       windows, num_mlp, shift_window, name)
    out = output_head(x, n_labels, output_activation, name=f"{name}_output")
    return keras.Model(inputs, out, name=name)
