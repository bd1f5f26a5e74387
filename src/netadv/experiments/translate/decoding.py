"""Decoding (greedy and beam search, with incremental decoding) and BLEU."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from netadv.experiments.translate.tokenizer import BOS, EOS, PAD, decode_text, pad_batch

LENGTH_ALPHA = 0.6  # beam search length normalisation ((5 + len) / 6) ** alpha (GNMT)


def _strip(row: list[int]) -> list[int]:
    """Tokens after BOS up to (not including) the first EOS."""
    out = []
    for t in row[1:]:
        if t in (EOS, PAD):
            break
        out.append(t)
    return out


def _mask_specials(logits: Tensor) -> Tensor:
    """Padding and BOS are never predicted."""
    logits = logits.float()
    logits[:, PAD] = -math.inf
    logits[:, BOS] = -math.inf
    return logits


def max_target_len(src: Tensor, max_len: int) -> int:
    """Decoding stops at EOS or at ``2 * source length + 10`` tokens, at most ``max_len``."""
    return min(max_len, 2 * src.shape[1] + 10)


@torch.no_grad()
def greedy_decode(model: nn.Module, src: Tensor, max_len: int) -> list[list[int]]:
    """The most likely next token at each step, until EOS or :func:`max_target_len`."""
    memory, pad = model.encode(src)
    state = model.start_state(memory, pad)
    token = torch.full((src.shape[0],), BOS, dtype=torch.long, device=src.device)
    out = [token]
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_target_len(src, max_len) - 1):
        token = _mask_specials(model.step(token, state)).argmax(-1).masked_fill(done, PAD)
        out.append(token)
        done |= token == EOS
        if done.all():
            break
    return [_strip(r) for r in torch.stack(out, 1).tolist()]


@torch.no_grad()
def beam_decode(model: nn.Module, src: Tensor, max_len: int, beam: int) -> list[list[int]]:
    """Beam search: ``beam`` hypotheses per sentence scored by their summed log-probability;
    finished ones are kept (extended by padding at no cost) and the final choice divides by
    the GNMT length penalty ``((5 + length) / 6) ** 0.6``."""
    b = src.shape[0]
    memory, pad = model.encode(src)
    state = model.start_state(memory.repeat_interleave(beam, 0), pad.repeat_interleave(beam, 0))
    ys = torch.full((b * beam, 1), BOS, dtype=torch.long, device=src.device)
    scores = torch.zeros(b, beam, device=src.device)
    scores[:, 1:] = -math.inf  # all beams start identical: expand only the first
    finished = torch.zeros(b * beam, dtype=torch.bool, device=src.device)
    rows = torch.arange(b, device=src.device)[:, None] * beam
    for _ in range(max_target_len(src, max_len) - 1):
        logp = _mask_specials(model.step(ys[:, -1], state)).log_softmax(-1)
        vocab = logp.shape[-1]
        if finished.any():
            logp[finished] = -math.inf
            logp[finished.nonzero(as_tuple=True)[0], PAD] = 0.0
        top, idx = (scores.reshape(-1, 1) + logp).view(b, beam * vocab).topk(beam, -1)
        origin = (rows + idx // vocab).view(-1)
        token = (idx % vocab).view(-1)
        ys = torch.cat([ys[origin], token[:, None]], 1)
        model.reorder_state(state, origin)
        finished = finished[origin] | (token == EOS)
        scores = top
        if finished.all():
            break
    lengths = (ys[:, 1:] != PAD).sum(1).float().view(b, beam)  # tokens with EOS
    best = (scores / ((5 + lengths) / 6) ** LENGTH_ALPHA).argmax(1)
    chosen = ys.view(b, beam, -1)[torch.arange(b, device=src.device), best]
    return [_strip(r) for r in chosen.tolist()]


def translate_ids(
    model: nn.Module,
    src: list[list[int]],
    *,
    max_len: int,
    decoding: str = "greedy",
    beam_size: int = 4,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> list[list[int]]:
    """Decode source id lists (``... EOS``) in length-sorted batches; results in input order."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(src)), key=lambda i: len(src[i]))
    out: list[list[int]] = [[] for _ in src]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = pad_batch([src[i] for i in chunk]).to(device)
        if decoding == "beam":
            hyps = beam_decode(model, batch, max_len, beam_size)
        else:
            hyps = greedy_decode(model, batch, max_len)
        for i, h in zip(chunk, hyps):
            out[i] = h
    model.train(was_training)
    return out


def translate(
    model: nn.Module, tokenizer, sentences: list[str], *, max_len: int = 64, **options
) -> list[str]:
    """Translate plain sentences with a trained model and its tokenizer."""
    ids = [[*e.ids[: max_len - 1], EOS] for e in tokenizer.encode_batch(sentences)]
    return [
        decode_text(tokenizer, h) for h in translate_ids(model, ids, max_len=max_len, **options)
    ]


def bleu(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus sacreBLEU (13a tokenisation, 0-100) and chrF."""
    import sacrebleu

    return {
        "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
        "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
    }
