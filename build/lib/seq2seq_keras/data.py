"""Data: sentence pairs → fixed split → token ids, with every skipped or dropped pair counted.

Read top to bottom, this module follows the data:

1. `resolve_data_file` finds the pairs file: `--data PATH`, `$SEQ2SEQ_DATA`, or the official
   spa-eng download (cached by `keras.utils.get_file`).
2. `read_pairs` reads `source<TAB>target` lines from a `.zip`, `.txt` or `.tsv`, skipping and
   counting malformed lines instead of failing on them.
3. `split_pairs` makes the fixed train/validation/test split, grouped by source sentence.
4. `vectorize_pairs` turns a few pairs into token ids at once with the tokenizer
   `config.tokenizer` names (`tokenizers.py`: words or WordPiece), the targets wrapped in
   `[START] … [END]`, dropping (and counting) empty and too long pairs.
5. `text_pairs` keeps the pairs of a training corpus as text instead, with their lengths in
   tokens, the same pairs dropped: `pipeline` tokenizes them inside `tf.data` as they stream.
6. `prepare_data` does all of it for a training run, with vocabularies built on the training
   split only, and `describe_data` says what was read, skipped and dropped.

`pipeline` then turns token ids (`TokenizedPairs`) or text (`TextPairs`) into `tf.data` batches.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import zipfile
import zlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.text import END_ID, START_ID
from seq2seq_keras.tokenizers import Tokenizer, build_vocabularies, make_tokenizer

# The spa-eng pairs used by the TensorFlow and Keras translation tutorials (Tatoeba via
# manythings.org/anki, CC-BY 2.0).
SPA_ENG_URL = "http://storage.googleapis.com/download.tensorflow.org/data/spa-eng.zip"
DATA_ENV_VAR = "SEQ2SEQ_DATA"

# The fixed split: a pair goes to test when crc32(source) % 100 < 2, to validation when < 4.
# Hashing the source sentence keeps every translation of one source in the same split.
SPLIT_BUCKETS = 100
TEST_BUCKETS = 2
VALIDATION_BUCKETS = 4


class DataError(Exception):
    """A problem with the user's data file: the message says what happened and how to fix it."""


# --- 1. Finding the file -------------------------------------------------------------------


def resolve_data_file(
    data: str | os.PathLike | None = None,
    url: str = SPA_ENG_URL,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Return the path of the pairs file: `data`, else `$SEQ2SEQ_DATA`, else the download.

    The download goes through `keras.utils.get_file`, which caches it (by default under
    `~/.keras/datasets`, or in `cache_dir/datasets`), so only the first run touches the network.
    """
    chosen = data or os.environ.get(DATA_ENV_VAR)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise DataError(
                f"data file {str(path)!r} does not exist. Pass a .zip, .txt or .tsv file of "
                f"'source<TAB>target' lines with --data PATH or the {DATA_ENV_VAR} variable."
            )
        return path
    if cache_dir is not None:
        # get_file falls back to /tmp/.keras when the cache directory does not exist yet.
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    try:
        return Path(
            keras.utils.get_file(
                "spa-eng.zip",
                origin=url,
                extract=False,
                cache_dir=None if cache_dir is None else str(cache_dir),
            )
        )
    except Exception as error:  # get_file raises several kinds of network and HTTP errors.
        raise DataError(
            f"could not download the spa-eng data from {url} ({error}). Download it elsewhere "
            f"and pass the file with --data PATH or the {DATA_ENV_VAR} environment variable."
        ) from None


# --- 2. Reading pairs ----------------------------------------------------------------------


@dataclasses.dataclass
class PairsFile:
    """The pairs read from a file, and how many lines were skipped, by reason."""

    pairs: list[tuple[str, str]]
    skipped: collections.Counter

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())


def read_pairs(path: str | os.PathLike, max_pairs: int = 0, reverse: bool = False) -> PairsFile:
    """Read `source<TAB>target` pairs from a `.zip`, `.txt` or `.tsv` file.

    Columns after the second are ignored (the Anki exports add an attribution column). A line
    without a tab, with an empty side, or that is not valid UTF-8 is skipped and counted under
    `no_tab`, `empty_side` or `bad_utf8`, so one bad line never costs the whole file.

    Args:
      path: the file; a `.zip` must hold one pairs file (`spa.txt` in the spa-eng archive).
      max_pairs: keep only the first N valid pairs (0 keeps all), before any split.
      reverse: swap the columns (Spanish→English on spa-eng).
    Returns:
      A `PairsFile` with `(source, target)` tuples in file order.
    """
    raw = _read_pairs_bytes(Path(path))
    pairs: list[tuple[str, str]] = []
    skipped: collections.Counter = collections.Counter()
    for line in raw.splitlines():
        pair, problem = _parse_line(line)
        if problem:
            skipped[problem] += 1
            continue
        pairs.append(pair[::-1] if reverse else pair)
        if max_pairs and len(pairs) >= max_pairs:
            break
    if not pairs:
        raise DataError(
            f"{str(path)!r} holds no 'source<TAB>target' lines (skipped: {dict(skipped)}). "
            "Each line needs a source sentence, a tab, and its translation."
        )
    return PairsFile(pairs, skipped)


def _read_pairs_bytes(path: Path) -> bytes:
    """The bytes of the pairs file, taken out of a zip archive when `path` is one."""
    try:
        if not zipfile.is_zipfile(path):
            return path.read_bytes()
        with zipfile.ZipFile(path) as archive:
            return archive.read(_pairs_member(archive, path))
    except OSError as error:
        raise DataError(f"cannot read {str(path)!r}: {error}") from None
    except zipfile.BadZipFile as error:
        raise DataError(f"{str(path)!r} is a damaged zip archive: {error}") from None


def _pairs_member(archive: zipfile.ZipFile, path: Path) -> str:
    """The archive member holding the pairs: the largest .txt/.tsv not named like `_about.txt`."""
    candidates = [
        info
        for info in archive.infolist()
        if info.filename.lower().endswith((".txt", ".tsv"))
        and not Path(info.filename).name.startswith(("_", "."))
        and "__MACOSX" not in info.filename
    ]
    if not candidates:
        raise DataError(f"{str(path)!r} contains no .txt or .tsv file of sentence pairs.")
    return max(candidates, key=lambda info: info.file_size).filename


def _parse_line(line: bytes) -> tuple[tuple[str, str] | None, str | None]:
    """Parse one line into `(source, target)`, or name the reason it is malformed."""
    try:
        text = line.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        return None, "bad_utf8"
    if not text.strip():
        return None, "blank"
    columns = text.split("\t")
    if len(columns) < 2:
        return None, "no_tab"
    source, target = columns[0].strip(), columns[1].strip()
    if not source or not target:
        return None, "empty_side"
    return (source, target), None


# --- 3. The fixed split --------------------------------------------------------------------


@dataclasses.dataclass
class Splits:
    """Train, validation and test pairs; no source sentence appears in two of them."""

    train: list[tuple[str, str]]
    validation: list[tuple[str, str]]
    test: list[tuple[str, str]]


def split_bucket(source: str) -> int:
    """The split bucket (0–99) of a source sentence: a stable hash, the same on every machine."""
    return zlib.crc32(source.encode("utf-8")) % SPLIT_BUCKETS


def split_pairs(pairs: list[tuple[str, str]]) -> Splits:
    """Split pairs by a hash of the source: fixed across runs and versions, grouped by source."""
    splits = Splits(train=[], validation=[], test=[])
    for pair in pairs:
        bucket = split_bucket(pair[0])
        if bucket < TEST_BUCKETS:
            splits.test.append(pair)
        elif bucket < VALIDATION_BUCKETS:
            splits.validation.append(pair)
        else:
            splits.train.append(pair)
    return splits


def references_by_source(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Every reference translation of each source, in file order: the multi-reference test set."""
    references: dict[str, list[str]] = {}
    for source, target in pairs:
        references.setdefault(source, []).append(target)
    return references


# --- 4. Token ids --------------------------------------------------------------------------

# Every target is wrapped in [START] … [END]: two tokens more than its text.
NUM_MARKERS = 2
# Sentences tokenized per call inside `tf.data`: large enough that a call's overhead is small,
# small enough that the ids of a whole corpus never exist at once. The batches are cut apart
# again after tokenizing, so this changes the speed only, never which pairs a batch holds.
TOKENIZE_BATCH_SIZE = 1024


def drop_masks(source_lengths, target_lengths, config: Seq2SeqConfig):
    """Boolean masks `(empty, too_long)` of the pairs to drop, from their lengths in tokens.

    A pair whose source or target standardizes to nothing (a line of only symbols) is empty; a
    pair longer than the configured maximum is too long, because truncating it would teach the
    model a translation that stops mid-sentence. The target length is without its markers. A
    pair counts under one reason only. Works on NumPy arrays and on tensors alike.
    """
    empty = (source_lengths == 0) | (target_lengths == 0)
    too_long = (source_lengths > config.max_source_length) | (
        target_lengths + NUM_MARKERS > config.max_target_length
    )
    return empty, too_long & ~empty


def dropped_counts(empty, too_long) -> collections.Counter:
    """How many pairs each `drop_masks` mask drops, reasons that drop none left out."""
    masks = {"empty_after_standardize": empty, "too_long": too_long}
    counts = {reason: int(np.count_nonzero(mask)) for reason, mask in masks.items()}
    return +collections.Counter(counts)


@dataclasses.dataclass
class TokenizedPairs:
    """Token ids of kept pairs and how many pairs were dropped, by reason."""

    source_ids: tf.RaggedTensor  # (num_pairs, None) int64
    target_ids: tf.RaggedTensor  # (num_pairs, None) int64, [START] … [END]
    dropped: collections.Counter

    def __len__(self) -> int:
        return int(self.source_ids.nrows())


def vectorize_pairs(
    pairs: list[tuple[str, str]],
    source_vocabulary: list[str],
    target_vocabulary: list[str],
    config: Seq2SeqConfig,
) -> TokenizedPairs:
    """Token ids for all pairs at once; the target is wrapped in `[START] … [END]`.

    For small inputs (notebooks, tests): the ids of every pair sit in memory together. Training
    keeps its pairs as `TextPairs` instead, which `pipeline` tokenizes batch by batch; both drop
    the same pairs (`drop_masks`).
    """
    source_tokenizer = make_tokenizer(config.tokenizer, source_vocabulary)
    target_tokenizer = make_tokenizer(config.tokenizer, target_vocabulary)
    source_ids = source_tokenizer.tokenize(tf.constant([source for source, _ in pairs], tf.string))
    target_ids = target_tokenizer.tokenize(tf.constant([target for _, target in pairs], tf.string))
    empty, too_long = drop_masks(source_ids.row_lengths(), target_ids.row_lengths(), config)
    keep = ~(empty | too_long)
    source_ids = tf.ragged.boolean_mask(source_ids, keep)
    target_ids = add_markers(tf.ragged.boolean_mask(target_ids, keep))
    return TokenizedPairs(source_ids, target_ids, dropped_counts(empty, too_long))


def add_markers(target_ids: tf.RaggedTensor) -> tf.RaggedTensor:
    """Wrap every row of target ids in `[START]` … `[END]`."""
    rows = target_ids.nrows()
    start = tf.fill([rows, 1], tf.constant(START_ID, target_ids.dtype))
    end = tf.fill([rows, 1], tf.constant(END_ID, target_ids.dtype))
    return tf.concat([start, target_ids, end], axis=1)


# --- 5. Sentence pairs kept as text, tokenized as they stream ------------------------------


@dataclasses.dataclass
class TextPairs:
    """A split's kept pairs as two string tensors, with their lengths in tokens.

    The form a training corpus is held in: its text only, under 200 bytes a pair on spa-eng.
    Token ids are made inside `tf.data` (`pipeline`), a batch at a time, every epoch, so the
    ids of the whole corpus never exist at once (vectorizing 1.1 M spa-eng pairs in one go
    takes 1.7 GB). The lengths, measured by the one tokenizing pass that found the pairs to
    drop, let `pipeline.count_batches` count an epoch without tokenizing again.
    """

    sources: tf.Tensor  # (num_pairs,) tf.string
    targets: tf.Tensor  # (num_pairs,) tf.string
    source_lengths: np.ndarray  # (num_pairs,) int64, source tokens
    target_lengths: np.ndarray  # (num_pairs,) int64, target tokens with [START] and [END]
    source_tokenizer: Tokenizer
    target_tokenizer: Tokenizer
    dropped: collections.Counter

    def __len__(self) -> int:
        return len(self.source_lengths)

    def token_ids(self, indices: tf.Tensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
        """Token ids of the pairs at `indices` `(batch,)`: ragged `(batch, None)` sources and
        targets, the targets wrapped in `[START] … [END]`. Pure TensorFlow, for `tf.data`."""
        source_ids = self.source_tokenizer.tokenize(tf.gather(self.sources, indices))
        target_ids = self.target_tokenizer.tokenize(tf.gather(self.targets, indices))
        return source_ids, add_markers(target_ids)


def text_pairs(
    pairs: list[tuple[str, str]],
    source_tokenizer: Tokenizer,
    target_tokenizer: Tokenizer,
    config: Seq2SeqConfig,
) -> TextPairs:
    """The pairs `vectorize_pairs` would keep, as text with their lengths, and the drop counts.

    One tokenizing pass, `TOKENIZE_BATCH_SIZE` sentences at a time, keeps only the lengths.
    """
    sources = tf.constant([source for source, _ in pairs], tf.string)
    targets = tf.constant([target for _, target in pairs], tf.string)
    source_lengths = token_lengths(sources, source_tokenizer)
    target_lengths = token_lengths(targets, target_tokenizer)
    empty, too_long = drop_masks(source_lengths, target_lengths, config)
    keep = ~(empty | too_long)
    return TextPairs(
        sources=tf.boolean_mask(sources, keep),
        targets=tf.boolean_mask(targets, keep),
        source_lengths=source_lengths[keep],
        target_lengths=target_lengths[keep] + NUM_MARKERS,
        source_tokenizer=source_tokenizer,
        target_tokenizer=target_tokenizer,
        dropped=dropped_counts(empty, too_long),
    )


def token_lengths(sentences: tf.Tensor, tokenizer: Tokenizer) -> np.ndarray:
    """The number of tokens of each sentence `(num_sentences,)`, tokenized inside `tf.data`."""
    batches = tf.data.Dataset.from_tensor_slices(sentences).batch(TOKENIZE_BATCH_SIZE)
    lengths = batches.map(
        lambda batch: tokenizer.tokenize(batch).row_lengths(),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return np.concatenate([np.zeros([0], np.int64), *lengths.as_numpy_iterator()])


# --- 6. Everything a training run needs ----------------------------------------------------


@dataclasses.dataclass
class PreparedData:
    """The split pairs, the vocabularies built on the training split, and the pairs that
    training and validation stream through the tokenizers."""

    splits: Splits
    skipped_lines: collections.Counter
    source_vocabulary: list[str]
    target_vocabulary: list[str]
    train_pairs: TextPairs
    validation_pairs: TextPairs


def prepare_data(config: Seq2SeqConfig, data_file: str | os.PathLike) -> PreparedData:
    """Read and split the pairs, build the vocabularies on the training split only, and keep
    the training and validation pairs as `TextPairs` (one tokenizing pass each, for lengths)."""
    pairs_file = read_pairs(data_file, max_pairs=config.max_pairs, reverse=config.reverse)
    splits = split_pairs(pairs_file.pairs)
    if not splits.train or not splits.validation:
        raise DataError(
            f"the split left {len(splits.train)} training and {len(splits.validation)} validation "
            f"pairs from {len(pairs_file.pairs)}: use a larger file or a larger --max-pairs."
        )
    source_vocabulary, target_vocabulary = build_vocabularies(splits.train, config)
    source_tokenizer = make_tokenizer(config.tokenizer, source_vocabulary)
    target_tokenizer = make_tokenizer(config.tokenizer, target_vocabulary)
    return PreparedData(
        splits=splits,
        skipped_lines=pairs_file.skipped,
        source_vocabulary=source_vocabulary,
        target_vocabulary=target_vocabulary,
        train_pairs=text_pairs(splits.train, source_tokenizer, target_tokenizer, config),
        validation_pairs=text_pairs(splits.validation, source_tokenizer, target_tokenizer, config),
    )


def describe_counts(counts: collections.Counter) -> str:
    """A short human summary of skip/drop counts, e.g. `no_tab=3, empty_side=1`."""
    return ", ".join(f"{reason}={count}" for reason, count in sorted(counts.items())) or "none"


def describe_data(prepared: PreparedData) -> str:
    """One paragraph on what was read, skipped, split and dropped: nothing is lost silently."""
    splits = prepared.splits
    return (
        f"pairs: {len(splits.train)} train / {len(splits.validation)} validation / "
        f"{len(splits.test)} test; malformed lines skipped: "
        f"{describe_counts(prepared.skipped_lines)}; training pairs dropped: "
        f"{describe_counts(prepared.train_pairs.dropped)}; vocabularies: "
        f"{len(prepared.source_vocabulary)} source / "
        f"{len(prepared.target_vocabulary)} target tokens"
    )
