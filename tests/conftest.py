"""Shared fixtures: the local spa-eng copy, tiny configs and tiny trained models.

Tests never touch the network: the data file comes from `$SEQ2SEQ_DATA` or the copy in
`../shared/data/spa-eng.zip` beside the project.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from filelock import FileLock  # noqa: E402

from seq2seq_keras import data as data_lib  # noqa: E402
from seq2seq_keras import pipeline, search  # noqa: E402
from seq2seq_keras import text as text_lib  # noqa: E402
from seq2seq_keras import tokenizers  # noqa: E402
from seq2seq_keras import train as train_lib  # noqa: E402
from seq2seq_keras.config import Seq2SeqConfig  # noqa: E402
from seq2seq_keras.model import build_training_model  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data" / "spa-eng.zip"

# Twenty short pairs a tiny model can learn by heart, with accents, ñ, ¿ and ¡.
TINY_PAIRS = [
    ("Thank you.", "Gracias."),
    ("How are you?", "¿Cómo estás?"),
    ("Good morning.", "Buenos días."),
    ("I love you.", "Te quiero."),
    ("Help!", "¡Ayuda!"),
    ("The boy is here.", "El niño está aquí."),
    ("It is cold.", "Hace frío."),
    ("See you tomorrow.", "Hasta mañana."),
    ("Where is the bathroom?", "¿Dónde está el baño?"),
    ("I am hungry.", "Tengo hambre."),
    ("What time is it?", "¿Qué hora es?"),
    ("Good night.", "Buenas noches."),
    ("Come here.", "Ven aquí."),
    ("I speak Spanish.", "Hablo español."),
    ("The house is big.", "La casa es grande."),
    ("Happy birthday!", "¡Feliz cumpleaños!"),
    ("I have a dog.", "Tengo un perro."),
    ("We are friends.", "Somos amigos."),
    ("Who are you?", "¿Quién eres?"),
    ("The cat sleeps.", "El gato duerme."),
]


# A model small enough to train an epoch of 1,500 pairs in about a second.
SMALL = Seq2SeqConfig(
    tokenizer="word",
    max_pairs=1500, source_vocab_size=200, target_vocab_size=200, embedding_dim=16, units=32,
    batch_size=32, epochs=2, max_train_seconds=0, precision="float32", seed=11,
)


@pytest.fixture(scope="session")
def spa_eng_path() -> Path:
    path = Path(os.environ.get(data_lib.DATA_ENV_VAR, SHARED_DATA))
    if not path.is_file():
        pytest.fail(f"the local spa-eng copy is missing at {path}: set {data_lib.DATA_ENV_VAR}.")
    return path


# The default config, with WordPiece named (the vocabularies the real data gets).
WORDPIECE = Seq2SeqConfig(tokenizer="wordpiece")


@pytest.fixture(scope="session")
def splits(spa_eng_path) -> data_lib.Splits:
    """The spa-eng pairs, split as training splits them."""
    return data_lib.split_pairs(data_lib.read_pairs(spa_eng_path).pairs)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, worker_id) -> Path:
    """A folder all test processes of this run share: pytest-xdist gives each worker its own
    base temporary directory, under one parent made for the run."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def built_once(run_dir: Path, name: str, build: Callable[[Path], None]) -> Path:
    """`run_dir/name`, made by `build(folder)` in whichever test process asks for it first;
    the others wait for it and read what it wrote. Expensive session fixtures (a learned
    vocabulary, a model trained for 120 epochs) are then computed once a run, not once a
    worker: they are deterministic, so each worker would compute the same thing."""
    path = run_dir / name
    with FileLock(f"{path}.lock"):
        if not path.exists():
            staging = run_dir / f"{name}.partial"
            shutil.rmtree(staging, ignore_errors=True)  # a build that failed earlier in the run
            staging.mkdir()
            build(staging)
            staging.rename(path)
    return path


def result_line(stdout: str) -> dict:
    """The JSON a test's child process printed on its last `RESULT ` line."""
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def write_vocabularies(folder: Path, source_vocabulary, target_vocabulary) -> None:
    (folder / "vocabularies.json").write_text(
        json.dumps([source_vocabulary, target_vocabulary]), encoding="utf-8"
    )


def read_vocabularies(folder: Path) -> tuple[list[str], list[str]]:
    source_vocabulary, target_vocabulary = json.loads(
        (folder / "vocabularies.json").read_text(encoding="utf-8")
    )
    return source_vocabulary, target_vocabulary


# The training pairs the tokenizer tests learn WordPiece vocabularies from: the first sixth of
# the training split, a real corpus (6,203 English and 8,000 Spanish entries) learned in a
# quarter of the whole split's time. The tests then tokenize every sentence of the data with
# them, so words and characters this part never saw are exercised too.
LEARNED_PAIRS = 20_000


@pytest.fixture(scope="session")
def learned_pairs(splits) -> list[tuple[str, str]]:
    return splits.train[:LEARNED_PAIRS]


@pytest.fixture(scope="session")
def learned(
    learned_pairs, run_dir
) -> tuple[tokenizers.WordPieceTokenizer, tokenizers.WordPieceTokenizer]:
    """Source and target WordPiece tokenizers learned from `learned_pairs` of spa-eng."""
    folder = built_once(run_dir, "learned_wordpiece", lambda folder: write_vocabularies(
        folder, *tokenizers.build_vocabularies(learned_pairs, WORDPIECE)
    ))
    source_vocabulary, target_vocabulary = read_vocabularies(folder)
    assert source_vocabulary[:2] == ["", "[UNK]"]
    assert target_vocabulary[:4] == ["", "[UNK]", "[START]", "[END]"]
    assert len(source_vocabulary) <= WORDPIECE.source_vocab_size
    assert len(target_vocabulary) <= WORDPIECE.target_vocab_size
    return (tokenizers.WordPieceTokenizer(source_vocabulary),
            tokenizers.WordPieceTokenizer(target_vocabulary))


@pytest.fixture(scope="session")
def tiny_config() -> Seq2SeqConfig:
    return Seq2SeqConfig(
        tokenizer="word",
        source_vocab_size=64,
        target_vocab_size=64,
        embedding_dim=16,
        units=32,
        batch_size=32,
        max_source_length=12,
        max_target_length=12,
        max_decode_length=12,
        learning_rate=0.02,
        seed=7,
    )


@dataclasses.dataclass
class TinyModel:
    config: Seq2SeqConfig
    model: keras.Model
    source_vocabulary: list[str]
    target_vocabulary: list[str]
    tokens: data_lib.TokenizedPairs


def build_tiny(config: Seq2SeqConfig, pairs, epochs: int) -> TinyModel:
    """Vocabularies, token ids and a model trained `epochs` full-batch epochs on `pairs`."""
    keras.utils.set_random_seed(config.seed)
    source_vocabulary, target_vocabulary = tokenizers.build_vocabularies(pairs, config)
    tokens = data_lib.vectorize_pairs(pairs, source_vocabulary, target_vocabulary, config)
    model = build_training_model(config)
    if epochs:
        dataset = pipeline.make_dataset(tokens, config, shuffle=True).cache()
        model.fit(dataset, epochs=epochs, verbose=0)
    return TinyModel(config, model, source_vocabulary, target_vocabulary, tokens)


def tiny_built_once(
    run_dir: Path, name: str, config: Seq2SeqConfig, pairs, epochs: int
) -> TinyModel:
    """`build_tiny(config, pairs, epochs)`, trained by the first test process to ask and loaded
    by the others (see `built_once`)."""

    def train_and_save(folder: Path) -> None:
        tiny = build_tiny(config, pairs, epochs)
        tiny.model.save(folder / "model.keras")
        write_vocabularies(folder, tiny.source_vocabulary, tiny.target_vocabulary)

    folder = built_once(run_dir, name, train_and_save)
    source_vocabulary, target_vocabulary = read_vocabularies(folder)
    tokens = data_lib.vectorize_pairs(pairs, source_vocabulary, target_vocabulary, config)
    model = keras.saving.load_model(folder / "model.keras")
    return TinyModel(config, model, source_vocabulary, target_vocabulary, tokens)


@pytest.fixture(scope="session")
def overfit_model(tiny_config, run_dir) -> TinyModel:
    """A tiny model trained until it knows `TINY_PAIRS` by heart."""
    return tiny_built_once(run_dir, "overfit_model", tiny_config, TINY_PAIRS, epochs=120)


@pytest.fixture(scope="session")
def wordpiece_model(tiny_config, run_dir) -> TinyModel:
    """`overfit_model` with case-kept WordPiece tokens instead of lowercased words."""
    config = dataclasses.replace(
        tiny_config, tokenizer="wordpiece", source_vocab_size=160, target_vocab_size=200,
        max_source_length=16, max_target_length=16,
    )
    return tiny_built_once(run_dir, "wordpiece_model", config, TINY_PAIRS, epochs=120)


def small_model(config: Seq2SeqConfig = SMALL) -> keras.Model:
    """The compiled `SMALL` training model (or `config`'s), its optimizer variables built (as
    compiling builds them)."""
    keras.utils.set_random_seed(config.seed)
    return train_lib.build_model(config)


def padded(ragged: tf.RaggedTensor) -> np.ndarray:
    return ragged.to_tensor(text_lib.PAD_ID).numpy()


def real_source_ids(spa_eng_path, tiny, count: int = 300, every: int = 100) -> np.ndarray:
    """Padded ids of `count` real English sentences (every `every`-th of the first 30,000
    pairs) and the tiny pairs, in `tiny`'s word vocabulary (mostly unknown words); rows with
    no token left out."""
    pairs = data_lib.read_pairs(spa_eng_path, max_pairs=30000).pairs
    sentences = [source for source, _ in pairs[::every]][:count] + [s for s, _ in TINY_PAIRS]
    vectorizer = text_lib.make_vectorizer(tiny.source_vocabulary)
    ragged = vectorizer(tf.constant(sentences))[:, : tiny.config.max_source_length]
    return padded(tf.ragged.boolean_mask(ragged, ragged.row_lengths() > 0))


def assert_differs_only_on_near_ties(model, source_ids, actual, expected, max_share=0.1):
    """Greedy tokens `actual` may differ from `expected` only rarely, and only where the two
    part on tokens the model finds equally likely within bfloat16's rounding. Two causes: in
    a model computing in bfloat16, the graph decoder steps fewer rows than the stepwise
    decoder once sentences finish, and a row's rounding can depend on the batch's shape; and
    a decoder with bfloat16 matmul weights (`decode_precision`) rounds what float32 does not.

    Args:
      model: the training model (its teacher-forced probabilities judge each parting).
      source_ids: `(batch, source_len)` the decoded sources.
      actual, expected: `(batch, steps)` token ids (widths may differ); `expected` is the
        more exact decoder's (float32, or the stepwise one).
      max_share: the largest share of sentences allowed to differ.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    width = max(actual.shape[1], expected.shape[1])
    actual, expected = (np.pad(ids, [(0, 0), (0, width - ids.shape[1])]) for ids in (actual, expected))
    differing = np.flatnonzero((actual != expected).any(axis=1))
    assert len(differing) <= max_share * len(expected), len(differing)
    if not len(differing):
        return
    # Where a sentence first parts, the stepwise decoder's own log-probabilities of the two
    # tokens (after their common prefix) are within a few bfloat16 steps of each other.
    start = np.full((len(expected), 1), text_lib.START_ID)
    decoder_input = np.concatenate([start, expected[:, :-1]], axis=1)
    probabilities = model([source_ids[differing], decoder_input[differing]]).numpy()
    for row, sentence in enumerate(differing):
        step = np.flatnonzero(actual[sentence] != expected[sentence])[0]
        chosen, other = expected[sentence, step], actual[sentence, step]
        gap = np.log(probabilities[row, step, chosen]) - np.log(probabilities[row, step, other])
        assert abs(gap) < 0.05, (sentence, step, gap)


def greedy_and_beam_one(decoder, source_ids) -> tuple:
    """Greedy search and beam search with one beam (no length penalty, no greedy fallback)
    from the same step and state: their tokens must be the same."""
    state = decoder.encode(source_ids)
    batch_size, max_length = len(source_ids), decoder.max_length
    greedy = search.greedy_search(decoder.step, state, batch_size, max_length)
    beam_one = search.beam_search(decoder.step, state, batch_size, max_length, beam_width=1,
                                  alpha=0.0, include_greedy=False)
    return greedy, beam_one
