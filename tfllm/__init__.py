"""tfllm: a Keras 3 / TensorFlow toolkit for large language models.

>>> import tfllm
>>> tok = tfllm.AutoTokenizer.from_pretrained("path/to/gpt2")
>>> model = tfllm.AutoModelForCausalLM.from_pretrained("path/to/gpt2")
>>> batch = tok(["Once upon a time"], return_tensors="tf", padding=True)
>>> tok.batch_decode(model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=20))
"""

__version__ = "0.1.0"

from tfllm.models import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)
from tfllm.pipelines import pipeline  # noqa: E402
from tfllm.tokenizers import AutoTokenizer  # noqa: E402

__all__ = [
    "AutoConfig",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForMaskedLM",
    "AutoModelForSeq2SeqLM",
    "AutoModelForSequenceClassification",
    "AutoTokenizer",
    "__version__",
    "pipeline",
]
