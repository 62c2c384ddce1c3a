"""Data: sentence pairs → fixed split → token ids, with every skipped or dropped pair counted.

Read top to bottom, this module follows the data:

1. `resolve_data_file` finds the pairs file: `--data PATH`, `$SEQ2SEQ_DATA`, or the official
   spa-eng download (cached by `keras.utils.get_file`).
2. `read_pairs` reads `source<TAB>target` lines from a `.zip`, `.txt` or `.tsv`, skipping and
   counting malformed lines instead of failing on them.
3. `split_pairs` makes the fixed train/validation/test split, grouped by source sentence.
4. `vectorize_pairs` turns pairs into token ids with `text.make_vectorizer` (the one
   standardization and vocabulary), the targets wrapped in `[START] … [END]`.
5. `prepare_data` does all of it for a training run, with vocabularies built on the training
   split only, and `describe_data` says what was read, skipped and dropped.

`pipeline.make_dataset` then turns the token ids into `tf.data` batches.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import zipfile
import zlib
from pathlib import Path

import keras
import tensorflow as tf

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.text import END_ID, START_ID, build_vocabularies, make_vectorizer

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

    A pair whose source or target standardizes to nothing (a line of only symbols) is dropped
    as `empty_after_standardize`; one longer than the configured maximum as `too_long`,
    because truncating it would teach the model a translation that stops mid-sentence.
    """
    source_ids = make_vectorizer(source_vocabulary)(tf.constant([source for source, _ in pairs]))
    target_ids = make_vectorizer(target_vocabulary)(tf.constant([target for _, target in pairs]))
    source_lengths = source_ids.row_lengths()
    target_lengths = target_ids.row_lengths()

    empty = (source_lengths == 0) | (target_lengths == 0)
    too_long = (source_lengths > config.max_source_length) | (
        target_lengths + 2 > config.max_target_length
    )
    keep = ~empty & ~too_long
    dropped = collections.Counter(
        {
            "empty_after_standardize": int(tf.reduce_sum(tf.cast(empty, tf.int32))),
            "too_long": int(tf.reduce_sum(tf.cast(too_long & ~empty, tf.int32))),
        }
    )
    source_ids = tf.ragged.boolean_mask(source_ids, keep)
    target_ids = tf.ragged.boolean_mask(target_ids, keep)
    target_ids = add_markers(target_ids)
    return TokenizedPairs(source_ids, target_ids, +dropped)


def add_markers(target_ids: tf.RaggedTensor) -> tf.RaggedTensor:
    """Wrap every row of target ids in `[START]` … `[END]`."""
    rows = target_ids.nrows()
    start = tf.fill([rows, 1], tf.constant(START_ID, target_ids.dtype))
    end = tf.fill([rows, 1], tf.constant(END_ID, target_ids.dtype))
    return tf.concat([start, target_ids, end], axis=1)


# --- 5. Everything a training run needs ----------------------------------------------------


@dataclasses.dataclass
class PreparedData:
    """The split pairs, the vocabularies built on the training split, and their token ids."""

    splits: Splits
    skipped_lines: collections.Counter
    source_vocabulary: list[str]
    target_vocabulary: list[str]
    train_tokens: TokenizedPairs
    validation_tokens: TokenizedPairs


def prepare_data(config: Seq2SeqConfig, data_file: str | os.PathLike) -> PreparedData:
    """Read, split and vectorize the pairs; vocabularies come from the training split only."""
    pairs_file = read_pairs(data_file, max_pairs=config.max_pairs, reverse=config.reverse)
    splits = split_pairs(pairs_file.pairs)
    if not splits.train or not splits.validation:
        raise DataError(
            f"the split left {len(splits.train)} training and {len(splits.validation)} validation "
            f"pairs from {len(pairs_file.pairs)}: use a larger file or a larger --max-pairs."
        )
    source_vocabulary, target_vocabulary = build_vocabularies(splits.train, config)
    return PreparedData(
        splits=splits,
        skipped_lines=pairs_file.skipped,
        source_vocabulary=source_vocabulary,
        target_vocabulary=target_vocabulary,
        train_tokens=vectorize_pairs(splits.train, source_vocabulary, target_vocabulary, config),
        validation_tokens=vectorize_pairs(
            splits.validation, source_vocabulary, target_vocabulary, config
        ),
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
        f"{describe_counts(prepared.train_tokens.dropped)}; vocabularies: "
        f"{len(prepared.source_vocabulary)} source / "
        f"{len(prepared.target_vocabulary)} target tokens"
    )
