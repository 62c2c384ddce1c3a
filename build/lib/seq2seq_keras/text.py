"""Text: special tokens, the one standardization, vocabularies and the vectorizer.

Everything that turns a sentence into token ids (and, in `detokenize`, ids back into a
sentence) lives here, so training, the translator and the exported SavedModel share one
definition of a token:

1. `standardize` is the one text-cleaning function, used for training and inference alike.
2. `build_vocabulary` counts the training split's words (`tokenizers.build_vocabularies`
   chooses between it and the WordPiece learner).
3. `make_vectorizer` maps text to token ids with a fixed-vocabulary `TextVectorization`.
4. `detokenize` turns token ids back into a sentence, written the Spanish way.

`repair_utf8` runs before all of it wherever text comes from outside, so that invalid bytes
get the same treatment in Python, in the notebooks and in the exported SavedModel.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_text as tf_text


from seq2seq_keras.tokens import (  # noqa: F401  (the ids are part of this module's API)
    APOSTROPHES,
    CLOSING_PUNCTUATION,
    END_ID,
    END_TOKEN,
    OPENING_PUNCTUATION,
    PAD_ID,
    PAD_TOKEN,
    PUNCTUATION,
    REPLACEMENT_CHARACTER,
    START_ID,
    START_TOKEN,
    UNK_ID,
    UNK_TOKEN,
)


# --- 1. Standardization --------------------------------------------------------------------


def repair_utf8(sentences: tf.Tensor) -> tf.Tensor:
    """Replace every invalid UTF-8 byte of a string tensor with U+FFFD, so nothing fails on it."""
    return tf.strings.unicode_transcode(
        sentences, "UTF-8", "UTF-8", errors="replace", replacement_char=REPLACEMENT_CHARACTER
    )


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
    # Unicode lowercasing reads a C string: it would end the text at a NUL character.
    text = tf.strings.regex_replace(text, r"\x00", " ")
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, f"[{APOSTROPHES}]", "'")
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


def make_vectorizer(vocabulary: list[str]) -> keras.layers.TextVectorization:
    """A `TextVectorization` with a fixed vocabulary: text → ragged token ids (unknown → 1)."""
    return keras.layers.TextVectorization(
        standardize=standardize, vocabulary=vocabulary, ragged=True
    )


# --- 3. Token ids back to text ---------------------------------------------------------------


def detokenize(token_ids: tf.Tensor, vocabulary: tf.Tensor) -> tf.Tensor:
    """Token ids → sentences, in TensorFlow, so the same code runs inside an exported graph.

    Stops each row at its first `[END]`; drops padding, `[START]` and `[END]`; writes
    punctuation as Spanish does ("¿Qué hora es?", no space after "¿" or before "?"); and
    capitalizes the first letter, since the model works in lowercase.

    Args:
      token_ids: `(batch, steps)` int ids.
      vocabulary: 1-D `tf.string` tensor, the target vocabulary.
    Returns:
      `(batch,)` `tf.string` sentences.
    """
    words = tf.gather(vocabulary, content_ids(token_ids))
    text = tf.strings.reduce_join(words, axis=-1, separator=" ")
    text = tf.strings.regex_replace(text, f" ([{CLOSING_PUNCTUATION}])", r"\1")
    text = tf.strings.regex_replace(text, f"([{OPENING_PUNCTUATION}]) ", r"\1")
    return capitalize_first_letter(text)


def content_ids(token_ids: tf.Tensor, has_markers: bool = True) -> tf.RaggedTensor:
    """The ids of each row without padding and, for a vocabulary with the decoder's markers,
    only those before the first `[END]` and without `[START]` (ragged).

    A source vocabulary has no markers: its ids 2 and 3 are ordinary tokens.
    """
    token_ids = tf.cast(token_ids, tf.int64)
    keep = token_ids != PAD_ID
    if has_markers:
        is_end = tf.cast(tf.equal(token_ids, END_ID), tf.int32)
        keep &= tf.equal(tf.cumsum(is_end, axis=1), 0) & (token_ids != START_ID)
    return tf.ragged.boolean_mask(token_ids, keep)


def capitalize_first_letter(text: tf.Tensor) -> tf.Tensor:
    """Upper-case the first letter of each sentence, after any opening "¿" or "¡"."""
    pattern = f"(?s)^([{OPENING_PUNCTUATION}]*)(.?)(.*)$"
    opening = tf.strings.regex_replace(text, pattern, r"\1")
    first = tf.strings.upper(tf.strings.regex_replace(text, pattern, r"\2"), encoding="utf-8")
    rest = tf.strings.regex_replace(text, pattern, r"\3")
    return tf.strings.join([opening, first, rest])
