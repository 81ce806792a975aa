"""Every exported signature: its name, inputs and outputs with dtypes and shapes, defined once.

Export, serving and the tests import these names; the README's table is `markdown_table()`.
A shape uses None for a free dimension: `(None,)` is one value per prompt, `()` a scalar.
Inputs with a default may be left out of a request (the SavedModel's SignatureDef carries the
default, and `tfllm serve` honours it).
"""

import dataclasses

from tfllm.models import tasks

# === SavedModel signature names ===
SERVING_DEFAULT = "serving_default"  # text in, text out (causal LM and seq2seq)
GENERATE_IDS = "generate_ids"  # token ids in, token ids out
LOGITS = "logits"  # token ids in, next-token logits out
EMBED = "embed"  # encoders: text in, pooled embedding out
CLASSIFY = "classify"  # classifiers: text in, scores and label strings out

# === TFLite / ONNX signature names (the prefill/decode pair LiteRT-LM and ai-edge-torch use) ===
PREFILL = "prefill"
DECODE = "decode"
ENCODE = "encode"  # encoders (BERT): one fixed-length forward

# Token-by-token generation for servers that stream (tfllm serve): the KV cache goes in and out.
STREAM_PREFILL = "stream_prefill"
STREAM_DECODE = "stream_decode"

# === Input and output names ===
TEXT = "text"
MAX_NEW_TOKENS = "max_new_tokens"
DO_SAMPLE = "do_sample"
TEMPERATURE = "temperature"
TOP_K = "top_k"
TOP_P = "top_p"
SEED = "seed"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
DECODER_INPUT_IDS = "decoder_input_ids"  # seq2seq `logits`: the decoder's inputs (start token first)
DECODER_ATTENTION_MASK = "decoder_attention_mask"
GENERATED_TEXT = "generated_text"
COMPLETION = "completion"
OUTPUT_IDS = "output_ids"
EMBEDDINGS = "embeddings"
SCORES = "scores"
LABELS = "labels"
TOKENS = "tokens"
TOKEN = "token"
STEP = "step"
KV_CACHE_TENSOR = "kv_cache"  # all layers' keys and values, (num_layers, batch, 2, cache_length, kv_heads, head_dim)
PADDING_MASK = "padding_mask"
PROMPT_LENGTH = "prompt_length"
INPUT_POS = "input_pos"
KV_CACHE = "kv_cache_{kind}_{layer}"  # kind "k" or "v"; one input and one output per layer
# ONNX gives every value one name, so an updated cache cannot be called like its input.
KV_CACHE_OUT = KV_CACHE + "_out"
SEQUENCE_OUTPUT = "sequence_output"  # encoders: (batch, seq, hidden) final hidden states
POOLED_OUTPUT = "pooled_output"  # BERT's tanh pooler on the first token

# === Files ===
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
TOKENIZER_ASSETS = "assets.extra/tokenizer"
# {"max_positions": N}: lets a server refuse an over-long prompt before the graph tokenizes it
LIMITS_FILE = "assets.extra/tfllm_limits.json"
ONNX_FILE = "{signature}.onnx"  # one file per signature inside the folder `tfllm.export.onnx` writes


def kv_cache_name(kind, layer):
    """The TFLite/ONNX name of one layer's key ("k") or value ("v") cache."""
    return KV_CACHE.format(kind=kind, layer=layer)


def kv_cache_output_name(kind, layer):
    """The ONNX name of one layer's updated key ("k") or value ("v") cache."""
    return KV_CACHE_OUT.format(kind=kind, layer=layer)


def kv_cache_names(num_layers):
    """Every cache input in ai-edge-torch's order: `kv_cache_k_0, kv_cache_v_0, kv_cache_k_1, ...`."""
    return [kv_cache_name(kind, layer) for layer in range(num_layers) for kind in ("k", "v")]


def onnx_file(signature):
    """The file name of one signature of an ONNX export: `prefill.onnx`, `decode.onnx`, ..."""
    return ONNX_FILE.format(signature=signature)


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One input or output of a signature."""

    name: str
    dtype: str
    shape: tuple
    default: object = None
    doc: str = ""


@dataclasses.dataclass(frozen=True)
class Signature:
    """A named function of an exported model."""

    name: str
    inputs: tuple
    outputs: tuple
    doc: str = ""
    models: str = ""


_TEXT_IN = Tensor(TEXT, "string", (None,), doc="prompts, UTF-8")
_IDS_IN = (
    Tensor(INPUT_IDS, "int32", (None, None), doc="token ids, padded on either side"),
    Tensor(ATTENTION_MASK, "int32", (None, None), doc="1 for real tokens, 0 for padding"),
)


def generation_inputs(default_max_new_tokens):
    """The sampling inputs that `serving_default` and `generate_ids` accept, with their defaults."""
    return (
        Tensor(MAX_NEW_TOKENS, "int32", (), default_max_new_tokens, "tokens to add"),
        Tensor(DO_SAMPLE, "bool", (), False, "sample instead of greedy decoding"),
        Tensor(TEMPERATURE, "float32", (), 1.0, "divides the logits before sampling"),
        Tensor(TOP_K, "int32", (), 0, "sample among the k most likely tokens; 0 disables"),
        Tensor(TOP_P, "float32", (), 1.0, "nucleus sampling threshold in (0, 1]"),
        Tensor(SEED, "int32", (), -1, "sampling seed; -1 draws a fresh one"),
    )


_DECODER_IN = (
    Tensor(DECODER_INPUT_IDS, "int32", (None, None), doc="decoder inputs: the start token, then the targets so far"),
    Tensor(DECODER_ATTENTION_MASK, "int32", (None, None), doc="1 for real decoder tokens, 0 for padding on the right"),
)


def _stream_signatures(kind):
    """`stream_prefill` / `stream_decode`: one token at a time, with the cache passed in and out."""
    cache = Tensor(KV_CACHE_TENSOR, "float32", (None, None, 2, None, None, None),
                   doc="(layers, batch, 2, cache_length, kv_heads, head_dim)")
    mask = Tensor(PADDING_MASK, "int32", (None, None), doc="prompt mask + ones for the new tokens")
    length = Tensor(PROMPT_LENGTH, "int32", (), doc="the (left-padded) prompt width")
    next_logits = Tensor(LOGITS, "float32", (None, None), doc="next-token logits")
    return (
        Signature(STREAM_PREFILL, (*_IDS_IN, Tensor(MAX_NEW_TOKENS, "int32", (), doc="room left in the cache")),
                  (next_logits, cache, mask, length), "run left-padded prompts into a fresh cache", kind),
        Signature(STREAM_DECODE, (Tensor(TOKEN, "int32", (None,)), Tensor(STEP, "int32", (), doc="0 for the first new token"),
                                  cache, mask, length),
                  (next_logits, cache), "feed one token per row, get the next logits", kind),
    )


# The models a SavedModel export takes, by their task (`tfllm.models.tasks`); `BACKBONE` is an
# encoder's backbone (`is_encoder`).
KINDS = (tasks.CAUSAL_LM, tasks.SEQ2SEQ_LM, tasks.BACKBONE, tasks.SEQUENCE_CLASSIFICATION)


def saved_model_signatures(kind, default_max_new_tokens=32):
    """The SavedModel signatures for a model's task, one of `KINDS`.

    The first signature of a kind is the one its warmup records call.
    """
    generation = generation_inputs(default_max_new_tokens)
    if kind == tasks.CAUSAL_LM:
        return (
            Signature(SERVING_DEFAULT, (_TEXT_IN, *generation), (
                Tensor(GENERATED_TEXT, "string", (None,), doc="prompt + continuation, as transformers' pipeline"),
                Tensor(COMPLETION, "string", (None,), doc="the continuation only"),
            ), "generate text from text", kind),
            Signature(GENERATE_IDS, (*_IDS_IN, *generation), (Tensor(OUTPUT_IDS, "int32", (None, None)),),
                      "generate token ids from token ids", kind),
            Signature(LOGITS, _IDS_IN, (Tensor(LOGITS, "float32", (None, None, None)),),
                      "logits of every position", kind),
            *_stream_signatures(kind),
        )
    if kind == tasks.SEQ2SEQ_LM:
        return (
            # An encoder-decoder's output does not repeat its input: both outputs hold the decoded
            # target, as transformers' text2text pipeline's `generated_text` does.
            Signature(SERVING_DEFAULT, (_TEXT_IN, *generation), (
                Tensor(GENERATED_TEXT, "string", (None,), doc="the generated target, as transformers' text2text pipeline"),
                Tensor(COMPLETION, "string", (None,), doc="the same text (seq2seq output has no prompt to cut off)"),
            ), "generate text from text", kind),
            Signature(GENERATE_IDS, (*_IDS_IN, *generation),
                      (Tensor(OUTPUT_IDS, "int32", (None, None), doc="the decoder start token, then the new tokens"),),
                      "generate token ids from token ids", kind),
            Signature(LOGITS, (*_IDS_IN, *_DECODER_IN), (Tensor(LOGITS, "float32", (None, None, None)),),
                      "logits of every decoder position (teacher forcing)", kind),
        )
    embed = Signature(EMBED, (_TEXT_IN,), (Tensor(EMBEDDINGS, "float32", (None, None), doc="(batch, hidden) pooled"),),
                      "pooled sentence embeddings", kind)
    if kind == tasks.BACKBONE:
        return (embed,)
    if kind == tasks.SEQUENCE_CLASSIFICATION:
        classify = Signature(
            CLASSIFY, (_TEXT_IN,),
            (Tensor(SCORES, "float32", (None, None), doc="softmax over labels (sigmoid for one label)"),
             Tensor(LABELS, "string", (None,), doc="the top label, from id2label")),
            "class scores and labels", kind,
        )
        return (classify, embed)
    raise ValueError(f"Invalid value for argument `kind`. Expected one of {', '.join(KINDS)}. Received: kind={kind!r}")


def markdown_table(kinds=KINDS):
    """The README's table of SavedModel signatures."""
    rows = ["| models | signature | inputs | outputs |", "|---|---|---|---|"]
    seen = {}
    for kind in kinds:
        for signature in saved_model_signatures(kind):
            # Kinds share a row when names, types, shapes and defaults agree (docs may differ).
            key = (signature.name, _summary(signature.inputs), _summary(signature.outputs))
            seen.setdefault(key, (signature, []))[1].append(kind)
    for signature, models in seen.values():
        name, inputs, outputs = signature.name, signature.inputs, signature.outputs
        ins = ", ".join(
            f"`{t.name}` {t.dtype}{list(t.shape)}" + (f" = {t.default}" if t.default is not None else "") for t in inputs
        )
        outs = ", ".join(f"`{t.name}` {t.dtype}{list(t.shape)}" for t in outputs)
        rows.append(f"| {', '.join(models)} | `{name}` | {ins} | {outs} |")
    return "\n".join(rows)


def _summary(tensors):
    return tuple((t.name, t.dtype, t.shape, t.default) for t in tensors)
