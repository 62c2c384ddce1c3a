"""Training speed: the default pipeline against a plain Keras one, measured in the same run.

    python benchmarks/train.py [--data PATH] [--steps 40] [--warmup 10] [--rounds 1]
                               [--variants plain,default,...] [--train-seconds T | --train-steps N]

For each variant it prints real (unpadded) target tokens per second over `--steps` training
steps after `--warmup` steps, the padding fraction, the model FLOP/s (over the padded batch
shapes actually computed, and over real tokens only) against a dense matmul measured in the same
run, and the peak resident memory. With `--train-seconds T` it also trains every variant from
scratch for T seconds and reports the validation loss reached: equal time, not equal steps.
The report names the CPU kind and the instruction set of oneDNN's kernels in this run (from
oneDNN's verbose log: `ONEDNN_MAX_CPU_ISA=AVX2` makes any x86-64 CPU run the AVX2 kernels of a
CPU without AVX-512 or bfloat16), since rates differ about 2.5x between such CPUs.
The line before last is `speedup over padded: X.XX`, real target tokens/s of `default` over
`padded` (each batch padded to its own longest pair, as the TensorFlow translation tutorial's
pipeline does); the last line is `speedup: X.XX`, `default` over `plain`.

Variants (`--variants`, comma-separated; the default runs `plain,padded,default`):

    plain         random order, every batch padded to the longest training pair, batch 64,
                  float32, Keras defaults (the pipeline of a typical tutorial)
    padded        random order, each batch padded to its own longest pair, batch 128, float32
    float32       the default pipeline (length buckets of both sides, batch 128) in float32
    default       the shipped defaults: length buckets of both sides, batch 128, precision
                  "auto"
    jit           the default + XLA (`jit_compile=True`); batch shapes vary, so XLA recompiles
    jit_buckets   the default + XLA, every batch padded up to its bucket's boundary (few shapes)
    batch64, batch256
                  the default at another batch size
    threads_1_2, threads_2_1
                  the default with intra-op / inter-op thread pools of the given sizes
    previous      the step as the previous version computed it: Keras' `ignore_class`
                  cross-entropy, no output projection, Keras' own Adam update, no label
                  smoothing, batches grouped by the longer side
    fused_loss    previous + `objective.MaskedCrossEntropy` (one fused softmax cross-entropy)
    factorized    previous + a factorized output layer (`--output-projection-dim 256`)
    keras_adam    the default with Keras' own Adam update instead of `objective.FusedAdam`
    two_term_smoothing
                  the default with label smoothing's uniform term computed apart from the
                  cross-entropy instead of one cross-entropy against smoothed targets
    fine_buckets  the default with a length bucket for every length up to 16 (less padding)
    projection128 the default with a narrower factorized output layer (128 instead of 256)
    both_sides    batches grouped by the source's and the target's length buckets both
                  (`--bucket-by both`, the default)
    longer_side   the default with batches grouped by the longer side's length bucket
                  (`--bucket-by longer`, the default before)

With `--breakdown` every variant also times, on the same batch shapes, where a step's time goes:
the output projection with the loss (forward and backward of the softmax layer and the loss on
the decoder's outputs), the optimizer's update, and the rest (embeddings and the recurrent loops
of the encoder and the decoder, forward and backward); and the input pipeline alone (batches
pulled without training: prefetching overlaps it with the steps).

Every variant runs in its own process: thread pools must be set before TensorFlow starts, and
peak memory is per process. The vocabularies are built once, by a first child. The length-bucket
variants stream the training pairs from text through the tokenizers, as `train` does
(`pipeline.training_batches`); `plain` and `padded` batch token ids made once, as a tutorial does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The project root in place of this folder, whose litert.py would shadow the `litert` module
# TensorFlow imports.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

# Importing TensorFlow does not start its runtime: a child can still size its thread pools.
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from seq2seq_keras import callbacks as callbacks_lib  # noqa: E402
from seq2seq_keras import data as data_lib  # noqa: E402
from seq2seq_keras import hardware  # noqa: E402
from seq2seq_keras import model as model_lib  # noqa: E402
from seq2seq_keras import objective  # noqa: E402
from seq2seq_keras import pipeline as pipeline_lib  # noqa: E402
from seq2seq_keras import tokenizers  # noqa: E402
from seq2seq_keras import train as train_lib  # noqa: E402
from seq2seq_keras.config import Seq2SeqConfig  # noqa: E402
from seq2seq_keras.text import PAD_ID  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Variant:
    description: str
    # "buckets" (pipeline.training_batches), "padded", "fixed" or "boundaries"
    pipeline: str = "buckets"
    batch_size: int = 128
    precision: str = "auto"
    jit_compile: bool | str = "auto"
    intra_op_threads: int = 0  # 0: TensorFlow's default (one per core)
    inter_op_threads: int = 0
    keras_loss: bool = False  # Keras' `ignore_class` cross-entropy instead of `MaskedCrossEntropy`
    keras_adam: bool = False  # Keras' own Adam update instead of `objective.FusedAdam`
    label_smoothing: float | None = None  # None: the config's default
    two_term_smoothing: bool = False  # label smoothing's uniform term computed apart
    output_projection_dim: int | None = None  # None: the config's default
    bucket_boundaries: tuple[int, ...] = ()  # other length-bucket boundaries (pipeline's default)
    bucket_by: str | None = None  # None: the config's default (`config.bucket_by`)


VARIANTS = {
    "plain": Variant("random order, fixed-length padding, batch 64, float32", "fixed", 64,
                     "float32"),
    "padded": Variant("random order, padded per batch, batch 128, float32", "padded", 128,
                      "float32"),
    "float32": Variant("length buckets, batch 128, float32", precision="float32"),
    "default": Variant("length buckets of both sides, batch 128, precision auto (the default)"),
    "jit": Variant("default + jit_compile", jit_compile=True),
    "jit_buckets": Variant("default + jit_compile, padded to bucket boundaries", "boundaries",
                           jit_compile=True),
    "batch64": Variant("default at batch 64", batch_size=64),
    "batch256": Variant("default at batch 256", batch_size=256),
    "threads_1_2": Variant("default, intra-op 1 / inter-op 2 threads", intra_op_threads=1,
                           inter_op_threads=2),
    "threads_2_1": Variant("default, intra-op 2 / inter-op 1 threads", intra_op_threads=2,
                           inter_op_threads=1),
    "previous": Variant("the previous default: Keras' ignore_class loss and Adam, no output "
                        "projection, no label smoothing, the longer side's buckets",
                        keras_loss=True, output_projection_dim=0, keras_adam=True,
                        label_smoothing=0.0, bucket_by="longer"),
    "fused_loss": Variant("previous + fused masked cross-entropy", output_projection_dim=0,
                          keras_adam=True, label_smoothing=0.0, bucket_by="longer"),
    "factorized": Variant("previous + factorized output layer (256)", keras_loss=True,
                          output_projection_dim=256, keras_adam=True, label_smoothing=0.0,
                          bucket_by="longer"),
    "keras_adam": Variant("default with Keras' own Adam update", keras_adam=True),
    "two_term_smoothing": Variant("default with the smoothing's uniform term computed apart",
                                  two_term_smoothing=True),
    "fine_buckets": Variant("default, a length bucket for every length up to 16",
                            bucket_boundaries=(*range(3, 17), 18, 20, 24, 32, 48)),
    "projection128": Variant("default with a narrower output projection (128)",
                             output_projection_dim=128),
    "both_sides": Variant("batches grouped by both sides' length buckets", bucket_by="both"),
    "longer_side": Variant("default, batches grouped by the longer side's length bucket",
                           bucket_by="longer"),
}
NAME_WIDTH = max(map(len, VARIANTS))  # the tables' first column


# --- The parent: prepare the data once, run each variant in a child, print the table ----------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="the pairs file (default: $SEQ2SEQ_DATA or the download)")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (tracing)")
    parser.add_argument("--variants", default="plain,padded,default",
                        help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--train-seconds", type=float, default=0,
                        help="also train each variant this long and report its validation loss")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="or this many steps: equal steps, immune to other processes")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every variant this many times, interleaved; keep the best")
    parser.add_argument("--max-pairs", type=int, default=0,
                        help="use only the first N pairs (0: all; small values for a smoke test)")
    parser.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the parts of a step and the input pipeline (default: on)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_variant(args)), flush=True)
        return

    names = list(dict.fromkeys(args.variants.split(",")))
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        tokens_file = Path(scratch) / "tokens.npz"
        started = time.monotonic()
        run_child(["--worker", "prepare", "--tokens", str(tokens_file), *data_args(args)])
        print(f"data prepared in {time.monotonic() - started:.0f} s", flush=True)
        # Rounds interleave the variants, and each keeps its fastest round: on a shared machine
        # a slow round measures the neighbours, not the variant.
        matmul, results, rounds = {}, {}, {name: [] for name in names}
        for round_index in range(args.rounds):
            rates = run_child(["--worker", "matmul"])
            isa = rates.pop("isa")
            for dtype, rate in rates.items():
                matmul[dtype] = max(rate, matmul.get(dtype, 0)) if rate == rate else rate
            for name in names:
                result = run_child(
                    ["--worker", name, "--tokens", str(tokens_file), *data_args(args),
                     "--steps", str(args.steps),
                     "--warmup", str(args.warmup), "--train-seconds", str(args.train_seconds),
                     "--train-steps", str(args.train_steps),
                     "--breakdown" if args.breakdown else "--no-breakdown"]
                )
                rounds[name].append(result["tokens_per_second"])
                if result["tokens_per_second"] >= results.get(name, {}).get("tokens_per_second", 0):
                    results[name] = result
                print(f"  round {round_index + 1}, {name}: {result['tokens_per_second']:.0f} real "
                      f"target tokens/s on {result['cores_used']:.2f} cores", flush=True)
    print_report(results, matmul, args, load=(load_before, os.getloadavg()[0]), isa=isa)


def data_args(args) -> list[str]:
    return (["--data", args.data] if args.data else []) + ["--max-pairs", str(args.max_pairs)]


def run_child(arguments: list[str]) -> dict:
    """Run one child and return its RESULT. The matmul child also reports the instruction set
    oneDNN's kernels use here (`isa`), from oneDNN's own verbose log."""
    verbose = {"ONEDNN_VERBOSE": "1"} if arguments[1] == "matmul" else {}
    completed = subprocess.run(
        [sys.executable, __file__, *arguments], capture_output=True, text=True, encoding="utf-8",
        env={**os.environ, **verbose},
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode or not lines:
        sys.exit(f"benchmark child {arguments} failed:\n{completed.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    if verbose:  # e.g. "onednn_verbose,v1,info,cpu,isa:Intel AVX2"
        isa = re.search(r"onednn_verbose,.*,cpu,isa:(.*)", completed.stdout + completed.stderr)
        result["isa"] = isa.group(1).strip() if isa else "unknown"
    return result


def print_report(
    results: dict, matmul: dict, args, load: tuple[float, float], isa: str
) -> None:
    float32_peak = matmul["float32"]
    print()
    print(f"{os.cpu_count()} CPUs; 1-minute load average {load[0]:.1f} before, {load[1]:.1f} after "
          "(above ~1, other processes shared the cores and every rate is low)")
    print(f"CPU: {hardware.describe_cpu()}; oneDNN kernels: {isa}; precision auto here: "
          f"{train_lib.resolve_precision('auto')}")
    print(f"matmul 4096x4096 in this run: float32 {float32_peak:.0f} GFLOP/s, "
          f"bfloat16 {matmul['bfloat16']:.0f} GFLOP/s")
    print(f"{args.steps} timed steps after {args.warmup} warm-up steps, best of {args.rounds} "
          "round(s); model FLOPs = 3 x forward matmul FLOPs (LSTMs and output projection)")
    header = (f"{'variant':<{NAME_WIDTH}} {'precision':<15} {'batch':>5} {'tokens/s':>9} "
              f"{'padding':>8} {'GFLOP/s':>8} {'real':>6} {'of f32 mm':>9} {'peak MB':>8} "
              f"{'cores':>6}")
    trained = args.train_seconds or args.train_steps
    if trained:
        budget = f"{args.train_seconds:g}s" if args.train_seconds else f"{args.train_steps} steps"
        header += f" {'val_loss@' + budget:>16} {'steps':>6} {'seconds':>7} {'cores':>6}"
    print(header)
    for name, result in results.items():
        line = (
            f"{name:<{NAME_WIDTH}} {result['precision']:<15} {result['batch_size']:>5} "
            f"{result['tokens_per_second']:>9.0f} {result['padding_fraction']:>8.1%} "
            f"{result['gflops']:>8.0f} {result['real_gflops']:>6.0f} "
            f"{result['gflops'] / float32_peak:>9.0%} {result['peak_rss_mb']:>8.0f} "
            f"{result['cores_used']:>6.2f}"
        )
        if trained:
            line += (f" {result['val_loss']:>16.4f} {result['trained_steps']:>6} "
                     f"{result['train_seconds']:>7.0f} {result['train_cores_used']:>6.2f}")
        print(line)
    for name, result in results.items():
        print(f"  {name}: {VARIANTS[name].description}")
    if args.breakdown:
        print_breakdown(results)
    rate = {name: result["tokens_per_second"] for name, result in results.items()}
    if "previous" in rate:
        for name in rate:
            if name != "previous":
                print(f"{name} over previous: {rate[name] / rate['previous']:.2f}")
    if "default" in rate and "padded" in rate:
        print(f"speedup over padded: {rate['default'] / rate['padded']:.2f}")
    if "default" in rate and "plain" in rate:
        print(f"speedup: {rate['default'] / rate['plain']:.2f}")


def print_breakdown(results: dict) -> None:
    """Milliseconds per step of each part, and their shares of the measured step."""
    print()
    print("where a step's time goes (ms per step; parts timed alone on the same batch shapes):")
    print(f"{'variant':<{NAME_WIDTH}} {'step':>7} {'projection+loss':>16} {'optimizer':>10} "
          f"{'recurrent+rest':>15} {'input pipeline':>15}")
    for name, result in results.items():
        parts = result["breakdown"]
        step = 1000 * result["seconds"] / result["steps"]
        rest = step - parts["projection_loss_ms"] - parts["optimizer_ms"]
        print(f"{name:<{NAME_WIDTH}} {step:>7.1f} "
              f"{parts['projection_loss_ms']:>8.1f} ({parts['projection_loss_ms'] / step:>4.0%}) "
              f"{parts['optimizer_ms']:>4.1f} ({parts['optimizer_ms'] / step:>3.0%}) "
              f"{rest:>7.1f} ({rest / step:>4.0%}) {parts['pipeline_ms']:>7.1f} "
              f"({parts['pipeline_ms'] / step:>4.0%})")


# --- The children ------------------------------------------------------------------------------


def run_variant(args) -> dict:
    if args.worker == "prepare":
        return prepare(args)
    if args.worker == "matmul":
        # Without bfloat16 dot products (or with oneDNN capped below them) a bfloat16 matmul is
        # emulated: not a baseline worth a column, and under the cap TensorFlow can abort on it.
        native = hardware.cpu_has_native_bfloat16()
        return {"float32": matmul_gflops("float32"),
                "bfloat16": matmul_gflops("bfloat16") if native else float("nan")}
    variant = VARIANTS[args.worker]
    if variant.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(variant.intra_op_threads)
    if variant.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(variant.inter_op_threads)

    apply_variant_switches(variant)
    config = variant_config(variant)
    train_tokens, validation_tokens = load_tokens(args.tokens)
    streams_text = variant.pipeline in ("buckets", "boundaries")
    train_pairs = load_text_pairs(args, config) if streams_text else None

    def batches() -> "tf.data.Dataset":
        keras.utils.set_random_seed(config.seed)  # the same batches on every call
        return make_pipeline(variant.pipeline, train_tokens, train_pairs, config)

    # 1. Count the real and padded tokens of the timed batches, on an identical stream.
    shapes = []
    for (source, decoder_input), target in batches().skip(args.warmup).take(args.steps):
        shapes.append((
            int(tf.math.count_nonzero(source)), int(tf.math.count_nonzero(target)),
            int(tf.size(source)), int(tf.size(target)), *source.shape, target.shape[1],
        ))
    real_target = sum(shape[1] for shape in shapes)
    real_tokens = sum(shape[0] + shape[1] for shape in shapes)
    padded_tokens = sum(shape[2] + shape[3] for shape in shapes)
    flops = sum(step_flops(config, batch, source_len, target_len)
                for *_, batch, source_len, target_len in shapes)
    real_flops = sum(token_flops(config, shape[0], shape[1]) for shape in shapes)

    # 2. Time the same steps through model.fit.
    keras.utils.set_random_seed(config.seed)
    model = train_lib.build_model(config)
    timer = StepTimer(args.warmup)
    model.fit(batches(), steps_per_epoch=args.warmup + args.steps, epochs=1, verbose=0,
              callbacks=[timer])
    seconds = timer.seconds()
    breakdown = time_parts(model, config, shapes, batches, args) if args.breakdown else None
    result = {
        "steps": args.steps,
        "breakdown": breakdown,
        "precision": config.precision,
        "batch_size": config.batch_size,
        "tokens_per_second": real_target / seconds,
        "padding_fraction": 1 - real_tokens / padded_tokens,
        "gflops": flops / seconds / 1e9,
        "real_gflops": real_flops / seconds / 1e9,
        "seconds": seconds,
        "cores_used": timer.cores_used(),
    }

    # 3. Equal time (or steps): a fresh model trained for `--train-seconds` (`--train-steps`),
    #    then the validation loss.
    if args.train_seconds or args.train_steps:
        keras.utils.set_random_seed(config.seed)
        model = train_lib.build_model(config)
        budget = callbacks_lib.TimeBudget(args.train_seconds)
        counter = StepTimer(0)
        model.fit(batches(), steps_per_epoch=args.train_steps or 10**6, epochs=1, verbose=0,
                  callbacks=[budget, counter])
        result["train_cores_used"] = counter.cores_used()
        result["train_seconds"] = counter.seconds()
        validation = pipeline_lib.make_dataset(
            validation_tokens, dataclasses.replace(config, batch_size=128), shuffle=False
        )
        result["val_loss"] = float(model.evaluate(validation, verbose=0, return_dict=True)["loss"])
        result["trained_steps"] = counter.steps
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def variant_config(variant: Variant, config: Seq2SeqConfig | None = None) -> Seq2SeqConfig:
    """`config` (default: `Seq2SeqConfig()`) with the variant's batch size, precision, XLA
    setting and bucketing, and its output layer and label smoothing where it sets them."""
    config = dataclasses.replace(
        config or Seq2SeqConfig(),
        batch_size=variant.batch_size,
        precision=train_lib.resolve_precision(variant.precision),
        jit_compile=variant.jit_compile,
    )
    if variant.bucket_by is not None:
        config = dataclasses.replace(config, bucket_by=variant.bucket_by)
    if variant.output_projection_dim is not None:
        config = dataclasses.replace(config, output_projection_dim=variant.output_projection_dim)
    if variant.label_smoothing is not None:
        config = dataclasses.replace(config, label_smoothing=variant.label_smoothing)
    return config


def variant_switches(variant: Variant) -> list[tuple[object, str, object]]:
    """`(owner, attribute, replacement)` for each part of the step the variant builds as the
    previous version did, or for other length buckets. `objective.compile_model` and the
    training step look these attributes up when they run, so setting them in a variant's own
    process, before its model is built, changes that variant only."""
    switches = []
    if variant.keras_loss:
        switches.append((objective, "MaskedCrossEntropy",
                         lambda: keras.losses.SparseCategoricalCrossentropy(ignore_class=PAD_ID)))
    if variant.keras_adam:
        switches.append((objective, "FusedAdam", keras.optimizers.Adam))
    if variant.two_term_smoothing:
        switches.append((objective.Seq2SeqModel, "compute_loss", two_term_compute_loss))
    if variant.bucket_boundaries:
        switches.append((pipeline_lib, "length_buckets", lambda max_length: [
            boundary for boundary in variant.bucket_boundaries if boundary < max_length
        ]))
    return switches


def apply_variant_switches(variant: Variant) -> None:
    for owner, attribute, replacement in variant_switches(variant):
        setattr(owner, attribute, replacement)


def two_term_compute_loss(model, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    """`Seq2SeqModel.compute_loss` as the previous version computed a label-smoothed loss:
    the compiled cross-entropy, then the uniform term apart, `(1 - ε) · it + ε · (logsumexp -
    mean)` of the logits (a second log-sum-exp over the vocabulary, and its softmax backward)."""
    loss = keras.Model.compute_loss(model, x, y, y_pred, sample_weight, training=training)
    smoothing = model.label_smoothing
    if not (training and smoothing):
        return loss
    logits = objective.softmax_logits(y_pred)
    per_token = keras.ops.logsumexp(logits, axis=-1) - keras.ops.mean(logits, axis=-1)
    uniform = keras.ops.sum(per_token * objective.real_token_weights(y, per_token.dtype))
    return (1.0 - smoothing) * loss + smoothing * objective.replica_share(uniform)


def time_parts(model, config, shapes, batches, args) -> dict:
    """Milliseconds per step of the parts of a step, timed alone over the timed steps' shapes.

    - projection_loss_ms: forward and backward of the softmax layer and the compiled loss on
      decoder outputs of each batch's shape;
    - optimizer_ms: one optimizer update of every weight (gradients given);
    - pipeline_ms: pulling one batch from the input pipeline, without training.
    """
    dense = model.get_layer(model_lib.DECODER_DENSE)

    @tf.function(reduce_retracing=True)
    def projection_and_loss(outputs, target):
        with tf.GradientTape() as tape:
            tape.watch(outputs)
            # The training loss: the compiled one, label-smoothed as the step smooths it.
            loss = model.compute_loss(y=target, y_pred=dense(outputs), training=True)
        return tape.gradient(loss, [outputs, *dense.trainable_variables])

    dtype = dense.compute_dtype
    inputs = []
    for _, _, _, _, batch, _, target_len in shapes:
        outputs = tf.cast(tf.random.normal([batch, target_len, config.units]), dtype)
        target = tf.random.uniform([batch, target_len], 1, config.target_vocab_size, tf.int64)
        inputs.append((outputs, target))
    for outputs, target in inputs[:3]:  # trace once per shape seen first
        projection_and_loss(outputs, target)

    def timed(function) -> float:
        started = time.perf_counter()
        function()
        return 1000 * (time.perf_counter() - started) / len(inputs)

    def run_projection():
        for outputs, target in inputs:
            gradients = projection_and_loss(outputs, target)
        float(tf.reduce_sum(gradients[-1]))

    variables = model.trainable_variables
    gradients = [tf.zeros_like(variable) for variable in variables]
    apply = tf.function(lambda: model.optimizer.apply(gradients, variables))
    apply()

    def run_optimizer():
        for _ in inputs:
            apply()
        float(tf.reduce_sum(variables[0]))

    def run_pipeline():
        for _ in batches().skip(args.warmup).take(len(inputs)):
            pass

    run_projection()
    return {"projection_loss_ms": timed(run_projection), "optimizer_ms": timed(run_optimizer),
            "pipeline_ms": timed(run_pipeline)}


class StepTimer(keras.callbacks.Callback):
    """Time from the end of step `warmup` to the end of the last step, and count the steps."""

    def __init__(self, warmup: int):
        super().__init__()
        self.warmup = warmup
        self.started = self.ended = time.perf_counter()
        self.cpu_started = self.cpu_ended = time.process_time()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        float((logs or {}).get("loss", 0.0))  # waits for the step's result
        self.steps = batch + 1
        if self.steps == self.warmup:
            self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.ended, self.cpu_ended = time.perf_counter(), time.process_time()

    def seconds(self) -> float:
        return self.ended - self.started

    def cores_used(self) -> float:
        """CPU seconds per second over the timed steps: below the core count, the process
        waited for the cores (other processes) or for itself (a serial stretch)."""
        return (self.cpu_ended - self.cpu_started) / self.seconds()


def step_flops(config, batch: int, source_len: int, target_len: int) -> float:
    """Training FLOPs of one step on a padded batch: 3 × the forward matmuls (forward, and the
    gradients for inputs and for weights). LSTM: 2·(embedding+units)·4·units per position;
    softmax layer: 2 × `config.output_layer_multiply_adds` per target position. Element-wise
    work is left out."""
    return token_flops(config, batch * source_len, batch * target_len)


def token_flops(config, source_tokens: int, target_tokens: int) -> float:
    """The same FLOPs counted over the given tokens only: over real tokens, the work a
    perfectly packed batch does."""
    lstm = 2 * (config.embedding_dim + config.units) * 4 * config.units
    output_layer = 2 * config.output_layer_multiply_adds
    return 3 * (source_tokens * lstm + target_tokens * (lstm + output_layer))


def make_pipeline(name: str, tokens, text_pairs, config):
    """The endless training batches of one pipeline; all are right-padded with 0.

    The length-bucket pipelines are `train`'s own stream, tokenizing `text_pairs` as it goes;
    the others batch the token ids `tokens` held in memory.
    """

    if name == "buckets":
        return pipeline_lib.training_batches(text_pairs, config)
    if name == "boundaries":
        return pipeline_lib.training_batches(text_pairs, config).map(pad_to_boundary)
    dataset = tf.data.Dataset.from_tensor_slices((tokens.source_ids, tokens.target_ids))
    dataset = dataset.map(lambda source, target: (tf.identity(source), tf.identity(target)))
    dataset = dataset.shuffle(len(tokens), seed=config.seed, reshuffle_each_iteration=True)
    if name == "fixed":  # every batch as long as the longest pair of the training split
        shapes = ([int(tokens.source_ids.row_lengths().numpy().max())],
                  [int(tokens.target_ids.row_lengths().numpy().max())])
        dataset = dataset.padded_batch(config.batch_size, padded_shapes=shapes)
    else:  # "padded": each batch as long as its own longest pair
        dataset = dataset.padded_batch(config.batch_size)
    return dataset.map(pipeline_lib.teacher_forcing_pair).repeat().prefetch(tf.data.AUTOTUNE)


def pad_to_boundary(inputs, target):
    """Pad a batch's time axes up to the next length-bucket boundary: few shapes for XLA."""

    boundaries = tf.constant(pipeline_lib.length_buckets(64) + [64], tf.int32)

    def pad(ids, extra=0):
        length = tf.shape(ids)[1] + extra
        bound = boundaries[tf.argmax(tf.cast(boundaries >= length, tf.int32))]
        return tf.pad(ids, [[0, 0], [0, bound - length]])

    (source, decoder_input), target = inputs, target
    return (pad(source), pad(decoder_input, 1)), pad(target, 1)


def prepare(args) -> dict:
    """Build the vocabularies with the default config and vectorize the data; save both for
    the children."""

    config = Seq2SeqConfig(max_pairs=args.max_pairs)
    prepared = data_lib.prepare_data(config, data_lib.resolve_data_file(args.data))
    vocabularies = (prepared.source_vocabulary, prepared.target_vocabulary)
    arrays = {"source_vocabulary": np.array(vocabularies[0]),
              "target_vocabulary": np.array(vocabularies[1])}
    splits = (("train", prepared.splits.train), ("validation", prepared.splits.validation))
    for split, pairs in splits:
        tokens = data_lib.vectorize_pairs(pairs, *vocabularies, config)
        for side in ("source", "target"):
            ragged = getattr(tokens, f"{side}_ids")
            arrays[f"{split}_{side}_values"] = ragged.flat_values.numpy()
            arrays[f"{split}_{side}_splits"] = ragged.row_splits.numpy()
    np.savez(args.tokens, **arrays)
    return {"train_pairs": len(prepared.train_pairs)}


def load_text_pairs(args, config) -> data_lib.TextPairs:
    """The training pairs as `train` holds them, through the vocabularies `prepare` saved."""

    pairs = data_lib.read_pairs(data_lib.resolve_data_file(args.data), max_pairs=args.max_pairs)
    arrays = np.load(args.tokens)
    source_tokenizer, target_tokenizer = (
        tokenizers.make_tokenizer(config.tokenizer, arrays[f"{side}_vocabulary"].tolist())
        for side in ("source", "target")
    )
    train = data_lib.split_pairs(pairs.pairs).train
    return data_lib.text_pairs(train, source_tokenizer, target_tokenizer, config)


def load_tokens(path: str):
    import collections

    arrays = np.load(path)

    def ragged(split, side):
        return tf.RaggedTensor.from_row_splits(
            arrays[f"{split}_{side}_values"], arrays[f"{split}_{side}_splits"]
        )

    return tuple(
        data_lib.TokenizedPairs(ragged(split, "source"), ragged(split, "target"),
                                collections.Counter())
        for split in ("train", "validation")
    )


def matmul_gflops(dtype: str, size: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of a square matmul: what this machine's cores reach on the easiest dense work."""
    a = tf.cast(tf.random.normal([size, size]), dtype)
    b = tf.cast(tf.random.normal([size, size]), dtype)
    multiply = tf.function(tf.matmul)
    multiply(a, b).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        product = multiply(a, b)
    product.numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


if __name__ == "__main__":
    main()
