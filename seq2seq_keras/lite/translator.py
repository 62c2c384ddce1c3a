"""`LiteTranslator`: translate with a LiteRT export, in a process without TensorFlow.

    sentences ─ repair UTF-8 ─ tokenize ─ truncate ─ encoder ─ search ─ detokenize
                (lite.text, plain Python)        (model.tflite)  (lite.search, numpy)

It behaves as the SavedModel does (`translator.TranslatorModule`): the same standardization and
vocabulary lookup, truncation to `max_source_length` tokens (with a logged warning), the same
length caps, greedy and beam search, detokenization, and "" for a sentence with no token.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from seq2seq_keras.decoding_options import check_beam_width
from seq2seq_keras.lite.runtime_files import (
    ENCODER_SIGNATURE,
    LOG_PROBS,
    MODEL_FILENAME,
    SOURCE_IDS,
    SOURCE_VOCABULARY_FILENAME,
    STEP_SIGNATURE,
    TARGET_VOCABULARY_FILENAME,
    TOKEN_IDS,
    RuntimeSpec,
)
from seq2seq_keras.lite.search import SearchResult, beam_search, greedy_search
from seq2seq_keras.lite.text import make_host_tokenizer, repair_utf8
from seq2seq_keras.tokens import PAD_ID, as_utf8_list, read_vocabulary

logger = logging.getLogger(__name__)

# The most threads used without `num_threads`: a decoder step's matrices are small, and more
# threads than that mostly add synchronization.
MAX_DEFAULT_THREADS = 4


class LiteTranslator:
    """Sentences in, translations out, from `saved_models/NAME/litert/<version>/`.

    Args:
      path: the version directory `export --format litert` wrote.
      num_threads: threads of the LiteRT CPU kernels; None uses every core, up to
        `MAX_DEFAULT_THREADS`. (LiteRT's own default, one thread, leaves the other cores idle
        during a decoder step.)

    A LiteRT interpreter is not safe to call from several threads at once: give each thread
    its own `LiteTranslator` (they are cheap: the flatbuffer is memory-mapped).
    Example:
      >>> translator = LiteTranslator("saved_models/translator/litert/1")
      >>> translator.translate(["Thank you."], beam_width=4)  # ["Gracias."]
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter  # the runtime's one dependency

        directory = Path(path)
        if not (directory / MODEL_FILENAME).is_file():
            raise FileNotFoundError(
                f"{str(directory)!r} holds no {MODEL_FILENAME}: pass the version directory "
                "that `python -m seq2seq_keras export --format litert` printed."
            )
        self.spec = RuntimeSpec.load(directory)
        if num_threads is None:
            num_threads = min(os.cpu_count() or 1, MAX_DEFAULT_THREADS)
        self.interpreter = Interpreter(
            model_path=str(directory / MODEL_FILENAME), num_threads=num_threads
        )
        self.encoder = self.interpreter.get_signature_runner(ENCODER_SIGNATURE)
        self.decoder_step = self.interpreter.get_signature_runner(STEP_SIGNATURE)
        self.source_tokenizer = make_host_tokenizer(
            self.spec.tokenizer, read_vocabulary(directory / SOURCE_VOCABULARY_FILENAME)
        )
        self.target_tokenizer = make_host_tokenizer(
            self.spec.tokenizer, read_vocabulary(directory / TARGET_VOCABULARY_FILENAME)
        )

    # --- Text → ids ---

    def token_ids(self, sentences: Iterable[str | bytes]) -> list[list[int]]:
        """Each sentence's source ids, before truncation (`TranslatorModule.tokenize`)."""
        return [
            self.source_tokenizer.tokenize(repair_utf8(sentence))
            for sentence in as_utf8_list(sentences)
        ]

    def source_ids(self, token_ids: list[list[int]]) -> np.ndarray:
        """`(batch, source_len)` ids, truncated to `max_source_length`, padded with 0."""
        rows = [ids[: self.spec.max_source_length] for ids in token_ids]
        width = max((len(row) for row in rows), default=0)
        padded = np.full((len(rows), width), PAD_ID, np.int64)
        for index, row in enumerate(rows):
            padded[index, : len(row)] = row
        return padded

    def length_caps(self, source_ids: np.ndarray) -> np.ndarray:
        """`search.decode_length_caps`: min(max_decode_length, floor(factor × n) + offset)."""
        lengths = (source_ids != PAD_ID).sum(axis=1).astype(np.float64)
        scaled = np.floor(self.spec.decode_length_factor * lengths).astype(np.int32)
        return np.minimum(self.spec.max_decode_length, scaled + self.spec.decode_length_offset)

    # --- The model, as a step function for the searches ---

    def encode(self, source_ids: np.ndarray) -> list[np.ndarray]:
        outputs = self.encoder(**{SOURCE_IDS: source_ids})
        return [outputs[name] for name in self.spec.state_names]

    def step(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        inputs = dict(zip(self.spec.state_names, state))
        outputs = self.decoder_step(**{TOKEN_IDS: token_ids.astype(np.int64)}, **inputs)
        return outputs[LOG_PROBS], [outputs[name] for name in self.spec.state_names]

    def search(self, source_ids: np.ndarray, beam_width: int) -> SearchResult:
        caps = self.length_caps(source_ids)
        max_length = self.spec.max_decode_length
        state = self.encode(source_ids)
        if beam_width == 1:
            return greedy_search(self.step, state, caps, max_length)
        return beam_search(
            self.step, state, caps, max_length, beam_width, self.spec.length_alpha
        )

    # --- Sentences in, translations out ---

    def translate(
        self, sentences: Iterable[str | bytes], beam_width: int = 1, batch_size: int = 64
    ) -> list[str]:
        """Translate sentences, `batch_size` at a time.

        Args:
          sentences: `str` (or UTF-8 `bytes`, repaired like the SavedModel repairs them).
          beam_width: 1 is greedy decoding; more is beam search with that many hypotheses.
          batch_size: sentences encoded and decoded together.
        Returns:
          One translation per sentence, "" for a sentence with no token.
        """
        check_beam_width(beam_width)
        token_ids = self.token_ids(sentences)
        too_long = sum(len(ids) > self.spec.max_source_length for ids in token_ids)
        if too_long:
            logger.warning(
                "%d sentence(s) longer than %d tokens were truncated before translating.",
                too_long, self.spec.max_source_length,
            )
        translations = [""] * len(token_ids)
        # A sentence without tokens translates to "", as in the SavedModel: it is not decoded.
        worth_decoding = [index for index, ids in enumerate(token_ids) if ids]
        for start in range(0, len(worth_decoding), batch_size):
            batch = worth_decoding[start : start + batch_size]
            result = self.search(self.source_ids([token_ids[i] for i in batch]), beam_width)
            for index, row in zip(batch, result.token_ids):
                translations[index] = self.target_tokenizer.detokenize(row)
        return translations
