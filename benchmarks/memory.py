"""Memory and start-up time of a training run as the corpus grows: 1× against 10× the pairs.

    python benchmarks/memory.py [--data PATH] [--tokenizer word|wordpiece] [--steps 10]
                                [--repeats 10] [--source-vocab-size N] [--target-vocab-size N]

Writes, in a temporary directory, a file holding the training pairs of `--data` `--repeats`
times over, then its validation and test pairs once: its fixed split has the same validation
and test pairs and ten times the training pairs. Then `train.train` (the default config with
`--tokenizer`) runs on the original file and on the large one, each in a fresh process that
stops once `--steps` training steps have ended (vocabulary sizes as the default config, unless
given). For each it prints the peak resident memory
of the process up to then (`VmHWM`) and the seconds from the process's start (importing
TensorFlow included) until the first step ended, then the ratios of the large run to the
original. The last lines are `peak RSS ratio (10x / 1x): X.XX` and `first step after: X s`.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # before TensorFlow is imported: the start-up counts it

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The project root in place of this folder, whose litert.py would shadow the `litert` module
# TensorFlow imports.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from seq2seq_keras import data as data_lib  # noqa: E402
from seq2seq_keras.config import Seq2SeqConfig  # noqa: E402
from seq2seq_keras.config_defaults import TOKENIZERS  # noqa: E402

KIBIBYTES_PER_MEBIBYTE = 1024


# --- The parent: write the large file, run both sizes, print the table --------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="the pairs file (default: $SEQ2SEQ_DATA or the download)")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, default="word")
    parser.add_argument("--steps", type=int, default=10,
                        help="training steps each run takes before it is measured and stopped")
    parser.add_argument("--repeats", type=int, default=10,
                        help="how many times the large file holds the training pairs")
    defaults = Seq2SeqConfig()
    parser.add_argument("--source-vocab-size", type=int, default=defaults.source_vocab_size)
    parser.add_argument("--target-vocab-size", type=int, default=defaults.target_vocab_size)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(measure_training_start(args)), flush=True)
        return

    data_file = data_lib.resolve_data_file(args.data)
    splits = data_lib.split_pairs(data_lib.read_pairs(data_file).pairs)
    large = f"{args.repeats}x"
    with tempfile.TemporaryDirectory() as scratch:
        large_file = Path(scratch) / "pairs.txt"
        write_repeated_pairs(splits, args.repeats, large_file)
        runs = {
            "1x": (data_file, len(splits.train)),
            large: (large_file, len(splits.train) * args.repeats),
        }
        results = {}
        for name, (path, train_pairs) in runs.items():
            results[name] = {"train_pairs": train_pairs, **run_child(args, path, scratch)}
            print(f"  {name}: {results[name]}", flush=True)
    print_report(results, args, large)


def write_repeated_pairs(splits: data_lib.Splits, repeats: int, path: Path) -> None:
    """The training pairs `repeats` times, then the validation and test pairs once."""
    with path.open("w", encoding="utf-8") as file:
        for _ in range(repeats):
            file.writelines(f"{source}\t{target}\n" for source, target in splits.train)
        for source, target in splits.validation + splits.test:
            file.write(f"{source}\t{target}\n")


def run_child(args, data_file: Path, scratch: str) -> dict:
    arguments = ["--worker", str(data_file), "--tokenizer", args.tokenizer,
                 "--steps", str(args.steps), "--source-vocab-size", str(args.source_vocab_size),
                 "--target-vocab-size", str(args.target_vocab_size)]
    env = {**os.environ, "TMPDIR": scratch}
    completed = subprocess.run([sys.executable, __file__, *arguments], capture_output=True,
                               text=True, encoding="utf-8", env=env)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode or not lines:
        sys.exit(f"benchmark child {arguments} failed:\n{completed.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def print_report(results: dict, args, large: str) -> None:
    print()
    print(f"tokenizer {args.tokenizer}, vocabularies {args.source_vocab_size:,} / "
          f"{args.target_vocab_size:,}, the default model otherwise; peak RSS up to the end of "
          f"training step {args.steps}; seconds from process start")
    print(f"{'corpus':<8} {'train pairs':>12} {'peak RSS MB':>12} {'first step s':>13} "
          f"{f'step {args.steps} s':>10}")
    for name, result in results.items():
        print(f"{name:<8} {result['train_pairs']:>12,} {result['peak_rss_mb']:>12.0f} "
              f"{result['first_step_seconds']:>13.0f} {result['last_step_seconds']:>10.0f}")
    base, grown = results["1x"], results[large]
    print(f"peak RSS ratio ({large} / 1x): {grown['peak_rss_mb'] / base['peak_rss_mb']:.2f}")
    print(f"first step after: {grown['first_step_seconds']:.0f} s ({large}; "
          f"1x: {base['first_step_seconds']:.0f} s)")


# --- The child: the real training run, stopped after a few steps ---------------------------------


def measure_training_start(args) -> dict:
    """Run `train.train` on `args.worker` and exit once `args.steps` steps have ended."""
    import keras

    from seq2seq_keras import train as train_lib

    class StopAfterSteps(keras.callbacks.Callback):
        """Record the time of the first step's end; at step `steps`, report and exit at once
        (nothing is validated or written: the measurement is the start of training)."""

        def __init__(self, steps: int):
            super().__init__()
            self.steps = steps
            self.first_step_seconds = 0.0

        def on_train_batch_end(self, batch, logs=None):
            float((logs or {}).get("loss", 0.0))  # waits for the step's result
            if batch == 0:
                self.first_step_seconds = time.monotonic() - STARTED
            if batch + 1 >= self.steps:
                result = {
                    "peak_rss_mb": peak_rss_kib() / KIBIBYTES_PER_MEBIBYTE,
                    "first_step_seconds": self.first_step_seconds,
                    "last_step_seconds": time.monotonic() - STARTED,
                }
                print("RESULT " + json.dumps(result), flush=True)
                os._exit(0)

    make_callbacks = train_lib.make_callbacks

    def make_callbacks_and_stop(*arguments, **keywords):
        run = make_callbacks(*arguments, **keywords)
        run.callbacks.append(StopAfterSteps(args.steps))
        return run

    train_lib.make_callbacks = make_callbacks_and_stop
    config = Seq2SeqConfig(
        tokenizer=args.tokenizer,
        source_vocab_size=args.source_vocab_size,
        target_vocab_size=args.target_vocab_size,
    )
    with tempfile.TemporaryDirectory() as model_root:
        train_lib.train(config, Path(model_root) / "model", data=args.worker, verbose=0)
    raise SystemExit(f"training ended before step {args.steps}")


def peak_rss_kib() -> int:
    """This process's peak resident memory so far, in KiB (`VmHWM` of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status: this benchmark needs Linux")


if __name__ == "__main__":
    main()
