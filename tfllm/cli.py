"""The `tfllm` command: argument parsing only; the work lives in the library."""

import argparse
import logging
import os
import sys


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _generate(args):
    import tfllm

    tokenizer = tfllm.AutoTokenizer.from_pretrained(args.model_dir, padding_side="left")
    model = tfllm.AutoModelForCausalLM.from_pretrained(args.model_dir)
    batch = tokenizer(args.prompt, return_tensors="tf", padding=True)
    ids = model.generate(
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    for text in tokenizer.batch_decode(ids, skip_special_tokens=True):
        print(text)
        print("-" * 40)
    return 0


def _quickstart(args):
    from tfllm import quickstart

    config = quickstart.QuickstartConfig.small() if args.small else quickstart.QuickstartConfig()
    if args.epochs is not None:
        config.epochs = args.epochs
    print(f"tfllm quickstart: training a {config.num_layers}-layer GPT-2 on the Python documentation "
          f"(pydoc_data.topics), {config.epochs} epoch(s)")
    result = quickstart.run(args.output, config, verbose=1 if sys.stdout.isatty() else 2)
    losses = result["losses"]
    print(f"\nloss: {losses[0]:.3f} before training -> {losses[-1]:.3f} after "
          f"(per epoch: {', '.join(f'{x:.3f}' for x in losses[1:])}); perplexity {result['perplexity']:.1f}")
    print(f"saved model and tokenizer to {result['output_dir']}\n")
    for prompt, text in result["samples"].items():
        print(f"--- {prompt!r}\n{text}\n")
    print(f"next: tfllm generate {result['output_dir']} \"The with statement\" --max-new-tokens 40")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="tfllm", description="Keras/TensorFlow toolkit for LLMs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="continue a prompt with a causal LM folder")
    generate.add_argument("model_dir", help="Hugging Face folder (config.json, weights, tokenizer files)")
    generate.add_argument("prompt", nargs="+", help="one or more prompts")
    generate.add_argument("--max-new-tokens", type=int, default=40)
    generate.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=0)
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--seed", type=int, default=None)
    generate.set_defaults(run=_generate)

    quick = commands.add_parser("quickstart", help="train a small GPT-2 on the Python docs, save it, generate")
    quick.add_argument("--output", default=os.path.join("saved_models", "quickstart_hf"),
                       help="Hugging Face folder to write (default: saved_models/quickstart_hf)")
    quick.add_argument("--small", action="store_true", help="a reduced run (seconds, for CI)")
    quick.add_argument("--epochs", type=int, default=None)
    quick.set_defaults(run=_quickstart)
    return parser


def main(argv=None):
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, NotImplementedError, FileNotFoundError) as error:
        print(f"tfllm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
