"""The ``qwen2audio`` command line: chat, annotate, eval, bench, demo, inspect."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import textwrap
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from . import DeviceError, __version__

# An id as the Hugging Face Hub writes it (owner/name), which is not a folder here.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
_COMMAND = re.compile(r"/[A-Za-z][\w-]*(?=\s|$)")  # '/word' alone or before a space
CHAT_COMMANDS = (
    ("/audio PATH ...", "attach audio files to your next message (quote paths with spaces)"),
    ("/reset", "forget the conversation and any attached audio"),
    ("/help", "this list"),
    ("/quit", "end the session (also /exit or Ctrl-D)"),
)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, except unset ones (None/False), and keeps epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" not in text and action.option_strings and action.default is not argparse.SUPPRESS
                and action.default is not None and action.default is not False):
            text += " (default: %(default)s)"
        return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {value}")
    return value


def _device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}")
    return text


def _add_model_options(parser: argparse.ArgumentParser, device: bool = True) -> None:
    parser.add_argument("--model", required=True,
                        help="Qwen2-Audio checkpoint folder, as published on the HF Hub (downloaded beforehand)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                        help="compute dtype (auto: the checkpoint's own)")
    parser.add_argument("--quantization", default=None, choices=["int8", "int4"],
                        help="weight-only quantization applied at load (CPU only)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="compute threads (unset: OMP_NUM_THREADS, else one per physical core)")
    if device:
        parser.add_argument("--device", type=_device, default="cpu",
                            help="cpu, cuda or cuda:N (the CUDA backend, an NVIDIA GPU)")


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=_positive_int, default=256, help="most tokens generated per answer")
    parser.add_argument("--do-sample", action="store_true", default=None,
                        help="sample instead of greedy decoding (unset: generation_config.json)")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    parser.add_argument("--repetition-penalty", type=float, default=None, help="penalty for repeated tokens")
    parser.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")


def _add_long_audio_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--long-audio", default="truncate", choices=["truncate", "chunk"],
                        help="audio over 30 s: truncate (the model hears the first 30 s, as transformers does) or "
                             "chunk (consecutive 30 s windows, all heard)")


def _generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    names = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "seed")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def check_model_path(model: str) -> None:
    """Before anything loads: a hub id names the download command, any other missing folder says so."""
    if Path(model).exists():
        return
    if _HUB_ID.fullmatch(model):
        raise ValueError(f"{model!r} is not a local folder, and qwen2audio never downloads: download it with "
                         f"`huggingface-cli download {model} --local-dir DIR` then pass the folder (--model DIR)")
    raise ValueError(f"no such model folder: {model}")


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": args.dtype}
    if args.quantization:
        kwargs["quantization"] = args.quantization
    if getattr(args, "device", "cpu") != "cpu":
        kwargs["device"] = args.device
    return kwargs


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from .auto import AutoModelForCausalLM, AutoProcessor

    # The family (Qwen2-Audio or Ultravox) comes from the folder's config.json.
    kwargs = _model_kwargs(args)
    if args.threads:
        kwargs["num_threads"] = args.threads
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    processor = AutoProcessor.from_pretrained(args.model)
    return model, processor


def _note(text: str) -> None:
    print(f"qwen2audio: {text}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ chat
class _Clip:
    """An audio file read for chat: checked (exists, decodes) before any model work, cut to the model's
    window when --long-audio truncate, with one clean note when that loses audio."""

    def __init__(self, path: str, sampling_rate: int = 16000):
        from .audio import load_audio

        self.path = path
        self.rate = sampling_rate
        self.samples = load_audio(path, sampling_rate=sampling_rate)

    def for_model(self, processor: Any, long_audio: str) -> Any:
        from .audio import load_audio

        extractor = processor.feature_extractor
        if extractor.sampling_rate != self.rate:
            self.samples, self.rate = load_audio(self.path, sampling_rate=extractor.sampling_rate), extractor.sampling_rate
        seconds = self.samples.size / self.rate
        if long_audio == "truncate" and self.samples.size > extractor.n_samples:
            _note(f"{self.path} is {seconds:.1f} s; the model hears its first {extractor.chunk_length} s "
                  "(--long-audio chunk keeps all of it)")
            return self.samples[: extractor.n_samples]  # what the feature extractor keeps, without its warning
        return self.samples


def turn_summary(stats: dict[str, Any], elapsed: float) -> str:
    """One line of figures after an answer: new tokens, decode speed, prefill."""
    new_tokens = int(stats.get("new_tokens", 0))
    generating = float(stats.get("seconds", elapsed))
    rate = new_tokens / generating if generating > 0 else 0.0
    prefill = max(elapsed - generating, 0.0)
    return (f"[{new_tokens} tokens in {generating:.2f} s, {rate:.1f} tokens/s; "
            f"prefill {stats.get('prefill_tokens', 0)} tokens in {prefill:.2f} s]")


def _chat(args: argparse.Namespace) -> int:
    from .chat import ChatSession

    check_model_path(args.model)
    clips = [_Clip(path) for path in args.audio or []]  # a bad file is reported before the model loads
    started = time.perf_counter()
    model, processor = _load(args)
    print(f"[model loaded in {time.perf_counter() - started:.1f} s]", file=sys.stderr)
    session = ChatSession(model, processor, system_prompt=args.system, generation_kwargs=_generation_kwargs(args),
                          long_audio=args.long_audio)
    attached = [clip.for_model(processor, args.long_audio) for clip in clips]
    if args.prompt is not None:  # one question, one answer
        _stream_turn(session, args.prompt, attached, prefix=sys.stdout.isatty())
        return 0
    return _interactive(session, processor, args, attached, [clip.path for clip in clips])


def _interactive(session: Any, processor: Any, args: argparse.Namespace, attached: list[Any],
                 names: list[str]) -> int:
    print("Interactive chat: type a message; /help lists the commands, /quit or Ctrl-D ends.", file=sys.stderr)
    if names:
        print(f"[attached {', '.join(names)}: it goes with your first message; an empty line sends it alone]",
              file=sys.stderr)
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        text = line.strip()
        if text.startswith("//"):
            text = text[1:]  # a message that starts with '/'
        elif _COMMAND.match(text):
            command, rest = (text.split(None, 1) + [""])[:2]
            if command in ("/quit", "/exit"):
                return 0
            if command == "/help":
                _print_commands(sys.stdout)
            elif command == "/reset":
                session.reset()
                attached, names = [], []
                print("[conversation reset]", file=sys.stderr)
            elif command == "/audio":
                added = _attach(rest, processor, args.long_audio)
                attached += [samples for _, samples in added]
                names += [name for name, _ in added]
            else:
                print(f"unknown command {command}; the commands are:", file=sys.stderr)
                _print_commands(sys.stderr)
            continue
        if not text and not attached:
            continue
        try:
            _stream_turn(session, text or None, attached, prefix=True)
        except KeyboardInterrupt:
            print("\n[interrupted]", file=sys.stderr)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
        attached, names = [], []


def _print_commands(stream: Any) -> None:
    for usage, meaning in CHAT_COMMANDS:
        print(f"  {usage:<18} {meaning}", file=stream)
    print("  (start a message with // to send one that begins with /)", file=stream)


def _attach(rest: str, processor: Any, long_audio: str) -> list[tuple[str, Any]]:
    try:
        paths = shlex.split(rest)
    except ValueError as error:
        print(f"/audio: {error} (quote paths with spaces: /audio \"my file.wav\")", file=sys.stderr)
        return []
    if not paths:
        print("/audio needs a path: /audio PATH [PATH ...]", file=sys.stderr)
        return []
    added = []
    for path in paths:
        try:
            clip = _Clip(path)
        except ValueError as error:
            print(f"not attached: {error}", file=sys.stderr)
            continue
        added.append((path, clip.for_model(processor, long_audio)))
        print(f"[attached {path}]", file=sys.stderr)
    return added


def _stream_turn(session: Any, text: str | None, audio: list[Any], prefix: bool) -> None:
    started = time.perf_counter()
    if prefix:
        print("assistant> ", end="", flush=True)
    for piece in session.stream(text=text, audio=audio):
        print(piece, end="", flush=True)
    print()
    print(turn_summary(session.last_stats, time.perf_counter() - started), file=sys.stderr)


# ------------------------------------------------------------------------------------- annotate
ANNOTATE_EPILOG = """\
input: a folder (every audio file below it; id = path relative to the folder), or a manifest:
  .csv with a header row, or .jsonl with one object per line, with the columns
    path    the audio file (or 'audio' / 'file'); relative to the manifest's folder
    id      optional, unique; names the output line (default: the path as written)
    prompt  optional; this file's instruction (default: --prompt; without --prompt every row needs one)

output: one JSON line per file, flushed as written:
  id, path, prompt, answer, tokens, finish_reason ("stop": the answer ended, "length": --max-new-tokens
  cut it), duration_s, truncated (the clip was over 30 s and --long-audio truncate kept its start),
  seconds (this file's share of its batch's time), key (a hash of prompt, generation settings,
  --long-audio, dtype, quantization and model); with --logprobs also logprobs (each answer token's
  log-probability under the model) and mean_logprob; or id, path, prompt, error, key for a file that
  failed.

reruns: files whose line has the same key are skipped (an interrupted run resumes); lines of these
files made with other settings make the run stop with a message (use a new --output); --retry-errors
redoes files whose line is an error (the file is rewritten atomically without those lines first).
"""


def _annotate(args: argparse.Namespace) -> int:
    from .annotate import Annotator, annotate, check_prompts, parse_shard, read_manifest, select_shard

    items = read_manifest(args.input)
    if args.shard:
        index, count = parse_shard(args.shard)
        items = select_shard(items, index, count)
    check_prompts(items, args.prompt)
    if not args.dask_scheduler or _HUB_ID.fullmatch(args.model):
        check_model_path(args.model)  # with Dask the folder need only exist on the workers
    missing = [item for item in items if "://" not in item.path and not os.path.exists(item.path)]
    if missing:
        _note(f"{len(missing)} of {len(items)} files do not exist (e.g. {missing[0].path}); they get error lines")
    generation = _generation_kwargs(args)
    truncated = 0

    def on_record(record: dict[str, Any]) -> None:
        nonlocal truncated
        truncated += bool(record.get("truncated"))

    if args.dask_scheduler:
        from distributed import Client

        from .distributed import annotate_distributed

        with Client(args.dask_scheduler) as client:
            counts = annotate_distributed(client, args.model, items, args.prompt, args.output,
                                          batch_size=args.batch_size or 4, model_kwargs=_model_kwargs(args),
                                          generation_kwargs=generation, progress=not args.quiet,
                                          on_record=on_record, long_audio=args.long_audio,
                                          retry_errors=args.retry_errors, logprobs=args.logprobs)
    else:
        model, processor = _load(args)
        annotator = Annotator(model, processor, generation, args.long_audio, args.logprobs)
        counts = annotate(annotator, items, args.prompt, args.output, batch_size=args.batch_size,
                          progress=not args.quiet, on_record=on_record, retry_errors=args.retry_errors)
    print(json.dumps({"output": str(args.output), **counts}), file=sys.stderr)
    if truncated:
        _note(f"{truncated} file(s) were longer than 30 s: the model heard only their first 30 s (their lines say "
              '"truncated": true); --long-audio chunk keeps all of the audio')
    if not args.retry_errors:
        wanted = {item.id for item in items}
        errors = sum(1 for record in _read_lines(args.output) if record.get("id") in wanted and "error" in record)
        if errors:
            _note(f"{errors} file(s) have error lines in {args.output}; --retry-errors redoes them")
    return 0


def _read_lines(path: str) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


# ------------------------------------------------------------------------------------------ eval
def _eval(args: argparse.Namespace) -> int:
    from .eval.command import run

    return run(args)


# ----------------------------------------------------------------------------------------- bench
def _bench(args: argparse.Namespace) -> int:
    from .benchmark import run_annotation_benchmark, run_model_benchmark

    if args.annotate:
        result = run_annotation_benchmark(args.model, dtype=args.dtype, quantization=args.quantization,
                                          threads=args.threads, clip_seconds=tuple(args.clip_seconds),
                                          batch_size=args.batch_size, new_tokens=args.new_tokens,
                                          baseline=not args.no_baseline, repeats=args.repeats,
                                          print_results=not args.json)
        if args.json:
            print(json.dumps(result))
        return 0

    check_model_path(args.model)
    result = run_model_benchmark(args.model, dtype=args.dtype, quantization=args.quantization, threads=args.threads,
                                 prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, context=args.context,
                                 encoder=not args.no_encoder, print_results=not args.json)
    if args.json:
        print(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------------------ demo
def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    model = args.model or os.environ.get("QWEN2AUDIO_MODEL") or None
    if model:
        check_model_path(model)
    return run_demo(model=model, workdir=args.workdir)


# --------------------------------------------------------------------------------------- inspect
def _inspect(args: argparse.Namespace) -> int:
    from .checkpoint import Checkpoint

    check_model_path(args.model)
    started = time.perf_counter()
    checkpoint = Checkpoint(args.model)
    elapsed = time.perf_counter() - started
    print(f"{checkpoint!r} opened in {elapsed * 1000:.1f} ms")
    ultravox = checkpoint._core.ultravox_sizes
    if checkpoint.config is not None or ultravox is not None:
        if ultravox is not None:
            audio, text = SimpleNamespace(**ultravox["audio_config"]), SimpleNamespace(**ultravox["text_config"])
        else:
            audio, text = checkpoint.config.audio_config, checkpoint.config.text_config
        print(f"model type: {checkpoint.model_type}")
        print(f"audio encoder: d_model {audio.d_model}, {audio.encoder_layers} layers, "
              f"{audio.encoder_attention_heads} heads, ffn {audio.encoder_ffn_dim}")
        if ultravox is not None:
            projector = ultravox["projector"]
            print(f"projector: {projector['stack_factor']} frames stacked per token, hidden {projector['hidden_size']}, "
                  f"{projector['act']}")
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


CHAT_EPILOG = "interactive commands:\n" + "".join(f"  {usage:<18} {meaning}\n" for usage, meaning in CHAT_COMMANDS)


def _serve(args: argparse.Namespace) -> int:
    from .server import ServerLimits, ServerState, serve

    check_model_path(args.model)
    if args.allowed_local_media_path is not None and not Path(args.allowed_local_media_path).is_dir():
        raise ValueError(f"--allowed-local-media-path {args.allowed_local_media_path!r} is not a directory")
    for name in ("max_body_mb", "max_audio_seconds"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if args.max_queue < 0 or args.kv_cache_entries < 0:
        raise ValueError("--max-queue and --kv-cache-entries must be >= 0")
    limits = ServerLimits(max_body_bytes=int(args.max_body_mb * (1 << 20)), max_audio_seconds=args.max_audio_seconds,
                          max_new_tokens=args.max_new_tokens, context_length=args.context_length,
                          max_batch=args.max_batch, max_queue=args.max_queue, kv_cache_entries=args.kv_cache_entries)
    kwargs = _model_kwargs(args)
    if args.threads:
        kwargs["num_threads"] = args.threads
    name = args.served_model_name or Path(args.model).resolve().name
    state = ServerState(args.model, name, limits, allowed_media=args.allowed_local_media_path, model_kwargs=kwargs,
                        asr_style=args.asr_prompt)
    serve(state, args.host, args.port, log_level=args.log_level)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen2audio", description="Qwen2-Audio inference engine",
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], help: str, description: str | None = None,
                epilog: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=textwrap.fill(description or help, 79), epilog=epilog,
                                  formatter_class=_HelpFormatter)
        sub.set_defaults(run=run)
        return sub

    chat = command("chat", _chat, "chat with the model (streams; interactive without a prompt)",
                   "Chat with the model, streaming its answers. With PROMPT: one answer, then exit (without the "
                   "'assistant> ' prefix when stdout is not a terminal). Without PROMPT: an interactive session; "
                   "--audio files go with the first message.", CHAT_EPILOG)
    _add_model_options(chat)
    chat.add_argument("--audio", action="append", metavar="FILE",
                      help="audio file for the first turn; repeatable")
    chat.add_argument("--system", default=None, help="system prompt (unset: the chat template's)")
    _add_long_audio_option(chat)
    chat.add_argument("prompt", nargs="?", default=None,
                      help='one message, answered once (use "" to send the audio alone); omit for an '
                           "interactive session")
    _add_generation_options(chat)

    annotate = command("annotate", _annotate, "annotate a folder or manifest of audio files into JSONL",
                       "Annotate a folder or manifest of audio files into a resumable JSONL file, one line per "
                       "file.", ANNOTATE_EPILOG)
    _add_model_options(annotate)
    annotate.add_argument("--input", required=True, help="folder of audio files, or a .csv/.jsonl manifest")
    annotate.add_argument("--prompt", default=None,
                          help="instruction given with every file (optional when every manifest row has a prompt)")
    annotate.add_argument("--output", required=True, help="JSONL output (resumable: files already done are skipped)")
    annotate.add_argument("--retry-errors", action="store_true", help="redo the files whose line is an error")
    annotate.add_argument("--logprobs", action="store_true",
                          help="add each answer token's log-probability (logprobs) and their mean (mean_logprob) to "
                               "every line: a confidence for review")
    annotate.add_argument("--batch-size", type=_positive_int, default=None,
                          help="files per generate call (default: the fastest of 1, 2, 4, 8 per file, from a short "
                               "measurement of the decode step on this model and machine; 4 with --dask-scheduler)")
    annotate.add_argument("--shard", default=None, help="I/N: process only shard I of N (1-based, deterministic)")
    annotate.add_argument("--dask-scheduler", default=None, help="run on a Dask distributed cluster at this address")
    annotate.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_long_audio_option(annotate)
    _add_generation_options(annotate)

    bench = command("bench", _bench, "measure encoder, prefill and decode speed on a model")
    _add_model_options(bench, device=False)
    # (the benchmark checks these three itself, naming the parameter)
    bench.add_argument("--prompt-tokens", type=int, default=800, help="prompt length of the prefill timing")
    bench.add_argument("--new-tokens", type=int, default=32, help="decode steps timed (the first comes from prefill)")
    bench.add_argument("--context", type=int, default=1024, help="tokens in the KV cache when decode is timed")
    bench.add_argument("--no-encoder", action="store_true", help="skip the audio encoder timing")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    bench.add_argument("--annotate", action="store_true",
                       help="clips per hour of annotation instead: encoder, prefill and --new-tokens decode steps "
                            "for batches of --clip-seconds clips, beside the unbatched whole-window baseline")
    bench.add_argument("--clip-seconds", type=float, nargs="+", default=[5, 10, 30], help="clip lengths (--annotate)")
    bench.add_argument("--batch-size", type=_positive_int, default=4, help="clips per batch (--annotate)")
    bench.add_argument("--no-baseline", action="store_true", help="skip the baseline run (--annotate)")
    bench.add_argument("--repeats", type=_positive_int, default=1,
                       help="the best of this many timings of each part (--annotate): a shared machine's noise is slow")

    serve = command("serve", _serve, "an OpenAI-compatible HTTP server (chat completions with audio, transcriptions)",
                    "An OpenAI-compatible HTTP server: POST /v1/chat/completions (audio as input_audio or audio_url "
                    "content parts), POST /v1/audio/transcriptions, GET /v1/models, GET /health (200 once the model "
                    "is loaded) and GET /stats. Requests are decoded together: each is prefilled, then joins the "
                    "running batch at the next step (continuous batching). Requests beyond --max-batch wait in a "
                    "queue of --max-queue; beyond that the server answers 503 with Retry-After.")
    _add_model_options(serve, device=False)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--served-model-name", default=None,
                       help="the model id clients name (default: the checkpoint folder's name)")
    serve.add_argument("--max-batch", type=_positive_int, default=8, help="requests decoded together")
    serve.add_argument("--max-queue", type=int, default=32,
                       help="requests waiting for a slot before the server answers 503")
    serve.add_argument("--context-length", type=_positive_int, default=4096,
                       help="most tokens per request, prompt and answer (capped by the model's)")
    serve.add_argument("--max-new-tokens", type=_positive_int, default=1024,
                       help="most tokens generated per request (also the default of max_tokens)")
    serve.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body, in MiB")
    serve.add_argument("--max-audio-seconds", type=float, default=600.0, help="most audio per request, in seconds")
    serve.add_argument("--kv-cache-entries", type=int, default=8,
                       help="finished conversations whose KV cache is kept for a follow-up turn (LRU)")
    serve.add_argument("--allowed-local-media-path", default=None,
                       help="a directory whose files audio_url may name by path (unset: no local paths)")
    serve.add_argument("--asr-prompt", default="auto", choices=["auto", "base", "chat"],
                       help="transcription prompt: base (the ASR prompt of Qwen2-Audio-7B) or chat (an instruction, "
                            "for Instruct checkpoints); auto: chat when the folder is named *Instruct* or has a chat "
                            "template file")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])

    demo = command("demo", _demo, "the main job end to end (built-in tiny checkpoint without --model)")
    demo.add_argument("--model", help="a Qwen2-Audio checkpoint folder (unset: $QWEN2AUDIO_MODEL, else the built-in "
                                      "tiny random checkpoint)")
    demo.add_argument("--workdir", default=None,
                      help="keep the clips and annotations in this folder (unset: a temporary folder, removed)")

    from .eval.command import EPILOG as EVAL_EPILOG, add_arguments as add_eval_arguments

    evaluate = command("eval", _eval, "run and score the Qwen2-Audio paper's evaluations as the official scripts do",
                       "Runs ASR, speech translation, emotion, vocal sound and AIR-Bench evaluations on this engine "
                       "and scores them the way the official Qwen2-Audio and AIR-Bench scripts do, number for "
                       "number; --score-only scores responses produced anywhere.", epilog=EVAL_EPILOG)
    _add_model_options(evaluate)
    for action in evaluate._actions:
        if action.dest == "model":
            action.required = False  # --score-only loads no model
    _add_long_audio_option(evaluate)
    add_eval_arguments(evaluate)

    inspect = command("inspect", _inspect, "describe a checkpoint folder")
    inspect.add_argument("model", help="checkpoint folder or .safetensors file")
    inspect.add_argument("--tensors", action="store_true", help="list every tensor")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .audio import AudioTruncatedWarning

    # The commands cut long clips themselves and print one line naming --long-audio chunk instead.
    warnings.filterwarnings("ignore", category=AudioTruncatedWarning)
    try:
        return args.run(args)
    except (ValueError, OSError, DeviceError) as error:
        print(f"qwen2audio: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nqwen2audio: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
