"""Tokenizers: WordPiece round trips, never `[UNK]` for known characters, markers kept apart."""

import random

import pytest
import tensorflow as tf

from seq2seq_keras import tokenizers
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.text import END_ID, PAD_ID, START_ID, UNK_ID

from conftest import TINY_PAIRS



def texts(tensor: tf.Tensor) -> list[str]:
    return [text.decode("utf-8") for text in tensor.numpy()]


@pytest.mark.parametrize("side", [0, 1], ids=["english", "spanish"])
def test_round_trip_of_the_validation_split_is_the_standardized_text(learned, splits, side):
    tokenizer = learned[side]
    sentences = tf.constant([pair[side] for pair in splits.validation])
    token_ids = tokenizer.tokenize(sentences)
    assert int(tf.reduce_sum(tf.cast(token_ids.flat_values == UNK_ID, tf.int32))) == 0
    # `detokenize` takes padded decoder output: a row ends at [END] or at its padding.
    assert texts(tokenizer.detokenize(token_ids.to_tensor(PAD_ID))) == texts(
        tokenizer.standardize(sentences)
    )


def test_the_standardized_text_keeps_case_accents_and_spanish_punctuation(learned):
    _, spanish = learned
    sentence = "¿Dónde   está el niño?\t\"Sí\", dijo Tomás.\u200b"
    assert texts(spanish.standardize(tf.constant([sentence]))) == [
        '¿Dónde está el niño? "Sí", dijo Tomás.'
    ]


def test_no_unk_for_any_text_made_of_characters_seen_in_training(learned, learned_pairs):
    english, _ = learned
    alphabet = sorted({character for source, _ in learned_pairs for character in source} - {" "})
    generator = random.Random(5)
    words = ["".join(generator.choices(alphabet, k=generator.randint(1, 12))) for _ in range(3000)]
    sentences = [" ".join(words[start : start + 10]) for start in range(0, len(words), 10)]
    token_ids = english.tokenize(tf.constant(sentences))
    assert int(tf.reduce_sum(tf.cast(token_ids.flat_values == UNK_ID, tf.int32))) == 0


def test_a_made_up_name_reaches_the_model_as_pieces(learned):
    english, _ = learned
    token_ids = english.tokenize(tf.constant(["Zbigniew lives in Gdańsk."]))
    pieces = texts(english.pieces(token_ids.flat_values))
    assert UNK_ID not in token_ids.flat_values.numpy()
    assert "".join(piece.removeprefix("##") for piece in pieces) == "ZbigniewlivesinGdansk."
    assert len(pieces) > 4  # the unknown name is spelled from several pieces


def test_unseen_characters_fold_to_their_base_letter_or_are_dropped(learned):
    english, _ = learned
    assert "ń" not in english.known_characters and "n" in english.known_characters
    assert texts(english.standardize(tf.constant(["Gdańsk 😀 x\ufffdy 😀"]))) == ["Gdansk xy"]


def test_typed_markers_are_words_not_the_decoders_markers(learned):
    _, spanish = learned
    token_ids = spanish.tokenize(tf.constant(["[START] [END] hola"])).flat_values.numpy()
    assert not {START_ID, END_ID, PAD_ID} & set(token_ids)


def test_detokenize_stops_at_end_and_never_writes_markers_or_joiners(learned):
    _, spanish = learned
    ids = spanish.tokenize(tf.constant(["¿Dónde está Gdańsk?", '"Sí", dijo.'])).to_tensor(PAD_ID)
    assert texts(spanish.detokenize(ids)) == ["¿Dónde está Gdansk?", '"Sí", dijo.']
    suffix = spanish.tokenize(tf.constant(["Gdańsk"])).flat_values.numpy()[1]  # a "##" piece
    decoded = tf.constant([[START_ID, UNK_ID, suffix, END_ID, 7, 8]], tf.int64)
    (text,) = texts(spanish.detokenize(decoded))
    assert "##" not in text and "[" not in text and text == texts(spanish.pieces([suffix]))[0][2:]


def test_the_word_tokenizer_is_the_vectorizer_it_always_was():
    vocabulary = ["", "[UNK]", "[START]", "[END]", "hola", "amigo", "."]
    word = tokenizers.make_tokenizer("word", vocabulary)
    assert word.tokenize(tf.constant(["Hola amigo zorro."])).to_list() == [[4, 5, 1, 6]]
    assert texts(word.detokenize(tf.constant([[2, 4, 5, 6, 3, 4]], tf.int64))) == ["Hola amigo."]


def test_a_learned_vocabulary_keeps_every_character_within_its_budget(monkeypatch):
    sentences = [target for _, target in TINY_PAIRS]
    markers = ("[START]", "[END]")
    full = tokenizers.learn_wordpiece_vocabulary(sentences, 1000, reserved=markers)
    characters = {character for sentence in sentences for character in sentence} - {" "}
    both_forms = characters | {"##" + character for character in characters}
    assert both_forms <= set(full)
    # On a corpus repeated ten times the learner's count threshold cannot go below 10 and it
    # overshoots the budget; what is cut must be the least frequent longer pieces only.
    extra = [f"piece{index}" for index in range(50)]
    monkeypatch.setattr(tokenizers.learner, "learn", lambda *args, **kwargs: full + extra)
    for budget in (len(full) + 10, len(full) - 10):
        trimmed = tokenizers.learn_wordpiece_vocabulary(sentences, budget, reserved=markers)
        assert len(trimmed) == budget and trimmed[:4] == ["", "[UNK]", *markers]
        assert both_forms <= set(trimmed)
        assert set(trimmed) <= set(full + extra[:10])
    spelled = tokenizers.WordPieceTokenizer(trimmed).tokenize(tf.constant(sentences))
    assert UNK_ID not in spelled.flat_values.numpy()
    with pytest.raises(tokenizers.VocabularyError, match="vocabulary size 40"):
        tokenizers.learn_wordpiece_vocabulary(sentences, 40)


def test_a_shared_vocabulary_is_learned_from_both_languages_and_spells_both():
    config = Seq2SeqConfig(target_vocab_size=400, shared_vocabulary=True)
    source_vocabulary, target_vocabulary = tokenizers.build_vocabularies(TINY_PAIRS, config)
    assert source_vocabulary == target_vocabulary
    assert target_vocabulary[:4] == ["", "[UNK]", "[START]", "[END]"]
    assert len(target_vocabulary) <= config.target_vocab_size == config.source_vocab_size
    shared = tokenizers.WordPieceTokenizer(target_vocabulary)
    for side in (0, 1):
        sentences = [pair[side] for pair in TINY_PAIRS]
        spelled = shared.tokenize(tf.constant(sentences))
        assert UNK_ID not in spelled.flat_values.numpy()
        assert texts(shared.detokenize(spelled.to_tensor())) == texts(
            shared.standardize(tf.constant(sentences)))
    # A name written the same way in both languages gets the same ids on both sides.
    english, spanish = ("Tom is here.", "Tom está aquí.")
    assert shared.tokenize(tf.constant([english]))[0, 0] == shared.tokenize(tf.constant([spanish]))[0, 0]
