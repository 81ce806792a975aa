"""Every exported signature: its name, inputs and outputs with dtypes and shapes, defined once.

Export, serving and the tests import these names; the README's table is `markdown_table()`.
A shape uses None for a free dimension: `(None,)` is one value per prompt, `()` a scalar.
Inputs with a default may be left out of a request (the SavedModel's SignatureDef carries the
default, and `tfllm serve` honours it).
"""

import dataclasses

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
GENERATED_TEXT = "generated_text"
COMPLETION = "completion"
OUTPUT_IDS = "output_ids"
EMBEDDINGS = "embeddings"
SCORES = "scores"
LABELS = "labels"
TOKENS = "tokens"
INPUT_POS = "input_pos"
KV_CACHE = "kv_cache_{kind}_{layer}"  # kind "k" or "v"; one input and one output per layer
# ONNX gives every value one name, so an updated cache cannot be called like its input.
KV_CACHE_OUT = KV_CACHE + "_out"
SEQUENCE_OUTPUT = "sequence_output"  # encoders: (batch, seq, hidden) final hidden states
POOLED_OUTPUT = "pooled_output"  # BERT's tanh pooler on the first token

# === Files ===
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
TOKENIZER_ASSETS = "assets.extra/tokenizer"
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


def saved_model_signatures(kind, default_max_new_tokens=32):
    """The SavedModel signatures for a model kind: "causal_lm", "seq2seq", "encoder" or "classifier"."""
    generation = generation_inputs(default_max_new_tokens)
    text_out = (
        Tensor(GENERATED_TEXT, "string", (None,), doc="prompt + continuation, as transformers' pipeline"),
        Tensor(COMPLETION, "string", (None,), doc="the continuation only"),
    )
    if kind in ("causal_lm", "seq2seq"):
        return (
            Signature(SERVING_DEFAULT, (_TEXT_IN, *generation), text_out, "generate text from text", kind),
            Signature(GENERATE_IDS, (*_IDS_IN, *generation), (Tensor(OUTPUT_IDS, "int32", (None, None)),),
                      "generate token ids from token ids", kind),
            Signature(LOGITS, _IDS_IN, (Tensor(LOGITS, "float32", (None, None, None)),),
                      "logits of every position", kind),
        )
    embed = Signature(EMBED, (_TEXT_IN,), (Tensor(EMBEDDINGS, "float32", (None, None)),),
                      "pooled sentence embeddings", kind)
    if kind == "encoder":
        return (embed,)
    if kind == "classifier":
        classify = Signature(
            CLASSIFY, (_TEXT_IN,),
            (Tensor(SCORES, "float32", (None, None), doc="softmax over labels"),
             Tensor(LABELS, "string", (None,), doc="the top label")),
            "class scores and labels", kind,
        )
        return (classify, embed)
    raise ValueError(
        f"Invalid value for argument `kind`. Expected one of causal_lm, seq2seq, encoder, classifier. Received: kind={kind!r}"
    )


def markdown_table(kinds=("causal_lm", "seq2seq", "encoder", "classifier")):
    """The README's table of SavedModel signatures."""
    rows = ["| models | signature | inputs | outputs |", "|---|---|---|---|"]
    seen = {}
    for kind in kinds:
        for signature in saved_model_signatures(kind):
            seen.setdefault((signature.name, signature.inputs, signature.outputs), []).append(kind)
    for (name, inputs, outputs), models in seen.items():
        ins = ", ".join(
            f"`{t.name}` {t.dtype}{list(t.shape)}" + (f" = {t.default}" if t.default is not None else "") for t in inputs
        )
        outs = ", ".join(f"`{t.name}` {t.dtype}{list(t.shape)}" for t in outputs)
        rows.append(f"| {', '.join(models)} | `{name}` | {ins} | {outs} |")
    return "\n".join(rows)
