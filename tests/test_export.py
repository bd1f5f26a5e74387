"""Rewritten models leave PyTorch: torch.export, and ONNX run in onnxruntime."""

from __future__ import annotations

import warnings

import pytest
import torch

import netadv
from netadv.experiments.models import build_model

X = torch.randn(2, 1, 28, 28)
CASES = [
    ("sa", {}),
    ("hdfgd", {"activation": "gelu_tanh"}),
    ("ga", {"activation": "erf"}),
    ("ga", {"activation": lambda t: torch.atan(2 * t)}),  # A_f from the knot table
]


def rewritten(method: str, options: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    base = build_model("vit", in_chans=1, num_classes=10, image_size=28, patch_size=7,
                       embed_dim=32, depth=2, num_heads=2)  # fmt: skip
    return netadv.rewrite(base, method, example_inputs=(X,), **options).eval()


@pytest.mark.parametrize("method, options", CASES)
def test_torch_export(method, options):
    model = rewritten(method, options)
    program = torch.export.export(model, (X,))
    with torch.no_grad():
        assert torch.allclose(program.module()(X), model(X), atol=1e-6)


@pytest.mark.parametrize("method, options", CASES)
def test_onnx_in_onnxruntime(tmp_path, method, options):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = rewritten(method, options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (X,), dynamo=True, verbose=False)
    path = tmp_path / "model.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: X.numpy()})
    with torch.no_grad():
        assert abs(out - model(X).numpy()).max() < 1e-4
