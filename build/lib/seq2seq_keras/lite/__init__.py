"""On-device translation with LiteRT: the export (`lite.export`, needs TensorFlow) and the
runtime (`LiteTranslator`, needs only `ai-edge-litert` and numpy).

    python -m seq2seq_keras export --model-dir runs/eng_spa --name translator --format litert

    from seq2seq_keras.lite import LiteTranslator
    LiteTranslator("saved_models/translator/litert/1").translate(["Thank you."])

Importing this package imports no TensorFlow; only `seq2seq_keras.lite.export` does.
"""

from seq2seq_keras.lite.translator import LiteTranslator

__all__ = ["LiteTranslator"]
