"""Decoding speed of a Transformer: its cached step against re-running the model on the prefix.

    python benchmarks/decode.py --model-dir runs/transformer [--against runs/attention]

(`benchmarks/decode.py` hands a Transformer's model directory to this module.) Every row
decodes the same sample of test sentences, spread over all source lengths, with the same
search and length caps, after one untimed warm-up pass; batched rows are the best of
`FAST_REPEATS` passes:

1. uncached greedy, the tutorials' way (the baseline): each step re-runs the whole model, the
   encoder too, on the source and the prefix so far, and the output layer at every position
   (`transformer_decode.whole_model_logits`), as the Keras example and the TensorFlow tutorial
   decode;
   then with the encoder run once, only the decoder re-run over the prefix and the output layer
   at its last position (`transformer_decode.uncached_decoder_logits`): what a cache saves
   beyond that;
2. cached greedy at batch 64 and 1, cached beam 4 at batch 64 (`graph_decoder.GraphDecoder`:
   caches that grow a position a step), and cached greedy with the caches preallocated to the
   length cap and written in place (`fixed_shapes`, as the LiteRT export runs the step);
3. the exported SavedModel, strings in and out, greedy at batch 64;
4. with `--against`, the other model's graph greedy on the same sentences (for instance the
   LSTM with attention).

It prints `cache speedup: X.XX` (cached greedy over the tutorials' way, sentences/s at batch
64), whether both decoders chose the same tokens, and each row's ratio to the baseline. Then
where a greedy pass at batch 64 spends its time, for the cached decoder and the `--against`
model: encoding (the search's starting state, timed alone), the steps its loops ran (a batch
steps until its last sentence ends or reaches its length cap) and the milliseconds a step.
"""

from __future__ import annotations

import tempfile

import numpy as np
import tensorflow as tf

from seq2seq_keras import export, search, transformer_decode
from seq2seq_keras.graph_decoder import SOURCE_IDS_SPEC, GraphDecoder
from seq2seq_keras.model import float32_model
from seq2seq_keras.model_dir import load_trained_model
from seq2seq_keras.tokenizers import make_tokenizer
from seq2seq_keras.translator import SERVING_SIGNATURE

FAST_REPEATS = 3


class UncachedGreedy(tf.Module):
    """`GraphDecoder.greedy` with an uncached step of `transformer_decode` (`step_name`)."""

    def __init__(self, decoder: GraphDecoder, step_name: str):
        super().__init__(name=step_name)
        self.decoder = decoder
        self.uncached_step = getattr(transformer_decode, step_name)
        self.greedy = tf.function(self._greedy, input_signature=[SOURCE_IDS_SPEC])

    def step(self, token_ids, state):
        logits, state = self.uncached_step(self.decoder.layers, token_ids, state)
        return self.decoder.known_tokens_only(logits), state

    def _greedy(self, source_ids):
        state = transformer_decode.uncached_encode(self.decoder.layers, source_ids)
        return search.greedy_search(
            self.step, state, tf.shape(source_ids)[0], self.decoder.max_length,
            max_lengths=self.decoder.max_lengths(source_ids),
        )


def graph_decoder(trained, fixed_shapes: bool = False) -> GraphDecoder:
    """The translator's decoder of a trained model: float32 layers, its length caps (with
    `fixed_shapes`, the caches preallocated as the LiteRT export keeps them)."""
    config = trained.config
    return GraphDecoder(
        float32_model(trained.training_model, config), config.max_decode_length,
        vocabulary_size=len(trained.target_vocabulary), length_factor=config.decode_length_factor,
        length_offset=config.decode_length_offset, fixed_shapes=fixed_shapes,
    )


def id_batches(trained, sources: list[str], batch_size: int) -> list[tf.Tensor]:
    """The sources as padded id batches in `trained`'s own source vocabulary."""
    tokenizer = make_tokenizer(trained.config.tokenizer, trained.source_vocabulary)
    ragged = tokenizer.tokenize(tf.constant(sources))[:, : trained.config.max_source_length]
    return [ragged[start : start + batch_size].to_tensor(0) for start in range(0, len(sources), batch_size)]


def token_rows(results) -> list[tuple[int, ...]]:
    """Every sentence's tokens, without the padding after them."""
    return [tuple(np.trim_zeros(row, "b")) for result in results for row in result.token_ids.numpy()]


def encoding_and_steps(decoder: GraphDecoder, batches, results, timed) -> tuple[float, int]:
    """The seconds `decoder` spends encoding `batches` (the searches' starting state, compiled
    alone) and the loop steps its greedy `results` took, summed over the batches."""
    encode = tf.function(
        lambda ids: decoder.search_state(ids, decoder.max_lengths(ids)),
        input_signature=[SOURCE_IDS_SPEC], autograph=False,
    )
    seconds, _ = timed(lambda: [encode(ids) for ids in batches], FAST_REPEATS)
    return seconds, sum(int(result.token_ids.shape[1]) for result in results)


def run(args, sources: list[str], timed) -> int:
    """Time the rows above on `sources` (the sample of `benchmarks/decode.py`) and report."""
    trained = load_trained_model(args.model_dir)
    decoder = graph_decoder(trained)
    tutorials = UncachedGreedy(decoder, "whole_model_logits")
    decoder_only = UncachedGreedy(decoder, "uncached_decoder_logits")
    batches = id_batches(trained, sources, args.batch_size)
    singles = id_batches(trained, sources, 1)
    count = len(sources)
    beam_width, alpha = tf.constant(4), tf.constant(search.DEFAULT_LENGTH_ALPHA)

    rows = []  # (name, batch, seconds)
    seconds, uncached_results = timed(lambda: [tutorials.greedy(ids) for ids in batches], FAST_REPEATS)
    rows.append(("uncached greedy: whole model re-run", args.batch_size, seconds))
    seconds, _ = timed(lambda: [decoder_only.greedy(ids) for ids in batches], FAST_REPEATS)
    rows.append(("uncached greedy: decoder re-run", args.batch_size, seconds))
    seconds, cached_results = timed(lambda: [decoder.greedy(ids) for ids in batches], FAST_REPEATS)
    rows.append(("cached greedy", args.batch_size, seconds))
    cached_seconds = seconds
    splits = [("cached greedy", seconds, *encoding_and_steps(decoder, batches, cached_results, timed))]
    preallocated = graph_decoder(trained, fixed_shapes=True)
    seconds, _ = timed(lambda: [preallocated.greedy(ids) for ids in batches], FAST_REPEATS)
    rows.append(("cached greedy, preallocated cache", args.batch_size, seconds))
    seconds, _ = timed(lambda: [decoder.beam(ids, beam_width, alpha) for ids in batches], FAST_REPEATS)
    rows.append(("cached beam 4", args.batch_size, seconds))
    seconds, _ = timed(lambda: [decoder.greedy(ids) for ids in singles])
    rows.append(("cached greedy", 1, seconds))
    with tempfile.TemporaryDirectory() as export_root:
        served = tf.saved_model.load(str(export.export_saved_model(trained, "benchmark", export_root)))
        serve = served.signatures[SERVING_SIGNATURE]
        texts = [tf.constant(sources[i : i + args.batch_size]) for i in range(0, count, args.batch_size)]
        seconds, _ = timed(lambda: [serve(sentences=batch) for batch in texts], FAST_REPEATS)
        rows.append(("SavedModel greedy (strings)", args.batch_size, seconds))
    if args.against:
        other = load_trained_model(args.against)
        other_decoder = graph_decoder(other)
        other_batches = id_batches(other, sources, args.batch_size)
        seconds, other_results = timed(
            lambda: [other_decoder.greedy(ids) for ids in other_batches], FAST_REPEATS
        )
        rows.append((f"{args.against} greedy", args.batch_size, seconds))
        splits.append((args.against, seconds, *encoding_and_steps(
            other_decoder, other_batches, other_results, timed)))

    config = trained.config
    print(f"Transformer {args.model_dir}: {config.transformer_layers} encoder and "
          f"{config.transformer_decoder_blocks} decoder blocks, width "
          f"{config.transformer_width}, {config.transformer_heads} heads; {count} test sentences")
    baseline = count / rows[0][2]
    print(f"\n{'decoder':<40}{'batch':>6}{'seconds':>9}{'sent/s':>10}{'x uncached':>12}")
    for name, batch, seconds in rows:
        print(f"{name:<40}{batch:>6}{seconds:>9.2f}{count / seconds:>10.1f}"
              f"{count / seconds / baseline:>12.2f}")
    differing = sum(a != b for a, b in zip(token_rows(cached_results), token_rows(uncached_results)))
    print(f"\nsame tokens, cached vs uncached greedy: "
          f"{'yes' if not differing else f'{differing} of {count} differ (rounding)'}")
    print(f"cache speedup: {rows[0][2] / cached_seconds:.2f}")
    print(f"\nwhere greedy's time goes at batch {args.batch_size}:")
    print(f"{'decoder':<40}{'total ms':>10}{'encode ms':>11}{'loop steps':>12}{'ms/step':>9}")
    for name, seconds, encode_seconds, steps in splits:
        print(f"{name:<40}{seconds * 1e3:>10.1f}{encode_seconds * 1e3:>11.1f}{steps:>12}"
              f"{(seconds - encode_seconds) * 1e3 / steps:>9.2f}")
    return 0 if differing <= count // 50 else 1
