"""The decoder-only backbone shared by GPT-2 and Llama: embed, decoder blocks, a final norm.

Also the block loop every backbone (BERT's and T5's too) runs, which collects what transformers
returns for `output_attentions=True` and `output_hidden_states=True`.
"""

import tensorflow as tf

from tfllm.layers import attention_mask, positions_from_mask
from tfllm.models.backbone import Backbone
from tfllm.models.inputs import unpack_inputs


def run_blocks(blocks, x, final_norm=None, cache=None, per_block=None, output_attentions=False,
               output_hidden_states=False, **kwargs):
    """Runs `x` through `blocks` (and `final_norm`), collecting what transformers' `output_*` flags return.

    Args:
        blocks: the transformer blocks, in order.
        x: `(batch_size, length, hidden_dim)` embeddings.
        final_norm: the norm after the last block, if any.
        cache: tuple of per-block caches, or None for a full pass.
        per_block: `{argument: tuple with one value per block}` for other per-block arguments
            (T5's `cross_cache`).
        output_attentions: collect each block's self-attention probabilities.
        output_hidden_states: collect the embeddings and each block's output.
        **kwargs: passed to every block (`attention_mask`, `positions`, `cache_index`, `training`).

    Returns:
        A dict with `"last_hidden_state"` (after `final_norm`); `"cache"`, the updated caches, when
        `cache` is given; `"hidden_states"`, `num_layers + 1` tensors `(batch_size, length,
        hidden_dim)`: the embeddings, then each block's output, the last one after `final_norm`
        (transformers' convention); `"attentions"`, `num_layers` tensors `(batch_size, num_heads,
        length, key_length)` of probabilities.
    """
    hidden_states, attentions, new_cache = [x], [], []
    for i, block in enumerate(blocks):
        own = {name: values[i] for name, values in (per_block or {}).items() if values is not None}
        outputs = block(
            x, cache=None if cache is None else cache[i], return_attention_scores=output_attentions, **own, **kwargs
        )
        if cache is None and not output_attentions:
            outputs = (outputs,)
        x = outputs[0]
        if cache is not None:
            new_cache.append(outputs[1])
        if output_attentions:
            attentions.append(outputs[-1])
        hidden_states.append(x)
    if final_norm is not None:
        x = final_norm(x)
        hidden_states[-1] = x
    result = {"last_hidden_state": x}
    if cache is not None:
        result["cache"] = tuple(new_cache)
    if output_hidden_states:
        result["hidden_states"] = tuple(hidden_states)
    if output_attentions:
        result["attentions"] = tuple(attentions)
    return result


class DecoderBackbone(Backbone):
    """Base of decoder-only backbones: token ids and padding mask in, final hidden states out.

    A subclass creates `token_embedding`, `embeddings_dropout`, `transformer_layers` (a list of
    blocks) and `layer_norm` (the final norm), sets `model_type` and `hidden_dim`, and overrides
    `embed` when it adds more than the token embedding (GPT-2's learned positions).

    Call arguments:
        inputs: a tokenizer's dict (`input_ids`, `attention_mask`) or a tensor of token ids.
        training: enables dropout.
        output_attentions: also return every layer's attention probabilities.
        output_hidden_states: also return the embeddings and every layer's output.

    Returns:
        A dict: `"last_hidden_state"`, `(batch_size, sequence_length, hidden_dim)` final hidden
        states, and with the flags `"hidden_states"` and/or `"attentions"` (see `run_blocks`).
    """

    model_type = None

    def build(self, input_shape=None):
        if self.built:
            return
        hidden_shape = (None, None, self.hidden_dim)
        self.token_embedding.build()
        for block in self.transformer_layers:
            block.build(hidden_shape)
        self.layer_norm.build(hidden_shape)
        self.built = True

    def call(self, inputs, training=None, output_attentions=False, output_hidden_states=False):
        token_ids, padding_mask = unpack_inputs(inputs)
        return self.forward(
            token_ids,
            padding_mask,
            training=training,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )

    def embed(self, token_ids, positions):
        """`(batch_size, length)` token ids and positions → `(batch_size, length, hidden_dim)`."""
        return self.token_embedding(token_ids)

    def forward(
        self, token_ids, padding_mask, cache=None, cache_index=0, training=None, output_attentions=False,
        output_hidden_states=False,
    ):
        """The one forward pass, full or incremental.

        Args:
            token_ids: `(batch_size, length)` int32.
            padding_mask: `(batch_size, key_length)` int32; `key_length` is `length` for a full
                pass and the cache length with a cache.
            cache: tuple of per-layer `(batch_size, 2, cache_length, num_key_value_heads, head_dim)`
                or None.
            cache_index: position of `token_ids[:, 0]` in the cache.
            training: enables dropout.
            output_attentions: also return every layer's attention probabilities.
            output_hidden_states: also return the embeddings and every layer's output.

        Returns:
            The dict of `run_blocks`: `"last_hidden_state"` `(batch_size, length, hidden_dim)`,
            `"cache"` (the updated cache) when `cache` is given, and what the flags ask for.
        """
        length = tf.shape(token_ids)[1]
        # A gather, not a slice: a slice of run-time size breaks shape inference under XLA.
        positions = tf.gather(positions_from_mask(padding_mask), cache_index + tf.range(length), axis=1)
        mask = attention_mask(padding_mask, length, cache_index)  # (B, T, S)
        x = self.embeddings_dropout(self.embed(token_ids, positions), training=training)
        return run_blocks(
            self.transformer_layers,
            x,
            final_norm=self.layer_norm,
            cache=cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            attention_mask=mask,
            positions=positions,
            cache_index=cache_index,
            training=training,
        )

    def init_cache(self, batch_size, cache_length):
        """A zero cache: `num_layers` tensors `(batch_size, 2, cache_length, num_key_value_heads, head_dim)`."""
        attention = self.transformer_layers[0].attention
        shape = [batch_size, 2, cache_length, attention.num_key_value_heads, attention.head_dim]
        return tuple(tf.zeros(shape, self.compute_dtype) for _ in self.transformer_layers)
