"""What every BERT task model shares: the backbone, serialization, loading and saving."""

from tfllm.models import decoder, tasks
from tfllm.models.bert import weights
from tfllm.models.task import TaskModel


class BertTask(TaskModel):
    """A `BertBackbone` plus a head; subclasses set `task` and build the head.

    Every task's `call` takes `output_attentions` and `output_hidden_states` as transformers does;
    with either, it returns a dict with `"logits"` and the backbone's `"hidden_states"` and/or
    `"attentions"` instead of the logits alone.

    Args:
        backbone: a `BertBackbone`.
        pad_token_id: the checkpoint's padding id (kept for `config.json`).
    """

    model_type = "bert"
    task = None
    is_encoder = True
    # Head keys a checkpoint may lack; they keep their initial values and a warning names them.
    head_optional_hf_keys = ()

    def __init__(self, backbone, pad_token_id=None, **kwargs):
        super().__init__(backbone, **kwargs)
        self.pad_token_id = pad_token_id

    @property
    def optional_hf_keys(self):
        """Regexes of keys (backbone keys without "bert.") that may be absent from a checkpoint."""
        return weights.OPTIONAL + self.head_optional_hf_keys

    def task_outputs(self, logits, backbone_outputs):
        """`logits`, or with inspection outputs in `backbone_outputs` a dict holding both."""
        return decoder.task_outputs(logits, backbone_outputs)

    def head_weight_table(self):
        """Weight entries of the head, keyed by full HF names."""
        raise NotImplementedError

    def task_config(self):
        return {"pad_token_id": self.pad_token_id}
