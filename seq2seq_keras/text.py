"""Text: special tokens, the one standardization, vocabularies and the vectorizer.

Everything that turns a sentence into token ids (and, in `detokenize`, ids back into a
sentence) lives here, so training, the translator and the exported SavedModel share one
definition of a token:

1. `standardize` is the one text-cleaning function, used for training and inference alike.
2. `build_vocabulary` / `build_vocabularies` count the training split's tokens.
3. `make_vectorizer` maps text to token ids with a fixed-vocabulary `TextVectorization`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from seq2seq_keras.config import Seq2SeqConfig

# Special tokens. TextVectorization always puts the padding token "" at id 0 and "[UNK]" at
# id 1; we put the decoder's start and end markers right after them in the target vocabulary.
PAD_TOKEN, UNK_TOKEN, START_TOKEN, END_TOKEN = "", "[UNK]", "[START]", "[END]"
PAD_ID, UNK_ID, START_ID, END_ID = 0, 1, 2, 3

# Punctuation that becomes a token of its own; the rest of the punctuation is dropped.
PUNCTUATION = ".?!,¿¡;:"


# --- 1. Standardization --------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="seq2seq_keras")
def standardize(text: tf.Tensor) -> tf.Tensor:
    """Normalize, lowercase and tokenize-by-spaces a batch of sentences (a `tf.string` tensor).

    Why each step: NFKC folds look-alike code points (full-width letters, ligatures, composed
    vs decomposed accents) into one form, so "é" is one token whatever the keyboard produced.
    Lowercasing is Unicode-aware, so "É" → "é". Unlike the TensorFlow tutorial we keep accents,
    "ñ", "¿" and "¡": stripping them produces wrong Spanish ("¿como estas?"). Punctuation that
    carries meaning becomes a token of its own; other symbols are dropped.

    It is a registered Keras function and pure TensorFlow, so it runs inside `tf.data`, inside
    the exported SavedModel graph, and in a reloaded `TextVectorization`.
    """
    text = tf_text.normalize_utf8(text, "NFKC")
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, "[’‘`´]", "'")
    text = tf.strings.regex_replace(text, f"[^\\pL\\pM\\pN\\s'\\-{PUNCTUATION}]", " ")
    text = tf.strings.regex_replace(text, f"([{PUNCTUATION}])", r" \1 ")
    text = tf.strings.regex_replace(text, r"\s+", " ")
    return tf.strings.strip(text)


# --- 2. Vocabularies and the vectorizer ----------------------------------------------------


def build_vocabulary(
    sentences: list[str], vocab_size: int, reserved: tuple[str, ...] = ()
) -> list[str]:
    """The `vocab_size` most frequent tokens of `sentences`, as `TextVectorization` orders them.

    The list starts with "" and "[UNK]", then the `reserved` tokens (the decoder's markers),
    then words by falling frequency. `standardize` removes brackets, so a marker can never
    collide with a real word.
    """
    counter = keras.layers.TextVectorization(
        max_tokens=vocab_size - len(reserved), standardize=standardize
    )
    counter.adapt(tf.data.Dataset.from_tensor_slices(sentences).batch(4096))
    vocabulary = counter.get_vocabulary()
    return vocabulary[:2] + list(reserved) + vocabulary[2:]


def build_vocabularies(
    pairs: list[tuple[str, str]], config: Seq2SeqConfig
) -> tuple[list[str], list[str]]:
    """Source and target vocabularies of `pairs` (the training split), sized by `config`."""
    source_vocabulary = build_vocabulary([source for source, _ in pairs], config.source_vocab_size)
    target_vocabulary = build_vocabulary(
        [target for _, target in pairs], config.target_vocab_size, reserved=(START_TOKEN, END_TOKEN)
    )
    return source_vocabulary, target_vocabulary


def make_vectorizer(vocabulary: list[str]) -> keras.layers.TextVectorization:
    """A `TextVectorization` with a fixed vocabulary: text → ragged token ids (unknown → 1)."""
    return keras.layers.TextVectorization(
        standardize=standardize, vocabulary=vocabulary, ragged=True
    )
