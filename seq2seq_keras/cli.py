"""Command line: `python -m seq2seq_keras train | translate | evaluate | export | plot`.

Intentionally thin: it parses flags (`cli_flags.build_parser`), builds a `Seq2SeqConfig`, and
calls the same library functions the notebooks call. A user's mistake (a missing file, an
untrained model directory) ends with one clear `error:` line and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys

from seq2seq_keras.cli_flags import (  # noqa: F401  (build_parser: also this module's API)
    CONSOLE_COMMAND,
    EXPORT_FORMATS,
    build_parser,
    config_from_args,
)
from seq2seq_keras.decoding_options import DEFAULT_BEAM_WIDTH, DEFAULT_LENGTH_ALPHA

# TensorFlow's C++ log level without --verbose: 3 keeps its start-up chatter (CUDA stubs on a
# machine without a GPU, oneDNN notices) out of the terminal. Set before TensorFlow is imported.
QUIET_TENSORFLOW_LOG_LEVEL = "3"
# The install that brings TensorFlow to a base or LiteRT-only install.
TENSORFLOW_INSTALL = "pip install 'seq2seq-keras[tensorflow]'"
SAMPLE_SENTENCES = (
    "Thank you.",
    "How are you?",
    "I love you.",
    "Where is the train station?",
    "It is raining today.",
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
                   strategy=args.strategy, restart=args.restart)
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


def load_translator(model_dir: str, decode_precision: str | None = None,
                    length_alpha: float = DEFAULT_LENGTH_ALPHA):
    from seq2seq_keras.model_dir import load_trained_model
    from seq2seq_keras.translator import Translator

    trained = load_trained_model(model_dir).with_decode_precision(decode_precision)
    return Translator.from_trained(trained, length_alpha)


def run_translate(args: argparse.Namespace) -> None:
    translator = load_translator(args.model_dir, args.decode_precision, args.length_alpha)
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
    from seq2seq_keras.compare import held_out_references, long_sources

    translator = load_translator(args.model_dir, args.decode_precision, args.length_alpha)
    references = held_out_references(translator.config, data_lib.resolve_data_file(args.data))
    sources = ""
    if args.min_words > 1:
        references = long_sources(references, args.min_words)
        sources = f", sources of {args.min_words}+ words"
    if not references:
        raise data_lib.DataError(f"no test source has {args.min_words} or more words.")
    report_test_scores(translator, references, label=f"{sources} (greedy)")
    if args.beam > 1:
        report_test_scores(translator, references, f"{sources} (beam {args.beam})",
                           beam_width=args.beam)


def run_export(args: argparse.Namespace) -> None:
    from seq2seq_keras.export import check_name, export_saved_model
    from seq2seq_keras.model_dir import load_trained_model
    from seq2seq_keras.translator import signature_names

    check_name(args.name)  # before the seconds spent loading the model
    trained = load_trained_model(args.model_dir).with_decode_precision(args.decode_precision)
    if args.format == "litert":
        from seq2seq_keras.lite.export import export_litert
        from seq2seq_keras.lite.runtime_files import MODEL_FILENAME

        version_dir = export_litert(trained, args.name, args.export_dir, args.quantize,
                                    args.length_alpha)
        megabytes = (version_dir / MODEL_FILENAME).stat().st_size / 1e6
        print(f"exported to {version_dir} (LiteRT, {MODEL_FILENAME} {megabytes:.1f} MB, "
              f"weights {'int8' if args.quantize == 'int8' else 'float32'})")
        return
    version_dir = export_saved_model(trained, args.name, args.export_dir, args.length_alpha)
    names = signature_names(trained.config.has_attention)
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
