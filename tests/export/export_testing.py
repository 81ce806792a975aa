"""Helpers of the TFLite and ONNX export tests (the fixtures are in this folder's conftest.py)."""

import numpy as np

# A vocabulary of 300 holds the 256 bytes of a byte-level BPE tokenizer, so the GPT-2 has real text.
GPT2_OVERRIDES = dict(vocab_size=300, n_positions=64, bos_token_id=0, eos_token_id=0)
# Not a multiple of the prefill window: the last window of a long prompt is moved back (see StepGenerator).
CACHE_LENGTH = 30
PREFILL_LENGTH = 8
PROMPTS = ("The for statement", "A class definition", "If the exception")


def greedy_prompts(vocabulary_size=300):
    """Token-id prompts: one token, a short one, one over a prefill window, one whose last window moves back."""
    rng = np.random.default_rng(1)
    return [rng.integers(0, vocabulary_size, n).tolist() for n in (1, 5, PREFILL_LENGTH + 5, CACHE_LENGTH - 4)]


def keras_greedy(model, prompt, max_new_tokens):
    """`model.generate`'s greedy tokens (prompt included) for one prompt, eos disabled."""
    ids = model.generate(np.array([prompt], np.int32), max_new_tokens=max_new_tokens, eos_token_id=-1)
    return np.asarray(ids)[0].tolist()
