"""LiteRT export: the encoder and the one-step decoder as one flatbuffer, the loop on the host.

    saved_models/NAME/litert/<version>/
      model.tflite            signatures "encoder" and "decoder_step", LiteRT built-in ops only
      source_vocabulary.txt   the model's vocabularies, one token per line
      target_vocabulary.txt
      runtime.json            what `seq2seq_keras.lite.LiteTranslator` needs besides them

Why two signatures and not the whole translator: the SavedModel's search is a `tf.while_loop`
over a growing batch of hypotheses, with string ops around it, and none of that converts to
LiteRT's built-in ops (TensorList and string ops would need the Flex delegate, which a phone
build does not have). The models that do convert are the ones this project has taught from
the start (`decode.build_inference_models`): an encoder, source ids → the context vector, and
one decoder step, previous token and states → next-token log-probabilities and new states. The
runtime loops over the step in numpy and does the text processing in plain Python.

Both signatures are the graph decoder's own `encode` and `step` (`graph_decoder.GraphDecoder`)
over a float32 copy of the trained layers: LiteRT's CPU kernels compute in float32 (or with
int8 weights, `--quantize int8`), not in the bfloat16 a model may have been trained in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from seq2seq_keras import search
from seq2seq_keras.config import DEFAULT_EXPORT_ROOT
from seq2seq_keras.decoding_options import DEFAULT_LENGTH_ALPHA, check_length_alpha
from seq2seq_keras.rnn_runners import LITE_CELLS
from seq2seq_keras.export import export_base, write_version
from seq2seq_keras.graph_decoder import AUTOGRAPH, SOURCE_IDS_SPEC, GraphDecoder
from seq2seq_keras.lite.runtime_files import (
    ENCODER_SIGNATURE,
    LITE_DIRNAME,
    LOG_PROBS,
    MODEL_FILENAME,
    QUANTIZATIONS,
    RUNTIME_FILENAME,
    SOURCE_VOCABULARY_FILENAME,
    STEP_SIGNATURE,
    TARGET_VOCABULARY_FILENAME,
    TOKEN_IDS,
    RuntimeSpec,
    state_names,
)
from seq2seq_keras.model import float32_model
from seq2seq_keras.model_dir import TrainedModel
from seq2seq_keras.tokens import START_ID, write_vocabulary

# The source the encoder is traced on to learn the shapes and dtypes of its state.
PROBE_SOURCE = [[START_ID]]


class LiteSteps(tf.Module):
    """The encoder and the decoder step as `tf.function`s with named tensors in and out.

    `encoder(source_ids)` returns the decoder's whole state by name (`state_00`, `state_01`, …:
    the recurrent states layer by layer, then with attention the encoder outputs, their keys and
    the source mask); `decoder_step(token_ids, state_00, …)` returns `log_probs` and the next
    state under the same names, so the host feeds each step's outputs back in unchanged.
    """

    def __init__(self, trained: TrainedModel):
        super().__init__(name="lite_steps")
        config = trained.config
        self.decoder = GraphDecoder(
            float32_model(trained.training_model, config),
            config.max_decode_length,
            vocabulary_size=len(trained.target_vocabulary),
            runner=LITE_CELLS,
            fixed_shapes=True,
        )
        probe = self.decoder.encode(tf.constant(PROBE_SOURCE, tf.int64))
        self.state_names = state_names(len(probe))
        state_specs = [
            tf.TensorSpec([None] * part.shape.rank, part.dtype, name=name)
            for name, part in zip(self.state_names, probe)
        ]
        self.encoder = tf.function(
            self._encoder, input_signature=[SOURCE_IDS_SPEC], autograph=AUTOGRAPH
        )
        self.decoder_step = tf.function(
            self._decoder_step,
            autograph=AUTOGRAPH,
            input_signature=[tf.TensorSpec([None], tf.int64, name=TOKEN_IDS), *state_specs],
        )

    def _encoder(self, source_ids):
        return dict(zip(self.state_names, self.decoder.encode(source_ids)))

    def _decoder_step(self, token_ids, *state):
        logits, state = self.decoder.step(token_ids, tuple(state))
        log_probs = search.log_softmax(logits)  # what the host's searches rank
        return {LOG_PROBS: log_probs, **dict(zip(self.state_names, state))}


def frozen(function: tf.types.experimental.ConcreteFunction) -> tf.types.experimental.ConcreteFunction:
    """`function` with its variables turned into constants, outputs still named.

    Freezing first matters: the converter leaves variables read inside a `while_loop` body (the
    encoder's) as LiteRT resource variables, which the interpreter then finds uninitialized.
    """
    constant = convert_variables_to_constants_v2(function)
    names = sorted(function.structured_outputs)  # a dict's outputs are flattened by sorted key

    @tf.function(input_signature=function.structured_input_signature[0], autograph=AUTOGRAPH)
    def named(*inputs):
        return dict(zip(names, constant(*inputs)))

    return named.get_concrete_function()


def convert(steps: LiteSteps, quantize: str) -> bytes:
    """The LiteRT flatbuffer of both signatures, built-in ops only.

    `quantize="int8"` is dynamic-range quantization: weights stored as int8 and dequantized
    by the kernels, activations float32; it needs no calibration data.
    """
    signatures = {
        ENCODER_SIGNATURE: frozen(steps.encoder.get_concrete_function()),
        STEP_SIGNATURE: frozen(steps.decoder_step.get_concrete_function()),
    }
    holder = tf.Module()
    holder.functions = list(signatures.values())  # tracked, so the SavedModel keeps them
    with tempfile.TemporaryDirectory() as saved_model:
        tf.saved_model.save(holder, saved_model, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model, signature_keys=list(signatures)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def runtime_spec(
    trained: TrainedModel, steps: LiteSteps, quantize: str, length_alpha: float
) -> RuntimeSpec:
    """What the runtime reads from `runtime.json`: the config values translation depends on,
    and the beam search's length-normalization exponent."""
    config = trained.config
    return RuntimeSpec(
        tokenizer=config.tokenizer,
        max_source_length=config.max_source_length,
        max_decode_length=config.max_decode_length,
        decode_length_factor=config.decode_length_factor,
        decode_length_offset=config.decode_length_offset,
        length_alpha=length_alpha,
        state_names=list(steps.state_names),
        quantize=quantize,
    )


def write_lite_files(
    directory: Path, trained: TrainedModel, quantize: str, length_alpha: float
) -> None:
    """Write the flatbuffer, the vocabularies and `runtime.json` into `directory`."""
    steps = LiteSteps(trained)
    (directory / MODEL_FILENAME).write_bytes(convert(steps, quantize))
    write_vocabulary(directory / SOURCE_VOCABULARY_FILENAME, trained.source_vocabulary)
    write_vocabulary(directory / TARGET_VOCABULARY_FILENAME, trained.target_vocabulary)
    spec = dataclasses.asdict(runtime_spec(trained, steps, quantize, length_alpha))
    (directory / RUNTIME_FILENAME).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def export_litert(
    trained: TrainedModel,
    name: str,
    export_root: str | os.PathLike = DEFAULT_EXPORT_ROOT,
    quantize: str = "none",
    length_alpha: float = DEFAULT_LENGTH_ALPHA,
) -> Path:
    """Write `trained` for LiteRT to `export_root/name/litert/<next version>/`.

    Atomic and never overwriting, as `export.export_saved_model`: the files are written to a
    hidden staging directory that is renamed to the next free version number.

    Args:
      trained: a loaded model directory (`model_dir.load_trained_model`).
      name: the model's name (the SavedModel export of the same name sits beside `litert/`).
      export_root: where model names live (default `saved_models/`).
      quantize: "none" (float32) or "int8" (dynamic-range int8 weights).
      length_alpha: the beam search's length-normalization exponent, kept in `runtime.json`.
    Returns:
      The new version directory: what `LiteTranslator(path)` takes.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}.")
    check_length_alpha(length_alpha)  # before the seconds the conversion takes
    base = export_base(export_root, name) / LITE_DIRNAME
    base.mkdir(exist_ok=True)
    return write_version(
        base, lambda staging: write_lite_files(staging, trained, quantize, length_alpha)
    )

