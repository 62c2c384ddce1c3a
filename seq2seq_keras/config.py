"""One explicit configuration object for a seq2seq run.

Every choice that shapes the data, the model or the training lives here, in one frozen
dataclass that is passed around explicitly (never read from a global) and changed with
`dataclasses.replace`. It is written as JSON beside the trained model and read back on load,
so a model directory always says how it was made. The values a field may take and the
defaults the comments below name (`DEFAULT_…`, `LEGACY_DEFAULTS`) are in `config_defaults`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from seq2seq_keras.config_defaults import (
    ARCHITECTURE_DEFAULTS,
    CHOICES,
    DEFAULT_VOCAB_SIZES,
    LEGACY_DEFAULTS,
    default_transformer_dropout,
)
from seq2seq_keras.decoding_options import DEFAULT_MAX_DECODE_LENGTH

CONFIG_FILENAME = "config.json"
# Where exports go by default: EXPORT_ROOT/NAME/<version>/, TensorFlow Serving's layout.
DEFAULT_EXPORT_ROOT = "saved_models"


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
    """Hyper-parameters of the encoder–decoder and of its training run.

    The defaults are the project's default English→Spanish model: they were chosen so that a
    2-core CPU trains it to a useful BLEU within the README's time budget.
    """

    # --- Data -------------------------------------------------------------------------
    # Translate target→source instead (Spanish→English on spa-eng) when True.
    reverse: bool = False
    # Keep only the first N pairs of the file (before the split); 0 keeps all of them.
    max_pairs: int = 0

    # --- Tokens, vocabulary and lengths -------------------------------------------------
    # "wordpiece" (the default): case-kept subword pieces learned from the training split
    # (tensorflow-text's WordPiece), so a rare word or a name is spelled from pieces instead of
    # lost; it scores the higher case-sensitive BLEU in the same training time (README).
    # "word": lowercased whole words, anything outside the vocabulary becomes "[UNK]".
    tokenizer: str = "wordpiece"
    # Vocabulary sizes include the padding token "" (id 0) and "[UNK]" (id 1); the target
    # vocabulary also includes "[START]" and "[END]". None (the default) resolves to the
    # tokenizer's sizes in DEFAULT_VOCAB_SIZES (8,000 / 8,000 pieces, 10,000 / 12,000 words);
    # the saved config records the result.
    source_vocab_size: int | None = None
    target_vocab_size: int | None = None
    # One vocabulary for both languages, learned from the source and target sides of the
    # training split together, of `target_vocab_size` entries (the source's size is then the
    # same; names, numbers and cognates get the same ids on both sides). With
    # `transformer_tie_embeddings` the Transformer's encoder reads the tied matrix too: one
    # matrix embeds source and target tokens and makes the logits (Vaswani et al. 2017,
    # section 3.4). Off: in 30 minutes it translates worse (docs/transformer.md).
    shared_vocabulary: bool = False
    # Longest source / target in tokens after standardization. Training pairs longer than this
    # are dropped (and counted); a longer sentence to translate is truncated with a warning.
    # The target length counts the [START] and [END] markers.
    max_source_length: int = 64
    max_target_length: int = 64

    # --- Model -------------------------------------------------------------------------
    # "rnn": the encoder–decoder of recurrent layers (`model.py`; the fields below up to
    # `output_projection_dim` shape it). "transformer": no recurrence, attention everywhere
    # (Vaswani et al. 2017; `transformer.py`, the `transformer_*` fields shape it).
    architecture: str = "rnn"
    embedding_dim: int = 256
    # Size of the LSTM states h and c: the size of the context vector.
    units: int = 512
    # Read the source backwards (Sutskever et al., 2014): the first source words are then the
    # last the encoder saw, right before the decoder starts writing the first target words.
    # It shortens the path between the words that are translated first, and helps an encoder
    # without attention. Only the encoder's reading order changes; the graph stays the same.
    # None (the default) resolves to True where it works, the classic one-layer unidirectional
    # encoder without attention, and to False elsewhere; the saved config records the result.
    reverse_source: bool | None = None
    # Dropout on the LSTM inputs (0 disables it).
    dropout: float = 0.0
    # --- The RNN family and attention (docs/variants.md). The defaults are the classic graph:
    # one unidirectional LSTM layer on each side and no attention.
    # "lstm" or "gru": the recurrent cell of the encoder and the decoder.
    cell: str = "lstm"
    # A bidirectional encoder: each layer reads the source both ways with units // 2 per
    # direction, and [forward; backward] final states (size `units`) start the decoder layer.
    bidirectional: bool = False
    # Stacked layers on each side; encoder layer i's final states start decoder layer i.
    num_layers: int = 1
    # "none", "luong" or "bahdanau": how each decoder step looks back at every source position.
    attention: str = "none"
    # 0: the softmax layer multiplies the decoder's outputs (`units` wide) by a units × vocab
    # kernel, the largest matmul of every training and decoding step. N > 0: it first projects
    # them to N, then multiplies by an N × vocab kernel (a factorized output layer, as
    # factorized embeddings in ALBERT): (units + vocab) × N multiply-adds a token instead of
    # units × vocab. None (the default) resolves to units // 2, which halves that work; the
    # saved config records the result (docs/training.md has the measurements).
    output_projection_dim: int | None = None
    # --- The Transformer (architecture="transformer"): pre-layer-norm blocks (Xiong et al.
    # 2020), which train without a long warmup, and sinusoidal positions. The sizes are a
    # small Transformer for a small corpus and a 2-core CPU: 2 blocks a side of width 256 and
    # 4 heads of 64. In 30 minutes they reach a lower validation loss than 3 blocks a side on
    # both CPU kinds: each epoch costs a third less, and the budget holds more of them
    # (docs/transformer.md measures 2 + 2, 3 + 3 and 3 + 1 blocks).
    # Encoder blocks, and decoder blocks unless `transformer_decoder_layers` says otherwise.
    transformer_layers: int = 2
    # Decoder blocks. None (the default): as many as `transformer_layers` (read it through
    # `transformer_decoder_blocks`). A deep encoder with a shallow decoder (Kasai et al. 2021)
    # moves work from the decoder, which runs once per generated token, to the encoder, which
    # runs once per sentence: decoding gets faster (docs/transformer.md measures it).
    transformer_decoder_layers: int | None = None
    # The width of every token's vector (d_model): embeddings, attention and block outputs.
    transformer_width: int = 256
    # Attention heads per attention layer; each looks through width / heads dimensions.
    transformer_heads: int = 4
    # The inner width of each block's feed-forward network (4 × width, as in the paper).
    transformer_feed_forward: int = 1024
    # Dropout on embeddings, attention weights and every block's residual branches. None (the
    # default): DEFAULT_TRANSFORMER_DROPOUTS for the precision the model trains in, resolved
    # with it (read it through `transformer_dropout_rate`).
    transformer_dropout: float | None = None
    # Tie the decoder's embedding to its output layer (Press & Wolf 2017): one `vocab × width`
    # matrix embeds the target tokens and, transposed, turns the decoder's outputs into logits
    # (`keras.layers.ReversibleEmbedding`). It drops 2.0 of the default model's 9.8 million
    # weights, and every output row learns from the token's inputs too. Off: with it the
    # validation loss is higher epoch for epoch on both CPU kinds (docs/transformer.md).
    transformer_tie_embeddings: bool = False

    # --- Training ----------------------------------------------------------------------
    batch_size: int = 128
    # How a batch groups pairs by length. "both" (the default): by the pair of buckets of the
    # source's and the target's lengths, so neither side is padded to lengths only the other
    # side needs (6.5% padding instead of 20.7% on spa-eng), each bucket's leftover pairs batched
    # by their longer side; "longer": by the longer side's bucket alone, the default before.
    # On the AVX2 CPU, "both" ran 1.15x the real tokens a second and reached a lower
    # validation loss after every epoch (`pipeline.batch_by_length`; docs/training.md).
    bucket_by: str = "both"
    # Adam's step size. None (the default) resolves to the architecture's entry in
    # DEFAULT_LEARNING_RATES: for the LSTM, 2e-3 reaches a lower validation loss within the
    # 30-minute budget than Keras' default 1e-3 (docs/training.md); clipnorm keeps it stable.
    learning_rate: float | None = None
    # Gradient-norm clipping keeps an LSTM from diverging on an unlucky batch.
    clipnorm: float = 1.0
    # How the learning rate moves during a run. "constant": `learning_rate` throughout.
    # "cosine": up linearly from 0 over `warmup_steps` (at most a tenth of the epochs' steps),
    # then down along a cosine to
    # `final_learning_rate_fraction` × `learning_rate` at the run's end: the end of `epochs` or
    # of `max_train_seconds`, whichever comes first (`callbacks.LearningRateSchedule`). Sized by
    # the time budget, the decay ends on time on a slow CPU and a fast one alike.
    learning_rate_schedule: str = "cosine"
    warmup_steps: int | None = None  # None: the architecture's DEFAULT_WARMUP_STEPS
    final_learning_rate_fraction: float = 0.02
    # The share of the run, at its end, over which the cosine decays; before it the rate holds
    # at its peak ("warmup–stable–decay": Hu et al. 2024, Hägele et al. 2024). 1.0 decays over
    # the whole run. A run that gets few epochs (a slow CPU's 30 minutes) learns at the full
    # rate for longer with a short decay (docs/training.md). None: the architecture's
    # DEFAULT_DECAY_SHARES.
    decay_share: float | None = None
    # Begin that decay early, at the first epoch at the peak rate whose validation loss does
    # not improve on the best: from there the peak rate only overfits. The decay keeps its
    # length (`decay_share` of the run), and the rate then stays at its floor. A CPU that fits
    # few epochs in the budget never plateaus and decays over the last `decay_share`; one that
    # fits many no longer spends them overfitting at the peak (docs/training.md, "The decay
    # begins at the plateau").
    decay_on_plateau: bool = True
    # Label smoothing ε of the training loss: (1 - ε) · cross-entropy + ε · cross-entropy
    # against the uniform distribution (`model.Seq2SeqModel`). The validation loss stays the
    # plain cross-entropy. 0 disables it.
    label_smoothing: float = 0.1
    epochs: int = 20
    # Stop when the validation loss has not improved for this many epochs (best weights kept).
    # Epochs that end while the rate holds its peak before a decay (`decay_share` < 1) do not
    # count: at the peak the validation loss may rise for epochs that the decay then undoes.
    patience: int = 2
    # Stop training after this many seconds (0: no limit). The default 30 minutes is the budget
    # the README's BLEU was measured with on a 2-core CPU; on a GPU `epochs` binds first.
    max_train_seconds: float = 1800.0
    # Seed for shuffling and weight initialisation: the same seed gives the same run.
    seed: int = 1234
    # Save a resumable checkpoint this often during an epoch (and at every epoch's end; 0: only
    # there), so a killed run loses at most this much work. A checkpoint costs about a second.
    checkpoint_seconds: float = 300.0

    # --- Speed (docs/training.md has the measurements behind these defaults) -------------
    # "auto": mixed bfloat16 on a CPU with native bfloat16 dot products, mixed float16 on a
    # GPU, else float32; or name one of "float32", "mixed_bfloat16", "mixed_float16". The
    # softmax and the loss are float32 in every case. A trained model records the one used.
    precision: str = "auto"
    # XLA compilation of the training step, as in `model.compile(jit_compile=...)`: "auto" is
    # Keras' choice (on with a GPU, off on a CPU, where XLA recompiles for every batch shape).
    jit_compile: bool | str = "auto"

    # --- Decoding ----------------------------------------------------------------------
    # Longest translation generated, in tokens, counting the final [END].
    max_decode_length: int = DEFAULT_MAX_DECODE_LENGTH
    # A translation also stops after `decode_length_factor * source tokens +
    # decode_length_offset` tokens (and never after more than `max_decode_length`): a confused
    # model then stops early instead of repeating itself to the maximum. Real translations
    # fit: on spa-eng, every Spanish reference with its [END] fits in 2 × English words + 10.
    decode_length_factor: float = 2.0
    decode_length_offset: int = 10
    # The precision of the decoder's matmuls when translating (not training): "float32", or
    # "bfloat16" (weights stored in bfloat16, states and gates in float32; faster on a CPU
    # with bfloat16 dot products), or "auto": bfloat16 on such a CPU, else float32. Resolved
    # where the translator is built; an export keeps what the exporting machine chose
    # (seq2seq_keras.decode_precision, docs/serving.md).
    decode_precision: str = "auto"

    def __post_init__(self):
        """Fill in the defaults that depend on other fields (None), and refuse a combination of
        switches the model cannot build, saying how to fix it."""
        for field, choices in CHOICES.items():
            if getattr(self, field) not in choices:
                raise ValueError(f"{field} must be one of {choices}, got {getattr(self, field)!r}.")
        if self.transformer_dropout is None and self.precision != "auto":
            object.__setattr__(
                self, "transformer_dropout", default_transformer_dropout(self.precision)
            )
        if self.architecture == "transformer":
            self.check_transformer()
        for field, defaults in ARCHITECTURE_DEFAULTS.items():
            if getattr(self, field) is None:
                object.__setattr__(self, field, defaults[self.architecture])
        if self.shared_vocabulary and self.source_vocab_size not in (None, self.target_vocab_size):
            raise ValueError(
                "a shared vocabulary has one size, target_vocab_size: leave source_vocab_size "
                f"unset (got {self.source_vocab_size} and {self.target_vocab_size})."
            )
        default_sizes = DEFAULT_VOCAB_SIZES[self.tokenizer]
        if self.shared_vocabulary:
            default_sizes = (self.target_vocab_size or default_sizes[1],) * 2
        for name, default in zip(("source_vocab_size", "target_vocab_size"), default_sizes):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.decode_length_factor <= 0 or self.decode_length_offset < 1:
            raise ValueError(
                "decode_length_factor must be > 0 and decode_length_offset >= 1, got "
                f"{self.decode_length_factor} and {self.decode_length_offset}."
            )
        self.check_recipe()
        self.resolve_and_check_layers()

    def check_recipe(self) -> None:
        """Refuse a training recipe outside its range: warmup, decay share and label
        smoothing."""
        if self.warmup_steps < 0 or not 0.0 <= self.final_learning_rate_fraction <= 1.0:
            raise ValueError(
                f"warmup_steps must be >= 0 and final_learning_rate_fraction in [0, 1], got "
                f"{self.warmup_steps} and {self.final_learning_rate_fraction}."
            )
        if not 0.0 < self.decay_share <= 1.0:
            raise ValueError(f"decay_share must be in (0, 1], got {self.decay_share}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")

    def resolve_and_check_layers(self) -> None:
        """The output layer's projection and the source's reading order where the config names
        none (they depend on the architecture and the encoder), and the recurrent layers'
        sizes: refuse the ones that cannot build."""
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {self.num_layers}.")
        if self.output_projection_dim is None:
            # The Transformer's outputs are already narrow (its width): nothing to factorize.
            unfactorized = self.architecture == "transformer"
            object.__setattr__(self, "output_projection_dim", 0 if unfactorized else self.units // 2)
        if self.output_projection_dim < 0:
            raise ValueError(
                f"output_projection_dim must be 0 (none) or positive, got "
                f"{self.output_projection_dim}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.bidirectional and self.units % 2:
            raise ValueError(
                f"a bidirectional encoder splits units between its two directions, so units "
                f"must be even; got {self.units}."
            )
        # Keras' go_backwards returns the outputs in reversed order but passes the mask on
        # unreversed, so reading backwards is only allowed where the outputs are not used.
        reads_outputs = (
            self.bidirectional or self.num_layers > 1 or self.attention != "none"
            or self.architecture == "transformer"
        )
        if self.reverse_source is None:
            object.__setattr__(self, "reverse_source", not reads_outputs)
        if self.reverse_source and reads_outputs:
            raise ValueError(
                "reverse_source works only for a one-layer unidirectional encoder without "
                "attention (a bidirectional encoder already reads both ways; attention sees "
                "every source position). Set reverse_source=False (--no-reverse-source)."
            )

    def check_transformer(self) -> None:
        """Refuse Transformer sizes that cannot build: positive sizes, width split evenly by
        the heads, a dropout rate in [0, 1)."""
        sizes = {
            "transformer_layers": self.transformer_layers,
            "transformer_decoder_layers": self.transformer_decoder_blocks,
            "transformer_width": self.transformer_width,
            "transformer_heads": self.transformer_heads,
            "transformer_feed_forward": self.transformer_feed_forward,
        }
        for name, size in sizes.items():
            if size < 1:
                raise ValueError(f"{name} must be at least 1, got {size}.")
        if self.transformer_width % self.transformer_heads:
            raise ValueError(
                f"transformer_width ({self.transformer_width}) must be a multiple of "
                f"transformer_heads ({self.transformer_heads}): each head gets width / heads."
            )
        if self.transformer_tie_embeddings and self.output_projection_dim:
            raise ValueError(
                "transformer_tie_embeddings multiplies the decoder's outputs by the embedding "
                "matrix itself, so it has no output projection: set output_projection_dim=0."
            )
        if self.transformer_dropout is not None and not 0.0 <= self.transformer_dropout < 1.0:
            raise ValueError(
                f"transformer_dropout must be in [0, 1), got {self.transformer_dropout}."
            )

    def transformer_dropout_rate(self, dtype_policy: str) -> float:
        """`transformer_dropout`, or where it is None (a config whose precision is still
        "auto": training resolves both), the default for the model's `dtype_policy`."""
        if self.transformer_dropout is not None:
            return self.transformer_dropout
        return default_transformer_dropout(dtype_policy)

    @property
    def is_transformer(self) -> bool:
        return self.architecture == "transformer"

    @property
    def has_attention(self) -> bool:
        """True where the decoder attends to the source: attention "luong" or "bahdanau",
        and every Transformer (its cross-attention)."""
        return self.attention != "none" or self.is_transformer

    @property
    def is_classic(self) -> bool:
        """True for the README's classic graph: one LSTM layer each side, no attention.

        Its layers keep the classic names (`encoder_lstm`, `decoder_lstm`); every other
        configuration numbers its RNN layers (`encoder_rnn_1`, …), see `model.py`.
        """
        return (
            self.architecture == "rnn"
            and self.cell == "lstm"
            and not self.bidirectional
            and self.num_layers == 1
            and self.attention == "none"
        )

    @property
    def transformer_decoder_blocks(self) -> int:
        """The decoder's block count: `transformer_decoder_layers`, or `transformer_layers`."""
        if self.transformer_decoder_layers is None:
            return self.transformer_layers
        return self.transformer_decoder_layers

    @property
    def output_layer_multiply_adds(self) -> int:
        """Multiply-adds of the softmax layer's matmuls for one target token: units × vocab, or
        with an `output_projection_dim` N, (units + vocab) × N (the benchmarks count FLOPs
        with it)."""
        width = self.transformer_width if self.is_transformer else self.units
        if self.output_projection_dim:
            return self.output_projection_dim * (width + self.target_vocab_size)
        return width * self.target_vocab_size

    def to_json(self) -> str:
        """The config as indented JSON, the form stored beside a trained model."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Seq2SeqConfig":
        """Read a config written by `to_json`; unknown keys are an error, missing keys default.

        Missing keys default so that a model saved by an older version (with fewer options)
        still loads; unknown keys are rejected because silently ignoring them would hide a
        model the code cannot rebuild.
        """
        values = json.loads(text)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"config has unknown keys {unknown}; it was written by a newer seq2seq_keras "
                f"or edited by hand. Known keys: {sorted(known)}."
            )
        # The defaults of fields added later are what such a model was built with, except
        # where the default changed since: configs from before the tokenizer choice are words.
        values = {**LEGACY_DEFAULTS, **values}
        return cls(**values)

    def save(self, directory: str | Path) -> Path:
        """Write the config as `config.json` in `directory` and return its path."""
        path = Path(directory) / CONFIG_FILENAME
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Seq2SeqConfig":
        """Read `config.json` from a model directory."""
        return cls.from_json((Path(directory) / CONFIG_FILENAME).read_text(encoding="utf-8"))
