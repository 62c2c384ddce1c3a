"""Training: the model directory, TensorBoard logs, resuming after `kill -9`, not resuming another
config's checkpoint, NaN losses, mixed precision, and tf.distribute (two logical CPUs, two worker
processes)."""

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import PROJECT_ROOT, SMALL, result_line, small_model
from seq2seq_keras import checkpoints, hardware, pipeline
from seq2seq_keras import data as data_lib
from seq2seq_keras import train as train_lib
from seq2seq_keras.model import MaskedAccuracy
from seq2seq_keras.model_dir import load_trained_model
from seq2seq_keras.translator import Translator


def run_python(code: str, env_extra=None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          encoding="utf-8", cwd=PROJECT_ROOT, env=env, timeout=600, **kwargs)


def epoch_values(event_dir: Path, tag: str) -> list[float]:
    values = []
    for path in event_dir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    values.append(float(tf.make_ndarray(value.tensor)))
    return values


# --- The model directory and TensorBoard ----------------------------------------------------


def test_training_writes_the_model_directory_history_and_tensorboard_logs(spa_eng_path, tmp_path):
    logdir = tmp_path / "logs"
    result = train_lib.train(SMALL, tmp_path / "model", data=spa_eng_path, logdir=logdir, verbose=0)

    names = {path.name for path in (tmp_path / "model").iterdir()}
    assert {"model.keras", "config.json", "history.csv", "training_curves.png"} <= names
    assert not checkpoints.partial_directory(tmp_path / "model").exists()
    assert result.stop_reason == "epochs" and result.resumed_from is None
    assert result.history["epoch"] == [0, 1]
    assert epoch_values(logdir / "train", "epoch_loss") == pytest.approx(result.history["loss"])
    assert epoch_values(logdir / "validation", "epoch_loss") == pytest.approx(
        result.history["val_loss"]
    )


# --- Resuming -------------------------------------------------------------------------------

TRAIN_SCRIPT = """
import json, sys
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.train import train
config = Seq2SeqConfig.from_json(sys.argv[1])
result = train(config, sys.argv[2], data=sys.argv[3], verbose=0)
print("RESULT " + json.dumps({"resumed_from": result.resumed_from, "history": result.history}))
"""


# A Transformer as small as SMALL's LSTM, with its dropout: resuming restores the dropout's
# random state too.
SMALL_TRANSFORMER = dict(
    architecture="transformer", transformer_layers=1, transformer_width=32, transformer_heads=2,
    transformer_feed_forward=64, reverse_source=False,
)


@pytest.mark.slow
@pytest.mark.parametrize("sizes", [{}, SMALL_TRANSFORMER], ids=["rnn", "transformer"])
def test_a_run_killed_mid_epoch_resumes_and_ends_as_if_never_killed(sizes, spa_eng_path, tmp_path):
    # A checkpoint after every batch, so the kill lands mid-epoch, possibly mid-write; 600 pairs
    # make 15 batches an epoch (a checkpoint costs more than a batch of these tiny models).
    config = dataclasses.replace(SMALL, epochs=3, checkpoint_seconds=1e-9, max_pairs=600, **sizes)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    # The run never killed goes alongside (it shares nothing with the others), with checkpoints
    # at the default interval: writing them must not change what is trained either.
    reference_config = dataclasses.replace(config, checkpoint_seconds=SMALL.checkpoint_seconds)
    reference = subprocess.Popen(
        train_command(reference_config, tmp_path / "reference", spa_eng_path),
        env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        position, resumed_result = killed_then_resumed(
            train_command(config, tmp_path / "model", spa_eng_path), env, tmp_path / "model"
        )
        reference_out, reference_err = reference.communicate(timeout=600)
    finally:
        if reference.poll() is None:
            reference.kill()
    assert reference.returncode == 0, reference_err[-3000:]
    reference_result = result_line(reference_out)

    epoch, batch = resumed_result["resumed_from"]
    assert epoch >= position[0] and (epoch, batch) >= tuple(position) and batch > 0
    # Same epochs, none lost or repeated, and the same model: the same batches in the same order.
    assert resumed_result["history"]["epoch"] == [0, 1, 2]
    assert resumed_result["history"]["val_loss"] == pytest.approx(
        reference_result["history"]["val_loss"], rel=1e-4
    )
    assert load_trained_model(tmp_path / "model").config == config
    assert not checkpoints.partial_directory(tmp_path / "model").exists()


def train_command(config, model_dir: Path, data: Path) -> list[str]:
    """A fresh Python process running `train` (TRAIN_SCRIPT) on `config`."""
    return [sys.executable, "-c", TRAIN_SCRIPT, config.to_json(), str(model_dir), str(data)]


def killed_then_resumed(command: list[str], env: dict, model_dir: Path) -> tuple:
    """Run `command`, kill it (SIGKILL) once its checkpoint is past batch 3 of the second
    epoch, run it again to the end: `((epoch, batch) at the kill, the second run's result)`."""
    killed = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    pointer = checkpoints.partial_directory(model_dir) / checkpoints.CHECKPOINT_FILENAME
    position = None
    while killed.poll() is None:
        try:
            state = json.loads(pointer.read_text())["state"]
        except (OSError, ValueError):
            state = {"epoch": 0, "batch": 0}
        if state["epoch"] >= 1 and state["batch"] >= 3:
            killed.send_signal(signal.SIGKILL)
            position = (state["epoch"], state["batch"])
            break
        time.sleep(0.02)
    assert killed.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not model_dir.exists()

    resumed = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return position, result_line(resumed.stdout)


def test_a_checkpoint_of_another_config_is_not_resumed(spa_eng_path, tmp_path, caplog):
    other = dataclasses.replace(SMALL, units=16)
    work_dir = checkpoints.partial_directory(tmp_path / "model")
    work_dir.mkdir()
    store = checkpoints.CheckpointStore(work_dir)
    store.save(small_model(other), checkpoints.RunState(epoch=1), other, None, best_changed=False)

    with caplog.at_level(logging.WARNING, logger="seq2seq_keras.train"):
        result = train_lib.train(SMALL, tmp_path / "model", data=spa_eng_path, verbose=0)
    assert result.resumed_from is None and result.history["epoch"] == [0, 1]
    assert "another config): starting over" in caplog.text


def test_restart_discards_an_interrupted_run_of_the_same_config(spa_eng_path, tmp_path, caplog):
    work_dir = checkpoints.partial_directory(tmp_path / "model")
    work_dir.mkdir()
    store = checkpoints.CheckpointStore(work_dir)
    store.save(small_model(SMALL), checkpoints.RunState(epoch=1), SMALL, None, best_changed=False)
    assert store.holds_run_of(SMALL)

    with caplog.at_level(logging.WARNING, logger="seq2seq_keras.train"):
        result = train_lib.train(SMALL, tmp_path / "model", data=spa_eng_path, verbose=0,
                                 restart=True)
    assert result.resumed_from is None and result.history["epoch"] == [0, 1]
    assert "restart asked for): starting over" in caplog.text
    assert not work_dir.exists()


# --- NaN ------------------------------------------------------------------------------------


def test_a_nan_loss_before_any_finished_epoch_fails_clearly_and_keeps_the_old_model(
    spa_eng_path, tmp_path
):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.keras").write_text("the previous, good model")
    config = dataclasses.replace(SMALL, learning_rate=float("nan"))

    with pytest.raises(train_lib.TrainingError, match="loss became NaN in epoch 1.*No model"):
        train_lib.train(config, model_dir, data=spa_eng_path, verbose=0)
    assert (model_dir / "model.keras").read_text() == "the previous, good model"


class NanAfter(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate that turns NaN at a given step: a run that diverges on cue."""

    def __init__(self, step: int):
        self.step = step

    def __call__(self, step):
        return tf.where(step < self.step, 0.01, float("nan"))

    def get_config(self):
        return {"step": self.step}


def test_a_nan_loss_after_a_good_epoch_keeps_that_epoch(
    spa_eng_path, tmp_path, monkeypatch, caplog
):
    # The optimizer's rate is the diverging schedule below, not the config's.
    config = dataclasses.replace(SMALL, learning_rate_schedule="constant")
    prepared = data_lib.prepare_data(config, spa_eng_path)
    steps_per_epoch = pipeline.count_batches(prepared.train_pairs, config)
    build_model = train_lib.build_model

    def diverging_model(config, strategy=None):
        model = build_model(config, strategy)
        model.compile(optimizer=keras.optimizers.Adam(NanAfter(steps_per_epoch + 3)),
                      loss=model.loss, metrics=[MaskedAccuracy()])
        return model

    monkeypatch.setattr(train_lib, "build_model", diverging_model)
    with caplog.at_level(logging.WARNING, logger="seq2seq_keras.train"):
        result = train_lib.train(config, tmp_path / "model", data=spa_eng_path, verbose=0)

    assert result.stop_reason == "nan"
    assert "loss became NaN in epoch 2. Kept the last good model, from epoch 1" in caplog.text
    assert result.history["epoch"] == [0]
    reloaded = load_trained_model(tmp_path / "model").training_model
    assert all(np.isfinite(weights).all() for weights in reloaded.get_weights())


# --- Precision ------------------------------------------------------------------------------


def test_precision_auto_follows_the_hardware_and_bad_names_are_refused(monkeypatch):
    assert train_lib.resolve_precision("mixed_float16") == "mixed_float16"
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(hardware, "cpu_has_native_bfloat16", lambda: True)
    assert train_lib.resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(hardware, "cpu_has_native_bfloat16", lambda: False)
    assert train_lib.resolve_precision("auto") == "float32"
    with pytest.raises(ValueError, match="not one of auto, float32"):
        train_lib.resolve_precision("float8")


@pytest.mark.bfloat16
def test_mixed_bfloat16_computes_in_bfloat16_with_a_float32_softmax_and_translates(overfit_model):
    config = dataclasses.replace(overfit_model.config, precision="mixed_bfloat16")
    model = train_lib.build_model(config)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left alone
    for name in ("encoder_lstm", "decoder_lstm", "decoder_dense"):
        assert model.get_layer(name).compute_dtype == "bfloat16"
        assert model.get_layer(name).variable_dtype == "float32"

    source = overfit_model.tokens.source_ids.to_tensor()[:4]
    target = overfit_model.tokens.target_ids.to_tensor()[:4, :-1]
    probabilities = model((source, target))
    assert probabilities.dtype == "float32"
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, atol=1e-5)

    # The float32 variables take the overfit model's weights; inference then runs in bfloat16.
    model.set_weights(overfit_model.model.get_weights())
    translator = Translator(config, model, overfit_model.source_vocabulary,
                            overfit_model.target_vocabulary)
    assert translator.translate(["Thank you.", "I love you."]) == ["Gracias.", "Te quiero."]


# --- tf.distribute ----------------------------------------------------------------------------

# One global batch of 8 pairs whose two halves hold the same number of real target tokens (18),
# so that the mean over replicas of each half's mean equals the mean over the whole batch.
ONE_BATCH = """
import numpy as np, keras, tensorflow as tf
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras import train as train_lib
config = Seq2SeqConfig(source_vocab_size=50, target_vocab_size=40, embedding_dim=8, units=16,
                       batch_size=8, precision="float32", seed=3)
rng = np.random.default_rng(0)
def rows(lengths, vocabulary_size, width=7):
    ids = np.zeros((len(lengths), width), np.int64)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(4, vocabulary_size, length)
    return ids
source = rows([5, 3, 6, 2, 4, 4, 2, 6], 50)
target = rows([6, 4, 5, 3, 3, 5, 6, 4], 40)

def three_steps(strategy, config=config):
    # (TensorFlow ops only from here on: a multi-worker strategy must exist before any.)
    batches = tf.data.Dataset.from_tensors(((source, target[:, :-1]), target[:, 1:])).repeat(3)
    keras.utils.set_random_seed(3)
    model = train_lib.build_model(config, strategy)
    with strategy.scope():  # plain SGD: unlike Adam, it shows a wrongly scaled gradient
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=model.loss)
    losses = []
    model.fit(batches, verbose=0, callbacks=[keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"])))])
    return {"replicas": strategy.num_replicas_in_sync, "losses": losses,
            "weights": [float(np.sum(np.abs(w))) for w in model.get_weights()]}
"""


def test_train_help_offers_the_strategies_and_precisions():
    completed = run_python("from seq2seq_keras.cli import main; main(['train', '--help'])")
    assert "--strategy {default,mirrored,multiworker}" in completed.stdout
    assert "--precision {auto,float32,mixed_bfloat16,mixed_float16}" in completed.stdout


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_trains_like_one_device(spa_eng_path, tmp_path):
    code = "from seq2seq_keras.distribute import split_cpu; split_cpu(2)\n" + ONE_BATCH + f"""
import json, logging, sys
from seq2seq_keras.cli import main
one = three_steps(train_lib.distribute.make_strategy("default"))
two = three_steps(train_lib.distribute.make_strategy("mirrored"))
# The Transformer through the same builder. Without dropout: two replicas draw other dropout
# masks than one device does, which would hide whether the gradients agree.
import dataclasses
transformer = dataclasses.replace(
    config, architecture="transformer", transformer_layers=1, transformer_width=16,
    transformer_heads=2, transformer_feed_forward=32, transformer_dropout=0.0,
    reverse_source=False)
one_transformer = three_steps(train_lib.distribute.make_strategy("default"), transformer)
two_transformer = three_steps(train_lib.distribute.make_strategy("mirrored"), transformer)
print("RESULT " + json.dumps({{"one": one, "two": two, "one_transformer": one_transformer,
                              "two_transformer": two_transformer}}), flush=True)
sys.exit(main(["train", "--strategy", "mirrored", "--data", {str(spa_eng_path)!r},
               "--max-pairs", "600", "--epochs", "1", "--units", "16", "--embedding-dim", "8",
               "--precision", "float32", "--model-dir", {str(tmp_path / "model")!r},
               "--verbose", "0"]))
"""
    completed = run_python(code)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = result_line(completed.stdout)
    assert (result["one"]["replicas"], result["two"]["replicas"]) == (1, 2)
    assert result["two"]["losses"] == pytest.approx(result["one"]["losses"], rel=1e-5)
    assert result["two"]["weights"] == pytest.approx(result["one"]["weights"], rel=1e-5)
    one_transformer, two_transformer = result["one_transformer"], result["two_transformer"]
    assert two_transformer["replicas"] == 2
    assert two_transformer["losses"] == pytest.approx(one_transformer["losses"], rel=1e-5)
    # abs: the attention's key biases get an exactly zero gradient (a softmax does not change
    # when all of a query's scores shift by the same amount), so they hold rounding noise of
    # order 1e-9, which two summation orders do not share.
    assert two_transformer["weights"] == pytest.approx(
        one_transformer["weights"], rel=1e-5, abs=1e-6
    )
    # The command line trains and writes a model under the same strategy.
    assert "training on 2 replicas (MirroredStrategy), global batch 128" in completed.stderr
    assert load_trained_model(tmp_path / "model").config.units == 16


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run_workers(code: str, tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """Run `code` as worker 0 and worker 1 of a two-process cluster on localhost."""
    workers = [f"localhost:{port}" for port in free_ports(2)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=PROJECT_ROOT, text=True, encoding="utf-8",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**env, "TF_CONFIG": json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            )},
        )
        for index in range(2)
    ]
    results = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        results.append(
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        )
    return results


@pytest.mark.slow
def test_multiworker_with_two_processes_trains_like_one_device(spa_eng_path, tmp_path):
    reference = run_python(ONE_BATCH + """
import json
print("RESULT " + json.dumps(three_steps(train_lib.distribute.make_strategy("default"))))
""")
    assert reference.returncode == 0, reference.stderr[-3000:]
    one = result_line(reference.stdout)

    workers = run_workers(ONE_BATCH + f"""
import dataclasses, json
strategy = train_lib.distribute.make_strategy("multiworker")
print("RESULT " + json.dumps(three_steps(strategy)), flush=True)
small = Seq2SeqConfig(tokenizer="word", max_pairs=600, source_vocab_size=100, target_vocab_size=100,
                      embedding_dim=8, units=16, epochs=1, max_train_seconds=0, precision="float32")
result = train_lib.train(small, {str(tmp_path / "model")!r}, data={str(spa_eng_path)!r},
                         verbose=0, strategy=strategy)
print("TRAINED", result.history["epoch"], flush=True)
# The canary, last (it leaves the cluster failed): Keras 3.15's own `fit` still fails under
# MultiWorkerMirroredStrategy (keras-team/keras#20585). When it stops failing, Keras has fixed
# it: delete `distribute.prepare_for_multiworker`.
from seq2seq_keras.model import build_training_model
with strategy.scope():
    plain = build_training_model(config)
try:
    plain.fit(tf.data.Dataset.from_tensors(((source, target[:, :-1]), target[:, 1:])), verbose=0)
    print("CANARY fit worked", flush=True)
except Exception as error:
    print("CANARY", repr(str(error)), flush=True)
""", tmp_path)
    for worker in workers:
        assert worker.returncode == 0, worker.stderr[-3000:]
        two = result_line(worker.stdout)
        assert two["replicas"] == 2
        assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
        assert two["weights"] == pytest.approx(one["weights"], rel=1e-5)
        assert "TRAINED [0]" in worker.stdout, worker.stdout
        canary = [line for line in worker.stdout.splitlines() if line.startswith("CANARY")]
        assert canary and "PerReplica'>) to a Tensor" in canary[0], worker.stdout[-3000:]
    assert load_trained_model(tmp_path / "model").config.units == 16  # written by the chief
