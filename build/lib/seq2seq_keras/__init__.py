"""seq2seq_keras: the encoder–decoder LSTM for translation, built with Keras and TensorFlow.

Modules follow the data: `config` → `text` → `data` → `pipeline` → `model` → `decode` (with
`rnn_runners`, the `search` package and `graph_decoder`) → `translator` → `evaluate` → `export`;
training is `train` with `callbacks`, `checkpoints` and `storage`; `cli` is the command line.

Importing the package after Keras registers its Keras objects (`SoftmaxDense`,
`MaskedAccuracy`), so plain Keras loads a trained model:

    import keras
    import seq2seq_keras
    model = keras.saving.load_model("runs/eng_spa/model.keras")

Without Keras imported first, the package imports no TensorFlow (`seq2seq_keras.model`
registers the objects whenever it is imported): `seq2seq_keras.lite`, the on-device runtime,
runs where TensorFlow is not installed.
"""

import sys

__version__ = "0.1.0"

# Keras (and so TensorFlow) already loaded costs nothing more. Otherwise TensorFlow stays
# unimported: for the LiteRT runtime, and for `python -m seq2seq_keras`, whose command line
# first chooses how loud TensorFlow's C++ start-up logs may be and then imports the model.
if "keras" in sys.modules:
    from seq2seq_keras import model as _model  # noqa: F401  (registers the Keras objects)
