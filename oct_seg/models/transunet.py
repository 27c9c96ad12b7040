"""TransUNet (Chen et al. 2021) as compared by Darooei et al. 2023 (J Med Signals Sens).

`build_transunet()` with no arguments is the paper's Table 2 network: input 512 x 512 x 1,
5 levels with filter_num [64, 128, 256, 512, 1024], 2 convs per encoder / decoder level,
2 transformer blocks with 2 heads, embed_dim 96, MLP 384 units with GELU, 4 x 4 patches,
one sigmoid output channel. The arguments mirror keras-unet-collection (kuc) 0.1.13
`transunet_2d` plus `patch_size` (kuc has none: its tokens are the 1 x 1 cells of the deepest
CNN map).

Choices the paper leaves open (decided here):
* Where the 4 x 4 patches are cut: on the deepest CNN feature map (TransUNet-hybrid style),
  not on the image. Token counts and attention cost at 512 x 512, per block, per image:
    - image, 4 x 4 patches:         128 x 128 = 16384 tokens; 2 heads x 16384^2 = 537 M
      attention weights = 2.1 GB float32 (training keeps several such tensors per block) and
      ~100 GFLOP for q k^T alone: not trainable on CPU, and the deepest CNN map would be unused.
    - deepest map (32 x 32 x 1024), 1 x 1 cells (kuc, patch_size=(1, 1)): 1024 tokens,
      2.1 M attention weights (8 MB), ~0.4 GFLOP.
    - deepest map, 4 x 4 patches (default): 8 x 8 = 64 tokens, 8 K weights: the transformer
      costs < 1% of the CNN; its receptive field is the whole B-scan.
* Token path: deepest map (B, h, w, F) -> PatchEmbedding Conv2D(embed_dim, kernel = stride =
  patch) -> learned PositionEmbedding -> num_transformer pre-LN blocks -> LayerNorm (ViT final
  norm) -> Conv1x1 back to F channels -> bilinear upsampling by the patch size -> added to the
  deepest map (residual fusion), which then starts the decoder. kuc instead *replaces* the
  deepest map by the transformer output and has an extra bias-free 1 x 1 conv before the
  tokens (a linear map followed by the linear embedding, so redundant); with patches of 4 x 4
  the residual keeps the 32 x 32 CNN detail that an 8 x 8 token grid cannot carry.
  patch_size=(1, 1) gives exactly kuc's tokens (one per deepest-map cell, no upsampling).
* Attention: keras MultiHeadAttention with key_dim = embed_dim per head (kuc convention;
  the paper builds its nets with kuc); the MLP is Dense(num_mlp) -> GELU (exact erf form) ->
  Dense(embed_dim) (kuc also applies GELU after the second Dense, unlike ViT; not copied).
  No dropout (kuc has none), no class token.
* Any input size: H and W must be multiples of 2**(levels-1) * patch (64 by default), e.g.
  496 x 768 B-scans are padded to 512 x 768 by oct_seg.inference.predict_image. The position
  table is learned for the build-time token grid (8 x 8 at 512 x 512; for a dynamic
  input_size the grid of a 512 x 512 input) and resized bilinearly for other grids (ViT
  practice).
* Patches must be square (the bilinear upsampling back to the deepest map uses one factor).
* CNN parts exactly as kuc, and as our U-Net (oct_seg.models.unet.unet_encoder / unet_decoder):
  per encoder level [downsample] + conv_stack(stack_num_down); per decoder level upsample ->
  conv_stack(1) -> concat skip -> conv_stack(stack_num_up).
"""
import keras
from keras import layers

from oct_seg.models.blocks import UpsampleBilinear, output_head, sized_input, validate_common
from oct_seg.models.transformer import (PatchEmbedding, PositionEmbedding,
                                        TransformerEncoderBlock, _activation, _pair,
                                        _positive_int)
from oct_seg.models.unet import unet_decoder, unet_encoder

REFERENCE_SIZE = 512  # input side used for the position-embedding grid of dynamic-size nets


def _validate(filter_num, n_labels, embed_dim, num_mlp, num_heads, num_transformer, patch_size,
              activation, mlp_activation, output_activation, pool, unpool):
    validate_common(filter_num, n_labels, pool, unpool, activation, output_activation)
    for value, what in ((embed_dim, "embed_dim"), (num_mlp, "num_mlp"),
                        (num_heads, "num_heads"), (num_transformer, "num_transformer")):
        _positive_int(value, what)
    patch = _pair(patch_size, "patch_size")
    if patch[0] != patch[1]:
        raise ValueError(f"patch_size must be square, e.g. (4, 4) or (1, 1); got {patch_size!r}")
    _activation(mlp_activation)
    return patch[0]


def size_multiple(levels, patch):
    """Input H, W must be multiples of this: 2**(levels-1) pooling steps times the patch."""
    return 2 ** (levels - 1) * patch


def transunet_base(input_tensor, filter_num, stack_num_down=2, stack_num_up=2, embed_dim=96,
                   num_mlp=384, num_heads=2, num_transformer=2, patch_size=(4, 4),
                   activation="ReLU", mlp_activation="GELU", batch_norm=False, pool=True,
                   unpool=True, name="transunet"):
    """TransUNet without head: (B, H, W, C) -> full-resolution features (B, H, W, filter_num[0]).

    H, W must be multiples of 2**(len(filter_num)-1) * patch (see module docstring).
    """
    patch = _validate(filter_num, 1, embed_dim, num_mlp, num_heads, num_transformer, patch_size,
                      activation, mlp_activation, "Sigmoid", pool, unpool)
    filter_num = [int(f) for f in filter_num]
    levels = len(filter_num)

    skips = unet_encoder(input_tensor, filter_num, stack_num_down, activation, batch_norm, pool,
                         name)
    deepest = skips.pop()
    scale = 2 ** (levels - 1) * patch
    grid = [n // scale if n is not None else max(1, round(REFERENCE_SIZE / scale))
            for n in input_tensor.shape[1:3]]
    t = PatchEmbedding(patch, embed_dim, name=f"{name}_patch_embed")(deepest)
    t = PositionEmbedding(grid, name=f"{name}_pos_embed")(t)
    for i in range(num_transformer):
        t = TransformerEncoderBlock(num_heads, num_mlp, key_dim=embed_dim,
                                    mlp_activation=mlp_activation, name=f"{name}_vit{i}")(t)
    t = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_vit_norm")(t)
    t = layers.Conv2D(filter_num[-1], 1, name=f"{name}_vit_proj")(t)
    if patch > 1:
        t = UpsampleBilinear(patch, name=f"{name}_vit_upsample")(t)
    x = layers.Add(name=f"{name}_vit_fuse")([deepest, t])
    return unet_decoder(x, skips, filter_num, stack_num_up, activation, batch_norm, unpool, name)


def build_transunet(input_size=(512, 512, 1), filter_num=(64, 128, 256, 512, 1024), n_labels=1,
                    stack_num_down=2, stack_num_up=2, embed_dim=96, num_mlp=384, num_heads=2,
                    num_transformer=2, patch_size=(4, 4), activation="ReLU",
                    mlp_activation="GELU", output_activation="Sigmoid", batch_norm=False,
                    pool=True, unpool=True, name="transunet"):
    """Build TransUNet: (B, H, W, C) -> (B, H, W, n_labels) probabilities (or logits).

    Defaults = Darooei et al. 2023 Table 2. input_size (H, W, C) may have None H, W; H and W
    must be multiples of 2**(len(filter_num)-1) * patch_size (64 by default).
    filter_num: CNN channels per level; stack_num_down / stack_num_up: convs per level;
    embed_dim, num_mlp, num_heads, num_transformer, mlp_activation: transformer (see module
    docstring); activation: CNN activation (blocks.get_activation names); output_activation:
    "Sigmoid", "Softmax" (n_labels >= 2) or None; pool/unpool as build_unet. Raises ValueError
    for inconsistent arguments.
    """
    patch = _validate(filter_num, n_labels, embed_dim, num_mlp, num_heads, num_transformer,
                      patch_size, activation, mlp_activation, output_activation, pool, unpool)
    levels = len(filter_num)
    inputs, x = sized_input(input_size, size_multiple(levels, patch),
                            f"{name} ({levels} levels, {patch}x{patch} patches)", name,
                            "or use fewer levels / a smaller patch_size")
    x = transunet_base(x, filter_num, stack_num_down, stack_num_up, embed_dim, num_mlp,
                       num_heads, num_transformer, (patch, patch), activation, mlp_activation,
                       batch_norm, pool, unpool, name)
    out = output_head(x, n_labels, output_activation, name=f"{name}_output")
    return keras.Model(inputs, out, name=name)
