"""Models for experiments."""

from __future__ import annotations

from typing import Any

from torch import nn

from netadv.rewrite.modules import activation_module


class MLP(nn.Sequential):
    """Flatten, then ``depth`` blocks of Linear + activation, then a Linear classifier.

    ``init="default"`` keeps PyTorch's Linear init (uniform, variance 1/(3 fan_in): each layer
    also scales the gradient by about 1/sqrt(3)); ``init="xavier"`` is Glorot's uniform init
    with ``torch.nn.init.calculate_gain`` of the activation (1 for sigmoid, 5/3 for tanh) and
    zero biases, so that what is left of the vanishing gradient is the activation's.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        depth: int = 12,
        width: int = 256,
        activation: Any = "sigmoid",
        init: str = "default",
    ):
        if init not in ("default", "xavier"):
            raise ValueError(f"unknown MLP init {init!r}; use default or xavier")
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [
                nn.Linear(in_features if i == 0 else width, width),
                activation_module(activation),
            ]
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        if init == "xavier":
            name = activation if isinstance(activation, str) else ""
            try:
                gain = nn.init.calculate_gain(name)
            except ValueError:  # not one torch knows: unit gain
                gain = 1.0
            for layer in self:
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight, gain=gain)
                    nn.init.zeros_(layer.bias)


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


def vit(in_chans: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    """timm's VisionTransformer with 4x4 patches; tiny widths by default."""
    from timm.models.vision_transformer import VisionTransformer

    options = dict(patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0)
    options.update(kwargs)
    return VisionTransformer(
        img_size=image_size, in_chans=in_chans, num_classes=num_classes, **options
    )


def swin(in_chans: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    """timm's SwinTransformer with 4x4 windows over 2x2 patches; tiny widths by default."""
    from timm.models.swin_transformer import SwinTransformer

    options = dict(
        patch_size=2, window_size=4, embed_dim=48, depths=(2, 2, 2), num_heads=(3, 6, 12)
    )
    options.update(kwargs)
    for key in ("depths", "num_heads"):
        options[key] = tuple(options[key])
    return SwinTransformer(
        img_size=image_size, in_chans=in_chans, num_classes=num_classes, **options
    )


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
