"""The base of every family's backbone: loading and saving a Hugging Face base-model folder."""

import keras

from tfllm.models import pretrained


class Backbone(keras.Model):
    """A family's base model (no head). Subclasses set `model_type` and build their layers in `build`."""

    model_type = None

    def build_from_config(self, config):
        self.build()

    @classmethod
    def from_pretrained(cls, folder):
        """Loads the base model (no head) from a Hugging Face folder of this family."""
        return pretrained.from_pretrained(folder, "backbone", expected_model_type=cls.model_type)

    def save_pretrained(self, folder):
        """Writes the base model as a Hugging Face folder that transformers loads."""
        pretrained.save_pretrained(self, folder)
