"""Data: reading pairs files, the fixed split, token ids, and the data of a training run."""

import collections
import zipfile

import pytest
import tensorflow as tf

from seq2seq_keras import data as data_lib
from seq2seq_keras import text as text_lib
from seq2seq_keras import tokenizers
from seq2seq_keras.config import Seq2SeqConfig

from conftest import SMALL


# --- reading files ---------------------------------------------------------------------------


def test_malformed_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(
        b"Hello.\tHola.\n"
        b"no tab on this line\n"
        b"\tonly a target\n"
        b"only a source\t  \n"
        b"bad \xff\xfe bytes\tmalos\n"
        b"\n"
        b"Thanks.\tGracias.\tCC-BY 2.0 (France) Attribution: tatoeba.org\r\n"
    )
    pairs_file = data_lib.read_pairs(path)
    assert pairs_file.pairs == [("Hello.", "Hola."), ("Thanks.", "Gracias.")]
    assert pairs_file.skipped == collections.Counter(
        {"no_tab": 1, "empty_side": 2, "bad_utf8": 1, "blank": 1}
    )
    assert pairs_file.num_skipped == 5


def test_reverse_swaps_columns_and_max_pairs_keeps_the_first(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("a\tA\nb\tB\nc\tC\n", encoding="utf-8")
    assert data_lib.read_pairs(path, max_pairs=2, reverse=True).pairs == [("A", "a"), ("B", "b")]


def test_zip_member_is_found_and_about_file_ignored(tmp_path):
    path = tmp_path / "pairs.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("spa-eng/_about.txt", "not\tpairs\n" * 50)
        archive.writestr("spa-eng/spa.txt", "Hi.\tHola.\n")
    assert data_lib.read_pairs(path).pairs == [("Hi.", "Hola.")]


def test_a_file_without_pairs_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("nothing here\n", encoding="utf-8")
    with pytest.raises(data_lib.DataError, match="no 'source<TAB>target' lines"):
        data_lib.read_pairs(path)


def test_missing_file_says_how_to_supply_one(tmp_path, monkeypatch):
    monkeypatch.delenv(data_lib.DATA_ENV_VAR, raising=False)
    with pytest.raises(data_lib.DataError, match="--data PATH or the SEQ2SEQ_DATA"):
        data_lib.resolve_data_file(tmp_path / "missing.zip")


def test_environment_variable_points_at_the_file(spa_eng_path, monkeypatch):
    monkeypatch.setenv(data_lib.DATA_ENV_VAR, str(spa_eng_path))
    assert data_lib.resolve_data_file() == spa_eng_path


def test_download_goes_through_keras_get_file_and_caches(spa_eng_path, tmp_path, monkeypatch):
    # The real download code, pointed at the local copy through a file:// URL (no network).
    monkeypatch.delenv(data_lib.DATA_ENV_VAR, raising=False)
    cache = tmp_path / "cache"
    path = data_lib.resolve_data_file(url=spa_eng_path.resolve().as_uri(), cache_dir=cache)
    assert path == cache / "datasets" / "spa-eng.zip"
    assert path.stat().st_size == spa_eng_path.stat().st_size
    assert len(data_lib.read_pairs(path).pairs) == 118964
    # Cached: a second call with an unreachable URL still finds the file.
    again = data_lib.resolve_data_file(url=(tmp_path / "gone.zip").as_uri(), cache_dir=cache)
    assert again == path


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(data_lib.DATA_ENV_VAR, raising=False)
    with pytest.raises(data_lib.DataError, match="could not download.*--data PATH"):
        data_lib.resolve_data_file(url=(tmp_path / "nowhere.zip").as_uri(), cache_dir=tmp_path)


# --- the fixed split -------------------------------------------------------------------------


def test_spa_eng_split_has_the_published_counts_and_is_grouped(spa_eng_path):
    pairs = data_lib.read_pairs(spa_eng_path).pairs
    splits = data_lib.split_pairs(pairs)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (114212, 2394, 2358)
    assert len(data_lib.references_by_source(splits.test)) == 2065
    sources = [{s for s, _ in part} for part in (splits.train, splits.validation, splits.test)]
    assert not (sources[0] & sources[1]) and not (sources[0] & sources[2])
    assert not (sources[1] & sources[2])
    again = data_lib.split_pairs(data_lib.read_pairs(spa_eng_path).pairs)
    assert again.test == splits.test and again.validation == splits.validation


def test_references_by_source_collects_every_translation():
    pairs = [("Go.", "Ve."), ("Hi.", "Hola."), ("Go.", "Vete.")]
    assert data_lib.references_by_source(pairs) == {"Go.": ["Ve.", "Vete."], "Hi.": ["Hola."]}


# --- token ids -------------------------------------------------------------------------------


def test_vectorize_pairs_wraps_targets_and_drops_empty_and_too_long():
    config = Seq2SeqConfig(
        tokenizer="word", max_source_length=4, max_target_length=5, source_vocab_size=20,
        target_vocab_size=20,
    )
    pairs = [("a b", "x y"), ("😀", "x"), ("a", "x y z w"), ("a b c d e", "x")]
    tokens = data_lib.vectorize_pairs(pairs, *tokenizers.build_vocabularies(pairs, config), config)
    assert len(tokens) == 1
    assert tokens.dropped == collections.Counter({"empty_after_standardize": 1, "too_long": 2})
    target = tokens.target_ids.to_list()[0]
    assert target[0] == text_lib.START_ID and target[-1] == text_lib.END_ID and len(target) == 4


@pytest.mark.parametrize("kind", ["word", "wordpiece"])
def test_text_pairs_keep_the_pairs_vectorize_pairs_keeps_with_their_lengths(kind):
    config = Seq2SeqConfig(
        tokenizer=kind, max_source_length=4, max_target_length=5, source_vocab_size=40,
        target_vocab_size=40,
    )
    pairs = [("a b", "x y"), ("😀", "x"), ("a", "x y z w"), ("a b c d e", "x"), ("c", "x y z")]
    # Learned without the emoji, which both tokenizers then drop: that pair becomes empty.
    vocabularies = tokenizers.build_vocabularies(pairs[:1] + pairs[2:], config)
    tokens = data_lib.vectorize_pairs(pairs, *vocabularies, config)
    kept = data_lib.text_pairs(
        pairs, *(tokenizers.make_tokenizer(kind, vocabulary) for vocabulary in vocabularies),
        config,
    )
    assert kept.dropped == tokens.dropped == collections.Counter(
        {"empty_after_standardize": 1, "too_long": 2}
    )
    assert [text.decode() for text in kept.sources.numpy()] == ["a b", "c"]
    assert [text.decode() for text in kept.targets.numpy()] == ["x y", "x y z"]
    assert kept.source_lengths.tolist() == tokens.source_ids.row_lengths().numpy().tolist()
    assert kept.target_lengths.tolist() == tokens.target_ids.row_lengths().numpy().tolist()
    source_ids, target_ids = kept.token_ids(tf.constant([1, 0]))
    assert source_ids.to_list() == tokens.source_ids.to_list()[::-1]
    assert target_ids.to_list() == tokens.target_ids.to_list()[::-1]


# --- the data of a training run --------------------------------------------------------------


def test_prepared_data_has_vocabularies_of_the_training_split_only(spa_eng_path):
    prepared = data_lib.prepare_data(SMALL, spa_eng_path)
    splits = prepared.splits
    assert len(splits.train) + len(splits.validation) + len(splits.test) == SMALL.max_pairs
    assert prepared.source_vocabulary == tokenizers.build_vocabularies(splits.train, SMALL)[0]
    assert len(prepared.target_vocabulary) == SMALL.target_vocab_size
    assert len(prepared.validation_pairs) == len(splits.validation)  # short pairs: none dropped
    assert data_lib.describe_data(prepared).startswith(
        f"pairs: {len(splits.train)} train / {len(splits.validation)} validation / "
        f"{len(splits.test)} test; malformed lines skipped: none;"
    )


def test_too_few_pairs_for_a_validation_split_is_a_clear_error(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("Hello.\tHola.\n", encoding="utf-8")
    with pytest.raises(data_lib.DataError, match="larger --max-pairs"):
        data_lib.prepare_data(SMALL, path)


def test_describe_counts_lists_reasons_alphabetically_or_says_none():
    counts = collections.Counter({"too_long": 2, "empty_after_standardize": 1})
    assert data_lib.describe_counts(counts) == "empty_after_standardize=1, too_long=2"
    assert data_lib.describe_counts(collections.Counter()) == "none"
