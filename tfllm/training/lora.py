"""LoRA: low-rank adapters on the attention (and optionally feed-forward) projections.

`apply_lora` wraps chosen `Dense` projections in a `LoRADense`, which adds
`(alpha / rank) * dropout(x) @ A @ B` to the frozen projection's output, and freezes every other
weight, so training updates the adapters only (Hu et al., 2021). `B` starts at zero: the adapted
model computes exactly what the base model computed until it is trained.

Target modules are the names of the `Dense` layers inside tfllm's layers:

- attention (`tfllm.layers.MultiHeadAttention`): "qkv" (the fused self-attention projection; one
  adapter covers queries, keys and values), "query" and "key_value" (cross-attention), "output";
- feed-forward (`tfllm.layers.FeedForward`): "up", "gate" (gated MLPs only), "down".

`DEFAULT_TARGETS` are the attention input projections ("qkv", "query", "key_value").

Afterwards, `merge_lora` folds the adapters into the kernels and removes them (then
`save_pretrained` and the exporters see a plain model), and `save_adapters` / `load_adapters` write
and read the adapters alone (`adapter_model.safetensors` + `adapter_config.json`).

Example:

```python
model = tfllm.AutoModelForCausalLM.from_pretrained("path/to/gpt2")
apply_lora(model, rank=8, alpha=16, dropout=0.05)  # -> number of trainable parameters
model.compile(optimizer=keras.optimizers.AdamW(1e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(dataset, epochs=1)
save_adapters(model, "out/adapter")  # a few MB, loads onto the same base model
merge_lora(model).save_pretrained("out/merged")
```

`.keras` files (`model.save` + `keras.saving.load_model`) do not support adapters: layer configs do
not record them, so loading fails loudly. `model.save_weights` / `load_weights` (and Keras'
`BackupAndRestore`) work between models given the same `apply_lora` arguments.
"""

import dataclasses
import json
import logging
import os

import keras
import numpy as np

from tfllm.checkpoints.errors import CheckpointError
from tfllm.checkpoints.safetensors_io import read_safetensors
from tfllm.errors import check_float, check_int, invalid_argument
from tfllm.files import atomic_file
from tfllm.layers.attention import MultiHeadAttention
from tfllm.layers.feedforward import FeedForward
from tfllm.layers.lora import LoRADense
from tfllm.layers.tracking import name_scopes_of, replace_sublayer
from tfllm.models.pretrained import build_model
from tfllm.models.registry import same_family

logger = logging.getLogger(__name__)

# Target name (the Dense layer's name) -> (the layer class holding it, its attribute there).
TARGET_MODULES = {
    "qkv": (MultiHeadAttention, "qkv"),
    "query": (MultiHeadAttention, "query"),
    "key_value": (MultiHeadAttention, "key_value"),
    "output": (MultiHeadAttention, "output_dense"),
    "up": (FeedForward, "up"),
    "gate": (FeedForward, "gate"),
    "down": (FeedForward, "down"),
}
DEFAULT_TARGETS = ("qkv", "query", "key_value")
# Layers that stay trainable by default: a task head that is new to a fine-tuned model.
DEFAULT_TRAIN_MODULES = ("classifier",)
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"
FORMAT_VERSION = 1

@dataclasses.dataclass
class _Target:
    path: str  # attribute path from the model, e.g. "backbone.transformer_layers.0.attention.qkv"
    name: str  # the target module name, e.g. "qkv"
    parent: keras.layers.Layer
    attribute: str
    layer: keras.layers.Layer  # the Dense, or the LoRADense once applied


@dataclasses.dataclass
class _State:
    config: dict  # what adapter_config.json records
    frozen: list  # the variables apply_lora froze, made trainable again by merge_lora


def _named_layers(layer, path="", seen=None):
    """Yields `(path, parent, attribute, child)` for the layers reachable through public attributes.

    Paths join attribute names and list indices with dots ("backbone.transformer_layers.0.attention"),
    so they depend on the architecture only, never on Keras' auto-generated layer names. A layer
    reachable twice (shared) is yielded once, under its first path.
    """
    seen = {id(layer)} if seen is None else seen
    for attribute, value in list(vars(layer).items()):
        if attribute.startswith("_"):
            continue
        items = [(attribute, value)]
        if isinstance(value, (list, tuple)):
            items = [(f"{attribute}.{i}", item) for i, item in enumerate(value)]
        for name, child in items:
            if isinstance(child, keras.layers.Layer) and id(child) not in seen:
                seen.add(id(child))
                child_path = f"{path}.{name}" if path else name
                yield child_path, layer, name, child
                if not isinstance(child, LoRADense):
                    yield from _named_layers(child, child_path, seen)


def _find_targets(model, names):
    """The projections of `model` that the target module `names` select."""
    targets = []
    for path, parent, attribute, child in _named_layers(model):
        for name in names:
            parent_class, target_attribute = TARGET_MODULES[name]
            if isinstance(parent, parent_class) and attribute == target_attribute:
                targets.append(_Target(path, name, parent, attribute, child))
    return targets


def _find_train_modules(model, names):
    """`{path: layer}` of the layers whose attribute name or full path is one of `names`."""
    return {path: child for path, _, attribute, child in _named_layers(model) if attribute in names or path in names}


def _own_variables(layer, path):
    """`{f"{path}.{sub_path}.{variable.name}": variable}` for every variable of `layer` and its sublayers."""
    layers = [(path, layer)] + [(f"{path}.{sub_path}", child) for sub_path, _, _, child in _named_layers(layer)]
    named = {}
    for layer_path, sublayer in layers:
        for variable in sublayer._trainable_variables + sublayer._non_trainable_variables:
            named[f"{layer_path}.{variable.name}"] = variable
    return named


def _check_targets(target_modules):
    if target_modules is None:
        return DEFAULT_TARGETS, False
    names = (target_modules,) if isinstance(target_modules, str) else target_modules
    valid = ", ".join(repr(name) for name in TARGET_MODULES)
    if not isinstance(names, (list, tuple)) or not names or not all(
        isinstance(name, str) and name in TARGET_MODULES for name in names
    ):
        raise invalid_argument("target_modules", f"a non-empty list of names among {valid}", target_modules)
    return tuple(dict.fromkeys(names)), True


def _check_train_modules(model, train_modules):
    if train_modules is None:
        return tuple(name for name in DEFAULT_TRAIN_MODULES if _find_train_modules(model, (name,)))
    names = (train_modules,) if isinstance(train_modules, str) else train_modules
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        raise invalid_argument("train_modules", "a list of layer names or attribute paths", train_modules)
    missing = [name for name in names if not _find_train_modules(model, (name,))]
    if missing:
        top = ", ".join(path for path, *_ in _named_layers(model) if "." not in path)
        raise invalid_argument("train_modules", f"names or paths of layers of {type(model).__name__} (such as "
                               f"{top}); none is named {', '.join(map(repr, missing))}", train_modules)
    return tuple(names)


def _resolve(model, target_modules, train_modules):
    """Checks the names against `model`; returns `(targets, train_names, target_names)`."""
    names, explicit = _check_targets(target_modules)
    targets = _find_targets(model, names)
    found = {target.name for target in targets}
    unmatched = [name for name in names if name not in found] if explicit else ([] if found else list(names))
    if unmatched:
        has = {target.name for target in _find_targets(model, TARGET_MODULES)}
        present = [name for name in TARGET_MODULES if name in has]
        raise invalid_argument(
            "target_modules",
            f"names of projections that {type(model).__name__} has ({', '.join(present) or 'none'}); "
            f"none is named {', '.join(repr(name) for name in unmatched)}",
            target_modules,
        )
    train_names = _check_train_modules(model, train_modules)
    return targets, train_names, tuple(name for name in TARGET_MODULES if name in found)


def _check_no_adapters(model, argument="model"):
    if model.runtime.adapters is not None or any(isinstance(child, LoRADense) for *_, child in _named_layers(model)):
        raise invalid_argument(
            argument, "a model without LoRA adapters (merge_lora(model) removes them; or start from a fresh model)",
            f"{type(model).__name__} with adapters",
        )


def _ensure_built(model):
    if not model.built:
        build_model(model)


def _parameter_count(variables):
    return int(sum(np.prod(variable.shape) for variable in variables))


def apply_lora(model, *, rank=8, alpha=16, dropout=0.0, target_modules=None, train_modules=None):
    """Adds LoRA adapters to `model`'s projections and freezes every other weight, in place.

    Call it inside the `tf.distribute` strategy's scope (it creates variables) and before
    `compile`. Generation, `fit` and `predict` use the adapters from then on; `save_pretrained`
    refuses the model (RuntimeError) until `merge_lora`.

    Args:
        model: a tfllm model (task model or backbone); built here if it is not yet.
        rank: rank of each adapter (>= 1).
        alpha: adapters are scaled by `alpha / rank`.
        dropout: dropout rate on each adapter's input during training, in [0, 1).
        target_modules: the projections to adapt, names from `TARGET_MODULES` ("qkv", "query",
            "key_value", "output", "up", "gate", "down"). Defaults to `DEFAULT_TARGETS`, the
            attention input projections the model has. An explicit name the model lacks is an error.
        train_modules: layers that stay fully trainable (and are saved with the adapters), by
            attribute name or path, e.g. ("classifier",) or ("backbone.layer_norm",). Defaults to
            `DEFAULT_TRAIN_MODULES` the model has: a sequence classifier's new `classifier` head.
            Pass () to train the adapters alone.

    Returns:
        The number of trainable parameters: the adapters' (see `lora_parameter_count`) plus the
        `train_modules`'.

    Raises:
        ValueError: a bad argument, or the model already has adapters.
    """
    rank = check_int("rank", rank, minimum=1)
    alpha = check_float("alpha", alpha, low=0.0, low_inclusive=False)
    dropout = check_float("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
    _check_no_adapters(model)
    _ensure_built(model)
    targets, train_names, target_names = _resolve(model, target_modules, train_modules)
    kept = {id(v) for layer in _find_train_modules(model, train_names).values() for v in layer.weights}
    frozen = [v for v in model.weights if v.trainable and id(v) not in kept]
    for variable in frozen:
        variable.trainable = False
    for target in targets:
        with name_scopes_of(target.layer.kernel):
            adapter = LoRADense(target.layer, rank, alpha, dropout)
        replace_sublayer(target.parent, target.attribute, target.layer, adapter)
    config = dict(format_version=FORMAT_VERSION, rank=rank, alpha=alpha, dropout=dropout,
                  target_modules=list(target_names), train_modules=list(train_names),
                  model_type=getattr(model, "model_type", None), task=getattr(model, "task", None) or "backbone")
    model.runtime.adapters = _State(config, frozen)
    model.runtime.invalidate()
    trainable = _parameter_count(model.trainable_weights)
    logger.info("LoRA rank %d on %d projections (%s): %d trainable parameters of %d", rank, len(targets),
                ", ".join(target_names), trainable, _parameter_count(model.weights))
    return trainable


def _adapters(model, action):
    """`(state, targets holding a LoRADense)` of a model given adapters by `apply_lora`; raises otherwise."""
    state = model.runtime.adapters
    if state is None:
        raise invalid_argument("model", f"a model with LoRA adapters to {action} (see apply_lora)",
                               f"{type(model).__name__} without adapters")
    return state, [t for t in _find_targets(model, TARGET_MODULES) if isinstance(t.layer, LoRADense)]


def lora_parameter_count(model):
    """The number of adapter parameters (`A` and `B` of every adapted projection) in `model`; 0 without adapters."""
    layers = [child for *_, child in _named_layers(model) if isinstance(child, LoRADense)]
    return _parameter_count([v for layer in layers for v in (layer.lora_a, layer.lora_b)])


def merge_lora(model):
    """Folds every adapter into its projection's kernel and removes the adapters, in place.

    The kernels become `kernel + (alpha / rank) * A @ B`, so the model computes what it computed
    with the adapters (up to float rounding); the weights `apply_lora` froze become trainable
    again. Afterwards `save_pretrained` and the exporters see a plain model.

    Returns:
        `model`.
    """
    state, targets = _adapters(model, "merge")
    for target in targets:
        adapter = target.layer
        adapter.base.kernel.assign(keras.ops.cast(adapter.merged_kernel(), adapter.base.kernel.dtype))
        replace_sublayer(target.parent, target.attribute, adapter, adapter.base)
    model.runtime.adapters = None
    for variable in state.frozen:
        variable.trainable = True
    model.runtime.invalidate()
    return model


def _adapter_variables(model):
    """`{name: variable}` of what `save_adapters` writes: every adapter's A and B and the train modules' weights."""
    state, targets = _adapters(model, "save")
    named = {}
    for target in targets:
        named[f"{target.path}.lora_a"] = target.layer.lora_a
        named[f"{target.path}.lora_b"] = target.layer.lora_b
    for path, layer in _find_train_modules(model, state.config["train_modules"]).items():
        named.update(_own_variables(layer, path))
    return named


def save_adapters(model, folder):
    """Writes `model`'s adapters (and `train_modules` weights) alone to `folder`.

    Two files, each replaced atomically; other files in `folder` are left alone:

    - `adapter_model.safetensors`: float32 tensors named by attribute path, e.g.
      `backbone.transformer_layers.0.attention.qkv.lora_a` `(input_dim, rank)` and `.lora_b`
      `(rank, units)`, and `classifier.kernel` for a train module;
    - `adapter_config.json`: rank, alpha, dropout, target_modules, train_modules, the base
      model's `model_type` and task.

    Returns:
        The folder's path.
    """
    from safetensors.numpy import save_file

    tensors = {name: np.ascontiguousarray(keras.ops.convert_to_numpy(v), dtype=np.float32)
               for name, v in _adapter_variables(model).items()}
    os.makedirs(folder, exist_ok=True)
    with atomic_file(os.path.join(folder, ADAPTER_WEIGHTS_NAME)) as path:
        save_file(tensors, str(path), metadata={"format": "tfllm-lora"})
    with atomic_file(os.path.join(folder, ADAPTER_CONFIG_NAME)) as path:
        path.write_text(json.dumps(model.runtime.adapters.config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("Saved %d adapter tensors to %s", len(tensors), folder)
    return folder


def _read_config(folder, model):
    """Reads and checks `adapter_config.json` against `model`; returns it."""
    path = os.path.join(folder, ADAPTER_CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No LoRA adapter config at {path} (save_adapters writes it).")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        check_int("rank", config["rank"], minimum=1)
        check_float("alpha", config["alpha"], low=0.0, low_inclusive=False)
        check_float("dropout", config["dropout"], low=0.0, high=1.0, high_inclusive=False)
        _check_targets(config["target_modules"])
        if not isinstance(config["train_modules"], list):
            raise invalid_argument("train_modules", "a list", config["train_modules"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} is not a valid LoRA adapter config: {error!r}") from error
    if not same_family(model, config.get("model_type")):
        raise CheckpointError(f"{path} holds adapters for a `{config.get('model_type')}` model; this model is "
                              f"`{getattr(model, 'model_type', None)}` ({type(model).__name__}).")
    return config


def _check_tensors(path, tensors, expected):
    """Raises naming every missing, unexpected and mis-shaped tensor of `path`."""
    problems = [f"missing `{name}`" for name in expected if name not in tensors]
    problems += [f"unexpected `{name}`" for name in tensors if name not in expected]
    problems += [f"`{name}` has shape {tensors[name].shape}, expected {shape}"
                 for name, shape in expected.items() if name in tensors and tensors[name].shape != shape]
    if problems:
        raise CheckpointError(f"The adapters in {path} do not fit this model: " + "; ".join(problems))


def load_adapters(model, folder):
    """Applies the adapters `save_adapters` wrote to `folder` onto `model` (the same base model, without adapters).

    Everything is checked first (the config, the model family, every tensor's name and shape), so
    a mismatched adapter is refused with a message naming the file and `model` is left untouched.

    Returns:
        `model`, adapted as it was when saved (same frozen weights, same outputs).

    Raises:
        FileNotFoundError: a file is missing.
        CheckpointError: the files do not match `model` (another family, rank, targets or shapes).
    """
    _check_no_adapters(model)
    _ensure_built(model)
    config = _read_config(folder, model)
    weights_path = os.path.join(folder, ADAPTER_WEIGHTS_NAME)
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"No LoRA adapter weights at {weights_path} (save_adapters writes them).")
    try:
        targets, train_names, _ = _resolve(model, config["target_modules"], config["train_modules"])
    except ValueError as error:
        raise CheckpointError(f"The adapters in {folder} do not fit this model: {error}") from error
    expected = {}
    for target in targets:
        input_dim, units = target.layer.kernel.shape
        expected[f"{target.path}.lora_a"] = (input_dim, config["rank"])
        expected[f"{target.path}.lora_b"] = (config["rank"], units)
    for path, layer in _find_train_modules(model, train_names).items():
        expected.update({name: tuple(v.shape) for name, v in _own_variables(layer, path).items()})
    tensors, _ = read_safetensors(weights_path)
    _check_tensors(weights_path, tensors, expected)
    apply_lora(model, rank=config["rank"], alpha=config["alpha"], dropout=config["dropout"],
               target_modules=config["target_modules"], train_modules=config["train_modules"])
    for name, variable in _adapter_variables(model).items():
        variable.assign(keras.ops.cast(tensors[name], variable.dtype))
    logger.info("Loaded %d adapter tensors from %s", len(tensors), weights_path)
    return model
