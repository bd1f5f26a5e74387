"""The translation task: a small encoder-decoder Transformer, trained and scored with BLEU.

By concern: :mod:`.corpus` (the parallel sentences), :mod:`.tokenizer` (subword ids and
batches), :mod:`.model` (the seq2seq Transformer), :mod:`.decoding` (greedy and beam search,
BLEU) and :mod:`.task` (what the training loop needs to train and score it).
"""

from netadv.experiments.translate.corpus import (
    LOCALE_ROOT,
    MIN_TEST_PAIRS,
    MIN_TRAIN_PAIRS,
    TEST_PER_MILLE,
    VALID_PER_MILLE,
    Corpus,
    Pair,
    build_corpus,
    drop_reason,
    gettext_corpus,
    parallel_corpus,
    split_key,
    split_of,
)
from netadv.experiments.translate.decoding import (
    beam_decode,
    bleu,
    greedy_decode,
    max_target_len,
    translate,
    translate_ids,
)
from netadv.experiments.translate.model import (
    Seq2SeqTransformer,
    build_translation_model,
    token_loss,
)
from netadv.experiments.translate.tokenizer import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    UNK,
    Encoded,
    decode_text,
    encode_pairs,
    length_batches,
    load_tokenizer,
    pad_batch,
    train_tokenizer,
)

__all__ = [
    "BOS",
    "EOS",
    "LOCALE_ROOT",
    "MIN_TEST_PAIRS",
    "MIN_TRAIN_PAIRS",
    "PAD",
    "SPECIALS",
    "TEST_PER_MILLE",
    "UNK",
    "VALID_PER_MILLE",
    "Corpus",
    "Encoded",
    "Pair",
    "Seq2SeqTransformer",
    "beam_decode",
    "bleu",
    "build_corpus",
    "build_translation_model",
    "decode_text",
    "drop_reason",
    "encode_pairs",
    "gettext_corpus",
    "greedy_decode",
    "length_batches",
    "load_tokenizer",
    "max_target_len",
    "pad_batch",
    "parallel_corpus",
    "split_key",
    "split_of",
    "token_loss",
    "train_tokenizer",
    "translate",
    "translate_ids",
]
