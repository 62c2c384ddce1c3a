"""Tokens: the special tokens, the characters the tokenizers treat specially, vocabulary files.

Pure Python, no TensorFlow: the graph tokenizers (`text`, `tokenizers`) and the LiteRT runtime
(`seq2seq_keras.lite`, which must run without TensorFlow) read the same definitions here, so a
token id means the same thing on both sides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

# Special tokens. TextVectorization always puts the padding token "" at id 0 and "[UNK]" at
# id 1; we put the decoder's start and end markers right after them in the target vocabulary.
PAD_TOKEN, UNK_TOKEN, START_TOKEN, END_TOKEN = "", "[UNK]", "[START]", "[END]"
PAD_ID, UNK_ID, START_ID, END_ID = 0, 1, 2, 3

# Punctuation that becomes a token of its own; the rest of the punctuation is dropped.
PUNCTUATION = ".?!,¿¡;:"
# Marks written without a space before them ("hola ." → "hola.") or after them ("¿ qué" → "¿qué").
CLOSING_PUNCTUATION = ".?!,;:"
OPENING_PUNCTUATION = "¿¡"
assert set(CLOSING_PUNCTUATION + OPENING_PUNCTUATION) == set(PUNCTUATION)
# Apostrophe look-alikes, all written as "'".
APOSTROPHES = "’‘`´"
# U+FFFD REPLACEMENT CHARACTER stands for each invalid UTF-8 byte; standardization drops it.
REPLACEMENT_CHARACTER = 0xFFFD

# WordPiece marks a piece that continues a word ("Z ##b ##ign") with this prefix.
SUFFIX_INDICATOR = "##"
# A longer word (in UTF-8 bytes) is one `[UNK]`, as in tensorflow-text's FastWordpieceTokenizer.
MAX_BYTES_PER_WORD = 100
# Prefixed to the markers in the tokenizer's vocabulary so that no text matches them: a control
# character, which standardization turns into a space (not NUL, which ends a C string).
UNMATCHABLE_PREFIX = "\x01"


def matchable_vocabulary(vocabulary: list[str]) -> list[str]:
    """The vocabulary as the WordPiece matcher sees it: markers made unmatchable.

    A user who types "[END]" or "[START]" must get words, not the decoder's markers, and the
    padding token "" is not a piece. Each marker keeps its id but becomes a string that
    standardization can never produce (control characters are turned into spaces).
    """
    markers = {PAD_TOKEN, START_TOKEN, END_TOKEN}
    return [UNMATCHABLE_PREFIX + piece if piece in markers else piece for piece in vocabulary]


def has_markers(vocabulary: list[str]) -> bool:
    """Whether `vocabulary` holds the decoder's markers (a target vocabulary does)."""
    return vocabulary[START_ID : END_ID + 1] == [START_TOKEN, END_TOKEN]


def alphabet(vocabulary: list[str]) -> list[str]:
    """The characters a WordPiece vocabulary can spell: its one-character pieces, either form.

    The WordPiece learner adds every character of the training words (both forms), so any word
    written in this alphabet is tokenized into pieces, never into `[UNK]`.
    """
    characters = {piece.removeprefix(SUFFIX_INDICATOR) for piece in vocabulary}
    return sorted(character for character in characters if len(character) == 1)


# --- Vocabulary files ----------------------------------------------------------------------------


def write_vocabulary(path: Path, vocabulary: list[str]) -> None:
    """One token per line. Tokens never hold whitespace (both tokenizers split on it)."""
    path.write_text("\n".join(vocabulary) + "\n", encoding="utf-8")


def read_vocabulary(path: Path) -> list[str]:
    """Read a vocabulary written by `write_vocabulary`; the first line is the empty pad token."""
    return path.read_text(encoding="utf-8").split("\n")[:-1]


# --- Input text ----------------------------------------------------------------------------------


def as_utf8_list(sentences: Iterable[str | bytes]) -> list[bytes]:
    """`sentences` as UTF-8 bytes, or a `TypeError` that names the first item that is not text.

    A `str` holding lone surrogates (what Python makes of undecodable bytes on standard input
    or in `sys.argv`) gets its original bytes back, so they are repaired like any invalid UTF-8.
    """
    if isinstance(sentences, (str, bytes)):
        raise TypeError("translate() takes a list of sentences, not one string: use [sentence].")
    encoded = []
    for position, sentence in enumerate(sentences):
        if isinstance(sentence, str):
            sentence = utf8_bytes(sentence)
        elif not isinstance(sentence, bytes):
            raise TypeError(
                f"sentence {position} is a {type(sentence).__name__}, not a str: "
                "translate() takes text only."
            )
        encoded.append(sentence)
    return encoded


def utf8_bytes(text: str) -> bytes:
    """`text` as UTF-8; lone surrogates become the invalid bytes they stand for."""
    try:
        return text.encode("utf-8", errors="surrogateescape")  # undecodable input bytes
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="surrogatepass")  # other lone surrogates
