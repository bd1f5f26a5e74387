"""The translation training loop, which follows :func:`netadv.experiments.train.train` step
for step (same run folder, checkpoints, resume, DDP, diagnostics) with token-level loss,
perplexity and sacreBLEU in place of Top-1/Top-5."""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

import netadv
from netadv.errors import ConfigError
from netadv.experiments.config import RunConfig
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
            loss, n = token_loss(model, src, tgt)
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
                loss, tokens = token_loss(net, src, tgt, cfg.label_smoothing)
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
