"""`AutoConfig` and `AutoModel*`: dispatch on the `model_type` of a folder's `config.json`."""

from tfllm.checkpoints import load_config
from tfllm.models import bert, distilbert, gpt2, llama, pretrained, roberta, t5
from tfllm.models import tasks as task_names
from tfllm.models.registry import get_family, register

# One line per family package; a family may serve several model_types (see `aliases`).
for _family in (
    bert.FAMILY,
    distilbert.FAMILY,
    gpt2.FAMILY,
    llama.FAMILY,
    roberta.FAMILY,
    t5.FAMILY,
):
    register(_family)


def task_of_folder(folder):
    """The task a folder's checkpoint was saved for, from `architectures` in its config.json.

    Returns:
        A task name of the folder's family ("causal_lm", "seq2seq_lm", "sequence_classification",
        "masked_lm") or "backbone" for a base model or an unknown head.
    """
    config = load_config(folder)
    family = get_family(config.get("model_type"))
    by_class = {}
    for key, class_name in family.hf_architectures.items():
        by_class[class_name] = key[1] if isinstance(key, tuple) else key
    for architecture in config.get("architectures") or ():
        if architecture in by_class:
            return by_class[architecture]
    return "backbone"


class _AutoModelBase:
    task = None

    def __init__(self):
        raise TypeError(f"{type(self).__name__} is a factory: use {type(self).__name__}.from_pretrained(folder)")

    @classmethod
    def from_pretrained(cls, folder, **kwargs):
        """Builds the model of whatever supported family `folder` holds and loads its weights."""
        return pretrained.from_pretrained(folder, cls.task, **kwargs)


class Config:
    """A checkpoint's config: the raw `config.json` plus tfllm's constructor arguments.

    Attributes:
        model_type: the family name.
        backbone_kwargs: the backbone's constructor arguments (tfllm's vocabulary).
        task_kwargs: task-level settings (special token ids).
    Attribute access falls back to `config.json`'s own keys (`config.n_embd`).
    """

    def __init__(self, hf_config):
        family = get_family(hf_config.get("model_type"))
        self.model_type = family.model_type
        self._hf = dict(hf_config)
        self.backbone_kwargs, self.task_kwargs = family.config_from_hf(self._hf)

    def __getattr__(self, name):
        if name.startswith("_") or name not in self._hf:
            raise AttributeError(name)
        return self._hf[name]

    def to_dict(self):
        return dict(self._hf)

    def __repr__(self):
        return f"Config(model_type={self.model_type!r}, {self.backbone_kwargs})"


class AutoConfig:
    """Reads `config.json` from a folder. Example: `tfllm.AutoConfig.from_pretrained(path).model_type`."""

    @staticmethod
    def from_pretrained(folder):
        return Config(load_config(folder))


class AutoModel(_AutoModelBase):
    """The family's backbone (hidden states out)."""

    task = task_names.BACKBONE


class AutoModelForCausalLM(_AutoModelBase):
    """The family's causal language model (logits out, `generate`)."""

    task = task_names.CAUSAL_LM


class AutoModelForMaskedLM(_AutoModelBase):
    """The family's masked language model (logits over the vocabulary at every position)."""

    task = task_names.MASKED_LM


class AutoModelForSequenceClassification(_AutoModelBase):
    """The family's sequence classifier; pass `num_labels=` when the checkpoint has no head."""

    task = task_names.SEQUENCE_CLASSIFICATION


class AutoModelForSeq2SeqLM(_AutoModelBase):
    """The family's encoder-decoder language model."""

    task = task_names.SEQ2SEQ_LM
