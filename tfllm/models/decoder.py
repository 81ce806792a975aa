"""The decoder-only backbone shared by GPT-2 and Llama: embed, decoder blocks, a final norm."""

import keras
import tensorflow as tf

from tfllm.layers import attention_mask, positions_from_mask
from tfllm.models import pretrained
from tfllm.models.inputs import unpack_inputs


class DecoderBackbone(keras.Model):
    """Base of decoder-only backbones: token ids and padding mask in, final hidden states out.

    A subclass creates `token_embedding`, `embeddings_dropout`, `transformer_layers` (a list of
    `DecoderBlock`) and `layer_norm` (the final norm), sets `model_type` and `hidden_dim`, and
    overrides `embed` when it adds more than the token embedding (GPT-2's learned positions).

    Call arguments:
        inputs: a tokenizer's dict (`input_ids`, `attention_mask`) or a tensor of token ids.
        training: enables dropout.

    Returns:
        `(batch_size, sequence_length, hidden_dim)` hidden states.
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

    def build_from_config(self, config):
        self.build()

    def call(self, inputs, training=None):
        token_ids, padding_mask = unpack_inputs(inputs)
        return self.forward(token_ids, padding_mask, training=training)

    def embed(self, token_ids, positions):
        """`(batch_size, length)` token ids and positions → `(batch_size, length, hidden_dim)`."""
        return self.token_embedding(token_ids)

    def forward(self, token_ids, padding_mask, cache=None, cache_index=0, training=None):
        """The one forward pass, full or incremental.

        Args:
            token_ids: `(batch_size, length)` int32.
            padding_mask: `(batch_size, key_length)` int32; `key_length` is `length` for a full
                pass and the cache length with a cache.
            cache: tuple of per-layer `(batch_size, 2, cache_length, num_key_value_heads, head_dim)`
                or None.
            cache_index: position of `token_ids[:, 0]` in the cache.
            training: enables dropout.

        Returns:
            Hidden states `(batch_size, length, hidden_dim)`, and with a cache the updated cache.
        """
        length = tf.shape(token_ids)[1]
        positions = positions_from_mask(padding_mask)[:, cache_index : cache_index + length]
        mask = attention_mask(padding_mask, length, cache_index)  # (B, T, S)
        x = self.embeddings_dropout(self.embed(token_ids, positions), training=training)
        new_cache = []
        for i, block in enumerate(self.transformer_layers):
            if cache is None:
                x = block(x, attention_mask=mask, positions=positions, training=training)
            else:
                x, layer_cache = block(x, attention_mask=mask, positions=positions, cache=cache[i], cache_index=cache_index)
                new_cache.append(layer_cache)
        x = self.layer_norm(x)
        return x if cache is None else (x, tuple(new_cache))

    def init_cache(self, batch_size, cache_length):
        """A zero cache: `num_layers` tensors `(batch_size, 2, cache_length, num_key_value_heads, head_dim)`."""
        attention = self.transformer_layers[0].attention
        shape = [batch_size, 2, cache_length, attention.num_key_value_heads, attention.head_dim]
        return tuple(tf.zeros(shape, self.compute_dtype) for _ in self.transformer_layers)

    @classmethod
    def from_pretrained(cls, folder):
        """Loads the base model (no head) from a Hugging Face folder of this family."""
        return pretrained.from_pretrained(folder, "backbone", expected_model_type=cls.model_type)

    def save_pretrained(self, folder):
        """Writes the base model as a Hugging Face folder that transformers loads."""
        pretrained.save_pretrained(self, folder)
