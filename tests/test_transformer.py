"""The Transformer: builds from named layers, trains, and its cached step computes exactly
what the teacher-forced model computes, through every decoder and export.

A tiny Transformer trained a few full-batch steps on `TINY_PAIRS`: enough for its predictions to
depend on the source, few enough that near-ties would expose a numeric difference between the
training graph, the cached step and the graph decoder.
"""

import dataclasses
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from seq2seq_keras import export, pipeline, transformer, transformer_blocks, transformer_decode
from seq2seq_keras import text as text_lib
from seq2seq_keras.cli import build_parser, config_from_args
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.decode import as_list, build_inference_models, greedy_decode_stepwise
from seq2seq_keras.graph_decoder import GraphDecoder
from seq2seq_keras import train as train_lib
from seq2seq_keras.model_dir import TrainedModel, load_trained_model, save_model_directory
from seq2seq_keras.lite import LiteTranslator
from seq2seq_keras.lite.export import export_litert
from seq2seq_keras.lite.runtime_files import MODEL_FILENAME
from seq2seq_keras.translator import (
    ATTENTION_SIGNATURE,
    BEAM_SIGNATURE,
    SERVING_SIGNATURE,
    Translator,
    as_utf8_list,
)

from conftest import TINY_PAIRS, build_tiny, greedy_and_beam_one, padded
from test_lite import model_ops
from test_translator import HOSTILE
from test_variants import teacher_forced_log_probs

PAD, START, END = text_lib.PAD_ID, text_lib.START_ID, text_lib.END_ID
TRAINING_STEPS = 30  # full-batch epochs: one optimizer step each
# One encoder block and two decoder blocks: every test below also checks that the two sides'
# block counts are independent and that each decoder block keeps its own cache.
TINY_TRANSFORMER = dict(
    architecture="transformer", transformer_layers=1, transformer_decoder_layers=2,
    transformer_width=32,
    transformer_heads=4, transformer_feed_forward=64, learning_rate=3e-3, reverse_source=False,
)
# float32 tolerance between two orders of the same sums (the teacher-forced model attends over
# all positions with Keras' fused kernel, the step over its cache with einsums): each logit is
# a sum of `width`-long dot products of O(1) terms, a few float32 roundoffs each.
LOGIT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def tiny_transformer(tiny_config):
    """The tiny Transformer trained `TRAINING_STEPS` steps, and its losses."""
    config = dataclasses.replace(tiny_config, **TINY_TRANSFORMER)
    tiny = build_tiny(config, TINY_PAIRS, epochs=0)
    dataset = pipeline.make_dataset(tiny.tokens, config, shuffle=True).cache()
    history = tiny.model.fit(dataset, epochs=TRAINING_STEPS, verbose=0).history
    return tiny, history["loss"]


@pytest.fixture(scope="module")
def tiny(tiny_transformer):
    return tiny_transformer[0]


@pytest.fixture(scope="module")
def tied_transformer(tiny_config):
    """The tiny Transformer with its decoder embedding tied to the output layer, trained the
    same steps, and its losses."""
    config = dataclasses.replace(
        tiny_config, **TINY_TRANSFORMER, transformer_tie_embeddings=True, output_projection_dim=0
    )
    tiny = build_tiny(config, TINY_PAIRS, epochs=0)
    dataset = pipeline.make_dataset(tiny.tokens, config, shuffle=True).cache()
    history = tiny.model.fit(dataset, epochs=TRAINING_STEPS, verbose=0).history
    return tiny, history["loss"]


@pytest.fixture(scope="module")
def shared_transformer(tiny_config):
    """The tied twin with one vocabulary for both languages, whose encoder reads the tied
    matrix too, trained the same steps, and its losses."""
    config = dataclasses.replace(
        tiny_config, **TINY_TRANSFORMER, transformer_tie_embeddings=True, output_projection_dim=0,
        shared_vocabulary=True,
    )
    tiny = build_tiny(config, TINY_PAIRS, epochs=0)
    dataset = pipeline.make_dataset(tiny.tokens, config, shuffle=True).cache()
    history = tiny.model.fit(dataset, epochs=TRAINING_STEPS, verbose=0).history
    return tiny, history["loss"]


@pytest.fixture(scope="module", params=["untied", "tied", "shared"])
def any_tiny(request):
    """The tiny Transformer, its tied-embedding twin, and the twin whose one matrix embeds
    both languages: the tests that take this fixture hold for every way of embedding."""
    if request.param in ("tied", "shared"):
        return request.getfixturevalue(f"{request.param}_transformer")[0]
    return request.getfixturevalue("tiny")


def trained_model(tiny) -> TrainedModel:
    return TrainedModel(tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)


@pytest.fixture(scope="module")
def trained(tiny) -> TrainedModel:
    return trained_model(tiny)


@pytest.fixture(scope="module")
def any_trained(any_tiny) -> TrainedModel:
    return trained_model(any_tiny)


@pytest.fixture(scope="module")
def source_ids(tiny):
    """The tiny pairs' sources, and a few of their words in another order (many lengths)."""
    words = [source for source, _ in TINY_PAIRS]
    sentences = words + [" ".join(reversed(sentence.split())) for sentence in words]
    ragged = text_lib.make_vectorizer(tiny.source_vocabulary)(tf.constant(sentences))
    return padded(ragged[:, : tiny.config.max_source_length])


# --- Config and command line -------------------------------------------------------------------


def test_the_transformer_flags_make_the_config():
    args = build_parser().parse_args(
        ["train", "--architecture", "transformer", "--transformer-layers", "2",
         "--transformer-decoder-layers", "1", "--transformer-width", "128", "--transformer-heads", "8",
         "--transformer-feed-forward", "512", "--transformer-dropout", "0.2"]
    )
    config = config_from_args(args)
    assert config.is_transformer and not config.is_classic
    assert (config.transformer_layers, config.transformer_decoder_blocks, config.transformer_width,
            config.transformer_heads, config.transformer_feed_forward,
            config.transformer_dropout) == (2, 1, 128, 8, 512, 0.2)
    assert config.reverse_source is False  # positions carry the order; nothing to reverse
    assert config.output_projection_dim == 0  # the width is already small


def test_a_config_saved_before_the_decoder_block_count_keeps_as_many_as_the_encoder():
    saved = json.loads(Seq2SeqConfig(architecture="transformer", transformer_layers=3).to_json())
    del saved["transformer_decoder_layers"]
    config = Seq2SeqConfig.from_json(json.dumps(saved))
    assert (config.transformer_layers, config.transformer_decoder_blocks) == (3, 3)
    assert Seq2SeqConfig(transformer_layers=3, transformer_decoder_layers=1).transformer_decoder_blocks == 1


@pytest.mark.parametrize(
    "switches, message",
    [
        (dict(architecture="rnn2"), "architecture must be one of"),
        (dict(transformer_width=30, transformer_heads=4), "multiple of"),
        (dict(transformer_layers=0), "transformer_layers must be at least 1"),
        (dict(transformer_decoder_layers=0), "transformer_decoder_layers must be at least 1"),
        (dict(transformer_dropout=1.0), "transformer_dropout must be in"),
        (dict(reverse_source=True), "reverse_source works only"),
    ],
)
def test_transformer_sizes_that_cannot_build_are_refused(switches, message):
    with pytest.raises(ValueError, match=message):
        Seq2SeqConfig(**{"architecture": "transformer", **switches})


# --- The model -----------------------------------------------------------------------------------


def test_the_transformer_has_its_named_layers_and_trains(tiny_transformer):
    tiny, losses = tiny_transformer
    names = {layer.name for layer in tiny.model.layers}
    expected = {"encoder_embedding", "encoder_positions", "encoder_block_1", "encoder_norm",
                "decoder_embedding", "decoder_positions", "decoder_block_1", "decoder_block_2",
                "decoder_norm", "decoder_dense"}
    assert expected <= names
    assert not {"encoder_block_2", "decoder_block_3"} & names
    layers = transformer.TransformerLayers.find(tiny.model)
    assert (len(layers.encoder_blocks), len(layers.decoder_blocks)) == (1, 2)
    assert losses[-1] < losses[0] - 1.0, f"loss {losses[0]:.2f} → {losses[-1]:.2f}"


def test_a_tied_decoder_embedding_is_the_output_layers_matrix(tied_transformer):
    tied, losses = tied_transformer
    embedding = tied.model.get_layer("decoder_embedding")
    assert isinstance(embedding, keras.layers.ReversibleEmbedding) and embedding.tie_weights
    assert [weight.name for weight in tied.model.get_layer("decoder_dense").weights] == ["bias"]
    vocab, width = embedding.embeddings.shape
    untied = transformer.build_transformer_model(
        dataclasses.replace(tied.config, transformer_tie_embeddings=False))
    assert untied.count_params() - tied.model.count_params() == vocab * width
    # The model's probabilities are the softmax of the outputs times the transposed matrix.
    source_ids = padded(tied.tokens.source_ids)
    decoder_input = padded(tied.tokens.target_ids)[:, :-1]
    outputs = keras.Model(tied.model.inputs, tied.model.get_layer("decoder_norm").output)(
        [source_ids, decoder_input]).numpy()
    bias = tied.model.get_layer("decoder_dense").bias.numpy()
    expected = tf.nn.softmax(outputs @ embedding.embeddings.numpy().T + bias).numpy()
    np.testing.assert_allclose(tied.model([source_ids, decoder_input]).numpy(), expected,
                               atol=LOGIT_TOLERANCE)
    assert losses[-1] < losses[0] - 1.0, f"loss {losses[0]:.2f} → {losses[-1]:.2f}"


def test_a_shared_vocabulary_and_tied_embeddings_make_one_matrix_for_all_three(
    shared_transformer, tied_transformer
):
    shared, losses = shared_transformer
    assert shared.source_vocabulary == shared.target_vocabulary
    names = {layer.name for layer in shared.model.layers}
    assert "encoder_embedding" not in names and "decoder_embedding" in names
    layers = transformer.TransformerLayers.find(shared.model)
    assert layers.encoder_embedding is layers.decoder_embedding
    # One matrix fewer than the tied twin, whose vocabularies have the same sizes.
    tied = tied_transformer[0].model
    vocab, width = shared.config.source_vocab_size, shared.config.transformer_width
    assert tied.count_params() - shared.model.count_params() == vocab * width
    assert losses[-1] < losses[0] / 2
    # Changing the matrix changes what the encoder reads: the translation of a source moves.
    source_ids = padded(shared.tokens.source_ids)[:2]
    memory = keras.Model(shared.model.inputs[0], shared.model.get_layer("encoder_norm").output)
    before = memory(source_ids).numpy()
    matrix = layers.decoder_embedding.embeddings
    saved = matrix.numpy()
    matrix.assign(saved * 2.0)
    try:
        assert not np.allclose(memory(source_ids).numpy(), before)
    finally:
        matrix.assign(saved)


def test_tied_embeddings_need_no_output_projection():
    with pytest.raises(ValueError, match="output_projection_dim=0"):
        Seq2SeqConfig(architecture="transformer", transformer_tie_embeddings=True,
                      output_projection_dim=64)
    args = build_parser().parse_args(["train", "--architecture", "transformer",
                                      "--transformer-tie-embeddings"])
    assert config_from_args(args).transformer_tie_embeddings
    assert not Seq2SeqConfig.from_json('{"architecture": "transformer"}').transformer_tie_embeddings
    args = build_parser().parse_args(["train", "--architecture", "transformer",
                                      "--transformer-tie-embeddings", "--shared-vocabulary"])
    assert transformer.shares_all_embeddings(config_from_args(args))


def test_the_dropout_default_follows_the_precision_the_model_trains_in(tiny_config, tmp_path):
    # float32 on a CPU without bfloat16 fits fewer epochs in the budget, and overfits less.
    auto = dataclasses.replace(tiny_config, **TINY_TRANSFORMER)
    assert auto.precision == "auto" and auto.transformer_dropout is None
    resolved = {precision: dataclasses.replace(auto, precision=precision).transformer_dropout
                for precision in ("float32", "mixed_bfloat16", "mixed_float16")}
    assert resolved == {"float32": 0.05, "mixed_bfloat16": 0.1, "mixed_float16": 0.1}
    named = dataclasses.replace(auto, transformer_dropout=0.2)
    assert dataclasses.replace(named, precision="float32").transformer_dropout == 0.2
    dataclasses.replace(auto, precision="float32").save(tmp_path)  # what `train` records
    assert '"transformer_dropout": 0.05' in (tmp_path / "config.json").read_text()
    # Built straight from an "auto" config, a model takes the default of the dtype policy it
    # is built under; `train` builds it under the precision it resolved.
    rates = {layer.rate for layer in transformer.build_transformer_model(auto).layers
             if isinstance(layer, transformer_blocks.PositionalEncoding)}
    assert rates == {0.05}
    trained_in = train_lib.resolve_precision("auto")
    built = train_lib.build_model(auto)
    assert built.get_layer("decoder_positions").rate == resolved[trained_in]


def test_positions_are_the_papers_sinusoids():
    vectors = transformer_blocks.position_vectors(tf.constant([0.0, 1.0, 7.0]), 8).numpy()
    frequencies = 10_000.0 ** -(np.arange(4) / 3)
    angles = np.array([0.0, 1.0, 7.0])[:, None] * frequencies
    np.testing.assert_allclose(vectors, np.concatenate([np.sin(angles), np.cos(angles)], 1),
                               rtol=1e-5, atol=1e-6)


def test_a_target_position_does_not_see_the_positions_after_it(tiny, source_ids):
    decoder_input = padded(tiny.tokens.target_ids)[: len(source_ids) // 2, :-1]
    sources = source_ids[: len(decoder_input)]
    changed = decoder_input.copy()
    changed[:, 3:] = (changed[:, 3:] + 5) % tiny.config.target_vocab_size
    before = tiny.model([sources, decoder_input]).numpy()
    after = tiny.model([sources, changed]).numpy()
    np.testing.assert_allclose(after[:, :3], before[:, :3], rtol=1e-5, atol=1e-6)
    assert np.abs(after[:, 3:] - before[:, 3:]).max() > 1e-3


def test_padding_the_source_changes_nothing(tiny, source_ids):
    decoder_input = padded(tiny.tokens.target_ids)[: len(source_ids), :-1]
    decoder_input = np.resize(decoder_input, (len(source_ids), decoder_input.shape[1]))
    wider = np.pad(source_ids, [(0, 0), (0, 5)])
    np.testing.assert_allclose(tiny.model([wider, decoder_input]).numpy(),
                               tiny.model([source_ids, decoder_input]).numpy(),
                               rtol=1e-5, atol=1e-6)


# --- The cached step ---------------------------------------------------------------------------


@pytest.mark.parametrize("grow", [False, True], ids=["preallocated", "growing"])
def test_the_cached_step_gives_the_teacher_forced_logits_at_every_position(any_tiny, grow):
    source_ids = padded(any_tiny.tokens.source_ids)
    target_ids = padded(any_tiny.tokens.target_ids)
    decoder_input = target_ids[:, :-1]
    expected = np.log(any_tiny.model([source_ids, decoder_input]).numpy())
    layers = transformer.TransformerLayers.find(any_tiny.model)
    slots = 0 if grow else decoder_input.shape[1]
    state = transformer_decode.encode(layers, tf.constant(source_ids), slots)
    for position in range(decoder_input.shape[1]):
        logits, state, weights = transformer_decode.decoder_logits(
            layers, tf.constant(decoder_input[:, position]), state, grow=grow
        )
        log_probs = tf.nn.log_softmax(logits).numpy()
        real = decoder_input[:, position] != PAD
        np.testing.assert_allclose(log_probs[real], expected[real, position],
                                   rtol=LOGIT_TOLERANCE, atol=LOGIT_TOLERANCE)
        assert weights.shape == source_ids.shape
        # A growing cache holds exactly the positions so far; a preallocated one, every slot.
        assert state[1].shape[2] == (position + 1 if grow else slots)
    np.testing.assert_array_equal(state[0], decoder_input.shape[1])  # every row moved on


def test_growing_and_preallocated_caches_decode_the_same(tiny, source_ids):
    growing = GraphDecoder(tiny.model, tiny.config.max_decode_length)
    preallocated = GraphDecoder(tiny.model, tiny.config.max_decode_length, fixed_shapes=True)
    for beam_width in (1, 4):
        expected, actual = (decoder.decode(source_ids, beam_width) for decoder in (preallocated, growing))
        np.testing.assert_array_equal(actual.token_ids, expected.token_ids)
        np.testing.assert_allclose(actual.log_probs, expected.log_probs, rtol=LOGIT_TOLERANCE)


@pytest.mark.parametrize("uncached_step", ["whole_model_logits", "uncached_decoder_logits"])
def test_the_uncached_steps_give_the_same_logits(tiny, uncached_step):
    source_ids = padded(tiny.tokens.source_ids)
    decoder_input = padded(tiny.tokens.target_ids)[:, :-1]
    layers = transformer.TransformerLayers.find(tiny.model)
    step = getattr(transformer_decode, uncached_step)
    cached = transformer_decode.encode(layers, tf.constant(source_ids), decoder_input.shape[1])
    uncached = transformer_decode.uncached_encode(layers, tf.constant(source_ids))
    for position in range(decoder_input.shape[1]):
        tokens = tf.constant(decoder_input[:, position])
        expected, cached, _ = transformer_decode.decoder_logits(layers, tokens, cached)
        actual, uncached = step(layers, tokens, uncached)
        assert uncached[1].shape[1] == position + 1  # the prefix grows by one token a step
        np.testing.assert_allclose(actual, expected, rtol=LOGIT_TOLERANCE, atol=LOGIT_TOLERANCE)


def test_inference_models_reproduce_teacher_forced_probabilities(any_tiny):
    source_ids = padded(any_tiny.tokens.source_ids)
    target_ids = padded(any_tiny.tokens.target_ids)
    decoder_input_ids, next_ids = target_ids[:, :-1], target_ids[:, 1:]
    expected = any_tiny.model([source_ids, decoder_input_ids]).numpy()

    models = build_inference_models(any_tiny.model, any_tiny.config.max_decode_length)
    assert [layer.name for layer in models.decoder_step.inputs][:2] == ["token_ids", "positions"]
    state = as_list(models.encoder(tf.constant(source_ids)))
    for step in range(decoder_input_ids.shape[1]):
        tokens = tf.constant(decoder_input_ids[:, step : step + 1])
        outputs = as_list(models.decoder_step([tokens, *state]))
        probabilities, state = outputs[0], outputs[1:]
        real = next_ids[:, step] != PAD
        difference = np.abs(probabilities.numpy()[:, 0, :] - expected[:, step, :])[real]
        assert difference.max() <= LOGIT_TOLERANCE, f"step {step}: {difference.max()}"


def test_graph_greedy_equals_the_stepwise_decoder(any_tiny, source_ids):
    max_length = any_tiny.config.max_decode_length
    expected = greedy_decode_stepwise(build_inference_models(any_tiny.model, max_length),
                                      source_ids, max_length)
    result = GraphDecoder(any_tiny.model, max_length).greedy(tf.constant(source_ids))
    np.testing.assert_array_equal(result.token_ids.numpy(), expected)
    assert len(np.unique(expected, axis=0)) > 3  # the sentences do not all decode alike
    np.testing.assert_allclose(result.log_probs.numpy(),
                               teacher_forced_log_probs(any_tiny, source_ids, expected),
                               rtol=1e-4, atol=1e-4)


def test_the_stepwise_decoder_refuses_more_steps_than_its_caches_hold(tiny, source_ids):
    models = build_inference_models(tiny.model, max_length=4)
    with pytest.raises(ValueError, match="caches hold"):
        greedy_decode_stepwise(models, source_ids, max_length=5)


def test_beam_one_is_greedy_and_beams_rescore_as_the_training_model(tiny, source_ids):
    decoder = GraphDecoder(tiny.model, tiny.config.max_decode_length)
    greedy, beam_one = greedy_and_beam_one(decoder, source_ids)
    np.testing.assert_array_equal(beam_one.token_ids, greedy.token_ids)
    beam = decoder.beam(tf.constant(source_ids), tf.constant(3), tf.constant(0.6))
    # The beams' caches followed their parents: rescoring with the training model agrees.
    np.testing.assert_allclose(beam.log_probs.numpy(),
                               teacher_forced_log_probs(tiny, source_ids, beam.token_ids.numpy()),
                               rtol=1e-4, atol=1e-4)


def test_empty_batches_and_sources_of_only_padding_decode(tiny):
    decoder = GraphDecoder(tiny.model, tiny.config.max_decode_length)
    for shape in [(0, 0), (2, 0), (0, 3)]:
        no_source = tf.zeros(shape, tf.int64)
        assert decoder.greedy(no_source).token_ids.shape[0] == shape[0]
        assert decoder.decode(no_source, beam_width=3).token_ids.shape[0] == shape[0]
    expected = greedy_decode_stepwise(build_inference_models(tiny.model, 12),
                                      np.zeros((2, 1), np.int64), 12)
    np.testing.assert_array_equal(decoder.greedy(tf.zeros([2, 1], tf.int64)).token_ids, expected)


def test_cross_attention_weights_sum_to_one_over_the_source_and_are_zero_on_padding(
    tiny, source_ids
):
    decoder = GraphDecoder(tiny.model, tiny.config.max_decode_length)
    result, weights = decoder.greedy_with_attention(tf.constant(source_ids))
    weights, is_real = weights.numpy(), source_ids != PAD
    assert (~is_real).any()
    produced = np.arange(weights.shape[1])[None, :] < result.lengths.numpy()[:, None]
    np.testing.assert_allclose(weights.sum(axis=-1)[produced], 1.0, rtol=1e-5)
    assert (weights[np.broadcast_to(~is_real[:, None, :], weights.shape)] == 0.0).all()
    assert (weights[~produced] == 0.0).all()


# --- Saved, reloaded, translated and exported --------------------------------------------------


def test_a_saved_transformer_reloads_in_a_fresh_process_and_translates_the_same(any_trained, tmp_path):
    save_model_directory(tmp_path / "model", any_trained)
    sources = [source for source, _ in TINY_PAIRS]
    expected = Translator.from_trained(any_trained).translate(sources, beam_width=1)
    completed = subprocess.run(
        [sys.executable, "-m", "seq2seq_keras", "translate", "--model-dir", str(tmp_path / "model"),
         "--beam", "1", *sources],
        capture_output=True, text=True, check=True,
    )
    assert [line.split("  →  ")[-1] for line in completed.stdout.splitlines()] == expected


@pytest.mark.bfloat16
def test_a_mixed_bfloat16_transformer_reloads_into_a_float32_process_in_bfloat16(trained, tmp_path):
    # As train --precision mixed_bfloat16 builds it; the global policy stays float32, as it is
    # in the process that later loads the model directory.
    config = dataclasses.replace(trained.config, precision="mixed_bfloat16")
    model = train_lib.build_model(config)
    model.set_weights(trained.training_model.get_weights())
    mixed = TrainedModel(config, model, trained.source_vocabulary, trained.target_vocabulary)
    save_model_directory(tmp_path / "model", mixed)

    reloaded = load_trained_model(tmp_path / "model")
    block = reloaded.training_model.get_layer("decoder_block_1")
    for sublayer in (block, block.self_attention, block.cross_attention, block.feed_forward_inner):
        assert sublayer.compute_dtype == "bfloat16", sublayer.name
    sources = [source for source, _ in TINY_PAIRS]
    assert Translator.from_trained(reloaded).translate(sources, beam_width=1) == (
        Translator.from_trained(mixed).translate(sources, beam_width=1)
    )


def test_an_export_translates_like_the_translator_and_returns_cross_attention(trained, tmp_path):
    loaded = tf.saved_model.load(str(export.export_saved_model(trained, "transformer", tmp_path)))
    assert {SERVING_SIGNATURE, ATTENTION_SIGNATURE} <= set(loaded.signatures)
    sentences = [source for source, _ in TINY_PAIRS] + ["", "Thank you, my friend, thank you."]
    expected = Translator.from_trained(trained).translate(sentences, beam_width=1)
    outputs = loaded.signatures[ATTENTION_SIGNATURE](sentences=tf.constant(sentences))
    assert [text.decode("utf-8") for text in outputs["translations"].numpy()] == expected
    weights = outputs["attention_weights"].numpy()
    produced = outputs["target_tokens"].numpy() != b""
    has_source = (outputs["source_tokens"].numpy() != b"").any(axis=1)
    np.testing.assert_allclose(weights.sum(-1)[produced & has_source[:, None]], 1.0, rtol=1e-5)


def test_python_savedmodel_and_litert_give_the_same_strings_on_hostile_input(any_trained, tmp_path):
    translator = Translator.from_trained(any_trained)
    reloaded = tf.saved_model.load(str(export.export_saved_model(any_trained, "hostile", tmp_path)))
    lite = LiteTranslator(export_litert(any_trained, "hostile", tmp_path))
    batch = tf.constant(as_utf8_list(HOSTILE))
    for beam_width in (1, 3):
        expected = translator.translate(HOSTILE, beam_width=beam_width)
        assert lite.translate(HOSTILE, beam_width=beam_width) == expected
        outputs = reloaded.signatures[BEAM_SIGNATURE](sentences=batch, beam_width=beam_width)
        assert [text.decode("utf-8") for text in outputs["translations"].numpy()] == expected
    sources = [source for source, _ in TINY_PAIRS]
    assert lite.translate(sources) == translator.translate(sources)
    assert len(set(translator.translate(sources))) > 3


def test_the_litert_flatbuffer_has_builtin_ops_only(any_trained, tmp_path):
    ops = model_ops(export_litert(any_trained, "ops", tmp_path) / MODEL_FILENAME)
    assert "FULLY_CONNECTED" in ops or "BATCH_MATMUL" in ops
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
