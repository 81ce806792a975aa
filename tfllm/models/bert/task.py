"""What every BERT task model shares: the backbone, serialization, loading and saving."""

import keras

from tfllm.models import pretrained
from tfllm.models.bert import weights


class BertTask(keras.Model):
    """A `BertBackbone` plus a head; subclasses set `task` and build the head.

    Args:
        backbone: a `BertBackbone`.
        pad_token_id: the checkpoint's padding id (kept for `config.json`).
    """

    model_type = "bert"
    task = None
    # Head keys a checkpoint may lack; they keep their initial values and a warning names them.
    head_optional_hf_keys = ()

    def __init__(self, backbone, pad_token_id=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.pad_token_id = pad_token_id

    @property
    def optional_hf_keys(self):
        """Regexes of keys (backbone keys without "bert.") that may be absent from a checkpoint."""
        return weights.OPTIONAL + self.head_optional_hf_keys

    def build_from_config(self, config):
        self.build()

    def head_weight_table(self):
        """Weight entries of the head, keyed by full HF names."""
        raise NotImplementedError

    def task_config(self):
        return {"pad_token_id": self.pad_token_id}

    @classmethod
    def from_pretrained(cls, folder, **kwargs):
        """Loads a Hugging Face BERT folder (config.json + weights) into this task."""
        return pretrained.from_pretrained(folder, cls.task, expected_model_type=cls.model_type, **kwargs)

    def save_pretrained(self, folder):
        """Writes config.json and model.safetensors that transformers loads too."""
        pretrained.save_pretrained(self, folder)

    def get_config(self):
        config = super().get_config()
        config.update(backbone=keras.saving.serialize_keras_object(self.backbone), **self.task_config())
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
