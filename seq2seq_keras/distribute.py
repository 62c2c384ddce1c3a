"""tf.distribute strategies by name: one device, every local device, or several worker processes.

    default      no distribution: the one default device
    mirrored     `MirroredStrategy` over every local GPU, else over every logical CPU device
    multiworker  `MultiWorkerMirroredStrategy` across the processes described by `$TF_CONFIG`

Under a strategy the model is built and compiled inside `strategy.scope()`, so that its
variables are mirrored on every replica, and `config.batch_size` is the *global* batch: Keras
splits each batch across the replicas, every replica computes the gradients of its share, and
the gradients are all-reduced before one common update.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from seq2seq_keras.config_defaults import STRATEGIES


class DistributeError(Exception):
    """A strategy cannot be created as asked; the message says how to fix the setup."""


def make_strategy(strategy: str | tf.distribute.Strategy = "default") -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` named `strategy` (a strategy object is returned unchanged).

    `mirrored` uses every local GPU; on a machine without GPUs it uses every logical CPU device,
    which is one unless the CPU was split with `split_cpu` (how the tests run it on 2 cores).
    `multiworker` reads the cluster from `$TF_CONFIG`; every worker runs the same command.
    """
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "default":
        return tf.distribute.get_strategy()
    if strategy not in STRATEGIES:
        raise DistributeError(
            f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}."
        )
    # One strategy object per process: a second MirroredStrategy over the same devices reuses
    # the first one's collective-op keys, and its all-reduce then fails ("Shape mismatch in the
    # collective instance 100"), e.g. when a notebook trains twice.
    if strategy not in _STRATEGIES:
        _STRATEGIES[strategy] = _create(strategy)
    return _STRATEGIES[strategy]


_STRATEGIES: dict[str, tf.distribute.Strategy] = {}


def _create(strategy: str) -> tf.distribute.Strategy:
    if strategy == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if not os.environ.get("TF_CONFIG"):
        raise DistributeError(
            "--strategy multiworker needs the TF_CONFIG environment variable, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}, set on every worker with its own index.'
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes files: always, except on the non-chief workers of a cluster.

    As in TensorFlow's multi-worker guide, the chief is the task of type "chief", or worker 0
    when the cluster has no chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def split_cpu(num_devices: int) -> list[str]:
    """Split the physical CPU into `num_devices` logical devices and return their names.

    Lets `mirrored` run several replicas on a machine without GPUs: slower than one device (the
    replicas share the same cores), but the same code path as several GPUs, so it is how the
    tests check distributed training. Must run before TensorFlow initializes its devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
    )
    return [device.name for device in tf.config.list_logical_devices("CPU")]


# --- Keras 3 and MultiWorkerMirroredStrategy --------------------------------------------------
#
# Keras 3.15's `model.fit` fails under MultiWorkerMirroredStrategy in two places, both upstream
# bugs (keras-team/keras#20585, tensorflow/tensorflow#72388; docs/training.md has the errors):
#
# 1. `Trainer._maybe_symbolic_build` hands the whole nested input batch to `strategy.reduce`,
#    which the collective strategy cannot reduce: "Attempt to convert a value (PerReplica:…)
#    with an unsupported type … to a Tensor".
# 2. `reduce_per_replica` reduces the scalar loss and metrics with `axis=0`: "Invalid reduction
#    dimension 0 for input with 0 dimensions".
#
# `prepare_for_multiworker` works around both, only under MultiWorkerMirroredStrategy: the
# symbolic build gets this worker's own batch (it only needs shapes), and scalar results are
# averaged over replicas without an axis. Everything else is Keras' own `fit`. The canary in the
# multi-worker test (tests/test_train.py) fails once Keras fixes the bugs; this can then go.


def is_multiworker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def prepare_for_multiworker(model, strategy: tf.distribute.Strategy) -> None:
    """Let `model.fit` run under `MultiWorkerMirroredStrategy` despite the two Keras bugs above."""
    if not is_multiworker(strategy):
        return
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    def symbolic_build_on_local_batch(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], next(batches)
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = symbolic_build_on_local_batch
    if not getattr(keras_tf_trainer.reduce_per_replica, "multiworker_ready", False):
        original = keras_tf_trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):
            if is_multiworker(strategy) and reduction in ("auto", "mean"):
                return tf.nest.map_structure(
                    lambda value: strategy.reduce("MEAN", value, axis=None), values
                )
            return original(values, strategy, reduction)

        reduce_per_replica.multiworker_ready = True
        keras_tf_trainer.reduce_per_replica = reduce_per_replica
