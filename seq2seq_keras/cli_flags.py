"""The command line's flags: one parser, every `Seq2SeqConfig` switch with its default.

`build_parser` describes every command and flag (what `--help` prints); `config_from_args`
turns a `train` command line into the config. `cli.py` runs the commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from seq2seq_keras.config import DEFAULT_EXPORT_ROOT, Seq2SeqConfig
from seq2seq_keras.config_defaults import (
    ARCHITECTURES,
    ATTENTIONS,
    BUCKETINGS,
    CELLS,
    DECODE_PRECISIONS,
    DEFAULT_DECAY_SHARES,
    DEFAULT_TRANSFORMER_DROPOUTS,
    DEFAULT_VOCAB_SIZES,
    LEARNING_RATE_SCHEDULES,
    PRECISIONS,
    STRATEGIES,
    TOKENIZERS,
)
from seq2seq_keras.decoding_options import (
    DEFAULT_BEAM_WIDTH,
    DEFAULT_LENGTH_ALPHA,
    check_beam_width,
    check_length_alpha,
    check_temperature,
)
from seq2seq_keras.lite.runtime_files import QUANTIZATIONS

# The export formats: a SavedModel for TensorFlow Serving, LiteRT for devices.
EXPORT_FORMATS = ("savedmodel", "litert")
DEFAULT_MODEL_DIR = "runs/eng_spa"
# The console command `pip install` makes (pyproject.toml).
CONSOLE_COMMAND = "seq2seq-keras"


def add_model_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        default=DEFAULT_MODEL_DIR,
        help=f"the trained model directory (default: {DEFAULT_MODEL_DIR})",
    )


def add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        help="a .zip/.txt/.tsv file of 'source<TAB>target' lines (default: $SEQ2SEQ_DATA, "
        "else download spa-eng)",
    )


def add_decode_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decode-precision", choices=DECODE_PRECISIONS,
        help="the decoder's matmuls: float32, or bfloat16 weights (faster on a CPU with "
        "bfloat16 dot products; states and gates stay float32), or auto: bfloat16 on such a "
        "CPU, else float32 (default: the model's decode_precision, auto unless set)",
    )


def beam_width(text: str) -> int:
    """argparse type of `--beam`: a beam width `decoding_options.check_beam_width` accepts."""
    try:
        return check_beam_width(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def length_alpha(text: str) -> float:
    """argparse type of `--length-alpha`: a finite exponent >= 0 (0 ranks by log P alone)."""
    try:
        return check_length_alpha(float(text))
    except ValueError:  # not a number, or not a finite one >= 0
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0") from None


def add_length_alpha(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--length-alpha", type=length_alpha, default=DEFAULT_LENGTH_ALPHA, metavar="A",
        help="beam search ranks finished translations by log P / ((5 + length) / 6)^A "
        "(GNMT's length normalization); 0 ranks by log P alone, larger favours longer "
        f"translations (default: {DEFAULT_LENGTH_ALPHA})",
    )


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def temperature(text: str) -> float:
    """argparse type of `--temperature`: a number `decoding_options.check_temperature` accepts."""
    try:
        return check_temperature(float(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def program_name() -> str:
    """How the user called us: the installed `seq2seq-keras` command or `python -m`."""
    if os.path.basename(sys.argv[0]) == CONSOLE_COMMAND:
        return CONSOLE_COMMAND
    return "python -m seq2seq_keras"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="Train, use and evaluate an LSTM encoder–decoder translator.",
    )
    parser.add_argument("--verbose", action="store_true", dest="tensorflow_logs",
                        help="show TensorFlow's start-up and C++ log messages (give it before "
                        "the command)")
    commands = parser.add_subparsers(dest="command", required=True)

    for add_command in (add_train, add_translate, add_evaluate, add_export, add_plot):
        add_command(commands)
    return parser


def add_train(commands) -> None:
    """Add the `train` command: every `Seq2SeqConfig` switch, defaults from the config, in
    groups as `--help` lists them."""
    train = commands.add_parser(
        "train",
        help="train a model, then print test BLEU and sample translations",
        description="Train the encoder–decoder on sentence pairs and write a model directory.",
    )
    add_model_dir(train)
    add_data(train)
    defaults = Seq2SeqConfig()
    train.add_argument("--max-pairs", type=int, default=defaults.max_pairs,
                       help="use only the first N pairs of the file, before the split (0: all)")
    train.add_argument("--epochs", type=int, default=defaults.epochs,
                       help=f"maximum epochs (default: {defaults.epochs})")
    train.add_argument("--max-minutes", type=float, default=defaults.max_train_seconds / 60,
                       help="stop training after this many minutes (0: no limit)")
    train.add_argument("--restart", action="store_true",
                       help="start over: discard the checkpoint an interrupted run of the same "
                       "--model-dir left (by default the run resumes from it)")
    train.add_argument("--reverse", action="store_true",
                       help="translate the second column into the first (Spanish→English)")
    train.add_argument("--seed", type=int, default=defaults.seed,
                       help="seed of the weights' initialisation and of the shuffling: the same "
                       "seed gives the same starting weights and order of batches "
                       f"(default: {defaults.seed})")
    train.add_argument("--logdir", help="write TensorBoard logs here")
    train.add_argument("--precision", default=defaults.precision,
                       choices=PRECISIONS,
                       help="numeric precision; auto: bfloat16 on CPUs that have it, float16 on "
                       "GPUs, else float32 (softmax and loss are always float32)")
    train.add_argument("--strategy", default="default", choices=STRATEGIES,
                       help="tf.distribute: one device (default), every local GPU (mirrored), "
                       "or the workers named in $TF_CONFIG (multiworker)")
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                       help="Keras progress: 1 bar (default), 2 one line per epoch, 0 silent")
    train.add_argument("--architecture", default=defaults.architecture, choices=ARCHITECTURES,
                       help="the recurrent encoder–decoder (rnn) or the Transformer, each shaped "
                       f"by its group of flags below (default: {defaults.architecture})")
    add_vocabulary_flags(train.add_argument_group("tokens"), defaults)
    add_recipe_flags(train.add_argument_group("training recipe"), defaults)
    add_rnn_flags(train.add_argument_group("recurrent encoder–decoder (--architecture rnn)"),
                  defaults)
    add_transformer_flags(train.add_argument_group("Transformer (--architecture transformer)"),
                          defaults)


def add_vocabulary_flags(group, defaults: Seq2SeqConfig) -> None:
    """The tokenizer and the vocabulary sizes."""
    group.add_argument("--tokenizer", default=defaults.tokenizer, choices=TOKENIZERS,
                       help="word: lowercased words, rare ones become [UNK]; wordpiece: "
                       "case-kept subword pieces learned from the training split, so rare "
                       f"words and names are spelled from pieces (default: {defaults.tokenizer})")
    source_sizes, target_sizes = (
        ", ".join(f"{sizes[side]} for {name}" for name, sizes in DEFAULT_VOCAB_SIZES.items())
        for side in (0, 1)
    )
    group.add_argument("--source-vocab-size", type=int, default=None,
                       help="most source tokens, padding and [UNK] included; WordPiece learns "
                       f"at most this many pieces (default: {source_sizes})")
    group.add_argument("--target-vocab-size", type=int, default=None,
                       help="most target tokens, padding, [UNK], [START] and [END] included "
                       f"(default: {target_sizes})")
    group.add_argument("--shared-vocabulary", action=argparse.BooleanOptionalAction,
                       default=defaults.shared_vocabulary,
                       help="one vocabulary of --target-vocab-size entries for both languages, "
                       "learned from both sides; with --transformer-tie-embeddings the "
                       "Transformer's encoder reads the tied matrix too (default: "
                       f"{'shared' if defaults.shared_vocabulary else 'one per language'})")


def add_recipe_flags(group, defaults: Seq2SeqConfig) -> None:
    """The optimizer's batch, learning rate and schedule, and the loss's label smoothing."""
    group.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help=f"sentence pairs per batch (default: {defaults.batch_size})")
    group.add_argument("--bucket-by", choices=BUCKETINGS, default=defaults.bucket_by,
                       help="batch pairs by the length of their longer side, or by the "
                       "lengths of both sides (less padding) (default: "
                       f"{defaults.bucket_by})")
    group.add_argument("--learning-rate", type=float, default=None,
                       help="Adam learning rate (default: 2e-3, or 1e-3 for the Transformer)")
    group.add_argument("--learning-rate-schedule", default=defaults.learning_rate_schedule,
                       choices=LEARNING_RATE_SCHEDULES,
                       help="constant, or cosine: warm up over --warmup-steps, then decay to "
                       f"{defaults.final_learning_rate_fraction:g} x the rate by the end of the "
                       f"epochs or of --max-minutes (default: {defaults.learning_rate_schedule})")
    group.add_argument("--decay-share", type=float, default=None,
                       help="with --learning-rate-schedule cosine: the share of the run, at its "
                       "end, over which the rate decays; before it the rate holds at its peak "
                       "(warmup-stable-decay) (default: "
                       f"{DEFAULT_DECAY_SHARES['rnn']:g}, or "
                       f"{DEFAULT_DECAY_SHARES['transformer']:g}, the whole run, for "
                       "the Transformer)")
    group.add_argument("--decay-on-plateau", action=argparse.BooleanOptionalAction,
                       default=defaults.decay_on_plateau,
                       help="begin the decay (of the same length) at the first epoch at the "
                       "peak rate whose validation loss does not improve, if that comes before "
                       "the last --decay-share of the run (default: on)")
    group.add_argument("--warmup-steps", type=int, default=None,
                       help="with --learning-rate-schedule cosine (default: 200, or 800 for the "
                       "Transformer)")
    group.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing,
                       help="label smoothing of the training loss; the validation loss stays the "
                       f"plain cross-entropy (default: {defaults.label_smoothing:g})")


def add_rnn_flags(group, defaults: Seq2SeqConfig) -> None:
    """The RNN family's sizes, cell, depth, direction and attention (docs/variants.md)."""
    group.add_argument("--units", type=int, default=defaults.units,
                       help=f"LSTM state size, the context vector's size (default: {defaults.units})")
    group.add_argument("--embedding-dim", type=int, default=defaults.embedding_dim,
                       help=f"token embedding size (default: {defaults.embedding_dim})")
    group.add_argument("--output-projection-dim", type=int, default=None,
                       help="project the decoder's outputs to this size before the softmax layer "
                       "(a factorized output layer, fewer multiply-adds; 0: none) "
                       "(default: half of --units)")
    group.add_argument("--reverse-source", action=argparse.BooleanOptionalAction, default=None,
                       help="the encoder reads the source backwards, as Sutskever et al. (2014) "
                       "(default: on for the one-layer unidirectional encoder without "
                       "attention, the only one it works for; --no-reverse-source reads forwards)")
    group.add_argument("--cell", default=defaults.cell, choices=CELLS,
                       help=f"recurrent cell of encoder and decoder (default: {defaults.cell})")
    group.add_argument("--bidirectional", action="store_true",
                       help="bidirectional encoder, units/2 per direction; [forward; backward] "
                       "final states start the decoder")
    group.add_argument("--num-layers", type=int, default=defaults.num_layers,
                       help="stacked RNN layers on each side; encoder layer i's final states "
                       f"start decoder layer i (default: {defaults.num_layers})")
    group.add_argument("--dropout", type=float, default=defaults.dropout,
                       help=f"dropout on every RNN layer's inputs (default: {defaults.dropout})")
    group.add_argument("--attention", default=defaults.attention,
                       choices=ATTENTIONS,
                       help="attention over the source at every decoder step "
                       f"(default: {defaults.attention}; docs/variants.md)")


def add_translate(commands) -> None:
    """Add the `translate` command: greedy, beam or sampled translations."""
    translate = commands.add_parser(
        "translate",
        help="translate sentences given as arguments or one per line on stdin",
        description="Translate sentences with a trained model. Without arguments, reads one "
        "sentence per line from standard input and writes one translation per line.",
    )
    add_model_dir(translate)
    translate.add_argument("--beam", type=beam_width, default=None, metavar="K",
                           help=f"beam search with K hypotheses; 1 is greedy decoding (default: "
                           f"{DEFAULT_BEAM_WIDTH}, or 1 with --sample)")
    translate.add_argument("--sample", action="store_true",
                           help="sample each token from the model's distribution instead of "
                           "searching (see --temperature, --seed)")
    translate.add_argument("--temperature", type=temperature, default=1.0, metavar="T",
                           help="with --sample: divide the log-probabilities by T > 0; lower is "
                           "closer to greedy (default: 1.0)")
    translate.add_argument("--seed", type=int, default=0, metavar="S",
                           help="with --sample: the same seed gives the same translations "
                           "(default: 0)")
    add_decode_precision(translate)
    add_length_alpha(translate)
    translate.add_argument("sentences", nargs="*", help="sentences to translate")


def add_evaluate(commands) -> None:
    """Add the `evaluate` command: BLEU and chrF on the test split."""
    evaluate = commands.add_parser(
        "evaluate",
        help="BLEU and chrF on the test split, overall and by source length",
        description="Score a trained model on the fixed test split with sacrebleu "
        "(multi-reference: case-sensitive BLEU, case-insensitive BLEU and chrF), overall and "
        "by source length.",
    )
    add_model_dir(evaluate)
    add_data(evaluate)
    evaluate.add_argument("--beam", type=beam_width, default=DEFAULT_BEAM_WIDTH, metavar="K",
                          help=f"also score beam search with K hypotheses (default: "
                          f"{DEFAULT_BEAM_WIDTH}; 1 scores greedy decoding only)")
    evaluate.add_argument("--min-words", type=positive_int, default=1, metavar="N",
                          help="score only the test sources of at least N words, where the "
                          "bottleneck shows (default: 1, every source)")
    add_decode_precision(evaluate)
    add_length_alpha(evaluate)


def add_export(commands) -> None:
    """Add the `export` command: a SavedModel in TF Serving's layout."""
    export = commands.add_parser(
        "export",
        help="write a string-in/string-out SavedModel for TensorFlow Serving, or a LiteRT model",
        description="Export a trained model as a SavedModel that takes sentences and returns "
        "translations, to EXPORT_DIR/NAME/<next version>/ (TensorFlow Serving's layout), or "
        "with --format litert for devices, to EXPORT_DIR/NAME/litert/<next version>/.",
    )
    add_model_dir(export)
    export.add_argument("--name", required=True,
                        help="the served model's name: the directory under --export-dir, "
                        "e.g. translator (not the name of a training model directory there)")
    export.add_argument("--export-dir", default=DEFAULT_EXPORT_ROOT,
                        help=f"root of the exported models (default: {DEFAULT_EXPORT_ROOT})")
    export.add_argument("--format", default="savedmodel", choices=EXPORT_FORMATS,
                        help="savedmodel: strings in and out, for TensorFlow Serving (NAME/<n>/); "
                        "litert: the encoder and the decoder step as a LiteRT flatbuffer with "
                        "the vocabularies, for seq2seq_keras.lite.LiteTranslator, which runs "
                        "without TensorFlow (NAME/litert/<n>/) (default: savedmodel)")
    export.add_argument("--quantize", default="none", choices=QUANTIZATIONS,
                        help="with --format litert: int8 stores the weights as int8 "
                        "(dynamic-range quantization, about a quarter of the size) "
                        "(default: none)")
    add_decode_precision(export)
    add_length_alpha(export)


def add_plot(commands) -> None:
    """Add the `plot` command: figures comparing trained models."""
    plot = commands.add_parser(
        "plot",
        help="draw BLEU against source length, training curves and attention maps of models",
        description="Compare trained models in PNG files: greedy BLEU against source length "
        "(one line a model), their training curves on one figure, and attention heatmaps of "
        "given sentences for every attention model.",
    )
    plot.add_argument("--out", required=True, help="directory for the PNG files")
    plot.add_argument("--model-dir", action="append", required=True, dest="model_dirs",
                      metavar="DIR", help="a trained model directory; repeat to compare models")
    add_data(plot)
    plot.add_argument("--sentence", action="append", dest="sentences", metavar="TEXT",
                      help="a sentence whose attention to draw; repeatable (default: a few "
                      "sample sentences)")
    plot.add_argument("--splits", default="test", choices=("test", "validation,test"),
                      metavar="test|validation,test",
                      help="held-out sentences scored by length: the test split (default) or "
                      "validation and test pooled, for more long sentences")


# What a Transformer flag left unset means, where its config field's default is None.
UNSET_TRANSFORMER_FLAGS = {
    "decoder-layers": "as many as --transformer-layers",
    "dropout": f"{DEFAULT_TRANSFORMER_DROPOUTS['float32']} in float32, "
               f"{DEFAULT_TRANSFORMER_DROPOUTS['mixed']} in mixed precision",
}


def add_transformer_flags(group, defaults: Seq2SeqConfig) -> None:
    """The Transformer's sizes and its output layer (docs/transformer.md)."""
    sizes = [
        ("layers", int, "encoder blocks, and decoder blocks unless --transformer-decoder-layers"),
        ("decoder-layers", int, "decoder blocks"),
        ("width", int, "width of every token vector (d_model)"),
        ("heads", int, "attention heads per attention layer"),
        ("feed-forward", int, "inner width of each block's feed-forward network"),
        ("dropout", float, "dropout on embeddings, attention weights and residual branches"),
    ]
    for flag, kind, meaning in sizes:
        default = getattr(defaults, "transformer_" + flag.replace("-", "_"))
        shown = UNSET_TRANSFORMER_FLAGS.get(flag, default)
        group.add_argument(f"--transformer-{flag}", type=kind, default=default,
                           help=f"Transformer: {meaning} (default: {shown})")
    group.add_argument("--transformer-tie-embeddings", action=argparse.BooleanOptionalAction,
                       default=defaults.transformer_tie_embeddings,
                       help="Transformer: one matrix embeds the target tokens and, transposed, "
                       "makes the output logits (default: "
                       f"{'tied' if defaults.transformer_tie_embeddings else 'untied'})")


def config_from_args(args: argparse.Namespace):
    """The `Seq2SeqConfig` a `train` command line asks for: every flag named after a config
    field sets that field (`--reverse-source` unset: the config reads the source backwards
    where that works), and `--max-minutes` sets `max_train_seconds`."""
    fields = {field.name for field in dataclasses.fields(Seq2SeqConfig)}
    values = {name: value for name, value in vars(args).items() if name in fields}
    return dataclasses.replace(
        Seq2SeqConfig(), max_train_seconds=args.max_minutes * 60, **values
    )
