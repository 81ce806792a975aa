"""The `tf.Module`s whose functions become a SavedModel's signatures (names in `signatures.py`)."""

import inspect

import tensorflow as tf

from tfllm.export import signatures as sig
from tfllm.generation.loop import decode
from tfllm.tokenizers import in_graph

_DTYPES = {"string": tf.string, "int32": tf.int32, "float32": tf.float32, "bool": tf.bool}


def _spec(tensor):
    return tf.TensorSpec(tensor.shape, _DTYPES[tensor.dtype], name=tensor.name)


def left_align(token_ids, padding_mask):
    """Moves each row's padding to the left (graph version of `generation.loop.left_align`)."""
    order = tf.argsort(padding_mask, axis=1, stable=True)  # zeros first, real tokens keep their order
    return tf.gather(token_ids, order, batch_dims=1), tf.gather(padding_mask, order, batch_dims=1)


def left_pad(ragged_ids, pad_id):
    """RaggedTensor `(batch, (length))` → left-padded `(ids, mask)`, both `(batch, longest)` int32."""
    ids = tf.cast(ragged_ids.to_tensor(pad_id), tf.int32)
    mask = tf.cast(tf.ones_like(ragged_ids, tf.int32).to_tensor(0), tf.int32)
    return left_align(ids, mask)


class CausalLMServing(tf.Module):
    """Signatures of a causal LM: `serving_default` (text → text), `generate_ids`, `logits`.

    Args:
        model: a `tfllm.models.CausalLM`.
        tokenizer: its `tfllm.tokenizers.Tokenizer`; an in-graph copy is built from it.
        max_new_tokens: the default of the `max_new_tokens` input.
    """

    kind = "causal_lm"

    def __init__(self, model, tokenizer, max_new_tokens=32):
        super().__init__(name="tfllm_serving")
        self.model = model
        self.codec = in_graph.from_tokenizer(tokenizer)
        self.max_positions = model.max_sequence_length
        self.bos_id = tokenizer.bos_token_id if getattr(tokenizer, "add_bos_token", False) else None
        eos = model.eos_token_id
        self.eos_id = -1 if eos is None else int(eos)
        pad = model.pad_token_id if model.pad_token_id is not None else max(self.eos_id, 0)
        self.pad_id = int(pad)
        self.signature_defs = sig.saved_model_signatures(self.kind, max_new_tokens)
        by_name = {s.name: s for s in self.signature_defs}
        self.functions = {
            sig.SERVING_DEFAULT: self._with_defaults(self._generate_text, by_name[sig.SERVING_DEFAULT]),
            sig.GENERATE_IDS: self._with_defaults(self._generate_ids, by_name[sig.GENERATE_IDS]),
            sig.LOGITS: self._with_defaults(self._logits, by_name[sig.LOGITS]),
        }

    @staticmethod
    def _with_defaults(function, signature):
        """A `tf.function` with the signature's specs; inputs with a default may be omitted by clients.

        SignatureDef defaults come from the Python defaults of the traced function, so the wrapper
        gets an explicit signature naming every input, with tensor defaults where the table has one.
        """
        parameters = [
            inspect.Parameter(
                t.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=inspect.Parameter.empty if t.default is None else tf.constant(t.default, _DTYPES[t.dtype]),
            )
            for t in signature.inputs
        ]

        def wrapper(*args, **kwargs):
            bound = wrapper.__signature__.bind(*args, **kwargs)
            bound.apply_defaults()
            return function(**bound.arguments)

        wrapper.__signature__ = inspect.Signature(parameters)
        wrapper.__name__ = signature.name
        return tf.function(wrapper, input_signature=[_spec(t) for t in signature.inputs])

    # === Pieces ===

    def _encode(self, text):
        ids = self.codec.tokenize(text)
        if self.bos_id is not None:
            bos = tf.fill([ids.nrows(), 1], tf.cast(self.bos_id, ids.dtype))
            ids = tf.concat([bos, ids], axis=1)
        return left_pad(ids, self.pad_id)

    def _check_length(self, mask, max_new_tokens):
        longest = tf.reduce_max(tf.reduce_sum(mask, axis=1))
        checks = [
            tf.debugging.assert_greater_equal(max_new_tokens, 1, message="max_new_tokens must be >= 1"),
            tf.debugging.assert_greater(tf.reduce_min(tf.reduce_sum(mask, axis=1)), 0,
                                        message="every prompt needs at least one token"),
        ]
        if self.max_positions is not None:
            checks.append(tf.debugging.assert_less_equal(
                longest + max_new_tokens, self.max_positions,
                message=f"the longest prompt plus max_new_tokens exceeds the model's {self.max_positions} positions",
            ))
        return checks

    def _run(self, ids, mask, max_new_tokens, do_sample, temperature, top_k, top_p, seed):
        with tf.control_dependencies(self._check_length(mask, max_new_tokens)):
            seed = tf.where(seed < 0, tf.random.uniform([], 0, 2**31 - 1, tf.int32), seed)
        seeds = tf.stack([seed, 0])
        args = (ids, mask, max_new_tokens)
        rest = (temperature, top_k, top_p, seeds, tf.constant(self.eos_id), tf.constant(self.pad_id))
        return tf.cond(
            do_sample,
            lambda: decode(self.model, *args, True, *rest),
            lambda: decode(self.model, *args, False, *rest),
        )

    # === Signatures ===

    def _generate_text(self, text, max_new_tokens, do_sample, temperature, top_k, top_p, seed):
        ids, mask = self._encode(text)
        output = self._run(ids, mask, max_new_tokens, do_sample, temperature, top_k, top_p, seed)
        prompt_length = tf.shape(ids)[1]
        new = output[:, prompt_length:]
        new_mask = tf.ones_like(new)
        # As transformers' pipeline: decode the whole row and cut the decoded prompt off, so a
        # character whose bytes span the boundary decodes whole.
        full = self.codec.detokenize(output, tf.concat([mask, new_mask], axis=1))
        prompt = self.codec.detokenize(ids, mask)
        start = tf.strings.length(prompt)
        completion = tf.strings.substr(full, start, tf.strings.length(full) - start)
        return {sig.GENERATED_TEXT: tf.strings.join([text, completion]), sig.COMPLETION: completion}

    def _generate_ids(self, input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p, seed):
        ids, mask = left_align(input_ids, attention_mask)
        return {sig.OUTPUT_IDS: self._run(ids, mask, max_new_tokens, do_sample, temperature, top_k, top_p, seed)}

    def _logits(self, input_ids, attention_mask):
        logits = self.model({"input_ids": input_ids, "attention_mask": attention_mask})
        return {sig.LOGITS: tf.cast(logits, tf.float32)}
