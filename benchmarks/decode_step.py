"""What one decoder step costs: milliseconds and graph ops, for several trained models.

    python benchmarks/decode_step.py --model-dir runs/eng_spa_attention \\
        --model-dir runs/eng_spa_transformer [--batch 64] [--steps 30] [--threads 1]

A search spends its time in the step its `tf.while_loop` runs once per generated token; this
times that step alone, without the search around it, so that steps of different models (the
LSTM with attention, Transformers with more or fewer decoder blocks) compare directly. Each
model's graph decoder (`graph_decoder.GraphDecoder`, float32) encodes the same sentence
`--batch` times and runs `--steps` steps in one compiled `tf.while_loop`, feeding back each
step's most probable token, after one untimed warm-up; the row is the best of `REPEATS` runs.
It also counts the step's graph ops and its matmul FLOPs (every MatMul, BatchMatMul and
Einsum, 2 FLOPs a multiply-add), and prints the GFLOP/s the step reaches beside the rate of
plain float32 matmuls of `--batch` rows timed in the same run, in the same kind of loop: how
fast the step's matmuls could run with nothing else around them. Ratios are against the
first model.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The project root in place of this folder, whose litert.py would shadow the `litert` module
# TensorFlow imports.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import tensorflow as tf  # noqa: E402

from seq2seq_keras import search  # noqa: E402
from seq2seq_keras.graph_decoder import GraphDecoder  # noqa: E402
from seq2seq_keras.model import float32_model  # noqa: E402
from seq2seq_keras.model_dir import load_trained_model  # noqa: E402
from seq2seq_keras.text import START_ID  # noqa: E402
from seq2seq_keras.tokenizers import make_tokenizer  # noqa: E402

SENTENCE = "I bought a red car last week and it was too expensive."
REPEATS = 5
# (inner, outer) sizes of the reference matmuls, `(batch, inner) @ (inner, outer)`: the output
# layer (256 → 8,000 pieces), a feed-forward layer (256 → 1,024), an attention projection.
REFERENCE_MATMULS = ((256, 8000), (256, 1024), (256, 256))
MATMUL_OPS = ("MatMul", "BatchMatMulV2", "Einsum")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", action="append", required=True, metavar="DIR",
                        help="a trained model directory; repeat to compare (the first is the baseline)")
    parser.add_argument("--batch", type=int, default=64, help="sentences per step (default: 64)")
    parser.add_argument("--steps", type=int, default=30,
                        help="steps per timed run: a Transformer's cache grows to that length (default: 30)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow's intra-op and inter-op threads (default 0: its own "
                             "choice, one per core); 1 shows how much a step gains from a second core")
    return parser.parse_args()


def step_cost(model_dir: str, batch: int, steps: int) -> tuple[float, int, float]:
    """`(milliseconds a step, ops in the step's graph, its matmul MFLOPs)` of one trained model."""
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
        loop_vars = (tf.constant(0), tokens, state)  # a Transformer's caches grow each step
        return tf.while_loop(lambda i, *_: i < steps, one_step, loop_vars,
                             shape_invariants=search.any_shape(loop_vars))[1]

    seconds = best_seconds(lambda: run_steps(tokens, state))
    midway = state  # a Transformer's caches as long as on the timed run's average step
    for _ in range(steps // 2):
        _, midway = decoder.step(tokens, midway)
    graph = tf.function(decoder.step).get_concrete_function(tokens, midway).graph
    return seconds / steps * 1e3, len(graph.get_operations()), matmul_flops(graph) / 1e6


def best_seconds(function) -> float:
    """The best wall time of `REPEATS` calls of a compiled `function`, after one call that
    traces and warms it up."""
    function().numpy()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        function().numpy()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_flops(graph) -> int:
    """The FLOPs of the matmuls in `graph` (static shapes): 2 per multiply-add."""
    total = 0
    for op in graph.get_operations():
        if op.type not in MATMUL_OPS:
            continue
        if op.type == "Einsum":  # a two-operand contraction: every index multiplied once
            inputs = op.get_attr("equation").decode().split("->")[0].split(",")
            sizes = {letter: size for letters, tensor in zip(inputs, op.inputs)
                     for letter, size in zip(letters, tensor.shape.as_list())}
            total += 2 * math.prod(sizes.values())
        else:
            left = op.inputs[0].shape.as_list()
            transposed = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
            inner = left[-2] if transposed else left[-1]
            total += 2 * inner * math.prod(op.outputs[0].shape.as_list())
    return total


def matmul_rate(rows: int, inner: int, outer: int, repeats: int = 200) -> float:
    """GFLOP/s of a float32 `(rows, inner) @ (inner, outer)` matmul, `repeats` of them in a
    `tf.while_loop`, as the decoder's step runs (`benchmarks/matmul.py` times unrolled chains,
    which skip the loop's own cost per iteration)."""
    weights = tf.Variable(tf.random.normal([inner, outer]))

    @tf.function
    def run(x):
        def one(i, x):
            return i + 1, x + 0.0 * tf.reduce_sum(tf.matmul(x, weights))
        return tf.while_loop(lambda i, _: i < repeats, one, (0, x))[1]

    x = tf.random.normal([rows, inner])
    return 2 * rows * inner * outer * repeats / best_seconds(lambda: run(x)) / 1e9


def main() -> None:
    args = parse_args()
    if args.threads:  # before TensorFlow runs anything
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    rows = [(model_dir, *step_cost(model_dir, args.batch, args.steps)) for model_dir in args.model_dir]
    rates = [(inner, outer, matmul_rate(args.batch, inner, outer)) for inner, outer in REFERENCE_MATMULS]
    baseline_ms = rows[0][1]
    threads = f"{args.threads} thread(s)" if args.threads else "TensorFlow's default threads"
    print(f"\none decoder step at batch {args.batch}, best of {REPEATS} runs of {args.steps} steps, "
          f"{threads}")
    print(f"{'model':<44}{'ms/step':>9}{'ops':>7}{'MFLOP':>8}{'GFLOP/s':>9}{'x first':>9}")
    for model_dir, milliseconds, ops, mflops in rows:
        print(f"{model_dir:<44}{milliseconds:>9.2f}{ops:>7}{mflops:>8.0f}{mflops / milliseconds:>9.1f}"
              f"{milliseconds / baseline_ms:>9.2f}")
    print(f"\nfloat32 matmuls alone, same run: " + ", ".join(
        f"({args.batch}x{inner})@({inner}x{outer}) {rate:.0f} GFLOP/s" for inner, outer, rate in rates))


if __name__ == "__main__":
    main()
