import pytest

from seq2seq_keras.evaluate import (
    bleu_by_length,
    corpus_scores,
    evaluate_translator,
    format_length_table,
    format_scores,
    reference_streams,
)


def test_reference_streams_pad_missing_references_with_none():
    assert reference_streams([["a", "b"], ["c"]]) == [["a", "c"], ["b", None]]


def test_multi_reference_bleu_credits_any_reference():
    hypotheses = ["Muchas gracias por todo.", "El gato duerme en la casa."]
    references = [["Gracias.", "Muchas gracias por todo."], ["El gato duerme en la casa."]]
    assert corpus_scores(hypotheses, references).bleu == pytest.approx(100.0)
    single = corpus_scores(hypotheses, [[refs[0]] for refs in references])
    assert single.bleu < 100.0


def test_bleu_is_case_sensitive_with_case_insensitive_beside_it():
    scores = corpus_scores(["tom está aquí."], [["Tom está aquí."]])
    assert scores.bleu < 100.0
    assert scores.bleu_lowercase == pytest.approx(100.0)
    assert scores.chrf < 100.0
    cased = corpus_scores(["Tom está aquí."], [["Tom está aquí."]])
    assert cased.bleu == pytest.approx(100.0) and cased.chrf == pytest.approx(100.0)


def test_every_score_is_signed():
    scores = corpus_scores(["tom está aquí."], [["Tom está aquí."]])
    assert "case:mixed" in scores.bleu_signature and "nrefs:1" in scores.bleu_signature
    assert "case:lc" in scores.bleu_lowercase_signature
    assert "case:mixed" in scores.chrf_signature and "nc:6" in scores.chrf_signature
    varied = corpus_scores(["a", "b"], [["a", "c"], ["b"]])
    assert "nrefs:var" in varied.bleu_signature and "nrefs:var" in varied.chrf_signature


def test_format_scores_leads_with_case_sensitive_bleu_and_prints_signatures():
    scores = corpus_scores(["tom está aquí."], [["Tom está aquí."]])
    lines = format_scores(scores).splitlines()
    assert lines[0].startswith(f"BLEU {scores.bleu:.2f}  case-insensitive BLEU 100.00  chrF ")
    assert lines[1] == f"sacrebleu BLEU: {scores.bleu_signature}" and "case:mixed" in lines[1]
    assert "case:lc" in lines[2] and lines[3].startswith("sacrebleu chrF: ")


def test_bleu_by_length_is_case_sensitive():
    hypotheses, references = ["tom está aquí."], [["Tom está aquí."]]
    buckets = bleu_by_length(["Tom is here."], hypotheses, references)
    assert buckets[0].bleu == pytest.approx(corpus_scores(hypotheses, references).bleu)
    assert buckets[0].bleu < 100.0


def test_bleu_by_length_buckets_sources_by_words():
    sources = ["Go away now.", "I see you now.", "One two three four five six seven."]
    hypotheses = ["Vete de aquí ahora.", "Te veo ahora.", "Uno dos tres cuatro cinco seis siete."]
    references = [["Vete de aquí ahora."], ["Te veo ahora."], ["Uno dos tres cuatro cinco seis ocho."]]
    buckets = bleu_by_length(sources, hypotheses, references)
    assert [(b.min_words, b.max_words, b.num_sentences) for b in buckets] == [
        (1, 3, 1),
        (4, 6, 1),
        (7, 9, 1),
    ]
    assert buckets[0].bleu == pytest.approx(100.0) and buckets[2].bleu < 100.0
    assert "7-9" in format_length_table(buckets)


def test_evaluate_translator_scores_each_source_once():
    calls = []

    def translate(sentences):
        calls.append(list(sentences))
        return ["Hola." for _ in sentences]

    scores, buckets, hypotheses = evaluate_translator(translate, {"Hi.": ["Hola.", "Buenas."]})
    assert calls == [["Hi."]] and hypotheses == ["Hola."]
    assert scores.num_sentences == 1 and len(buckets) == 1
