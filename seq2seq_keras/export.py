"""Export: one SavedModel that takes sentences and returns translations, in TF Serving's layout.

    saved_models/NAME/        the "base path" TensorFlow Serving watches
      1/                      a version: saved_model.pb + variables/
      2/                      the next export; Serving loads the highest number

Everything between the strings lives inside the graph (the TensorFlow translation tutorial's
export, made complete): UTF-8 repair, `data.standardize`, the source vocabulary, the encoder,
the search, and `decode.detokenize`. So a process that imports only `tensorflow` and
`tensorflow_text` (for the `NormalizeUTF8` op) can load it and translate exactly as training
did; the LSTMs run as their cells (see `search.GraphDecoder`), so no cuDNN-only kernel is
exported even from a GPU machine.

Signatures:
  serving_default(sentences: string[batch])                    → translations, scores
  beam_search(sentences: string[batch], beam_width: int32[])   → translations, scores
  attention(sentences: string[batch])    (attention models only) → translations, scores,
      attention_weights, source_tokens, target_tokens

`translations` is a `string[batch]`; `scores` a `float32[batch]`, the model's log-probability
of the translation (`[END]` included). A sentence with no token after standardization (empty,
blank, only emoji or symbols) translates to "" with score 0. Invalid UTF-8 bytes become U+FFFD
and are dropped like any symbol; a sentence longer than `max_source_length` tokens is truncated
to its first `max_source_length` tokens. `beam_width` is clipped to `[1, MAX_BEAM_WIDTH]`.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from seq2seq_keras.config import CONFIG_FILENAME, Seq2SeqConfig
from seq2seq_keras.text import PAD_ID, make_vectorizer
from seq2seq_keras.decode import detokenize
from seq2seq_keras.model_dir import MODEL_FILENAME, TrainedModel
from seq2seq_keras.search import DEFAULT_LENGTH_ALPHA, GraphDecoder, SearchResult

DEFAULT_EXPORT_ROOT = "saved_models"
SERVING_SIGNATURE = "serving_default"
BEAM_SIGNATURE = "beam_search"
ATTENTION_SIGNATURE = "attention"  # only for a model trained with --attention
# Wider beams cost time linearly and rarely help an LSTM translator; a request asking for more
# is served with this width rather than refused.
MAX_BEAM_WIDTH = 16
# U+FFFD REPLACEMENT CHARACTER stands for each invalid UTF-8 byte; `standardize` drops it.
REPLACEMENT_CHARACTER = 0xFFFD
SENTENCES_SPEC = tf.TensorSpec([None], tf.string, name="sentences")
BEAM_WIDTH_SPEC = tf.TensorSpec([], tf.int32, name="beam_width")


class ExportError(Exception):
    """The export could not be written: the message says why and what to do."""


class ServingTranslator(tf.Module):
    """Strings in, strings out, as a `tf.Module` that `tf.saved_model.save` writes completely.

    It holds the source vectorizer, the target vocabulary and a `search.GraphDecoder` over the
    trained layers; both searches are `tf.function`s with fixed input signatures.

    Args:
      config: the model's config (lengths of sources and translations).
      training_model: the trained Keras model; its layers are shared, not copied.
      source_vocabulary, target_vocabulary: the vocabularies the model was trained with.
      length_alpha: the beam search's length-normalization exponent.
    Example:
      >>> translator = ServingTranslator(config, model, source_vocab, target_vocab)
      >>> translator(tf.constant(["Thank you."]))["translations"]  # [b"Gracias."]
    """

    def __init__(
        self,
        config: Seq2SeqConfig,
        training_model: keras.Model,
        source_vocabulary: list[str],
        target_vocabulary: list[str],
        length_alpha: float = DEFAULT_LENGTH_ALPHA,
    ):
        super().__init__(name="serving_translator")
        self.source_vectorizer = make_vectorizer(source_vocabulary)
        self.source_vocabulary = tf.constant(source_vocabulary, tf.string)
        self.target_vocabulary = tf.constant(target_vocabulary, tf.string)
        self.decoder = GraphDecoder(training_model, config.max_decode_length)
        self.max_source_length = config.max_source_length
        self.length_alpha = length_alpha
        self.has_attention = self.decoder.attention is not None
        if self.has_attention:
            self.translate_with_attention = tf.function(
                self._translate_with_attention, input_signature=[SENTENCES_SPEC]
            )

    def source_ids(self, sentences: tf.Tensor) -> tf.Tensor:
        """`(batch, source_len)` padded ids: UTF-8 repaired, standardized, truncated."""
        sentences = tf.strings.unicode_transcode(
            sentences, "UTF-8", "UTF-8", errors="replace",
            replacement_char=REPLACEMENT_CHARACTER,
        )
        ragged = self.source_vectorizer(sentences)  # (batch, None)
        return ragged[:, : self.max_source_length].to_tensor(PAD_ID)

    def outputs(self, source_ids: tf.Tensor, result: SearchResult) -> dict[str, tf.Tensor]:
        """The signature outputs; a sentence without source tokens gets "" and score 0."""
        is_empty = tf.reduce_all(tf.equal(source_ids, PAD_ID), axis=1)
        translations = detokenize(result.token_ids, self.target_vocabulary)
        return {
            "translations": tf.where(is_empty, tf.constant(""), translations),
            "scores": tf.where(is_empty, 0.0, result.log_probs),
        }

    @tf.function(input_signature=[SENTENCES_SPEC])
    def __call__(self, sentences: tf.Tensor) -> dict[str, tf.Tensor]:
        """Greedy translations of a `(batch,)` string tensor: `translations` and `scores`."""
        source_ids = self.source_ids(sentences)
        return self.outputs(source_ids, self.decoder.greedy(source_ids))

    @tf.function(input_signature=[SENTENCES_SPEC, BEAM_WIDTH_SPEC])
    def translate_beam(self, sentences: tf.Tensor, beam_width: tf.Tensor) -> dict[str, tf.Tensor]:
        """Beam-search translations; `beam_width` is clipped to `[1, MAX_BEAM_WIDTH]`."""
        source_ids = self.source_ids(sentences)
        beam_width = tf.clip_by_value(beam_width, 1, MAX_BEAM_WIDTH)
        result = self.decoder.beam(source_ids, beam_width, tf.constant(self.length_alpha))
        return self.outputs(source_ids, result)


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
        outputs["source_tokens"] = tf.gather(self.source_vocabulary, source_ids)
        outputs["target_tokens"] = tf.gather(self.target_vocabulary, token_ids)
        return outputs


def serving_translator(trained: TrainedModel) -> ServingTranslator:
    """The `ServingTranslator` of a loaded model directory."""
    return ServingTranslator(
        trained.config,
        trained.training_model,
        trained.source_vocabulary,
        trained.target_vocabulary,
    )


# --- TF Serving's versioned layout -----------------------------------------------------------


def check_name(name: str) -> str:
    """Return `name` if it can be a model name (one directory level), else raise `ExportError`."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise ExportError(
            f"model name {name!r} is not usable: use letters, digits, '.', '_' or '-' "
            "(no '/'), starting with a letter or digit, e.g. --name translator."
        )
    return name


def existing_versions(base: Path) -> list[int]:
    """The version numbers already under `base` (numeric subdirectories), ascending."""
    if not base.is_dir():
        return []
    numbered = [path for path in base.iterdir() if path.is_dir() and path.name.isdigit()]
    return sorted(int(path.name) for path in numbered)


def next_version(base: Path) -> int:
    """One more than the highest existing version, or 1."""
    return max(existing_versions(base), default=0) + 1


def export_saved_model(
    trained: TrainedModel,
    name: str,
    export_root: str | os.PathLike = DEFAULT_EXPORT_ROOT,
) -> Path:
    """Write the `ServingTranslator` of `trained` to `export_root/name/<next version>/`.

    The SavedModel is first written to a hidden temporary directory beside the versions (TF
    Serving ignores names that are not numbers) and then renamed to the next free version
    number, so Serving never sees a half-written version and an existing one is never
    overwritten: if another export takes the number first, the next one is used.

    Args:
      trained: a loaded model directory (`model_dir.load_trained_model`).
      name: the model's name, the directory TF Serving's `--model_base_path` points at.
      export_root: where model names live (default `saved_models/`).
    Returns:
      The path of the new version directory.
    Raises:
      ExportError: a bad name, or `export_root/name` is a training model directory.
    """
    base = Path(export_root) / check_name(name)
    if (base / MODEL_FILENAME).exists() or (base / CONFIG_FILENAME).exists():
        raise ExportError(
            f"{str(base)!r} is a trained model directory, not an export base: retraining would "
            f"replace it and its versions. Choose another --name or --export-dir."
        )
    base.mkdir(parents=True, exist_ok=True)
    translator = serving_translator(trained)
    signatures = {
        SERVING_SIGNATURE: translator.__call__.get_concrete_function(),
        BEAM_SIGNATURE: translator.translate_beam.get_concrete_function(),
    }
    if translator.has_attention:
        signatures[ATTENTION_SIGNATURE] = translator.translate_with_attention.get_concrete_function()
    staging = Path(tempfile.mkdtemp(prefix=".export-tmp-", dir=base))
    try:
        tf.saved_model.save(translator, str(staging), signatures=signatures)
        # mkdtemp made it private (0700); a model server often runs as another user.
        staging.chmod(0o755)
        return publish_version(staging, base)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_version(staging: Path, base: Path, attempts: int = 100) -> Path:
    """Rename `staging` to the next free version under `base`; never replaces a version."""
    version = next_version(base)
    for _ in range(attempts):
        destination = base / str(version)
        if not destination.exists():
            try:
                os.rename(staging, destination)  # fails if a non-empty `destination` appeared
                return destination
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        version += 1
    raise ExportError(f"no free version number under {str(base)!r} after {attempts} attempts.")
