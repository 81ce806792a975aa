"""`tfllm train` and `tfllm eval`: their flags and handlers (the work is in `tfllm.training`)."""

import dataclasses
import json
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def _train_config(args):
    """`tfllm train`'s flags as a `TrainConfig`."""
    from tfllm.training.trainer import TrainConfig  # lazy: --help without TensorFlow

    names = [field.name for field in dataclasses.fields(TrainConfig) if field.name not in ("callbacks", "verbose")]
    config = TrainConfig(**{name: getattr(args, name) for name in names})
    config.verbose = {"auto": "auto", "bar": 1, "line": 2, "none": 0}[args.progress]
    return config


def _train(args):
    from tfllm.training import trainer  # lazy: --help without TensorFlow

    try:
        result = trainer.train(_train_config(args))
    except trainer.TrainingInterrupted as interrupted:
        newline = "\n" if sys.stdout.isatty() else ""  # ends a progress bar's line
        rerun = "resume" if interrupted.checkpoint_step is not None else "start again"
        print(f"{newline}tfllm train: {interrupted}; rerun the same command to {rerun}", file=sys.stderr)
        return EXIT_INTERRUPTED
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
    from tfllm.training import trainer  # lazy: --help without TensorFlow

    metrics = trainer.evaluate(args.model, args.data, task=args.task, batch_size=args.batch_size,
                               seq_len=args.seq_len, text_field=args.text_field, text_pair_field=args.text_pair_field,
                               label_field=args.label_field, source_field=args.source_field,
                               target_field=args.target_field,
                               progress="none" if args.json else args.progress)
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


def add_parsers(commands, common, progress_argument):
    """Adds `tfllm train` and `tfllm eval` to `commands` (`common`: the flags every command takes)."""
    # Choices are checked by TrainConfig.validate: importing the training modules here would load
    # TensorFlow for every command.
    train = commands.add_parser("train", help="train or fine-tune a model with model.fit under tf.distribute",
                                parents=[common],
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
    progress_argument(train, "the training steps (numbered from the run's start, also when resumed)")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("eval", help="loss, perplexity and accuracy of a trained folder on data",
                                   parents=[common])
    evaluate.add_argument("--model", required=True, metavar="DIR", help="Hugging Face folder with its tokenizer")
    _add_data_arguments(evaluate, "the model's task (default: causal_lm)")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as one JSON object (and no progress)")
    progress_argument(evaluate, "the batches evaluated")
    evaluate.set_defaults(run=_eval)
