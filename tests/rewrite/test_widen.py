"""The capacity-matched baseline: the parameters of the HD-FGD/SA model, the model's own
activations, wider hidden layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netadv
from netadv.errors import ConfigError
from netadv.rewrite.widen import capacity_matched


def ffn(d: int = 24, h: int = 96) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Dropout(0.0), nn.Linear(h, d))


@pytest.mark.parametrize("method", ["hdfgd", "sa"])
def test_widened_ffn_has_the_blocks_parameters(method):
    torch.manual_seed(0)
    model, x = ffn(), torch.randn(5, 24)
    rewritten = netadv.rewrite(model, method, start="A", example_inputs=(x,))
    wide, record = capacity_matched(model, method, start="A", example_inputs=(x,))
    target = sum(p.numel() for p in rewritten.parameters())
    got = sum(p.numel() for p in wide.parameters())
    per_unit = 24 + 1 + 24  # one hidden unit: a producer row, its bias, a consumer column
    assert record["params_target"] == target and record["params"] == got
    assert abs(got - target) <= per_unit / 2
    # gelu has k = 2: the block adds 96 * 25 parameters, 49 per widened unit: 49 units
    assert record["sites"] == [
        {"site": "1", "producer": "0", "consumer": "3", "width": 96, "widened": 145}
    ]
    assert isinstance(wide[1], nn.GELU) and wide[0].out_features == wide[3].in_features == 145
    assert wide(x).shape == (5, 24) and model[0].out_features == 96  # the original untouched


def test_chained_sites_and_a_conv_with_batchnorm():
    torch.manual_seed(0)
    chain = nn.Sequential(
        nn.Linear(8, 16), nn.SiLU(), nn.Linear(16, 16), nn.SiLU(), nn.Linear(16, 3)
    )
    x = torch.randn(4, 8)
    wide, record = capacity_matched(chain, "hdfgd", example_inputs=(x,))
    target = sum(
        p.numel() for p in netadv.rewrite(chain, "hdfgd", example_inputs=(x,)).parameters()
    )
    assert [r["producer"] for r in record["sites"]] == ["0", "2"]
    assert wide[2].in_features == wide[0].out_features  # the first consumer is the next producer
    assert abs(record["params"] - target) < 0.01 * target and wide(x).shape == (4, 3)

    conv = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)
    )
    img = torch.randn(2, 3, 6, 6)
    # ReLU has no decomposition: the "SiLU route" replaces it, in the target and the baseline
    wide, record = capacity_matched(conv, "hdfgd", activation="silu", example_inputs=(img,))
    assert isinstance(wide[1], nn.BatchNorm2d) and wide[1].num_features == wide[0].out_channels
    assert isinstance(wide[2], nn.SiLU) and wide(img).shape == (2, 4, 6, 6)


def test_refusals():
    model, x = ffn(), torch.randn(2, 24)
    with pytest.raises(ConfigError, match="for hdfgd or sa"):
        capacity_matched(model, "ga", example_inputs=(x,))
    no_consumer = nn.Sequential(nn.Linear(24, 8), nn.GELU())
    with pytest.raises(ConfigError, match="cannot widen any site"):
        capacity_matched(no_consumer, "hdfgd", example_inputs=(x,))
    with pytest.raises(ConfigError, match="changes no site"):
        capacity_matched(nn.Sequential(nn.Linear(24, 8), nn.Tanh(), nn.Linear(8, 2)), "sa",
                         example_inputs=(x,), include="nothing*")  # fmt: skip
