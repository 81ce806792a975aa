"""T5: a shared token embedding, an encoder stack and a decoder stack with cross-attention.

Both stacks are pre-norm RMSNorm blocks without biases and without score scaling, with a relative
position bias computed once per stack (by the first block's bias table, as in the checkpoints)
and added to the self-attention scores of every block.
"""

import keras
import tensorflow as tf

from tfllm.errors import check_int, invalid_argument
from tfllm.layers import RelativePositionBias, RMSNorm, TokenEmbedding, attention_mask
from tfllm.models.backbone import Backbone
from tfllm.models.decoder import run_blocks
from tfllm.models.inputs import unpack_inputs
from tfllm.models.t5.block import T5Block, T5DecoderBlock


def unpack_seq2seq_inputs(inputs, decoder_start_token_id):
    """Returns `(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)` as int32.

    Args:
        inputs: a dict with "input_ids" and optionally "attention_mask", "decoder_input_ids" and
            "decoder_attention_mask" (transformers' names).
        decoder_start_token_id: the decoder's input when "decoder_input_ids" is absent (the decoder
            then runs one step, on the start token alone).
    """
    if not isinstance(inputs, dict):
        raise invalid_argument(
            "inputs", "a dict with 'input_ids' (and 'decoder_input_ids', 'attention_mask', "
            "'decoder_attention_mask')", type(inputs).__name__,
        )
    token_ids, padding_mask = unpack_inputs(inputs)
    decoder_ids = inputs.get("decoder_input_ids")
    if decoder_ids is None:
        decoder_ids = tf.fill([tf.shape(token_ids)[0], 1], decoder_start_token_id)
    decoder_ids, decoder_mask = unpack_inputs(
        {"input_ids": decoder_ids, "attention_mask": inputs.get("decoder_attention_mask")}
    )
    return token_ids, padding_mask, decoder_ids, decoder_mask


@keras.saving.register_keras_serializable(package="tfllm")
class T5Backbone(Backbone):
    """The T5 encoder-decoder: token ids in, the decoder's final hidden states out (transformers' `T5Model`).

    Args:
        vocabulary_size: number of tokens (`vocab_size`).
        num_layers: encoder blocks.
        num_heads: attention heads per block.
        hidden_dim: width of the residual stream (`d_model`).
        intermediate_dim: width of the feed-forward inner layer (`d_ff`).
        head_dim: width of each head (`d_kv`), independent of `hidden_dim / num_heads`.
        num_decoder_layers: decoder blocks. Defaults to `num_layers`.
        relative_attention_num_buckets: buckets of the relative position bias.
        relative_attention_max_distance: distance from which keys share the last bucket.
        layer_norm_epsilon: epsilon of every RMSNorm.
        activation: feed-forward activation: "relu" (T5 v1.0) or "gelu_tanh" (gated in v1.1 / Flan-T5).
        gated_ffn: gated feed-forward, `act(gate(x)) * up(x)`.
        dropout: dropout rate on embeddings, attention, feed-forward and residual branches.
        initializer_factor: scales the initializers as transformers' `initializer_factor` does
            (embeddings N(0, factor), kernels N(0, factor / sqrt(hidden_dim))).
        decoder_start_token_id: the decoder's first input (T5 uses its pad token, 0).

    Call arguments:
        inputs: a dict with `input_ids`, optional `attention_mask`, `decoder_input_ids` and
            `decoder_attention_mask`. Without `decoder_input_ids` the decoder runs on
            `decoder_start_token_id` alone.
        training: enables dropout.
        output_attentions: also return every layer's self-attention probabilities.
        output_hidden_states: also return the embeddings and every layer's output.

    Returns:
        A dict (transformers' `T5Model` names): `"last_hidden_state"`, `(batch_size,
        decoder_length, hidden_dim)`, the decoder's final hidden states, and
        `"encoder_last_hidden_state"`, `(batch_size, length, hidden_dim)`. With the flags,
        `"encoder_hidden_states"` / `"decoder_hidden_states"` and `"encoder_attentions"` /
        `"decoder_attentions"`, per stack as `tfllm.models.decoder.run_blocks` returns them.

    Example:
    >>> backbone = T5Backbone(vocabulary_size=100, num_layers=2, num_heads=3, hidden_dim=16,
    ...                       intermediate_dim=32, head_dim=8)
    >>> batch = {"input_ids": np.array([[5, 6, 1]]), "decoder_input_ids": np.array([[0, 7]])}
    >>> tuple(backbone(batch)["last_hidden_state"].shape)
    (1, 2, 16)
    """

    model_type = "t5"

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        head_dim=None,
        num_decoder_layers=None,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        layer_norm_epsilon=1e-6,
        activation="relu",
        gated_ffn=False,
        dropout=0.0,
        initializer_factor=1.0,
        decoder_start_token_id=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = check_int("num_layers", num_layers, minimum=1)
        self.num_decoder_layers = check_int(
            "num_decoder_layers", num_layers if num_decoder_layers is None else num_decoder_layers, minimum=1
        )
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.head_dim = check_int("head_dim", head_dim or hidden_dim // num_heads, minimum=1)
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.relative_attention_max_distance = relative_attention_max_distance
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.gated_ffn = gated_ffn
        self.dropout = dropout
        self.initializer_factor = initializer_factor
        self.decoder_start_token_id = check_int("decoder_start_token_id", decoder_start_token_id, minimum=0)

        # === Layers ===
        policy = self.dtype_policy
        kernel_std = initializer_factor * hidden_dim**-0.5
        self.token_embedding = TokenEmbedding(
            vocabulary_size, hidden_dim, initializer_factor, dtype=policy, name="token_embedding"
        )
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=policy, name="dropout")
        bias = dict(num_buckets=relative_attention_num_buckets, max_distance=relative_attention_max_distance,
                    initializer_range=kernel_std, dtype=policy)
        self.encoder_position_bias = RelativePositionBias(
            num_heads, bidirectional=True, name="encoder_position_bias", **bias
        )
        self.decoder_position_bias = RelativePositionBias(
            num_heads, bidirectional=False, name="decoder_position_bias", **bias
        )
        block = dict(head_dim=self.head_dim, layer_norm_epsilon=layer_norm_epsilon, activation=activation,
                     gated_ffn=gated_ffn, dropout=dropout, initializer_range=kernel_std, dtype=policy)
        self.encoder_layers = [
            T5Block(num_heads, hidden_dim, intermediate_dim, name=f"encoder_layer_{i}", **block)
            for i in range(self.num_layers)
        ]
        self.decoder_layers = [
            T5DecoderBlock(num_heads, hidden_dim, intermediate_dim, name=f"decoder_layer_{i}", **block)
            for i in range(self.num_decoder_layers)
        ]
        self.encoder_norm = RMSNorm(layer_norm_epsilon, dtype=policy, name="encoder_norm")
        self.decoder_norm = RMSNorm(layer_norm_epsilon, dtype=policy, name="decoder_norm")

    def build(self, input_shape=None):
        if self.built:
            return
        hidden_shape = (None, None, self.hidden_dim)
        self.token_embedding.build()
        self.encoder_position_bias.build()
        self.decoder_position_bias.build()
        for block in self.encoder_layers + self.decoder_layers:
            block.build(hidden_shape)
        self.encoder_norm.build(hidden_shape)
        self.decoder_norm.build(hidden_shape)
        self.built = True

    def call(self, inputs, training=None, output_attentions=False, output_hidden_states=False):
        token_ids, padding_mask, decoder_ids, decoder_mask = unpack_seq2seq_inputs(
            inputs, self.decoder_start_token_id
        )
        flags = dict(output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        encoded = self.encode(token_ids, padding_mask, training=training, **flags)
        decoded = self.decode(decoder_ids, decoder_mask, padding_mask, encoder_output=encoded["last_hidden_state"],
                              training=training, **flags)
        outputs = {"last_hidden_state": decoded.pop("last_hidden_state"),
                   "encoder_last_hidden_state": encoded.pop("last_hidden_state")}
        outputs.update({f"encoder_{key}": value for key, value in encoded.items()})
        outputs.update({f"decoder_{key}": value for key, value in decoded.items()})
        return outputs

    def encode(self, token_ids, padding_mask, training=None, output_attentions=False, output_hidden_states=False):
        """The encoder: `(batch_size, length)` ids and padding mask → the dict of `run_blocks`.

        Padding may be on either side: the bias depends only on distances between tokens.

        Returns:
            `"last_hidden_state"`, `(batch_size, length, hidden_dim)`, and what the flags ask for.
        """
        positions = tf.range(tf.shape(token_ids)[1])
        bias = self.encoder_position_bias(positions, positions)  # (1, nh, S, S)
        mask = tf.cast(padding_mask, tf.bool)[:, None, :]  # (B, 1, S): every query sees every real key
        x = self.dropout_layer(self.token_embedding(token_ids), training=training)
        outputs = run_blocks(
            self.encoder_layers, x, final_norm=self.encoder_norm, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, attention_mask=mask, attention_bias=bias, training=training,
        )
        outputs["last_hidden_state"] = self.dropout_layer(outputs["last_hidden_state"], training=training)
        return outputs

    def decode(self, token_ids, padding_mask, encoder_mask, encoder_output=None, cross_cache=None, cache=None,
               cache_index=0, training=None, output_attentions=False, output_hidden_states=False):
        """The decoder, over a full sequence or one step of a preallocated cache.

        Args:
            token_ids: `(batch_size, length)` decoder input ids.
            padding_mask: `(batch_size, key_length)` int32; `key_length` is `length` for a full
                pass and the cache length with a cache.
            encoder_mask: `(batch_size, encoder_length)` padding mask of the encoder's input.
            encoder_output: `(batch_size, encoder_length, hidden_dim)`; not needed with `cross_cache`.
            cross_cache: per-layer cross-attention keys and values (`cross_caches`), or None.
            cache: per-layer `(batch_size, 2, cache_length, num_heads, head_dim)` self-attention
                caches (`init_cache`), or None for a full pass.
            cache_index: position of `token_ids[:, 0]` in the cache.
            training: enables dropout.
            output_attentions: also return every layer's self-attention probabilities.
            output_hidden_states: also return the embeddings and every layer's output.

        Returns:
            The dict of `run_blocks`: `"last_hidden_state"` `(batch_size, length, hidden_dim)`,
            `"cache"` (the updated cache) when `cache` is given, and what the flags ask for.
        """
        length, key_length = tf.shape(token_ids)[1], tf.shape(padding_mask)[1]
        mask = attention_mask(padding_mask, length, cache_index)  # (B, T, S) causal
        bias = self.decoder_position_bias(tf.range(length) + cache_index, tf.range(key_length))  # (1, nh, T, S)
        context_mask = tf.cast(encoder_mask, tf.bool)[:, None, :]  # (B, 1, S_enc)
        x = self.dropout_layer(self.token_embedding(token_ids), training=training)
        outputs = run_blocks(
            self.decoder_layers, x, final_norm=self.decoder_norm, cache=cache, per_block={"cross_cache": cross_cache},
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, attention_mask=mask,
            attention_bias=bias, cache_index=cache_index, context=encoder_output, context_mask=context_mask,
            training=training,
        )
        outputs["last_hidden_state"] = self.dropout_layer(outputs["last_hidden_state"], training=training)
        return outputs

    def init_cache(self, batch_size, cache_length):
        """A zero self-attention cache: one `(batch_size, 2, cache_length, num_heads, head_dim)` per decoder layer."""
        shape = [batch_size, 2, cache_length, self.num_heads, self.head_dim]
        return tuple(tf.zeros(shape, self.compute_dtype) for _ in self.decoder_layers)

    def cross_caches(self, encoder_output):
        """Each decoder layer's cross-attention keys and values, computed once per input.

        Returns:
            A tuple of `(batch_size, 2, encoder_length, num_heads, head_dim)`, one per decoder layer.
        """
        return tuple(block.cross_attention.context_cache(encoder_output) for block in self.decoder_layers)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            head_dim=self.head_dim,
            num_decoder_layers=self.num_decoder_layers,
            relative_attention_num_buckets=self.relative_attention_num_buckets,
            relative_attention_max_distance=self.relative_attention_max_distance,
            layer_norm_epsilon=self.layer_norm_epsilon,
            activation=self.activation,
            gated_ffn=self.gated_ffn,
            dropout=self.dropout,
            initializer_factor=self.initializer_factor,
            decoder_start_token_id=self.decoder_start_token_id,
        )
        return config
