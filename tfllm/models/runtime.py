"""State a model carries besides its weights: compiled functions, quantization mode and LoRA adapters.

It lives on the model (`model.runtime`), never in module-level registries, so it is dropped with the
model and every piece of code that changes a model's layers invalidates it the same way.
"""

import weakref


class ModelRuntime:
    """What `generate`, `tfllm.quantize` and `tfllm.training.lora` keep for one model.

    Attributes:
        compiled: key → `tf.function` traced over the model (generation's loops). Keys are chosen
            by their users; see `tfllm.generation.loop`.
        quantization: the mode `tfllm.quantize.quantize` gave the model ("int8", ...), or None.
        adapters: LoRA's record of the adapters `apply_lora` added (config and frozen variables),
            or None.
    """

    def __init__(self, model):
        self._model = weakref.ref(model)  # the model owns its runtime, not the reverse
        self.compiled = {}
        self.quantization = None
        self.adapters = None

    def function(self, key, make):
        """The function kept under `key`, made once by `make(model_ref)` (a weak reference to the model,
        so the function does not keep its model alive)."""
        if key not in self.compiled:
            self.compiled[key] = make(self._model)
        return self.compiled[key]

    def invalidate(self):
        """Drops every traced function that captured the model's layers: generation's and Keras'
        `train_function` / `test_function` / `predict_function`. Call it after replacing layers
        (LoRA, quantization): the old functions would still run the old layers."""
        self.compiled.clear()
        model = self._model()
        for name in ("train_function", "test_function", "predict_function"):
            if model is not None and hasattr(model, name):
                setattr(model, name, None)


class HasRuntime:
    """Mixin for tfllm's Keras models: `model.runtime`, created on first use."""

    @property
    def runtime(self):
        runtime = self.__dict__.get("_tfllm_runtime")
        if runtime is None:
            runtime = ModelRuntime(self)
            object.__setattr__(self, "_tfllm_runtime", runtime)  # not a Keras-tracked attribute
        return runtime
