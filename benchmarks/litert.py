"""The LiteRT export against the SavedModel: same translations, BLEU, size, latency, memory.

    python benchmarks/litert.py --model-dir runs/eng_spa [--data spa-eng.zip]

1. Exports the model three ways into a temporary directory (`--export-dir` keeps them): the
   SavedModel (the baseline, decoding in float32 like the LiteRT float export, so that "same
   as SavedModel" measures the conversion; `--decode-precision` changes it), LiteRT float32
   and LiteRT with int8 weights.
2. Translates every test source greedily with the reloaded SavedModel and both LiteRT exports
   (`LiteTranslator`, batch 64): the share of sources whose translation equals the
   SavedModel's, test BLEU (sacrebleu, case-sensitive, multi-reference), file sizes.
3. One sentence per call (`--latency-calls` test sources, spread over all lengths, each call
   timed after a warm-up): p50 and p95 of greedy and beam 4, SavedModel against LiteRT.
4. A fresh process that imports only `seq2seq_keras.lite` translates `--latency-calls`
   sentences: its peak RSS, and that TensorFlow never got imported; the same for a process
   that loads the SavedModel with TensorFlow.
5. Disk space of the runtime's packages (`ai-edge-litert` and its dependencies, numpy
   included) against TensorFlow's, as installed in this environment.

Ratios are against the SavedModel (or TensorFlow's packages) of the same run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The project root in place of this folder: this file's name would shadow the `litert` module
# TensorFlow imports.
sys.path[0] = str(PROJECT_ROOT)

import numpy as np  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402
import tensorflow as tf  # noqa: E402

from seq2seq_keras import compare, evaluate, export  # noqa: E402
from seq2seq_keras.config_defaults import DECODE_PRECISIONS  # noqa: E402
from seq2seq_keras import data as data_lib  # noqa: E402
from seq2seq_keras.lite import LiteTranslator  # noqa: E402
from seq2seq_keras.lite.export import export_litert  # noqa: E402
from seq2seq_keras.lite.runtime_files import MODEL_FILENAME  # noqa: E402
from seq2seq_keras.model_dir import load_trained_model  # noqa: E402
from seq2seq_keras.translator import BEAM_SIGNATURE, SERVING_SIGNATURE  # noqa: E402

BEAM_WIDTH = 4
BATCH_SIZE = 64
MEGABYTE = 1e6

# Run in a fresh process: translate with one kind of export, report peak RSS and whether
# TensorFlow was imported. argv: kind ("litert" or "savedmodel"), export path, sentences...
MEMORY_PROBE = """
import json, sys
kind, path, sentences = sys.argv[1], sys.argv[2], sys.argv[3:]
if kind == "litert":
    from seq2seq_keras.lite import LiteTranslator
    translator = LiteTranslator(path)
    for sentence in sentences:
        translator.translate([sentence])
else:
    import tensorflow as tf, tensorflow_text  # noqa: F401
    model = tf.saved_model.load(path)
    for sentence in sentences:
        model.signatures["serving_default"](sentences=tf.constant([sentence]))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"peak_mb": peak_kb / 1024, "tensorflow_imported": "tensorflow" in sys.modules}))
"""

RUNTIME_PACKAGES = ("ai-edge-litert",)
BASELINE_PACKAGES = ("tensorflow", "tensorflow-text", "keras")


def spread_over_lengths(sources: list[str], count: int) -> list[str]:
    """`count` sources picked evenly from all of them sorted by length."""
    ordered = sorted(sources, key=len)
    picks = np.linspace(0, len(ordered) - 1, min(count, len(ordered))).round().astype(int)
    return [ordered[index] for index in picks]


def percentiles(seconds: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(np.asarray(seconds) * 1000, [50, 95])
    return float(p50), float(p95)


def latencies(translate_one, sentences: list[str]) -> list[float]:
    translate_one(sentences[0])  # warm-up: the first call of a graph or interpreter pays setup
    seconds = []
    for sentence in sentences:
        started = time.perf_counter()
        translate_one(sentence)
        seconds.append(time.perf_counter() - started)
    return seconds


def installed_megabytes(names: tuple[str, ...]) -> tuple[float, list[str]]:
    """Disk space of the distributions `names` and everything they require, installed here."""
    seen, todo, total = set(), list(names), 0
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for file in distribution.files or []:
            path = Path(distribution.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return total / MEGABYTE, sorted(seen)


def probe_memory(kind: str, path: Path, sentences: list[str]) -> dict:
    command = [sys.executable, "-c", MEMORY_PROBE, kind, str(path), *sentences]
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default="runs/eng_spa")
    parser.add_argument("--data", help="pairs file (default: $SEQ2SEQ_DATA or the download)")
    parser.add_argument("--export-dir", help="keep the exports here (default: a temporary one)")
    parser.add_argument("--sources", type=int, default=0,
                        help="translate only the first N test sources (default: all)")
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--decode-precision", choices=DECODE_PRECISIONS, default="float32",
                        help="the SavedModel's decoding precision (default: float32)")
    return parser.parse_args(argv)


class Exports:
    """The SavedModel and the float and int8 LiteRT exports of one trained model, loaded."""

    def __init__(self, trained, export_root: Path):
        self.saved_model_dir = export.export_saved_model(trained, "benchmark", export_root)
        self.lite_dirs = {
            quantize: export_litert(trained, "benchmark", export_root, quantize=quantize)
            for quantize in ("none", "int8")
        }
        self.served = tf.saved_model.load(str(self.saved_model_dir))
        self.lite = {quantize: LiteTranslator(path) for quantize, path in self.lite_dirs.items()}

    def served_translate(self, sentences, beam_width=1) -> list[str]:
        batch = tf.constant(sentences, tf.string)
        if beam_width == 1:
            out = self.served.signatures[SERVING_SIGNATURE](sentences=batch)
        else:
            out = self.served.signatures[BEAM_SIGNATURE](
                sentences=batch, beam_width=tf.constant(beam_width))
        return [text.decode("utf-8") for text in out["translations"].numpy()]

    def megabytes(self) -> dict[str, float]:
        files = (p for p in self.saved_model_dir.rglob("*") if p.is_file())
        sizes = {"SavedModel": sum(p.stat().st_size for p in files)}
        for quantize, path in self.lite_dirs.items():
            sizes[f"LiteRT {quantize}"] = (path / MODEL_FILENAME).stat().st_size
        return {name: size / MEGABYTE for name, size in sizes.items()}


def print_agreement(exports: Exports, sources: list[str], reference_lists) -> None:
    """2. Every export's translations of the test sources: agreement, BLEU and size."""
    outputs = {"SavedModel": []}
    for start in range(0, len(sources), BATCH_SIZE):
        outputs["SavedModel"] += exports.served_translate(sources[start : start + BATCH_SIZE])
    for quantize, translator in exports.lite.items():
        outputs[f"LiteRT {quantize}"] = translator.translate(sources, batch_size=BATCH_SIZE)
    sizes = exports.megabytes()
    baseline = outputs["SavedModel"]
    print(f"\n{'export':<16}{'same as SavedModel':>20}{'test BLEU':>11}{'MB':>9}{'x float':>9}")
    for name, translations in outputs.items():
        same = np.mean([a == b for a, b in zip(translations, baseline)])
        bleu = evaluate.corpus_scores(translations, reference_lists).bleu
        print(f"{name:<16}{same:>19.2%} {bleu:>10.2f}{sizes[name]:>9.1f}"
              f"{sizes[name] / sizes['LiteRT none']:>9.2f}")


def print_latencies(exports: Exports, sample: list[str]) -> None:
    """3. One sentence per call, greedy and beam, each export against the SavedModel."""
    rows = []
    for beam_width in (1, BEAM_WIDTH):
        search = "greedy" if beam_width == 1 else f"beam {beam_width}"
        rows.append((f"SavedModel {search}", latencies(
            lambda s: exports.served_translate([s], beam_width), sample)))
        for quantize, translator in exports.lite.items():
            rows.append((f"LiteRT {quantize} {search}", latencies(
                lambda s, t=translator: t.translate([s], beam_width=beam_width), sample)))
    print(f"\none sentence per call ({len(sample)} calls, sources spread over all lengths)")
    print(f"{'export, search':<28}{'p50 ms':>9}{'p95 ms':>9}{'p50 ratio':>11}")
    baselines = {}
    for name, seconds in rows:
        p50, p95 = percentiles(seconds)
        search = name.split(" ", 2)[-1] if not name.startswith("SavedModel") else name[11:]
        baselines.setdefault(search, p50)
        print(f"{name:<28}{p50:>9.2f}{p95:>9.2f}{p50 / baselines[search]:>11.2f}")


def print_memory(exports: Exports, sample: list[str]) -> None:
    """4. Peak memory of a fresh process that translates, with TensorFlow and without."""
    print(f"\npeak RSS of a fresh process translating {len(sample)} sentences one by one")
    memory = {
        "SavedModel (TensorFlow)": probe_memory("savedmodel", exports.saved_model_dir, sample),
        "LiteRT float (no TensorFlow)": probe_memory("litert", exports.lite_dirs["none"], sample),
        "LiteRT int8 (no TensorFlow)": probe_memory("litert", exports.lite_dirs["int8"], sample),
    }
    base_mb = memory["SavedModel (TensorFlow)"]["peak_mb"]
    for name, probe in memory.items():
        print(f"{name:<30}{probe['peak_mb']:>9.0f} MB{probe['peak_mb'] / base_mb:>8.2f}"
              f"   tensorflow imported: {probe['tensorflow_imported']}")


def print_installed_size() -> None:
    """5. What installing the LiteRT runtime costs against TensorFlow's packages."""
    runtime_mb, runtime_packages = installed_megabytes(RUNTIME_PACKAGES)
    baseline_mb, _ = installed_megabytes(BASELINE_PACKAGES)
    print(f"\ninstalled: LiteRT runtime {runtime_mb:.0f} MB ({', '.join(runtime_packages)}); "
          f"TensorFlow, tensorflow-text and Keras {baseline_mb:.0f} MB "
          f"(ratio {runtime_mb / baseline_mb:.3f})")


def main(argv=None) -> int:
    args = parse_args(argv)
    trained = load_trained_model(args.model_dir)
    trained = trained.with_decode_precision(args.decode_precision)
    data_file = data_lib.resolve_data_file(args.data)
    references = compare.held_out_references(trained.config, data_file, ("test",))
    sources = list(references)[: args.sources or None]
    export_root = Path(args.export_dir or tempfile.mkdtemp(prefix="litert-benchmark-"))
    print(f"model {args.model_dir} ({trained.config.tokenizer}, units {trained.config.units}); "
          f"{len(sources)} test sources; exports in {export_root}")

    exports = Exports(trained, export_root)  # 1. the exports
    print_agreement(exports, sources, [references[source] for source in sources])
    sample = spread_over_lengths(sources, args.latency_calls)
    print_latencies(exports, sample)
    print_memory(exports, sample)
    print_installed_size()
    return 0


if __name__ == "__main__":
    sys.exit(main())
