"""The embedded default job: train a small GPT-2 on the Python documentation, save it, generate.

The corpus is `pydoc_data.topics`, which ships with every CPython, so nothing is downloaded.
"""

import dataclasses
import json
import logging
import math
import os
from pathlib import Path

import keras

from tfllm.export import LiteRTGenerator, saved_model, tflite
from tfllm.export import signatures as sig
from tfllm.export.verify import run_in_fresh_process
from tfllm.export.versions import atomic_file, versions
from tfllm.models import AutoModelForCausalLM, presets, tasks
from tfllm.models.pretrained import build_task_model
from tfllm.progress import Progress
from tfllm.tokenizers import AutoTokenizer
from tfllm.training import causal_lm_dataset
from tfllm.training.builders import end_of_text_tokenizer
from tfllm.training.callbacks import EpochProgress
from tfllm.training.data import pydoc_texts

logger = logging.getLogger(__name__)

PROMPTS = ("The for statement", "A class definition", "If the exception")
SUMMARY_FILE = "quickstart.json"  # settings and losses of a finished run

# How the printed samples are generated. Plain greedy decoding of a model this small loops, often on
# runs of blank lines. Compared on the full quickstart model (loss 3.17): greedy decoding that never
# repeats a 3-gram reads most like the documentation; a repetition penalty (1.05 to 1.3, greedy or
# sampled) garbles words, since it also penalizes the spaces, quotes and "the" the docs are full of;
# nucleus sampling (top_p 0.9, temperature 0.5 to 0.8) coins more non-words.
SAMPLE_SETTINGS = dict(do_sample=False, no_repeat_ngram_size=3)


@dataclasses.dataclass
class QuickstartConfig:
    """Sizes of the quickstart run; `small()` is the reduced run CI uses."""

    vocabulary_size: int = 1024
    num_layers: int = 4
    num_heads: int = 4
    hidden_dim: int = 128
    sequence_length: int = 128
    batch_size: int = 16
    epochs: int = 14
    learning_rate: float = 3e-3
    max_new_tokens: int = 40
    max_documents: int = 0  # 0: every topic

    @classmethod
    def small(cls):
        return cls(vocabulary_size=512, num_layers=2, num_heads=2, hidden_dim=64, sequence_length=64,
                   batch_size=16, epochs=1, max_new_tokens=16, max_documents=12)


def build_model(config, tokenizer):
    """The untrained causal LM of `config`'s shape (`tfllm.models.presets` picks the family), with
    the tokenizer's end-of-text token as its bos and eos token."""
    eot = tokenizer.eos_token_id
    hf_config = presets.new_model_config(
        tasks.CAUSAL_LM, tokenizer.vocab_size, num_layers=config.num_layers, num_heads=config.num_heads,
        hidden_dim=config.hidden_dim, max_positions=max(256, config.sequence_length), dropout=0.0,
        bos_token_id=eot, eos_token_id=eot)
    return build_task_model(hf_config, tasks.CAUSAL_LM)


def run(output_dir, config=None, progress="auto", retrain=False):
    """Trains (or reuses), saves and samples the quickstart model.

    A finished run leaves `quickstart.json` (its settings and losses) in `output_dir`, written
    last; a later run with the same settings loads that model instead of training again, unless
    `retrain`. Other settings train again and replace the folder's model (it is quickstart's own).

    Args:
        output_dir: where the Hugging Face folder (model + tokenizer) is written.
        config: a `QuickstartConfig`; defaults to the full-size run.
        progress: "auto", "bar", "line" or "none": report the epochs (see `tfllm.progress`).
        retrain: train again even when `output_dir` holds a model trained with these settings.

    Returns:
        A dict with `losses` (per epoch, with the untrained loss first), `samples` (prompt →
        continuation), `sample_settings` (how they were generated, in words), `output_dir`,
        `perplexity`, `model`, `tokenizer` and `reused` (True when the model was loaded, not trained).
    """
    config = config or QuickstartConfig()
    losses = None if retrain else finished_losses(output_dir, config)
    reused = losses is not None
    if reused:
        logger.info("Reusing the quickstart model in %s", output_dir)
        model = AutoModelForCausalLM.from_pretrained(output_dir)
        tokenizer = AutoTokenizer.from_pretrained(output_dir)
    else:
        model, tokenizer, losses = train(output_dir, config, progress)

    return {"losses": losses, "samples": sample(model, tokenizer, config.max_new_tokens),
            "sample_settings": describe_settings(SAMPLE_SETTINGS), "output_dir": os.fspath(output_dir),
            "perplexity": math.exp(losses[-1]), "model": model, "tokenizer": tokenizer, "reused": reused}


def finished_losses(output_dir, config):
    """The losses of a finished quickstart run in `output_dir` with `config`'s settings, or None."""
    path = os.path.join(output_dir, SUMMARY_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    return summary["losses"] if summary.get("config") == dataclasses.asdict(config) else None


def train(output_dir, config, progress="auto"):
    """Trains the quickstart model and saves it with its tokenizer and `quickstart.json` in `output_dir`.

    Returns:
        `(model, tokenizer, losses)`: losses per epoch, with the untrained loss first.
    """
    summary = Path(output_dir) / SUMMARY_FILE
    summary.unlink(missing_ok=True)  # the folder holds no finished model until the new one is saved
    keras.utils.set_random_seed(0)
    with Progress("quickstart", mode=progress).stage("train a tokenizer on the Python documentation and tokenize it"):
        tokenizer, dataset = _tokenized_corpus(config)
    model = build_model(config, tokenizer)
    per_epoch = int(dataset.cardinality())
    steps = per_epoch * config.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - steps // 10), warmup_target=config.learning_rate, warmup_steps=max(1, steps // 10)
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    initial_loss = float(model.evaluate(dataset.take(4), verbose=0))
    epochs = EpochProgress(epochs=config.epochs, steps_per_epoch=per_epoch, mode=progress)
    history = model.fit(dataset, epochs=config.epochs, verbose=0, shuffle=False, callbacks=[epochs])
    losses = [initial_loss] + [float(x) for x in history.history["loss"]]

    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    with atomic_file(summary) as temporary:  # last: it marks a finished run
        temporary.write_text(json.dumps({"config": dataclasses.asdict(config), "losses": losses}))
    return model, tokenizer, losses


def _tokenized_corpus(config):
    documents = pydoc_texts(config.max_documents)
    tokenizer = end_of_text_tokenizer(documents, config.vocabulary_size)
    eot = tokenizer.eos_token_id
    stream = []
    for document in documents:
        stream += tokenizer.encode(document) + [eot]
    logger.info("Corpus: %d documents, %d characters, %d tokens", len(documents), sum(map(len, documents)), len(stream))
    return tokenizer, causal_lm_dataset(stream, config.sequence_length, config.batch_size, seed=0)


def sample(model, tokenizer, max_new_tokens, prompts=PROMPTS, settings=None):
    """Continues `prompts` with `settings` (`generate` keyword arguments; `SAMPLE_SETTINGS` by default).

    Returns:
        A dict: prompt → prompt and continuation.
    """
    tokenizer.padding_side = "left"
    batch = tokenizer(list(prompts), return_tensors="tf", padding=True)
    ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=max_new_tokens,
                         **(SAMPLE_SETTINGS if settings is None else settings))
    return dict(zip(prompts, tokenizer.batch_decode(ids, skip_special_tokens=True)))


def describe_settings(settings):
    """`generate` keyword arguments in words, for the header above printed samples."""
    method = "sampling" if settings.get("do_sample") else "greedy decoding"
    details = ", ".join(f"{key}={value}" for key, value in settings.items() if key != "do_sample")
    return f"{method} ({details})" if details else method


def export(model, tokenizer, root, config=None, reuse=False, progress="none"):
    """Exports the trained model as `root/quickstart/<version>` (SavedModel) and `root/quickstart.tflite`,
    and continues the first prompt greedily with each, as a user of that format would run it.

    With `reuse` (the model was reused, not trained), the newest SavedModel version and an existing
    TFLite file are used as they are. Otherwise the SavedModel gets a new version (a SavedModel
    export never replaces one) and the TFLite file, quickstart's own output, is replaced.

    Returns:
        A dict with the two paths (`saved_model`, `tflite`), their continuations (`*_text`) and
        which of them were reused (`reused`: a set of "saved_model", "tflite").
    """
    config = config or QuickstartConfig()
    prompt, new = PROMPTS[0], config.max_new_tokens
    base, lite = os.path.join(root, "quickstart"), os.path.join(root, "quickstart.tflite")
    existing = versions(base) if reuse else []
    reused = {name for name, found in (("saved_model", existing), ("tflite", reuse and os.path.isfile(lite))) if found}
    if existing:
        saved = os.path.join(base, str(existing[-1]))
    else:
        saved = saved_model(model, tokenizer, base, max_new_tokens=new, progress=progress)
    reply = run_in_fresh_process(saved, {sig.SERVING_DEFAULT: {sig.TEXT: [prompt]}})  # as TF Serving would
    if "tflite" not in reused:
        tflite(model, lite, cache_length=min(256, 64 + new), overwrite=True, progress=progress)
    lite_text = LiteRTGenerator(lite, tokenizer).generate(prompt, max_new_tokens=new)
    return {"saved_model": saved, "saved_model_text": str(reply[sig.SERVING_DEFAULT][sig.GENERATED_TEXT][0]),
            "tflite": lite, "tflite_text": lite_text if isinstance(lite_text, str) else lite_text[0], "reused": reused}
