"""The files of a LiteRT export and `runtime.json`, shared by the exporter and the runtime.

Pure Python: `seq2seq_keras.lite.export` writes these files with TensorFlow, the runtime reads
them without it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

# Under an export's model name, beside the SavedModel versions: saved_models/NAME/litert/<n>/.
LITE_DIRNAME = "litert"
MODEL_FILENAME = "model.tflite"
RUNTIME_FILENAME = "runtime.json"
SOURCE_VOCABULARY_FILENAME = "source_vocabulary.txt"
TARGET_VOCABULARY_FILENAME = "target_vocabulary.txt"
QUANTIZATIONS = ("none", "int8")

# Signature and tensor names inside model.tflite.
ENCODER_SIGNATURE = "encoder"
STEP_SIGNATURE = "decoder_step"
SOURCE_IDS = "source_ids"
TOKEN_IDS = "token_ids"
LOG_PROBS = "log_probs"
# Version of the layout below; a runtime refuses an export it does not know.
FORMAT_VERSION = 1


def state_names(count: int) -> list[str]:
    """`state_00`, `state_01`, …: zero-padded so that sorting them keeps their order."""
    return [f"state_{index:02d}" for index in range(count)]


@dataclasses.dataclass(frozen=True)
class RuntimeSpec:
    """What translation depends on besides the weights and vocabularies (`runtime.json`)."""

    tokenizer: str  # "word" or "wordpiece", as `Seq2SeqConfig.tokenizer`
    max_source_length: int  # longer sources are truncated to this many tokens
    max_decode_length: int  # the most tokens of a translation, [END] included
    decode_length_factor: float  # and at most floor(factor * source tokens) + offset
    decode_length_offset: int
    length_alpha: float  # beam search's GNMT length-normalization exponent
    state_names: list[str]  # the decoder state tensors, in order, for both signatures
    quantize: str  # "none" or "int8"
    format_version: int = FORMAT_VERSION

    @classmethod
    def load(cls, directory: Path) -> "RuntimeSpec":
        path = Path(directory) / RUNTIME_FILENAME
        values = json.loads(path.read_text(encoding="utf-8"))
        if values.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} has format version {values.get('format_version')!r}; this "
                f"runtime reads version {FORMAT_VERSION}: export the model again."
            )
        return cls(**values)
