"""What ``init="copy"`` preserves, measured: the change in a model's outputs when it is
rewritten with each method (docs/REWRITE.md quotes these numbers).

    python benchmarks/copy_init.py            # about a minute on one CPU core

HD-FGD with copy init computes the original function (the lifted F agrees with f on the
diagonal); GA and SA replace f by a different function at some sites, so they move the outputs
whatever the init. Measured on timm's vit_tiny_patch16_224 (32x32 inputs, 10 classes, random
weights) and on torchvision's resnet18 (the SiLU route for HD-FGD/SA, tanh for GA), 64 inputs.
"""

from __future__ import annotations

import timm
import torch
import torchvision

import netadv


def change(model: torch.nn.Module, method: str, x: torch.Tensor, activation=None):
    """(max |Δ output|, max |output|) of ``model`` with every activation replaced by
    ``activation`` (or kept), against the same model rewritten by ``method`` (eval mode)."""
    model.eval()
    example = (x[:2],)
    base = model if activation is None else netadv.rewrite(
        model, "replace", activation=activation, example_inputs=example)  # fmt: skip
    rewritten = netadv.rewrite(model, method, activation=activation, example_inputs=example)
    base.eval(), rewritten.eval()
    with torch.no_grad():
        y, z = base(x), rewritten(x)
    return float((z - y).abs().max()), float(y.abs().max())


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10)
    resnet = torchvision.models.resnet18(num_classes=10)
    rows = [
        ("timm vit_tiny (GELU)", "hdfgd", vit, None),
        ("timm vit_tiny (GELU)", "sa", vit, None),
        ("timm vit_tiny (GELU -> tanh)", "ga", vit, "tanh"),
        ("torchvision resnet18 (ReLU -> SiLU)", "hdfgd", resnet, "silu"),
        ("torchvision resnet18 (ReLU -> SiLU)", "sa", resnet, "silu"),
        ("torchvision resnet18 (ReLU -> tanh)", "ga", resnet, "tanh"),
    ]
    print("| model | method | max abs change of the outputs | max abs output |")
    print("|---|---|---|---|")
    for name, method, model, activation in rows:
        delta, scale = change(model, method, x, activation)
        print(f"| {name} | {method} | {delta:.3g} | {scale:.3g} |")


if __name__ == "__main__":
    main()
