"""The embedded default job: train a small GPT-2 on the Python documentation, save it, generate.

The corpus is `pydoc_data.topics`, which ships with every CPython, so nothing is downloaded.
"""

import dataclasses
import logging
import math
import os

import keras

from tfllm.models.gpt2 import GPT2Backbone, GPT2CausalLM
from tfllm.tokenizers import Tokenizer, train_byte_level_bpe
from tfllm.training import causal_lm_dataset

logger = logging.getLogger(__name__)

EOT = "<|endoftext|>"
PROMPTS = ("The for statement", "A class definition", "If the exception")

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


def load_corpus(max_documents=0):
    """Returns the Python documentation topics, one string per topic."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    if max_documents:
        names = names[:max_documents]
    return [topics[name] for name in names]


def build_backbone(config):
    backbone = GPT2Backbone(
        vocabulary_size=config.vocabulary_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        hidden_dim=config.hidden_dim,
        intermediate_dim=4 * config.hidden_dim,
        max_sequence_length=max(256, config.sequence_length),
        dropout=0.0,
    )
    return backbone


def run(output_dir, config=None, verbose=1):
    """Trains, saves and samples the quickstart model.

    Args:
        output_dir: where the Hugging Face folder (model + tokenizer) is written.
        config: a `QuickstartConfig`; defaults to the full-size run.
        verbose: Keras `fit` verbosity (1 shows a progress bar).

    Returns:
        A dict with `losses` (per epoch, with the untrained loss first), `samples` (prompt →
        continuation), `sample_settings` (how they were generated, in words) and `output_dir`.
    """
    config = config or QuickstartConfig()
    keras.utils.set_random_seed(0)
    documents = load_corpus(config.max_documents)
    trained = train_byte_level_bpe(documents, vocab_size=config.vocabulary_size, special_tokens=(EOT,))
    # The end-of-text token doubles as padding (masked out), as is usual for GPT-2.
    tokenizer = Tokenizer(trained.backend_tokenizer, bos_token=EOT, eos_token=EOT, unk_token=EOT, pad_token=EOT)
    eot = tokenizer.eos_token_id
    stream = []
    for document in documents:
        stream += tokenizer.encode(document) + [eot]
    logger.info("Corpus: %d documents, %d characters, %d tokens", len(documents), sum(map(len, documents)), len(stream))
    dataset = causal_lm_dataset(stream, config.sequence_length, config.batch_size, seed=0)

    backbone = build_backbone(dataclasses.replace(config, vocabulary_size=tokenizer.vocab_size))
    model = GPT2CausalLM(backbone, bos_token_id=eot, eos_token_id=eot)
    steps = int(dataset.cardinality()) * config.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - steps // 10), warmup_target=config.learning_rate, warmup_steps=max(1, steps // 10)
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    initial_loss = float(model.evaluate(dataset.take(4), verbose=0))
    history = model.fit(dataset, epochs=config.epochs, verbose=verbose, shuffle=False)
    losses = [initial_loss] + [float(x) for x in history.history["loss"]]

    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)

    return {"losses": losses, "samples": sample(model, tokenizer, config.max_new_tokens),
            "sample_settings": describe_settings(SAMPLE_SETTINGS), "output_dir": os.fspath(output_dir),
            "perplexity": math.exp(losses[-1]), "model": model, "tokenizer": tokenizer}


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


def export(model, tokenizer, root, config=None):
    """Exports the trained model as `root/quickstart/<version>` (SavedModel) and `root/quickstart.tflite`,
    and continues the first prompt greedily with each, as a user of that format would run it.

    Returns:
        A dict with the two paths (`saved_model`, `tflite`) and their continuations (`*_text`).
    """
    from tfllm.export import LiteRTGenerator, saved_model, tflite
    from tfllm.export import signatures as sig
    from tfllm.export.verify import run_in_fresh_process

    config = config or QuickstartConfig()
    prompt, new = PROMPTS[0], config.max_new_tokens
    saved = saved_model(model, tokenizer, os.path.join(root, "quickstart"), max_new_tokens=new, overwrite=True)
    reply = run_in_fresh_process(saved, {sig.SERVING_DEFAULT: {sig.TEXT: [prompt]}})  # as TF Serving would
    lite = tflite(model, os.path.join(root, "quickstart.tflite"), cache_length=min(256, 64 + new))
    lite_text = LiteRTGenerator(lite, tokenizer).generate(prompt, max_new_tokens=new)
    return {"saved_model": saved, "saved_model_text": str(reply[sig.SERVING_DEFAULT][sig.GENERATED_TEXT][0]),
            "tflite": lite, "tflite_text": lite_text if isinstance(lite_text, str) else lite_text[0]}
