"""tfllm: a Keras 3 / TensorFlow toolkit for large language models.

>>> import tfllm
>>> tok = tfllm.AutoTokenizer.from_pretrained("path/to/gpt2")
>>> model = tfllm.AutoModelForCausalLM.from_pretrained("path/to/gpt2")
>>> batch = tok(["Once upon a time"], return_tensors="tf", padding=True)
>>> tok.batch_decode(model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=20))

The public names are imported on first use (PEP 562), so `import tfllm` (and the `tfllm`
command's argument parsing) does not load TensorFlow; `tfllm.AutoTokenizer` and the rest behave
as if imported here.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "AutoConfig": "tfllm.models",
    "AutoModel": "tfllm.models",
    "AutoModelForCausalLM": "tfllm.models",
    "AutoModelForMaskedLM": "tfllm.models",
    "AutoModelForSeq2SeqLM": "tfllm.models",
    "AutoModelForSequenceClassification": "tfllm.models",
    "AutoTokenizer": "tfllm.tokenizers",
    "pipeline": "tfllm.pipelines",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        try:  # a subpackage, e.g. `tfllm.export` after a bare `import tfllm`
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
