"""The ``qwen2audio`` command line: chat, annotate, bench, demo, inspect."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _add_model_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required, help="Qwen2-Audio checkpoint folder (as published on the HF Hub)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                        help="compute dtype (auto: the checkpoint's own)")
    parser.add_argument("--quantization", default=None, choices=["int8", "int4"],
                        help="weight-only quantization applied at load")
    parser.add_argument("--threads", type=int, default=None, help="compute threads (default: physical cores)")


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--do-sample", action="store_true", default=None, help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--repetition-penalty", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)


def _generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    names = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "seed")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from .modeling import Qwen2AudioForConditionalGeneration
    from .processor import Qwen2AudioProcessor

    kwargs: dict[str, Any] = {"dtype": args.dtype}
    if args.quantization:
        kwargs["quantization"] = args.quantization
    if args.threads:
        kwargs["num_threads"] = args.threads
    model = Qwen2AudioForConditionalGeneration.from_pretrained(args.model, **kwargs)
    processor = Qwen2AudioProcessor.from_pretrained(args.model)
    return model, processor


# ------------------------------------------------------------------------------------------ chat
def _chat(args: argparse.Namespace) -> int:
    from .chat import ChatSession

    started = time.perf_counter()
    model, processor = _load(args)
    print(f"[model loaded in {time.perf_counter() - started:.1f} s]", file=sys.stderr)
    session = ChatSession(model, processor, system_prompt=args.system, generation_kwargs=_generation_kwargs(args))
    if args.prompt is not None or args.audio:
        _stream_turn(session, args.prompt, args.audio or [])
        return 0
    print("Interactive chat. '/audio PATH' attaches a file to your next message, '/reset' starts over, "
          "'/quit' or Ctrl-D ends.", file=sys.stderr)
    attached: list[str] = list(args.audio or [])
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            return 0
        command = line.strip()
        if command in ("/quit", "/exit"):
            return 0
        if command == "/reset":
            session.reset()
            attached.clear()
            continue
        if command.startswith("/audio"):
            path = command[len("/audio"):].strip()
            if not path or not Path(path).is_file():
                print(f"no such file: {path!r}", file=sys.stderr)
            else:
                attached.append(path)
                print(f"[attached {path}]", file=sys.stderr)
            continue
        if not command and not attached:
            continue
        try:
            _stream_turn(session, command or None, attached)
        except KeyboardInterrupt:
            print("\n[interrupted]", file=sys.stderr)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
        attached = []


def _stream_turn(session: Any, text: str | None, audio: list[str]) -> None:
    started = time.perf_counter()
    pieces = 0
    print("assistant> ", end="", flush=True)
    for piece in session.stream(text=text, audio=audio):
        print(piece, end="", flush=True)
        pieces += 1
    stats = session.last_stats
    print()
    print(f"[{stats.get('new_tokens', 0)} tokens in {time.perf_counter() - started:.2f} s; "
          f"prefill {stats.get('prefill_tokens', 0)} tokens]", file=sys.stderr)


# ------------------------------------------------------------------------------------- annotate
def _annotate(args: argparse.Namespace) -> int:
    from .annotate import Annotator, annotate, parse_shard, read_manifest, select_shard

    items = read_manifest(args.input)
    if args.shard:
        index, count = parse_shard(args.shard)
        items = select_shard(items, index, count)
    generation = _generation_kwargs(args)
    if args.dask_scheduler:
        from distributed import Client

        from .distributed import annotate_distributed

        model_kwargs = {"dtype": args.dtype}
        if args.quantization:
            model_kwargs["quantization"] = args.quantization
        with Client(args.dask_scheduler) as client:
            counts = annotate_distributed(client, args.model, items, args.prompt, args.output,
                                          batch_size=args.batch_size, model_kwargs=model_kwargs,
                                          generation_kwargs=generation, progress=not args.quiet)
    else:
        model, processor = _load(args)
        counts = annotate(Annotator(model, processor, generation), items, args.prompt, args.output,
                          batch_size=args.batch_size, progress=not args.quiet)
    print(json.dumps({"output": str(args.output), **counts}), file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------- bench
def _bench(args: argparse.Namespace) -> int:
    from .benchmark import run_model_benchmark

    result = run_model_benchmark(args.model, dtype=args.dtype, quantization=args.quantization, threads=args.threads,
                                 prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, context=args.context,
                                 encoder=not args.no_encoder, print_results=not args.json)
    if args.json:
        print(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------------------ demo
def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(model=args.model or os.environ.get("QWEN2AUDIO_MODEL"), workdir=args.workdir)


# --------------------------------------------------------------------------------------- inspect
def _inspect(args: argparse.Namespace) -> int:
    from .checkpoint import Checkpoint

    started = time.perf_counter()
    checkpoint = Checkpoint(args.model)
    elapsed = time.perf_counter() - started
    print(f"{checkpoint!r} opened in {elapsed * 1000:.1f} ms")
    if checkpoint.config is not None:
        audio, text = checkpoint.config.audio_config, checkpoint.config.text_config
        print(f"audio encoder: d_model {audio.d_model}, {audio.encoder_layers} layers, "
              f"{audio.encoder_attention_heads} heads, ffn {audio.encoder_ffn_dim}")
        print(f"text decoder: hidden {text.hidden_size}, {text.num_hidden_layers} layers, {text.num_attention_heads} "
              f"heads ({text.num_key_value_heads} kv), vocab {text.vocab_size}")
        problems = {key: value for key, value in checkpoint.check_weights().items() if value}
        print("weights match config.json" if not problems else f"weight problems: {problems}")
    dtypes: dict[str, int] = {}
    for name in checkpoint:
        dtypes[checkpoint.dtype(name)] = dtypes.get(checkpoint.dtype(name), 0) + 1
    print(f"tensor dtypes: {dtypes}")
    if args.tensors:
        for name in checkpoint:
            print(f"  {name}: {checkpoint.dtype(name)} {list(checkpoint.shape(name))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen2audio", description="Qwen2-Audio inference engine")
    commands = parser.add_subparsers(dest="command", required=True)

    chat = commands.add_parser("chat", help="chat with the model (streams; interactive without a prompt)")
    _add_model_options(chat)
    chat.add_argument("--audio", action="append", help="audio file for the (first) turn; repeatable")
    chat.add_argument("--system", default=None, help="system prompt (default: the template's)")
    chat.add_argument("prompt", nargs="?", default=None, help="one message; omit for an interactive session")
    _add_generation_options(chat)
    chat.set_defaults(run=_chat)

    annotate = commands.add_parser("annotate", help="annotate a folder or manifest of audio files into JSONL")
    _add_model_options(annotate)
    annotate.add_argument("--input", required=True, help="folder of audio files, or a .csv/.jsonl manifest")
    annotate.add_argument("--prompt", required=True, help="instruction given with every file")
    annotate.add_argument("--output", required=True, help="JSONL output (resumable: existing ids are skipped)")
    annotate.add_argument("--batch-size", type=int, default=4)
    annotate.add_argument("--shard", default=None, help="I/N: process only shard I of N (1-based, deterministic)")
    annotate.add_argument("--dask-scheduler", default=None, help="run on a Dask distributed cluster at this address")
    annotate.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_generation_options(annotate)
    annotate.set_defaults(run=_annotate)

    bench = commands.add_parser("bench", help="measure encoder, prefill and decode speed on a model")
    _add_model_options(bench)
    bench.add_argument("--prompt-tokens", type=int, default=800)
    bench.add_argument("--new-tokens", type=int, default=32, help="decode steps timed (the first comes from prefill)")
    bench.add_argument("--context", type=int, default=1024, help="tokens in the KV cache when decode is timed")
    bench.add_argument("--no-encoder", action="store_true", help="skip the audio encoder timing")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    bench.set_defaults(run=_bench)

    demo = commands.add_parser("demo", help="the main job end to end (built-in tiny checkpoint without --model)")
    demo.add_argument("--model", help="a Qwen2-Audio checkpoint folder (default: $QWEN2AUDIO_MODEL or the demo)")
    demo.add_argument("--workdir", default=None, help="where the demo writes its clips and output")
    demo.set_defaults(run=_demo)

    inspect = commands.add_parser("inspect", help="describe a checkpoint folder")
    inspect.add_argument("model", help="checkpoint folder or .safetensors file")
    inspect.add_argument("--tensors", action="store_true", help="list every tensor")
    inspect.set_defaults(run=_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        print(f"qwen2audio: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nqwen2audio: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
