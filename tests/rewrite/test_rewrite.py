"""netadv.plan / netadv.rewrite on a zoo of real models built tiny, with random weights."""

from __future__ import annotations

import copy
import io
import json

import pytest
import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils._pytree import tree_leaves
from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

import netadv
from netadv import Adversarial, ConfigError
from netadv.layers.hdfgd import HDFGD
from netadv.rewrite import Folded, RewritePlan
from netadv.rewrite.trace import record_run

pytestmark = pytest.mark.usefixtures("one_thread")

# ---- the zoo ---------------------------------------------------------------------------------


class SharedAct(nn.Module):
    """One activation module called at two places."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class Functional(nn.Module):
    """Activations as functional calls and a tensor method."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = F.gelu(self.fc1(x))
        h = torch.tanh(self.fc2(h))
        return self.fc3(h).sigmoid()


class Untraceable(Functional):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x):
        h = F.gelu(self.fc1(x))
        if h.sum() > -1e9:
            h = torch.tanh(self.fc2(h))
        return self.fc3(h).sigmoid()


def _bert():
    cfg = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=64,
    )
    return BertModel(cfg)


def _gpt2():
    cfg = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        vocab_size=100,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2Model(cfg)


BUILDERS = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "vit_tiny": lambda: timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10
    ),
    "swin_tiny": lambda: timm.create_model(
        "swin_tiny_patch4_window7_224", img_size=32, window_size=4, num_classes=10
    ),
    "bert": _bert,
    "gpt2": _gpt2,
    "shared": SharedAct,
    "functional": Functional,
}
ZOO = list(BUILDERS)
IMAGE_MODELS = {"resnet18", "vit_tiny", "swin_tiny"}
TOKEN_MODELS = {"bert", "gpt2"}

# Site counts found in each model, per method (the same with and without example_inputs).
EXPECTED = {
    "resnet18": {
        "ga": {"f": 9, "unchanged": 8},  # relu has no adversarial
        "hdfgd": {"unchanged": 17},  # relu has no decomposition
        "sa": {"unchanged": 17},
        "replace": {"f": 17},
        "hdfgd+gelu": {"f": 8, "HD-FGD": 9},  # a block's second relu reads an add
        "ga+tanh": {"f": 9, "A_f": 8},
    },
    "vit_tiny": {
        "ga": {"f": 6, "unchanged": 6},
        "hdfgd": {"HD-FGD": 12},
        "sa": {"HD-FGD": 6, "SA": 6},
        "replace": {"f": 12},
        "hdfgd+gelu": {"HD-FGD": 12},
        "ga+tanh": {"f": 6, "A_f": 6},
    },
    "swin_tiny": {
        "ga": {"f": 6, "unchanged": 6},
        "hdfgd": {"HD-FGD": 12},
        "sa": {"HD-FGD": 6, "SA": 6},
        "replace": {"f": 12},
        "hdfgd+gelu": {"HD-FGD": 12},
        "ga+tanh": {"f": 6, "A_f": 6},
    },
    "bert": {  # 2 intermediate GELUs + the pooler's tanh
        "ga": {"f": 2, "unchanged": 1},
        "hdfgd": {"HD-FGD": 3},
        "sa": {"HD-FGD": 2, "SA": 1},
        "replace": {"f": 3},
        "hdfgd+gelu": {"HD-FGD": 3},
        "ga+tanh": {"f": 2, "A_f": 1},
    },
    "gpt2": {
        "ga": {"f": 1, "unchanged": 1},
        "hdfgd": {"HD-FGD": 2},
        "sa": {"HD-FGD": 1, "SA": 1},
        "replace": {"f": 2},
        "hdfgd+gelu": {"HD-FGD": 2},
        "ga+tanh": {"f": 1, "A_f": 1},
    },
    "shared": {
        "ga": {"f": 1, "A_f": 1},
        "hdfgd": {"HD-FGD": 2},
        "sa": {"HD-FGD": 1, "SA": 1},
        "replace": {"f": 2},
        "hdfgd+gelu": {"HD-FGD": 2},
        "ga+tanh": {"f": 1, "A_f": 1},
    },
    "functional": {
        "ga": {"f": 2, "A_f": 1},
        "hdfgd": {"HD-FGD": 2, "unchanged": 1},  # sigmoid has no decomposition
        "sa": {"HD-FGD": 1, "SA": 1, "unchanged": 1},
        "replace": {"f": 3},
        "hdfgd+gelu": {"HD-FGD": 3},
        "ga+tanh": {"f": 2, "A_f": 1},
    },
}
VARIANTS = {
    "ga": ("ga", {}),
    "hdfgd": ("hdfgd", {}),
    "sa": ("sa", {}),
    "replace": ("replace", {"activation": "sigmoid"}),
    "hdfgd+gelu": ("hdfgd", {"activation": "gelu"}),
    "ga+tanh": ("ga", {"activation": "tanh"}),
}


_CACHE: dict[str, nn.Module] = {}


def build(name: str) -> nn.Module:
    """A fresh copy of a zoo model (each is built once per session)."""
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = BUILDERS[name]()
    return copy.deepcopy(_CACHE[name])


def inputs(name: str, batch: int = 2) -> tuple:
    g = torch.Generator().manual_seed(1)
    if name in IMAGE_MODELS:
        return (torch.randn(batch, 3, 32, 32, generator=g),)
    if name in TOKEN_MODELS:
        return (torch.randint(0, 100, (batch, 8), generator=g),)
    return (torch.randn(batch, 8, generator=g),)


def loss_of(out) -> torch.Tensor:
    return sum(t.float().sum() for t in tree_leaves(out) if isinstance(t, torch.Tensor))


def missing_grads(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


def executed(model: nn.Module, example: tuple) -> list[str]:
    """What each activation call computes, in execution order."""
    out = []
    for c in record_run(model, example, {}, "test").calls:
        if c.module_type is not None and issubclass(c.module_type, Adversarial):
            out.append("A_f")
        elif c.module_type is not None and issubclass(c.module_type, HDFGD):
            out.append("SA" if model.get_submodule(c.name).adversarial is not None else "HD-FGD")
        elif c.module_type is Folded:
            continue
        elif c.site is not None:
            out.append(f"f:{c.site.spec.name}")
    return out


# ---- finding the sites -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO)
def test_site_counts(name):
    model = build(name)
    for variant, (method, kw) in VARIANTS.items():
        found = netadv.plan(model, method, **kw)
        run = netadv.plan(model, method, example_inputs=inputs(name), **kw)
        assert run.counts() == EXPECTED[name][variant], (variant, str(run))
        assert found.counts() == run.counts(), (variant, str(found))
        assert [s.name for s in found] == [s.name for s in run]
        assert [s.index for s in run] == list(range(len(run)))


def test_shared_module_is_two_sites_and_gets_two_modules():
    model = build("resnet18")
    p = netadv.plan(model, "ga", activation="tanh", example_inputs=inputs("resnet18"))
    names = [s.name for s in p]
    assert names[:3] == ["relu", "layer1.0.relu [call 1/2]", "layer1.0.relu [call 2/2]"]
    new = netadv.rewrite(model, p)
    block = new.layer1[0]
    assert isinstance(block, torchvision.models.resnet.BasicBlock)
    assert isinstance(block.relu, Adversarial) and isinstance(block.relu_1, nn.Tanh)
    assert "AdversarialTanh" in str(new) and "(relu_1): Tanh()" in str(new)


def test_functional_sites_are_reached_with_fx():
    model = build("functional")
    p = netadv.plan(model, "ga")
    assert [s.name for s in p] == ["gelu()", "tanh()", "sigmoid()"]
    assert [s.kind for s in p] == ["function"] * 3
    new = netadv.rewrite(model, p)
    assert isinstance(new, Functional) and isinstance(new.tanh, Adversarial)
    assert executed(new, inputs("functional")) == ["f:gelu", "A_f", "f:sigmoid"]


def test_functional_sites_of_an_untraceable_model_are_reported_unreachable():
    model = Untraceable()
    p = netadv.plan(model, "replace", activation="silu", example_inputs=inputs("functional"))
    assert [s.becomes for s in p] == ["unchanged"] * 3
    assert all(s.note.startswith("unreachable: the owner model does not trace") for s in p)
    assert "TraceError" in str(p)
    new = netadv.rewrite(model, p)
    x = inputs("functional")[0]
    torch.testing.assert_close(new(x), model(x))


def test_shared_module_in_an_untraceable_owner():
    class Net(SharedAct):
        def forward(self, x):
            h = self.act(self.fc1(x))
            if h.sum() > -1e9:
                h = self.act(self.fc2(h))
            return self.fc3(h)

    model, x = Net(), inputs("shared")
    same = netadv.plan(model, "replace", activation="silu", example_inputs=x)
    assert [s.becomes for s in same] == ["f", "f"] and all(s.route == "shared" for s in same)
    assert "one new module serves all 2 calls" in same.sites[0].note
    new = netadv.rewrite(model, same)
    assert isinstance(new.act, nn.SiLU) and executed(new, x) == ["f:silu", "f:silu"]
    differ = netadv.plan(model, "ga", example_inputs=x)
    assert [s.becomes for s in differ] == ["unchanged", "unchanged"]
    assert "calls cannot differ" in differ.sites[1].note


def test_a_module_run_twice_per_forward_cannot_alternate():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Linear(8, 8), nn.Tanh())

        def forward(self, x):
            return self.block(self.block(x))

    model, x = Twice(), inputs("shared")
    p = netadv.plan(model, "ga", example_inputs=x)
    assert [s.name for s in p] == ["block.1 [call 1/2]", "block.1 [call 2/2]"]
    assert [s.becomes for s in p] == ["unchanged", "unchanged"]
    assert "runs 2 times per forward" in p.sites[0].note
    assert netadv.plan(model, "ga", start="A", period=2).counts() == {"A_f": 2}
    h = netadv.plan(model, "hdfgd", example_inputs=x)
    assert "called 2 times" in h.sites[0].note


def test_without_inputs_or_tracing_the_plan_says_what_it_could_not_see():
    class Net(Untraceable):
        def __init__(self):
            super().__init__()
            self.head = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Dropout(0.1), nn.Linear(8, 2))

        def forward(self, x):
            return self.head(super().forward(x))

    p = netadv.plan(Net(), "hdfgd", init="fresh", match_params=True)
    assert p.discovery == "module structure"
    assert any("cannot trace" in n for n in p.notes)
    assert any("functional calls cannot be seen" in n for n in p.notes)
    (site,) = p.sites
    assert (site.name, site.becomes, site.producer, site.consumer) == (
        "head.1",
        "HD-FGD",
        "head.0",
        "head.3",
    )


def test_unregistered_activations_are_reported_not_guessed():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU6(), nn.Linear(4, 4), nn.Hardswish())
    p = netadv.plan(model, "ga", start="A")
    assert [s.activation for s in p] == ["ReLU6", "Hardswish"]
    assert p.sites[0].becomes == "unchanged" and "not a registered activation" in p.sites[0].note
    assert netadv.plan(model, "replace", activation="tanh").counts() == {"f": 2}


def test_library_activation_classes_are_recognised():
    import timm.layers.activations as ta
    import transformers.activations as ha

    from netadv.rewrite.ecosystem import module_activation, register_libraries

    register_libraries()
    expect = {
        ta.GELU(): "gelu",
        ta.GELUTanh(): "gelu_tanh",
        ta.QuickGELU(): "quick_gelu",
        ta.Swish(): "silu",
        ta.Sigmoid(): "sigmoid",
        ta.Tanh(): "tanh",
        ta.Mish(): "mish",
        ha.GELUActivation(): "gelu",
        ha.NewGELUActivation(): "gelu_tanh",
        ha.FastGELUActivation(): "gelu_tanh",
        ha.GELUTanh(): "gelu_tanh",
        ha.QuickGELUActivation(): "quick_gelu",
        ha.SiLUActivation(): "silu",
        ha.MishActivation(): "mish",
        ta.HardSwish(): None,
        ha.ClippedGELUActivation(-10, 10): None,
    }
    for module, name in expect.items():
        assert module_activation(module)[0] == name, type(module)
    assert module_activation(nn.Identity()) is None
    assert module_activation(nn.Linear(2, 2)) is None


def test_producer_norm_and_reasons():
    model = build("resnet18")
    p = netadv.plan(model, "sa", activation="gelu", example_inputs=inputs("resnet18"))
    first, second = p.sites[1], p.sites[2]
    assert (first.producer, first.norm) == ("layer1.0.conv1", "layer1.0.bn1")
    assert second.producer is None and "comes from add" in second.note
    vit = netadv.plan(build("vit_tiny"), "hdfgd")
    assert all(s.producer.endswith("mlp.fc1") and s.norm is None for s in vit)


def test_period_and_start():
    layers = []
    for _ in range(6):
        layers += [nn.Linear(4, 4), nn.Sigmoid()]
    model = nn.Sequential(*layers)
    x = (torch.randn(2, 4),)

    def roles(**kw):
        return [s.becomes for s in netadv.plan(model, "ga", example_inputs=x, **kw)]

    assert roles() == ["f", "A_f"] * 3
    assert roles(start="A") == ["A_f", "f"] * 3
    assert roles(period=2) == ["f", "f", "A_f", "A_f", "f", "f"]
    assert roles(period=2, start="A") == ["A_f", "A_f", "f", "f", "A_f", "A_f"]
    new = netadv.rewrite(model, "ga", period=3)
    assert executed(new, x) == ["f:sigmoid"] * 3 + ["A_f"] * 3


def test_include_exclude():
    model = build("vit_tiny")
    p = netadv.plan(model, "sa", include="blocks.1*", exclude=["blocks.11.*"])
    changed = [s.name for s in p if s.becomes != "unchanged"]
    assert changed == ["blocks.1.mlp.act", "blocks.10.mlp.act"]
    assert [s.becomes for s in p if s.name in changed] == ["HD-FGD", "SA"]
    assert p.sites[0].note == "excluded by include/exclude"


# ---- applying the plan ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO)
def test_rewritten_models_train(name):
    """Forward and backward on GA (tanh), SA and hdfgd+match_params rewrites; every parameter
    gets a gradient and the SA penalty is there."""
    model = build(name)
    x = inputs(name)
    loss_of(model(*x)).backward()
    assert missing_grads(model) == []
    variants = [("ga", {"activation": "tanh"}), ("sa", {})]
    if name not in ("resnet18", "swin_tiny"):  # (no sites to shrink / to keep the test fast)
        variants.append(("hdfgd", {"init": "fresh", "match_params": True}))
    for method, kw in variants:
        new = netadv.rewrite(model, method, example_inputs=x, **kw)
        new.zero_grad(set_to_none=True)
        out = new(*x)
        loss = loss_of(out) + netadv.penalty(new)
        assert torch.isfinite(loss)
        loss.backward()
        assert missing_grads(new) == [], method
        if method == "sa" and EXPECTED[name]["sa"].get("SA"):
            assert netadv.penalty(new) > 0


@pytest.mark.parametrize("name", ZOO)
def test_hdfgd_copy_computes_the_same_function(name):
    model = build(name).eval()
    new = netadv.rewrite(model, "hdfgd", example_inputs=inputs(name)).eval()
    assert sum(isinstance(m, HDFGD) for m in new.modules()) == EXPECTED[name]["hdfgd"].get(
        "HD-FGD", 0
    )
    x = inputs(name, batch=3)  # not the inputs the plan ran on
    with torch.no_grad():
        ref, got = model(*x), new(*x)
    for a, b in zip(tree_leaves(ref), tree_leaves(got)):
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            assert (a - b).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny", "bert", "functional", "shared"])
def test_ga_sites_alternate_as_planned(name):
    model = build(name)
    x = inputs(name)
    p = netadv.plan(model, "ga", activation="sigmoid", example_inputs=x)
    new = netadv.rewrite(model, p)
    assert executed(new, x) == ["A_f" if s.becomes == "A_f" else "f:sigmoid" for s in p]
    assert [s.becomes for s in p] == ["f", "A_f"] * (len(p) // 2) + ["f"] * (len(p) % 2)


def test_match_params_keeps_the_parameter_count():
    for name in ("vit_tiny", "gpt2", "bert"):
        model = build(name)
        p = netadv.plan(model, "sa", init="fresh", match_params=True, example_inputs=inputs(name))
        new = netadv.rewrite(model, p)
        before = sum(t.numel() for t in model.parameters())
        after = sum(t.numel() for t in new.parameters())
        assert after == p.params_after <= before
        assert after > 0.99 * before
    vit = netadv.plan(build("vit_tiny"), "hdfgd", init="fresh", match_params=True)
    assert vit.sites[0].consumer == "blocks.0.mlp.fc2"  # through Dropout and Identity


def test_identity_between_producer_and_activation():
    model = nn.Sequential(nn.Linear(4, 8), nn.Identity(), nn.GELU(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    (site,) = netadv.plan(model, "hdfgd", example_inputs=(x,)).sites
    assert (site.producer, site.becomes) == ("0", "HD-FGD")
    new = netadv.rewrite(model, "hdfgd")
    torch.testing.assert_close(new(x), model(x))


def test_match_params_in_a_chain():
    """fc2 is the consumer of the first block and the producer of the second."""
    model = nn.Sequential(
        nn.Linear(8, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Dropout(0.1), nn.Linear(32, 4)
    )
    p = netadv.plan(model, "sa", init="fresh", match_params=True)
    assert [(s.producer, s.consumer, s.becomes) for s in p] == [
        ("0", "2", "HD-FGD"),
        ("2", "5", "SA"),
    ]
    new = netadv.rewrite(model, p)
    assert sum(t.numel() for t in new.parameters()) == p.params_after
    assert p.params_before * 0.95 < p.params_after <= p.params_before
    loss_of(new(torch.randn(3, 8))).backward()
    assert missing_grads(new) == []


def test_state_dict_deepcopy_and_dtype():
    for name in ("resnet18", "functional", "shared", "gpt2"):
        model = build(name).eval()
        x = inputs(name)
        p = netadv.plan(model, "sa", activation="silu", example_inputs=x)
        a = netadv.rewrite(model, p).eval()
        buf = io.BytesIO()
        torch.save(a.state_dict(), buf)
        b = netadv.rewrite(build(name), p)
        buf.seek(0)
        b.load_state_dict(torch.load(buf))
        b.eval()
        c = copy.deepcopy(a)
        with torch.no_grad():
            ref = loss_of(a(*x))
            assert loss_of(b(*x)) == ref
            assert loss_of(c(*x)) == ref
            d = copy.deepcopy(a).to(torch.float64)
            xd = tuple(t.double() if t.is_floating_point() else t for t in x)
            torch.testing.assert_close(loss_of(d(*xd)).float(), ref, rtol=1e-4, atol=1e-3)
            h = copy.deepcopy(a).to(torch.bfloat16)
            xh = tuple(t.bfloat16() if t.is_floating_point() else t for t in x)
            assert torch.isfinite(loss_of(h(*xh)))


def test_whole_model_pickle_of_a_split_module():
    model = SharedAct()
    new = netadv.rewrite(model, "replace", activation="silu")
    buf = io.BytesIO()
    torch.save(new, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    x = inputs("shared")[0]
    torch.testing.assert_close(back(x), new(x))
    assert isinstance(back, SharedAct) and isinstance(back.act_1, nn.SiLU)


def test_torch_compile_aot_eager():
    for name, method in [("functional", "sa"), ("shared", "ga")]:
        new = netadv.rewrite(build(name), method, activation="tanh")
        x = inputs(name)
        compiled = torch.compile(new, backend="aot_eager")
        out = compiled(*x)
        torch.testing.assert_close(out, new(*x))
        loss_of(out).backward()
        assert missing_grads(new) == []


def test_distributed_data_parallel(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        for name in ("shared", "functional"):
            new = netadv.rewrite(build(name), "sa", activation="gelu")
            ddp = DistributedDataParallel(new)
            loss_of(ddp(*inputs(name))).backward()
            assert missing_grads(new) == []
    finally:
        dist.destroy_process_group()


def test_rewriting_twice_is_an_error():
    model = build("shared")
    new = netadv.rewrite(model, "ga")
    with pytest.raises(ConfigError, match="already rewritten by netadv"):
        netadv.rewrite(new, "sa")
    with pytest.raises(ConfigError, match="already rewritten"):
        netadv.plan(nn.Sequential(new), "ga")
    same = netadv.rewrite(model, "ga", inplace=True)
    assert same is model
    with pytest.raises(ConfigError, match="already rewritten"):
        netadv.rewrite(model, "ga", inplace=True)


def test_rewrite_applies_exactly_the_plan():
    model = build("vit_tiny")
    p = netadv.plan(model, "sa", period=2)
    new = netadv.rewrite(model, p)
    for s in p:
        block = new.get_submodule(s.producer)
        assert isinstance(block, HDFGD) and (block.adversarial is not None) == (s.becomes == "SA")
        assert isinstance(new.get_submodule(s.path), Folded)
    assert sum(t.numel() for t in new.parameters()) == p.params_after
    with pytest.raises(ConfigError, match="different model"):
        netadv.rewrite(build("shared"), p)
    with pytest.raises(ConfigError, match="no other options"):
        netadv.rewrite(model, p, period=2)


def test_plan_print_and_to_dict():
    p = netadv.plan(build("resnet18"), "sa", activation="gelu", example_inputs=inputs("resnet18"))
    text = str(p)
    lines = text.splitlines()
    assert lines[0].startswith("RewritePlan(method=sa, activation=gelu")
    header = next(i for i, line in enumerate(lines) if line.startswith("#"))
    for word in ("site", "activation", "becomes", "producer", "norm", "params", "note"):
        assert word in lines[header]
    assert len([line for line in lines if line[:1].isdigit() and "  " in line]) >= len(p)
    assert "relu -> gelu" in text and "[1] not decomposed: its input comes from add" in text
    d = p.to_dict()
    json.dumps(d)
    assert len(d["sites"]) == 17 and d["counts"] == {"f": 8, "HD-FGD": 5, "SA": 4}
    row = d["sites"][1]
    assert row["name"] == "layer1.0.relu [call 1/2]" and row["producer"] == "layer1.0.conv1"
    assert row["params_delta"] > 0 and d["params_after"] > d["params_before"]


def test_options_are_checked():
    model = build("shared")
    with pytest.raises(ConfigError, match="do not apply to method 'ga'"):
        netadv.plan(model, "ga", init="fresh")
    with pytest.raises(ConfigError, match="init='fresh'"):
        netadv.plan(model, "hdfgd", match_params=True)
    with pytest.raises(ConfigError, match="needs activation="):
        netadv.plan(model, "replace")
    with pytest.raises(ConfigError, match="method must be"):
        netadv.plan(model, "nope")
    with pytest.raises(ConfigError, match="period"):
        netadv.plan(model, "ga", period=0)
    with pytest.raises(ConfigError, match="start"):
        netadv.plan(model, "ga", start="g")
    with pytest.raises(ValueError, match="unknown activation"):
        netadv.plan(model, "ga", activation="nope")
    with pytest.raises(ConfigError, match="failed on example_inputs"):
        netadv.plan(model, "ga", example_inputs=(torch.randn(2, 5),))


def test_layer_options_reach_the_layers():
    model = build("vit_tiny")
    new = netadv.rewrite(model, "sa", max_gain=10.0, anchor="zero", penalty_weight=0.5)
    sa = [m for m in new.modules() if isinstance(m, HDFGD) and m.adversarial is not None]
    assert sa and all(m.penalty_weight == 0.5 for m in sa)
    adv = [a for m in sa for a in m.adversarial.values()]
    assert all(a.max_gain == 10.0 and a.anchor == "zero" for a in adv)
    ga = netadv.rewrite(build("shared"), "ga", max_gain=5.0)
    assert ga.act_1.max_gain == 5.0


# ---- ecosystem -------------------------------------------------------------------------------


def test_netadv_modules_plug_into_timm_act_layer():
    import functools

    act = functools.partial(netadv.Adversarial, "tanh")
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2, act_layer=act
    )
    assert all(isinstance(b.mlp.act, Adversarial) for b in model.blocks)
    loss_of(model(inputs("vit_tiny")[0])).backward()


def test_netadv_modules_plug_into_hf_configs():
    from transformers.activations import ACT2FN

    ACT2FN["netadv_a_tanh"] = (netadv.Adversarial, {"f": "tanh"})
    try:
        cfg = BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=100,
            hidden_act="netadv_a_tanh",
        )
        model = BertModel(cfg)
        act = model.encoder.layer[0].intermediate.intermediate_act_fn
        assert isinstance(act, Adversarial) and act.spec.name == "tanh"
        assert act is not model.encoder.layer[1].intermediate.intermediate_act_fn
    finally:
        del ACT2FN["netadv_a_tanh"]


# ---- command line --------------------------------------------------------------------------------


def test_cli_plan(capsys):
    from netadv.cli.plan import main as plan_main

    assert plan_main(["--model", "torchvision:resnet18", "--method", "ga"]) == 0
    out = capsys.readouterr().out
    assert "layer1.0.relu [call 2/2]" in out and "17 sites" in out
    argv = [
        "--model",
        "timm:vit_tiny_patch16_224",
        "--model-kwargs",
        "img_size=32,patch_size=4,depth=2",
        "--method",
        "sa",
        "--input-shape",
        "1,3,32,32",
        "--json",
    ]
    assert plan_main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["discovery"] == "example_inputs" and d["counts"] == {"HD-FGD": 1, "SA": 1}
    argv = ["--model", "torchvision.models:resnet18", "--method", "replace"]
    assert plan_main(argv + ["--activation", "sigmoid", "--include", "layer4.*"]) == 0
    assert "4 f, 13 unchanged" in capsys.readouterr().out


@pytest.mark.parametrize(
    "spec, message",
    [
        ("resnet18", "--model must be"),
        ("torchvision:nope", "torchvision has no model"),
        ("timm:nope", "timm has no model"),
        ("no.such.module:make", "cannot import"),
        ("torch.nn:NoSuchFactory", "has no callable"),
        ("collections:OrderedDict", "not a torch.nn.Module"),
    ],
)
def test_cli_bad_specs_are_one_line_errors(spec, message):
    from netadv.cli.plan import main as plan_main

    argv = ["--model", spec, "--method", "ga"]
    with pytest.raises(ConfigError, match=message) as e:
        plan_main(argv)
    assert "\n" not in str(e.value)


def test_cli_bad_arguments():
    from netadv.cli.plan import main as plan_main

    with pytest.raises(ConfigError, match="--input-shape"):
        plan_main(["--model", "torchvision:resnet18", "--method", "ga", "--input-shape", "a,b"])
    with pytest.raises(ConfigError, match="key=value"):
        plan_main(["--model", "torchvision:resnet18", "--method", "ga", "--model-kwargs", "x"])
    bad = ["--model", "torchvision:resnet18", "--method", "ga", "--input-shape", "1,3"]
    with pytest.raises(ConfigError, match="failed on example_inputs"):
        plan_main(bad)


def test_public_api():
    assert netadv.RewritePlan is RewritePlan
    assert {"plan", "rewrite", "RewritePlan"} <= set(netadv.__all__)
