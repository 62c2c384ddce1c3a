"""Command line: `python -m seq2seq_keras train | translate | evaluate | export | plot`.

Intentionally thin: it parses flags, builds a `Seq2SeqConfig`, and calls the same library
functions the notebooks call. A user's mistake (a missing file, an untrained model directory)
ends with one clear `error:` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import os
import sys

from seq2seq_keras.config import (
    ATTENTIONS,
    CELLS,
    DEFAULT_BEAM_WIDTH,
    DEFAULT_EXPORT_ROOT,
    DECODE_PRECISIONS,
    DEFAULT_VOCAB_SIZES,
    LEARNING_RATE_SCHEDULES,
    PRECISIONS,
    STRATEGIES,
    TOKENIZERS,
    Seq2SeqConfig,
    check_beam_width,
    check_temperature,
)

from seq2seq_keras.lite.runtime_files import QUANTIZATIONS

# The export formats: a SavedModel for TensorFlow Serving, LiteRT for devices.
EXPORT_FORMATS = ("savedmodel", "litert")

# TensorFlow's C++ log level without --verbose: 3 keeps its start-up chatter (CUDA stubs on a
# machine without a GPU, oneDNN notices) out of the terminal. Set before TensorFlow is imported.
QUIET_TENSORFLOW_LOG_LEVEL = "3"
DEFAULT_MODEL_DIR = "runs/eng_spa"
# The console command `pip install` makes (pyproject.toml), and the install that brings
# TensorFlow to a base or LiteRT-only install.
CONSOLE_COMMAND = "seq2seq-keras"
TENSORFLOW_INSTALL = "pip install 'seq2seq-keras[tensorflow]'"
SAMPLE_SENTENCES = (
    "Thank you.",
    "How are you?",
    "I love you.",
    "Where is the train station?",
    "It is raining today.",
)


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
    """argparse type of `--beam`: a beam width `config.check_beam_width` accepts."""
    try:
        return check_beam_width(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def temperature(text: str) -> float:
    """argparse type of `--temperature`: a number `config.check_temperature` accepts."""
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
    """Add the `train` command: every `Seq2SeqConfig` switch, defaults from the config."""
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
    train.add_argument("--tokenizer", default=defaults.tokenizer, choices=TOKENIZERS,
                       help="word: lowercased words, rare ones become [UNK]; wordpiece: "
                       "case-kept subword pieces learned from the training split, so rare "
                       f"words and names are spelled from pieces (default: {defaults.tokenizer})")
    source_sizes, target_sizes = (
        ", ".join(f"{sizes[side]} for {name}" for name, sizes in DEFAULT_VOCAB_SIZES.items())
        for side in (0, 1)
    )
    train.add_argument("--source-vocab-size", type=int, default=None,
                       help="most source tokens, padding and [UNK] included; WordPiece learns "
                       f"at most this many pieces (default: {source_sizes})")
    train.add_argument("--target-vocab-size", type=int, default=None,
                       help="most target tokens, padding, [UNK], [START] and [END] included "
                       f"(default: {target_sizes})")
    train.add_argument("--units", type=int, default=defaults.units,
                       help=f"LSTM state size, the context vector's size (default: {defaults.units})")
    train.add_argument("--embedding-dim", type=int, default=defaults.embedding_dim,
                       help=f"token embedding size (default: {defaults.embedding_dim})")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help=f"sentence pairs per batch (default: {defaults.batch_size})")
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                       help=f"Adam learning rate (default: {defaults.learning_rate})")
    train.add_argument("--learning-rate-schedule", default=defaults.learning_rate_schedule,
                       choices=LEARNING_RATE_SCHEDULES,
                       help="constant, or cosine: warm up over --warmup-steps, then decay to "
                       f"{defaults.final_learning_rate_fraction:g} x the rate by the end of the "
                       f"epochs or of --max-minutes (default: {defaults.learning_rate_schedule})")
    train.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps,
                       help=f"with --learning-rate-schedule cosine (default: {defaults.warmup_steps})")
    train.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing,
                       help="label smoothing of the training loss; the validation loss stays the "
                       f"plain cross-entropy (default: {defaults.label_smoothing:g})")
    train.add_argument("--output-projection-dim", type=int, default=None,
                       help="project the decoder's outputs to this size before the softmax layer "
                       "(a factorized output layer, fewer multiply-adds; 0: none) "
                       "(default: half of --units)")
    train.add_argument("--max-minutes", type=float, default=defaults.max_train_seconds / 60,
                       help="stop training after this many minutes (0: no limit)")
    train.add_argument("--reverse-source", action=argparse.BooleanOptionalAction, default=None,
                       help="the encoder reads the source backwards, as Sutskever et al. (2014) "
                       "(default: on for the one-layer unidirectional encoder without "
                       "attention, the only one it works for; --no-reverse-source reads forwards)")
    train.add_argument("--cell", default=defaults.cell, choices=CELLS,
                       help=f"recurrent cell of encoder and decoder (default: {defaults.cell})")
    train.add_argument("--bidirectional", action="store_true",
                       help="bidirectional encoder, units/2 per direction; [forward; backward] "
                       "final states start the decoder")
    train.add_argument("--num-layers", type=int, default=defaults.num_layers,
                       help="stacked RNN layers on each side; encoder layer i's final states "
                       f"start decoder layer i (default: {defaults.num_layers})")
    train.add_argument("--dropout", type=float, default=defaults.dropout,
                       help=f"dropout on every RNN layer's inputs (default: {defaults.dropout})")
    train.add_argument("--attention", default=defaults.attention,
                       choices=ATTENTIONS,
                       help="attention over the source at every decoder step "
                       f"(default: {defaults.attention}; docs/variants.md)")
    train.add_argument("--reverse", action="store_true",
                       help="translate the second column into the first (Spanish→English)")
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
    add_decode_precision(evaluate)


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
                      help="held-out sentences scored by length: the test split (default) or "
                      "validation and test pooled, for more long sentences")


def config_from_args(args: argparse.Namespace):
    """The `Seq2SeqConfig` a `train` command line asks for (`--reverse-source` unset: the config
    reads the source backwards where that works)."""
    return dataclasses.replace(
        Seq2SeqConfig(),
        max_pairs=args.max_pairs,
        tokenizer=args.tokenizer,
        source_vocab_size=args.source_vocab_size,
        target_vocab_size=args.target_vocab_size,
        epochs=args.epochs,
        units=args.units,
        embedding_dim=args.embedding_dim,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        learning_rate_schedule=args.learning_rate_schedule,
        warmup_steps=args.warmup_steps,
        label_smoothing=args.label_smoothing,
        output_projection_dim=args.output_projection_dim,
        max_train_seconds=args.max_minutes * 60,
        reverse=args.reverse,
        reverse_source=args.reverse_source,
        precision=args.precision,
        cell=args.cell,
        bidirectional=args.bidirectional,
        num_layers=args.num_layers,
        dropout=args.dropout,
        attention=args.attention,
    )


def run_train(args: argparse.Namespace) -> None:
    from seq2seq_keras import data as data_lib
    from seq2seq_keras.train import TrainingError, train
    from seq2seq_keras.translator import Translator

    try:
        config = config_from_args(args)
    except ValueError as error:  # switches that do not combine, e.g. --reverse-source --attention
        raise TrainingError(str(error)) from None
    result = train(config, args.model_dir, data=args.data, logdir=args.logdir, verbose=args.verbose,
                   strategy=args.strategy)
    print(f"trained in {result.seconds / 60:.1f} min, {len(result.history.get('loss', []))} "
          f"epochs (stopped by: {result.stop_reason}); model written to {result.model_dir}")
    translator = Translator.from_trained(result.trained)
    references = data_lib.references_by_source(result.prepared.splits.test)
    report_test_scores(translator, references, label=" (greedy)")
    report_test_scores(translator, references, f" (beam {DEFAULT_BEAM_WIDTH})",
                       beam_width=DEFAULT_BEAM_WIDTH)
    if not config.reverse:
        samples = translator.translate(list(SAMPLE_SENTENCES), beam_width=DEFAULT_BEAM_WIDTH)
        print(f"sample translations (beam {DEFAULT_BEAM_WIDTH}):")
        for sentence, translation in zip(SAMPLE_SENTENCES, samples):
            print(f"{sentence}  →  {translation}")


def report_test_scores(
    translator, references: dict[str, list[str]], label: str = "", beam_width: int = 1
) -> None:
    from seq2seq_keras.evaluate import evaluate_translator, format_length_table, format_scores

    translate = functools.partial(translator.translate, beam_width=beam_width)
    scores, buckets, _ = evaluate_translator(translate, references)
    print(f"test split{label}: {format_scores(scores)}")
    print(format_length_table(buckets))


def load_translator(model_dir: str, decode_precision: str | None = None):
    from seq2seq_keras.model_dir import load_trained_model
    from seq2seq_keras.translator import Translator

    trained = load_trained_model(model_dir).with_decode_precision(decode_precision)
    return Translator.from_trained(trained)


def run_translate(args: argparse.Namespace) -> None:
    translator = load_translator(args.model_dir, args.decode_precision)
    # Standard input is read as bytes: the translator repairs invalid UTF-8 like the export.
    sentences = args.sentences or [line.rstrip(b"\r\n") for line in sys.stdin.buffer]
    temperature = args.temperature if args.sample else None
    translations = translator.translate(
        sentences, beam_width=args.beam, temperature=temperature, seed=args.seed
    )
    for translation in translations:
        print(translation)


def run_evaluate(args: argparse.Namespace) -> None:
    from seq2seq_keras import data as data_lib
    from seq2seq_keras.compare import held_out_references

    translator = load_translator(args.model_dir, args.decode_precision)
    references = held_out_references(translator.config, data_lib.resolve_data_file(args.data))
    report_test_scores(translator, references, label=" (greedy)")
    if args.beam > 1:
        report_test_scores(translator, references, f" (beam {args.beam})", beam_width=args.beam)


def run_export(args: argparse.Namespace) -> None:
    from seq2seq_keras.export import check_name, export_saved_model
    from seq2seq_keras.model_dir import load_trained_model
    from seq2seq_keras.translator import signature_names

    check_name(args.name)  # before the seconds spent loading the model
    trained = load_trained_model(args.model_dir).with_decode_precision(args.decode_precision)
    if args.format == "litert":
        from seq2seq_keras.lite.export import export_litert
        from seq2seq_keras.lite.runtime_files import MODEL_FILENAME

        version_dir = export_litert(trained, args.name, args.export_dir, args.quantize)
        megabytes = (version_dir / MODEL_FILENAME).stat().st_size / 1e6
        print(f"exported to {version_dir} (LiteRT, {MODEL_FILENAME} {megabytes:.1f} MB, "
              f"weights {'int8' if args.quantize == 'int8' else 'float32'})")
        return
    version_dir = export_saved_model(trained, args.name, args.export_dir)
    names = signature_names(trained.config.attention != "none")
    print(f"exported to {version_dir} (signatures: {', '.join(names)})")


def run_plot(args: argparse.Namespace) -> None:
    from seq2seq_keras import compare
    from seq2seq_keras import data as data_lib

    models = compare.load_models(args.model_dirs)
    splits = args.splits.split(",")
    buckets = compare.bleu_by_length_of_models(models, data_lib.resolve_data_file(args.data), splits)
    written = compare.draw_figures(
        models, args.out, buckets, sentences=args.sentences or SAMPLE_SENTENCES,
        bleu_title=f"Greedy BLEU by source length ({' + '.join(splits)})",
    )
    for path in written:
        print(path)


COMMANDS = {
    "train": run_train,
    "translate": run_translate,
    "evaluate": run_evaluate,
    "export": run_export,
    "plot": run_plot,
}


def import_tensorflow(quietly: bool) -> None:
    """Import TensorFlow and tensorflow-text, every command's engine; `quietly`, without their
    C++ start-up lines on the terminal (`start_up_lines_silenced`)."""
    with start_up_lines_silenced() if quietly else contextlib.nullcontext():
        import tensorflow  # noqa: F401
        import tensorflow_text  # noqa: F401


@contextlib.contextmanager
def start_up_lines_silenced():
    """File descriptor 2 pointed at the null device for the duration, then restored.

    `TF_CPP_MIN_LOG_LEVEL` quiets TensorFlow's logging once it is set up, but the lines it
    writes while its libraries load (oneDNN notices, "Could not find cuda drivers", the abseil
    warning before them) go straight to file descriptor 2. Restored before anything of ours runs.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TENSORFLOW_LOG_LEVEL)
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    try:
        with open(os.devnull, "wb") as null_device:
            os.dup2(null_device.fileno(), 2)
        yield
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "translate":
        if args.sample and (args.beam or 1) > 1:
            parser.error("translate --sample draws tokens instead of searching: drop --beam")
        # Beam search by default, as OpenNMT, fairseq and Marian translate; sampling draws.
        args.beam = args.beam or (1 if args.sample else DEFAULT_BEAM_WIDTH)
    if args.command == "export" and args.quantize != "none" and args.format != "litert":
        parser.error("--quantize applies to --format litert only")
    if args.command == "export" and args.format == "litert" and args.decode_precision == "bfloat16":
        parser.error("a LiteRT export computes in float32 (--quantize int8 makes it smaller "
                     "and faster): --decode-precision bfloat16 applies to SavedModels only")
    try:
        import_tensorflow(quietly=not args.tensorflow_logs)
    except ImportError as error:  # a base or LiteRT-only install: say what brings TensorFlow
        print(f"error: {args.command} needs TensorFlow and tensorflow-text ({error}): "
              f"{TENSORFLOW_INSTALL}, or pip install -r requirements.txt in a checkout",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # TensorFlow's own INFO lines (one per traced all-reduce under --strategy) are not ours.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    from seq2seq_keras.data import DataError
    from seq2seq_keras.export import ExportError
    from seq2seq_keras.model_dir import ModelDirError
    from seq2seq_keras.tokenizers import VocabularyError
    from seq2seq_keras.train import TrainingError

    errors = (DataError, ExportError, ModelDirError, TrainingError, TypeError, VocabularyError)
    try:
        COMMANDS[args.command](args)
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume training.", file=sys.stderr)
        return 130
    return 0
