"""The subword tokenizer (a joint byte-level BPE), token ids of sentence pairs, and batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from netadv.experiments.translate.corpus import Pair

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


def train_tokenizer(texts: list[str], vocab_size: int):
    """A joint source+target byte-level BPE (HuggingFace ``tokenizers``): any text encodes
    without unknown tokens and decodes back exactly. Special ids: pad 0, bos 1, eos 2, unk 3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def decode_text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


@dataclass
class Encoded:
    """Token ids of one split: source ``... EOS``, target ``BOS ... EOS``."""

    src: list[list[int]]
    tgt: list[list[int]]
    refs: list[str]  # the target text, for BLEU


def encode_pairs(tokenizer, pairs: list[Pair], max_len: int, *, drop_long: bool) -> Encoded:
    """Encode pairs; longer than ``max_len`` tokens: dropped (training) or truncated (eval,
    which still scores against the full reference)."""
    src_ids = tokenizer.encode_batch([p[0] for p in pairs])
    tgt_ids = tokenizer.encode_batch([p[1] for p in pairs])
    out = Encoded([], [], [])
    for (_, ref), s, t in zip(pairs, src_ids, tgt_ids):
        s, t = [*s.ids, EOS], [BOS, *t.ids, EOS]
        if len(s) > max_len or len(t) > max_len:
            if drop_long:
                continue
            s, t = [*s[: max_len - 1], EOS], [*t[: max_len - 1], EOS]
        out.src.append(s)
        out.tgt.append(t)
        out.refs.append(ref)
    return out


def pad_batch(seqs: list[list[int]]) -> Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out


def length_batches(
    indices: list[int], lengths: list[int], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """Shuffled batches of similar lengths: shuffle, sort pools of 50 batches by length, cut,
    then shuffle the batches (less padding, still a random order). The number of batches
    depends only on ``len(indices)``, so DDP ranks take the same number of steps."""
    order = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
    pool = 50 * batch_size
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
