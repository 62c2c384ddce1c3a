import pytest

from seq2seq_keras import plots
from seq2seq_keras.evaluate import LengthBucket

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOCABULARY = ["", "[UNK]", "[START]", "[END]", "gracias", ".", "¡", "!"]


def test_top_tokens_ranks_by_probability_and_labels_padding():
    probabilities = [0.20, 0.0, 0.0, 0.05, 0.40, 0.05, 0.30, 0.0]
    assert plots.top_tokens(probabilities, VOCABULARY, top_k=4) == [
        ("gracias", 0.40),
        ("¡", 0.30),
        ("(padding)", 0.20),
        ("[END]", 0.05),  # tied with "." and earlier in the vocabulary
    ]


def test_top_tokens_rejects_probabilities_of_more_than_one_step():
    with pytest.raises(ValueError, match="single step"):
        plots.top_tokens([0.5] * 16, VOCABULARY)


def test_next_token_figure_is_a_png(tmp_path):
    probabilities = [0.0, 0.0, 0.0, 0.1, 0.6, 0.1, 0.2, 0.0]
    path = plots.plot_next_token_probabilities(
        probabilities, VOCABULARY, tmp_path / "step.png", top_k=3, title="step 1"
    )
    assert path == tmp_path / "step.png"
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_bleu_by_length_figure_draws_several_series(tmp_path):
    greedy = [LengthBucket(1, 3, 900, 41.0), LengthBucket(4, 6, 1000, 30.5)]
    beam = [LengthBucket(1, 3, 900, 42.5), LengthBucket(4, 6, 1000, 31.0)]
    path = plots.plot_bleu_by_length({"greedy": greedy, "beam 4": beam}, tmp_path / "bleu.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_bleu_against_length_draws_models_with_different_buckets(tmp_path):
    classic = [LengthBucket(1, 3, 900, 41.0), LengthBucket(4, 6, 1000, 30.5),
               LengthBucket(13, 15, 54, 7.2)]
    attention = [LengthBucket(1, 3, 900, 43.0), LengthBucket(4, 6, 1000, 35.0)]
    path = plots.plot_bleu_against_length(
        {"classic": classic, "attention": attention}, tmp_path / "decay.png", title="test"
    )
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_training_curves_of_several_runs_share_one_figure(tmp_path):
    history = {"loss": [3.0, 2.0], "val_loss": [3.1, 2.5], "masked_accuracy": [0.2, 0.4]}
    path = plots.plot_runs({"classic": history, "luong": {"loss": [2.5]}}, tmp_path / "runs.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_attention_heatmap_is_a_png(tmp_path):
    weights = [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.0, 0.0, 1.0]]
    path = plots.plot_attention(
        weights, ["thank", "you", "."], ["gracias", ".", "[END]"], tmp_path / "map.png"
    )
    assert path.read_bytes().startswith(PNG_SIGNATURE)
