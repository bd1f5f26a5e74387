"""netadv.save / netadv.load: weights plus a recipe, rebuilt on a fresh base model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import netadv
from netadv.errors import ConfigError
from netadv.experiments.models import build_model


def vit(depth: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return build_model("vit", in_chans=1, num_classes=10, image_size=28, patch_size=7,
                       embed_dim=32, depth=depth, num_heads=2)  # fmt: skip


X = torch.randn(2, 1, 28, 28)


@pytest.mark.parametrize(
    "method, options",
    [("sa", {}), ("hdfgd", {}), ("ga", {"activation": "tanh"}),
     ("ga", {"activation": "leaky_relu(0.2)"}), ("sa", {"init": "fresh", "match_params": True})],
)  # fmt: skip
def test_round_trip_gives_identical_outputs(tmp_path, method, options):
    model = netadv.rewrite(vit(), method, example_inputs=(X,), **options)
    with torch.no_grad():  # trained weights: move them off the copy init
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    netadv.save(model, tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["netadv.json", "netadv.safetensors"]
    recipe = json.loads((tmp_path / "netadv.json").read_text())
    assert recipe["method"] == method and recipe["inputs"]["args"][0]["shape"] == [2, 1, 28, 28]
    loaded = netadv.load(tmp_path, vit())
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))
    assert str(loaded) == str(model)


def test_a_base_model_that_does_not_match_is_refused(tmp_path):
    netadv.save(netadv.rewrite(vit(), "sa", example_inputs=(X,)), tmp_path)
    with pytest.raises(ConfigError, match="has 3 activation sites, the saved model had 2"):
        netadv.load(tmp_path, vit(depth=3))
    other = build_model("vit", in_chans=1, num_classes=10, image_size=28, patch_size=7,
                        embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)  # fmt: skip
    with pytest.raises(ConfigError, match="site 0 .* has params_delta"):
        netadv.load(tmp_path, other)


def test_refusals_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="not made by netadv.rewrite"):
        netadv.save(vit(), tmp_path)
    with pytest.raises(ConfigError, match="holds no model saved by netadv.save"):
        netadv.load(tmp_path, vit())
    lam = netadv.rewrite(vit(), "ga", activation=lambda t: torch.atan(2 * t), example_inputs=(X,))
    with pytest.raises(ConfigError, match="not a registered name.*register_activation"):
        netadv.save(lam, tmp_path / "lam")
    netadv.save(netadv.rewrite(vit(), "hdfgd", example_inputs=(X,)), tmp_path / "ok")
    (tmp_path / "ok" / "netadv.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(ConfigError, match="cannot load .*netadv.safetensors"):
        netadv.load(tmp_path / "ok", vit())


def test_huggingface_route(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32)  # fmt: skip
    ids = torch.randint(0, 60, (1, 7))
    model = netadv.rewrite(transformers.BertModel(cfg), "sa", example_inputs={"input_ids": ids})
    # the documented route: the base model's config, then netadv's files beside it
    model.config.save_pretrained(tmp_path)
    netadv.save(model, tmp_path)
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    loaded = netadv.load(tmp_path, transformers.AutoModel.from_config(config))
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, model(ids).last_hidden_state)


PICKLED = [
    ("ga", {"activation": "tanh"}),
    ("ga", {"activation": "leaky_relu(0.2)"}),
    ("hdfgd", {}),
    ("sa", {}),
    ("sa", {"activation": "mish"}),  # an SA term that is a chain of functions (tanh(softplus))
]


@pytest.mark.parametrize("method, options", PICKLED)
def test_whole_model_pickles_in_a_fresh_process(tmp_path, method, options):
    """torch.save(model) / torch.load(weights_only=False): kernels are rebuilt on load, in a
    process that never built them (so nothing is read from the saving process's caches)."""
    model = netadv.rewrite(vit(), method, example_inputs=(X,), **options).eval()
    torch.save(model, tmp_path / "model.pt")
    torch.save(X, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(X), tmp_path / "y.pt")
    script = (
        "import torch, sys; d = sys.argv[1]\n"
        "m = torch.load(d + '/model.pt', weights_only=False).eval()\n"
        "x, y = torch.load(d + '/x.pt'), torch.load(d + '/y.pt')\n"
        "with torch.no_grad(): assert torch.equal(m(x), y), (m(x) - y).abs().max()\n"
        "print(type(m).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_sympy_activation_pickles_and_a_lambda_is_refused_in_one_line(tmp_path):
    import sympy

    x = sympy.Symbol("x")
    model = netadv.rewrite(vit(), "ga", activation=x / sympy.sqrt(1 + x**2), example_inputs=(X,))
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))
    lam = netadv.rewrite(vit(), "ga", activation=lambda t: torch.atan(2 * t), example_inputs=(X,))
    with pytest.raises(Exception, match="cannot pickle the activation <lambda>.*state_dict"):
        torch.save(lam, tmp_path / "lam.pt")
