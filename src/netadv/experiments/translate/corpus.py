"""The parallel corpus: real human translations from the gettext catalogs installed on the
machine, or the user's own parallel files, cleaned and split by a hash of the source."""

from __future__ import annotations

import gettext
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netadv.errors import ConfigError

LOCALE_ROOT = Path("/usr/share/locale")
# split by a hash of the normalised source, in parts per thousand: stable across machines,
# and near-duplicate sources ("Open file" / "Open file:") land in the same split
VALID_PER_MILLE = 50
TEST_PER_MILLE = 50
MIN_TRAIN_PAIRS = 100
MIN_TEST_PAIRS = 10

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
        splits = _hash_split(_pooled(folder, src, tgt, max_chars, dropped, files))
        how = "all files pooled, deduplicated and split by the source hash"
    info = {
        "source": "parallel",
        "folder": str(folder),
        "files": files,
        "split_from": how,
        "dropped": dict(sorted(dropped.items())),
    }
    return Corpus(splits["train"], splits.get("valid", []), splits["test"], info)


def _pooled(
    folder: Path, src: str, tgt: str, max_chars: int, dropped: Counter, files: dict
) -> list[Pair]:
    """Every ``*.tsv`` and ``*.SRC``/``*.TGT`` pair of files in the folder (recorded in
    ``files["all"]``), cleaned, first occurrence of each source kept."""
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
    return unique


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
    corpus.info.update(_provenance(corpus, dataset, lang_pair, max_chars))
    return corpus


def _provenance(corpus: Corpus, dataset: str, lang_pair: str, max_chars: int) -> dict[str, Any]:
    """What ``corpus.json`` records besides what was read: the filters, the split rule, the
    counts and a fingerprint of the pairs (a resume checks it)."""
    return {
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
        "counts": corpus.counts(),
        "fingerprint": _fingerprint(corpus),
    }
