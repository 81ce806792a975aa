"""Hugging Face checkpoints: reading every transformers layout, weight tables, atomic saving.

A family loads a checkpoint in three steps:

```python
config = load_config(folder)
state_dict = read_state_dict(folder)  # PyTorch keys and layouts, whatever the file format
load_weights(entries, state_dict, source=folder, ignorable=[r"lm_head\\.weight"])
```
"""

from tfllm.checkpoints.errors import CheckpointError
from tfllm.checkpoints.folder import save_folder
from tfllm.checkpoints.state_dict import StateDict, find_weight_files, load_config, open_state_dict, read_state_dict
from tfllm.checkpoints.transforms import IDENTITY, TRANSPOSE, Transform, compose, concat, reshape
from tfllm.checkpoints.weights import WeightEntry, export_weights, load_weights

__all__ = [
    "CheckpointError",
    "IDENTITY",
    "StateDict",
    "TRANSPOSE",
    "Transform",
    "WeightEntry",
    "compose",
    "concat",
    "export_weights",
    "find_weight_files",
    "load_config",
    "load_weights",
    "open_state_dict",
    "read_state_dict",
    "reshape",
    "save_folder",
]
