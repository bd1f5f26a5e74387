"""The translation task: a small encoder-decoder Transformer, trained and scored with BLEU.

Read top to bottom: the corpus (real human translations from the gettext catalogs installed on
the machine, or the user's own parallel files), the subword tokenizer, the model, decoding, and
the training loop, which follows :func:`netadv.experiments.train.train` step for step (same
run folder, checkpoints, resume, DDP, diagnostics) with token-level loss, perplexity and
sacreBLEU in place of Top-1/Top-5.
"""

from __future__ import annotations

import gettext
import hashlib
import json
import math
import re
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

import netadv
from netadv.errors import ConfigError
from netadv.experiments.config import RunConfig
from netadv.experiments.models import activation_module
from netadv.experiments.train import (
    _reduce,
    apply_method,
    count_flops,
    hardware,
    load_checkpoint,
    lr_lambda,
    make_optimizer,
    optimizer_step,
    pick_device,
    read_metrics,
    record_epoch,
    run_folder,
    seed_everything,
    setup_distributed,
    stop_diverged,
    write_json_atomic,
)

LOCALE_ROOT = Path("/usr/share/locale")
CORPUS_FILE = "corpus.json"
TOKENIZER_FILE = "tokenizer.json"
HYPOTHESES_FILE = "test_hypotheses.txt"
# split by a hash of the normalised source, in parts per thousand: stable across machines,
# and near-duplicate sources ("Open file" / "Open file:") land in the same split
VALID_PER_MILLE = 50
TEST_PER_MILLE = 50
MIN_TRAIN_PAIRS = 100
MIN_TEST_PAIRS = 10
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
LENGTH_ALPHA = 0.6  # beam search length normalisation ((5 + len) / 6) ** alpha (GNMT)

# --------------------------------------------------------------------------------------------
# corpus

PLACEHOLDER = re.compile(r"[%{}$]")  # printf %s/%1$s, python %(x)s and {x}, shell $X / ${X}
MARKUP = re.compile(r"<[^>]*>|&#?\w+;|(?:^|[\s(\[])_\w|&\w")  # tags, entities, accelerators
NON_WORD = re.compile(r"\W+")

Pair = tuple[str, str]


@dataclass
class Corpus:
    """Sentence pairs per split, and what was read and dropped to get them (``info``)."""

    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]
    info: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def split_key(source: str) -> int:
    """0..999 from the SHA-256 of the case- and punctuation-folded source."""
    folded = NON_WORD.sub(" ", source.casefold()).strip()
    return int(hashlib.sha256(folded.encode()).hexdigest()[:8], 16) % 1000


def split_of(source: str) -> str:
    key = split_key(source)
    if key < TEST_PER_MILLE:
        return "test"
    return "valid" if key < TEST_PER_MILLE + VALID_PER_MILLE else "train"


def drop_reason(source: str, target: str, max_chars: int) -> str | None:
    """Why a catalog entry is not a clean sentence pair, or None if it is one."""
    if not source or not target:
        return "empty"
    if any(c in text for text in (source, target) for c in "\n\r\t"):
        return "newline"
    if PLACEHOLDER.search(source) or PLACEHOLDER.search(target):
        return "placeholder"
    if MARKUP.search(source) or MARKUP.search(target):
        return "markup"
    if len(source) > max_chars or len(target) > max_chars:
        return "too_long"
    if source.casefold() == target.casefold():
        return "untranslated"  # names and untranslated strings would teach copying
    return None


def _catalog_entries(path: Path) -> list[Pair]:
    """(msgid, msgstr) of one .mo file, sorted; plural entries give their singular form,
    message contexts are dropped."""
    with open(path, "rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog  # no public way to list the entries
    entries = []
    for key, value in catalog.items():
        if isinstance(key, tuple):  # plural: (msgid, form index)
            if key[1] != 0:
                continue
            key = key[0]
        if not key:  # the header entry
            continue
        key = key.split("\x04", 1)[-1]  # "context\x04msgid"
        entries.append((key.strip(), value.strip()))
    return sorted(entries)


def _assemble(pairs: list[Pair], max_chars: int, dropped: Counter) -> tuple[list[Pair], list[bool]]:
    """Clean pairs, first occurrence of each source kept; also which ones were kept."""
    seen: set[str] = set()
    out, kept = [], []
    for source, target in pairs:
        reason = drop_reason(source, target, max_chars)
        if reason is None and source in seen:
            reason = "duplicate"
        if reason:
            dropped[reason] += 1
            kept.append(False)
            continue
        seen.add(source)
        out.append((source, target))
        kept.append(True)
    return out, kept


def _hash_split(pairs: list[Pair]) -> dict[str, list[Pair]]:
    """train/valid/test by :func:`split_of`, each ordered by a hash of the pair (so "the first
    N" of a split, as ``limit_train`` takes, is a fixed pseudo-random sample)."""
    splits: dict[str, list[Pair]] = {"train": [], "valid": [], "test": []}
    for pair in pairs:
        splits[split_of(pair[0])].append(pair)
    for name in splits:
        splits[name].sort(key=lambda p: hashlib.sha256("\t".join(p).encode()).hexdigest())
    return splits


def gettext_corpus(root: Path, target_lang: str, max_chars: int) -> Corpus:
    """English -> ``target_lang`` pairs from every ``<root>/<lang>/LC_MESSAGES/*.mo``."""
    folder = root / target_lang / "LC_MESSAGES"
    files = sorted(folder.glob("*.mo")) if folder.is_dir() else []
    if not files:
        raise ConfigError(
            f"no gettext catalogs in {folder}: install translations for {target_lang!r} "
            "(Debian: the packages' locale files; check that the image does not exclude "
            "/usr/share/locale), set data_dir to another locale folder, or use "
            "dataset=parallel with your own files"
        )
    dropped: Counter = Counter()
    catalogs: dict[str, dict[str, int]] = {}
    skipped: dict[str, str] = {}
    pairs: list[Pair] = []
    for path in files:
        try:
            entries = _catalog_entries(path)
        except (OSError, UnicodeDecodeError, ValueError) as e:  # e.g. a mis-declared charset
            skipped[path.name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            continue
        catalogs[path.name] = {"entries": len(entries)}
        start = len(pairs)
        pairs.extend(entries)
        catalogs[path.name]["first"] = start
    clean, kept = _assemble(pairs, max_chars, dropped)
    for entry in catalogs.values():
        first = entry.pop("first")
        entry["kept"] = sum(kept[first : first + entry["entries"]])
    splits = _hash_split(clean)
    info = {
        "source": "gettext",
        "folder": str(folder),
        "catalogs": catalogs,
        "skipped_catalogs": skipped,
        "entries_read": len(pairs),
        "dropped": dict(sorted(dropped.items())),
    }
    return Corpus(splits["train"], splits["valid"], splits["test"], info)


SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "dev", "validation"), "test": ("test",)}


def _read_tsv(path: Path) -> list[Pair]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < 2:
            raise ConfigError(f"{path}, line {number}: expected SOURCE<TAB>TARGET")
        pairs.append((cells[0].strip(), cells[1].strip()))
    return pairs


def _read_aligned(src: Path, tgt: Path) -> list[Pair]:
    a = src.read_text(encoding="utf-8").splitlines()
    b = tgt.read_text(encoding="utf-8").splitlines()
    if len(a) != len(b):
        raise ConfigError(f"{src} has {len(a)} lines but {tgt} has {len(b)}: not line-aligned")
    return [(x.strip(), y.strip()) for x, y in zip(a, b)]


def _split_files(folder: Path, stem: str, src: str, tgt: str) -> tuple[list[Pair], list[str]]:
    """Pairs of ``stem.tsv`` or ``stem.SRC`` + ``stem.TGT`` (also ``stem.SRC-TGT.SRC``)."""
    tsv = folder / f"{stem}.tsv"
    if tsv.is_file():
        return _read_tsv(tsv), [tsv.name]
    for base in (f"{stem}.", f"{stem}.{src}-{tgt}."):
        a, b = folder / f"{base}{src}", folder / f"{base}{tgt}"
        if a.is_file() and b.is_file():
            return _read_aligned(a, b), [a.name, b.name]
    return [], []


def _clean(pairs: list[Pair], max_chars: int, dropped: Counter) -> list[Pair]:
    """Drop empty pairs and pairs longer than ``max_chars`` (either side)."""
    out = []
    for source, target in pairs:
        if not (source and target):
            dropped["empty"] += 1
        elif len(source) > max_chars or len(target) > max_chars:
            dropped["too_long"] += 1
        else:
            out.append((source, target))
    return out


def parallel_corpus(folder: Path, src: str, tgt: str, max_chars: int) -> Corpus:
    """The user's parallel text: split files (train/valid|dev/test as ``.tsv`` or
    ``.SRC``/``.TGT``), used as given (a missing test split is carved out of train by the
    source hash); or, without a train file, every ``*.tsv`` and ``*.SRC``/``*.TGT`` pair in
    the folder, deduplicated and split by the source hash. Empty and longer-than-``max_chars``
    pairs are dropped."""
    if not folder.is_dir():
        raise ConfigError(f"data_dir {folder} is not a folder")
    dropped: Counter = Counter()
    files: dict[str, list[str]] = {}
    splits: dict[str, list[Pair]] = {}
    for split, stems in SPLIT_NAMES.items():
        for stem in stems:
            pairs, names = _split_files(folder, stem, src, tgt)
            if names:
                files[split] = names
                splits[split] = _clean(pairs, max_chars, dropped)
                break
    if "train" in splits:
        how = "split files as given"
        if "test" not in splits:
            carved = _hash_split(splits["train"])
            splits = {
                "train": carved["train"],
                "valid": splits.get("valid") or carved["valid"],
                "test": carved["test"],
            }
            how = "train file split by the source hash (no test file)"
    else:
        pairs = []
        for tsv in sorted(folder.glob("*.tsv")):
            pairs += _read_tsv(tsv)
            files.setdefault("all", []).append(tsv.name)
        for a in sorted(folder.glob(f"*.{src}")):
            b = a.with_suffix(f".{tgt}")
            if b.is_file():
                pairs += _read_aligned(a, b)
                files.setdefault("all", []).extend([a.name, b.name])
        if not pairs:
            raise ConfigError(
                f"no parallel files in {folder}: expected train.tsv (SOURCE<TAB>TARGET per "
                f"line) or train.{src} + train.{tgt} (line-aligned), optionally with valid/dev "
                "and test files"
            )
        unique, seen = [], set()
        for pair in _clean(pairs, max_chars, dropped):
            if pair[0] in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(pair[0])
                unique.append(pair)
        splits = _hash_split(unique)
        how = "all files pooled, deduplicated and split by the source hash"
    info = {
        "source": "parallel",
        "folder": str(folder),
        "files": files,
        "split_from": how,
        "dropped": dict(sorted(dropped.items())),
    }
    return Corpus(splits["train"], splits.get("valid", []), splits["test"], info)


def _fingerprint(corpus: Corpus) -> str:
    h = hashlib.sha256()
    for split in (corpus.train, corpus.valid, corpus.test):
        for source, target in split:
            h.update(f"{source}\t{target}\n".encode())
        h.update(b"--\n")
    return h.hexdigest()[:16]


def build_corpus(
    dataset: str,
    lang_pair: str,
    data_dir: str | Path | None = None,
    *,
    max_chars: int = 200,
) -> Corpus:
    """The corpus of a config; raises :class:`ConfigError` with what to do when it is missing
    or too small to train on."""
    src, tgt = lang_pair.split("-")
    if dataset == "gettext":
        root = Path(data_dir) if data_dir else LOCALE_ROOT
        corpus = gettext_corpus(root, tgt, max_chars)
        hint = (
            f"install more translated packages for {tgt!r}, raise max_chars, or use "
            "dataset=parallel with data_dir pointing at your own files (e.g. WMT or IWSLT)"
        )
    elif dataset == "parallel":
        if data_dir is None:
            raise ConfigError("dataset=parallel needs data_dir")
        corpus = parallel_corpus(Path(data_dir), src, tgt, max_chars)
        hint = "add more pairs, or raise max_chars"
    else:
        raise ConfigError(f"unknown translation dataset {dataset!r}; known: gettext, parallel")
    counts = corpus.counts()
    if counts["train"] < MIN_TRAIN_PAIRS or counts["test"] < MIN_TEST_PAIRS:
        raise ConfigError(
            f"the {lang_pair} corpus from {corpus.info['folder']} is too small to train on: "
            f"{counts['train']} train / {counts['valid']} valid / {counts['test']} test pairs "
            f"after filtering (need >= {MIN_TRAIN_PAIRS} train and >= {MIN_TEST_PAIRS} test); "
            + hint
        )
    corpus.info.update(
        {
            "lang_pair": lang_pair,
            "filters": {
                "max_chars": max_chars,
                "rules": (
                    "gettext: drop empty entries, entries with newlines/tabs, format "
                    "placeholders (% { } $), markup/entities/accelerators, longer than "
                    "max_chars, identical source and target (case-folded), duplicate "
                    "sources (first catalog in name order wins)"
                    if dataset == "gettext"
                    else "drop empty pairs and pairs longer than max_chars"
                ),
            },
            "split": {
                "rule": "sha256 of the case- and punctuation-folded source, mod 1000",
                "test_per_mille": TEST_PER_MILLE,
                "valid_per_mille": VALID_PER_MILLE,
            },
            "counts": counts,
            "fingerprint": _fingerprint(corpus),
        }
    )
    return corpus


# --------------------------------------------------------------------------------------------
# tokenizer


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


# --------------------------------------------------------------------------------------------
# model


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


# --------------------------------------------------------------------------------------------
# decoding


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


# --------------------------------------------------------------------------------------------
# training loop


def _token_loss(
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


def evaluate_loss(
    model: nn.Module, data: Encoded, device, rank: int, world: int, batch_size: int = 128
) -> tuple[float, float]:
    """Teacher-forced (loss per token, perplexity) over a split, shared out over the ranks."""
    model.eval()
    total = tokens = 0.0
    mine = list(range(rank, len(data.src), world))
    mine.sort(key=lambda i: len(data.src[i]))
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            chunk = mine[start : start + batch_size]
            src = pad_batch([data.src[i] for i in chunk]).to(device)
            tgt = pad_batch([data.tgt[i] for i in chunk]).to(device)
            loss, n = _token_loss(model, src, tgt)
            total += loss.item() * n
            tokens += n
    total, tokens = _reduce([total, tokens], device, world)
    model.train()
    loss = total / max(tokens, 1.0)
    return loss, math.exp(min(loss, 50.0))


def evaluate_bleu(
    model: nn.Module, tokenizer, data: Encoded, cfg: RunConfig, device, rank: int, world: int
) -> tuple[dict[str, float], list[str]]:
    """Decode the split (each rank a share), gather, score: ({bleu, chrf}, hypotheses)."""
    mine = list(range(rank, len(data.src), world))
    ids = translate_ids(
        model,
        [data.src[i] for i in mine],
        max_len=cfg.max_len,
        decoding=cfg.decoding,
        beam_size=cfg.beam_size,
        device=device,
    )
    texts = [(i, decode_text(tokenizer, h)) for i, h in zip(mine, ids)]
    if world > 1:
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, texts)
        texts = [t for part in parts for t in part]
    hyps = [t for _, t in sorted(texts)]
    return bleu(hyps, data.refs), hyps


def evaluate(model, tokenizer, valid: Encoded, test: Encoded, cfg, device, rank, world) -> dict:
    """Valid and test loss/perplexity, test BLEU and chrF."""
    row: dict[str, Any] = {}
    if valid.src:
        row["valid_loss"], row["valid_ppl"] = evaluate_loss(model, valid, device, rank, world)
    row["test_loss"], row["test_ppl"] = evaluate_loss(model, test, device, rank, world)
    scores, hyps = evaluate_bleu(model, tokenizer, test, cfg, device, rank, world)
    row["test_bleu"], row["test_chrf"] = scores["bleu"], scores["chrf"]
    row["_hypotheses"] = hyps
    return row


def _example(data: Encoded) -> tuple[Tensor, Tensor]:
    """Two copies of the training pair nearest the median lengths: what the rewriter traces
    and what FLOPs are counted at."""
    n = len(data.src)
    ls = sorted(len(s) for s in data.src)[n // 2]
    lt = sorted(len(t) for t in data.tgt)[n // 2]
    i = min(range(n), key=lambda k: abs(len(data.src[k]) - ls) + abs(len(data.tgt[k]) - lt))
    src = torch.tensor([data.src[i]] * 2)
    tgt_in = torch.tensor([data.tgt[i][:-1]] * 2)
    return src, tgt_in


def _limit(pairs: list[Pair], limit: int | None) -> list[Pair]:
    return pairs if limit is None else pairs[:limit]


def _check_same_corpus(run_dir: Path, corpus: Corpus) -> None:
    """On resume: the corpus rebuilt here must be the one the run started with."""
    path = run_dir / CORPUS_FILE
    if not path.exists():
        return
    before = json.loads(path.read_text()).get("fingerprint")
    if before and before != corpus.info["fingerprint"]:
        raise ConfigError(
            f"--resume: the corpus built on this machine (fingerprint "
            f"{corpus.info['fingerprint']}) differs from the one {run_dir} started with "
            f"({before}); the installed catalogs or data files changed. Start a new run"
        )


def _check_same_tokenizer(tokenizer, device: torch.device) -> None:
    """Every DDP rank trains its own tokenizer (deterministic); make sure they agree."""
    digest = int(hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:12], 16)
    t = torch.tensor([digest, -digest], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if t[0].item() != -t[1].item():
        raise RuntimeError("DDP ranks built different tokenizers; the corpus differs between them")


def train_translation(cfg: RunConfig, *, resume: bool = False, quiet: bool = False) -> dict:
    """Run a translation ``cfg``; returns the summary (also written to the run folder)."""
    rank, world, dist_device = setup_distributed()
    main = rank == 0
    device = dist_device or pick_device(cfg.device)
    hw = hardware(device, world)
    run_dir, ckpt_path = run_folder(cfg, main, resume)
    seed_everything(cfg.seed)

    corpus = build_corpus(cfg.dataset, cfg.lang_pair, cfg.data_dir, max_chars=cfg.max_chars)
    if resume:
        _check_same_corpus(run_dir, corpus)
    train_pairs = _limit(corpus.train, cfg.limit_train)
    test_pairs = _limit(corpus.test, cfg.limit_test)
    valid_pairs = _limit(corpus.valid, cfg.limit_test)
    if resume and (run_dir / TOKENIZER_FILE).exists():
        tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    else:  # deterministic, so every DDP rank trains the same one
        texts = [t for pair in train_pairs for t in pair]
        tokenizer = train_tokenizer(texts, cfg.vocab_size)
    if world > 1:
        _check_same_tokenizer(tokenizer, device)
    vocab = tokenizer.get_vocab_size()
    train_data = encode_pairs(tokenizer, train_pairs, cfg.max_len, drop_long=True)
    valid_data = encode_pairs(tokenizer, valid_pairs, cfg.max_len, drop_long=False)
    test_data = encode_pairs(tokenizer, test_pairs, cfg.max_len, drop_long=False)
    corpus.info["used"] = {
        "train": len(train_data.src),
        "valid": len(valid_data.src),
        "test": len(test_data.src),
        "train_dropped_over_max_len": len(train_pairs) - len(train_data.src),
        "limit_train": cfg.limit_train,
        "limit_test": cfg.limit_test,
    }
    corpus.info["tokenizer"] = {"kind": "byte-level BPE (tokenizers)", "vocab_size": vocab}
    if len(train_data.src) < MIN_TRAIN_PAIRS:
        raise ConfigError(
            f"only {len(train_data.src)} training pairs fit max_len={cfg.max_len} tokens "
            f"(need >= {MIN_TRAIN_PAIRS}): raise max_len or limit_train"
        )

    torch.manual_seed(cfg.seed)  # the same initial weights for every method
    model = build_translation_model(cfg.model, vocab, cfg.max_len, **cfg.model_kwargs)
    example = _example(train_data)
    model = apply_method(model, cfg, example)
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, example)
    model.to(device)

    per_rank_batch = max(1, cfg.batch_size // world)
    n_rank = math.ceil(len(train_data.src) / world)
    steps_per_epoch = math.ceil(n_rank / per_rank_batch)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))

    start_epoch, elapsed, history = 1, 0.0, []
    if resume:
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, elapsed = state["epoch"] + 1, state["elapsed"]
        history = read_metrics(run_dir / "metrics.jsonl", state["epoch"])
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
        tokenizer.save(str(run_dir / TOKENIZER_FILE))
        write_json_atomic(run_dir / CORPUS_FILE, corpus.info)
        if not quiet:
            c = corpus.info["used"]
            print(
                f"[{cfg.name}] {cfg.lang_pair} from {cfg.dataset} ({c['train']} train / "
                f"{c['valid']} valid / {c['test']} test pairs, vocab {vocab}); "
                f"{cfg.model} {cfg.arm}; {params:,} params, {flops / 1e6:.1f} MFLOPs/pair; "
                f"{world} process(es) on {device}"
            )

    ddp = world > 1
    net = nn.parallel.DistributedDataParallel(model) if ddp else model
    diagnostics = None
    if cfg.diagnostics and main:
        from netadv.diagnostics import Diagnostics

        diagnostics = Diagnostics(model, run_dir / "diagnostics.jsonl", cfg.diagnostics_every)
    amp = cfg.amp and device.type in ("cuda", "cpu")
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    lengths = [len(s) + len(t) for s, t in zip(train_data.src, train_data.tgt)]
    summary = _summary(cfg, params, flops, history, status="running", hw=hw)
    if main:
        write_json_atomic(run_dir / "summary.json", summary)
    step = (start_epoch - 1) * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs + 1):
        if ddp:
            sampler = DistributedSampler(range(len(train_data.src)), world, rank, seed=cfg.seed)
            sampler.set_epoch(epoch)
            mine = list(sampler)
        else:
            mine = list(range(len(train_data.src)))
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        batches = length_batches(mine, lengths, per_rank_batch, g)
        net.train()
        sums = [0.0, 0.0, 0.0]  # loss * tokens, tokens, sentences
        t0 = time.perf_counter()
        bar = tqdm(
            batches,
            desc=f"[{cfg.name}] epoch {epoch}/{cfg.epochs}",
            leave=False,
            disable=quiet or not main,
            mininterval=1.0,
        )
        for batch in bar:
            src = pad_batch([train_data.src[i] for i in batch]).to(device, non_blocking=True)
            tgt = pad_batch([train_data.tgt[i] for i in batch]).to(device, non_blocking=True)
            if diagnostics is not None:
                diagnostics.before_step(step)
            with torch.autocast(device.type, dtype=amp_dtype) if amp else nullcontext():
                loss, tokens = _token_loss(net, src, tgt, cfg.label_smoothing)
                loss = loss + netadv.penalty(model)
            if not torch.isfinite(loss):
                summary = _summary(cfg, params, flops, history, status="diverged", hw=hw)
                stop_diverged(cfg.name, loss, epoch, step, run_dir, summary if main else None)
            optimizer_step(
                loss, model, optimizer, scaler, scheduler, cfg.grad_clip, diagnostics, step, epoch
            )
            step += 1
            sums[0] += loss.item() * tokens
            sums[1] += tokens
            sums[2] += len(batch)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        seconds = time.perf_counter() - t0
        elapsed += seconds
        loss_sum, tokens, sentences = _reduce(sums, device, world)
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": loss_sum / tokens,
            "train_ppl": math.exp(min(loss_sum / tokens, 50.0)),
            "train_examples": int(sentences),
            "train_tokens": int(tokens),
            "seconds": seconds,
            "elapsed": elapsed,
            "lr": optimizer.param_groups[0]["lr"],
        }
        hyps = None
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            t1 = time.perf_counter()
            row.update(evaluate(model, tokenizer, valid_data, test_data, cfg, device, rank, world))
            hyps = row.pop("_hypotheses")
            row["eval_seconds"] = time.perf_counter() - t1
        history.append(row)
        summary = _summary(cfg, params, flops, history, status="running", hw=hw)
        if main:
            if hyps is not None:  # the latest evaluated translations, one per test line
                tmp = run_dir / (HYPOTHESES_FILE + ".tmp")
                tmp.write_text("".join(h + "\n" for h in hyps))
                tmp.replace(run_dir / HYPOTHESES_FILE)
            record_epoch(run_dir, row, summary, model, optimizer, scheduler, epoch, elapsed, cfg)
            if not quiet:
                test = (
                    f"test BLEU {row['test_bleu']:.2f} chrF {row['test_chrf']:.1f} "
                    f"loss {row['test_loss']:.4f} ppl {row['test_ppl']:.2f} "
                    f"(eval {row['eval_seconds']:.1f} s)"
                    if "test_bleu" in row
                    else "(no eval this epoch)"
                )
                print(
                    f"[{cfg.name}] epoch {epoch}: train loss {row['train_loss']:.4f}; {test}; "
                    f"{seconds:.1f} s"
                )
    summary = _summary(cfg, params, flops, history, status="ok", hw=hw)
    if main:
        write_json_atomic(run_dir / "summary.json", summary)
    if ddp:
        dist.destroy_process_group()
    return summary


def _summary(
    cfg: RunConfig, params: int, flops: int, history: list[dict], status: str, hw: str
) -> dict:
    evals = [r for r in history if "test_bleu" in r]
    reached = next(
        (r for r in evals if cfg.target_bleu is not None and r["test_bleu"] >= cfg.target_bleu),
        None,
    )
    last = evals[-1] if evals else {}
    return {
        "name": cfg.name,
        "arm": cfg.arm,
        "method": cfg.method,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "lang_pair": cfg.lang_pair,
        "activation": cfg.activation,
        "seed": cfg.seed,
        "task": cfg.task,
        "decoding": cfg.decoding if cfg.decoding == "greedy" else f"beam{cfg.beam_size}",
        "params": params,
        "flops": flops,
        "epochs_completed": len(history),
        "final_bleu": last.get("test_bleu"),
        "best_bleu": max((r["test_bleu"] for r in evals), default=None),
        "final_chrf": last.get("test_chrf"),
        "final_test_loss": last.get("test_loss"),
        "final_test_ppl": last.get("test_ppl"),
        "seconds_per_epoch": (
            sum(r["seconds"] for r in history) / len(history) if history else None
        ),
        "time_to_target_s": reached["elapsed"] if reached else None,
        "epochs_to_target": reached["epoch"] if reached else None,
        "target_bleu": cfg.target_bleu,
        "status": status,
        "hardware": hw,
    }
