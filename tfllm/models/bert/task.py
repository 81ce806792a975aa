"""What every BERT task model shares: the backbone, serialization, loading and saving."""

from tfllm.models.bert import weights
from tfllm.models.task import TaskModel


class BertTask(TaskModel):
    """A `BertBackbone` plus a head; subclasses set `task`, build the head and implement `head`.

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

    def head_weight_table(self):
        """Weight entries of the head, keyed by full HF names."""
        raise NotImplementedError

    def task_config(self):
        return {"pad_token_id": self.pad_token_id}
