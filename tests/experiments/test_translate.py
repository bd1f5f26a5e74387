"""The translation task at tiny sizes: corpus, tokenizer, model, decoding, training run."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch

import netadv
from netadv.errors import ConfigError
from netadv.experiments import config as config_mod
from netadv.experiments import report
from netadv.experiments import translate as tr
from netadv.experiments.loop import TrainingDiverged, train
from netadv.experiments.run_folder import CHECKPOINT
from netadv.experiments.translate.task import TRANSLATE as translate_task

pytestmark = pytest.mark.usefixtures("one_thread")

# -- fake gettext catalogs -----------------------------------------------------------------


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU .mo file (the format of CPython's Tools/i18n/msgfmt.py): little-endian header,
    tables of (length, offset) for the sorted msgids and their msgstrs, NUL-ended strings."""
    messages = {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}
    keys = sorted(messages)
    ids = b"".join(k.encode() + b"\0" for k in keys)
    strs = b"".join(messages[k].encode() + b"\0" for k in keys)
    n = len(keys)
    start = 7 * 4 + 16 * n  # header, then the two tables, then the strings
    offsets, pos = [], 0
    for k in keys:
        offsets.append((len(k.encode()), start + pos))
        pos += len(k.encode()) + 1
    t_offsets, pos = [], 0
    for k in keys:
        t_offsets.append((len(messages[k].encode()), start + len(ids) + pos))
        pos += len(messages[k].encode()) + 1
    header = struct.pack("<7I", 0x950412DE, 0, n, 7 * 4, 7 * 4 + 8 * n, 0, 0)
    tables = b"".join(struct.pack("<2I", *o) for o in offsets + t_offsets)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + tables + ids + strs)


VERBS = {"open": "ouvrir", "close": "fermer", "delete": "supprimer", "copy": "copier"}
ADJS = {"red": "rouge", "old": "ancien", "new": "nouveau", "big": "grand", "small": "petit"}
NOUNS = {
    "file": "fichier",
    "folder": "dossier",
    "window": "fenêtre",
    "key": "clé",
    "user": "utilisateur",
    "server": "serveur",
    "branch": "branche",
    "message": "message",
}


DETS = {"the": "le", "a": "un", "my": "mon"}


def sentences() -> dict[str, str]:
    """480 clean English-French pairs with a learnable pattern."""
    out = {}
    for v, fv in VERBS.items():
        for d, fd in DETS.items():
            for a, fa in ADJS.items():
                for n, fn in NOUNS.items():
                    out[f"{v} {d} {a} {n}"] = f"{fv} {fd} {fn} {fa}"
    return out


NOISY = {
    "Saved %s files": "%s fichiers enregistrés",  # placeholder
    "Open {name}": "Ouvrir {name}",  # placeholder
    "<b>Bold</b> text": "texte <b>gras</b>",  # markup
    "_Quit": "_Quitter",  # accelerator
    "two\nlines": "deux\nlignes",  # newline
    "Git": "Git",  # untranslated
    "x" * 250: "y" * 250,  # too long
    "menu\x04Print": "Imprimer",  # a context: kept as "Print"
    "one file\x00many files": "un fichier\x00des fichiers",  # plural: singular kept
}


@pytest.fixture
def locale_root(tmp_path) -> Path:
    root = tmp_path / "locale"
    pairs = sentences()
    items = sorted(pairs.items())
    write_mo(root / "fr" / "LC_MESSAGES" / "a.mo", dict(items[:300]) | NOISY)
    # b.mo repeats two sources of a.mo with other translations: the first catalog wins
    write_mo(
        root / "fr" / "LC_MESSAGES" / "b.mo",
        dict(items[300:]) | {items[0][0]: "autre", items[1][0]: "autre"},
    )
    (root / "fr" / "LC_MESSAGES" / "broken.mo").write_bytes(b"not a catalog")
    return root


# -- corpus --------------------------------------------------------------------------------


def test_gettext_corpus_filters_dedupes_and_records(locale_root):
    corpus = tr.build_corpus("gettext", "en-fr", locale_root, max_chars=200)
    every = corpus.train + corpus.valid + corpus.test
    got = dict(every)
    assert len(every) == len(got) == 480 + 2  # the clean sentences, plus Print and one file
    assert got["Print"] == "Imprimer" and got["one file"] == "un fichier"
    assert got["open the red file"] == "ouvrir le fichier rouge"
    assert got[sorted(sentences())[0]] != "autre"  # a.mo, first in name order, won
    info = corpus.info
    assert info["dropped"] == {
        "duplicate": 2,
        "markup": 2,
        "newline": 1,
        "placeholder": 2,
        "too_long": 1,
        "untranslated": 1,
    }
    assert info["catalogs"]["a.mo"] == {"entries": 309, "kept": 302}
    assert info["catalogs"]["b.mo"] == {"entries": 182, "kept": 180}
    assert "broken.mo" in info["skipped_catalogs"]
    assert info["counts"] == corpus.counts() and sum(corpus.counts().values()) == 482
    # the same corpus on every build
    assert (
        tr.build_corpus("gettext", "en-fr", locale_root).info["fingerprint"]
        == (info["fingerprint"])
    )


def test_split_is_a_stable_hash_of_the_source():
    # fixed by SHA-256, so the same on every machine and Python version
    assert [tr.split_key(s) for s in ("Open file", "Quit", "open the red file")] == [
        tr.split_key("open FILE:"),
        tr.split_key("quit!"),
        tr.split_key("Open the red file."),
    ]
    assert (
        tr.split_key("Open file")
        == int(__import__("hashlib").sha256(b"open file").hexdigest()[:8], 16) % 1000
    )
    keys = [tr.split_key(s) for s in sentences()]
    test = sum(k < tr.TEST_PER_MILLE for k in keys) / len(keys)
    assert 0.0 < test < 0.15  # about 5%


def test_parallel_files(tmp_path):
    pairs = sorted(sentences().items())
    split = tmp_path / "split"
    split.mkdir()
    (split / "train.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs[:440]))
    (split / "dev.en").write_text("".join(f"{a}\n" for a, _ in pairs[440:460]))
    (split / "dev.fr").write_text("".join(f"{b}\n" for _, b in pairs[440:460]))
    (split / "test.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs[460:]) + "\tempty\n")
    corpus = tr.build_corpus("parallel", "en-fr", split)
    assert corpus.counts() == {"train": 440, "valid": 20, "test": 20}
    assert corpus.info["files"] == {
        "train": ["train.tsv"],
        "valid": ["dev.en", "dev.fr"],
        "test": ["test.tsv"],
    }
    assert corpus.info["dropped"] == {"empty": 1}

    pooled = tmp_path / "pooled"
    pooled.mkdir()
    (pooled / "corpus.en").write_text("".join(f"{a}\n" for a, _ in pairs))
    (pooled / "corpus.fr").write_text("".join(f"{b}\n" for _, b in pairs))
    corpus = tr.build_corpus("parallel", "en-fr", pooled)
    assert sum(corpus.counts().values()) == 480 and corpus.counts()["test"] > 0
    assert {p[0] for p in corpus.test} == {s for s in sentences() if tr.split_of(s) == "test"}

    (pooled / "corpus.fr").write_text("one line\n")
    with pytest.raises(ConfigError, match="not line-aligned"):
        tr.build_corpus("parallel", "en-fr", pooled)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.tsv").write_text("no tab here\n")
    with pytest.raises(ConfigError, match="line 1: expected SOURCE<TAB>TARGET"):
        tr.build_corpus("parallel", "en-fr", bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no parallel files"):
        tr.build_corpus("parallel", "en-fr", tmp_path / "empty")


def test_too_small_corpus_is_a_clear_error(tmp_path):
    write_mo(tmp_path / "fr" / "LC_MESSAGES" / "x.mo", dict(list(sentences().items())[:30]))
    with pytest.raises(ConfigError, match="too small to train on") as e:
        tr.build_corpus("gettext", "en-fr", tmp_path)
    assert "\n" not in str(e.value) and "dataset=parallel" in str(e.value)
    with pytest.raises(ConfigError, match="no gettext catalogs"):
        tr.build_corpus("gettext", "en-de", tmp_path)


# -- tokenizer, model, decoding ------------------------------------------------------------


def test_tokenizer_round_trip(tmp_path):
    texts = [t for pair in sentences().items() for t in pair]
    tok = tr.train_tokenizer(texts, 320)
    assert tok.get_vocab_size() <= 320
    assert [tok.token_to_id(s) for s in tr.SPECIALS] == [tr.PAD, tr.BOS, tr.EOS, tr.UNK]
    tok.save(str(tmp_path / "tok.json"))
    again = tr.load_tokenizer(tmp_path / "tok.json")
    for text in ("ouvrir le fichier rouge", "Unseen: naïve café, 東京 ✓ « ok »"):
        ids = again.encode(text).ids
        assert tr.UNK not in ids and tr.decode_text(again, ids) == text
    assert len(tok.encode("open the red file").ids) < len("open the red file")  # merges learnt


def small_model(**kw) -> tr.Seq2SeqTransformer:
    options = dict(d_model=32, heads=2, encoder_layers=2, decoder_layers=2, ffn_dim=64)
    return tr.Seq2SeqTransformer(50, **(options | kw))


def test_model_forward_backward_and_sites():
    model = small_model()
    src = torch.randint(4, 50, (3, 7))
    src[0, 4:] = tr.PAD
    tgt = torch.randint(4, 50, (3, 5))
    logits = model(src, tgt)
    assert logits.shape == (3, 5, 50)
    loss, n = tr.token_loss(model, src, torch.cat([torch.ones(3, 1, dtype=int), tgt], 1))
    loss.backward()
    assert n == 15 and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # padding of the source does not leak into the other positions' results
    model.eval()
    shorter = model(src[:1, :4], tgt[:1])
    assert torch.allclose(shorter, model(src[:1], tgt[:1]), atol=1e-5)
    # the feed-forward activations are the sites the rewriter reaches, fc1 their producer
    sites = [(s.path, s.producer) for s in netadv.plan(model, "hdfgd", example_inputs=(src, tgt))]
    assert [p for p, _ in sites] == [
        f"{side}.{i}.ffn.act" for side in ("encoder", "decoder") for i in range(2)
    ]
    assert all(prod.endswith("ffn.fc1") for _, prod in sites)


def test_incremental_decoding_equals_full_decoding():
    model = small_model().eval()
    src = torch.randint(4, 50, (3, 6))
    src[1, 3:] = tr.PAD
    tgt = torch.cat([torch.ones(3, 1, dtype=int), torch.randint(4, 50, (3, 5))], 1)
    full = model(src, tgt)
    memory, pad = model.encode(src)
    state = model.start_state(memory, pad)
    steps = torch.stack([model.step(tgt[:, i], state) for i in range(tgt.shape[1])], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


class ToyModel(torch.nn.Module):
    """Next-token probabilities set by hand: after BOS, A 0.6 / B 0.4; after A, EOS 0.35 and
    A, B 0.325 each; after B, EOS 0.95. Greedy picks A then EOS (p 0.21); the best sentence
    is B EOS (p 0.38)."""

    A, B = 4, 5

    def encode(self, src):
        return torch.zeros(src.shape[0], 1, 1), src == tr.PAD

    def start_state(self, memory, pad):
        return {"n": memory.shape[0]}

    @staticmethod
    def reorder_state(state, index):
        pass

    def step(self, token, state):
        p = torch.full((token.shape[0], 6), 1e-9)
        for i, t in enumerate(token.tolist()):
            if t == tr.BOS:
                p[i, self.A], p[i, self.B] = 0.6, 0.4
            elif t == self.A:
                p[i, tr.EOS], p[i, self.A], p[i, self.B] = 0.35, 0.325, 0.325
            else:
                p[i, tr.EOS] = 0.95
        return p.log()


def test_greedy_and_beam_search():
    src = torch.full((2, 3), 7)
    assert tr.greedy_decode(ToyModel(), src, 10) == [[ToyModel.A], [ToyModel.A]]
    assert tr.beam_decode(ToyModel(), src, 10, 2) == [[ToyModel.B], [ToyModel.B]]
    # on a real model, a beam of one is greedy search
    model = small_model().eval()
    src = torch.randint(4, 50, (4, 6))
    greedy = tr.greedy_decode(model, src, 12)
    assert tr.beam_decode(model, src, 12, 1) == greedy
    beams = tr.beam_decode(model, src, 12, 3)
    assert all(len(h) <= 11 and tr.EOS not in h and tr.PAD not in h for h in beams)
    batched = tr.translate_ids(model, [s.tolist() for s in src], max_len=12, batch_size=3)
    assert batched == greedy


def test_translate_sentences():
    tok = tr.train_tokenizer([t for pair in sentences().items() for t in pair], 320)
    model = tr.Seq2SeqTransformer(
        tok.get_vocab_size(), d_model=32, heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=64
    )
    out = tr.translate(model, tok, ["open the red file", "close my window"], max_len=8)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    assert tr.translate(model, tok, ["open"], max_len=8, decoding="beam", beam_size=2)
    ref = ["ouvrir le fichier rouge sur le serveur"]
    assert tr.bleu(ref, ref)["bleu"] == pytest.approx(100.0)
    assert tr.bleu(["fermer"], ref)["bleu"] < 1.0


# -- training through the harness ----------------------------------------------------------

TINY = [
    "task=translate",
    "dataset=gettext",
    "lang_pair=en-fr",
    "model=transformer",
    "model_kwargs={d_model: 32, heads: 2, encoder_layers: 1, decoder_layers: 1, ffn_dim: 64,"
    " dropout: 0.0}",
    "vocab_size=320",
    "max_len=16",
    "epochs=2",
    "batch_size=32",
    "lr=0.003",
]


def tiny(tmp_path, root, *extra) -> config_mod.RunConfig:
    return config_mod.load(
        None, [*TINY, f"data_dir={root}", f"output_dir={tmp_path / 'runs'}", *extra]
    )


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_translation_run_folder_and_report(tmp_path, locale_root):
    cfg = tiny(tmp_path, locale_root, "name=base", "diagnostics=true", "diagnostics_every=2")
    summary = train(cfg, quiet=True)
    run = tmp_path / "runs" / "base"
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", CHECKPOINT, "corpus.json"} <= names
    assert {"tokenizer.json", "test_hypotheses.txt", "diagnostics.jsonl"} <= names
    rows = _rows(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "test_loss", "test_ppl", "test_bleu", "seconds", "elapsed", "lr"} <= set(
        rows[-1]
    )
    assert rows[-1]["test_ppl"] == pytest.approx(math.exp(rows[-1]["test_loss"]))
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["task"] == "translate" and summary["status"] == "ok"
    assert summary["final_bleu"] == rows[-1]["test_bleu"] >= 0
    assert summary["params"] > 0 and summary["flops"] > 0
    corpus = json.loads((run / "corpus.json").read_text())
    assert corpus["catalogs"]["a.mo"]["kept"] == 302 and corpus["used"]["train"] > 100
    hyps = (run / "test_hypotheses.txt").read_text().splitlines()
    assert len(hyps) == corpus["used"]["test"]
    diag = _rows(run / "diagnostics.jsonl")[0]
    assert [s["site"] for s in diag["sites"]] == ["encoder.0.ffn.act", "decoder.0.ffn.act"]

    # an SA arm on the same data, then the comparison
    sa = train(tiny(tmp_path, locale_root, "name=sa", "method=sa", "epochs=1"), quiet=True)
    assert sa["arm"] == "sa" and sa["params"] > summary["params"]
    runs = [report.load_run(run), report.load_run(tmp_path / "runs" / "sa")]
    table = report.report_table(runs)
    assert [r["arm"] for r in table] == ["baseline", "sa"]
    assert table[0]["bleu_mean"] == pytest.approx(summary["final_bleu"])
    assert table[1]["ppl_mean"] is not None
    path = report.compare([tmp_path / "runs"])
    assert "BLEU" in path.read_text()


def test_translation_resume_matches_uninterrupted(
    tmp_path, locale_root, monkeypatch, reproducible_rows
):
    """With dropout (torch's global generator): the resumed run equals the uninterrupted one
    bit for bit, the random state being in the checkpoint."""
    dropout = "model_kwargs.dropout=0.1"
    train(tiny(tmp_path, locale_root, "name=full", dropout), quiet=True)
    evaluate, calls = translate_task.evaluate, []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(translate_task, "evaluate", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, locale_root, "name=cut", dropout), quiet=True)
    monkeypatch.setattr(translate_task, "evaluate", evaluate)
    run = tmp_path / "runs" / "cut"
    assert torch.load(run / CHECKPOINT, weights_only=True)["epoch"] == 1
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny(tmp_path, locale_root, "name=cut", dropout), quiet=True)
    train(tiny(tmp_path, locale_root, "name=cut", dropout), resume=True, quiet=True)
    rows = [
        reproducible_rows(folder / "metrics.jsonl") for folder in (run, tmp_path / "runs" / "full")
    ]
    assert [r["epoch"] for r in rows[0]] == [1, 2] and rows[0] == rows[1]
    assert (run / "test_hypotheses.txt").read_text() == (
        tmp_path / "runs" / "full" / "test_hypotheses.txt"
    ).read_text()

    # a corpus that changed under the run is refused
    write_mo(locale_root / "fr" / "LC_MESSAGES" / "c.mo", {"extra entry": "entrée en plus"})
    with pytest.raises(ConfigError, match="corpus built on this machine"):
        train(tiny(tmp_path, locale_root, "name=cut", "epochs=3", dropout), resume=True, quiet=True)


def test_translation_nan_loss_stops(tmp_path, locale_root):
    cfg = tiny(tmp_path, locale_root, "name=nan", "lr=1e30", "optimizer=sgd", "epochs=1")
    with pytest.raises(TrainingDiverged, match="became nan .*; stopped, no checkpoint was written"):
        train(cfg, quiet=True)
    summary = json.loads((tmp_path / "runs" / "nan" / "summary.json").read_text())
    assert summary["status"] == "diverged"


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset=cifar10", "dataset must be one of gettext, parallel for task translate"),
        ("model=vit", "model must be one of transformer"),
        ("lang_pair=english-french", "lang_pair must be SOURCE-TARGET"),
        ("lang_pair=fr-en", "gettext catalogs translate from English"),
        ("decoding=sample", "decoding must be one of greedy, beam"),
        ("beam_size=0", "beam_size must be >= 1"),
        ("target_bleu=0", "target_bleu is a BLEU score"),
    ],
)
def test_translation_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        config_mod.load(None, [*TINY, override])
    with pytest.raises(ConfigError, match="dataset=parallel reads your files"):
        config_mod.load(None, [*TINY, "dataset=parallel"])


def test_translation_torchrun_two_processes_gloo(tmp_path, locale_root, torchrun):
    """DDP on 2 CPU processes: losses all-reduced, translations gathered, rank 0 writes."""
    overrides = [f"data_dir={locale_root}", f"output_dir={tmp_path / 'runs'}", "name=ddp"]
    proc = torchrun([*overrides, "epochs=1"], base=TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "runs" / "ddp"
    rows = _rows(run / "metrics.jsonl")
    corpus = json.loads((run / "corpus.json").read_text())
    assert [r["epoch"] for r in rows] == [1]  # written once, by rank 0
    # both ranks' halves summed (the sampler pads an odd count by one)
    assert rows[0]["train_examples"] in (corpus["used"]["train"], corpus["used"]["train"] + 1)
    hyps = (run / "test_hypotheses.txt").read_text().splitlines()
    assert len(hyps) == corpus["used"]["test"]  # gathered from both ranks, in order
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"
