"""Host-side text processing: the graph tokenizers' rules in plain Python, without TensorFlow.

The LiteRT flatbuffer holds only the encoder and the decoder step, so the runtime turns text
into ids and ids into text itself. It must do exactly what the SavedModel's graph does
(`tokenizers.WordPieceTokenizer`, `tokenizers.WordTokenizer`, `text.repair_utf8`), or the model
would read ids it was not trained on; the tests compare both on every source sentence of the
data. Each function below names the graph function it mirrors, and where the two engines
differ (RE2 regular expressions, ICU normalization) the comment says how that is matched:

- RE2's `\\s` is ASCII `[\\t\\n\\f\\r ]`, not Python's Unicode `\\s`, so whitespace is spelled out;
- `\\pL`, `\\pM`, `\\pN`, `\\p{Cc}` and `\\p{Cf}` are `unicodedata` categories;
- NFKC and NFD come from `unicodedata`, as stable across Unicode versions as ICU's.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Protocol

from seq2seq_keras.tokens import (
    APOSTROPHES,
    CLOSING_PUNCTUATION,
    END_ID,
    MAX_BYTES_PER_WORD,
    OPENING_PUNCTUATION,
    PAD_ID,
    PUNCTUATION,
    REPLACEMENT_CHARACTER,
    START_ID,
    SUFFIX_INDICATOR,
    UNK_ID,
    alphabet,
    has_markers,
    matchable_vocabulary,
)

# RE2's `\s` (what the graph's regular expressions mean by whitespace).
RE2_WHITESPACE = "\t\n\f\r "
WHITESPACE_RUNS = re.compile(f"[{RE2_WHITESPACE}]+")
APOSTROPHE_LIKE = re.compile(f"[{APOSTROPHES}]")


def repair_utf8(sentence: bytes) -> str:
    """`text.repair_utf8`, then decoded: each invalid UTF-8 byte sequence becomes U+FFFD
    (which both tokenizers then drop). Inputs come through `tokens.as_utf8_list`, as in
    `Translator`, so a `str` with lone surrogates has its original bytes back."""
    return sentence.decode("utf-8", errors="replace")


def single_spaced(text: str) -> str:
    """`tokenizers.single_spaced`: whitespace runs as one space, none at either end."""
    return WHITESPACE_RUNS.sub(" ", text).strip(RE2_WHITESPACE + "\v")


def is_category(character: str, *prefixes: str) -> bool:
    return unicodedata.category(character).startswith(prefixes)


def content_ids(token_ids: Iterable[int], markers: bool) -> list[int]:
    """`text.content_ids`: no padding, and with markers only what comes before `[END]`."""
    kept = []
    for token_id in token_ids:
        if markers and token_id == END_ID:
            break
        if token_id == PAD_ID or (markers and token_id == START_ID):
            continue
        kept.append(int(token_id))
    return kept


class HostTokenizer(Protocol):
    """What the runtime needs of a tokenizer (both below have it)."""

    def tokenize(self, sentence: str) -> list[int]: ...

    def detokenize(self, token_ids: Iterable[int]) -> str: ...


# --- WordPiece -----------------------------------------------------------------------------------


def normalize_cased(text: str) -> str:
    """`tokenizers.normalize_cased`: NFKC, "'" for its look-alikes, no U+FFFD, controls as spaces."""
    text = unicodedata.normalize("NFKC", text)
    text = APOSTROPHE_LIKE.sub("'", text)
    text = text.replace(chr(REPLACEMENT_CHARACTER), "")
    text = "".join(" " if is_category(c, "Cc", "Cf") else c for c in text)
    return single_spaced(text)


def unaccented(character: str) -> str:
    """The character's NFD without its combining marks (`\\pM`): "ń" → "n", "🙂" → "🙂"."""
    return "".join(c for c in unicodedata.normalize("NFD", character) if not is_category(c, "M"))


class WordPieceText:
    """`tokenizers.WordPieceTokenizer` on the host: text ↔ ids over the same vocabulary."""

    def __init__(self, vocabulary: list[str]):
        self.vocabulary = matchable_vocabulary(vocabulary)
        self.ids = {piece: index for index, piece in enumerate(self.vocabulary)}
        self.known = set(alphabet(vocabulary))
        self.has_markers = has_markers(vocabulary)
        self.longest_piece = max(len(piece) for piece in self.vocabulary)

    def fold_unseen_characters(self, text: str) -> str:
        """`tokenizers.fold_unseen_characters`: an unknown character becomes its known
        unaccented base, or is dropped."""
        folded = []
        for character in text:
            if character in self.known or character in RE2_WHITESPACE:
                folded.append(character)
                continue
            base = unaccented(character)
            folded.append(base if base and all(c in self.known for c in base) else "")
        return "".join(folded)

    def standardize(self, sentence: str) -> str:
        """`WordPieceTokenizer.standardize`: the text the tokens stand for."""
        return single_spaced(self.fold_unseen_characters(normalize_cased(sentence)))

    def word_ids(self, word: str) -> list[int]:
        """Longest-match-first WordPiece, as `FastWordpieceTokenizer` computes it: the whole
        word is one `[UNK]` if some part of it matches no piece, or if it is too long."""
        if len(word.encode("utf-8")) > MAX_BYTES_PER_WORD:
            return [UNK_ID]
        ids, start = [], 0
        while start < len(word):
            prefix = SUFFIX_INDICATOR if start else ""
            for end in range(min(len(word), start + self.longest_piece), start, -1):
                piece_id = self.ids.get(prefix + word[start:end])
                if piece_id is not None:
                    ids.append(piece_id)
                    start = end
                    break
            else:
                return [UNK_ID]
        return ids

    def tokenize(self, sentence: str) -> list[int]:
        standardized = self.standardize(sentence)
        return [i for word in standardized.split(" ") if word for i in self.word_ids(word)]

    def detokenize(self, token_ids: Iterable[int]) -> str:
        """`WordPieceTokenizer.detokenize`: pieces joined into words; no marker, `[UNK]` or
        stray leading `##` in the text."""
        words: list[str] = []
        for token_id in content_ids(token_ids, self.has_markers):
            if token_id == UNK_ID:
                continue
            piece = self.vocabulary[token_id]
            if piece.startswith(SUFFIX_INDICATOR) and words:
                words[-1] += piece[len(SUFFIX_INDICATOR) :]
            else:
                words.append(piece)
        return re.sub(f"(^| ){re.escape(SUFFIX_INDICATOR)}", r"\1", " ".join(words))


# --- Whole words ---------------------------------------------------------------------------------


def standardize_words(text: str) -> str:
    """`text.standardize`: NFKC, lowercase, "'" for its look-alikes, symbols dropped,
    punctuation as tokens of its own, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = APOSTROPHE_LIKE.sub("'", text)
    kept = RE2_WHITESPACE + "'-" + PUNCTUATION
    text = "".join(c if c in kept or is_category(c, "L", "M", "N") else " " for c in text)
    text = re.sub(f"([{re.escape(PUNCTUATION)}])", r" \1 ", text)
    return single_spaced(text)


class WordText:
    """`tokenizers.WordTokenizer` on the host: lowercased words, unknown ones as `[UNK]`."""

    def __init__(self, vocabulary: list[str]):
        self.vocabulary = vocabulary
        self.ids = {word: index for index, word in enumerate(vocabulary)}
        self.has_markers = has_markers(vocabulary)

    def tokenize(self, sentence: str) -> list[int]:
        words = standardize_words(sentence).split(" ")
        return [self.ids.get(word, UNK_ID) for word in words if word]

    def detokenize(self, token_ids: Iterable[int]) -> str:
        """`text.detokenize`: Spanish spacing around punctuation, first letter capitalized."""
        words = [self.vocabulary[i] for i in content_ids(token_ids, self.has_markers)]
        text = " ".join(words)
        text = re.sub(f" ([{re.escape(CLOSING_PUNCTUATION)}])", r"\1", text)
        text = re.sub(f"([{re.escape(OPENING_PUNCTUATION)}]) ", r"\1", text)
        opening = len(text) - len(text.lstrip(OPENING_PUNCTUATION))
        return text[:opening] + text[opening : opening + 1].upper() + text[opening + 1 :]


def make_host_tokenizer(kind: str, vocabulary: list[str]) -> HostTokenizer:
    """The host tokenizer of `config.tokenizer`'s kind (`tokenizers.make_tokenizer`'s twin)."""
    return WordPieceText(vocabulary) if kind == "wordpiece" else WordText(vocabulary)
