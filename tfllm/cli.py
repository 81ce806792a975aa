"""The `tfllm` command: argument parsing only; the work lives in the library."""

import argparse
import dataclasses
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
    if not args.no_export:
        root = os.path.dirname(os.path.abspath(args.output))
        print("exporting a SavedModel (TF Serving) and a TFLite file, each checked against the Keras model ...")
        exported = quickstart.export(result["model"], result["tokenizer"], root, config)
        for name in ("saved_model", "tflite"):
            print(f"--- {name}: {exported[name]}\n{exported[name + '_text']}\n")
    print(f"next: tfllm generate {result['output_dir']} \"The with statement\" --max-new-tokens 40")
    return 0


def _export(args):
    from tfllm.export.from_folder import export_folder

    path = export_folder(args.model_dir, args.format, output=args.output, task=args.task, overwrite=args.overwrite,
                         version=args.version, max_new_tokens=args.max_new_tokens,
                         quantize=None if args.quantize == "none" else args.quantize, cache_length=args.cache_length)
    print(f"wrote {path} (checked against the Keras model)")
    return 0


def _attention(args):
    import tfllm
    from tfllm import inspect

    tokenizer = tfllm.AutoTokenizer.from_pretrained(args.model_dir)
    model = tfllm.AutoModel.from_pretrained(args.model_dir)
    head = inspect.ALL_HEADS if args.average else args.head
    result = inspect.attention_map(model, tokenizer, args.text, layer=args.layer, head=head)
    name = "/".join(os.path.normpath(os.path.abspath(args.model_dir)).split(os.sep)[-2:])
    title = inspect.attention_title(name, result["layer"], result["head"])
    inspect.plot_attention(result["tokens"], result["attention"], args.output, title=title)
    print(f"{title} ({len(result['tokens'])} tokens) -> {args.output}")
    return 0


def _head_argument(value):
    """`--head`: an integer, or "all" for the heads' mean (the range is checked against the model)."""
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {value!r}") from None


def _embed(args):
    import numpy as np

    import tfllm

    # The feature-extraction pipeline's pooled path, so the CLI and the library give the same vectors.
    extractor = tfllm.pipeline("feature-extraction", model=args.model_dir)
    embeddings = extractor(args.sentence, pooling=args.pooling, return_tensors=True)  # (num_sentences, dim)
    norms = np.linalg.norm(embeddings, axis=-1)
    for i, (sentence, norm) in enumerate(zip(args.sentence, norms)):
        print(f"[{i}] shape {embeddings[i].shape} norm {norm:.4f}  {sentence!r}")
    if len(args.sentence) > 1:
        cosine = embeddings @ embeddings.T / np.maximum(np.outer(norms, norms), 1e-12)
        print("cosine similarity:")
        print("     " + "".join(f"{f'[{j}]':>8}" for j in range(len(cosine))))
        for i, row in enumerate(cosine):
            print(f"{f'[{i}]':<5}" + "".join(f"{value:8.4f}" for value in row))
    if args.output:
        np.save(args.output, embeddings)
        print(f"saved {embeddings.shape} embeddings to {args.output}")
    return 0


def _serve(args):
    from tfllm.serving.server.app import serve
    from tfllm.serving.server.errors import ServingError
    from tfllm.serving.server.options import ServerOptions

    options = ServerOptions.from_args(args)

    def ready(app):
        addresses = [f"gRPC on {options.grpc_bind_host}:{app.grpc_port}"] if app.grpc_port else []
        if app.rest_port:
            addresses.append(f"REST on http://{options.rest_api_host}:{app.rest_port}/")
        print(f"tfllm serve: {', '.join(addresses) or 'no port open'}; models: {', '.join(app.core.model_names())}",
              flush=True)

    try:
        return serve(options, grace_seconds=args.grace_seconds, on_ready=ready)
    except ServingError as error:
        raise ValueError(f"{error.code}: {error.message}") from error
    except OSError as error:  # a port in use, a folder that cannot be read
        raise ValueError(str(error)) from error


def _train_config(args):
    """`tfllm train`'s flags as a `TrainConfig`."""
    from tfllm.training.trainer import TrainConfig

    names = [field.name for field in dataclasses.fields(TrainConfig) if field.name not in ("callbacks", "verbose")]
    config = TrainConfig(**{name: getattr(args, name) for name in names})
    config.verbose = {"auto": "auto", "bar": 1, "line": 2, "none": 0}[args.progress]
    return config


def _train(args):
    from tfllm.training import trainer

    result = trainer.train(_train_config(args))
    resumed = f", resumed at step {result['resumed_from']}" if result["resumed_from"] is not None else ""
    print(f"\ntrained {result['steps']} steps ({result['epochs']} epoch(s) of {result['steps_per_epoch']}){resumed}; "
          f"{result['tokens_per_second']:.0f} tokens/s")
    if "loss" in result:
        print(f"train loss {result['loss']:.4f}")
    if result["validation"]:
        print("validation: " + _metrics_line(result["validation"]))
    if not result["chief"]:
        print("this worker is not the chief of the multi-worker run: the chief saves the model and logs")
        return 0
    print(f"saved the model and tokenizer to {result['output']} "
          f"(log.csv, training.png, tensorboard/{', adapters/' if result['adapters'] else ''})")
    return 0


def _metrics_line(metrics):
    names = [name for name in ("loss", "perplexity", "accuracy") if name in metrics]
    return ", ".join(f"{name} {metrics[name]:.6g}" for name in names)


def _eval(args):
    import json

    from tfllm.training import trainer

    metrics = trainer.evaluate(args.model, args.data, task=args.task, batch_size=args.batch_size,
                               seq_len=args.seq_len, text_field=args.text_field, text_pair_field=args.text_pair_field,
                               label_field=args.label_field, source_field=args.source_field,
                               target_field=args.target_field)
    if args.json:
        print(json.dumps(metrics))
    else:
        for name in ("loss", "perplexity", "accuracy"):
            if name in metrics:
                print(f"{name}: {metrics[name]:.6f}")
        print(f"({metrics['examples']} examples, {metrics['tokens']} weighted tokens)")
    return 0


def _add_data_arguments(parser, task_help):
    parser.add_argument("--task", default="causal_lm", choices=("causal_lm", "masked_lm", "classification", "seq2seq"),
                        help=task_help)
    parser.add_argument("--data", nargs="+", required=True, metavar="FILE",
                        help=".txt (documents split on blank lines) or .jsonl files, or 'pydoc' (built-in corpus)")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch size, all replicas together")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per example (per side for seq2seq)")
    parser.add_argument("--text-field", default="text", help="JSON Lines field of the text")
    parser.add_argument("--text-pair-field", default=None, help="classification: field of a second text")
    parser.add_argument("--label-field", default="label", help="classification: field of the label")
    parser.add_argument("--source-field", default="source", help="seq2seq: field of the input text")
    parser.add_argument("--target-field", default="target", help="seq2seq: field of the output text")


def _add_train_parser(commands):
    # Choices are checked by TrainConfig.validate: importing the training modules here would load
    # TensorFlow for every command.
    train = commands.add_parser("train", help="train or fine-tune a model with model.fit under tf.distribute",
                                description="Outputs in --output: a Hugging Face folder, log.csv, training.png, "
                                            "tensorboard/. Rerun the same command to resume an interrupted run.")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", default=None, metavar="DIR", help="Hugging Face folder to fine-tune")
    source.add_argument("--config", default=None, metavar="tiny|FILE",
                        help="'tiny' (a small fresh model) or a config.json to train from scratch")
    train.add_argument("--tokenizer", default=None, metavar="DIR", help="tokenizer folder (default: --model's; "
                       "--config tiny trains one for causal_lm)")
    _add_data_arguments(train, "what to train (default: causal_lm)")
    train.add_argument("--validation-data", nargs="+", default=None, metavar="FILE", help="held-out files")
    train.add_argument("--validation-split", type=float, default=0.1, help="fraction held out when no "
                       "--validation-data (default 0.1)")
    train.add_argument("--num-labels", type=int, default=None, help="classification: number of labels")
    train.add_argument("--vocab-size", type=int, default=512, help="--config tiny: size of the trained tokenizer")
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    train.add_argument("--strategy", default="auto",
                       help="auto (default), default, one_device, mirrored, multi_worker or tpu")
    train.add_argument("--output", required=True, metavar="DIR")
    train.add_argument("--overwrite", action="store_true", help="replace a trained model in --output")
    train.add_argument("--learning-rate", type=float, default=5e-5)
    train.add_argument("--weight-decay", type=float, default=0.01)
    train.add_argument("--warmup-steps", type=int, default=None, help="optimizer updates of linear warmup")
    train.add_argument("--warmup-ratio", type=float, default=0.0, help="warmup as a fraction of the updates")
    train.add_argument("--schedule", default="cosine", help="cosine (default), linear or constant, after warmup")
    train.add_argument("--clipnorm", type=float, default=1.0, help="global gradient norm limit (0: none)")
    train.add_argument("--gradient-accumulation-steps", type=int, default=1)
    train.add_argument("--precision", default="float32", help="float32 (default), mixed_bfloat16 or mixed_float16")
    train.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (0: all weights)")
    train.add_argument("--lora-alpha", type=float, default=16.0)
    train.add_argument("--lora-dropout", type=float, default=0.0)
    train.add_argument("--lora-targets", nargs="+", default=None, metavar="NAME",
                       help="projections to adapt: qkv query key_value output up gate down (default: attention)")
    train.add_argument("--mlm-probability", type=float, default=0.15)
    train.add_argument("--checkpoint-every", type=int, default=100, help="back up every N steps (and each epoch)")
    train.add_argument("--log-every", type=int, default=10, help="steps.csv row every N steps (0: none)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--deterministic", action="store_true", help="TensorFlow op determinism (reproducible)")
    train.add_argument("--progress", default="auto", choices=("auto", "bar", "line", "none"),
                       help="Keras progress: a bar on a terminal, a line per epoch otherwise (auto)")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("eval", help="loss, perplexity and accuracy of a trained folder on data")
    evaluate.add_argument("--model", required=True, metavar="DIR", help="Hugging Face folder with its tokenizer")
    _add_data_arguments(evaluate, "the model's task (default: causal_lm)")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    evaluate.set_defaults(run=_eval)


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
    quick.add_argument("--no-export", action="store_true", help="skip the SavedModel and TFLite exports")
    quick.set_defaults(run=_quickstart)

    export = commands.add_parser("export", help="export a Hugging Face folder as a SavedModel, TFLite file or ONNX")
    export.add_argument("model_dir", help="Hugging Face folder (config.json, weights, tokenizer files)")
    export.add_argument("--format", choices=("saved_model", "tflite", "onnx"), default="saved_model")
    export.add_argument("--output", default=None,
                        help="SavedModel base folder (versions go under it), .tflite file or ONNX folder "
                             "(default: saved_models/NAME, saved_models/NAME.tflite, saved_models/NAME_onnx)")
    export.add_argument("--task", default="auto",
                        choices=("auto", "causal_lm", "seq2seq_lm", "sequence_classification", "backbone"),
                        help="which head to export (default: from config.json's architectures)")
    export.add_argument("--version", type=int, default=None, help="SavedModel version (default: the next one)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing version or file")
    export.add_argument("--max-new-tokens", type=int, default=32, help="SavedModel default generation length")
    export.add_argument("--quantize", default="none", choices=("none", "float16", "dynamic_int8", "int8_weight_only"),
                        help="TFLite quantization")
    export.add_argument("--cache-length", type=int, default=None, help="KV cache length of TFLite/ONNX decoders")
    export.set_defaults(run=_export)

    attention = commands.add_parser("attention", help="draw one layer's attention map for a text as a PNG heatmap")
    attention.add_argument("model_dir", help="Hugging Face folder of any family (config.json, weights, tokenizer)")
    attention.add_argument("text", help="the text to run through the model")
    attention.add_argument("--layer", type=int, default=None,
                           help="0-based layer (default: the last; negative values count from the end)")
    attention.add_argument("--head", type=_head_argument, default=0,
                           help="0-based head, or 'all' for the mean over heads (default: 0)")
    attention.add_argument("--average", action="store_true", help="average over the heads (same as --head all)")
    attention.add_argument("--output", default="attention.png", help="PNG file to write (default: attention.png)")
    attention.set_defaults(run=_attention)

    embed = commands.add_parser("embed", help="sentence embeddings and their cosine similarities")
    embed.add_argument("model_dir", help="Hugging Face folder of an encoder (sentence-transformers files are read)")
    embed.add_argument("sentence", nargs="+", help="one or more sentences")
    embed.add_argument("--pooling", default="auto",
                       help="auto (the folder's sentence-transformers pooling, default), cls, max, mean, "
                            "mean_sqrt_len_tokens or lasttoken")
    embed.add_argument("--output", default=None, help="also save the (num_sentences, dim) embeddings to this .npy file")
    embed.set_defaults(run=_embed)

    _add_train_parser(commands)

    from tfllm.serving.server.options import ServerOptions

    serve = commands.add_parser("serve", help="serve SavedModels over TF Serving's gRPC and REST APIs",
                                description="Flags are tensorflow_model_server's (--port, --rest_api_port, "
                                            "--model_name, --model_base_path, --model_config_file, ...).")
    ServerOptions.add_arguments(serve)
    serve.add_argument("--grace_seconds", type=float, default=10.0,
                       help="on SIGTERM/SIGINT, how long requests in flight may take to finish (default: 10)")
    serve.set_defaults(run=_serve)
    return parser


def main(argv=None):
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, NotImplementedError, FileNotFoundError, FileExistsError) as error:
        print(f"tfllm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
