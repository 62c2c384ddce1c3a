"""Tokenizers: sentences ↔ token ids, by whole words or by WordPiece subwords.

`config.tokenizer` picks one of two ways to cut text into tokens, and everything downstream
(the data, the model, the searches, the translator, the export) only ever sees token ids:

- **word** (`WordTokenizer`): `text.standardize` lowercases the text and splits off
  punctuation, Keras' `TextVectorization` maps each word to its id; a word outside the
  vocabulary becomes `[UNK]`. Simple to read, and the classic setup of the literature.
- **wordpiece** (`WordPieceTokenizer`): the text keeps its case and its spacing, each
  whitespace-separated word is cut into the longest pieces of a vocabulary learned from the
  training split by tensorflow-text's WordPiece learner ("Zbigniew" → `Z ##b ##ign ##ie ##w`),
  and `FastWordpieceTokenizer` maps pieces to ids and back. Any word made of characters seen in
  training is spelled from pieces, so names and rare words survive, and the model writes
  case and punctuation itself ("¿Dónde está Tom?").

Why `TextVectorization` is not the wordpiece id mapper: `FastWordpieceTokenizer` already
returns ids (from the same vocabulary list) and is the only one of the two that can turn ids
back into words, joining `##` pieces; a second lookup would map strings to the same ids twice.

Both tokenizers are `tf.Module`s with the same three methods, pure TensorFlow, so they run in
`tf.data`, in the translator and inside the exported SavedModel:
  tokenize(sentences)    `(batch,)` strings → ragged `(batch, None)` int64 ids
  detokenize(token_ids)  `(batch, steps)` ids → `(batch,)` sentences, stopping at `[END]`
  pieces(token_ids)      ids → the vocabulary strings they stand for (attention plot labels)
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.text import build_vocabulary, content_ids, detokenize, make_vectorizer
from seq2seq_keras.tokens import (
    APOSTROPHES,
    END_TOKEN,
    MAX_BYTES_PER_WORD,
    PAD_TOKEN,
    REPLACEMENT_CHARACTER,
    START_TOKEN,
    SUFFIX_INDICATOR,
    UNK_ID,
    UNK_TOKEN,
    alphabet,
    has_markers,
    matchable_vocabulary,
)
# The learner searches for a frequency threshold that fills the vocabulary budget; a floor of 1
# (any word seen in training may become a piece) lets it use the whole budget. With its default
# floor of 10, spa-eng's English got 6,421 pieces of a 10,000 budget, and longer sequences.
LEARNER_MIN_COUNT = 1
# Sentences standardized per batch while counting the words of a corpus.
COUNT_BATCH_SIZE = 4096


class VocabularyError(ValueError):
    """The vocabulary size cannot hold what the training text needs: the message says why."""


# --- Word level --------------------------------------------------------------------------------


class WordTokenizer(tf.Module):
    """Lowercased words through `TextVectorization`; unknown words become `[UNK]`."""

    def __init__(self, vocabulary: list[str]):
        super().__init__(name="word_tokenizer")
        self.vectorizer = make_vectorizer(vocabulary)
        self.vocabulary = tf.constant(vocabulary, tf.string)

    def tokenize(self, sentences: tf.Tensor) -> tf.RaggedTensor:
        return self.vectorizer(sentences)

    def detokenize(self, token_ids: tf.Tensor) -> tf.Tensor:
        return detokenize(token_ids, self.vocabulary)

    def pieces(self, token_ids: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.vocabulary, token_ids)


# --- WordPiece: standardization that keeps case and spacing -------------------------------------


def normalize_cased(sentences: tf.Tensor) -> tf.Tensor:
    """NFKC-normalized text with its case, accents and punctuation, and single spaces.

    NFKC folds look-alike code points (full-width letters, ligatures, decomposed accents) into
    one form. Curly apostrophes become "'", control and format characters become spaces, and
    U+FFFD (what `text.repair_utf8` makes of an invalid byte) is dropped. Nothing is
    lowercased or split: WordPiece learns case and attached punctuation as pieces.
    """
    text = tf_text.normalize_utf8(sentences, "NFKC")
    text = tf.strings.regex_replace(text, f"[{APOSTROPHES}]", "'")
    text = tf.strings.regex_replace(text, chr(REPLACEMENT_CHARACTER), "")
    return single_spaced(tf.strings.regex_replace(text, r"[\p{Cc}\p{Cf}]", " "))


def single_spaced(text: tf.Tensor) -> tf.Tensor:
    """Runs of whitespace as one space, none at either end: the spacing tokens stand for."""
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def character_class(characters: list[str]) -> str:
    """An RE2 character class matching exactly `characters` (special characters escaped)."""
    escaped = "".join("\\" + c if c in "\\[]^-" else c for c in characters)
    return f"[{escaped}]"


def fold_unseen_characters(sentences: tf.Tensor, known: str) -> tf.Tensor:
    """Replace each character outside the `known` class by its unaccented base, or drop it.

    An English training set may never contain "ń", so "Gdańsk" would become `[UNK]`; its base
    letter "n" is known, and "Gdansk" is spelled from pieces. A character with no known base
    (an emoji, a script never seen) is dropped, as the word tokenizer drops symbols.
    """
    characters = tf.strings.unicode_split(sentences, "UTF-8")
    flat = characters.flat_values
    base = tf.strings.regex_replace(tf_text.normalize_utf8(flat, "NFD"), r"\pM", "")
    is_known = tf.strings.regex_full_match(flat, f"{known}|\\s")
    base_is_known = tf.strings.regex_full_match(base, f"{known}+")
    flat = tf.where(is_known, flat, tf.where(base_is_known, base, ""))
    return tf.strings.reduce_join(characters.with_flat_values(flat), axis=-1)


# --- WordPiece: the tokenizer --------------------------------------------------------------------


class WordPieceTokenizer(tf.Module):
    """Case-kept WordPiece tokens: text ↔ ids, with detokenization that rebuilds the text.

    Args:
      vocabulary: `""`, `"[UNK]"` (and for a target `"[START]"`, `"[END]"`), then pieces, as
        `learn_wordpiece_vocabulary` returns it.
    """

    def __init__(self, vocabulary: list[str]):
        super().__init__(name="wordpiece_tokenizer")
        self.vocabulary = tf.constant(vocabulary, tf.string)
        # A target vocabulary holds the decoder's markers; a source vocabulary does not.
        self.has_markers = has_markers(vocabulary)
        self.known_characters = character_class(alphabet(vocabulary))
        self.wordpiece = tf_text.FastWordpieceTokenizer(
            matchable_vocabulary(vocabulary),
            suffix_indicator=SUFFIX_INDICATOR,
            unknown_token=UNK_TOKEN,
            max_bytes_per_word=MAX_BYTES_PER_WORD,
            no_pretokenization=True,
            support_detokenization=True,
            token_out_type=tf.int64,
        )

    def standardize(self, sentences: tf.Tensor) -> tf.Tensor:
        """The text the tokens stand for: `detokenize(tokenize(s)) == standardize(s)`."""
        folded = fold_unseen_characters(normalize_cased(sentences), self.known_characters)
        return single_spaced(folded)  # a dropped character may leave two spaces

    def tokenize(self, sentences: tf.Tensor) -> tf.RaggedTensor:
        words = tf.strings.split(self.standardize(sentences))
        return self.wordpiece.tokenize(words).merge_dims(-2, -1)

    def detokenize(self, token_ids: tf.Tensor) -> tf.Tensor:
        """Pieces joined into words, words by single spaces, the case and punctuation as the
        model wrote them. `[START]`, `[END]`, padding and `[UNK]` never reach the text, nor does
        a `##` that a confused model wrote at the start of a sentence."""
        kept = content_ids(token_ids, self.has_markers)
        kept = tf.ragged.boolean_mask(kept, tf.not_equal(kept, UNK_ID))
        text = self.wordpiece.detokenize(kept)
        return tf.strings.regex_replace(text, f"(^| ){SUFFIX_INDICATOR}", r"\1")

    def pieces(self, token_ids: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.vocabulary, token_ids)


# --- Vocabularies ---------------------------------------------------------------------------------


def word_counts(sentences: list[str]) -> collections.Counter:
    """How often each whitespace-separated word of the `normalize_cased` text occurs."""
    counts: collections.Counter = collections.Counter()
    for start in range(0, len(sentences), COUNT_BATCH_SIZE):
        batch = normalize_cased(tf.constant(sentences[start : start + COUNT_BATCH_SIZE]))
        for text in batch.numpy():
            counts.update(text.decode("utf-8").split())
    return counts


def learn_wordpiece_vocabulary(
    sentences: list[str], vocab_size: int, reserved: tuple[str, ...] = ()
) -> list[str]:
    """A WordPiece vocabulary of at most `vocab_size` entries, learned from `sentences`.

    tensorflow-text's learner (the one behind `bert_vocab_from_dataset`) is given our own word
    counts instead of BERT's basic tokenizer, which lowercases and strips accents ("está" →
    "esta": wrong Spanish). It returns `""`, `"[UNK]"`, the `reserved` markers, every
    character of the training words, then the most useful longer pieces.
    """
    specials = [PAD_TOKEN, UNK_TOKEN, *reserved]
    vocabulary = learner.learn(
        word_counts(sentences), vocab_size, reserved_tokens=specials,
        lower_thresh=LEARNER_MIN_COUNT,
    )
    return within_budget(vocabulary, len(specials), vocab_size)


def within_budget(vocabulary: list[str], num_specials: int, vocab_size: int) -> list[str]:
    """The learned vocabulary cut to `vocab_size` entries without losing a character.

    The learner's count threshold cannot go below the rarest word's count (10 in a corpus
    repeated ten times), so it may overshoot the budget. Its list is the markers, every
    character (the `##` forms of characters come last, with a count of 1), then the longer
    pieces by falling count. What is cut are the least frequent longer pieces: every
    character keeps both forms, so every word stays spellable.
    """
    is_kept = [
        index < num_specials or len(piece.removeprefix(SUFFIX_INDICATOR)) == 1
        for index, piece in enumerate(vocabulary)
    ]
    kept = [piece for piece, keep in zip(vocabulary, is_kept) if keep]
    if len(kept) > vocab_size:
        raise VocabularyError(
            f"the training text needs {len(kept)} WordPiece entries for its markers and every "
            f"character it uses (with and without '##'), more than the vocabulary size "
            f"{vocab_size}: raise --source-vocab-size / --target-vocab-size."
        )
    longer = [piece for piece, keep in zip(vocabulary, is_kept) if not keep]
    return kept + longer[: vocab_size - len(kept)]


Tokenizer = WordTokenizer | WordPieceTokenizer  # what `make_tokenizer` returns


def make_tokenizer(kind: str, vocabulary: list[str]) -> Tokenizer:
    """The tokenizer `config.tokenizer` names, over a vocabulary built for it."""
    if kind == "wordpiece":
        return WordPieceTokenizer(vocabulary)
    return WordTokenizer(vocabulary)


def build_vocabularies(
    pairs: list[tuple[str, str]], config: Seq2SeqConfig
) -> tuple[list[str], list[str]]:
    """Source and target vocabularies of `pairs` (the training split), of `config.tokenizer`'s
    kind and sized by `config`; the target's includes `[START]` and `[END]`. With
    `config.shared_vocabulary`, one vocabulary learned from both sides is both."""
    build = learn_wordpiece_vocabulary if config.tokenizer == "wordpiece" else build_vocabulary
    sources = [source for source, _ in pairs]
    targets = [target for _, target in pairs]
    if config.shared_vocabulary:
        shared = build(sources + targets, config.target_vocab_size, reserved=(START_TOKEN, END_TOKEN))
        return shared, shared
    return (
        build(sources, config.source_vocab_size),
        build(targets, config.target_vocab_size, reserved=(START_TOKEN, END_TOKEN)),
    )
