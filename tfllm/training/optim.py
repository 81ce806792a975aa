"""Optimisation for training: AdamW with decoupled weight decay that skips norms and biases, linear
warmup then cosine / linear / constant learning rate, global gradient clipping, gradient accumulation,
mixed precision, and the one `compile` every training task uses.

The machinery is Keras' own (`keras.optimizers.AdamW`, its `global_clipnorm` and
`gradient_accumulation_steps`, `LossScaleOptimizer`). `AdamW` fixes three places where Keras 3 on
TensorFlow departs from the update one device makes on the whole batch (see its docstring), so a
`tf.distribute` strategy and gradient accumulation give the same weights as one big batch.

Example:
>>> set_precision("mixed_bfloat16")  # before the model is built
>>> model = GPT2CausalLM(GPT2Backbone(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
...                                   intermediate_dim=32))
>>> optimizer = create_optimizer(learning_rate=3e-4, total_steps=1000, warmup_steps=100)
>>> compile_for_training(model, optimizer)
>>> model.fit(data.train, epochs=1)
"""

import logging
import math

import keras
import tensorflow as tf
from keras import ops

from tfllm.errors import check_choice, check_float, check_int, invalid_argument

logger = logging.getLogger(__name__)

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# Variables weight decay skips: every bias (`bias`, BERT's `output_bias`, ...) and every scale and
# offset of a norm (`LayerNorm.gamma`/`beta`, `RMSNorm.scale`). Keras matches it with `re.search`
# against the variable's name, which is the short name ("bias") or, on the TensorFlow backend, the
# full path with a suffix ("gpt2_backbone/layer_norm/beta:0"); the pattern accepts both.
NO_DECAY_PATTERN = r"(^|[/_])bias(:\d+)?$|(^|/)(gamma|beta|scale)(:\d+)?$"


@keras.saving.register_keras_serializable(package="tfllm")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `learning_rate`, then cosine or linear decay to 0, or a constant.

    The same curves as transformers' `get_{cosine,linear,constant}_schedule_with_warmup`: at update
    `s`, `learning_rate * s / warmup_steps` while `s < warmup_steps`, then with
    `p = (s - warmup_steps) / (total_steps - warmup_steps)` clipped to `[0, 1]`:
    cosine `learning_rate * (1 + cos(pi * p)) / 2`, linear `learning_rate * (1 - p)`, constant
    `learning_rate`. Past `total_steps` the decaying schedules stay at 0.

    Steps count optimizer updates: Keras calls a schedule with its micro-step counter, which with
    gradient accumulation advances `gradient_accumulation_steps` times per update, so the counter is
    divided by it first.

    Args:
        learning_rate: the peak learning rate.
        total_steps: optimizer updates of the whole run.
        warmup_steps: updates of the linear warmup.
        schedule: one of `SCHEDULES`.
        gradient_accumulation_steps: micro-steps per optimizer update.

    Call arguments:
        step: the optimizer's micro-step counter (`optimizer._iterations`), a scalar int tensor.

    Returns:
        The learning rate, a float32 scalar.
    """

    def __init__(self, learning_rate, total_steps, warmup_steps=0, schedule="cosine", gradient_accumulation_steps=1):
        self.learning_rate = learning_rate
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.schedule = schedule
        self.gradient_accumulation_steps = gradient_accumulation_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.gradient_accumulation_steps > 1:
            step = ops.floor(step / float(self.gradient_accumulation_steps))  # optimizer updates so far
        warmup = float(self.warmup_steps)
        warm = self.learning_rate * step / max(warmup, 1.0)
        progress = ops.clip((step - warmup) / max(float(self.total_steps) - warmup, 1.0), 0.0, 1.0)
        if self.schedule == "cosine":
            decayed = self.learning_rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.schedule == "linear":
            decayed = self.learning_rate * (1.0 - progress)
        else:
            decayed = ops.full_like(progress, self.learning_rate)
        return ops.where(step < warmup, warm, decayed)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "schedule": self.schedule,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }


@keras.saving.register_keras_serializable(package="tfllm")
class AdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with a serializable decay exclusion and three fixes for Keras 3 on TensorFlow.

    1. Sparse gradients: an embedding lookup's gradient is a `tf.IndexedSlices` with one row per
       occurrence of an id (a position embedding gets `batch_size` rows per position). Keras squares
       the rows one by one, so Adam's second moment and the global norm came out as sums of squares
       instead of squares of sums. Rows of one index are summed first (as `tf.keras` 2 did).
    2. Clipping under a strategy: Keras clips each replica's gradients before the all-reduce sums
       them; the sum is clipped instead (one more all-reduce, only with clipping and > 1 replica).
    3. Accumulation under a strategy: Keras branches between accumulating and updating with a cond
       inside the replica function, where a strategy cannot synchronize (it fails with "merge_call
       called while defining a new graph"); the branch is taken in the cross-replica context, as
       `LossScaleOptimizer` does.

    Args:
        no_decay_pattern: a regular expression; variables whose name it matches get no weight
            decay (see `NO_DECAY_PATTERN`). Kept in the config, unlike `exclude_from_weight_decay`.
        **kwargs: `keras.optimizers.AdamW` arguments.
    """

    def __init__(self, *args, no_decay_pattern=NO_DECAY_PATTERN, **kwargs):
        super().__init__(*args, **kwargs)
        self.no_decay_pattern = no_decay_pattern
        if no_decay_pattern:
            self.exclude_from_weight_decay(var_names=[no_decay_pattern])

    def apply(self, grads, trainable_variables=None):
        # Before clipping and accumulation, which see the replica's own gradients.
        return super().apply([_sum_duplicates(g) for g in grads], trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        # Again after the all-reduce of a distribution strategy, which concatenates replicas' rows.
        super().update_step(_sum_duplicates(gradient), variable, learning_rate)

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        if not self.global_clipnorm or context is None or context.num_replicas_in_sync == 1:
            return super()._clip_gradients(grads)
        present = [g for g in grads if g is not None]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, present)
        norm = tf.sqrt(tf.add_n([_squared_norm(g) for g in summed]))
        factor = tf.minimum(1.0, self.global_clipnorm / tf.maximum(norm, 1e-12))
        return [None if g is None else g * tf.cast(factor, g.dtype) for g in grads]

    def _backend_apply_gradients(self, grads, trainable_variables):
        context = tf.distribute.get_replica_context()
        if not self.gradient_accumulation_steps or context is None or context.num_replicas_in_sync == 1:
            return super()._backend_apply_gradients(grads, trainable_variables)

        def branch(distribution, grads, variables):
            def run(step):
                return lambda: distribution.extended.call_for_each_replica(step, args=(grads, variables))

            is_update_step = (self._iterations + 1) % self.gradient_accumulation_steps == 0
            ops.cond(is_update_step, run(self._accumulated_update), run(self._accumulate))

        context.merge_call(branch, args=(grads, trainable_variables))

    def _accumulators(self, variables):
        return [self._accumulated_gradients[self._get_variable_index(v)] for v in variables]

    def _accumulate(self, grads, variables):
        self._backend_increment_gradient_accumulators(grads, self._accumulators(variables))

    def _accumulated_update(self, grads, variables):
        steps = self.gradient_accumulation_steps
        grads = [(g + total) / steps for g, total in zip(grads, self._accumulators(variables))]
        grads = self._clip_gradients(grads)
        self._apply_weight_decay(variables)
        self._backend_update_step(grads, variables, self.learning_rate)
        self._backend_reset_gradient_accumulators()

    def get_config(self):
        return {**super().get_config(), "no_decay_pattern": self.no_decay_pattern}


def _sum_duplicates(gradient):
    """An `IndexedSlices` gradient with one row per distinct index (others pass through)."""
    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    indices, position = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(indices)[0])
    return tf.IndexedSlices(values, indices, gradient.dense_shape)


def _squared_norm(gradient):
    gradient = _sum_duplicates(gradient)
    values = gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient
    return tf.reduce_sum(tf.square(tf.cast(values, "float32")))


def learning_rate_schedule(learning_rate, total_steps, *, warmup_steps=0, schedule="cosine",
                           gradient_accumulation_steps=1):
    """The learning rate over training: linear warmup from 0, then `schedule` (see `WarmupDecay`).

    Args:
        learning_rate: the peak learning rate, > 0.
        total_steps: optimizer updates of the whole run (batches / `gradient_accumulation_steps`).
        warmup_steps: updates of the linear warmup, `0 <= warmup_steps <= total_steps`.
        schedule: "cosine" or "linear" decay to 0, or "constant".
        gradient_accumulation_steps: micro-steps (batches) per optimizer update.

    Returns:
        A serializable `WarmupDecay`, or the float `learning_rate` itself for a constant schedule
        without warmup (so callbacks that set the learning rate can still do so).
    """
    learning_rate = check_float("learning_rate", learning_rate, low=0.0, low_inclusive=False)
    total_steps = check_int("total_steps", total_steps, minimum=1)
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
    if warmup_steps > total_steps:
        raise invalid_argument("warmup_steps", f"an integer <= total_steps ({total_steps})", warmup_steps)
    schedule = check_choice("schedule", schedule, SCHEDULES)
    gradient_accumulation_steps = check_int("gradient_accumulation_steps", gradient_accumulation_steps, minimum=1)
    if schedule == "constant" and warmup_steps == 0:
        return learning_rate
    return WarmupDecay(learning_rate, total_steps, warmup_steps, schedule, gradient_accumulation_steps)


def create_optimizer(
    *,
    learning_rate=5e-5,
    total_steps,
    warmup_steps=0,
    schedule="cosine",
    weight_decay=0.01,
    clipnorm=1.0,
    gradient_accumulation_steps=1,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-8,
):
    """AdamW with decoupled weight decay (skipping norms and biases), a warmup schedule, global gradient
    clipping and gradient accumulation.

    Create it inside the strategy's scope, like the model.

    Args:
        learning_rate: the peak learning rate.
        total_steps: optimizer updates of the whole run; with accumulation, batches divided by
            `gradient_accumulation_steps`.
        warmup_steps: updates of the linear warmup from 0.
        schedule: "cosine", "linear" or "constant" after warmup (see `learning_rate_schedule`).
        weight_decay: decoupled decay rate, applied as `w -= learning_rate * weight_decay * w` to
            every variable except those matching `NO_DECAY_PATTERN` (biases, norm scales and offsets).
        clipnorm: the largest global norm of all gradients together (as `torch.nn.utils.
            clip_grad_norm_` and transformers' `max_grad_norm`: every gradient is scaled by the
            same factor, so the update keeps its direction). This is Keras' `global_clipnorm`, not
            its per-variable `clipnorm`. None or 0 turns clipping off.
        gradient_accumulation_steps: batches whose gradients are averaged into one update; 1 turns
            accumulation off. Clipping and decay apply once per update, to the average.
        beta_1: Adam's first-moment decay.
        beta_2: Adam's second-moment decay.
        epsilon: Adam's epsilon.

    Returns:
        An `AdamW` (a `keras.optimizers.AdamW`). `compile_for_training` adds loss scaling for a
        `mixed_float16` model.
    """
    weight_decay = check_float("weight_decay", weight_decay, low=0.0)
    if clipnorm is not None:
        clipnorm = check_float("clipnorm", clipnorm, low=0.0)
    steps = check_int("gradient_accumulation_steps", gradient_accumulation_steps, minimum=1)
    lr = learning_rate_schedule(learning_rate, total_steps, warmup_steps=warmup_steps, schedule=schedule,
                                gradient_accumulation_steps=steps)
    return AdamW(
        learning_rate=lr,
        weight_decay=weight_decay,
        beta_1=check_float("beta_1", beta_1, low=0.0, high=1.0, high_inclusive=False),
        beta_2=check_float("beta_2", beta_2, low=0.0, high=1.0, high_inclusive=False),
        epsilon=check_float("epsilon", epsilon, low=0.0, low_inclusive=False),
        global_clipnorm=clipnorm or None,
        gradient_accumulation_steps=steps if steps > 1 else None,
    )


def set_precision(policy):
    """Sets Keras' global dtype policy; models built afterwards compute in it.

    "mixed_bfloat16" and "mixed_float16" keep variables in float32 and compute in half precision;
    norms, softmax and the logits stay float32. A "mixed_float16" model also needs loss scaling,
    which `compile_for_training` adds.

    Args:
        policy: one of `PRECISIONS`.

    Returns:
        The policy's name.
    """
    check_choice("policy", policy, PRECISIONS)
    keras.config.set_dtype_policy(policy)
    return keras.config.dtype_policy().name


def training_loss():
    """The loss of every task: token- (or example-) level cross-entropy on logits, averaged with the
    sample weights: `sum(weight * loss) / sum(weight)` per batch, so padding and unmasked positions
    (weight 0) count for nothing and `exp(loss)` is the perplexity."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")


def compile_for_training(model, optimizer, *, metrics=None, **compile_kwargs):
    """Compiles `model` for `fit` and `evaluate` on `(inputs, labels, sample_weight)` batches.

    The loss is `training_loss()`; metrics are weighted with the batches' sample weights. A model
    that computes in float16 anywhere gets its optimizer wrapped in a `LossScaleOptimizer` (Keras
    only does so when the outer model's own policy is "mixed_float16").

    Args:
        model: the task model.
        optimizer: a `keras.optimizers.Optimizer`, e.g. from `create_optimizer`.
        metrics: weighted metrics. Defaults to token (or example) accuracy, named "accuracy".
        **compile_kwargs: passed to `model.compile` (`jit_compile`, `steps_per_execution`, ...).

    Returns:
        `model`, compiled.
    """
    if not isinstance(model, keras.Model):
        raise invalid_argument("model", "a keras.Model", type(model).__name__, TypeError)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise invalid_argument("optimizer", "a keras.optimizers.Optimizer (see create_optimizer)",
                               type(optimizer).__name__, TypeError)
    if _computes_in_float16(model) and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        logger.info("The model computes in float16: the optimizer is wrapped in a LossScaleOptimizer.")
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name="loss_scale_optimizer")
    if metrics is None:
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=optimizer, loss=training_loss(), weighted_metrics=list(metrics), **compile_kwargs)
    return model


def _computes_in_float16(model):
    layers = [model, *model._flatten_layers(include_self=False)]
    return any(layer.compute_dtype == "float16" for layer in layers)


def uses_weight_decay(optimizer, variable):
    """Whether `optimizer` (from `create_optimizer`, possibly loss-scaled) decays `variable`.

    Asks the optimizer's own test, with the variable as the TensorFlow backend passes it.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not getattr(inner, "weight_decay", None):
        return False
    return inner._use_weight_decay(variable.value if isinstance(variable, keras.Variable) else variable)
