"""The ``qwen2audio`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time


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
        problems = checkpoint.check_weights()
        bad = {key: value for key, value in problems.items() if value}
        print("weights match config.json" if not bad else f"weight problems: {bad}")
    dtypes: dict[str, int] = {}
    for name in checkpoint:
        dtypes[checkpoint.dtype(name)] = dtypes.get(checkpoint.dtype(name), 0) + 1
    print(f"tensor dtypes: {dtypes}")
    if args.tensors:
        for name in checkpoint:
            print(f"  {name}: {checkpoint.dtype(name)} {list(checkpoint.shape(name))}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import demo_checkpoint

    model = args.model or os.environ.get("QWEN2AUDIO_MODEL")
    if model is None:
        model = str(demo_checkpoint())
        print(f"no --model or QWEN2AUDIO_MODEL given: using the built-in tiny random checkpoint at {model}")
    return _inspect(argparse.Namespace(model=model, tensors=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qwen2audio", description="Qwen2-Audio inference engine")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="describe a checkpoint folder")
    inspect.add_argument("model", help="checkpoint folder or .safetensors file")
    inspect.add_argument("--tensors", action="store_true", help="list every tensor")
    inspect.set_defaults(run=_inspect)
    demo = commands.add_parser("demo", help="run the main job (on a built-in tiny checkpoint without --model)")
    demo.add_argument("--model", help="a Qwen2-Audio checkpoint folder (default: $QWEN2AUDIO_MODEL or the demo)")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        print(f"qwen2audio: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
