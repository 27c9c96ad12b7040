"""Network names, builders and presets.

`MODELS` maps the six names used across oct_seg (CLI, configs, notebooks) to their builders;
`PRESETS` holds named configurations, e.g. the paper's Table 2 TransUNet and the CPU-sized
variants that the demo and the real-data notebooks train.
"""
from .att_unet import build_att_unet
from .r2_unet import build_r2_unet
from .swin_unet import build_swin_unet
from .transunet import build_transunet
from .unet import build_unet
from .unet3plus import build_unet3plus

MODELS = {
    "unet": build_unet,
    "att_unet": build_att_unet,
    "r2_unet": build_r2_unet,
    "unet3plus": build_unet3plus,
    "transunet": build_transunet,
    "swin_unet": build_swin_unet,
}

# name -> (model name, builder kwargs). "paper" presets are the published configuration;
# "cpu" presets keep the architecture but shrink widths for 2-core CPU training.
PRESETS = {
    "transunet_paper": ("transunet", {}),  # Table 2: the builder's defaults
    "transunet_cpu": ("transunet", dict(filter_num=[16, 32, 64, 128, 256], embed_dim=96,
                                        num_mlp=384, num_heads=2, num_transformer=2,
                                        patch_size=(4, 4))),
}


def build_model(name, **kwargs):
    """Build a network by name (`MODELS`) or preset name (`PRESETS`); kwargs override.

    Raises ValueError naming the valid choices for an unknown name.
    """
    if name in PRESETS:
        name, preset = PRESETS[name]
        kwargs = {**preset, **kwargs}
    if name not in MODELS:
        raise ValueError(
            f"unknown model {name!r}; choose one of {sorted(MODELS)} "
            f"or a preset {sorted(PRESETS)}")
    return MODELS[name](**kwargs)
