"""Multi-encoder fusion networks (the paper's neural members), built from timm by name.

Each member has one timm encoder per channel group, created by its registered name
(``timm.create_model(name, pretrained=..., in_chans=k, num_classes=0, img_size=64 where
the family takes it, + small-size kwargs)``), a linear projection of each encoder's
pooled features to a common width, and a fusion head like the paper's V2 / V3 / V3c
(../shared/method.md).  Inputs are the native 64 x 64 patches (patch size 8), never
upsampled.

Channel groups (ONNX input names; the runtime ``models.ensemble`` feeds them):

- ``optical``  S2 R, G, B, NIR (normalised per the member's ``norm``)
- ``sar_post`` S1 desc VV, VH, asc VV, VH (post-event dB)
- ``sar_diff`` S1 desc dVV, dVH, asc dVV, dVH (post minus pre, dB)
- ``indices``  the six normalised differences of ``core.indices`` (physical, +0.5)

``pretrained=True`` loads timm's ImageNet weights (needs internet or a local HF cache):
then an encoder uses its published width/depth (``size`` kwargs are dropped, since
weights cannot map onto reduced widths; patch size / image size are kept, timm resamples
the patch embedding and position embedding, and adapts ``in_chans``).  That is far
beyond the scene-cost budget; the bundled package uses ``pretrained=False`` and the
small sizes below.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.channels import CHANNEL_NAMES, OPTICAL, PATCH_SIZE, combinations_having
from ..core.indices import INDEX_DEFS

GROUPS: dict[str, dict] = {
    "optical": {"channels": [CHANNEL_NAMES[i] for i in (0, 1, 2, 3)]},
    "sar_post": {"channels": [CHANNEL_NAMES[i] for i in (4, 5, 8, 9)]},
    "sar_diff": {"channels": [CHANNEL_NAMES[i] for i in (6, 7, 10, 11)]},
    "indices": {"indices": list(INDEX_DEFS)},
}


def group_channel_indices(group: str) -> frozenset:
    """The channels of the 12-channel layout an input group is made of (indices: the optical bands)."""
    g = GROUPS[group]
    return frozenset(CHANNEL_NAMES.index(c) for c in g["channels"]) if "channels" in g else frozenset(OPTICAL)


def group_channels(group: str) -> int:
    g = GROUPS[group]
    return len(g["channels"]) if "channels" in g else len(g["indices"])


@dataclass(frozen=True)
class EncoderSpec:
    """A timm encoder by registered name.  ``size``: architecture changes (smaller widths,
    depths, stems, pooling) that pretrained weights cannot follow, dropped when
    pretrained; ``fixed``: always applied (timm resamples patch/position embeddings for
    them when loading weights); ``img_size``: whether the family takes img_size."""

    timm_name: str
    family: str
    size: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    img_size: bool = True


ENCODERS: dict[str, EncoderSpec] = {
    # Sizes are set by the CPU budget: all 7 members together must score a Sentinel-2
    # tile (29,400 patches) in minutes on 2 cores, and retrain in under an hour.
    # plain ViT (timm VisionTransformer), patch 8 -> 8 x 8 tokens, mean-pooled
    "vit_pico": EncoderSpec("vit_tiny_patch16_224", "vit",
                            size=dict(embed_dim=48, depth=2, num_heads=2, mlp_ratio=2.0,
                                      global_pool="avg", class_token=False),
                            fixed=dict(patch_size=8)),
    # ViT with rotary position embeddings (timm Eva family), as the paper's V3c member
    "vit_rope_pico": EncoderSpec("vit_medium_patch16_rope_reg1_gap_256", "eva",
                                 size=dict(embed_dim=48, depth=2, num_heads=2, mlp_ratio=2.0),
                                 fixed=dict(patch_size=8, ref_feat_shape=(8, 8))),
    # CAFormer (MetaFormer): stride-4 stem, SepConv block at 8 x 8, attention at 4 x 4 and
    # 2 x 2 (the 16 x 16 stage has no block: depthwise convs there dominate CPU time)
    "caformer_pico": EncoderSpec("caformer_s18", "metaformer",
                                 size=dict(dims=(16, 32, 32, 64), depths=(0, 1, 1, 1)),
                                 img_size=False),
    # ConvNeXt (pure conv): 8 x 8 patchify stem, 3 x 3 depthwise, stages at 8/4/2/1 px
    "convnext_pico": EncoderSpec("convnext_atto", "convnext",
                                 size=dict(dims=(32, 48, 64, 96), depths=(1, 1, 1, 1), patch_size=8,
                                           kernel_sizes=3),
                                 img_size=False),
}


# the width keys of each family's ``size`` (scaled by ``widened``)
_WIDTH_KEYS = {"vit": ("embed_dim",), "eva": ("embed_dim",), "metaformer": ("dims",), "convnext": ("dims",)}


@contextmanager
def widened(factor: float):
    """Build members with every encoder ``factor`` times as wide (widths rounded to multiples
    of 8; depths, heads and token counts unchanged) inside the block; ENCODERS is restored
    after.  For cost studies (``bench/width.py``) and wider retrains."""
    def scale(v):
        if isinstance(v, (tuple, list)):
            return type(v)(scale(x) for x in v)
        return max(8, int(round(v * factor / 8)) * 8)

    saved = dict(ENCODERS)
    try:
        for key, spec in saved.items():
            size = {k: (scale(v) if k in _WIDTH_KEYS[spec.family] else v) for k, v in spec.size.items()}
            ENCODERS[key] = EncoderSpec(spec.timm_name, spec.family, size, spec.fixed, spec.img_size)
        yield
    finally:
        ENCODERS.clear()
        ENCODERS.update(saved)


@contextmanager
def _metaformer_size_override(overrides: dict):
    """timm's ``caformer_*`` entry points hard-code depths/dims (``dict(depths=..., **kwargs)``
    raises on a second value).  Create the model under its registered name anyway, with
    the size overridden inside the family's own builder."""
    import timm.models.metaformer as mf

    orig = mf._create_metaformer

    def patched(variant, pretrained=False, **kwargs):
        kwargs.update(overrides)
        return orig(variant, pretrained=pretrained, **kwargs)

    mf._create_metaformer = patched
    try:
        yield
    finally:
        mf._create_metaformer = orig


def create_encoder(spec: EncoderSpec, in_chans: int, pretrained: bool = False) -> nn.Module:
    """timm.create_model(spec.timm_name, ...) returning pooled features (num_classes=0)."""
    import timm

    kw = dict(spec.fixed)
    size = {} if pretrained else dict(spec.size)
    if spec.img_size:
        kw["img_size"] = PATCH_SIZE
    if spec.family == "metaformer":
        with _metaformer_size_override(size):
            return timm.create_model(spec.timm_name, pretrained=pretrained, in_chans=in_chans, num_classes=0, **kw)
    return timm.create_model(spec.timm_name, pretrained=pretrained, in_chans=in_chans, num_classes=0, **kw, **size)


class HeadV2(nn.Module):
    """cat(g x d) -> Linear d -> BatchNorm -> concat with the input -> Linear 1."""

    def __init__(self, g: int, d: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(g * d, d)
        self.bn = nn.BatchNorm1d(d)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear((g + 1) * d, 1)

    def forward(self, x):
        h = self.bn(self.fc(x))
        return self.out(self.drop(torch.cat([h, x], dim=1)))


class HeadV3(nn.Module):
    """cat(g x d) -> Linear 2d -> BatchNorm -> concat with the input -> Linear 2d -> GELU
    -> Dropout 0.1 -> Linear 1 (the GELU is ours: two stacked Linears are one Linear)."""

    def __init__(self, g: int, d: int, dropout: float = 0.1):
        super().__init__()
        self.fc1 = nn.Linear(g * d, 2 * d)
        self.bn = nn.BatchNorm1d(2 * d)
        self.fc2 = nn.Linear((g + 2) * d, 2 * d)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * d, 1)

    def forward(self, x):
        h = self.bn(self.fc1(x))
        h = self.act(self.fc2(torch.cat([h, x], dim=1)))
        return self.out(self.drop(h))


class HeadV3c(nn.Module):
    """cat(g x d) -> Linear d -> ReLU -> concat with the input -> Linear 1."""

    def __init__(self, g: int, d: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(g * d, d)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear((g + 1) * d, 1)

    def forward(self, x):
        h = self.act(self.fc(x))
        return self.out(self.drop(torch.cat([h, x], dim=1)))


HEADS = {"v2": HeadV2, "v3": HeadV3, "v3c": HeadV3c}


@dataclass(frozen=True)
class MemberConfig:
    """One neural ensemble member: (group, encoder) pairs, head, normalisation.  It runs
    in every combination that has all its groups' channels (``modes``)."""

    name: str
    encoders: tuple  # ((group, encoder key), ...)
    head: str
    norm: str = "zscore"  # normalisation of channel inputs: zscore | robust
    dim: int = 64
    description: str = ""

    @property
    def groups(self) -> list[str]:
        return [g for g, _ in self.encoders]

    @property
    def channels(self) -> frozenset:
        return frozenset().union(*(group_channel_indices(g) for g in self.groups))

    @property
    def modes(self) -> tuple[str, ...]:
        """The combinations it runs in: optical members in every one with Sentinel-2, members
        on SAR post + change channels only with both orbits post and pre, and so on."""
        return combinations_having(self.channels)

    def inputs_manifest(self) -> list[dict]:
        """The manifest ``inputs`` list the runtime feeds (order = ONNX input order)."""
        out = []
        for g in self.groups:
            spec = GROUPS[g]
            if "channels" in spec:
                out.append({"name": g, "channels": list(spec["channels"]), "norm": self.norm})
            else:
                out.append({"name": g, "indices": list(spec["indices"])})
        return out

    def timm_names(self) -> list[str]:
        return [ENCODERS[e].timm_name for _, e in self.encoders]


MEMBERS: tuple[MemberConfig, ...] = (
    MemberConfig("nn_opt_vit_convnext", (("optical", "vit_pico"), ("indices", "convnext_pico")), "v2",
                 description="optical-only: ViT on RGBN + ConvNeXt on the six indices, V2 head, z-score"),
    MemberConfig("nn_sar_vit_caformer", (("sar_post", "vit_pico"), ("sar_diff", "caformer_pico")), "v2",
                 description="SAR-only: ViT on SAR post VV/VH + CAFormer on SAR diffs, V2 head, z-score"),
    MemberConfig("nn_vit2_z", (("optical", "vit_pico"), ("sar_diff", "vit_pico")), "v2",
                 description="2 x ViT (RGBN / SAR diffs), V2 head, z-score (paper: 2 x ViT-pwee V2 z-score)"),
    MemberConfig("nn_convnext2_r", (("optical", "convnext_pico"), ("sar_diff", "convnext_pico")), "v2",
                 norm="robust",
                 description="2 x ConvNeXt (RGBN / SAR diffs), V2 head, robust scaling (paper: V2 robust)"),
    MemberConfig("nn_vit3", (("optical", "vit_pico"), ("sar_diff", "vit_pico"), ("indices", "vit_pico")), "v3",
                 description="3 x ViT (RGBN / SAR diffs / indices), V3 head (paper: 3 x ViT-pwee V3)"),
    MemberConfig("nn_caformer3", (("optical", "caformer_pico"), ("sar_diff", "caformer_pico"),
                                  ("indices", "caformer_pico")), "v3",
                 description="3 x CAFormer (RGBN / SAR diffs / indices), V3 head (paper: 3 x CAFormer-S18 V3)"),
    MemberConfig("nn_rope3_v3c", (("optical", "vit_rope_pico"), ("sar_post", "vit_rope_pico"),
                                  ("sar_diff", "vit_rope_pico")), "v3c",
                 description="3 x ViT-RoPE (RGBN / SAR VV,VH / SAR diffs), V3c head (paper: 3 x ViT-medium-RoPE V3c)"),
)
MEMBER_BY_NAME = {m.name: m for m in MEMBERS}


def check_member(cfg: MemberConfig) -> None:
    """A member must run somewhere, and only in combinations that have its channels."""
    if not cfg.modes:
        raise ValueError(f"member {cfg.name}: no combination has all of its input groups {cfg.groups}")
    from ..core.channels import COMBINATION_BY_NAME

    for mode in cfg.modes:
        if not cfg.channels <= set(COMBINATION_BY_NAME[mode].channels):
            raise ValueError(f"member {cfg.name} cannot run in {mode}: needs channels {sorted(cfg.channels)}")


class FusionNet(nn.Module):
    """Encoders per group -> projection to ``dim`` -> concatenation -> head -> logit (N, 1)."""

    def __init__(self, cfg: MemberConfig, pretrained: bool = False):
        super().__init__()
        check_member(cfg)
        self.cfg = cfg
        self.input_names = cfg.groups
        self.encoders = nn.ModuleList()
        self.projs = nn.ModuleList()
        for group, key in cfg.encoders:
            enc = create_encoder(ENCODERS[key], group_channels(group), pretrained)
            self.encoders.append(enc)
            self.projs.append(nn.Sequential(nn.Linear(enc.num_features, cfg.dim), nn.LayerNorm(cfg.dim)))
        g = len(cfg.encoders)
        self.head = HEADS[cfg.head](g, cfg.dim)

    def forward(self, *xs):
        feats = [p(e(x)) for e, p, x in zip(self.encoders, self.projs, xs)]
        return self.head(torch.cat(feats, dim=1))


def build_member(cfg: MemberConfig | str, pretrained: bool = False) -> FusionNet:
    if isinstance(cfg, str):
        cfg = MEMBER_BY_NAME[cfg]
    return FusionNet(cfg, pretrained=pretrained)


def example_inputs(cfg: MemberConfig, n: int = 2) -> tuple:
    return tuple(torch.randn(n, group_channels(g), PATCH_SIZE, PATCH_SIZE) for g in cfg.groups)


@contextmanager
def counting_flops():
    """``FlopCounterMode`` that also counts attention.  On CPU, ``scaled_dot_product_attention``
    dispatches to a fused kernel the counter has no formula for (it counts 0 FLOPs), so
    the count runs on the math backend, whose two batched matmuls it does count."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        yield fc


def count_flops(model: FusionNet) -> int:
    """Forward FLOPs per patch (torch.utils.flop_counter, attention included; 2 per multiply-add)."""
    was = model.training
    model.eval()
    with torch.no_grad(), counting_flops() as fc:
        model(*example_inputs(model.cfg, 1))
    model.train(was)
    return int(fc.get_total_flops())


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
