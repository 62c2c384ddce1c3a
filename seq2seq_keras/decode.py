"""Decoding: inference models rebuilt from the trained layers, greedy search, text out.

Training runs the decoder over a whole known target at once (teacher forcing). At inference
the target is unknown, so the decoder must run one step at a time, feeding each predicted token
back in. For that we rebuild two small models from the *same trained layers*, found by name:

    encoder:      source_ids               → (h, c)          the context vector
    decoder_step: (token, h, c)            → (next-token probabilities, h, c)

Other cells, stacked or bidirectional encoders and attention (docs/variants.md) keep this
layout with more states, and with the encoder outputs and the attention weights
(`InferenceModels`).

`greedy_decode_stepwise` drives them from `[START]` until `[END]` or a maximum length, a batch
of sentences at a time. `detokenize` turns ids back into Spanish text inside TensorFlow.
`Translator` puts vectorizer, models and decoder together: strings in, strings out. It decodes
with `search.GraphDecoder`, the same search compiled into one `tf.function` (greedy, or beam
search with `beam_width > 1`), which returns exactly the tokens `greedy_decode_stepwise` does.
"""

from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np
import tensorflow as tf

from seq2seq_keras import search, variants
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.text import END_ID, PAD_ID, PUNCTUATION, START_ID, make_vectorizer

logger = logging.getLogger(__name__)

# Marks written without a space before them ("hola ." → "hola.") or after them ("¿ qué" → "¿qué").
CLOSING_PUNCTUATION = ".?!,;:"
OPENING_PUNCTUATION = "¿¡"
assert set(CLOSING_PUNCTUATION + OPENING_PUNCTUATION) == set(PUNCTUATION)


@dataclasses.dataclass
class InferenceModels:
    """The encoder and the one-step decoder, sharing the trained model's layers and weights.

    Classic model: `encoder` maps source ids to `[h, c]` and `decoder_step` maps
    `[token, h, c]` to `[probabilities, h, c]`. Variants keep that layout with their states
    (`h` only for a GRU; layer by layer when stacked); with attention the encoder also returns
    its per-step outputs first, and the step takes them and the source mask after the token
    and returns the attention weights last:

        encoder:      source_ids → [encoder_outputs, *states]
        decoder_step: [token, encoder_outputs, source_mask, *states]
                      → [probabilities, *states, attention_weights (batch, 1, source_len)]
    """

    encoder: keras.Model  # source_ids (batch, source_len) → [h, c], each (batch, units)
    decoder_step: keras.Model  # [token (batch, 1), h, c] → [probabilities (batch, 1, vocab), h, c]
    attention: bool = False


def build_inference_models(training_model: keras.Model) -> InferenceModels:
    """Rebuild the encoder and a one-step decoder from the trained layers, found by name.

    Works on a freshly built model and on one loaded from disk alike, because layers are
    looked up with `get_layer(name)`, never by position (`variants.ModelLayers.find`).
    """
    layers = variants.ModelLayers.find(training_model)

    # Encoder: the training graph's left half, ending in the context vector (every layer's
    # final states) and, for attention, the last layer's per-step outputs.
    source_ids = keras.Input(shape=(None,), dtype="int64", name="source_ids")
    encoder_outputs = layers.encoder_embedding(source_ids)
    states = []
    for layer in layers.encoder_rnns:
        encoder_outputs, *layer_states = layer(encoder_outputs)
        states += variants.merge_directions(layer_states) if layers.bidirectional else layer_states
    memory = [encoder_outputs] if layers.attention else []
    encoder = keras.Model(source_ids, memory + states, name="encoder")

    # One decoder step: the previous token and the previous states in, the next ones out.
    token_ids = keras.Input(shape=(1,), dtype="int64", name="token_ids")
    suffix = lambda index: "" if len(layers.decoder_rnns) == 1 else f"_{index}"  # noqa: E731
    input_states = [
        keras.Input(shape=(layer.units,), name=f"state_{kind}{suffix(index)}")
        for index, layer in enumerate(layers.decoder_rnns, start=1)
        for kind in ("h", "c")[: layers.states_per_layer]
    ]
    outputs = layers.decoder_embedding(token_ids)
    output_states = []
    per_layer = layers.states_per_layer
    for index, layer in enumerate(layers.decoder_rnns):
        layer_states = input_states[index * per_layer : (index + 1) * per_layer]
        outputs, *new_states = layer(outputs, initial_state=layer_states)
        output_states += new_states
    memory_inputs, extra_outputs = [], []
    if layers.attention:
        encoder_outputs = keras.Input(shape=(None, encoder.outputs[0].shape[-1]),
                                      name="encoder_outputs")
        source_mask = keras.Input(shape=(None,), dtype="bool", name="source_mask")
        keys = layers.attention.key(encoder_outputs)
        outputs, weights = variants.attend(
            layers.attention, outputs, encoder_outputs, keys, source_mask
        )
        memory_inputs, extra_outputs = [encoder_outputs, source_mask], [weights]
    probabilities = layers.decoder_dense(outputs)  # (batch, 1, vocab)
    decoder_step = keras.Model(
        [token_ids, *memory_inputs, *input_states],
        [probabilities, *output_states, *extra_outputs],
        name="decoder_step",
    )
    return InferenceModels(encoder, decoder_step, attention=layers.attention is not None)


def as_list(outputs) -> list:
    """A Keras model's outputs as a list, also when it has a single output."""
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def greedy_decode_stepwise(
    models: InferenceModels, source_ids: np.ndarray, max_length: int
) -> np.ndarray:
    """Greedy decoding with the inference models, one Python step per token.

    The teaching path: clear, but each step is a separate model call. All sentences of the
    batch advance together; a sentence that has produced `[END]` is fed padding until every
    sentence is done, and whatever the model then computes for it is ignored.

    Args:
      models: the encoder and one-step decoder.
      source_ids: `(batch, source_len)` int ids, right-padded with 0.
      max_length: the most tokens to generate per sentence.
    Returns:
      `(batch, steps)` int64 token ids, `steps <= max_length`; a row ends at its first `[END]`
      and is padded with 0 after it.
    """
    batch_size = source_ids.shape[0]
    states = as_list(models.encoder(tf.constant(source_ids), training=False))
    memory = []  # with attention: what every step looks at, the encoder outputs and the mask
    if models.attention:
        # tf.identity drops the Keras mask the encoder attached; the step takes it explicitly.
        memory = [tf.identity(states.pop(0)), tf.constant(source_ids != PAD_ID)]
    tokens = np.full((batch_size, 1), START_ID, dtype=np.int64)
    done = np.zeros(batch_size, dtype=bool)
    generated = []
    for _ in range(max_length):
        outputs = as_list(
            models.decoder_step([tf.constant(tokens), *memory, *states], training=False)
        )
        probabilities, states = outputs[0], outputs[1 : 1 + len(states)]
        next_ids = np.argmax(np.asarray(probabilities)[:, -1, :], axis=-1).astype(np.int64)
        next_ids = np.where(done, PAD_ID, next_ids)
        generated.append(next_ids)
        done |= next_ids == END_ID
        if done.all():
            break
        tokens = next_ids[:, None]
    if not generated:
        return np.zeros((batch_size, 0), dtype=np.int64)
    return np.stack(generated, axis=1)


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
    token_ids = tf.cast(token_ids, tf.int64)
    is_end = tf.cast(tf.equal(token_ids, END_ID), tf.int32)
    before_end = tf.equal(tf.cumsum(is_end, axis=1), 0)
    keep = before_end & (token_ids != PAD_ID) & (token_ids != START_ID)
    words = tf.ragged.boolean_mask(tf.gather(vocabulary, token_ids), keep)
    text = tf.strings.reduce_join(words, axis=-1, separator=" ")
    text = tf.strings.regex_replace(text, f" ([{CLOSING_PUNCTUATION}])", r"\1")
    text = tf.strings.regex_replace(text, f"([{OPENING_PUNCTUATION}]) ", r"\1")
    return capitalize_first_letter(text)


def capitalize_first_letter(text: tf.Tensor) -> tf.Tensor:
    """Upper-case the first letter of each sentence, after any opening "¿" or "¡"."""
    pattern = f"(?s)^([{OPENING_PUNCTUATION}]*)(.?)(.*)$"
    opening = tf.strings.regex_replace(text, pattern, r"\1")
    first = tf.strings.upper(tf.strings.regex_replace(text, pattern, r"\2"), encoding="utf-8")
    rest = tf.strings.regex_replace(text, pattern, r"\3")
    return tf.strings.join([opening, first, rest])


class Translator:
    """Strings in, strings out: vectorizer → encoder → greedy decoder → detokenizer.

    Decoding runs in one compiled graph per batch (`search.GraphDecoder`): greedy by default,
    beam search with GNMT length normalization when `beam_width > 1`.

    Bad input has a defined result: an empty or blank sentence translates to "", unknown words
    become `[UNK]` ids, a sentence longer than `config.max_source_length` tokens is truncated
    (with a logged warning), and a non-string raises `TypeError`.
    """

    def __init__(
        self,
        config: Seq2SeqConfig,
        training_model: keras.Model,
        source_vocabulary: list[str],
        target_vocabulary: list[str],
        beam_width: int = 1,
    ):
        if beam_width < 1:
            raise ValueError(f"beam_width must be at least 1 (1 is greedy), got {beam_width}.")
        self.config = config
        self.source_vectorizer = make_vectorizer(source_vocabulary)
        self.target_vocabulary = tf.constant(target_vocabulary)
        self.models = build_inference_models(training_model)
        self.decoder = search.GraphDecoder(training_model, config.max_decode_length)
        self.beam_width = beam_width

    @classmethod
    def from_trained(cls, trained, beam_width: int = 1) -> "Translator":
        """The translator of a `model_dir.TrainedModel` (a loaded or just-trained model)."""
        return cls(trained.config, trained.training_model, trained.source_vocabulary,
                   trained.target_vocabulary, beam_width=beam_width)

    def source_ids(self, sentences: list[str]) -> tf.RaggedTensor:
        """Ragged `(batch, None)` source ids, truncated to the configured maximum length."""
        ragged = self.source_vectorizer(tf.constant(sentences, dtype=tf.string))
        lengths = ragged.row_lengths()
        too_long = int(tf.reduce_sum(tf.cast(lengths > self.config.max_source_length, tf.int32)))
        if too_long:
            logger.warning(
                "%d sentence(s) longer than %d tokens were truncated before translating.",
                too_long,
                self.config.max_source_length,
            )
        return ragged[:, : self.config.max_source_length]

    def translate_ids(self, source_ids: np.ndarray) -> np.ndarray:
        """Token ids of the translations of `(batch, source_len)` padded source ids.

        The graph decoder gives exactly `greedy_decode_stepwise(self.models, …)`'s tokens
        when `beam_width` is 1; it is just one graph call instead of one model call per token.
        """
        return self.decoder.decode(source_ids, self.beam_width).token_ids.numpy()

    def translate(self, sentences: list[str], batch_size: int = 256) -> list[str]:
        """Translate a list of sentences, `batch_size` at a time.

        A sentence with no token after standardization (blank, or only symbols such as emoji)
        translates to "" without running the model.
        """
        sentences = check_sentences(sentences)
        translations = [""] * len(sentences)
        for start in range(0, len(sentences), batch_size):
            batch = sentences[start : start + batch_size]
            ragged = self.source_ids(batch)
            non_empty = np.flatnonzero(ragged.row_lengths().numpy() > 0)
            if non_empty.size == 0:
                continue
            source_ids = tf.gather(ragged, non_empty).to_tensor(PAD_ID).numpy()
            token_ids = self.translate_ids(source_ids)
            texts = detokenize(token_ids, self.target_vocabulary).numpy()
            for index, text in zip(non_empty, texts):
                translations[start + index] = text.decode("utf-8")
        return translations


def check_sentences(sentences) -> list[str]:
    """Return `sentences` as a list of `str`, or raise a `TypeError` that names the bad item."""
    if isinstance(sentences, str):
        raise TypeError("translate() takes a list of sentences, not one string: use [sentence].")
    sentences = list(sentences)
    for position, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise TypeError(
                f"sentence {position} is a {type(sentence).__name__}, not a str: "
                "translate() takes text only."
            )
    return sentences
