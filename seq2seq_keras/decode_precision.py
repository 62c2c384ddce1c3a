"""Decoding precision: the decoder's matmuls with their weights stored in bfloat16.

A decoding step multiplies a few rows by the recurrent layers' kernels and by the output
projection (units × target vocabulary, the largest matrix). One sentence at a time a step is
bound by reading those weights; a batch of 64 is bound by arithmetic. On a CPU with bfloat16
dot products (AVX512_BF16, AMX) a matmul whose weights are *stored* in bfloat16 is as fast at
one row (TensorFlow's one-row kernel does not read them faster) and 2.4 to 4 times as fast
from 64 rows on, on the bfloat16 units (`benchmarks/matmul.py`). Casting float32 weights at
every step, as Keras' mixed precision does, costs more than it saves; so
`Bfloat16Matmuls` keeps a bfloat16 copy of each matmul's weights, made once, and computes
everything else — biases, gates, the states, the logits' normalization — in float32.

`Seq2SeqConfig.decode_precision` chooses: "float32" decodes with the float32 weights (what
the step-by-step teaching decoder and the LiteRT export compute), "bfloat16" with
`Bfloat16Matmuls`, and "auto" (the default) picks "bfloat16" on a CPU with bfloat16 dot
products and "float32" elsewhere (`resolve_decode_precision`). The two give the same tokens
except where two candidate tokens are within bfloat16's rounding of each other
(docs/serving.md has the measurements).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from seq2seq_keras import hardware
from seq2seq_keras.config_defaults import DECODE_PRECISIONS
from seq2seq_keras.rnn_runners import run_cells, step_cell
from seq2seq_keras.model import ModelLayers


def resolve_decode_precision(precision: str) -> str:
    """"float32" or "bfloat16" for a `decode_precision`; "auto" looks at this machine.

    "auto" is "bfloat16" on a CPU with bfloat16 dot-product instructions and no GPU, where it
    is at least as fast at every batch size; without those instructions a bfloat16 product
    has no faster unit to run on.
    """
    if precision not in DECODE_PRECISIONS:
        raise ValueError(
            f"decode_precision {precision!r} is not one of {', '.join(DECODE_PRECISIONS)}."
        )
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU") or not hardware.cpu_has_native_bfloat16():
        return "float32"
    return "bfloat16"


def bfloat16_copy(weights) -> tf.Variable:
    """A bfloat16 copy of `weights`, made once (a variable, so a SavedModel saves it)."""
    return tf.Variable(tf.cast(weights, tf.bfloat16), trainable=False)


def float32_copy(weights) -> tf.Variable:
    return tf.Variable(tf.cast(weights, tf.float32), trainable=False)


def matmul(inputs: tf.Tensor, weights: tf.Variable) -> tf.Tensor:
    """`inputs @ weights` with bfloat16 operands, as float32; `inputs` of any leading shape
    are multiplied as one matrix."""
    if inputs.shape.rank == 2:
        return tf.cast(tf.matmul(tf.cast(inputs, tf.bfloat16), weights), tf.float32)
    leading = tf.shape(inputs)[:-1]
    rows = tf.reshape(tf.cast(inputs, tf.bfloat16), [-1, tf.shape(inputs)[-1]])
    product = tf.cast(tf.matmul(rows, weights), tf.float32)
    return tf.reshape(product, tf.concat([leading, tf.shape(weights)[-1:]], axis=0))


class Bfloat16Cell(tf.Module):
    """A trained Keras RNN cell's weights for decoding: kernels in bfloat16, biases float32.

    What `rnn_runners.run_cell` and `rnn_runners.step_cell` read of a cell (`units`, `state_size`,
    `compute_dtype`) is the trained cell's, with float32 states.
    """

    def __init__(self, cell: keras.layers.Layer, name: str):
        super().__init__(name=name)
        self.units, self.state_size, self.compute_dtype = cell.units, cell.state_size, "float32"
        self.activation, self.recurrent_activation = cell.activation, cell.recurrent_activation
        self.kernel = bfloat16_copy(cell.kernel)
        self.recurrent_kernel = bfloat16_copy(cell.recurrent_kernel)
        # A GRU with reset_after keeps two rows of biases: for the inputs, for the state.
        self.bias = float32_copy(cell.bias) if cell.use_bias else None

    def __call__(self, inputs, states, training=False):
        return self.step_projected(self.project_inputs(inputs), states)

    def project_inputs(self, inputs: tf.Tensor) -> tf.Tensor:
        """The part of a step that does not depend on the state, for inputs of any leading
        shape: the encoder computes it for every position at once (`rnn_runners.run_cell`)."""
        raise NotImplementedError

    def step_projected(self, projected, states, training=False):
        """One step from `project_inputs`' result: `(output, new states)`."""
        raise NotImplementedError


class Bfloat16LSTMCell(Bfloat16Cell):
    """A trained `keras.layers.LSTMCell`'s step with bfloat16 matmuls, the rest in float32.

    The same arithmetic as the cell's own `call` (gates i, f, c, o; Keras' default fused
    implementation), so the two differ only by the matmuls' rounding.
    """

    def __init__(self, cell: keras.layers.LSTMCell):
        super().__init__(cell, name="bfloat16_lstm_cell")

    def project_inputs(self, inputs):
        return matmul(inputs, self.kernel)

    def step_projected(self, projected, states, training=False):
        hidden, carry = states
        gates = projected + matmul(hidden, self.recurrent_kernel)
        if self.bias is not None:
            gates += self.bias
        input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=1)
        carry = (self.recurrent_activation(forget_gate) * carry
                 + self.recurrent_activation(input_gate) * self.activation(candidate))
        hidden = self.recurrent_activation(output_gate) * self.activation(carry)
        return hidden, [hidden, carry]


class Bfloat16GRUCell(Bfloat16Cell):
    """A trained `keras.layers.GRUCell`'s step (`reset_after=True`, Keras' default) with
    bfloat16 matmuls, the rest in float32, as the cell's own `call` computes it."""

    def __init__(self, cell: keras.layers.GRUCell):
        if not cell.reset_after:
            raise ValueError("bfloat16 decoding supports GRU cells with reset_after=True.")
        super().__init__(cell, name="bfloat16_gru_cell")

    def project_inputs(self, inputs):
        from_inputs = matmul(inputs, self.kernel)
        return from_inputs if self.bias is None else from_inputs + self.bias[0]

    def step_projected(self, from_inputs, states, training=False):
        hidden = states[0] if isinstance(states, (list, tuple)) else states
        from_hidden = matmul(hidden, self.recurrent_kernel)
        if self.bias is not None:
            from_hidden += self.bias[1]
        x_update, x_reset, x_candidate = tf.split(from_inputs, 3, axis=-1)
        h_update, h_reset, h_candidate = tf.split(from_hidden, 3, axis=-1)
        update = self.recurrent_activation(x_update + h_update)
        reset = self.recurrent_activation(x_reset + h_reset)
        candidate = self.activation(x_candidate + reset * h_candidate)
        hidden = update * hidden + (1 - update) * candidate
        return hidden, [hidden]


BFLOAT16_CELLS = {keras.layers.LSTMCell: Bfloat16LSTMCell, keras.layers.GRUCell: Bfloat16GRUCell}


def recurrent_cells(layers: ModelLayers) -> list:
    """Every trained cell the decoder runs: encoder layers (both directions) and decoder."""
    cells = []
    for layer in [*layers.encoder_rnns, *layers.decoder_rnns]:
        if isinstance(layer, keras.layers.Bidirectional):
            cells += [layer.forward_layer.cell, layer.backward_layer.cell]
        else:
            cells.append(layer.cell)
    return cells


class Bfloat16Matmuls(tf.Module):
    """A `rnn_runners.RNNRunner` whose matmuls read bfloat16 copies of the trained weights.

    Made once from the trained layers (`GraphDecoder(..., precision="bfloat16")` does it);
    the copies are variables of this module, so an exported translator saves them. The
    embeddings and attention run as trained (they are lookups and small products).
    """

    def __init__(self, layers: ModelLayers):
        super().__init__(name="bfloat16_matmuls")
        # Keyed by the trained cell's path; a tracked dict needs string keys without "/".
        self.cells = {
            self.key(cell): BFLOAT16_CELLS[type(cell)](cell) for cell in recurrent_cells(layers)
        }
        dense = layers.decoder_dense
        # A factorized output layer (`output_projection_dim`) first projects the outputs.
        self.output_projection = (
            bfloat16_copy(dense.projection) if dense.projection_dim else None
        )
        self.projection = bfloat16_copy(dense.kernel)
        self.projection_bias = float32_copy(dense.bias)

    @staticmethod
    def key(cell) -> str:
        return cell.path.replace("/", ".")

    def cell_of(self, cell):
        return self.cells[self.key(cell)]

    def encoder_layer(self, layer, vectors, source_mask, keep_outputs: bool):
        return run_cells(layer, vectors, source_mask, keep_outputs, cell_of=self.cell_of)

    def decoder_step(self, layer, inputs, states):
        return step_cell(layer, inputs, states, cell_of=self.cell_of)

    def logits(self, dense, vectors):
        del dense  # its weights are copied in `output_projection` and `projection`
        if self.output_projection is not None:
            vectors = matmul(vectors, self.output_projection)
        return matmul(vectors, self.projection) + self.projection_bias
