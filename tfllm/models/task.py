"""The base of every task model: a backbone plus a head, with loading, saving and serialization."""

import keras

from tfllm.models import pretrained


class TaskModel(keras.Model):
    """A family's backbone and a head. Subclasses set `model_type` and `task`, build the head and
    implement `call`, `head_weight_table` and `task_config` (the constructor arguments besides the
    backbone, which are also the task's `config.json` settings).

    Args:
        backbone: the family's backbone.
    """

    model_type = None
    task = None
    is_encoder_decoder = False  # True: `generate`'s output starts with a decoder start token, not the prompt

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def build(self, input_shape=None):
        if not self.backbone.built:
            self.backbone.build(input_shape)
        self.built = True

    def build_from_config(self, config):
        self.build()

    def head_weight_table(self):
        """Weight entries of the head beyond the backbone's (none when tied), keyed by full HF names."""
        return []

    def task_config(self):
        return {}

    @classmethod
    def from_pretrained(cls, folder, **kwargs):
        """Loads a Hugging Face folder (config.json + weights) of this family into this task."""
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
