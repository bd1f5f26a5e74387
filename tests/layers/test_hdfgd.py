"""HD-FGD and SA blocks (METHOD.md sections 4-5): equivalence, layout, budget, penalty, errors."""

from __future__ import annotations

import copy
import math

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

import netadv

pytestmark = pytest.mark.usefixtures("one_thread")

ACTS = {
    "gelu": F.gelu,
    "silu": F.silu,
    "mish": F.mish,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
}
K = {"gelu": 2, "silu": 2, "mish": 2, "gelu_tanh": 3, "tanh": 4}
acts = pytest.mark.parametrize("act", sorted(ACTS))


def _randomize_norm(norm: nn.Module) -> nn.Module:
    """Non-trivial affine parameters and running statistics, so copying them matters."""
    with torch.no_grad():
        norm.weight.copy_(torch.rand_like(norm.weight) + 0.5)
        norm.bias.copy_(torch.randn_like(norm.bias))
        if getattr(norm, "running_mean", None) is not None:
            norm.running_mean.copy_(torch.randn_like(norm.running_mean) * 0.3)
            norm.running_var.copy_(torch.rand_like(norm.running_var) + 0.5)
    return norm


def _n_params(*modules) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


# --- gradcheck ------------------------------------------------------------------------------


@acts
@pytest.mark.parametrize("sa", [False, True], ids=["hdfgd", "sa"])
def test_gradcheck_linear_block(act, sa):
    block = netadv.hdfgd(nn.Linear(3, 4), act, consumer=nn.Linear(4, 2), adversarial=sa).double()
    x = (2.5 * torch.randn(4, 3, dtype=torch.float64)).requires_grad_(True)
    w = block.producer.weight.detach().clone().requires_grad_(True)
    # input and the wide producer's weight (the pre-activations cross the SA intervals' edges)
    fn = lambda x, w: functional_call(block, {"producer.weight": w}, (x,))
    assert torch.autograd.gradcheck(fn, (x, w), eps=1e-6, atol=1e-6, rtol=1e-4)


@acts
@pytest.mark.parametrize("sa", [False, True], ids=["hdfgd", "sa"])
def test_gradcheck_conv_batchnorm_block_eval(act, sa):
    conv, bn = nn.Conv2d(2, 3, 3, padding=1), _randomize_norm(nn.BatchNorm2d(3))
    block = netadv.hdfgd(conv, act, norm=bn, adversarial=sa).double().eval()
    x = (2.0 * torch.randn(1, 2, 3, 3, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(block, (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


# --- init="copy" computes the original function ---------------------------------------------


@acts
@pytest.mark.parametrize("with_norm", [False, True], ids=["", "layernorm"])
@pytest.mark.parametrize("with_consumer", [False, True], ids=["", "consumer"])
@pytest.mark.parametrize("shape", [(5, 6), (2, 3, 6)], ids=["2d", "3d"])
def test_copy_linear_equals_original(act, with_norm, with_consumer, shape):
    lin = nn.Linear(6, 8)
    norm = _randomize_norm(nn.LayerNorm(8)) if with_norm else None
    consumer = nn.Linear(8, 5) if with_consumer else None
    block = netadv.hdfgd(lin, act, norm=norm, consumer=consumer)
    x = 2 * torch.randn(*shape)
    z = lin(x)
    if norm is not None:
        z = norm(z)
    want = ACTS[act](z)
    if consumer is not None:
        want = consumer(want)
    got = block(x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-5


@acts
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_copy_conv2d_batchnorm_equals_original(act, train):
    conv, bn = nn.Conv2d(3, 4, 3, padding=1), _randomize_norm(nn.BatchNorm2d(4))
    block = netadv.hdfgd(conv, act, norm=bn)
    block.train(train)
    bn.train(train)  # both see the same batch statistics in train mode
    x = torch.randn(3, 3, 6, 6)
    got = block(x)
    want = ACTS[act](bn(conv(x)))
    assert (got - want).abs().max().item() < 1e-5
    # the wide BatchNorm's running statistics track the original's, unit-major
    k = K[act]
    torch.testing.assert_close(block.norm.running_mean, bn.running_mean.repeat_interleave(k))
    torch.testing.assert_close(block.norm.running_var, bn.running_var.repeat_interleave(k))


@pytest.mark.parametrize("act", ["gelu", "tanh"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_copy_conv1d_groupnorm_equals_original(act, train):
    conv, gn = nn.Conv1d(3, 4, 3), _randomize_norm(nn.GroupNorm(2, 4))
    block = netadv.hdfgd(conv, act, norm=gn)
    block.train(train)
    gn.train(train)
    x = torch.randn(2, 3, 9)
    assert (block(x) - ACTS[act](gn(conv(x)))).abs().max().item() < 1e-5


def test_copy_conv3d_batchnorm_equals_original():
    conv, bn = nn.Conv3d(2, 3, 3, padding=1), _randomize_norm(nn.BatchNorm3d(3))
    block = netadv.hdfgd(conv.eval(), "silu", norm=bn.eval())
    assert not block.training and not block.norm.training
    x = torch.randn(2, 2, 4, 4, 4)
    assert (block(x) - F.silu(bn(conv(x)))).abs().max().item() < 1e-5


def test_copy_sa_differs_from_original_but_hdfgd_does_not():
    lin = nn.Linear(4, 6)
    x = 2 * torch.randn(8, 4)
    same = netadv.hdfgd(lin, "silu")(x)
    sa = netadv.hdfgd(lin, "silu", adversarial=True)(x)
    assert (same - F.silu(lin(x))).abs().max() < 1e-5
    assert (sa - F.silu(lin(x))).abs().max() > 1e-2


# --- layout, one matmul, fresh init ---------------------------------------------------------


def test_copy_layout_is_unit_major():
    lin, ln = nn.Linear(5, 4), _randomize_norm(nn.LayerNorm(4))
    block = netadv.hdfgd(lin, "gelu_tanh", norm=ln)
    k = 3
    w = block.producer.weight.view(4, k, 5)
    for i in range(k):
        torch.testing.assert_close(w[:, i], lin.weight, rtol=0, atol=0)
        torch.testing.assert_close(block.producer.bias.view(4, k)[:, i], lin.bias)
        torch.testing.assert_close(block.norm.weight.view(4, k)[:, i], ln.weight)


def test_contiguous_shard_of_units_evaluates_locally():
    # column-parallel sharding splits the wide output into contiguous blocks: with the unit-major
    # layout a shard holding units [a, b) has all their k terms and computes F on its own
    block = netadv.hdfgd(nn.Linear(5, 6), "tanh", init="fresh")
    k, x = 4, torch.randn(3, 5)
    full = block(x)
    d = netadv.decompose("tanh")
    for a, b in ((0, 2), (2, 6)):
        w = block.producer.weight[a * k : b * k]
        bias = block.producer.bias[a * k : b * k]
        z = F.linear(x, w, bias).unflatten(-1, (b - a, k))
        local = d(*z.unbind(-1))
        torch.testing.assert_close(local, full[:, a:b])


class _CountLinear(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            self.shapes.append(tuple(args[1].shape))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "tanh"])
def test_one_wide_matmul_for_all_terms(act):
    block = netadv.hdfgd(nn.Linear(6, 5), act, consumer=nn.Linear(5, 2))
    assert isinstance(block.producer, nn.Linear) and block.producer.out_features == K[act] * 5
    with _CountLinear() as mode:
        block(torch.randn(3, 6))
    assert mode.shapes == [(K[act] * 5, 6), (2, 5)]


def test_fresh_init_draws_terms_independently():
    lin = nn.Linear(6, 5)
    block = netadv.hdfgd(lin, "gelu", init="fresh")
    w = block.producer.weight.view(5, 2, 6)
    assert not torch.allclose(w[:, 0], w[:, 1])
    assert not torch.allclose(w[:, 0], lin.weight)
    bound = 1 / math.sqrt(6)  # nn.Linear's default init range for fan_in 6
    assert w.abs().max() <= bound


def test_block_mode_follows_the_producer():
    assert netadv.hdfgd(nn.Linear(2, 3), "gelu").training
    assert not netadv.hdfgd(nn.Linear(2, 3).eval(), "gelu").training


def test_block_deepcopies_and_survives_state_dict_round_trip():
    block = netadv.hdfgd(nn.Linear(3, 4), "silu", consumer=nn.Linear(4, 2), adversarial=True)
    clone = copy.deepcopy(block)
    x = torch.randn(5, 3)
    torch.testing.assert_close(clone(x), block(x))
    other = netadv.hdfgd(nn.Linear(3, 4), "silu", consumer=nn.Linear(4, 2), adversarial=True)
    other.load_state_dict(block.state_dict())
    torch.testing.assert_close(other(x), block(x))


# --- match_params ---------------------------------------------------------------------------


MATCH_CASES = {
    # name: (producer, norm, consumer, parameters one hidden unit costs at width k)
    "linear": lambda k: (nn.Linear(8, 16), None, nn.Linear(16, 8), k * (8 + 1) + 8),
    "linear-nobias": lambda k: (
        nn.Linear(8, 16, bias=False),
        None,
        nn.Linear(16, 8, bias=False),
        k * 8 + 8,
    ),
    "linear-layernorm": lambda k: (
        nn.Linear(8, 16),
        nn.LayerNorm(16),
        nn.Linear(16, 8),
        k * (8 + 1 + 2) + 8,
    ),
    "conv-bn": lambda k: (
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 4, 1),
        k * (3 * 9 + 1 + 2) + 4,
    ),
}


@pytest.mark.parametrize("case", sorted(MATCH_CASES))
@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "tanh"])
def test_match_params_keeps_the_budget(case, act):
    producer, norm, consumer, unit = MATCH_CASES[case](K[act])
    original = _n_params(producer, norm, consumer)
    block = netadv.hdfgd(
        producer, act, norm=norm, consumer=consumer, match_params=True, init="fresh"
    )
    count = _n_params(block)
    assert count <= original
    assert original - count < unit
    assert block.width < 16
    x = torch.randn(2, 3, 6, 6) if case == "conv-bn" else torch.randn(4, 8)
    want_shape = consumer(norm(producer(x)) if norm is not None else producer(x)).shape
    assert block(x).shape == want_shape


def test_match_params_with_groupnorm_keeps_whole_groups():
    producer, gn, consumer = nn.Conv1d(4, 8, 3), nn.GroupNorm(4, 8), nn.Conv1d(8, 4, 1)
    original = _n_params(producer, gn, consumer)
    block = netadv.hdfgd(
        producer, "gelu", norm=gn, consumer=consumer, match_params=True, init="fresh"
    )
    assert block.width % 4 == 0
    unit = 2 * (4 * 3 + 1 + 2) + 4
    assert 0 <= original - _n_params(block) < 4 * unit
    assert block(torch.randn(2, 4, 7)).shape == (2, 4, 5)


def test_match_params_needs_consumer():
    with pytest.raises(netadv.ConfigError, match="needs the consumer"):
        netadv.hdfgd(nn.Linear(4, 8), "gelu", match_params=True, init="fresh")


def test_match_params_refuses_copy_init():
    with pytest.raises(netadv.ConfigError, match="use init='fresh'"):
        netadv.hdfgd(nn.Linear(4, 8), "gelu", consumer=nn.Linear(8, 4), match_params=True)


def test_match_params_needs_linear_or_conv_consumer():
    with pytest.raises(netadv.ConfigError, match="Linear/Conv consumer"):
        netadv.hdfgd(
            nn.Linear(4, 8), "gelu", consumer=nn.Identity(), match_params=True, init="fresh"
        )


# --- SA forward and penalty -----------------------------------------------------------------

C = math.sqrt(2 / math.pi)


def _sa_reference(act, zs, adv):
    """(output, list of adversarial term values) of the SA form, computed by hand."""
    if act == "gelu":
        t = [adv["normal_cdf"](zs[1])]
        return zs[0] * t[0], t
    if act == "silu":
        t = [adv["sigmoid"](zs[1])]
        return zs[0] * t[0], t
    if act == "gelu_tanh":
        t = [adv["tanh"](C * (zs[1] + 0.044715 * zs[2] ** 3))]
        return zs[0] / 2 * (1 + t[0]), t
    if act == "tanh":
        t = [adv["exp"](zs[0]), adv["exp"](-zs[1]), adv["exp"](zs[2]), adv["exp"](-zs[3])]
        # the denominator is held at half its value at the origin, A_exp(0) + A_exp(0) = 2
        return (t[0] - t[1]) / (t[2] + t[3]).clamp(min=1.0), t
    raise AssertionError(act)


def _adv(**kw):
    return {n: netadv.adversarial(n, **kw) for n in ("normal_cdf", "sigmoid", "tanh", "exp")}


@pytest.mark.parametrize("act", ["gelu", "silu", "gelu_tanh", "tanh"])
def test_sa_forward_and_penalty_by_hand(act):
    block = netadv.hdfgd(
        nn.Linear(4, 5), act, consumer=nn.Linear(5, 3), adversarial=True, penalty_weight=0.01
    )
    x = 2 * torch.randn(6, 4)
    y = block(x)
    z = F.linear(x, block.producer.weight, block.producer.bias)
    k = K[act]
    zs = [z[:, i::k] for i in range(k)]  # unit-major: term i of unit j is row j*k + i
    out, terms = _sa_reference(act, zs, _adv())
    torch.testing.assert_close(y, block.consumer(out))
    expected = 0.01 * sum(t.pow(2).mean() for t in terms)
    torch.testing.assert_close(netadv.penalty(block), expected)
    torch.testing.assert_close(netadv.penalty(nn.Sequential(block)), expected)


def test_sa_options_reach_the_adversarial_terms():
    block = netadv.hdfgd(nn.Linear(3, 4), "gelu", adversarial=True, anchor="zero", max_gain=60)
    (m,) = block.adversarial.values()
    assert m.anchor == "zero" and m.max_gain == 60.0
    x = torch.randn(5, 3)
    z = block.producer(x)
    torch.testing.assert_close(
        block(x), z[:, 0::2] * _adv(anchor="zero", max_gain=60)["normal_cdf"](z[:, 1::2])
    )


def test_penalty_sums_blocks_with_their_weights_and_flows_to_producers():
    b1 = netadv.hdfgd(
        nn.Linear(4, 6), "gelu", consumer=nn.Linear(6, 4), adversarial=True, penalty_weight=1e-3
    )
    b2 = netadv.hdfgd(nn.Linear(4, 3), "tanh", adversarial=True, penalty_weight=0.5)
    b3 = netadv.hdfgd(nn.Linear(3, 3), "silu", adversarial=True, penalty_weight=0.0)
    b4 = netadv.hdfgd(nn.Linear(3, 3), "silu")  # HD-FGD: no penalty
    model = nn.Sequential(b1, b2, b3, b4)
    assert netadv.penalty(model).item() == 0.0  # nothing recorded before a forward
    x = torch.randn(7, 4)
    model(x)
    p = netadv.penalty(model)  # before the reference below calls b1 again
    adv = _adv()
    z1 = b1.producer(x)
    _, t1 = _sa_reference("gelu", [z1[:, 0::2], z1[:, 1::2]], adv)
    z2 = b2.producer(b1(x))
    _, t2 = _sa_reference("tanh", [z2[:, i::4] for i in range(4)], adv)
    expected = 1e-3 * sum(t.pow(2).mean() for t in t1) + 0.5 * sum(t.pow(2).mean() for t in t2)
    torch.testing.assert_close(p, expected)
    assert p.requires_grad
    params = [b1.producer.weight, b2.producer.weight, b3.producer.weight]
    got = torch.autograd.grad(p, params[:2], retain_graph=True)
    want = torch.autograd.grad(expected, params[:2])
    for g, w in zip(got, want):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, w)
    p.backward()
    assert b3.producer.weight.grad is None  # weight 0: it is not in the penalty at all


def test_penalty_is_zero_without_sa_blocks():
    plain = nn.Sequential(nn.Linear(3, 3), nn.GELU())
    hd = nn.Sequential(netadv.hdfgd(nn.Linear(3, 3), "gelu"))
    for model in (plain, hd, nn.Sequential(nn.ReLU())):
        model(torch.randn(2, 3))
        p = netadv.penalty(model)
        assert isinstance(p, torch.Tensor) and p.shape == () and p.item() == 0.0


def test_penalty_weight_zero_and_default():
    b0 = netadv.hdfgd(nn.Linear(3, 3), "silu", adversarial=True, penalty_weight=0)
    b0(torch.randn(4, 3))
    assert b0.last_penalty is not None and b0.last_penalty > 0
    assert netadv.penalty(b0).item() == 0.0
    assert netadv.hdfgd(nn.Linear(3, 3), "silu", adversarial=True).penalty_weight == 1e-4


def test_penalty_follows_the_last_forward():
    block = netadv.hdfgd(nn.Linear(3, 3), "silu", adversarial=True, penalty_weight=1.0)
    block(torch.zeros(2, 3))
    p_small = netadv.penalty(block).item()
    x = 5 * torch.randn(2, 3)
    block(x)
    z = block.producer(x)
    expected = netadv.adversarial("sigmoid")(z[:, 1::2]).pow(2).mean()
    torch.testing.assert_close(netadv.penalty(block), expected)
    assert netadv.penalty(block).item() != p_small


# --- errors ---------------------------------------------------------------------------------


def test_bad_init():
    with pytest.raises(netadv.ConfigError, match="init must be one of"):
        netadv.hdfgd(nn.Linear(3, 3), "gelu", init="zeros")


@pytest.mark.parametrize(
    "producer",
    [nn.ConvTranspose2d(3, 3, 3), nn.ConvTranspose1d(3, 3, 3), nn.Embedding(4, 3), nn.GELU()],
    ids=lambda m: type(m).__name__,
)
def test_bad_producer(producer):
    with pytest.raises(netadv.ConfigError, match="producer must be nn.Linear or nn.Conv1d/2d/3d"):
        netadv.hdfgd(producer, "gelu")


def test_bad_norm():
    with pytest.raises(netadv.ConfigError, match="norm must be one of"):
        netadv.hdfgd(nn.Linear(3, 3), "gelu", norm=nn.Dropout())
    with pytest.raises(netadv.ConfigError, match="last dimension only"):
        netadv.hdfgd(nn.Linear(3, 3), "gelu", norm=nn.LayerNorm((2, 3)))


def test_bad_penalty_weight():
    with pytest.raises(netadv.ConfigError, match="penalty_weight must be >= 0"):
        netadv.hdfgd(nn.Linear(3, 3), "gelu", adversarial=True, penalty_weight=-1.0)


@pytest.mark.parametrize("act", ["relu", "sigmoid"])
def test_unknown_decomposition(act):
    with pytest.raises(ValueError, match="has no HD-FGD decomposition"):
        netadv.hdfgd(nn.Linear(3, 3), act)


def test_sa_without_adversarial_terms():
    x = sympy.Symbol("x")
    with pytest.raises(netadv.ConfigError, match="use adversarial=False"):
        netadv.hdfgd(nn.Linear(3, 3), x * sympy.sin(x), adversarial=True)


def test_sa_bad_anchor_and_gain_propagate():
    with pytest.raises(netadv.ConfigError, match="anchor must be one of"):
        netadv.hdfgd(nn.Linear(3, 3), "gelu", adversarial=True, anchor="one")
    with pytest.raises(netadv.ConfigError, match="max_gain"):
        netadv.hdfgd(nn.Linear(3, 3), "gelu", adversarial=True, max_gain=-2)


def test_norm_keeps_its_own_mode():
    """A producer in train mode with a norm in eval mode: the wide norm stays in eval mode."""
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    bn.eval()
    block = netadv.hdfgd(conv, "gelu", norm=bn)
    assert block.producer.training and not block.norm.training
