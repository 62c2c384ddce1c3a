"""seq2seq_keras: the encoder–decoder LSTM for translation, built with Keras and TensorFlow.

Modules follow the data: `config` → `text` → `data` → `pipeline` → `model` → `decode` (with
`search`, `graph_decoder`) → `translator` → `evaluate` → `export`; training is `train` with `callbacks`,
`checkpoints` and `storage`; `cli` is the command line.

Importing the package registers its Keras objects (`SoftmaxDense`, `MaskedAccuracy`), so plain
Keras loads a trained model:

    import keras
    import seq2seq_keras
    model = keras.saving.load_model("runs/eng_spa/model.keras")
"""

import sys

__version__ = "0.1.0"

# `python -m seq2seq_keras` imports this package while Python still looks for the command's
# module (`sys.argv[0]` is then "-m"): TensorFlow stays unimported until the command line has
# chosen how loud its C++ start-up logs may be. The CLI imports the model itself.
if sys.argv[:1] != ["-m"]:
    from seq2seq_keras import model as _model  # noqa: F401  (registers the Keras objects)
