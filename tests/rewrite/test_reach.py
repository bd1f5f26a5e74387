"""Sites the rewriter reaches without tracing their owner: a function an owner holds as an
attribute (torch.nn.TransformerEncoderLayer), and unknown modules recognised by what they
compute (HF Bloom's BloomGelu)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import netadv
from netadv.rewrite.ecosystem import probe_activation


def encoder(activation, layers: int = 2) -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation=activation,
                                       batch_first=True)  # fmt: skip
    with warnings.catch_warnings():  # enable_nested_tensor's note about batch_first
        warnings.simplefilter("ignore")
        return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)


X = torch.randn(2, 5, 16)


@pytest.mark.parametrize("activation", ["gelu", nn.GELU()])
def test_transformer_encoder_sites_are_reached(activation):
    model = encoder(activation)
    plan = netadv.plan(model, "sa", example_inputs=(X,))
    assert [s.becomes for s in plan] == ["HD-FGD", "SA"]
    assert [s.producer for s in plan] == ["layers.0.linear1", "layers.1.linear1"]
    if isinstance(activation, str):  # F.gelu held in layer.activation, set to a module
        assert [s.name for s in plan] == ["layers.0.activation()", "layers.1.activation()"]
        assert all(s.route == "attribute" for s in plan)
    out = netadv.rewrite(model, plan)
    assert isinstance(out.layers[0].activation, nn.Module)


def test_rewritten_encoder_keeps_its_function_at_inference():
    """The fused inference path (eval, no grad) would bypass the rewritten modules: it is off,
    and HD-FGD's copy init computes the original function there too."""
    model = encoder("gelu").eval()
    hd = netadv.rewrite(model, "hdfgd", example_inputs=(X,)).eval()
    assert not any(layer.activation_relu_or_gelu for layer in hd.layers)
    assert model.layers[0].activation_relu_or_gelu  # the original is untouched
    with torch.no_grad():
        assert torch.allclose(hd(X), model(X), atol=1e-5)
    replaced = netadv.rewrite(model, "replace", activation="tanh", example_inputs=(X,)).eval()
    reference = encoder(nn.Tanh()).eval()
    reference.load_state_dict(model.state_dict())
    reference.layers[0].activation_relu_or_gelu = reference.layers[1].activation_relu_or_gelu = 0
    with torch.no_grad():
        assert torch.allclose(replaced(X), reference(X), atol=1e-6)


def test_relu_encoder_by_the_gelu_route_and_ga():
    model = encoder("relu")
    plan = netadv.plan(model, "hdfgd", activation="gelu", example_inputs=(X,))
    assert [s.becomes for s in plan] == ["HD-FGD", "HD-FGD"]
    ga = netadv.rewrite(model, "ga", activation="tanh", example_inputs=(X,)).eval()
    assert type(ga.layers[1].activation).__name__ == "Adversarial"
    with torch.no_grad():
        assert torch.isfinite(ga(X)).all()


def test_decoder_and_full_transformer():
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 2, 32, batch_first=True), 2)
    assert netadv.plan(dec, "ga", activation="tanh", example_inputs=(X, X)).counts() == {
        "f": 1,
        "A_f": 1,
    }
    t = nn.Transformer(16, 2, 2, 2, 32, batch_first=True)
    m = netadv.rewrite(t, "sa", activation="gelu", example_inputs=(X, X)).eval()
    with torch.no_grad():
        assert m(X, X).shape == X.shape


class BloomLikeGelu(nn.Module):
    """GELU written with tanh, as HF Bloom's BloomGelu is (not a class netadv knows)."""

    def forward(self, x):
        return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


class Doubler(nn.Module):
    def forward(self, x):
        return 2 * torch.tanh(x)  # uses tanh, computes no registered activation


def test_unknown_modules_are_recognised_by_what_they_compute():
    assert probe_activation(BloomLikeGelu()) == "gelu_tanh"
    assert probe_activation(Doubler()) is None
    model = nn.Sequential(nn.Linear(4, 8), BloomLikeGelu(), nn.Linear(8, 4), Doubler())
    plan = netadv.plan(model, "replace", activation="sigmoid", example_inputs=(torch.randn(2, 4),))
    # the GELU is one site (not its inner tanh); the Doubler's tanh is a tanh call
    assert [(s.name, s.activation) for s in plan] == [("1", "gelu_tanh"), ("3.tanh()", "tanh")]


def test_bloom_gelu_is_a_gelu_site():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BloomConfig(vocab_size=50, hidden_size=16, n_layer=2, n_head=2)
    model = transformers.BloomModel(cfg).eval()
    ids = torch.randint(0, 50, (1, 6))
    plan = netadv.plan(model, "sa", example_inputs=(ids,))
    assert [(s.name, s.activation, s.becomes) for s in plan] == [
        ("h.0.mlp.gelu_impl", "gelu_tanh", "HD-FGD"),
        ("h.1.mlp.gelu_impl", "gelu_tanh", "SA"),
    ]
    hd = netadv.rewrite(model, "hdfgd", example_inputs=(ids,)).eval()
    with torch.no_grad():
        diff = hd(ids).last_hidden_state - model(ids).last_hidden_state
    assert diff.abs().max() < 1e-5
