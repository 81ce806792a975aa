"""Choosing a `tf.distribute` strategy by name, and checking a batch size against it."""

import json
import logging
import os

import tensorflow as tf

logger = logging.getLogger(__name__)

STRATEGY_NAMES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")


def get_strategy(name="auto"):
    """Returns the `tf.distribute.Strategy` named by `name`.

    Args:
        name: one of `STRATEGY_NAMES`:
            - "auto": `TPUStrategy` if a TPU resolver finds a TPU, `MirroredStrategy` with more than
              one GPU, `MultiWorkerMirroredStrategy` when `TF_CONFIG` names more than one worker,
              else the default strategy.
            - "default": the default (no-op) strategy.
            - "one_device": `OneDeviceStrategy` on the first GPU, or the CPU.
            - "mirrored": `MirroredStrategy` on all GPUs, or on all logical CPU devices when there
              is no GPU.
            - "multi_worker": `MultiWorkerMirroredStrategy` (reads `TF_CONFIG`).
            - "tpu": `TPUStrategy`; raises `RuntimeError` when no TPU is found.

    Returns:
        A `tf.distribute.Strategy`. Build models, optimizers and metrics inside its `scope()`.

    Example:
    >>> strategy = get_strategy("default")
    >>> with strategy.scope():
    ...     model = keras.Sequential([keras.layers.Dense(1)])
    >>> strategy.num_replicas_in_sync
    1
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(
            f"Invalid value for argument `strategy`. Expected one of {list(STRATEGY_NAMES)}. "
            f"Received: strategy={name!r}"
        )
    if name == "auto":
        return _auto_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        return _multi_worker_strategy()
    resolver = _tpu_resolver()
    if resolver is None:
        raise RuntimeError(
            "Invalid value for argument `strategy`. Expected a machine with a TPU for "
            "strategy='tpu', but no TPU was found. Received: strategy='tpu'"
        )
    return _tpu_strategy(resolver)


def _multi_worker_strategy():
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    patch_keras_for_multi_worker()
    return strategy


_PATCHED = False


def patch_keras_for_multi_worker():
    """Works around two Keras 3.15 bugs that stop `fit`/`evaluate` under a multi-worker strategy.

    `get_strategy` applies it whenever it returns a `MultiWorkerMirroredStrategy`; applying it again
    does nothing. Single-machine strategies take the same paths as without it.

    1. `TensorFlowTrainer._maybe_symbolic_build` passes the whole nested first batch to
       `strategy.reduce`, which with several workers accepts one `DistributedValues` only
       ("Attempt to convert a value ({'input_ids': PerReplica...}) ... to a Tensor";
       keras-team/keras#20585, #20329). Building needs shapes and dtypes only, so this worker's
       first local replica's batch is used.
    2. `reduce_per_replica` averages the per-step logs (scalars) with `axis=0` on the multi-worker
       branch ("Invalid reduction dimension 0 for input with 0 dimensions"); MirroredStrategy's
       branch averages over replicas only, which is `axis=None`.
    """
    global _PATCHED
    if _PATCHED:
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def local_value(strategy, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    symbolic_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None or not _is_multi_worker(self._distribute_strategy):
            return symbolic_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            batch = next(batches)
            break
        batch = tree.map_structure(lambda v: local_value(self.distribute_strategy, v), batch)
        return symbolic_build(self, data_batch=batch)

    reduce_per_replica = tf_trainer.reduce_per_replica

    def reduce_per_replica_multi_worker(values, strategy, reduction):
        if reduction in ("auto", "mean") and _is_multi_worker(strategy):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None) if isinstance(v, tf.distribute.DistributedValues) else v,
                values,
            )
        return reduce_per_replica(values, strategy, reduction)

    _is_multi_worker = tf_trainer._collective_all_reduce_multi_worker
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica_multi_worker
    _PATCHED = True


def check_batch_size(global_batch_size, strategy):
    """Raises `ValueError` unless `global_batch_size` splits evenly over the strategy's replicas.

    Args:
        global_batch_size: the batch size summed over all replicas.
        strategy: a `tf.distribute.Strategy`.

    Example:
    >>> check_batch_size(8, tf.distribute.get_strategy())
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size < 1 or global_batch_size % replicas:
        raise ValueError(
            "Invalid value for argument `batch_size`. Expected a positive multiple of the number "
            f"of replicas ({replicas}). Received: batch_size={global_batch_size}"
        )


def _auto_strategy():
    resolver = _tpu_resolver()
    if resolver is not None:
        logger.info("Using TPUStrategy")
        return _tpu_strategy(resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        logger.info("Using MirroredStrategy on %d GPUs", len(gpus))
        return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    if _num_workers() > 1:
        logger.info("Using MultiWorkerMirroredStrategy")
        return tf.distribute.MultiWorkerMirroredStrategy()
    logger.info("Using the default strategy")
    return tf.distribute.get_strategy()


def _num_workers():
    """Number of workers named in `TF_CONFIG` (0 when it is unset)."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return 0
    try:
        cluster = json.loads(config).get("cluster", {})
    except (ValueError, AttributeError) as e:
        raise ValueError(f"TF_CONFIG is not a JSON object. Received: TF_CONFIG={config!r}") from e
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _tpu_resolver():
    """A `TPUClusterResolver`, or None when no TPU is reachable (it fails fast off Cloud TPU)."""
    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver()
    except (ValueError, RuntimeError, tf.errors.NotFoundError) as e:
        logger.debug("No TPU found: %s", e)
        return None


def _tpu_strategy(resolver):
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
