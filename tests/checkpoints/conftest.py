"""Tiny reference checkpoints built with transformers, shared by the checkpoint tests.

transformers' TF classes are imported inside the fixtures only: importing them sets
TF_USE_LEGACY_KERAS, which tfllm never relies on (it always uses `import keras`).
"""

import pytest

from checkpoint_testing import BERT_KWARGS, GPT2_KWARGS


def _tf_twin(tf_class, pt_model, config):
    """A transformers TF model holding `pt_model`'s weights (ENVIRONMENT.md trap 2)."""
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    tf_model = tf_class(config)
    tf_model(tf_model.dummy_inputs)
    state_dict = {k: v.detach().numpy() for k, v in pt_model.state_dict().items()}
    load_pytorch_state_dict_in_tf2_model(tf_model, state_dict, tf_inputs=False, allow_missing_keys=True)
    return tf_model


@pytest.fixture(scope="session")
def gpt2_pt():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(**GPT2_KWARGS)).eval()


@pytest.fixture(scope="session")
def gpt2_tf(gpt2_pt):
    from transformers import TFGPT2LMHeadModel

    return _tf_twin(TFGPT2LMHeadModel, gpt2_pt, gpt2_pt.config)


@pytest.fixture(scope="session")
def bert_pair():
    import torch
    from transformers import BertConfig, BertModel, TFBertModel

    torch.manual_seed(0)
    config = BertConfig(**BERT_KWARGS)
    pt_model = BertModel(config).eval()
    return pt_model, _tf_twin(TFBertModel, pt_model, config)
