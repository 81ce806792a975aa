"""The `tf.Module`s whose functions become a SavedModel's signatures (names in `signatures.py`)."""

import inspect

import tensorflow as tf

from tfllm.checkpoints.sentence_config import PLAIN_FOLDER_POOLING
from tfllm.errors import invalid_argument
from tfllm.export import signatures as sig
from tfllm.generation.loop import decode
from tfllm.generation.protocol import DecodeState
from tfllm.layers.pooling import POOLING_MODES, pool
from tfllm.models import tasks
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


class Serving(tf.Module):
    """The base of the serving modules: `functions` maps signature names to `tf.function`s."""

    kind = None

    def _signature_functions(self, methods):
        """`{name: tf.function}` for this kind's signatures (`signatures.py`), from `{name: method}`."""
        return {s.name: self._with_defaults(methods[s.name], s) for s in self.signature_defs}

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


class CausalLMServing(Serving):
    """Signatures of a causal LM: `serving_default` (text → text), `generate_ids`, `logits`.

    Args:
        model: a `tfllm.models.CausalLM`.
        tokenizer: its `tfllm.tokenizers.Tokenizer`; an in-graph copy is built from it.
        max_new_tokens: the default of the `max_new_tokens` input.
    """

    kind = tasks.CAUSAL_LM

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
        self.num_layers = len(model.init_cache(1, 1)) if self.kind == tasks.CAUSAL_LM else None  # for stream_decode
        self.signature_defs = sig.saved_model_signatures(self.kind, max_new_tokens)
        self.functions = self._signature_functions({
            sig.SERVING_DEFAULT: self._generate_text, sig.GENERATE_IDS: self._generate_ids, sig.LOGITS: self._logits,
            sig.STREAM_PREFILL: self._stream_prefill, sig.STREAM_DECODE: self._stream_decode,
        })

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


    def _stream_prefill(self, input_ids, attention_mask, max_new_tokens):
        ids, mask = left_align(input_ids, attention_mask)
        with tf.control_dependencies(self._check_length(mask, max_new_tokens)):
            logits, state, _ = self.model.prefill(ids, mask, max_new_tokens)
        return {sig.LOGITS: tf.cast(logits, tf.float32), sig.KV_CACHE_TENSOR: tf.stack(state.cache, axis=0),
                sig.PADDING_MASK: state.padding_mask, sig.PROMPT_LENGTH: state.prompt_length[0]}

    def _stream_decode(self, token, step, kv_cache, padding_mask, prompt_length):
        batch = tf.shape(token)[0]
        state = DecodeState(tuple(tf.unstack(kv_cache, num=self.num_layers, axis=0)), padding_mask,
                            tf.fill([batch], prompt_length))
        logits, state = self.model.decode_step(token, step, state)
        return {sig.LOGITS: tf.cast(logits, tf.float32), sig.KV_CACHE_TENSOR: tf.stack(state.cache, axis=0)}


class Seq2SeqServing(CausalLMServing):
    """Signatures of an encoder-decoder (T5): `serving_default` (text → text), `generate_ids`, `logits`.

    The same inputs and defaults as a causal LM. The text is encoded as the tokenizer does (T5
    appends `</s>`), the encoder input is left-padded (relative positions make that equal to the
    right-padded batch), and `generated_text` and `completion` both hold the decoded target
    (special tokens skipped), as transformers' text2text pipeline returns it. `generate_ids`
    returns the decoder start token then the new tokens, as `model.generate` does; `logits` takes
    `decoder_input_ids` and `decoder_attention_mask` too (teacher forcing).

    Args:
        model: a `tfllm.models.T5Seq2SeqLM` (or any model with `prefill`/`decode_step` and a
            `{input_ids, attention_mask, decoder_input_ids, decoder_attention_mask}` call).
        tokenizer: its `tfllm.tokenizers.Tokenizer`, with its `spiece.model` (see `in_graph.SentencePiece`).
        max_new_tokens: the default of the `max_new_tokens` input.
    """

    kind = tasks.SEQ2SEQ_LM

    def _encode(self, text):
        return left_pad(self.codec.tokenize(text, add_special_tokens=True), self.pad_id)

    def _generate_text(self, text, max_new_tokens, do_sample, temperature, top_k, top_p, seed):
        ids, mask = self._encode(text)
        output = self._run(ids, mask, max_new_tokens, do_sample, temperature, top_k, top_p, seed)
        generated = self.codec.detokenize(output[:, 1:])  # after the decoder start token
        return {sig.GENERATED_TEXT: generated, sig.COMPLETION: generated}

    def _logits(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask):
        logits = self.model({"input_ids": input_ids, "attention_mask": attention_mask,
                             "decoder_input_ids": decoder_input_ids, "decoder_attention_mask": decoder_attention_mask})
        return {sig.LOGITS: tf.cast(logits, tf.float32)}


def pooling_config(pooling=None):
    """The `embed` signature's pooling: `{"pooling", "normalize", "max_seq_length", "do_lower_case"}`.

    Args:
        pooling: None (mean pooling, no normalization); a mode of `POOLING_MODES` or a list of them;
            or a dict as `tfllm.checkpoints.sentence_config.sentence_transformers_config` returns
            (missing keys take the plain-folder defaults).
    """
    config = dict(PLAIN_FOLDER_POOLING)
    if isinstance(pooling, dict):
        unknown = sorted(set(pooling) - set(config))
        if unknown:
            raise invalid_argument("pooling", f"a dict with keys from {sorted(config)}", pooling)
        config.update(pooling)
    elif pooling is not None:
        config["pooling"] = pooling
    modes = config["pooling"]
    modes = (modes,) if isinstance(modes, str) else modes
    if not isinstance(modes, (list, tuple)) or not modes or any(m not in POOLING_MODES for m in modes):
        raise invalid_argument("pooling", f"None, a mode of {POOLING_MODES}, a list of them, or a "
                               "sentence-transformers config dict", pooling)
    config["pooling"] = tuple(modes)
    return config


class EncoderServing(Serving):
    """Signature of an encoder's backbone: `embed` (text → pooled sentence embeddings).

    The text is tokenized in the graph (`tfllm.tokenizers.in_graph`, special tokens added), truncated to the
    pooling config's `max_seq_length` (else the tokenizer's `model_max_length`), lower-cased first
    when the config says `do_lower_case`, run through the encoder, pooled with
    `tfllm.layers.pooling.pool` and L2-normalized when the config says so: the computation of
    `tfllm.pipeline("sentence-embeddings")` and sentence-transformers' `encode`.

    Args:
        model: an encoder's backbone (`tfllm.AutoModel` on an encoder folder); its `"last_hidden_state"`
            is pooled.
        tokenizer: its `tfllm.tokenizers.Tokenizer`, one that `in_graph` can encode.
        pooling: see `pooling_config`.
    """

    kind = tasks.BACKBONE

    def __init__(self, model, tokenizer, pooling=None):
        super().__init__(name="tfllm_serving")
        self.model = model
        self.codec = in_graph.from_tokenizer(tokenizer)
        if not hasattr(self.codec, "encode"):
            raise NotImplementedError(
                f"The {sig.EMBED} signature needs a tokenizer that encodes in the graph; this one is "
                f"{type(self.codec).__name__}."
            )
        self.pooling = pooling_config(pooling)
        self.max_seq_length = self.pooling["max_seq_length"] or self.codec.max_length
        self.signature_defs = sig.saved_model_signatures(self.kind)
        self.functions = self._signature_functions(self._methods())

    def _methods(self):
        return {sig.EMBED: self._embed}

    def _backbone(self):
        return self.model

    def _inputs(self, text, max_length=None):
        ids, mask = self.codec.encode(text, max_length)  # (B, T) right-padded
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tf.zeros_like(ids)}

    def _embed(self, text):
        # sentence-transformers also strips the texts; WordPiece ignores surrounding whitespace anyway.
        if self.pooling["do_lower_case"]:
            text = tf.strings.lower(text, encoding="utf-8")
        inputs = self._inputs(text, self.max_seq_length)
        hidden = self._backbone()(inputs)["last_hidden_state"]  # (B, T, hidden_dim)
        embeddings = pool(hidden, inputs["attention_mask"], self.pooling["pooling"])
        if self.pooling["normalize"]:
            embeddings = embeddings / tf.maximum(tf.norm(embeddings, axis=-1, keepdims=True), 1e-12)
        return {sig.EMBEDDINGS: embeddings}


class ClassifierServing(EncoderServing):
    """Signatures of a sequence classifier: `classify` (text → `scores`, `labels`) and `embed`.

    `scores` are the softmax of the logits (a sigmoid when there is one label, as transformers'
    text-classification pipeline does), `labels` the top label's name from `id2label`. `embed`
    pools the backbone's last hidden states as `EncoderServing` does (mean pooling by default),
    not the classifier's tanh pooler output.

    Args:
        model: a sequence classifier (`tfllm.AutoModelForSequenceClassification`) with `backbone`,
            `num_labels` and `id2label`.
        tokenizer: its `tfllm.tokenizers.Tokenizer` (WordPiece).
        pooling: the `embed` signature's pooling, see `pooling_config`.
    """

    kind = tasks.SEQUENCE_CLASSIFICATION

    def __init__(self, model, tokenizer, pooling=None):
        super().__init__(model, tokenizer, pooling)
        id2label = getattr(model, "id2label", None) or {}
        self.label_names = tuple(str(id2label.get(i, f"LABEL_{i}")) for i in range(model.num_labels))

    def _methods(self):
        return {sig.CLASSIFY: self._classify, sig.EMBED: self._embed}

    def _backbone(self):
        return self.model.backbone

    def _classify(self, text):
        logits = tf.cast(self.model(self._inputs(text)), tf.float32)  # (B, num_labels)
        scores = tf.sigmoid(logits) if len(self.label_names) == 1 else tf.nn.softmax(logits, axis=-1)
        best = tf.argmax(scores, axis=-1, output_type=tf.int32)
        return {sig.SCORES: scores, sig.LABELS: tf.gather(tf.constant(list(self.label_names)), best)}
