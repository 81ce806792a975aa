"""The host-side decoding loop: one token at a time, driven from Python.

`decode` (tfllm.generation.loop) runs inside TensorFlow as a `tf.while_loop`, which is what a
SavedModel's `serving_default` contains. Where the model's steps are called one by one from the
host instead — the numpy runners of exported TFLite and ONNX prefill/decode pairs, the server's
token stream over `stream_prefill` / `stream_decode` — they share `host_decode`, each with its own
way of calling a step and of choosing a token. Its stopping rules are those of `decode`: at most
`max_new_tokens` tokens, and a row ends at the first end-of-sequence id.

It is also the plain reference loop beside the compiled one: run over a Keras model's `prefill` and
`decode_step`, greedy `host_decode` gives the tokens `model.generate` gives
(tests/generation/test_host_loop.py).
"""

import numpy as np

from tfllm.errors import check_int


def greedy(logits, index):
    """Chooses the highest-scoring token of `logits` `(vocabulary_size,)` (or `(1, vocabulary_size)`)."""
    return int(np.argmax(np.asarray(logits).reshape(-1)))


def host_decode(prefill, step, choose, max_new_tokens, eos_token_ids=(), include_eos=True):
    """Yields new tokens one at a time: the prefill's choice, then one per `step` call.

    Args:
        prefill: `prefill() -> (logits, state)`: runs the prompt; `logits` score the first new token.
        step: `step(token, index, state) -> (logits, state)`: feeds new token number `index`
            (0 for the first new token), returns the scores of the next one.
        choose: `choose(logits, index) -> int`: picks new token number `index` (`greedy`, or a sampler).
        max_new_tokens: the most tokens to yield (an integer >= 1).
        eos_token_ids: ids that end the sequence (an empty tuple for none).
        include_eos: yield the end-of-sequence token before stopping (as `generate` does) or not (text
            streams, which never show it).

    Yields:
        Python ints; `step` is called only when another token is wanted, so no step is wasted after
        the last token.
    """
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
    stop = frozenset(eos_token_ids)
    logits, state = prefill()
    for index in range(max_new_tokens):
        token = choose(logits, index)
        ended = token in stop
        if ended and not include_eos:
            return
        yield token
        if ended or index + 1 == max_new_tokens:
            return
        logits, state = step(token, index, state)
