"""Out-of-domain translation: real software messages, translated by people, never trained on.

    python benchmarks/out_of_domain.py --model-dir runs/eng_spa [--model-dir B …]
                                       [--locale-dir /usr/share/locale/es/LC_MESSAGES]
                                       [--sentences 1500] [--beam 1]

The models train on Tatoeba's short everyday sentences. The gettext catalogs of the programs
installed on the machine (coreutils, grep, apt, glib, PAM, …) hold English messages
(`msgid`) with the Spanish their translators wrote (`msgstr`): other words, another register.

1. Reads every `*.mo` catalog of `--locale-dir` (a file that does not parse is skipped and
   counted) and keeps the sentence-like messages: 3–20 words, starting with an uppercase
   letter, no format placeholders or markup (`is_sentence_like`), one entry per `msgid` (the
   first catalog in file-name order wins).
2. Samples `--sentences` of them deterministically: sorted by CRC-32 of the `msgid`, then by
   the `msgid`, the first N.
3. Translates the sample with each `--model-dir` (greedy, or `--beam K`) and prints one row per
   model: the share of output words that are `[UNK]`, the outputs that hold one, the outputs
   that repeat a word other than `[UNK]` 3+ times in a row (the decoder looping),
   case-sensitive chrF and BLEU against the human `msgstr` (one reference each, computed as
   `evaluate` computes them), and their difference to the first model, the baseline. Then a
   few sources with every model's output and the reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import gettext
import os
import sys
import zlib
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The project root in place of this folder, whose litert.py would shadow the `litert` module
# TensorFlow imports.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from seq2seq_keras import compare, evaluate  # noqa: E402
from seq2seq_keras.model_dir import load_trained_model  # noqa: E402
from seq2seq_keras.text import UNK_TOKEN  # noqa: E402
from seq2seq_keras.translator import Translator  # noqa: E402

DEFAULT_LOCALE_DIR = "/usr/share/locale/es/LC_MESSAGES"
# Characters of format placeholders ("%s", "{name}", "$1"), markup ("<b>", "&amp;"), escapes,
# paths, options ("--foo=bar") and menu accelerators ("_Open"): not sentences a person reads.
MARKUP_CHARACTERS = frozenset("%{}<>\\_/=$&\t\n")
MIN_WORDS, MAX_WORDS = 3, 20
# A word written this many times in a row marks a decoder that loops ("no no no").
LOOP_REPEATS = 3
NUM_SAMPLE_ROWS = 8


@dataclasses.dataclass
class ModelResult:
    """One model's translations of the sample and what the table shows of them."""

    label: str
    tokenizer: str
    translations: list[str]
    unk_word_share: float  # output words (whitespace tokens) holding "[UNK]", over all words
    num_with_unk: int  # outputs holding "[UNK]"
    num_looping: int  # outputs with a word (not [UNK]) repeated LOOP_REPEATS+ times in a row
    scores: evaluate.Scores  # case-sensitive chrF and BLEU, one reference per source


def read_catalog_pairs(locale_dir: str | Path) -> tuple[list[tuple[object, object]], int]:
    """Every `(msgid, msgstr)` entry of the `*.mo` catalogs of `locale_dir`, in file-name order.

    Entries are returned as the catalogs hold them, unfiltered: the header (`msgid ""`), plural
    forms (keyed `(msgid, index)`) and untranslated messages included. A message with a context
    (`msgctxt`) is keyed by its `msgid` alone.

    Returns:
      The entries, and how many catalogs failed to parse (they are skipped).
    """
    pairs, num_failed = [], 0
    for path in sorted(Path(locale_dir).glob("*.mo")):
        try:
            with open(path, "rb") as file:
                catalog = gettext.GNUTranslations(file)
        except (OSError, UnicodeDecodeError, ValueError, LookupError):
            num_failed += 1  # truncated, bad magic number, or an unknown charset
            continue
        # The standard library has no public way to list a catalog's messages: `_catalog` is it.
        for msgid, msgstr in catalog._catalog.items():
            if isinstance(msgid, str):
                # GNUTranslations keys a message with a context as "context\x04msgid".
                msgid = msgid.rpartition("\x04")[2]
            pairs.append((msgid, msgstr))
    return pairs, num_failed


def count_catalogs(locale_dir: str | Path) -> int:
    """How many `*.mo` files `read_catalog_pairs` reads in `locale_dir`."""
    return len(list(Path(locale_dir).glob("*.mo")))


def is_sentence_like(msgid: object, msgstr: object) -> bool:
    """Whether a catalog entry is a plain translated sentence worth scoring.

    A `str` msgid with a non-empty `str` msgstr, neither holding a placeholder or markup
    character (`MARKUP_CHARACTERS`), the msgid `MIN_WORDS`–`MAX_WORDS` words long and starting
    with an uppercase letter.
    """
    if not (isinstance(msgid, str) and isinstance(msgstr, str) and msgstr.strip()):
        return False
    if MARKUP_CHARACTERS.intersection(msgid) or MARKUP_CHARACTERS.intersection(msgstr):
        return False
    return MIN_WORDS <= len(msgid.split()) <= MAX_WORDS and msgid[0].isupper()


def sentence_pairs(pairs: Sequence[tuple[object, object]]) -> dict[str, str]:
    """The sentence-like entries, msgid → msgstr, the first of each msgid kept."""
    kept: dict[str, str] = {}
    for msgid, msgstr in pairs:
        if is_sentence_like(msgid, msgstr) and msgid not in kept:
            kept[msgid] = msgstr
    return kept


def deterministic_sample(pairs: dict[str, str], num_sentences: int) -> list[tuple[str, str]]:
    """`num_sentences` pairs, the same on every machine with the same catalogs.

    Sorted by CRC-32 of the msgid (a spread over all catalogs, unlike file order), ties by the
    msgid, then the first `num_sentences`.
    """
    order = sorted(pairs, key=lambda msgid: (zlib.crc32(msgid.encode("utf-8")), msgid))
    return [(msgid, pairs[msgid]) for msgid in order[:num_sentences]]


def has_loop(translation: str, repeats: int = LOOP_REPEATS) -> bool:
    """Whether some word of `translation` other than `[UNK]` stands `repeats`+ times in a row.

    A run of `[UNK]` is a run of unknown source words ("Icon widget to display" → "[UNK]
    [UNK] [UNK]"), which the `[UNK]` columns already count, not a decoder that loops.
    """
    words = translation.split()
    return any(len(set(words[start : start + repeats])) == 1 and UNK_TOKEN not in words[start]
               for start in range(len(words) - repeats + 1))


def unk_counts(translations: Sequence[str]) -> tuple[float, int]:
    """The share of output words holding `[UNK]`, and how many outputs hold one."""
    words = [word for translation in translations for word in translation.split()]
    unknown = sum(UNK_TOKEN in word for word in words)
    share = unknown / len(words) if words else 0.0
    return share, sum(UNK_TOKEN in translation for translation in translations)


def score_model(
    label: str, model_dir: str | Path, sources: list[str], references: list[str], beam_width: int
) -> ModelResult:
    """Load the model of `model_dir`, translate `sources` and score them against `references`."""
    trained = load_trained_model(model_dir)
    translations = Translator.from_trained(trained).translate(sources, beam_width=beam_width)
    unk_word_share, num_with_unk = unk_counts(translations)
    return ModelResult(
        label=label,
        tokenizer=trained.config.tokenizer,
        translations=translations,
        unk_word_share=unk_word_share,
        num_with_unk=num_with_unk,
        num_looping=sum(has_loop(translation) for translation in translations),
        scores=evaluate.corpus_scores(translations, [[reference] for reference in references]),
    )


def format_table(results: Sequence[ModelResult]) -> str:
    """A markdown table, one row per model, chrF and BLEU also against the first row."""
    baseline = results[0].scores
    lines = [
        "| model | tokenizer | sentences | [UNK] words | outputs with [UNK] | looping outputs "
        "| chrF | BLEU | chrF vs baseline | BLEU vs baseline |",
        "|---|---|" + "---:|" * 8,
    ]
    for result in results:
        scores = result.scores
        lines.append(
            f"| {result.label} | {result.tokenizer} | {scores.num_sentences} "
            f"| {result.unk_word_share:.1%} | {result.num_with_unk} | {result.num_looping} "
            f"| {scores.chrf:.2f} | {scores.bleu:.2f} "
            f"| {scores.chrf - baseline.chrf:+.2f} | {scores.bleu - baseline.bleu:+.2f} |"
        )
    return "\n".join(lines)


def format_samples(
    sample: Sequence[tuple[str, str]],
    results: Sequence[ModelResult],
    num_rows: int = NUM_SAMPLE_ROWS,
) -> str:
    """`num_rows` sources spread evenly over the sample, each model's output and the reference."""
    indices = sorted({index * len(sample) // num_rows for index in range(num_rows)})
    labels = ["source", "reference", *(result.label for result in results)]
    width = max(len(label) for label in labels)
    blocks = []
    for index in indices:
        source, reference = sample[index]
        lines = [f"{'source':>{width}}: {source}"]
        lines += [f"{result.label:>{width}}: {result.translations[index]}" for result in results]
        lines.append(f"{'reference':>{width}}: {reference}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", action="append", required=True,
                        help="a trained model directory; repeat to compare "
                             "(the first is the baseline)")
    parser.add_argument("--locale-dir", default=DEFAULT_LOCALE_DIR,
                        help=f"the Spanish gettext catalogs, *.mo (default: {DEFAULT_LOCALE_DIR})")
    parser.add_argument("--sentences", type=int, default=1500,
                        help="how many messages to translate (default: 1500)")
    parser.add_argument("--beam", type=int, default=1,
                        help="beam width (default: 1, greedy decoding)")
    args = parser.parse_args()
    if args.sentences < 1:
        parser.error(f"--sentences must be at least 1, got {args.sentences}.")

    # 1. The messages.
    pairs, num_failed = read_catalog_pairs(args.locale_dir)
    kept = sentence_pairs(pairs)
    sample = deterministic_sample(kept, args.sentences)
    print(f"{args.locale_dir}: {count_catalogs(args.locale_dir)} catalogs ({num_failed} failed to "
          f"parse), {len(pairs)} entries, {len(kept)} sentence-like messages kept, "
          f"{len(sample)} sampled", flush=True)
    if not sample:
        sys.exit(f"No sentence-like message in {args.locale_dir}: check --locale-dir.")
    sources = [msgid for msgid, _ in sample]
    references = [msgstr for _, msgstr in sample]

    # 2. Every model on the same sample.
    decoding = "greedy" if args.beam == 1 else f"beam {args.beam}"
    results = []
    for label, model_dir in zip(compare.model_labels(args.model_dir), args.model_dir):
        print(f"{label}: translating {len(sources)} messages ({decoding})", flush=True)
        results.append(score_model(label, model_dir, sources, references, args.beam))

    # 3. The table, the signatures, a few examples.
    print(f"\nOut-of-domain messages, {decoding}, baseline {results[0].label}:\n")
    print(format_table(results))
    print(f"\nsacrebleu chrF: {results[0].scores.chrf_signature}")
    print(f"sacrebleu BLEU: {results[0].scores.bleu_signature}")
    print(f"\nSamples:\n\n{format_samples(sample, results)}")


if __name__ == "__main__":
    main()
