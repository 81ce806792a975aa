"""`LiteRTGenerator`: greedy generation with a TFLite file written by `tfllm.export.tflite`."""

import numpy as np

from tfllm.export import signatures as sig
from tfllm.export.steps import StepGenerator, require


class LiteRTGenerator(StepGenerator):
    """Drives a decoder's `prefill` / `decode` signatures with `ai_edge_litert`'s interpreter.

    Prompts run one at a time (the file's batch is 1); a prompt longer than the file's
    `prefill_length` is fed in windows, and prompt + new tokens must fit its `cache_length`.

    Args:
        path: a `.tflite` file written by `tfllm.export.tflite` for a causal LM.
        tokenizer: the model's tokenizer, for `generate` (text in, text out); None for ids only.
        num_threads: interpreter threads (None: the runtime's default).

    Example:
    >>> generator = tfllm.export.LiteRTGenerator("gpt2.tflite", tokenizer)
    >>> generator.generate("The for statement", max_new_tokens=20)   # prompt + continuation
    >>> generator.generate_ids([464, 329, 2643], max_new_tokens=5)   # [464, 329, 2643, ...]
    """

    def __init__(self, path, tokenizer=None, num_threads=None):
        Interpreter = require("ai_edge_litert.interpreter", "tflite").Interpreter

        self.path = str(path)
        self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if sig.PREFILL not in signatures or sig.DECODE not in signatures:
            raise ValueError(
                f"Invalid value for argument `path`. Expected a TFLite file with `{sig.PREFILL}` and `{sig.DECODE}` "
                f"signatures (tfllm.export.tflite of a causal LM). Received: path={self.path!r} with signatures "
                f"{sorted(signatures)}"
            )
        self._runners = {name: self.interpreter.get_signature_runner(name) for name in (sig.PREFILL, sig.DECODE)}
        details = self._runners[sig.PREFILL].get_input_details()
        cache_names = [name for name in details if name.startswith("kv_cache_")]
        num_layers = len(cache_names) // 2
        shapes = {name: details[name]["shape"] for name in sig.kv_cache_names(num_layers)}
        dtype = np.dtype(details[sig.kv_cache_name("k", 0)]["dtype"])
        super().__init__(tokenizer, details[sig.TOKENS]["shape"][1], shapes, dtype)

    def _run(self, signature, inputs):
        return self._runners[signature](**inputs)
