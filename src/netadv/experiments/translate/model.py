"""The seq2seq model: a small pre-norm encoder-decoder Transformer whose feed-forward
activations are the sites the rewriter turns into GA, HD-FGD or SA."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netadv.experiments.translate.tokenizer import PAD
from netadv.rewrite.modules import activation_module


class FeedForward(nn.Module):
    """``fc2(dropout(act(fc1(x))))``: the activation site the rewriter turns into GA, HD-FGD
    or SA (fc1 is its producer, fc2 its consumer)."""

    def __init__(self, dim: int, hidden: int, activation: Any, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation_module(activation)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


def _attention(dim: int, heads: int, dropout: float) -> nn.MultiheadAttention:
    return nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)


class EncoderLayer(nn.Module):
    """Pre-norm: ``x + attn(ln(x))``, then ``x + ffn(ln(x))``."""

    def __init__(self, dim, heads, hidden, activation, dropout):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, hidden, activation, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, h, key_padding_mask=pad, need_weights=False)[0])
        return x + self.drop(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, cross-attention to the encoder, feed-forward."""

    def __init__(self, dim, heads, hidden, activation, dropout):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = _attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = _attention(dim, heads, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, hidden, activation, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, src_pad: Tensor, causal: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, h, attn_mask=causal, need_weights=False)[0])
        h = self.norm2(x)
        x = x + self.drop(
            self.cross_attn(h, memory, memory, key_padding_mask=src_pad, need_weights=False)[0]
        )
        return x + self.drop(self.ffn(self.norm3(x)))

    def step(self, x: Tensor, cache: dict[str, Tensor], src_keep: Tensor) -> Tensor:
        """One new position (B, 1, d) in eval mode, with this layer's keys and values of the
        earlier positions (``cache["k"], cache["v"]``, extended here) and of the encoder
        output (``cache["mk"], cache["mv"]``)."""
        h = self.norm1(x)
        k, v = _heads(self.self_attn, h, 1), _heads(self.self_attn, h, 2)
        if "k" in cache:
            k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
        cache["k"], cache["v"] = k, v
        x = x + _attend(self.self_attn, _heads(self.self_attn, h, 0), k, v, None)
        q = _heads(self.cross_attn, self.norm2(x), 0)
        x = x + _attend(self.cross_attn, q, cache["mk"], cache["mv"], src_keep)
        return x + self.ffn(self.norm3(x))


def _heads(attn: nn.MultiheadAttention, x: Tensor, which: int) -> Tensor:
    """Query (0), key (1) or value (2) projection of ``x`` (B, T, d) by ``attn``'s own
    weights, as (B, heads, T, d / heads)."""
    d, heads = attn.embed_dim, attn.num_heads
    w = attn.in_proj_weight[which * d : (which + 1) * d]
    b = attn.in_proj_bias[which * d : (which + 1) * d] if attn.in_proj_bias is not None else None
    return F.linear(x, w, b).view(x.shape[0], x.shape[1], heads, d // heads).transpose(1, 2)


def _attend(
    attn: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None
) -> Tensor:
    """``attn``'s output for projected heads; ``keep`` (B, S) marks the keys to attend to."""
    mask = None if keep is None else keep[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    b, _, t, _ = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, attn.embed_dim))


def sinusoids(length: int, dim: int) -> Tensor:
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


class Seq2SeqTransformer(nn.Module):
    """A small pre-norm encoder-decoder Transformer with shared source/target embeddings tied
    to the output layer and sinusoidal positions.

    Built from plain ``nn.Linear``/``nn.MultiheadAttention``/``nn.LayerNorm`` (not
    ``nn.TransformerEncoderLayer``, whose fused path reads the feed-forward weights directly
    and would bypass a rewritten producer). ``forward(src, tgt_in)`` takes (B, S) and (B, T)
    token ids (0 = padding) and returns (B, T, vocab) logits.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        d_model: int = 256,
        heads: int = 4,
        encoder_layers: int = 3,
        decoder_layers: int = 3,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        activation: Any = "gelu",
        max_positions: int = 512,
    ):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()
        self.register_buffer("positions", sinusoids(max_positions, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)
        args = (d_model, heads, ffn_dim, activation, dropout)
        self.encoder = nn.ModuleList(EncoderLayer(*args) for _ in range(encoder_layers))
        self.encoder_norm = nn.LayerNorm(d_model)
        self.decoder = nn.ModuleList(DecoderLayer(*args) for _ in range(decoder_layers))
        self.decoder_norm = nn.LayerNorm(d_model)

    def _embed(self, ids: Tensor) -> Tensor:
        x = self.embed(ids) * math.sqrt(self.d_model) + self.positions[: ids.shape[1]]
        return self.drop(x)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """(memory (B, S, d), source padding mask (B, S), True at padding)."""
        pad = src == PAD
        x = self._embed(src)
        for layer in self.encoder:
            x = layer(x, pad)
        return self.encoder_norm(x), pad

    def decode(self, tgt_in: Tensor, memory: Tensor, src_pad: Tensor) -> Tensor:
        """Logits (B, T, vocab) for the next token at every target position."""
        t = tgt_in.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=tgt_in.device).triu(1)
        x = self._embed(tgt_in)
        for layer in self.decoder:
            x = layer(x, memory, src_pad, causal)
        return F.linear(self.decoder_norm(x), self.embed.weight)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        memory, pad = self.encode(src)
        return self.decode(tgt_in, memory, pad)

    # incremental decoding (eval mode): each step runs only the newest position, reusing the
    # keys and values of the earlier ones; equal to ``decode`` up to float rounding

    def start_state(self, memory: Tensor, src_pad: Tensor) -> dict[str, Any]:
        layers = [
            {"mk": _heads(layer.cross_attn, memory, 1), "mv": _heads(layer.cross_attn, memory, 2)}
            for layer in self.decoder
        ]
        return {"layers": layers, "keep": ~src_pad, "t": 0}

    def step(self, token: Tensor, state: dict[str, Any]) -> Tensor:
        """Logits (B, vocab) of the token after ``token`` (B,), the newest target token."""
        x = self.embed(token[:, None]) * math.sqrt(self.d_model)
        x = x + self.positions[state["t"]]
        for layer, cache in zip(self.decoder, state["layers"]):
            x = layer.step(x, cache, state["keep"])
        state["t"] += 1
        return F.linear(self.decoder_norm(x[:, 0]), self.embed.weight)

    @staticmethod
    def reorder_state(state: dict[str, Any], index: Tensor) -> None:
        """Keep the rows ``index`` of every cache (beam search)."""
        state["keep"] = state["keep"][index]
        for cache in state["layers"]:
            for key in cache:
                cache[key] = cache[key][index]


def build_translation_model(name: str, vocab_size: int, max_len: int, **kwargs) -> nn.Module:
    if name != "transformer":
        raise ValueError(f"unknown translation model {name!r}; known: transformer")
    try:
        return Seq2SeqTransformer(vocab_size, max_positions=max(512, max_len), **kwargs)
    except TypeError as e:
        raise ValueError(f"bad model_kwargs for transformer: {e}") from None


def token_loss(
    net: nn.Module, src: Tensor, tgt: Tensor, smoothing: float = 0.0
) -> tuple[Tensor, int]:
    """Mean cross-entropy per target token (padding ignored), and the number of tokens."""
    logits = net(src, tgt[:, :-1])
    gold = tgt[:, 1:]
    loss = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        gold.reshape(-1),
        ignore_index=PAD,
        label_smoothing=smoothing,
    )
    return loss, int((gold != PAD).sum())
