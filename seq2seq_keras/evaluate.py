"""Evaluation: corpus BLEU and chrF with sacrebleu, overall and by source length.

The test split groups every translation of a source sentence together, so each source is
scored once against *all* its references (multi-reference BLEU): "Thank you." may be "Gracias."
or "Muchas gracias." and both are right.

BLEU here is sacrebleu's corpus BLEU with its standard 13a tokenizer, case-insensitive
(`lowercase=True`): the model works in lowercase, and scoring case would mostly measure whether
names such as "Tom" were re-capitalized. The signature printed with every score says exactly
which settings were used.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import sacrebleu

# Width of the source-length buckets of the BLEU-by-length table, in words.
LENGTH_BUCKET_WORDS = 3


@dataclasses.dataclass
class Scores:
    """Corpus scores of a set of translations."""

    bleu: float
    chrf: float
    num_sentences: int
    bleu_signature: str


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


def corpus_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> Scores:
    """Case-insensitive multi-reference corpus BLEU and chrF of `hypotheses`.

    Args:
      hypotheses: one translation per source.
      references: for each source, the list of its reference translations.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists.")
    if not hypotheses:
        return Scores(bleu=0.0, chrf=0.0, num_sentences=0, bleu_signature="")
    streams = reference_streams(references)
    bleu = sacrebleu.metrics.BLEU(lowercase=True)
    bleu_score = bleu.corpus_score(list(hypotheses), streams)
    chrf_score = sacrebleu.metrics.CHRF(lowercase=True).corpus_score(list(hypotheses), streams)
    return Scores(
        bleu=bleu_score.score,
        chrf=chrf_score.score,
        num_sentences=len(hypotheses),
        bleu_signature=str(bleu.get_signature()),
    )


def source_length(sentence: str) -> int:
    """Length of a source sentence in words (whitespace-separated, punctuation attached)."""
    return len(sentence.split())


def bleu_by_length(
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    bucket_words: int = LENGTH_BUCKET_WORDS,
) -> list[LengthBucket]:
    """BLEU per source-length bucket (`1–3`, `4–6`, … words): where the context vector strains."""
    groups: dict[int, list[int]] = {}
    for index, source in enumerate(sources):
        groups.setdefault((source_length(source) - 1) // bucket_words, []).append(index)
    buckets = []
    for group in sorted(groups):
        indices = groups[group]
        scores = corpus_scores(
            [hypotheses[index] for index in indices], [references[index] for index in indices]
        )
        buckets.append(
            LengthBucket(
                min_words=group * bucket_words + 1,
                max_words=(group + 1) * bucket_words,
                num_sentences=len(indices),
                bleu=scores.bleu,
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
    """Two lines: the headline scores, and sacrebleu's signature for reproducibility."""
    return (
        f"BLEU {scores.bleu:.2f}  chrF {scores.chrf:.2f}  ({scores.num_sentences} source sentences,"
        f" all references)\nsacrebleu: {scores.bleu_signature}"
    )


def format_length_table(buckets: Sequence[LengthBucket]) -> str:
    """The BLEU-by-length table as aligned text."""
    lines = [f"{'source words':>12}  {'sentences':>9}  {'BLEU':>6}"]
    for bucket in buckets:
        span = f"{bucket.min_words}-{bucket.max_words}"
        lines.append(f"{span:>12}  {bucket.num_sentences:>9}  {bucket.bleu:>6.2f}")
    return "\n".join(lines)
