"""`pipeline(task, model=path)`: inputs and outputs shaped like transformers' pipelines.

>>> generator = tfllm.pipeline("text-generation", model="saved_models/quickstart_hf")
>>> generator("The for statement", max_new_tokens=20)
[{'generated_text': 'The for statement ...'}]
>>> tfllm.pipeline("fill-mask", model=bert_path)("Paris is the [MASK] of France.", top_k=1)
[{'score': 0.9, 'token': 3007, 'token_str': 'capital', 'sequence': 'paris is the capital of france.'}]
>>> tfllm.pipeline("sentence-embeddings", model=minilm_path)(["one", "two"], return_tensors=True).shape
(2, 384)
"""

import logging
import os

import numpy as np

from tfllm.checkpoints import load_config
from tfllm.checkpoints.sentence_config import PLAIN_FOLDER_POOLING, sentence_transformers_config
from tfllm.errors import check_choice, check_int, invalid_argument
from tfllm.layers.pooling import POOLING_MODES, pool
from tfllm.models import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)
from tfllm.tokenizers import AutoTokenizer

logger = logging.getLogger(__name__)

_UNSET = object()  # "argument not given", where None is a meaningful value


class TextGenerationPipeline:
    """Continues prompts with a causal LM.

    Args:
        model: a `CausalLM`.
        tokenizer: its tokenizer.

    Call arguments:
        text: a prompt or a list of prompts.
        return_full_text: include the prompt in `generated_text` (transformers' default).
        **generate_kwargs: passed to `model.generate` (`max_new_tokens`, `do_sample`, `top_p`,
            `repetition_penalty`, `no_repeat_ngram_size`, ...).

    Returns:
        For one prompt, `[{"generated_text": str}]`; for a list, one such list per prompt.
    """

    task = "text-generation"

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    def __call__(self, text, return_full_text=True, **generate_kwargs):
        prompts = [text] if isinstance(text, str) else list(text)
        batch = self.tokenizer(prompts, return_tensors="np", padding=True, padding_side="left")
        ids = self.model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **generate_kwargs).numpy()
        results = []
        for prompt, prompt_ids, row in zip(prompts, batch["input_ids"], ids):
            # Decode the whole row and cut the decoded prompt off, so a character whose bytes span
            # the prompt/continuation boundary decodes whole (as transformers does).
            prompt_text = self.tokenizer.decode(prompt_ids, skip_special_tokens=True)
            continuation = self.tokenizer.decode(row, skip_special_tokens=True)[len(prompt_text):]
            results.append([{"generated_text": prompt + continuation if return_full_text else continuation}])
        return results[0] if isinstance(text, str) else results


# === Shared by the encoder pipelines ===


def _as_rows(inputs, pairs=False):
    """`(rows, is_single)`: rows are `(text, text_pair or None)`; dicts `{"text", "text_pair"}` only if `pairs`."""
    def row(item):
        if isinstance(item, str):
            return item, None
        if pairs and isinstance(item, dict) and isinstance(item.get("text"), str) and set(item) <= {"text", "text_pair"}:
            text_pair = item.get("text_pair")
            if text_pair is None or isinstance(text_pair, str):
                return item["text"], text_pair or None  # transformers encodes an empty pair as none
        expected = "a string, a dict {'text': ..., 'text_pair': ...}" if pairs else "a string"
        raise invalid_argument("inputs", f"{expected} or a non-empty list of them", inputs)

    if isinstance(inputs, (list, tuple)) and inputs:
        return [row(item) for item in inputs], False
    return [row(inputs)], True


def _encoded_batches(tokenizer, rows, batch_size, **tokenizer_kwargs):
    """Yields `(start, numpy batch)` for runs of at most `batch_size` rows, pairs and single texts apart."""
    start = 0
    while start < len(rows):
        is_pair, end = rows[start][1] is not None, start + 1
        while end < len(rows) and end - start < batch_size and (rows[end][1] is not None) == is_pair:
            end += 1
        texts = [text for text, _ in rows[start:end]]
        text_pairs = [pair for _, pair in rows[start:end]] if is_pair else None
        yield start, tokenizer(texts, text_pairs, padding=True, return_tensors="np", **tokenizer_kwargs)
        start = end


def _require_mask_token(tokenizer):
    if tokenizer.mask_token_id is None:
        raise invalid_argument("tokenizer", "a tokenizer with a mask_token (such as [MASK])", tokenizer)
    return tokenizer


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


# === fill-mask ===


class FillMaskPipeline:
    """Predicts the token behind each mask token with a masked LM, as transformers' `FillMaskPipeline`.

    Args:
        model: a masked LM (e.g. `BertMaskedLM`) returning `(batch_size, sequence_length, vocabulary_size)` logits.
        tokenizer: its tokenizer; it must have a `mask_token`.
        top_k: how many predictions per mask (default 5).
        batch_size: texts run through the model at once.

    Call arguments:
        inputs: a text with the mask token (`"Paris is the [MASK] of France."`) or a list of texts.
        top_k: overrides the pipeline's `top_k`.

    Returns:
        Per text, a list of `top_k` dicts `{"score", "token", "token_str", "sequence"}`, best first
        (a list of such lists for a text with several masks). A list of texts gives a list of those
        (a list of one text gives that text's result, as in transformers).
    """

    task = "fill-mask"

    def __init__(self, model, tokenizer, top_k=5, batch_size=8):
        self.model, self.tokenizer = model, _require_mask_token(tokenizer)
        self.top_k = check_int("top_k", top_k, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)

    def __call__(self, inputs, top_k=None):
        top_k = self.top_k if top_k is None else check_int("top_k", top_k, minimum=1)
        rows, is_single = _as_rows(inputs)
        results = []
        for start, batch in _encoded_batches(self.tokenizer, rows, self.batch_size):
            for row, ids in enumerate(batch["input_ids"]):
                if not (ids == self.tokenizer.mask_token_id).any():
                    raise invalid_argument(
                        "inputs", f"text containing the mask token {self.tokenizer.mask_token!r}", rows[start + row][0]
                    )
            logits = np.asarray(self.model(batch))  # (batch_size, sequence_length, vocabulary_size)
            for ids, mask, row_logits in zip(batch["input_ids"], batch["attention_mask"], logits):
                results.append(self._predictions(ids[mask == 1], row_logits[mask == 1], top_k))
        return results[0] if is_single or len(results) == 1 else results

    def _predictions(self, ids, logits, top_k):
        positions = np.flatnonzero(ids == self.tokenizer.mask_token_id)
        probs = _softmax(logits[positions])  # (num_masks, vocabulary_size)
        top = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
        single_mask = len(positions) == 1
        per_mask = []
        for position, mask_probs, mask_top in zip(positions, probs, top):
            row = []
            for token in mask_top.tolist():
                tokens = ids.copy()
                tokens[position] = token
                tokens = tokens[tokens != self.tokenizer.pad_token_id]  # as transformers does
                # Other masks stay visible when there are several (transformers' choice).
                sequence = self.tokenizer.decode(tokens, skip_special_tokens=single_mask)
                row.append({"score": float(mask_probs[token]), "token": token,
                            "token_str": self.tokenizer.decode([token]), "sequence": sequence})
            per_mask.append(row)
        return per_mask[0] if single_mask else per_mask


# === text-classification ===


class TextClassificationPipeline:
    """Classifies texts (or text pairs) with a sequence classifier, as transformers' `TextClassificationPipeline`.

    Args:
        model: a sequence classifier returning `(batch_size, num_labels)` logits.
        tokenizer: its tokenizer.
        id2label: `{index: name}`; default the model's `id2label`, else `"LABEL_{index}"`.
        problem_type: the config's `problem_type` ("regression", "single_label_classification",
            "multi_label_classification") or `None`; it picks the default `function_to_apply`.
        top_k: default `top_k` for calls (see below).
        function_to_apply: default `function_to_apply` for calls.
        batch_size: texts run through the model at once.

    Call arguments:
        inputs: a text, a dict `{"text": ..., "text_pair": ...}`, or a list of either.
        top_k: not given: the best label per input, `{"label", "score"}` (a text gives a list of
            one such dict, as in transformers); an int: the `top_k` best labels per input, best
            first; `None`: every label, best first.
        function_to_apply: "softmax", "sigmoid" or "none"; default sigmoid when there is one
            label (or `problem_type` is multi-label), none for regression, softmax otherwise.
        **tokenizer_kwargs: passed to the tokenizer (`truncation`, `max_length`, ...).
    """

    task = "text-classification"

    def __init__(self, model, tokenizer, id2label=None, problem_type=None, top_k=_UNSET, function_to_apply=None,
                 batch_size=8):
        self.model, self.tokenizer, self.problem_type = model, tokenizer, problem_type
        self.id2label = {int(k): v for k, v in (id2label or getattr(model, "id2label", None) or {}).items()}
        self.top_k = self._check_top_k(top_k)
        self.function_to_apply = self._check_function(function_to_apply)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)

    @staticmethod
    def _check_top_k(top_k):
        return top_k if top_k is _UNSET or top_k is None else check_int("top_k", top_k, minimum=1)

    @staticmethod
    def _check_function(name):
        if name is None:
            return None
        if not isinstance(name, str) or name.lower() not in ("softmax", "sigmoid", "none"):
            raise invalid_argument("function_to_apply", "one of 'softmax', 'sigmoid', 'none'", name)
        return name.lower()

    def _default_function(self, num_labels):
        if self.problem_type == "regression":
            return "none"
        if self.problem_type == "multi_label_classification" or num_labels == 1:
            return "sigmoid"
        return "softmax"

    def __call__(self, inputs, top_k=_UNSET, function_to_apply=None, **tokenizer_kwargs):
        top_k = self.top_k if top_k is _UNSET else self._check_top_k(top_k)
        function = self._check_function(function_to_apply) or self.function_to_apply
        rows, is_single = _as_rows(inputs, pairs=True)
        logits = np.concatenate([  # (num_inputs, num_labels)
            np.asarray(self.model(batch), np.float64)
            for _, batch in _encoded_batches(self.tokenizer, rows, self.batch_size, **tokenizer_kwargs)
        ])
        function = function or self._default_function(logits.shape[-1])
        scores = {"softmax": _softmax, "sigmoid": _sigmoid, "none": np.asarray}[function](logits)
        results = [self._labels(row, top_k) for row in scores]
        if not is_single:
            return results
        # transformers: a text without top_k gives a list of one dict; a dict input gives the dict.
        return [results[0]] if top_k is _UNSET and isinstance(inputs, str) else results[0]

    def _labels(self, scores, top_k):
        labelled = [{"label": self.id2label.get(i, f"LABEL_{i}"), "score": float(s)} for i, s in enumerate(scores)]
        if top_k is _UNSET:
            return labelled[int(np.argmax(scores))]
        labelled.sort(key=lambda item: item["score"], reverse=True)
        return labelled if top_k is None else labelled[:top_k]


# === feature-extraction and sentence embeddings ===


def _check_pooling(pooling):
    modes = (pooling,) if isinstance(pooling, str) else pooling
    if pooling is None or pooling == "auto" or (
        isinstance(modes, (list, tuple)) and modes and all(isinstance(m, str) and m in POOLING_MODES for m in modes)
    ):
        return pooling if pooling in (None, "auto") else tuple(modes)
    raise invalid_argument("pooling", f"None, 'auto', one of {', '.join(map(repr, POOLING_MODES))} or a list of them",
                           pooling)


class FeatureExtractionPipeline:
    """Hidden states, or pooled sentence embeddings, from an encoder (transformers' `FeatureExtractionPipeline`
    plus sentence-transformers' pooling).

    Args:
        model: a backbone (its `"last_hidden_state"` output is used).
        tokenizer: its tokenizer.
        pooling: default for calls: `None` gives per-token hidden states (as transformers);
            "auto" pools as the folder's sentence-transformers config says (`sentence_config`);
            a mode of `POOLING_MODES` (or a list of them) pools that way.
        normalize: default for calls: L2-normalize pooled embeddings; `None` follows the
            sentence-transformers config with "auto" and means no otherwise.
        sentence_config: what `sentence_transformers_config(folder)` returns.
        batch_size: texts run through the model at once.

    Call arguments:
        inputs: a text or a list of texts.
        pooling, normalize: override the pipeline's defaults.
        return_tensors: numpy arrays instead of nested lists.
        **tokenizer_kwargs: passed to the tokenizer. Pooled embeddings are truncated to the
            config's `max_seq_length` (else the tokenizer's `model_max_length`) by default, as
            sentence-transformers does; per-token states are not, as in transformers.

    Returns:
        Per-token: per text `[[[...] * sequence_length]]`, `(1, sequence_length, hidden_dim)`, special
        tokens included. Pooled: per text a `(hidden_dim,)` vector; a list of texts gives a list
        (or with `return_tensors`, a `(num_texts, hidden_dim)` array), like sentence-transformers' `encode`.
    """

    task = "feature-extraction"

    def __init__(self, model, tokenizer, pooling=None, normalize=None, sentence_config=None, batch_size=8):
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.normalize = _check_pooling(pooling), normalize
        self.sentence_config = dict(sentence_config or PLAIN_FOLDER_POOLING)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)

    def __call__(self, inputs, pooling=_UNSET, normalize=None, return_tensors=False, **tokenizer_kwargs):
        pooling = self.pooling if pooling is _UNSET else _check_pooling(pooling)
        normalize = self.normalize if normalize is None else normalize
        rows, is_single = _as_rows(inputs)
        if pooling is None:
            outputs = [h[None] for h in self._hidden_states(rows, tokenizer_kwargs, pooled=False)]
            outputs = outputs if return_tensors else [h.tolist() for h in outputs]
            return outputs[0] if is_single else outputs
        config = self.sentence_config
        if pooling == "auto":
            pooling = config["pooling"]
            normalize = config["normalize"] if normalize is None else normalize
        if config["do_lower_case"]:
            rows = [(text.lower(), None) for text, _ in rows]
        embeddings = np.stack(self._hidden_states(rows, tokenizer_kwargs, pooled=True, modes=pooling))
        if normalize:
            embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
        embeddings = embeddings[0] if is_single else embeddings
        return embeddings if return_tensors else embeddings.tolist()

    def _hidden_states(self, rows, tokenizer_kwargs, pooled, modes=None):
        """Per row: the real tokens' hidden states, or (when `pooled`) the pooled vector."""
        if pooled:
            rows = [(text.strip(), None) for text, _ in rows]  # sentence-transformers strips texts
            max_length = self.sentence_config["max_seq_length"] or self.tokenizer.model_max_length
            if max_length is not None and "truncation" not in tokenizer_kwargs:
                tokenizer_kwargs = {"truncation": True, "max_length": max_length, **tokenizer_kwargs}
        outputs = []
        for _, batch in _encoded_batches(self.tokenizer, rows, self.batch_size, **tokenizer_kwargs):
            hidden = np.asarray(self.model(batch)["last_hidden_state"])
            mask = batch["attention_mask"]
            outputs.extend(np.asarray(pool(hidden, mask, modes)) if pooled else [h[m == 1] for h, m in zip(hidden, mask)])
        return outputs


class Text2TextGenerationPipeline:
    """Generates text from text with an encoder-decoder (T5), as transformers' `Text2TextGenerationPipeline`.

    Args:
        model: a seq2seq LM (`AutoModelForSeq2SeqLM`).
        tokenizer: its tokenizer.

    Call arguments:
        text: an input or a list of inputs.
        **generate_kwargs: passed to `model.generate` (`max_new_tokens`, `num_beams`,
            `num_return_sequences`, `do_sample`, ...). The defaults are transformers' for this
            pipeline: beam search with `num_beams=4`, `max_new_tokens=256`.

    Returns:
        For one input, `[{"generated_text": str}, ...]` (one per returned sequence); for a list, one
        dict per input (or one such list per input when `num_return_sequences` > 1).
    """

    task = "text2text-generation"
    DEFAULTS = {"num_beams": 4, "max_new_tokens": 256}  # transformers' pipeline defaults

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    def __call__(self, text, **generate_kwargs):
        inputs = [text] if isinstance(text, str) else list(text)
        if not inputs or not all(isinstance(item, str) for item in inputs):
            raise invalid_argument("text", "a string or a non-empty list of strings", text)
        batch = self.tokenizer(inputs, return_tensors="np", padding=True)
        generate_kwargs = {**self.DEFAULTS, **generate_kwargs}
        ids = self.model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **generate_kwargs)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        per_input = len(texts) // len(inputs)
        results = [[{"generated_text": t} for t in texts[i * per_input:(i + 1) * per_input]] for i in range(len(inputs))]
        if isinstance(text, str):
            return results[0]
        return [r[0] for r in results] if per_input == 1 else results


# === Registry ===


def _text_generation(folder, **model_kwargs):
    return TextGenerationPipeline(AutoModelForCausalLM.from_pretrained(folder, **model_kwargs),
                                  AutoTokenizer.from_pretrained(folder))


def _text2text_generation(folder, **model_kwargs):
    return Text2TextGenerationPipeline(AutoModelForSeq2SeqLM.from_pretrained(folder, **model_kwargs),
                                       AutoTokenizer.from_pretrained(folder))


def _fill_mask(folder, top_k=5, batch_size=8, **model_kwargs):
    tokenizer = _require_mask_token(AutoTokenizer.from_pretrained(folder))  # before the slower model load
    return FillMaskPipeline(AutoModelForMaskedLM.from_pretrained(folder, **model_kwargs), tokenizer, top_k, batch_size)


def _text_classification(folder, top_k=_UNSET, function_to_apply=None, batch_size=8, **model_kwargs):
    config = load_config(folder)
    if config.get("id2label") and not {"num_labels", "id2label"} & set(model_kwargs):
        model_kwargs["id2label"] = config["id2label"]
    model = AutoModelForSequenceClassification.from_pretrained(folder, **model_kwargs)
    return TextClassificationPipeline(model, AutoTokenizer.from_pretrained(folder), problem_type=config.get("problem_type"),
                                      top_k=top_k, function_to_apply=function_to_apply, batch_size=batch_size)


def _feature_extraction(folder, pooling=None, normalize=None, batch_size=8, **model_kwargs):
    return FeatureExtractionPipeline(AutoModel.from_pretrained(folder, **model_kwargs), AutoTokenizer.from_pretrained(folder),
                                     pooling=pooling, normalize=normalize,
                                     sentence_config=sentence_transformers_config(folder), batch_size=batch_size)


def _sentence_embeddings(folder, pooling="auto", **kwargs):
    return _feature_extraction(folder, pooling=pooling, **kwargs)


# Task name -> builder(folder, **kwargs) returning the pipeline. To add a task, write its pipeline
# class and builder above and list it here.
PIPELINES = {
    "text-generation": _text_generation,
    "fill-mask": _fill_mask,
    "text-classification": _text_classification,
    "feature-extraction": _feature_extraction,
    "sentence-embeddings": _sentence_embeddings,  # feature-extraction pooled as sentence-transformers does
    "text2text-generation": _text2text_generation,
}
TASK_ALIASES = {"sentiment-analysis": "text-classification"}  # transformers' alias


def pipeline(task, model, **kwargs):
    """Builds the pipeline for `task` from a Hugging Face folder.

    Args:
        task: one of `PIPELINES` ("text-generation", "fill-mask", "text-classification",
            "feature-extraction", "sentence-embeddings") or an alias ("sentiment-analysis").
        model: path of a folder with config.json, weights and tokenizer files.
        **kwargs: the pipeline's defaults (`top_k`, `function_to_apply`, `pooling`, `normalize`,
            `batch_size`, as each pipeline takes them); the rest go to the model's `from_pretrained`.

    Returns:
        A callable pipeline.

    Raises:
        FileNotFoundError: `model` is not a folder.
    """
    check_choice("task", task, tuple(PIPELINES) + tuple(TASK_ALIASES))
    folder = os.fspath(model)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Model folder not found: {folder!r}")
    return PIPELINES[TASK_ALIASES.get(task, task)](folder, **kwargs)
