"""What one decoder step costs: milliseconds and graph ops, for several trained models.

    python benchmarks/decode_step.py --model-dir runs/eng_spa_attention \\
        --model-dir runs/eng_spa_transformer [--batch 64] [--steps 30]

A search spends its time in the step its `tf.while_loop` runs once per generated token; this
times that step alone, without the search around it, so that steps of different models (the
LSTM with attention, Transformers with more or fewer decoder blocks) compare directly. Each
model's graph decoder (`graph_decoder.GraphDecoder`, float32) encodes the same sentence
`--batch` times and runs `--steps` steps in one compiled `tf.while_loop`, feeding back each
step's most probable token, after one untimed warm-up; the row is the best of `REPEATS` runs.
It also counts the ops in the step's graph: at batch 64 most ops work on small tensors, so the
executor's cost per op weighs as much as their arithmetic. Ratios are against the first model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The project root in place of this folder, whose litert.py would shadow the `litert` module
# TensorFlow imports.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import tensorflow as tf  # noqa: E402

from seq2seq_keras.graph_decoder import GraphDecoder  # noqa: E402
from seq2seq_keras.model import float32_model  # noqa: E402
from seq2seq_keras.model_dir import load_trained_model  # noqa: E402
from seq2seq_keras.text import START_ID  # noqa: E402
from seq2seq_keras.tokenizers import make_tokenizer  # noqa: E402

SENTENCE = "I bought a red car last week and it was too expensive."
REPEATS = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", action="append", required=True, metavar="DIR",
                        help="a trained model directory; repeat to compare (the first is the baseline)")
    parser.add_argument("--batch", type=int, default=64, help="sentences per step (default: 64)")
    parser.add_argument("--steps", type=int, default=30,
                        help="steps per timed run; also the Transformer's cache length (default: 30)")
    return parser.parse_args()


def step_cost(model_dir: str, batch: int, steps: int) -> tuple[float, int]:
    """`(milliseconds a step, ops in the step's graph)` of one trained model."""
    trained = load_trained_model(model_dir)
    decoder = GraphDecoder(
        float32_model(trained.training_model, trained.config), steps,
        vocabulary_size=len(trained.target_vocabulary),
    )
    tokenizer = make_tokenizer(trained.config.tokenizer, trained.source_vocabulary)
    source_ids = tokenizer.tokenize(tf.constant([SENTENCE] * batch)).to_tensor()
    state = decoder.encode(source_ids)
    tokens = tf.fill([batch], tf.constant(START_ID, tf.int64))

    @tf.function
    def run_steps(tokens, state):
        def one_step(i, tokens, state):
            logits, state = decoder.step(tokens, state)
            return i + 1, tf.argmax(logits, axis=-1), state
        return tf.while_loop(lambda i, *_: i < steps, one_step, (0, tokens, state))[1]

    run_steps(tokens, state)  # trace and warm up
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        run_steps(tokens, state).numpy()
        best = min(best, time.perf_counter() - start)
    graph = tf.function(decoder.step).get_concrete_function(tokens, state).graph
    return best / steps * 1e3, len(graph.get_operations())


def main() -> None:
    args = parse_args()
    rows = [(model_dir, *step_cost(model_dir, args.batch, args.steps)) for model_dir in args.model_dir]
    baseline_ms = rows[0][1]
    print(f"\none decoder step at batch {args.batch}, best of {REPEATS} runs of {args.steps} steps")
    print(f"{'model':<44}{'ms/step':>9}{'ops':>7}{'x first':>9}")
    for model_dir, milliseconds, ops in rows:
        print(f"{model_dir:<44}{milliseconds:>9.2f}{ops:>7}{milliseconds / baseline_ms:>9.2f}")


if __name__ == "__main__":
    main()
