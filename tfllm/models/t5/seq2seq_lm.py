"""T5 with its language-model head, for training on (input, target) pairs and for `generate`."""

import keras
import tensorflow as tf

from tfllm.models import tasks
from tfllm.models.lm_head import LMHead, LMHeadTask
from tfllm.models.task import TaskModel


def shift_right(labels, decoder_start_token_id, pad_token_id):
    """Decoder inputs for teacher forcing: `labels` shifted one step right after the start token.

    As transformers' `T5ForConditionalGeneration.prepare_decoder_input_ids_from_labels`, label
    values of -100 (ignored positions) become `pad_token_id`.

    Args:
        labels: `(batch_size, target_length)` int target ids.
        decoder_start_token_id: the first decoder input.
        pad_token_id: replaces -100.

    Returns:
        `(batch_size, target_length)` int32 decoder input ids.
    """
    labels = tf.cast(labels, tf.int32)
    start = tf.fill([tf.shape(labels)[0], 1], tf.cast(decoder_start_token_id, tf.int32))
    shifted = tf.concat([start, labels[:, :-1]], axis=1)
    return tf.where(shifted == -100, tf.cast(pad_token_id, tf.int32), shifted)


@keras.saving.register_keras_serializable(package="tfllm")
class T5Seq2SeqLM(LMHeadTask, TaskModel):
    """T5 language model (transformers' `T5ForConditionalGeneration`): `T5Backbone` + an LM head.

    Args:
        backbone: a `T5Backbone`.
        tie_word_embeddings: project onto the vocabulary with the transposed token embedding, after
            scaling the hidden states by `hidden_dim ** -0.5` (T5 v1.0), instead of a separate
            bias-free `lm_head` (v1.1, Flan-T5).
        eos_token_id: the default id that stops `generate`.
        pad_token_id: the id `generate` writes after a sequence ended, and what -100 labels become
            in `prepare_decoder_input_ids_from_labels`.

    Call arguments:
        inputs: a dict with `input_ids`, optional `attention_mask`, `decoder_input_ids` (targets
            shifted right, see `prepare_decoder_input_ids_from_labels`) and
            `decoder_attention_mask`. Without `decoder_input_ids` the decoder runs on the start
            token alone (the first step's logits).
        training: enables dropout.

    Returns:
        `(batch_size, decoder_length, vocabulary_size)` logits. `inspect` adds the encoder's and
        the decoder's attentions and hidden states (see `T5Backbone`).

    Example:
    >>> model = tfllm.AutoModelForSeq2SeqLM.from_pretrained("path/to/t5")
    >>> batch = tok(["translate English to German: Hello"], return_tensors="tf", padding=True)
    >>> ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=8)
    """

    model_type = "t5"
    is_encoder_decoder = True
    task = tasks.SEQ2SEQ_LM
    export_formats = (tasks.SAVED_MODEL,)
    max_sequence_length = None  # relative positions: no table limits the length

    def __init__(self, backbone, tie_word_embeddings=True, eos_token_id=1, pad_token_id=0, **kwargs):
        super().__init__(backbone, **kwargs)
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        # The tied head sees the states rescaled, as the Mesh TensorFlow T5 did.
        self.lm_head = LMHead(
            backbone.vocabulary_size, tied=self.tie_word_embeddings,
            scale=backbone.hidden_dim**-0.5 if self.tie_word_embeddings else None,
            initializer_range=backbone.initializer_factor, dtype=backbone.dtype_policy, name="lm_head",
        )

    @property
    def decoder_start_token_id(self):
        return self.backbone.decoder_start_token_id

    def prepare_decoder_input_ids_from_labels(self, labels):
        """`labels` shifted right after `decoder_start_token_id`, for `decoder_input_ids` (see `shift_right`)."""
        return shift_right(labels, self.decoder_start_token_id, self.pad_token_id)

    # === Generation (see `tfllm.generation.loop.decode`) ===

    def prefill(self, token_ids, padding_mask, max_new_tokens):
        """Encodes the inputs, precomputes every layer's cross-attention keys and values, and runs the
        decoder on the start token.

        Returns:
            `(logits, state, prefix)`: the first step's logits `(batch_size, vocabulary_size)`, the
            decoding state (all batch-first: encoder padding mask, self- and cross-attention caches)
            and the `(batch_size, 1)` start tokens the output begins with.
        """
        batch_size = tf.shape(token_ids)[0]
        encoder_output = self.backbone.encode(token_ids, padding_mask)["last_hidden_state"]
        state = {
            "encoder_mask": padding_mask,
            "cross_cache": self.backbone.cross_caches(encoder_output),
            "cache": self.backbone.init_cache(batch_size, max_new_tokens),
        }
        start = tf.fill([batch_size, 1], tf.constant(self.decoder_start_token_id, tf.int32))
        logits, state = self._decode_at(start, 0, state)
        return logits, state, start

    def decode_step(self, token, step, state):
        """Feeds the `step`-th new token `(batch_size,)` (decoder position `step + 1`); returns `(logits, state)`."""
        return self._decode_at(token[:, None], step + 1, state)

    def _decode_at(self, token_ids, index, state):
        cache = state["cache"]
        cache_mask = tf.ones([tf.shape(token_ids)[0], tf.shape(cache[0])[2]], tf.int32)
        outputs = self.backbone.decode(
            token_ids, cache_mask, state["encoder_mask"], cross_cache=state["cross_cache"], cache=cache,
            cache_index=index,
        )
        return self.compute_logits(outputs["last_hidden_state"])[:, 0, :], {**state, "cache": outputs["cache"]}

    def task_config(self):
        return {"tie_word_embeddings": self.tie_word_embeddings, "eos_token_id": self.eos_token_id,
                "pad_token_id": self.pad_token_id}
