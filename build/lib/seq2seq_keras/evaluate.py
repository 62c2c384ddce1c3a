"""Evaluation: corpus BLEU and chrF with sacrebleu, overall and by source length.

The test split groups every translation of a source sentence together, so each source is
scored once against *all* its references (multi-reference BLEU): "Thank you." may be "Gracias."
or "Muchas gracias." and both are right.

The main figure is sacrebleu's default corpus BLEU: 13a tokenizer, **case-sensitive**
(`case:mixed`). A translator that writes case must get names such as "Tom" and the first letter
of a sentence right, and case-insensitive scoring would hide output that is all lowercase: it
scores "tom está aquí." like "Tom está aquí.". Beside it stay:

- case-insensitive BLEU (`lowercase=True`, `case:lc`), the figure earlier versions reported, so
  results compare with older runs;
- chrF with sacrebleu's defaults (character 6-grams, β = 2), case-sensitive like the main BLEU.

The BLEU-by-length table uses the main, case-sensitive BLEU. Every score is printed with its
sacrebleu signature, which says exactly which settings were used.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import sacrebleu

# Width of the source-length buckets of the BLEU-by-length table, in words.
LENGTH_BUCKET_WORDS = 3


@dataclasses.dataclass
class Scores:
    """Corpus scores of a set of translations, each with its sacrebleu signature."""

    bleu: float  # case-sensitive BLEU, the main figure
    bleu_lowercase: float  # case-insensitive BLEU, comparable with older runs
    chrf: float  # chrF, case-sensitive
    num_sentences: int
    bleu_signature: str  # e.g. "nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    bleu_lowercase_signature: str  # the same with "case:lc"
    chrf_signature: str  # e.g. "nrefs:var|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"


@dataclasses.dataclass
class LengthBucket:
    """BLEU over the sources whose length in words lies in `[min_words, max_words]`."""

    min_words: int
    max_words: int
    num_sentences: int
    bleu: float


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """sacrebleu's layout: one stream per reference slot, `None` where a source has fewer."""
    width = max((len(refs) for refs in references), default=0)
    return [[refs[slot] if slot < len(refs) else None for refs in references] for slot in range(width)]


def check_lengths(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Refuse hypotheses and reference lists that do not pair up one to one."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists.")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """The main figure alone: case-sensitive multi-reference corpus BLEU of `hypotheses`."""
    check_lengths(hypotheses, references)
    if not hypotheses:
        return 0.0
    streams = reference_streams(references)
    return sacrebleu.metrics.BLEU().corpus_score(list(hypotheses), streams).score


def corpus_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> Scores:
    """Multi-reference corpus BLEU (case-sensitive and case-insensitive) and chrF of `hypotheses`.

    Args:
      hypotheses: one translation per source.
      references: for each source, the list of its reference translations.
    """
    check_lengths(hypotheses, references)
    if not hypotheses:
        return Scores(bleu=0.0, bleu_lowercase=0.0, chrf=0.0, num_sentences=0, bleu_signature="",
                      bleu_lowercase_signature="", chrf_signature="")
    streams = reference_streams(references)
    metrics = {
        "bleu": sacrebleu.metrics.BLEU(),
        "bleu_lowercase": sacrebleu.metrics.BLEU(lowercase=True),
        "chrf": sacrebleu.metrics.CHRF(),
    }
    fields = {}
    for name, metric in metrics.items():
        fields[name] = metric.corpus_score(list(hypotheses), streams).score
        fields[f"{name}_signature"] = str(metric.get_signature())
    return Scores(num_sentences=len(hypotheses), **fields)


def source_length(sentence: str) -> int:
    """Length of a source sentence in words (whitespace-separated, punctuation attached)."""
    return len(sentence.split())


def bleu_by_length(
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    bucket_words: int = LENGTH_BUCKET_WORDS,
) -> list[LengthBucket]:
    """Case-sensitive BLEU per source-length bucket (`1–3`, `4–6`, … words).

    Where the fixed-size context vector strains: the scores fall as sources grow.
    """
    groups: dict[int, list[int]] = {}
    for index, source in enumerate(sources):
        groups.setdefault((source_length(source) - 1) // bucket_words, []).append(index)
    buckets = []
    for group in sorted(groups):
        indices = groups[group]
        bleu = corpus_bleu(
            [hypotheses[index] for index in indices], [references[index] for index in indices]
        )
        buckets.append(
            LengthBucket(
                min_words=group * bucket_words + 1,
                max_words=(group + 1) * bucket_words,
                num_sentences=len(indices),
                bleu=bleu,
            )
        )
    return buckets


def evaluate_translator(
    translate: Callable[[list[str]], list[str]], references: dict[str, list[str]]
) -> tuple[Scores, list[LengthBucket], list[str]]:
    """Translate every source of `references` and score it: overall, by length, and the outputs.

    Args:
      translate: a function from a list of sentences to their translations.
      references: each distinct source with all its reference translations.
    """
    sources = list(references)
    hypotheses = translate(sources)
    reference_lists = [references[source] for source in sources]
    scores = corpus_scores(hypotheses, reference_lists)
    return scores, bleu_by_length(sources, hypotheses, reference_lists), hypotheses


def format_scores(scores: Scores) -> str:
    """The headline scores on one line, then sacrebleu's signature of each score, one a line.

    The first line starts with the main figure, `BLEU X.XX` (case-sensitive); tools and
    notebooks read it.
    """
    return "\n".join([
        f"BLEU {scores.bleu:.2f}  case-insensitive BLEU {scores.bleu_lowercase:.2f}"
        f"  chrF {scores.chrf:.2f}  ({scores.num_sentences} source sentences, all references)",
        f"sacrebleu BLEU: {scores.bleu_signature}",
        f"sacrebleu case-insensitive BLEU: {scores.bleu_lowercase_signature}",
        f"sacrebleu chrF: {scores.chrf_signature}",
    ])


def format_length_table(buckets: Sequence[LengthBucket]) -> str:
    """The BLEU-by-length table as aligned text."""
    lines = [f"{'source words':>12}  {'sentences':>9}  {'BLEU':>6}"]
    for bucket in buckets:
        span = f"{bucket.min_words}-{bucket.max_words}"
        lines.append(f"{span:>12}  {bucket.num_sentences:>9}  {bucket.bleu:>6.2f}")
    return "\n".join(lines)
