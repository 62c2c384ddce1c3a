"""How the recurrent layers run when decoding: as Keras layers, or by stepping their cells.

`decode.encode` and `decode.decoder_step` are written once over an `RNNRunner`, which says
how the trained recurrent layers run over the whole source and for one decoder step, and how
the softmax layer's logits are computed:

- `KERAS_LAYERS` calls the Keras layers themselves (the teaching path's Keras models);
- `CELLS` steps their trained cells in a `tf.while_loop` (`run_cell`), so no cuDNN-only kernel
  enters the graph and each source row is read for its own length only (the graph decoder);
- `LITE_CELLS` steps every row at every position with no `TensorArray`, which LiteRT's
  built-in ops can run (the LiteRT export).

`decode_precision.Bfloat16Matmuls` is one more runner, over bfloat16 copies of the weights.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import keras
import tensorflow as tf
from keras import ops

from seq2seq_keras.model import merge_directions, num_states


class RNNRunner(NamedTuple):
    """How the trained layers run: the recurrent layers over the whole source and one decoder
    step at a time, and the softmax layer's logits (`decode_precision.Bfloat16Matmuls` is
    another runner, with its weights in bfloat16)."""

    # (layer, vectors (batch, source_len, features), source_mask, keep_outputs)
    #   → (outputs (batch, source_len, units) or None, final states merged over directions)
    encoder_layer: Callable
    # (layer, inputs (batch, features), states) → (outputs (batch, units), new states)
    decoder_step: Callable
    # (softmax layer, vectors (batch, units)) → (batch, target_vocab) logits
    logits: Callable


def call_rnn_layer(layer, vectors, source_mask, keep_outputs: bool):
    """Run an encoder RNN layer as Keras does (the teaching path); padding leaves the states."""
    del keep_outputs  # the layer was built knowing whether it returns sequences
    outputs, *states = layer(vectors, mask=source_mask)
    if isinstance(layer, keras.layers.Bidirectional):
        states = merge_directions(states)
    return outputs, states


def call_rnn_layer_one_step(layer, inputs, states):
    """One decoder step through the Keras RNN layer, as a sequence of length 1."""
    outputs, *states = layer(ops.expand_dims(inputs, 1), initial_state=states)
    return outputs[:, 0, :], states


def same_cell(cell):
    return cell


def step_cell(layer, inputs, states, cell_of: Callable = same_cell):
    """One decoder step through the layer's trained cell (or `cell_of(cell)`, what runs it)."""
    outputs, states = cell_of(layer.cell)(inputs, list(states), training=False)
    return outputs, list(states)


def softmax_logits(dense, vectors):
    """The softmax layer's logits, computed by the layer itself."""
    return dense.logits(vectors)


def run_cells(
    layer,
    vectors,
    source_mask,
    keep_outputs: bool,
    list_free: bool = False,
    cell_of: Callable = same_cell,
):
    """Run an encoder RNN layer by stepping its trained cell(s) (the graph path).

    Same results as `call_rnn_layer` on the real positions, without cuDNN-only kernels.
    `list_free` is for the LiteRT export (see `run_cell`); `cell_of(cell)` is what runs a
    trained cell (`decode_precision.Bfloat16Matmuls` passes its bfloat16 copies).
    """
    vectors = tf.transpose(vectors, [1, 0, 2])  # (source_len, batch, features)
    is_real = tf.transpose(source_mask)  # (source_len, batch)
    if isinstance(layer, keras.layers.Bidirectional):
        forward, forward_states = run_cell(
            cell_of(layer.forward_layer.cell), vectors, is_real, False, keep_outputs, list_free
        )
        backward, backward_states = run_cell(
            cell_of(layer.backward_layer.cell), vectors, is_real, True, keep_outputs, list_free
        )
        outputs = tf.concat([forward, backward], axis=-1) if keep_outputs else None
        states = [tf.concat(pair, axis=-1) for pair in zip(forward_states, backward_states)]
    else:
        outputs, states = run_cell(
            cell_of(layer.cell), vectors, is_real, layer.go_backwards, keep_outputs, list_free
        )
    if outputs is not None:
        outputs = tf.transpose(outputs, [1, 0, 2])  # (batch, source_len, units)
    return outputs, states


class ReadingOrder(NamedTuple):
    """Which rows an encoder loop steps at each position, and where it stops (`run_cell`)."""

    order: tf.Tensor | None  # the rows sorted by where they end, longest first (None: as given)
    restore: tf.Tensor | None  # the permutation that puts `order`'s rows back (None: as given)
    ends: tf.Tensor | None  # (batch,) one past each sorted row's last real position
    active: tf.Tensor | None  # (steps,) rows still reading at each position: a prefix
    last_step: tf.Tensor  # the loop stops here

    def reading(self, t):
        """What keeps the rows stepped at position t: the first `active[t]` (LiteRT: all)."""
        if self.active is None:
            return lambda rows: rows
        return lambda rows: rows[: self.active[t]]

    def with_rows_past_end(self, stepped: tf.Tensor, every_row: tf.Tensor, t) -> tf.Tensor:
        """`stepped` (the rows read at position t) with the rows past their end taken from
        `every_row`: a full batch again, as the loop requires (LiteRT: `stepped` is it)."""
        if self.active is None:
            return stepped
        merged = tf.concat([stepped, every_row[self.active[t]:]], axis=0)
        merged.set_shape(every_row.shape)
        return merged

    def reverse(self, sequence: tf.Tensor) -> tf.Tensor:
        """Each row's own positions in reverse, its padding kept at its end (LiteRT: all)."""
        if self.ends is None:
            return tf.reverse(sequence, [0])
        return tf.reverse_sequence(sequence, self.ends, 0, 1)


def rows_by_their_end(is_real: tf.Tensor) -> ReadingOrder:
    """The rows in order of where they end, longest first, so that the rows still reading at
    any position are a prefix of the batch; the loop stops at the longest row's end."""
    positions = tf.range(tf.shape(is_real)[0])
    ends = tf.reduce_max(tf.where(is_real, positions[:, None] + 1, 0), axis=0)
    order = tf.argsort(ends, direction="DESCENDING", stable=True)
    ends = tf.gather(ends, order)
    active = tf.reduce_sum(tf.cast(ends[None, :] > positions[:, None], tf.int32), axis=1)
    last_step = tf.reduce_max(tf.concat([ends, [0]], axis=0))
    return ReadingOrder(order, tf.argsort(order), ends, active, last_step)


def every_row_at_every_step(steps: tf.Tensor) -> ReadingOrder:
    """LiteRT's order: every row at every position, in the input's order."""
    return ReadingOrder(None, None, None, None, steps)


def output_buffer(steps, batch_size, units, dtype, list_free: bool):
    """Where the per-step outputs go: `(outputs, write(outputs, t, output), stack(outputs))`.

    A `TensorArray`, or for LiteRT a `(steps, batch, units)` tensor rewritten at every step
    (see `run_cell`'s `list_free`).
    """
    if list_free:
        at = tf.range(steps)[:, None, None]
        outputs = tf.zeros([steps, batch_size, units], dtype)
        return (outputs, lambda outputs, t, output: tf.where(tf.equal(at, t), output[None], outputs),
                lambda outputs: outputs)
    outputs = tf.TensorArray(dtype, size=steps, element_shape=[None, units])
    return (outputs, lambda outputs, t, output: outputs.write(t, output),
            lambda outputs: outputs.stack())


def run_cell(
    cell,
    vectors: tf.Tensor,
    is_real: tf.Tensor,
    backwards: bool,
    keep_outputs: bool,
    list_free: bool = False,
):
    """Run an RNN cell over a masked time-major sequence, as Keras' masked RNN layer does.

    A row stops costing steps after its last real position: the rows are put in order of
    where they end (longest first, `rows_by_their_end`), so the rows still reading at step t
    are the first `active[t]`, and only those are stepped. A short sentence batched with long
    ones is then read for its own length only. Reading backwards reverses each row's own
    positions (`tf.reverse_sequence`), which keeps every row's padding at its end; Keras
    reverses the padded row, padding first, which the mask skips: the same steps in the same
    order.

    Args:
      cell: a trained `LSTMCell` or `GRUCell` (or what runs one, with its `units`,
        `state_size` and `compute_dtype`).
      vectors: `(steps, batch, features)` inputs.
      is_real: `(steps, batch)` bool, False on padding, where the states stay unchanged.
      backwards: read the sequence last step first (Keras' `go_backwards`).
      keep_outputs: also return the per-step outputs.
      list_free: for the LiteRT export: step every row at every position, and collect the
        outputs in a tensor rewritten at every step instead of a `TensorArray`. LiteRT's
        converter cannot lower a `TensorArray` whose element shape has an unknown batch
        ("TensorListReserve requires element_shape to be static"); the rewrite costs
        O(steps²) memory traffic, so only the LiteRT export uses it.
    Returns:
      The outputs `(steps, batch, units)` in the input's order (0 on padding), or None, and
      the final states (`[h, c]` for an LSTM, `[h]` for a GRU).
    """
    steps, batch_size = tf.shape(vectors)[0], tf.shape(vectors)[1]
    schedule = every_row_at_every_step(steps) if list_free else rows_by_their_end(is_real)
    vectors = in_reading_order(schedule, vectors, backwards)
    is_real = in_reading_order(schedule, is_real, backwards)
    # A cell that can multiply all its inputs by its input kernel at once does so before the
    # loop, in one large matmul (`decode_precision.Bfloat16Cell`); its step reads the products.
    step = cell
    if hasattr(cell, "project_inputs"):
        vectors, step = cell.project_inputs(vectors), cell.step_projected
    # Under mixed precision the cell computes in bfloat16 or float16; so do its states.
    dtype = cell.compute_dtype
    states = tuple(tf.zeros([batch_size, cell.units], dtype) for _ in range(num_states(cell)))
    outputs, write, stack = output_buffer(steps, batch_size, cell.units, dtype, list_free)

    def one_token(t, states, outputs):
        reading = schedule.reading(t)
        stepped = [reading(state) for state in states]
        output, new_states = step(reading(vectors[t]), stepped, training=False)
        real = reading(is_real[t])[:, None]
        new_states = [tf.where(real, new, old) for new, old in zip(new_states, stepped)]
        # The rows past their end keep their states and output 0, as padding does.
        new_states = [schedule.with_rows_past_end(new, old, t)
                      for new, old in zip(new_states, states)]
        if keep_outputs:
            output = tf.where(real, output, tf.zeros_like(output))
            outputs = write(outputs, t, schedule.with_rows_past_end(
                output, tf.zeros_like(states[0]), t))
        return t + 1, tuple(new_states), outputs

    last_step = schedule.last_step
    _, states, outputs = tf.while_loop(
        lambda t, *_: t < last_step, one_token, (tf.constant(0), states, outputs)
    )
    if keep_outputs and not list_free:  # the positions after the loop output 0
        outputs = outputs.scatter(
            tf.range(last_step, steps), tf.zeros([steps - last_step, batch_size, cell.units], dtype)
        )
    outputs = stack(outputs) if keep_outputs else None  # (steps, batch, units)
    if outputs is not None:
        outputs = schedule.reverse(outputs) if backwards else outputs
        outputs = in_input_order(schedule, outputs, axis=1)
    return outputs, [in_input_order(schedule, state, axis=0) for state in states]


def in_reading_order(schedule: ReadingOrder, sequence: tf.Tensor, backwards: bool) -> tf.Tensor:
    """A time-major `(steps, batch, ...)` sequence with its rows in the schedule's order and,
    read backwards, each row's own positions reversed."""
    if schedule.order is not None:
        sequence = tf.gather(sequence, schedule.order, axis=1)
    return schedule.reverse(sequence) if backwards else sequence


def in_input_order(schedule: ReadingOrder, tensor: tf.Tensor, axis: int) -> tf.Tensor:
    """The rows (along `axis`) of a tensor computed in the schedule's order, back in the
    input's order."""
    if schedule.restore is None:
        return tensor
    return tf.gather(tensor, schedule.restore, axis=axis)


KERAS_LAYERS = RNNRunner(call_rnn_layer, call_rnn_layer_one_step, softmax_logits)
CELLS = RNNRunner(run_cells, step_cell, softmax_logits)
# The cells again, with no `TensorArray` in the graph: what LiteRT's built-in ops can run.
LITE_CELLS = RNNRunner(functools.partial(run_cells, list_free=True), step_cell, softmax_logits)
