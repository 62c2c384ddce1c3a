"""The RNN family and attention: every variant builds, trains, decodes exactly and exports.

Each variant is a tiny model trained a few full-batch steps on `TINY_PAIRS`: enough for its
predictions to depend on the source, few enough that near-ties would expose any numeric
difference between the training graph, the step-by-step decoder and the graph decoder.
"""

import dataclasses
import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from seq2seq_keras import cli, export, pipeline
from seq2seq_keras import data as data_lib
from seq2seq_keras import text as text_lib
from seq2seq_keras import model as model_lib
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.decode import (
    as_list,
    build_inference_models,
    greedy_decode_stepwise,
)
from seq2seq_keras.graph_decoder import GraphDecoder
from seq2seq_keras.translator import (
    ATTENTION_SIGNATURE,
    BEAM_SIGNATURE,
    SERVING_SIGNATURE,
    Translator,
    TranslatorModule,
)
from seq2seq_keras.model_dir import TrainedModel

from conftest import (
    TINY_PAIRS,
    assert_differs_only_on_near_ties,
    build_tiny,
    greedy_and_beam_one,
    padded,
)

PAD, START, END = text_lib.PAD_ID, text_lib.START_ID, text_lib.END_ID
TRAINING_STEPS = 12  # full-batch epochs: one optimizer step each

VARIANTS = {
    "gru": dict(cell="gru"),  # reads the source backwards, like the classic default
    "stacked_lstm": dict(num_layers=2, reverse_source=False),
    "bidirectional_lstm": dict(bidirectional=True, reverse_source=False),
    "luong": dict(attention="luong", reverse_source=False),
    "bahdanau": dict(attention="bahdanau", reverse_source=False),
    "bidirectional_stacked_luong": dict(
        bidirectional=True, num_layers=2, attention="luong", reverse_source=False
    ),
    "all_gru_bahdanau": dict(
        cell="gru", bidirectional=True, num_layers=2, attention="bahdanau", reverse_source=False
    ),
}
ATTENTION_VARIANTS = [name for name, switches in VARIANTS.items() if "attention" in switches]


@pytest.fixture(scope="module")
def trained_variants(tiny_config):
    """Each variant trained `TRAINING_STEPS` steps, with the loss of every step."""
    trained = {}
    for name, switches in VARIANTS.items():
        config = dataclasses.replace(tiny_config, **switches)
        tiny = build_tiny(config, TINY_PAIRS, epochs=0)
        dataset = pipeline.make_dataset(tiny.tokens, config, shuffle=True).cache()
        history = tiny.model.fit(dataset, epochs=TRAINING_STEPS, verbose=0).history
        trained[name] = (tiny, history["loss"])
    return trained


@pytest.fixture(params=list(VARIANTS))
def variant(request, trained_variants):
    return trained_variants[request.param][0]


@pytest.fixture(scope="module")
def real_source_ids(spa_eng_path, trained_variants):
    """Padded ids of 120 real English sentences of every length, and the tiny pairs."""
    tiny = trained_variants["gru"][0]  # all variants share the vocabularies
    pairs = data_lib.read_pairs(spa_eng_path, max_pairs=30000).pairs
    sentences = [source for source, _ in pairs[::250]][:120] + [s for s, _ in TINY_PAIRS]
    ragged = text_lib.make_vectorizer(tiny.source_vocabulary)(tf.constant(sentences))
    ragged = ragged[:, : tiny.config.max_source_length]
    return padded(tf.ragged.boolean_mask(ragged, ragged.row_lengths() > 0))


def teacher_forced_log_probs(tiny, source_ids, token_ids):
    """The training model's log-probability of each row of `token_ids` (up to its [END])."""
    decoder_input = np.concatenate([np.full((len(token_ids), 1), START), token_ids[:, :-1]], 1)
    probabilities = tiny.model([source_ids, decoder_input]).numpy()
    chosen = np.take_along_axis(probabilities, token_ids[..., None], axis=-1)[..., 0]
    real = np.cumsum(np.cumsum(token_ids == END, axis=1), axis=1) <= 1
    return np.where(real, np.log(chosen), 0.0).sum(axis=1)


# --- Config and command line -------------------------------------------------------------------


def test_the_default_config_is_the_classic_graph():
    config = Seq2SeqConfig()
    assert (config.cell, config.bidirectional, config.num_layers, config.attention) == (
        "lstm", False, 1, "none"
    )
    assert config.is_classic


@pytest.mark.parametrize(
    "switches, message",
    [
        (dict(cell="rnn"), "cell must be one of"),
        (dict(attention="dot", reverse_source=False), "attention must be one of"),
        (dict(num_layers=0), "num_layers must be at least 1"),
        (dict(dropout=1.0), "dropout must be in"),
        (dict(bidirectional=True, units=33, reverse_source=False), "units\nmust be even|even"),
        (dict(bidirectional=True, reverse_source=True), "reverse_source works only"),
        (dict(attention="luong", reverse_source=True), "reverse_source works only"),
        (dict(num_layers=2, reverse_source=True), "reverse_source works only"),
        (dict(precision="float64"), "precision must be one of"),
    ],
)
def test_switches_that_do_not_combine_are_refused(switches, message):
    with pytest.raises(ValueError, match=message):
        Seq2SeqConfig(**switches)


def test_the_config_reads_the_source_backwards_by_default_only_where_it_works():
    assert Seq2SeqConfig().reverse_source is True
    assert Seq2SeqConfig(cell="gru").reverse_source is True
    for switches in (dict(bidirectional=True), dict(attention="luong"), dict(num_layers=2)):
        assert Seq2SeqConfig(**switches).reverse_source is False
    # The resolved value is what a model directory records, so an old config.json reads back.
    assert Seq2SeqConfig.from_json(Seq2SeqConfig().to_json()) == Seq2SeqConfig()


def test_train_flags_set_the_switches_and_reverse_source_only_where_it_works():
    parse = lambda *flags: cli.config_from_args(cli.build_parser().parse_args(["train", *flags]))  # noqa: E731
    config = parse("--cell", "gru", "--bidirectional", "--num-layers", "3", "--dropout", "0.2",
                   "--attention", "luong")
    assert (config.cell, config.bidirectional, config.num_layers, config.dropout,
            config.attention, config.reverse_source) == ("gru", True, 3, 0.2, "luong", False)
    assert parse().reverse_source and parse("--cell", "gru").reverse_source
    assert not parse("--no-reverse-source").reverse_source
    assert not parse("--attention", "bahdanau").reverse_source


def test_asking_for_reverse_source_with_attention_is_a_clear_error(tmp_path, capsys):
    status = cli.main(["train", "--attention", "luong", "--reverse-source",
                       "--model-dir", str(tmp_path / "model")])
    assert status == 2
    assert "reverse_source works only" in capsys.readouterr().err


# --- Every variant builds, trains and reproduces its teacher-forced probabilities --------------


def test_every_variant_has_its_named_layers_and_trains(trained_variants):
    for name, (tiny, losses) in trained_variants.items():
        names = {layer.name for layer in tiny.model.layers}
        config = tiny.config
        expected = {model_lib.ENCODER_EMBEDDING, model_lib.DECODER_EMBEDDING,
                    model_lib.DECODER_DENSE}
        expected |= {f"encoder_rnn_{i}" for i in range(1, config.num_layers + 1)}
        expected |= {f"decoder_rnn_{i}" for i in range(1, config.num_layers + 1)}
        if config.attention != "none":
            expected |= {model_lib.ATTENTION_KEY, model_lib.ATTENTION,
                         model_lib.ATTENTION_COMBINE}
        if config.attention == "bahdanau":
            expected.add(model_lib.ATTENTION_QUERY)
        assert expected <= names, name
        assert model_lib.ENCODER_LSTM not in names  # the classic names mean the classic graph
        assert losses[-1] < losses[0] - 0.5, f"{name}: loss {losses[0]:.2f} → {losses[-1]:.2f}"


def test_inference_models_reproduce_teacher_forced_probabilities(variant):
    source_ids = padded(variant.tokens.source_ids)
    target_ids = padded(variant.tokens.target_ids)
    decoder_input_ids, next_ids = target_ids[:, :-1], target_ids[:, 1:]
    expected = variant.model([source_ids, decoder_input_ids]).numpy()  # (batch, steps, vocab)

    models = build_inference_models(variant.model)
    states = as_list(models.encoder(tf.constant(source_ids)))
    memory = [tf.identity(states.pop(0)), tf.constant(source_ids != PAD)] if models.attention else []
    for step in range(decoder_input_ids.shape[1]):
        tokens = tf.constant(decoder_input_ids[:, step : step + 1])
        outputs = as_list(models.decoder_step([tokens, *memory, *states]))
        probabilities, states = outputs[0], outputs[1 : 1 + len(states)]
        real = next_ids[:, step] != PAD
        difference = np.abs(probabilities.numpy()[:, 0, :] - expected[:, step, :])[real]
        assert difference.max() <= 1e-5, f"step {step}: max difference {difference.max()}"


def test_graph_greedy_equals_the_stepwise_decoder_exactly(variant, real_source_ids):
    max_length = variant.config.max_decode_length
    expected = greedy_decode_stepwise(build_inference_models(variant.model), real_source_ids,
                                      max_length)
    decoder = GraphDecoder(variant.model, max_length)
    result = decoder.greedy(tf.constant(real_source_ids))
    np.testing.assert_array_equal(result.token_ids.numpy(), expected)
    assert len(np.unique(expected, axis=0)) > 3  # the sentences do not all decode alike
    np.testing.assert_allclose(
        result.log_probs.numpy(), teacher_forced_log_probs(variant, real_source_ids, expected),
        rtol=1e-4, atol=1e-4,
    )


@pytest.mark.bfloat16
def test_every_variant_decodes_with_bfloat16_matmuls_as_in_float32_but_near_ties(
    variant, real_source_ids
):
    max_length = variant.config.max_decode_length
    source_ids = tf.constant(real_source_ids)
    expected = GraphDecoder(variant.model, max_length).greedy(source_ids)
    actual = GraphDecoder(variant.model, max_length, precision="bfloat16").greedy(source_ids)
    assert_differs_only_on_near_ties(variant.model, real_source_ids, actual.token_ids,
                                     expected.token_ids)


def test_graph_beam_search_works_for_every_variant(variant, real_source_ids):
    decoder = GraphDecoder(variant.model, variant.config.max_decode_length)
    source_ids = real_source_ids[:40]
    greedy, beam_one = greedy_and_beam_one(decoder, source_ids)
    np.testing.assert_array_equal(beam_one.token_ids, greedy.token_ids)
    beam = decoder.beam(tf.constant(source_ids), tf.constant(3), tf.constant(0.6))
    # The beams' states (attention memory included) followed their parents: rescoring agrees.
    np.testing.assert_allclose(
        beam.log_probs.numpy(),
        teacher_forced_log_probs(variant, source_ids, beam.token_ids.numpy()),
        rtol=1e-4, atol=1e-4,
    )


@pytest.mark.parametrize("name", ["stacked_lstm", "luong", "all_gru_bahdanau"])
def test_empty_batches_and_sources_of_only_padding_decode(name, trained_variants):
    # Stacked layers and attention stack per-step outputs, which needs at least one step.
    variant = trained_variants[name][0]
    decoder = GraphDecoder(variant.model, variant.config.max_decode_length)
    for shape in [(0, 0), (2, 0), (0, 3)]:
        no_source = tf.zeros(shape, tf.int64)
        assert decoder.greedy(no_source).token_ids.shape[0] == shape[0]
        assert decoder.decode(no_source, beam_width=3).token_ids.shape[0] == shape[0]
    # A row of padding only decodes from the zero state, like the stepwise decoder does.
    expected = greedy_decode_stepwise(build_inference_models(variant.model),
                                      np.zeros((2, 1), np.int64), 12)
    np.testing.assert_array_equal(decoder.greedy(tf.zeros([2, 1], tf.int64)).token_ids, expected)


# --- Attention weights -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ATTENTION_VARIANTS)
def test_attention_weights_sum_to_one_over_the_source_and_are_zero_on_padding(
    name, trained_variants, real_source_ids
):
    tiny = trained_variants[name][0]
    source_ids = real_source_ids
    is_real = source_ids != PAD
    assert (~is_real).any() and len(set(is_real.sum(1))) > 3  # many lengths, much padding

    # The step-by-step decoder's weights, teacher-forced on the graph decoder's greedy tokens.
    decoder = GraphDecoder(tiny.model, tiny.config.max_decode_length)
    result, weights = decoder.greedy_with_attention(tf.constant(source_ids))
    token_ids, weights = result.token_ids.numpy(), weights.numpy()
    models = build_inference_models(tiny.model)
    states = as_list(models.encoder(tf.constant(source_ids)))
    memory = [tf.identity(states.pop(0)), tf.constant(is_real)]
    previous = np.concatenate([np.full((len(token_ids), 1), START), token_ids[:, :-1]], 1)
    for step in range(token_ids.shape[1]):
        outputs = as_list(models.decoder_step([tf.constant(previous[:, step:step + 1]),
                                               *memory, *states]))
        states, step_weights = outputs[1:-1], outputs[-1].numpy()[:, 0, :]
        np.testing.assert_allclose(step_weights.sum(axis=1), 1.0, rtol=1e-5)
        assert (step_weights[~is_real] == 0.0).all()
        produced = result.lengths.numpy() > step
        # Not bit for bit: the graph decoder drops finished rows, so its matmuls run on other
        # shapes, and oneDNN may then sum a score's `units` products in another order (AVX2
        # kernels do, measured: 1 ulp). Each score moves by at most ~units roundoffs of its
        # size, and a softmax weight by about as much relatively: within units × float32 eps.
        tolerance = tiny.config.units * np.finfo(np.float32).eps
        np.testing.assert_allclose(weights[produced, step], step_weights[produced],
                                   rtol=tolerance, atol=tolerance)
        assert (weights[~produced, step] == 0.0).all()  # nothing after a row's [END]


# --- Saved models, Translator and export -------------------------------------------------------


@pytest.mark.parametrize("name", ["gru", "all_gru_bahdanau", "bidirectional_stacked_luong"])
def test_a_saved_variant_reloads_and_translates_the_same(name, trained_variants, tmp_path):
    tiny = trained_variants[name][0]
    tiny.model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    source_ids = padded(tiny.tokens.source_ids)
    target_ids = padded(tiny.tokens.target_ids)[:, :-1]
    np.testing.assert_array_equal(loaded([source_ids, target_ids]),
                                  tiny.model([source_ids, target_ids]))
    sources = [source for source, _ in TINY_PAIRS]
    args = (tiny.config, tiny.source_vocabulary, tiny.target_vocabulary)
    original = Translator(args[0], tiny.model, *args[1:]).translate(sources)
    assert Translator(args[0], loaded, *args[1:]).translate(sources) == original


def test_an_attention_export_translates_like_the_translator_and_returns_its_weights(
    trained_variants, tmp_path, monkeypatch
):
    tiny = trained_variants["all_gru_bahdanau"][0]
    trained = TrainedModel(tiny.config, tiny.model, tiny.source_vocabulary,
                           tiny.target_vocabulary)
    # Keras' GRU picks a cuDNN kernel when it sees a GPU; the export steps the cells instead.
    keras_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")
    monkeypatch.setattr(keras_rnn, "_is_gpu_available", lambda: True)
    version_dir = export.export_saved_model(trained, "variant", tmp_path)
    monkeypatch.undo()
    loaded = tf.saved_model.load(str(version_dir))
    assert set(loaded.signatures) == {SERVING_SIGNATURE, BEAM_SIGNATURE,
                                      ATTENTION_SIGNATURE}
    sentences = [source for source, _ in TINY_PAIRS] + ["", "Thank you, my friend, thank you."]
    expected = Translator(tiny.config, tiny.model, tiny.source_vocabulary,
                          tiny.target_vocabulary).translate(sentences)
    outputs = loaded.signatures[ATTENTION_SIGNATURE](sentences=tf.constant(sentences))
    assert [text.decode("utf-8") for text in outputs["translations"].numpy()] == expected
    greedy = loaded.signatures[SERVING_SIGNATURE](sentences=tf.constant(sentences))
    np.testing.assert_array_equal(outputs["scores"], greedy["scores"])

    weights = outputs["attention_weights"].numpy()  # (batch, steps, source_len)
    source_tokens = outputs["source_tokens"].numpy()
    target_tokens = outputs["target_tokens"].numpy()
    assert weights.shape == (*target_tokens.shape, source_tokens.shape[1])
    produced = target_tokens != b""  # (batch, steps), through each row's [END]
    real_source = source_tokens != b""  # (batch, source_len)
    has_source = real_source.any(axis=1)
    assert not has_source[-2] and not produced[-2].any()  # "" has no weights and no tokens
    np.testing.assert_allclose(
        weights.sum(axis=-1)[produced & has_source[:, None]], 1.0, rtol=1e-5
    )
    assert (weights[np.broadcast_to(~real_source[:, None, :], weights.shape)] == 0.0).all()
    assert (weights[~produced] == 0.0).all()
    assert source_tokens[0].tolist()[:2] == [b"thank", b"you"]


def test_a_classic_export_has_no_attention_signature(overfit_model, tmp_path):
    trained = TrainedModel(overfit_model.config, overfit_model.model,
                           overfit_model.source_vocabulary, overfit_model.target_vocabulary)
    translator = TranslatorModule.from_trained(trained)
    assert not translator.has_attention
    assert not hasattr(translator, "translate_with_attention")


@pytest.mark.bfloat16
def test_a_mixed_bfloat16_attention_model_decodes_as_the_stepwise_decoder(
    tiny_config, real_source_ids
):
    # As train --precision mixed_bfloat16 builds it: cells, states and attention in bfloat16.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        config = dataclasses.replace(tiny_config, bidirectional=True, attention="luong",
                                     reverse_source=False)
        tiny = build_tiny(config, TINY_PAIRS, epochs=8)
    finally:
        keras.config.set_dtype_policy(previous)
    assert tiny.model.get_layer(model_lib.ATTENTION).compute_dtype == "bfloat16"
    expected = greedy_decode_stepwise(build_inference_models(tiny.model), real_source_ids, 12)
    decoder = GraphDecoder(tiny.model, 12)
    result, weights = decoder.greedy_with_attention(tf.constant(real_source_ids))
    # Exactly but for near-ties: in bfloat16, rows leaving the batch can change the rounding.
    assert_differs_only_on_near_ties(tiny.model, real_source_ids, result.token_ids, expected)
    # The softmax runs in bfloat16, whose unit roundoff is 2^-8: each weight carries one
    # rounding of its exponential and one of its quotient, and the denominator one of its own.
    # Weights that add up to 1 then sum to 1 within 3 × 2^-8 to first order (a CPU without
    # bfloat16 units that also accumulates the denominator in bfloat16 rounds more often, but
    # its roundings mostly cancel: measured on AVX2, 1.0049 = 1.25 × 2^-8).
    produced = result.token_ids.numpy() != PAD
    np.testing.assert_allclose(weights.numpy().sum(-1)[produced], 1.0, atol=3 * 2**-8)
