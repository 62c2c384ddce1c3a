"""The translator: sentences in, translations out — one `tf.Module` for Python and for serving.

    sentences ─ repair UTF-8 ─ tokenize ─ truncate ─ encoder ─ search ─ detokenize
                               (tokenizers.py: words or WordPiece)  (graph_decoder.GraphDecoder)

`TranslatorModule` holds all of it inside TensorFlow: it is what `export` writes as a
SavedModel, and `Translator` is a thin Python wrapper over the very same module, so a sentence
gets the same translation from `translate`, from the notebooks and from TensorFlow Serving.

Bad input has one defined result everywhere: invalid UTF-8 bytes become U+FFFD and are dropped
like any symbol; a sentence with no token after standardization (empty, blank, only emoji or
symbols) translates to "" with score 0; a sentence longer than `max_source_length` tokens is
truncated to its first `max_source_length` tokens (`Translator` also logs a warning); a beam
wider than `MAX_BEAM_WIDTH` is clipped in a served request; and a translation stops after
`decode_length_factor × source tokens + decode_length_offset` tokens, so a confused model cannot
repeat itself up to `max_decode_length`. With the WordPiece tokenizer, an unknown word is
spelled from pieces, and `[UNK]`, the markers and `##` never reach a translation. Python callers get a `TypeError`
for a non-string and a `ValueError` for a bad beam width, temperature or length alpha.

Signatures of the exported module (`signatures`):
  serving_default(sentences: string[batch])                    → translations, scores
  beam_search(sentences: string[batch], beam_width: int32[])   → translations, scores
  attention(sentences: string[batch])    (attention models only) → translations, scores,
      attention_weights, source_tokens, target_tokens

`translations` is a `string[batch]`; `scores` a `float32[batch]`, the model's log-probability
of the translation (`[END]` included).
"""

from __future__ import annotations

import logging
from typing import Iterable

import keras
import tensorflow as tf

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.decoding_options import (
    MAX_BEAM_WIDTH,
    check_beam_width,
    check_length_alpha,
    check_temperature,
)
from seq2seq_keras.decode_precision import resolve_decode_precision
from seq2seq_keras.graph_decoder import AUTOGRAPH, GraphDecoder
from seq2seq_keras.model import float32_model
from seq2seq_keras.search import DEFAULT_LENGTH_ALPHA, SearchResult
from seq2seq_keras.text import PAD_ID, repair_utf8
from seq2seq_keras.tokenizers import make_tokenizer
from seq2seq_keras.tokens import as_utf8_list

logger = logging.getLogger(__name__)

SERVING_SIGNATURE = "serving_default"
BEAM_SIGNATURE = "beam_search"
ATTENTION_SIGNATURE = "attention"  # only for a model trained with attention
SENTENCES_SPEC = tf.TensorSpec([None], tf.string, name="sentences")
BEAM_WIDTH_SPEC = tf.TensorSpec([], tf.int32, name="beam_width")
TEMPERATURE_SPEC = tf.TensorSpec([], tf.float32, name="temperature")
SEED_SPEC = tf.TensorSpec([], tf.int64, name="seed")


class TranslatorModule(tf.Module):
    """Strings in, strings out, as a `tf.Module` that `tf.saved_model.save` writes completely.

    It holds the source and target tokenizers (`config.tokenizer`'s kind, over the model's
    vocabularies) and a `graph_decoder.GraphDecoder` over the trained layers: shared with a
    float32 model, copied at float32 from a mixed-precision one (`model.float32_model`), its
    matmuls at `config.decode_precision` (resolved here: `decode_precision`). Every entry
    point is a `tf.function` with a fixed input signature.

    Args:
      config: the model's config (lengths of sources and translations).
      training_model: the trained Keras model.
      source_vocabulary, target_vocabulary: the vocabularies the model was trained with.
      length_alpha: the beam search's length-normalization exponent.
    Example:
      >>> module = TranslatorModule(config, model, source_vocab, target_vocab)
      >>> module(tf.constant(["Thank you."]))["translations"]  # [b"Gracias."]
    """

    def __init__(
        self,
        config: Seq2SeqConfig,
        training_model: keras.Model,
        source_vocabulary: list[str],
        target_vocabulary: list[str],
        length_alpha: float = DEFAULT_LENGTH_ALPHA,
    ):
        super().__init__(name="translator")
        self.length_alpha = check_length_alpha(length_alpha)
        self.config = config
        self.source_tokenizer = make_tokenizer(config.tokenizer, source_vocabulary)
        self.target_tokenizer = make_tokenizer(config.tokenizer, target_vocabulary)
        # The Transformer's cached step decodes in float32 (no bfloat16 path is written for it).
        self.decode_precision = (
            "float32" if config.is_transformer else resolve_decode_precision(config.decode_precision)
        )
        self.decoder = GraphDecoder(
            float32_model(training_model, config),  # decoding's precision (docs/serving.md)
            config.max_decode_length,
            vocabulary_size=len(target_vocabulary),
            length_factor=config.decode_length_factor,
            length_offset=config.decode_length_offset,
            precision=self.decode_precision,
        )
        self.max_source_length = config.max_source_length
        self.has_attention = self.decoder.has_attention
        if self.has_attention:
            self.translate_with_attention = tf.function(
                self._translate_with_attention, input_signature=[SENTENCES_SPEC],
                autograph=AUTOGRAPH,
            )

    @classmethod
    def from_trained(
        cls, trained, length_alpha: float = DEFAULT_LENGTH_ALPHA
    ) -> "TranslatorModule":
        """The module of a `model_dir.TrainedModel` (a loaded or just-trained model)."""
        return cls(trained.config, trained.training_model, trained.source_vocabulary,
                   trained.target_vocabulary, length_alpha)

    def tokenize(self, sentences: tf.Tensor) -> tf.RaggedTensor:
        """`(batch, None)` source ids of a string tensor: UTF-8 repaired, then tokenized."""
        return self.source_tokenizer.tokenize(repair_utf8(sentences))

    def source_ids(self, sentences: tf.Tensor) -> tf.Tensor:
        """`(batch, source_len)` padded ids, truncated to `max_source_length` tokens."""
        return self.tokenize(sentences)[:, : self.max_source_length].to_tensor(PAD_ID)

    def outputs(self, source_ids: tf.Tensor, result: SearchResult) -> dict[str, tf.Tensor]:
        """The signature outputs; a sentence without source tokens gets "" and score 0."""
        is_empty = tf.reduce_all(tf.equal(source_ids, PAD_ID), axis=1)
        translations = self.target_tokenizer.detokenize(result.token_ids)
        return {
            "translations": tf.where(is_empty, tf.constant(""), translations),
            "scores": tf.where(is_empty, 0.0, result.log_probs),
        }

    @tf.function(input_signature=[SENTENCES_SPEC], autograph=AUTOGRAPH)
    def __call__(self, sentences: tf.Tensor) -> dict[str, tf.Tensor]:
        """Greedy translations of a `(batch,)` string tensor: `translations` and `scores`."""
        source_ids = self.source_ids(sentences)
        return self.outputs(source_ids, self.decoder.greedy(source_ids))

    @tf.function(input_signature=[SENTENCES_SPEC, BEAM_WIDTH_SPEC], autograph=AUTOGRAPH)
    def translate_beam(self, sentences: tf.Tensor, beam_width: tf.Tensor) -> dict[str, tf.Tensor]:
        """Beam-search translations; `beam_width` is clipped to `[1, MAX_BEAM_WIDTH]`."""
        source_ids = self.source_ids(sentences)
        beam_width = tf.clip_by_value(beam_width, 1, MAX_BEAM_WIDTH)
        result = self.decoder.beam(source_ids, beam_width, tf.constant(self.length_alpha))
        return self.outputs(source_ids, result)

    @tf.function(
        input_signature=[SENTENCES_SPEC, TEMPERATURE_SPEC, SEED_SPEC], autograph=AUTOGRAPH
    )
    def translate_sample(self, sentences, temperature, seed) -> dict[str, tf.Tensor]:
        """Sampled translations: each token drawn from softmax(log-probs / temperature).

        The same seed and batch give the same translations; a low temperature approaches
        greedy decoding, a high one draws more varied (and less faithful) translations.
        """
        source_ids = self.source_ids(sentences)
        return self.outputs(source_ids, self.decoder.sample(source_ids, temperature, seed))

    def _translate_with_attention(self, sentences: tf.Tensor) -> dict[str, tf.Tensor]:
        """Greedy translations and, for each, where the decoder looked at every step.

        Adds to `translations` and `scores`: `attention_weights` `(batch, steps, source_len)`
        (row t sums to 1 over the source tokens, 0 on padding and after `[END]`), the
        `source_tokens` `(batch, source_len)` and the `target_tokens` `(batch, steps)` the rows
        and columns stand for ("" on padding): what an attention plot needs.
        """
        source_ids = self.source_ids(sentences)
        result, weights = self.decoder.greedy_with_attention(source_ids)
        outputs = self.outputs(source_ids, result)
        # A sentence without source tokens has nothing to look at: no weights, no tokens.
        is_empty = tf.reduce_all(tf.equal(source_ids, PAD_ID), axis=1)
        token_ids = tf.where(is_empty[:, None], tf.constant(PAD_ID, tf.int64), result.token_ids)
        outputs["attention_weights"] = tf.where(is_empty[:, None, None], 0.0, weights)
        outputs["source_tokens"] = self.source_tokenizer.pieces(source_ids)
        outputs["target_tokens"] = self.target_tokenizer.pieces(token_ids)
        return outputs


def signature_names(has_attention: bool) -> tuple[str, ...]:
    """The names of the exported signatures, for a model with or without attention."""
    return (SERVING_SIGNATURE, BEAM_SIGNATURE) + ((ATTENTION_SIGNATURE,) if has_attention else ())


def signatures(module: TranslatorModule) -> dict:
    """The serving signatures of `module`, by name (see the module docstring)."""
    functions = {
        SERVING_SIGNATURE: module.__call__,
        BEAM_SIGNATURE: module.translate_beam,
        ATTENTION_SIGNATURE: getattr(module, "translate_with_attention", None),
    }
    return {
        name: functions[name].get_concrete_function()
        for name in signature_names(module.has_attention)
    }


class Translator:
    """Translate Python strings with a `TranslatorModule`: lists in, lists out.

    A thin wrapper: it checks the arguments, encodes the text as UTF-8, cuts long lists into
    batches, and calls the module, so it translates exactly as the exported SavedModel does.

    Example:
      >>> translator = Translator(config, model, source_vocabulary, target_vocabulary)
      >>> translator.translate(["Thank you."], beam_width=4)  # ["Gracias."]
    """

    def __init__(
        self,
        config: Seq2SeqConfig,
        training_model: keras.Model,
        source_vocabulary: list[str],
        target_vocabulary: list[str],
        length_alpha: float = DEFAULT_LENGTH_ALPHA,
    ):
        self.module = TranslatorModule(config, training_model, source_vocabulary,
                                       target_vocabulary, length_alpha=length_alpha)

    @classmethod
    def from_trained(cls, trained, length_alpha: float = DEFAULT_LENGTH_ALPHA) -> "Translator":
        """The translator of a `model_dir.TrainedModel` (a loaded or just-trained model);
        `length_alpha` is its beam search's length-normalization exponent."""
        return cls(trained.config, trained.training_model, trained.source_vocabulary,
                   trained.target_vocabulary, length_alpha)

    @property
    def config(self) -> Seq2SeqConfig:
        return self.module.config

    def source_ids(self, sentences: Iterable[str | bytes]) -> tf.RaggedTensor:
        """Ragged `(batch, None)` source ids as the module sees them, truncated."""
        ragged = self.module.tokenize(as_utf8_tensor(sentences))
        return ragged[:, : self.config.max_source_length]

    def translate(
        self,
        sentences: Iterable[str | bytes],
        beam_width: int = 1,
        temperature: float | None = None,
        seed: int = 0,
        batch_size: int = 256,
    ) -> list[str]:
        """Translate sentences, `batch_size` at a time.

        Greedy and beam search batch sentences of similar length together (the translations
        come back in the input's order): a batch then pads its sources little and its
        sentences finish at about the same step, which makes a long list of mixed lengths
        decode faster. A translation does not depend on the batch it is decoded in. Sampling
        keeps the input's order, because its random draws depend on a sentence's row.

        Args:
          sentences: `str` (or UTF-8 `bytes`, repaired like the export repairs them).
          beam_width: 1 is greedy decoding; more is beam search with that many hypotheses.
          temperature: sample each token at this temperature (> 0) instead of searching.
          seed: the sampling seed; the same seed and batch give the same translations.
          batch_size: sentences per call of the module.
        Returns:
          One translation per sentence, "" for a sentence with no token.
        """
        check_beam_width(beam_width)
        if temperature is not None:
            check_temperature(temperature)
        sentences = as_utf8_list(sentences)
        order = list(range(len(sentences)))
        if temperature is None:
            order.sort(key=lambda index: len(sentences[index]))
        translations = [""] * len(sentences)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tf.constant([sentences[row] for row in rows], tf.string)
            self.warn_if_truncated(batch)
            if temperature is not None:
                outputs = self.module.translate_sample(batch, temperature, seed)
            elif beam_width > 1:
                outputs = self.module.translate_beam(batch, beam_width)
            else:
                outputs = self.module(batch)
            for row, text in zip(rows, outputs["translations"].numpy()):
                translations[row] = text.decode("utf-8")
        return translations

    def warn_if_truncated(self, sentences: tf.Tensor) -> None:
        lengths = self.module.tokenize(sentences).row_lengths()
        too_long = int(tf.reduce_sum(tf.cast(lengths > self.config.max_source_length, tf.int32)))
        if too_long:
            logger.warning(
                "%d sentence(s) longer than %d tokens were truncated before translating.",
                too_long, self.config.max_source_length,
            )


def as_utf8_tensor(sentences: Iterable[str | bytes]) -> tf.Tensor:
    """`as_utf8_list` as a `(batch,)` string tensor."""
    return tf.constant(as_utf8_list(sentences), tf.string)
