"""Models for experiments."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from netadv.experiments.mlp import MLP
from netadv.rewrite.ecosystem import register_opaque_module

NORM_LAYERS = ("layernorm", "dyt")


class DyT(nn.Module):
    """Dynamic Tanh, ``weight * tanh(alpha * x) + bias`` over the last dimension: the layer
    "Transformers without Normalization" (Zhu et al. 2025) puts where each LayerNorm was;
    ``alpha`` is one learned scalar (initialised to ``alpha0``), weight and bias per feature."""

    def __init__(self, dim: int, alpha0: float = 0.5):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), float(alpha0)))
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, alpha0={self.alpha.item():g}"

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * torch.tanh(self.alpha * x) + self.bias


# a normalisation layer, not an activation site: the rewriter does not look inside it
register_opaque_module(DyT)


def replace_layernorms(model: nn.Module) -> nn.Module:
    """Every nn.LayerNorm of ``model`` replaced, in place, by a DyT of the same width."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm):
                if len(child.normalized_shape) != 1:
                    raise ValueError("DyT replaces LayerNorms over the last dimension only")
                setattr(parent, name, DyT(child.normalized_shape[0]))
    return model


def resnet18(in_chans: int, num_classes: int, width: int = 64, **kwargs) -> nn.Module:
    """ResNet-18 (timm's: BasicBlock x [2, 2, 2, 2]) with the CIFAR stem, a 3x3 stride-1 conv
    and no max-pool. ``width`` sets the four stages to width x (1, 2, 4, 8): 64 is the standard
    ResNet-18; 16 is a CPU-sized one with ~1/12 of the FLOPs (its stem stays 64 wide)."""
    from timm.models.resnet import BasicBlock, ResNet

    channels = tuple(width * m for m in (1, 2, 4, 8))
    model = ResNet(
        BasicBlock,
        [2, 2, 2, 2],
        num_classes=num_classes,
        in_chans=in_chans,
        channels=channels,
        **kwargs,
    )
    model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def vit(
    in_chans: int, num_classes: int, image_size: int, norm_layer: str = "layernorm", **kwargs
) -> nn.Module:
    """timm's VisionTransformer with 4x4 patches; tiny widths by default; ``norm_layer="dyt"``
    puts DyT where each LayerNorm is."""
    from timm.models.vision_transformer import VisionTransformer

    options = dict(patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0)
    options.update(kwargs)
    model = VisionTransformer(
        img_size=image_size, in_chans=in_chans, num_classes=num_classes, **options
    )
    return _with_norm(model, norm_layer)


def swin(
    in_chans: int, num_classes: int, image_size: int, norm_layer: str = "layernorm", **kwargs
) -> nn.Module:
    """timm's SwinTransformer with 4x4 windows over 2x2 patches; tiny widths by default;
    ``norm_layer="dyt"`` puts DyT where each LayerNorm is."""
    from timm.models.swin_transformer import SwinTransformer

    options = dict(
        patch_size=2, window_size=4, embed_dim=48, depths=(2, 2, 2), num_heads=(3, 6, 12)
    )
    options.update(kwargs)
    for key in ("depths", "num_heads"):
        options[key] = tuple(options[key])
    model = SwinTransformer(
        img_size=image_size, in_chans=in_chans, num_classes=num_classes, **options
    )
    return _with_norm(model, norm_layer)


def _with_norm(model: nn.Module, norm_layer: str) -> nn.Module:
    if norm_layer not in NORM_LAYERS:
        raise ValueError(f"unknown norm_layer {norm_layer!r}; use {', '.join(NORM_LAYERS)}")
    return replace_layernorms(model) if norm_layer == "dyt" else model


def build_model(
    name: str, *, in_chans: int, num_classes: int, image_size: int, **kwargs
) -> nn.Module:
    """A model by config name: mlp, resnet18, vit or swin."""
    try:
        if name == "mlp":
            return MLP(in_chans * image_size * image_size, num_classes, **kwargs)
        if name == "resnet18":
            return resnet18(in_chans, num_classes, **kwargs)
        if name == "vit":
            return vit(in_chans, num_classes, image_size, **kwargs)
        if name == "swin":
            return swin(in_chans, num_classes, image_size, **kwargs)
    except TypeError as e:
        raise ValueError(f"bad model_kwargs for {name}: {e}") from None
    raise ValueError(f"unknown model {name!r}; known: mlp, resnet18, vit, swin")
