"""The base of every task model: a backbone plus a head, with loading, saving and serialization."""

import keras

from tfllm.errors import invalid_argument
from tfllm.generation import generate
from tfllm.models import pretrained, tasks
from tfllm.models.runtime import HasRuntime

# Backbone output keys that `inspect` passes on ("attentions", "decoder_hidden_states", ...).
INSPECTION_SUFFIXES = ("attentions", "hidden_states")


class TaskModel(HasRuntime, keras.Model):
    """A family's backbone and a head. Subclasses set `model_type` and `task`, build the head and
    implement `head` (backbone outputs → logits), `head_weight_table` and `task_config` (the
    constructor arguments besides the backbone, which are also the task's `config.json` settings).

    The contract other packages rely on (see `tfllm.models.tasks`): `task`, `is_encoder`,
    `export_formats`, and `runtime` (compiled functions, quantization, adapters; see
    `tfllm.models.runtime`).

    Args:
        backbone: the family's backbone.

    Call arguments:
        inputs: what the backbone takes (a tokenizer's dict, or a tensor of token ids).
        training: enables dropout.

    Returns:
        The logits, always (so `compile` and `fit` work with a plain loss); `inspect` adds the
        attentions and hidden states.
    """

    model_type = None
    task = None
    is_encoder = False
    export_formats = ()
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

    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Continues prompts (causal LM) or generates targets (seq2seq LM); see
        `tfllm.generation.generate` for the arguments.

        Returns:
            int32 token ids: `(batch_size, prompt_length + generated)` for a causal LM; for an
            encoder-decoder, `(batch_size, 1 + generated)` starting with `decoder_start_token_id`,
            as transformers' output does.
        """
        if self.task not in tasks.GENERATIVE:
            raise invalid_argument("model", f"a model of a generative task ({', '.join(tasks.GENERATIVE)})",
                                   tasks.describe(self))
        return generate(self, input_ids, attention_mask=attention_mask, **kwargs)

    def call(self, inputs, training=None):
        return self.head(self.backbone(inputs, training=training), training=training)

    def head(self, backbone_outputs, training=None):
        """The task's logits from the backbone's output dict."""
        raise NotImplementedError

    def inspect(self, inputs, output_attentions=False, output_hidden_states=False):
        """The logits with what transformers' `output_attentions` / `output_hidden_states` return.

        Args:
            inputs: as for `call`.
            output_attentions: also return every layer's attention probabilities.
            output_hidden_states: also return the embeddings and every layer's output.

        Returns:
            A dict: `"logits"`, as `call` returns them, and the backbone's inspection outputs the
            flags ask for: `"attentions"` (`num_layers` tensors `(batch_size, num_heads,
            sequence_length, key_length)`) and `"hidden_states"` (`num_layers + 1` tensors
            `(batch_size, sequence_length, hidden_dim)`), or for an encoder-decoder their
            `"encoder_"` and `"decoder_"` versions.
        """
        outputs = self.backbone(inputs, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        inspection = {key: value for key, value in outputs.items() if key.endswith(INSPECTION_SUFFIXES)}
        return {"logits": self.head(outputs), **inspection}

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
