"""seq2seq_keras: the encoder–decoder LSTM for translation, built with Keras and TensorFlow.

Modules follow the data: `config` → `data` → `model` → `decode` → `evaluate` → `train` →
`plots` → `cli`.
"""

__version__ = "0.1.0"
