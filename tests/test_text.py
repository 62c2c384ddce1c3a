"""Text: the one standardization, vocabularies and the vectorizer."""

import json

import keras
import tensorflow as tf

from seq2seq_keras import text as text_lib


def standardized(*sentences: str) -> list[str]:
    return [text.decode("utf-8") for text in text_lib.standardize(tf.constant(sentences)).numpy()]


# --- standardization -------------------------------------------------------------------------


def test_standardize_keeps_spanish_and_splits_punctuation():
    assert standardized("¿Cómo estás, Tom?", "¡ÑANDÚ!", "Él está aquí.") == [
        "¿ cómo estás , tom ?",
        "¡ ñandú !",
        "él está aquí .",
    ]


def test_standardize_normalizes_unicode_forms_and_symbols():
    decomposed = "come\u0301"  # "e" + combining acute accent
    assert standardized(decomposed, "Ｆｕｌｌ ﬁne", "Don’t  go — now…", "😀") == [
        "comé",
        "full fine",
        "don't go now . . .",
        "",
    ]


def test_standardize_survives_vectorizer_serialization():
    vectorizer = text_lib.make_vectorizer(["", "[UNK]", "¿", "qué", "?"])
    # The round trip a saved model goes through: serialize to a JSON-able dict and back.
    serialized = keras.saving.serialize_keras_object(vectorizer)
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    sentence = tf.constant(["¿Qué?"])
    assert vectorizer(sentence).to_list() == clone(sentence).to_list() == [[2, 3, 4]]


# --- vocabularies and the vectorizer ---------------------------------------------------------


def test_vocabulary_reserves_markers_and_unknown_words_map_to_unk():
    vocabulary = text_lib.build_vocabulary(
        ["hola hola amigo", "hola"], 10, (text_lib.START_TOKEN, text_lib.END_TOKEN)
    )
    assert vocabulary[:5] == ["", "[UNK]", "[START]", "[END]", "hola"]
    assert text_lib.make_vectorizer(vocabulary)(tf.constant(["hola zorro"])).to_list() == [[4, 1]]


# --- token ids back to text ------------------------------------------------------------------


def test_detokenize_writes_spanish_punctuation_and_capitalizes():
    vocabulary = tf.constant(["", "[UNK]", "[START]", "[END]", "¿", "qué", "hora", "es", "?", "¡", "él", "!", ".", "y"])
    ids = tf.constant(
        [
            [4, 5, 6, 7, 8, 3, 0, 0],
            [9, 10, 11, 3, 13, 13, 13, 13],  # everything after [END] is dropped
            [2, 5, 12, 0, 0, 0, 0, 0],  # no [END]: stops at the padding, drops [START]
            [3, 5, 0, 0, 0, 0, 0, 0],
        ]
    )
    texts = [text.decode("utf-8") for text in text_lib.detokenize(ids, vocabulary).numpy()]
    assert texts == ["¿Qué hora es?", "¡Él!", "Qué.", ""]
