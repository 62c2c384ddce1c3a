"""Running the recurrent layers by stepping their cells: each row read for its own length."""

import numpy as np
import pytest
import tensorflow as tf

from seq2seq_keras.rnn_runners import run_cell


class CountingCell:
    """A trained cell that records how many rows each of its steps gets."""

    def __init__(self, cell, calls: list):
        self.cell, self.calls = cell, calls
        self.units, self.state_size, self.compute_dtype = cell.units, cell.state_size, "float32"

    def __call__(self, inputs, states, training=False):
        self.calls.append(int(tf.shape(inputs)[0]))
        return self.cell(inputs, states, training=training)


@pytest.mark.parametrize("backwards", [False, True])
def test_the_encoder_steps_each_row_only_up_to_its_end(overfit_model, backwards):
    cell = overfit_model.model.get_layer("encoder_lstm").cell
    lengths = [2, 5, 0, 3]
    vectors = tf.random.stateless_normal([5, len(lengths), cell.kernel.shape[0]], seed=[1, 2])
    is_real = tf.constant([[t < n for n in lengths] for t in range(5)])
    calls = []
    outputs, states = run_cell(CountingCell(cell, calls), vectors, is_real, backwards, True)
    assert calls == [3, 3, 2, 1, 1]  # the rows whose source has not ended
    # The same results as stepping every row at every position (what the LiteRT export does).
    every_row = run_cell(cell, vectors, is_real, backwards, True, list_free=True)
    np.testing.assert_allclose(outputs, every_row[0], rtol=1e-6, atol=1e-6)
    for state, expected in zip(states, every_row[1]):
        np.testing.assert_allclose(state, expected, rtol=1e-6, atol=1e-6)
    assert np.all(outputs.numpy()[:, 2] == 0)  # the empty row: no output, zero states
