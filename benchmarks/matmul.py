"""The decoder step's matmuls in float32, bfloat16 and float16, one sentence and a batch.

    python benchmarks/matmul.py [--units 512] [--embedding-dim 256] [--vocab-size 8000]

A decoder step multiplies its rows by three weight matrices: the LSTM's input kernel
(embedding x 4 units), its recurrent kernel (units x 4 units) and the output projection
(units x vocabulary). This times each, with weights *stored* in each dtype (no conversion per
call), for 1, 64 and 256 rows: milliseconds per matmul (median of `--repeats` graph calls of
`--chain` dependent matmuls each), the weight bytes read per millisecond, and the ratio to
float32 in the same run. One sentence at a time the rows are few and a matmul is bound by
reading its weights; a batch makes it bound by arithmetic, where bfloat16's dot-product units
pay. The defaults are the default model's shapes (`config.Seq2SeqConfig`, WordPiece).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from seq2seq_keras.config import Seq2SeqConfig  # noqa: E402
from seq2seq_keras.config_defaults import DEFAULT_VOCAB_SIZES  # noqa: E402

DTYPES = (tf.float32, tf.bfloat16, tf.float16)
ROWS = (1, 64, 256)


def chained_matmuls(rows: int, inner: int, outer: int, dtype: tf.DType, chain: int):
    """A graph of `chain` matmuls `(rows, inner) @ (inner, outer)`, each waiting for the last.

    Each input depends on the previous product (times 0), so no two matmuls merge or overlap.
    """
    generator = tf.random.Generator.from_seed(0)
    inputs = tf.cast(generator.normal([rows, inner]), dtype)
    weights = tf.cast(generator.normal([inner, outer]), dtype)

    @tf.function
    def run():
        carry = tf.zeros([], dtype)
        for _ in range(chain):
            product = tf.matmul(inputs + carry * 0, weights)
            carry = product[0, 0]
        return carry

    return run


def median_ms(function, repeats: int) -> float:
    """Median wall time of `repeats` calls, after one warm-up call."""
    function().numpy()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function().numpy()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000


def main(argv=None) -> int:
    defaults = Seq2SeqConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=defaults.units)
    parser.add_argument("--embedding-dim", type=int, default=defaults.embedding_dim)
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZES["wordpiece"][1],
                        help="target vocabulary: the output projection's width")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--chain", type=int, default=10)
    args = parser.parse_args(argv)

    gates = 4 * args.units
    matrices = {
        "LSTM input kernel": (args.embedding_dim, gates),
        "LSTM recurrent kernel": (args.units, gates),
        "output projection": (args.units, args.vocab_size),
    }
    print(f"{os.cpu_count()} CPUs; TF {tf.__version__}; one matmul = (rows, inner) @ (inner, outer)")
    print(f"\n{'matrix':<24}{'shape':>12}{'rows':>6}{'dtype':>10}{'ms':>9}{'GB/s':>8}"
          f"{'x float32':>11}")
    step_ms = {}  # (rows, dtype) -> ms of one decoder step's three matmuls
    for name, (inner, outer) in matrices.items():
        for rows in ROWS:
            float32_ms = None
            for dtype in DTYPES:
                run = chained_matmuls(rows, inner, outer, dtype, args.chain)
                ms = median_ms(run, args.repeats) / args.chain
                float32_ms = float32_ms or ms
                step_ms[rows, dtype.name] = step_ms.get((rows, dtype.name), 0.0) + ms
                gigabytes = inner * outer * dtype.size / 1e9
                print(f"{name:<24}{f'{inner}x{outer}':>12}{rows:>6}{dtype.name:>10}{ms:>9.3f}"
                      f"{gigabytes / (ms / 1000):>8.1f}{float32_ms / ms:>11.2f}")
    print(f"\n{'decoder step, 3 matmuls':<24}{'rows':>6}{'dtype':>10}{'ms':>9}{'x float32':>11}")
    for rows in ROWS:
        for dtype in DTYPES:
            ms = step_ms[rows, dtype.name]
            print(f"{'':<24}{rows:>6}{dtype.name:>10}{ms:>9.3f}"
                  f"{step_ms[rows, 'float32'] / ms:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
