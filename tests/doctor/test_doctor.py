"""netadv.doctor: the verdicts the issue requires (a deep sigmoid MLP gets GA, a healthy Glorot
tanh MLP and a ReLU ResNet-18 are left alone, a GELU ViT gets a trial-backed answer), the
per-site statistics against formulas written here, the trial's rule on curves with a known
answer, the one-line errors and the JSON shape."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netadv
from netadv.doctor import doctor
from netadv.doctor.inputs import Batches
from netadv.doctor.trial import Arm, compare
from netadv.doctor.verdict import Signals, gradient_state, static_verdict
from netadv.errors import ConfigError
from netadv.experiments.mlp import MLP
from netadv.experiments.models import resnet18, vit

REC_KEYS = {"method", "activation", "plan", "reason", "evidence"}


def x64(n: int = 32) -> tuple[torch.Tensor]:
    return (torch.randn(n, 64, generator=torch.Generator().manual_seed(1)),)


def test_deep_sigmoid_mlp_vanishes_and_gets_ga():
    torch.manual_seed(0)
    d = doctor(MLP(64, 10, depth=12, width=64, activation="sigmoid"), example_inputs=x64())
    out = d.to_dict()
    grad = out["gradient"]
    assert grad["state"] == "vanishing" and grad["ratio"] < 1e-3
    norms = [r["norm"] for r in out["gradient_norms"]]
    assert [r["layer"] for r in out["gradient_norms"]][0] == "1"  # input side first
    assert norms[0] < 1e-3 * norms[-1]
    assert grad["ratio_after_ga"] > 100 * grad["ratio"]
    rec = out["recommendation"]
    assert set(rec) == REC_KEYS
    assert rec["method"] == "ga" and rec["activation"] == "sigmoid"
    assert "A_f" in rec["plan"] and "6 f, 6 A_f" in rec["plan"]
    assert any("study" in e for e in rec["evidence"])
    assert out["mode"] == "static" and "trial" in out["trial_would_add"]
    # the recommended rewrite's gradient reaches the input side
    assert out["after"]["method"] == "ga" and out["after"]["ratio"] > 100 * grad["ratio"]
    assert "recommendation: GA (sigmoid)" in str(d)


def test_healthy_glorot_tanh_mlp_is_left_alone_with_a_reason():
    torch.manual_seed(0)
    model = MLP(64, 10, depth=4, width=64, activation="tanh", init="xavier")
    out = doctor(model, example_inputs=x64()).to_dict()
    assert out["gradient"]["state"] == "healthy"
    rec = out["recommendation"]
    assert rec["method"] is None and rec["plan"] is None and out["after"] is None
    assert "healthy" in rec["reason"] and "GA would make it" in rec["reason"]
    assert any("Glorot" in e for e in rec["evidence"])  # GA hurt Glorot tanh in the study


def test_relu_resnet18_is_left_alone_and_its_dead_fraction_reported():
    torch.manual_seed(0)
    model = resnet18(1, 10, width=8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    d = doctor(model, example_inputs=(torch.randn(4, 1, 16, 16),))
    out = d.to_dict()
    rec = out["recommendation"]
    assert rec["method"] is None and "no adversarial exists for relu" in rec["reason"]
    assert "dead" in rec["reason"]
    assert len(out["sites"]) == 17 and out["sites"][0]["name"] == "act1"
    assert all(0.0 <= s["saturated"] <= 1.0 and s["interval"] is None for s in out["sites"])
    layers = [r["layer"] for r in out["gradient_norms"]]
    assert layers[0] == "conv1" and layers[-1] == "fc"
    # the user's model is untouched: weights and BatchNorm statistics
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def _synthetic(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    from netadv.experiments.data import image_datasets

    train = image_datasets("synthetic", augment=False).train
    x = torch.stack([train[i][0] for i in range(n)])
    return x, torch.stack([torch.as_tensor(train[i][1]) for i in range(n)])


def test_gelu_vit_gets_an_answer_backed_by_its_trial():
    torch.manual_seed(0)
    model = vit(1, 10, 16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
    d = doctor(model, data=_synthetic(), batch_size=32, steps=12, quiet=True)
    out = d.to_dict()
    assert out["mode"] == "trial" and out["trial_would_add"] is None
    arms = out["trial"]["arms"]
    assert [a["name"] for a in arms] == ["baseline", "hdfgd", "sa"]  # GELU has no adversarial
    assert all(a["steps"] == 12 and math.isfinite(a["final_loss"]) for a in arms)
    assert arms[1]["params"] > arms[0]["params"]
    rec = out["recommendation"]
    assert rec["method"] in (None, "hdfgd", "sa")
    assert "12 steps" in rec["reason"] or "12-step" in rec["reason"]
    assert rec["evidence"][0].startswith("baseline: loss")  # the trial's numbers come first
    assert "trial: up to 12 steps per arm" in str(d)


# ---- per-site statistics ------------------------------------------------------------------------


def test_site_statistics_match_formulas():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3))  # fmt: skip
    x = torch.randn(64, 8) * 3
    sig, relu = doctor(model, example_inputs=(x,)).to_dict()["sites"]
    with torch.no_grad():
        z1 = model[0](x)
        z2 = model[2](model[1](z1))
    s = torch.sigmoid(z1)
    assert sig["gain"] == pytest.approx((s * (1 - s)).mean().item(), rel=1e-5)
    # saturated: sigmoid' below 10% of its peak 0.25
    assert sig["saturated"] == pytest.approx((s * (1 - s) < 0.025).float().mean().item())
    lo, hi = netadv.stable_interval("sigmoid")
    assert sig["interval"] == pytest.approx([lo, hi])
    assert sig["outside"] == pytest.approx(((z1 < lo) | (z1 > hi)).float().mean().item())
    assert sig["p50"] == pytest.approx(z1.median().item(), abs=0.05)
    # ReLU: dead where z <= 0, no adversarial
    assert relu["saturated"] == pytest.approx((z2 <= 0).float().mean().item())
    assert relu["gain"] == pytest.approx((z2 > 0).float().mean().item())
    assert relu["interval"] is None and relu["outside"] is None


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.fc3(F.gelu(self.act(self.fc2(self.act(self.fc1(x))))))


def test_shared_module_gives_two_sites_and_a_functional_site_has_no_statistics():
    out = doctor(Shared(), example_inputs=(torch.randn(16, 8),)).to_dict()
    names = [s["name"] for s in out["sites"]]
    assert names == ["act [call 1/2]", "act [call 2/2]", "gelu()"]
    assert out["sites"][0]["gain"] != out["sites"][1]["gain"]
    assert "gain" not in out["sites"][2] and "functional" in out["sites"][2]["note"]
    assert any("without statistics" in n for n in out["notes"])


# ---- the trial ----------------------------------------------------------------------------------


def _arm(name: str, losses: list[float], diverged_at: int | None = None) -> Arm:
    return Arm(name, 0, losses=losses, diverged_at=diverged_at)


def test_trial_rule_on_curves_with_a_known_answer():
    base = _arm("baseline", [2.0] * 100)
    assert compare(base, _arm("a", [1.7] * 100), 100)["better"]  # -15% everywhere
    assert not compare(base, _arm("b", [1.9] * 100), 100)["better"]  # -5%: not clearly
    # -20% on average but lower on only half of the last tenth's steps: not clearly
    zigzag = [2.0] * 90 + [1.2, 2.0] * 5
    assert not compare(base, _arm("c", zigzag), 100)["better"]
    # a diverged baseline loses to a finite arm; a diverged arm never wins
    assert compare(_arm("baseline", [2.0] * 10, diverged_at=10), _arm("d", [2.0] * 100), 100)[
        "better"
    ]
    assert not compare(base, _arm("e", [0.1] * 10, diverged_at=10), 100)["better"]
    # an arm stopped by the time limit is compared over the steps both ran
    assert compare(base, _arm("f", [1.5] * 40), 100)["steps"] == 40


def test_batches_replay_the_same_batches_in_the_same_order():
    x, y = torch.randn(50, 3), torch.arange(50)
    pairs = Batches((x, y), batch_size=16)
    first = [b[1].tolist() for b in pairs.take(6)]
    assert first == [b[1].tolist() for b in pairs.take(6)]
    assert sorted(sum(first[:4], [])) == list(range(50))  # one pass is a permutation
    gen = ((x[i : i + 10], y[i : i + 10]) for i in range(0, 50, 10))  # a one-shot iterable
    stream = Batches(gen)
    once = [b[1][0].item() for b in stream.take(7)]
    assert once == [0, 10, 20, 30, 40, 0, 10]  # ended after 5: the kept ones cycle
    assert once == [b[1][0].item() for b in stream.take(7)]


def test_time_limit_stops_an_arm_and_is_reported():
    torch.manual_seed(0)
    model = MLP(64, 10, depth=3, width=16, activation="sigmoid")
    data = (torch.randn(64, 64), torch.randint(0, 10, (64,)))
    out = doctor(model, data=data, steps=10_000, time_limit=0.2, quiet=True).to_dict()
    arms = out["trial"]["arms"]
    assert all(a["time_limited"] and a["steps"] < 10_000 for a in arms)


def test_regression_targets_use_mse_and_a_custom_loss_is_used():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
    data = (torch.randn(64, 4), torch.randn(64, 1))
    out = doctor(model, data=data, steps=5, quiet=True, methods=["ga"]).to_dict()
    assert out["gradient"]["loss"] == "mean squared error on the first batch"
    calls = []

    def loss_fn(o, t):
        calls.append(1)
        return (o - t).abs().mean()

    out = doctor(model, data=data, loss_fn=loss_fn, steps=5, quiet=True, methods="ga").to_dict()
    assert out["gradient"]["loss"] == "loss_fn on the first batch" and len(calls) >= 10
    assert [a["name"] for a in out["trial"]["arms"]] == ["baseline", "ga"]


# ---- bad input: one line ------------------------------------------------------------------------


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 4, 3), nn.Tanh()

    def forward(self, x):
        return self.act(self.conv(x)) if x.sum() > 0 else self.conv(x)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: doctor(nn.Sequential(nn.Linear(4, 2)), example_inputs=(torch.randn(2, 4),)),
         "no activation sites"),
        (lambda: doctor(Branchy()), "pass example_inputs"),
        (lambda: doctor(MLP(64, 10, depth=2, width=8), data=(torch.randn(8, 3, 4, 4),
                        torch.zeros(8, dtype=torch.long))), "expects (N, 64)"),
        (lambda: doctor(MLP(64, 10, depth=2, width=8), example_inputs=x64(),
                        data=(torch.randn(8, 32), torch.zeros(8, dtype=torch.long))),
         "data of the wrong shape: the model expects (32, 64)"),
        (lambda: doctor(MLP(64, 10, depth=2, width=8), methods=["ga", "magic"]),
         "unknown method 'magic'"),
        (lambda: doctor(MLP(64, 10, depth=2, width=8), data=[1, 2, 3]), "(inputs, targets)"),
        (lambda: doctor(MLP(64, 10, depth=2, width=8), example_inputs=(torch.randn(1, 64),)),
         "at least 2 samples"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(call, words):
    with pytest.raises(ConfigError) as e:
        call()
    assert words in str(e.value) and "\n" not in str(e.value)


def test_gradient_bands_and_a_ga_that_would_explode():
    assert [gradient_state(r) for r in (1e-4, 1e-2, 1.0, 1e4)] == [
        "vanishing",
        "weak",
        "healthy",
        "exploding",
    ]
    assert gradient_state(1.0, finite=False) == "non-finite"
    model = MLP(64, 10, depth=2, width=8, activation="tanh")
    plans = {"ga": netadv.plan(model, "ga", example_inputs=x64())}
    sig = Signals(1e4, True, 0.5, plans, ["tanh", "tanh"], ga_ratio=1e8)
    rec = static_verdict(sig)
    assert rec.method is None and "GA does not fix it" in rec.reason
    assert any("amplifies" in e for e in rec.evidence)
    assert static_verdict(Signals(1e4, True, 0.5, plans, ["tanh"], ga_ratio=10.0)).method == "ga"


# ---- the JSON shape -----------------------------------------------------------------------------


def test_to_dict_is_strict_json_with_the_promised_fields():
    torch.manual_seed(0)
    model = MLP(64, 10, depth=3, width=16, activation="tanh")
    d = doctor(model, data=(torch.randn(64, 64), torch.randint(0, 10, (64,))), steps=4, quiet=True)
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert {"sites", "gradient_norms", "recommendation", "trial", "gradient"} <= set(out)
    assert set(out["recommendation"]) == REC_KEYS
    assert all({"name", "activation", "gain", "saturated", "interval", "outside"} <= set(s)
               for s in out["sites"])  # fmt: skip
    assert all({"layer", "norm"} <= set(r) for r in out["gradient_norms"])
    assert [a["name"] for a in out["trial"]["arms"]][0] == "baseline"
    assert set(out["trial"]["arms"][1]["vs_baseline"]) >= {"better", "change", "lower_share"}
