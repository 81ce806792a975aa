"""Looking inside a model: one layer's attention map for a text, and a heatmap of it.

>>> tok, model = tfllm.AutoTokenizer.from_pretrained(path), tfllm.AutoModel.from_pretrained(path)
>>> result = attention_map(model, tok, "The bank raised the interest rate", layer=2, head=1)
>>> plot_attention(result["tokens"], result["attention"], "attention.png", title="layer 2, head 1")
"""

import logging
import numbers
import os

import numpy as np

from tfllm.errors import invalid_argument

logger = logging.getLogger(__name__)

# The `head` value that averages the heads.
ALL_HEADS = "all"


def attention_map(model, tokenizer, text, layer=None, head=0):
    """The attention probabilities of one layer and head (or the heads' mean) for one text.

    Args:
        model: a backbone or task model of any family (`tfllm.AutoModel.from_pretrained(...)`).
        tokenizer: the model's tokenizer.
        text: the string to run.
        layer: 0-based layer; negative values count from the end. Defaults to the last layer.
        head: 0-based head, or "all" for the mean over the heads.

    Returns:
        A dict: `"tokens"`, the `sequence_length` token strings (special tokens included);
        `"attention"`, a `(sequence_length, sequence_length)` float32 array whose row i holds how
        query token i attends to each key token (rows sum to 1); `"layer"` (non-negative) and
        `"head"` as used.
    """
    backbone = getattr(model, "backbone", model)
    layer = _check_index("layer", backbone.num_layers, "layers", -1 if layer is None else layer, negative=True)
    if head != ALL_HEADS:
        head = _check_index("head", backbone.num_heads, "heads", head, extra=f", or {ALL_HEADS!r} for their mean")
    batch = tokenizer([text], return_tensors="np")
    probabilities = np.asarray(_attentions(model, batch)[layer][0])  # (nh, T, T)
    attention = probabilities.mean(axis=0) if head == ALL_HEADS else probabilities[head]
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    return {"tokens": tokens, "attention": attention.astype(np.float32), "layer": layer, "head": head}


def _attentions(model, batch):
    """Every layer's attention probabilities over the text: a task model's `inspect`, a backbone's flag.

    An encoder-decoder gives its encoder's (the text's tokens attending to each other).
    """
    if hasattr(model, "inspect"):  # a task model
        outputs = model.inspect(batch, output_attentions=True)
    else:
        outputs = model(batch, output_attentions=True)
    return outputs["encoder_attentions" if "encoder_attentions" in outputs else "attentions"]


def _check_index(name, count, noun, value, negative=False, extra=""):
    """Returns `value` as an index into `count` items, or raises naming `name` and the valid range."""
    low = -count if negative else 0
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value < count:
        note = "; negative values count from the end" if negative else ""
        expected = f"an integer from 0 to {count - 1} (the model has {count} {noun}{note}){extra}"
        raise invalid_argument(name, expected, value)
    return int(value) % count


def attention_title(model_name, layer, head):
    """The heatmap's title, e.g. "all-MiniLM-L6-v2: layer 2, head 1"."""
    heads = "mean of the heads" if head == ALL_HEADS else f"head {head}"
    return f"{model_name}: layer {layer}, {heads}"


def plot_attention(tokens, attention, path, title=None):
    """Writes an attention map as a PNG heatmap: queries down the rows, keys along the columns.

    Needs matplotlib (`pip install 'tfllm[viz]'`); it draws on the Agg canvas without touching
    `pyplot`'s global state.

    Args:
        tokens: the `sequence_length` token strings, the labels of both axes.
        attention: `(sequence_length, sequence_length)` probabilities, row i = query token i.
        path: the PNG file to write; missing parent folders are created.
        title: the figure's title.

    Returns:
        `path`.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("Drawing attention maps needs matplotlib: pip install 'tfllm[viz]'") from error
    attention = np.asarray(attention)
    if attention.shape != (len(tokens), len(tokens)):
        raise invalid_argument(
            "attention", f"a square array with one row per token ({len(tokens)})", f"array of shape {attention.shape}"
        )
    side = min(4.0 + 0.35 * len(tokens), 40.0)  # inches: room for the tick labels, bounded for long texts
    figure = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(attention, cmap="viridis", vmin=0.0, interpolation="nearest")
    positions = np.arange(len(tokens))
    axes.set_xticks(positions, labels=tokens, rotation=90)
    axes.set_yticks(positions, labels=tokens)
    axes.set_xlabel("key (attended to)")
    axes.set_ylabel("query (attending)")
    if title:
        axes.set_title(title)
    figure.colorbar(image, ax=axes, label="attention probability")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    figure.savefig(path, format="png", dpi=120, bbox_inches="tight")
    logger.info("Wrote the attention map to %s", path)
    return path
