"""`pipeline(task, model=path)`: text in, text out, shaped like transformers' pipelines.

>>> generator = tfllm.pipeline("text-generation", model="saved_models/quickstart_hf")
>>> generator("The for statement", max_new_tokens=20)
[{'generated_text': 'The for statement ...'}]
"""

import logging

from tfllm.errors import check_choice
from tfllm.models import AutoModelForCausalLM
from tfllm.tokenizers import AutoTokenizer

logger = logging.getLogger(__name__)


class TextGenerationPipeline:
    """Continues prompts with a causal LM.

    Args:
        model: a `CausalLM`.
        tokenizer: its tokenizer.

    Call arguments:
        text: a prompt or a list of prompts.
        return_full_text: include the prompt in `generated_text` (transformers' default).
        **generate_kwargs: passed to `model.generate` (`max_new_tokens`, `do_sample`, `top_p`, ...).

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


def _text_generation(model_path, **kwargs):
    return TextGenerationPipeline(AutoModelForCausalLM.from_pretrained(model_path, **kwargs),
                                  AutoTokenizer.from_pretrained(model_path))


PIPELINES = {"text-generation": _text_generation}


def pipeline(task, model, **model_kwargs):
    """Builds the pipeline for `task` from a Hugging Face folder.

    Args:
        task: one of `PIPELINES` ("text-generation", ...).
        model: path of a folder with config.json, weights and tokenizer files.
        **model_kwargs: passed to the model's `from_pretrained`.

    Returns:
        A callable pipeline.
    """
    check_choice("task", task, tuple(PIPELINES))
    return PIPELINES[task](model, **model_kwargs)
