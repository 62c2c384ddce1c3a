"""What a configuration may name, and the defaults that depend on its other fields.

`config.Seq2SeqConfig` checks its fields against these choices and fills the fields left as
None from these defaults; the command line (`cli_flags`) offers the same choices and prints the
same defaults. Each default says why it is what it is, with the measurement in docs/.
"""

from __future__ import annotations

# The choices a config (and so the command line) can name; the CLI imports these lists.
ARCHITECTURES = ("rnn", "transformer")  # see `Seq2SeqConfig.architecture`
CELLS = ("lstm", "gru")  # the recurrent cell (docs/variants.md)
ATTENTIONS = ("none", "luong", "bahdanau")
# See `Seq2SeqConfig.precision`.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
DECODE_PRECISIONS = ("auto", "float32", "bfloat16")  # see `Seq2SeqConfig.decode_precision`
STRATEGIES = ("default", "mirrored", "multiworker")  # tf.distribute (seq2seq_keras.distribute)
LEARNING_RATE_SCHEDULES = ("constant", "cosine")  # see `Seq2SeqConfig.learning_rate_schedule`
TOKENIZERS = ("word", "wordpiece")  # how text becomes tokens (seq2seq_keras.tokenizers)
BUCKETINGS = ("longer", "both")  # how batches group pairs by length (seq2seq_keras.pipeline)
# Each field of a config that names one of the choices above, with its choices.
CHOICES = {
    "architecture": ARCHITECTURES,
    "cell": CELLS,
    "attention": ATTENTIONS,
    "precision": PRECISIONS,
    "decode_precision": DECODE_PRECISIONS,
    "learning_rate_schedule": LEARNING_RATE_SCHEDULES,
    "tokenizer": TOKENIZERS,
    "bucket_by": BUCKETINGS,
}
# (source, target) vocabulary sizes when a config names none, per tokenizer. WordPiece spells
# rare words from pieces, so 8,000 pieces a side lose nothing and keep the output projection,
# the largest matmul of every training and decoding step, small; words need more entries,
# because every word outside the vocabulary is lost as [UNK] (README: vocabulary sizes).
DEFAULT_VOCAB_SIZES = {"wordpiece": (8000, 8000), "word": (10000, 12000)}
# What a config.json that lacks a field meant when the field's default has changed since: a
# model directory written before `tokenizer` existed holds a word model; one written before
# the factorized output layer, the learning-rate schedule and label smoothing has none; one
# written before `decay_share` decayed over the whole run, and one written before
# `decay_on_plateau` began its decay at the fixed share only; one written before `bucket_by`
# grouped its batches by the longer side.
LEGACY_DEFAULTS = {
    "tokenizer": "word",
    "output_projection_dim": 0,
    "learning_rate_schedule": "constant",
    "label_smoothing": 0.0,
    "decay_share": 1.0,
    "decay_on_plateau": False,
    "transformer_tie_embeddings": False,
    "bucket_by": "longer",
}
# The learning rate and warmup each architecture trains best with in the 30-minute budget, for
# a config that names none: the LSTM takes Adam's 2e-3 after a short warmup; the Transformer
# reached a lower validation loss after one epoch with 1e-3 and 800 warmup steps than with
# 2e-3 and 200 or with 5e-4 and 800 (docs/transformer.md).
DEFAULT_LEARNING_RATES = {"rnn": 2e-3, "transformer": 1e-3}
DEFAULT_WARMUP_STEPS = {"rnn": 200, "transformer": 800}
# The share of the run over which the learning rate decays, at its end, for a config that names
# none. The RNN family gains 1.4 to 4.9 BLEU in 30 minutes from holding the peak rate until the
# last fifth, on both CPU kinds (docs/training.md, "A short decay at the end"); the
# Transformer's defaults were chosen with the decay over the whole run.
DEFAULT_DECAY_SHARES = {"rnn": 0.2, "transformer": 1.0}
# The fields whose default depends on the architecture: None in a config resolves to these.
ARCHITECTURE_DEFAULTS = {
    "learning_rate": DEFAULT_LEARNING_RATES,
    "warmup_steps": DEFAULT_WARMUP_STEPS,
    "decay_share": DEFAULT_DECAY_SHARES,
}
# The Transformer's dropout for a config that names none, by the precision it trains in. The
# fewer epochs a run gets, the less it has to fear overfitting: in the 11 epochs 30 minutes
# hold with bfloat16, 0.1 reaches the lower validation loss; in the 6 to 7 of float32 on a CPU
# without bfloat16, 0.05 does, and translates better (docs/transformer.md, "Less dropout").
DEFAULT_TRANSFORMER_DROPOUTS = {"float32": 0.05, "mixed": 0.1}


def default_transformer_dropout(precision: str) -> float:
    """The Transformer's dropout for a model trained in `precision` (a Keras dtype policy:
    "float32", "mixed_bfloat16", "mixed_float16"), from DEFAULT_TRANSFORMER_DROPOUTS."""
    return DEFAULT_TRANSFORMER_DROPOUTS["float32" if precision == "float32" else "mixed"]
