"""The base of every family's backbone: loading and saving a Hugging Face base-model folder."""

import keras

from tfllm.models import pretrained, tasks
from tfllm.models.runtime import HasRuntime


class Backbone(HasRuntime, keras.Model):
    """A family's base model (no head). Subclasses set `model_type` and build their layers in `build`.

    Declares the model contract of `tfllm.models.tasks`: an encoder family's backbone sets
    `is_encoder = True` and the `export_formats` it supports.
    """

    model_type = None
    task = tasks.BACKBONE
    is_encoder = False
    export_formats = ()

    def build_from_config(self, config):
        self.build()

    @classmethod
    def from_pretrained(cls, folder):
        """Loads the base model (no head) from a Hugging Face folder of this family."""
        return pretrained.from_pretrained(folder, tasks.BACKBONE, expected_model_type=cls.model_type)

    def save_pretrained(self, folder):
        """Writes the base model as a Hugging Face folder that transformers loads."""
        pretrained.save_pretrained(self, folder)
