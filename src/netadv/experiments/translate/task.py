"""The translation task: a seq2seq Transformer trained on a parallel corpus, with token-level
loss, perplexity and sacreBLEU in place of Top-1/Top-5.

The run folder also holds ``corpus.json`` (what was read, dropped and used, and a
fingerprint a resume checks), ``tokenizer.json`` (reused on resume) and
``test_hypotheses.txt`` (the latest evaluated translations, one per test line).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from netadv.errors import ConfigError
from netadv.experiments.config import RunConfig
from netadv.experiments.distributed import (
    Placement,
    epoch_generator,
    gather,
    max_over_ranks,
    rank_sampler,
    sum_over_ranks,
    unwrap,
)
from netadv.experiments.run_folder import RunFolder
from netadv.experiments.task import Counts, Metric, Task, TaskMetrics
from netadv.experiments.translate.corpus import MIN_TRAIN_PAIRS, Corpus, Pair, build_corpus
from netadv.experiments.translate.decoding import bleu, translate_ids
from netadv.experiments.translate.model import build_translation_model, token_loss
from netadv.experiments.translate.tokenizer import (
    Encoded,
    decode_text,
    encode_pairs,
    length_batches,
    load_tokenizer,
    pad_batch,
    train_tokenizer,
)

CORPUS_FILE = "corpus.json"
TOKENIZER_FILE = "tokenizer.json"
HYPOTHESES_FILE = "test_hypotheses.txt"

METRICS = TaskMetrics(
    primary=Metric("bleu", "BLEU", "summary", "final_bleu"),
    secondary=Metric("ppl", "test ppl", "metrics", "test_ppl"),
    test_key="test_bleu",
    target_key="target_bleu",
    target_name="BLEU",
    unit="",
    measured="test BLEU after the last epoch (higher is better) and test perplexity at the "
    "last evaluated epoch (lower is better)",
    axis_label="BLEU",
    final={
        "final_bleu": ("test_bleu", "last"),
        "best_bleu": ("test_bleu", "best"),
        "final_chrf": ("test_chrf", "last"),
        "final_test_loss": ("test_loss", "last"),
        "final_test_ppl": ("test_ppl", "last"),
    },
    compared_settings=("lang_pair", "max_chars", "max_len", "vocab_size"),  # the data
)
SETTINGS = ("name", "arm", "method", "model", "dataset", "lang_pair", "activation", "seed", "task")


def settings(cfg: RunConfig) -> dict[str, Any]:
    out = {key: getattr(cfg, key) for key in SETTINGS}
    out["decoding"] = cfg.decoding if cfg.decoding == "greedy" else f"beam{cfg.beam_size}"
    return out


# --------------------------------------------------------------------------------------------
# data


@dataclass
class Sentences:
    """The corpus, its tokenizer, and the token ids of the splits used."""

    corpus: Corpus
    tokenizer: Any
    train: Encoded
    valid: Encoded
    test: Encoded
    lengths: list[int]  # source + target tokens of each training pair, for batching


def load_sentences(cfg: RunConfig, run: RunFolder, place: Placement) -> Sentences:
    """The corpus (on resume: the one the run started with), the tokenizer (on resume: the
    run's), and the splits encoded; ``corpus.info`` records what is used."""
    corpus = build_corpus(cfg.dataset, cfg.lang_pair, cfg.data_dir, max_chars=cfg.max_chars)
    if run.resume:
        _check_same_corpus(run, corpus)
    train_pairs = _limit(corpus.train, cfg.limit_train)
    test_pairs = _limit(corpus.test, cfg.limit_test)
    valid_pairs = _limit(corpus.valid, cfg.limit_test)
    if run.resume and run.file(TOKENIZER_FILE).exists():
        tokenizer = load_tokenizer(run.file(TOKENIZER_FILE))
    else:  # deterministic, so every DDP rank trains the same one
        tokenizer = train_tokenizer([t for pair in train_pairs for t in pair], cfg.vocab_size)
    if place.world > 1:
        _check_same_tokenizer(tokenizer, place)
    train = encode_pairs(tokenizer, train_pairs, cfg.max_len, drop_long=True)
    valid = encode_pairs(tokenizer, valid_pairs, cfg.max_len, drop_long=False)
    test = encode_pairs(tokenizer, test_pairs, cfg.max_len, drop_long=False)
    corpus.info["used"] = {
        "train": len(train.src),
        "valid": len(valid.src),
        "test": len(test.src),
        "train_dropped_over_max_len": len(train_pairs) - len(train.src),
        "limit_train": cfg.limit_train,
        "limit_test": cfg.limit_test,
    }
    vocab = tokenizer.get_vocab_size()
    corpus.info["tokenizer"] = {"kind": "byte-level BPE (tokenizers)", "vocab_size": vocab}
    if len(train.src) < MIN_TRAIN_PAIRS:
        raise ConfigError(
            f"only {len(train.src)} training pairs fit max_len={cfg.max_len} tokens "
            f"(need >= {MIN_TRAIN_PAIRS}): raise max_len or limit_train"
        )
    lengths = [len(s) + len(t) for s, t in zip(train.src, train.tgt)]
    return Sentences(corpus, tokenizer, train, valid, test, lengths)


def _limit(pairs: list[Pair], limit: int | None) -> list[Pair]:
    return pairs if limit is None else pairs[:limit]


def _check_same_corpus(run: RunFolder, corpus: Corpus) -> None:
    """On resume: the corpus rebuilt here must be the one the run started with."""
    path = run.file(CORPUS_FILE)
    if not path.exists():
        return
    before = json.loads(path.read_text()).get("fingerprint")
    if before and before != corpus.info["fingerprint"]:
        raise ConfigError(
            f"--resume: the corpus built on this machine (fingerprint "
            f"{corpus.info['fingerprint']}) differs from the one {run.path} started with "
            f"({before}); the installed catalogs or data files changed. Start a new run"
        )


def _check_same_tokenizer(tokenizer, place: Placement) -> None:
    """Every DDP rank trains its own tokenizer (deterministic); make sure they agree."""
    digest = int(hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:12], 16)
    high, low = max_over_ranks([digest, -digest], place)
    if high != -low:
        raise RuntimeError("DDP ranks built different tokenizers; the corpus differs between them")


def save_files(data: Sentences, run: RunFolder) -> None:
    data.tokenizer.save(str(run.file(TOKENIZER_FILE)))
    run.write_json(CORPUS_FILE, data.corpus.info)


def describe(cfg: RunConfig, data: Sentences) -> str:
    c = data.corpus.info["used"]
    return (
        f"{cfg.lang_pair} from {cfg.dataset} ({c['train']} train / {c['valid']} valid / "
        f"{c['test']} test pairs, vocab {data.tokenizer.get_vocab_size()})"
    )


# --------------------------------------------------------------------------------------------
# model and training


def seq2seq_model(cfg: RunConfig, data: Sentences) -> tuple[nn.Module, tuple[Tensor, Tensor]]:
    """The config's model for the tokenizer's vocabulary; as example inputs, two copies of the
    training pair nearest the median lengths (what the rewriter traces and FLOPs count)."""
    vocab = data.tokenizer.get_vocab_size()
    model = build_translation_model(cfg.model, vocab, cfg.max_len, **cfg.model_kwargs)
    train, n = data.train, len(data.train.src)
    ls = sorted(len(s) for s in train.src)[n // 2]
    lt = sorted(len(t) for t in train.tgt)[n // 2]
    i = min(range(n), key=lambda k: abs(len(train.src[k]) - ls) + abs(len(train.tgt[k]) - lt))
    return model, (torch.tensor([train.src[i]] * 2), torch.tensor([train.tgt[i][:-1]] * 2))


def batches(data: Sentences, cfg: RunConfig, place: Placement, epoch: int, size: int):
    """This rank's batches of (source ids, target ids) lists, of similar lengths."""
    n = len(data.train.src)
    mine = list(rank_sampler(range(n), place, cfg.seed, epoch)) if place.world > 1 else range(n)
    order = length_batches(list(mine), data.lengths, size, epoch_generator(cfg.seed, epoch))
    return [([data.train.src[i] for i in b], [data.train.tgt[i] for i in b]) for b in order]


def sentence_loss(
    net: nn.Module, batch: Any, cfg: RunConfig, device: torch.device
) -> tuple[Tensor, int, Counts]:
    """Mean cross-entropy per target token of a batch, over its tokens."""
    src, tgt = (pad_batch(ids).to(device, non_blocking=True) for ids in batch)
    loss, tokens = token_loss(net, src, tgt, cfg.label_smoothing)
    return loss, tokens, {"tokens": tokens, "sentences": len(batch[0])}


def train_row(sums: Counts) -> dict[str, Any]:
    loss = sums["loss"] / sums["tokens"]
    return {
        "train_loss": loss,
        "train_ppl": math.exp(min(loss, 50.0)),
        "train_examples": int(sums["sentences"]),
        "train_tokens": int(sums["tokens"]),
    }


# --------------------------------------------------------------------------------------------
# evaluation


def evaluate(
    net: nn.Module, data: Sentences, cfg: RunConfig, place: Placement
) -> tuple[dict[str, Any], dict[str, str]]:
    """Valid and test loss/perplexity, test BLEU and chrF, and the test translations."""
    start = time.perf_counter()
    model = unwrap(net)  # decoding calls the model's own methods, not DDP's forward
    row: dict[str, Any] = {}
    if data.valid.src:
        row["valid_loss"], row["valid_ppl"] = evaluate_loss(model, data.valid, place)
    row["test_loss"], row["test_ppl"] = evaluate_loss(model, data.test, place)
    scores, hyps = evaluate_bleu(model, data.tokenizer, data.test, cfg, place)
    row["test_bleu"], row["test_chrf"] = scores["bleu"], scores["chrf"]
    row["eval_seconds"] = time.perf_counter() - start
    return row, {HYPOTHESES_FILE: "".join(h + "\n" for h in hyps)}


def evaluate_loss(
    model: nn.Module, data: Encoded, place: Placement, batch_size: int = 128
) -> tuple[float, float]:
    """Teacher-forced (loss per token, perplexity) over a split, shared out over the ranks."""
    model.eval()
    total = tokens = 0.0
    mine = list(range(place.rank, len(data.src), place.world))
    mine.sort(key=lambda i: len(data.src[i]))
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            chunk = mine[start : start + batch_size]
            src = pad_batch([data.src[i] for i in chunk]).to(place.device)
            tgt = pad_batch([data.tgt[i] for i in chunk]).to(place.device)
            loss, n = token_loss(model, src, tgt)
            total += loss.item() * n
            tokens += n
    total, tokens = sum_over_ranks([total, tokens], place)
    model.train()
    loss = total / max(tokens, 1.0)
    return loss, math.exp(min(loss, 50.0))


def evaluate_bleu(
    model: nn.Module, tokenizer, data: Encoded, cfg: RunConfig, place: Placement
) -> tuple[dict[str, float], list[str]]:
    """Decode the split (each rank a share), gather, score: ({bleu, chrf}, hypotheses)."""
    mine = list(range(place.rank, len(data.src), place.world))
    ids = translate_ids(
        model,
        [data.src[i] for i in mine],
        max_len=cfg.max_len,
        decoding=cfg.decoding,
        beam_size=cfg.beam_size,
        device=place.device,
    )
    texts = gather([(i, decode_text(tokenizer, h)) for i, h in zip(mine, ids)], place)
    hyps = [t for _, t in sorted(texts)]
    return bleu(hyps, data.refs), hyps


def epoch_line(row: dict[str, Any]) -> str:
    test = (
        f"test BLEU {row['test_bleu']:.2f} chrF {row['test_chrf']:.1f} "
        f"loss {row['test_loss']:.4f} ppl {row['test_ppl']:.2f} "
        f"(eval {row['eval_seconds']:.1f} s)"
        if "test_bleu" in row
        else "(no eval this epoch)"
    )
    return f"train loss {row['train_loss']:.4f}; {test}"


TRANSLATE = Task(
    name="translate",
    metrics=METRICS,
    settings=settings,
    load_data=load_sentences,
    build_model=seq2seq_model,
    train_size=lambda data: len(data.train.src),
    batches=batches,
    counts=("tokens", "sentences"),
    loss=sentence_loss,
    train_row=train_row,
    evaluate=evaluate,
    save_files=save_files,
    describe=describe,
    example_name="pair",
    epoch_line=epoch_line,
)
