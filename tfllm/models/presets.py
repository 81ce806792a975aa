"""Configs for new (untrained) models, by task: which family trains each task from scratch, and its sizes.

`tfllm train --config tiny` and `tfllm quickstart` build their models from these, so neither names a
family: a causal LM is GPT-2 shaped, a seq2seq LM T5 shaped, and an encoder (masked LM or
classifier) BERT shaped.
"""

from tfllm.errors import check_choice
from tfllm.models import tasks

TRAINABLE_FROM_SCRATCH = (tasks.CAUSAL_LM, tasks.SEQ2SEQ_LM, tasks.MASKED_LM, tasks.SEQUENCE_CLASSIFICATION)


def new_model_config(task, vocabulary_size, *, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=None,
                     max_positions=128, dropout=None, bos_token_id=None, eos_token_id=None, pad_token_id=None):
    """The Hugging Face `config.json` dict of a new model for `task`.

    Args:
        task: one of `TRAINABLE_FROM_SCRATCH`.
        vocabulary_size: the tokenizer's size.
        num_layers, num_heads, hidden_dim: the shape.
        intermediate_dim: the feed-forward width; defaults to `4 * hidden_dim` for a causal LM and
            `2 * hidden_dim` otherwise.
        max_positions: learned positions (the seq2seq family has none).
        dropout: dropout rate; None keeps the family's default.
        bos_token_id, eos_token_id, pad_token_id: the tokenizer's special ids (None: not set).

    Returns:
        A dict with `model_type` that `tfllm.models.pretrained.build_task_model` builds.
    """
    check_choice("task", task, TRAINABLE_FROM_SCRATCH)
    special = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    special = {key: value for key, value in special.items() if value is not None}
    if task == tasks.CAUSAL_LM:
        config = {"model_type": "gpt2", "vocab_size": vocabulary_size, "n_layer": num_layers, "n_head": num_heads,
                  "n_embd": hidden_dim, "n_inner": intermediate_dim or 4 * hidden_dim, "n_positions": max_positions}
        config.update({} if dropout is None else {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout})
    elif task == tasks.SEQ2SEQ_LM:
        config = {"model_type": "t5", "vocab_size": vocabulary_size, "d_model": hidden_dim,
                  "d_kv": hidden_dim // num_heads, "d_ff": intermediate_dim or 2 * hidden_dim, "num_layers": num_layers,
                  "num_heads": num_heads, "feed_forward_proj": "relu"}
        config.update({} if dropout is None else {"dropout_rate": dropout})
        if "pad_token_id" in special:
            special.setdefault("decoder_start_token_id", special["pad_token_id"])
    else:
        config = {"model_type": "bert", "vocab_size": vocabulary_size, "hidden_size": hidden_dim,
                  "num_hidden_layers": num_layers, "num_attention_heads": num_heads,
                  "intermediate_size": intermediate_dim or 2 * hidden_dim, "max_position_embeddings": max_positions,
                  "type_vocab_size": 2}
        config.update({} if dropout is None else {"hidden_dropout_prob": dropout,
                                                  "attention_probs_dropout_prob": dropout})
    return {**config, **special}
