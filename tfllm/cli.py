"""The `tfllm` command: argument parsing only; the work lives in the library.

Parsing imports no TensorFlow (each command imports what it runs), so `--help` and `--version`
answer at once. Unless `--verbose`, TensorFlow's C++ log (written straight to file descriptor 2
by the libraries it loads: oneDNN and CUDA notices, cuInit errors, `Error in PredictCost()`) goes
to /dev/null while a command runs, and its Python loggers only report errors; the command's own
messages still reach stderr.
"""

import argparse
import contextlib
import ctypes
import logging
import os
import sys
import warnings

from tfllm import cli_training
from tfllm.progress import MODES as PROGRESS_MODES

QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "TOKENIZERS_PARALLELISM": "false"}
VERBOSE_HELP = "log at INFO level and show TensorFlow's own log (hidden by default)"
NOISY_LOGGERS = ("tensorflow", "absl", "h5py", "tf2onnx")
NOISY_MODULES = r"(keras|tensorflow|tf_keras|absl|tf2onnx|google\.protobuf)(\.|$)"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def _version():
    from importlib import metadata

    try:
        return metadata.version("tfllm")
    except metadata.PackageNotFoundError:  # run from a source tree
        import tfllm  # lazy: --help without TensorFlow

        return tfllm.__version__


class _Stderr:
    """Writes to whatever `sys.stderr` is at the moment (the log handler outlives `_quiet`)."""

    def write(self, text):
        sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()


def _flush_c_streams():
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to ask (not POSIX)
        pass


@contextlib.contextmanager
def _quiet(verbose):
    """Silences TensorFlow's log for the duration of a command (see the module docstring)."""
    if verbose:
        yield
        return
    for name, value in QUIET_ENVIRONMENT.items():  # read when TensorFlow loads, so set before
        os.environ.setdefault(name, value)
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in levels:
        logging.getLogger(name).setLevel(logging.ERROR)
    saved_fd, saved_stderr = os.dup(2), sys.stderr
    try:
        ours = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a captured stream (tests): leave it as it is
        ours = False
    with open(os.devnull, "w") as devnull, warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=NOISY_MODULES)
        os.dup2(devnull.fileno(), 2)
        if ours:  # our own messages keep the real stderr
            sys.stderr = open(os.dup(saved_fd), "w", buffering=1, encoding=saved_stderr.encoding,
                              errors=saved_stderr.errors)
        try:
            yield
        finally:
            _flush_c_streams()  # C++ writes still in stdio's buffer go to /dev/null, not to stderr at exit
            if ours:
                sys.stderr.close()
                sys.stderr = saved_stderr
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _generate(args):
    import tfllm  # lazy: --help without TensorFlow

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
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
    )
    for text in tokenizer.batch_decode(ids, skip_special_tokens=True):
        print(text)
        print("-" * 40)
    return 0


def _quickstart(args):
    from tfllm import quickstart  # lazy: --help without TensorFlow

    config = quickstart.QuickstartConfig.small() if args.small else quickstart.QuickstartConfig()
    if args.epochs is not None:
        config.epochs = args.epochs
    if not args.retrain and quickstart.finished_losses(args.output, config) is not None:
        print(f"tfllm quickstart: reusing the model already trained in {args.output} "
              "(tfllm quickstart --retrain trains it again)")
    else:
        print(f"tfllm quickstart: training a {config.num_layers}-layer GPT-2 on the Python documentation "
              f"(pydoc_data.topics), {config.epochs} epoch(s)")
    result = quickstart.run(args.output, config, progress=args.progress, retrain=args.retrain)
    losses = result["losses"]
    print(f"\nloss: {losses[0]:.3f} before training -> {losses[-1]:.3f} after "
          f"(per epoch: {', '.join(f'{x:.3f}' for x in losses[1:])}); perplexity {result['perplexity']:.1f}")
    print(f"{'model and tokenizer in' if result['reused'] else 'saved model and tokenizer to'} {result['output_dir']}\n")
    print(f"samples ({result['sample_settings']}):\n")
    for prompt, text in result["samples"].items():
        print(f"--- {prompt!r}\n{text}\n")
    if not args.no_export:
        root = os.path.dirname(os.path.abspath(args.output))
        print("exporting a SavedModel (TF Serving) and a TFLite file, each checked against the Keras model ...")
        exported = quickstart.export(result["model"], result["tokenizer"], root, config, reuse=result["reused"],
                                     progress=args.progress)
        print("the exports' continuations: plain greedy decoding, which is what the exported loops compute "
              "(no n-gram blocking), so a model this small may end in blank lines (trimmed here)\n")
        for name in ("saved_model", "tflite"):
            reused = " (reused: exported from this model by an earlier run)" if name in exported["reused"] else ""
            print(f"--- {name}: {exported[name]}{reused}\n{exported[name + '_text'].rstrip()}\n")
    print(f"next: tfllm generate {result['output_dir']} \"The with statement\" --max-new-tokens 40 "
          "--no-repeat-ngram-size 3")
    return 0


def _export(args):
    from tfllm.export.from_folder import export_folder  # lazy: --help without TensorFlow

    path = export_folder(args.model_dir, args.format, output=args.output, task=args.task, overwrite=args.overwrite,
                         version=args.version, max_new_tokens=args.max_new_tokens,
                         quantize=None if args.quantize == "none" else args.quantize, cache_length=args.cache_length,
                         progress=args.progress)
    print(f"wrote {path} (checked against the Keras model)")
    return 0


def _attention(args):
    import tfllm  # lazy: --help without TensorFlow
    from tfllm import inspect  # lazy: --help without TensorFlow

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

    import tfllm  # lazy: --help without TensorFlow

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
    from tfllm.serving.server.app import serve  # lazy: --help without TensorFlow
    from tfllm.serving.server.errors import ServingError  # lazy: --help without TensorFlow
    from tfllm.serving.server.options import ServerOptions  # lazy: --help without TensorFlow

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


def _progress_argument(parser, what):
    parser.add_argument("--progress", default="auto", choices=PROGRESS_MODES,
                        help=f"how to show {what}: a bar on a terminal, a line every ~10 s otherwise (auto, the "
                             "default), bar, line or none")


def _common_arguments():
    """Flags every command takes, before or after its name (`tfllm -v export ...`, `tfllm export ... -v`)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's parser must not reset a flag given before the subcommand's name.
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help=VERBOSE_HELP)
    return common


def build_parser():
    common = _common_arguments()
    parser = argparse.ArgumentParser(prog="tfllm", description="Keras/TensorFlow toolkit for LLMs.")
    # Not from `common`: the parsers share its action objects, whose default must stay SUPPRESS.
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"tfllm {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="continue a prompt with a causal LM folder", parents=[common])
    generate.add_argument("model_dir", help="Hugging Face folder (config.json, weights, tokenizer files)")
    generate.add_argument("prompt", nargs="+", help="one or more prompts")
    generate.add_argument("--max-new-tokens", type=int, default=40, help="tokens to generate per prompt (default: 40)")
    generate.add_argument("--do-sample", action="store_true",
                          help="sample with --temperature, --top-k and --top-p (default: off, greedy decoding)")
    generate.add_argument("--temperature", type=float, default=1.0,
                          help="with --do-sample: divides the logits; below 1 is more conservative (default: 1.0)")
    generate.add_argument("--top-k", type=int, default=0,
                          help="with --do-sample: sample among the k likeliest tokens (default: 0, no limit)")
    generate.add_argument("--top-p", type=float, default=1.0,
                          help="with --do-sample: sample among the likeliest tokens whose probabilities add up to p, "
                               "in (0, 1] (default: 1.0, no limit)")
    generate.add_argument("--seed", type=int, default=None,
                          help="with --do-sample: seed of the sampling, for repeatable output (default: none, random)")
    generate.add_argument("--repetition-penalty", type=float, default=1.0,
                          help="divide the scores of tokens already in the text by this, as transformers does; "
                               "above 1 discourages repeats (default: 1.0, off)")
    generate.add_argument("--no-repeat-ngram-size", type=int, default=0,
                          help="never produce an n-gram of this many tokens twice (default: 0, off)")
    generate.set_defaults(run=_generate)

    quick = commands.add_parser("quickstart", help="train a small GPT-2 on the Python docs, save it, generate",
                                parents=[common],
                                description="Trains once: a second run reuses the finished model in --output and "
                                            "its exports (--retrain trains again).")
    quick.add_argument("--output", default=os.path.join("saved_models", "quickstart_hf"),
                       help="Hugging Face folder to write (default: saved_models/quickstart_hf)")
    quick.add_argument("--small", action="store_true", help="a reduced run (seconds, for CI)")
    quick.add_argument("--epochs", type=int, default=None, help="epochs to train (default: 14, 1 with --small)")
    quick.add_argument("--no-export", action="store_true", help="skip the SavedModel and TFLite exports")
    quick.add_argument("--retrain", action="store_true",
                       help="train again although --output holds a model this command trained with these settings; "
                            "replaces that model and quickstart's .tflite file, and adds a SavedModel version")
    _progress_argument(quick, "the training epochs and the export steps")
    quick.set_defaults(run=_quickstart)

    export = commands.add_parser("export", help="export a Hugging Face folder as a SavedModel, TFLite file or ONNX",
                                 parents=[common])
    export.add_argument("model_dir", help="Hugging Face folder (config.json, weights, tokenizer files)")
    export.add_argument("--format", choices=("saved_model", "tflite", "onnx"), default="saved_model")
    export.add_argument("--output", default=None,
                        help="SavedModel base folder (versions go under it), .tflite file or ONNX folder "
                             "(default: saved_models/NAME, saved_models/NAME.tflite, saved_models/NAME_onnx)")
    export.add_argument("--task", default="auto",
                        choices=("auto", "causal_lm", "seq2seq_lm", "sequence_classification", "backbone"),
                        help="which head to export (default: from config.json's architectures)")
    export.add_argument("--version", type=int, default=None, help="SavedModel version (default: the next one)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an existing .tflite file, ONNX folder or --version (without it they are "
                             "refused; a SavedModel export without --version always writes a new version)")
    export.add_argument("--max-new-tokens", type=int, default=32, help="SavedModel default generation length")
    export.add_argument("--quantize", default="none", choices=("none", "float16", "dynamic_int8", "int8_weight_only"),
                        help="TFLite quantization")
    export.add_argument("--cache-length", type=int, default=None, help="KV cache length of TFLite/ONNX decoders")
    _progress_argument(export, "the export's steps")
    export.set_defaults(run=_export)

    attention = commands.add_parser("attention", help="draw one layer's attention map for a text as a PNG heatmap",
                                    parents=[common])
    attention.add_argument("model_dir", help="Hugging Face folder of any family (config.json, weights, tokenizer)")
    attention.add_argument("text", help="the text to run through the model")
    attention.add_argument("--layer", type=int, default=None,
                           help="0-based layer (default: the last; negative values count from the end)")
    attention.add_argument("--head", type=_head_argument, default=0,
                           help="0-based head, or 'all' for the mean over heads (default: 0)")
    attention.add_argument("--average", action="store_true", help="average over the heads (same as --head all)")
    attention.add_argument("--output", default="attention.png", help="PNG file to write (default: attention.png)")
    attention.set_defaults(run=_attention)

    embed = commands.add_parser("embed", help="sentence embeddings and their cosine similarities", parents=[common])
    embed.add_argument("model_dir", help="Hugging Face folder of an encoder (sentence-transformers files are read)")
    embed.add_argument("sentence", nargs="+", help="one or more sentences")
    embed.add_argument("--pooling", default="auto",
                       help="auto (the folder's sentence-transformers pooling, default), cls, max, mean, "
                            "mean_sqrt_len_tokens or lasttoken")
    embed.add_argument("--output", default=None, help="also save the (num_sentences, dim) embeddings to this .npy file")
    embed.set_defaults(run=_embed)

    cli_training.add_parsers(commands, common, _progress_argument)

    from tfllm.serving.server.options import ServerOptions  # lazy: --help without TensorFlow

    serve = commands.add_parser("serve", help="serve SavedModels over TF Serving's gRPC and REST APIs", parents=[common],
                                description="Flags are tensorflow_model_server's (--port, --rest_api_port, "
                                            "--model_name, --model_base_path, --model_config_file, ...).")
    ServerOptions.add_arguments(serve)
    serve.add_argument("--grace_seconds", type=float, default=10.0,
                       help="on SIGTERM/SIGINT, how long requests in flight may take to finish (default: 10)")
    serve.set_defaults(run=_serve)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    with _quiet(args.verbose):
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s", handlers=[logging.StreamHandler(_Stderr())])
        try:
            return args.run(args)
        except (ValueError, NotImplementedError, FileNotFoundError, FileExistsError) as error:
            print(f"tfllm {args.command}: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"\ntfllm {args.command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
