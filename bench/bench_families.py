"""Ultravox v0.5 (Llama 3.2 1B) beside Qwen2-Audio-7B on this engine, in one run: encoder time of a clip,
prefill tokens/s, decode tokens/s and clips per hour of annotation (10 s clips, 32-token answers), bf16 and
int8, with the machine's read bandwidth measured in the same run.

Both checkpoints are synthetic (random BF16 weights at the real widths), written to a temporary folder and
deleted afterwards:
- Ultravox-1B: the real v0.5 shapes (../shared/reference/ultravox_tiny/real_v0_5_llama_3_2_1b): Whisper-large-v3-
  turbo encoder (32 layers, d 1280), stacked-frame projector (10240 -> 4096 -> SwiGLU -> 2048), Llama 3.2 1B
  decoder (16 layers, hidden 2048, 32 heads / 8 KV heads, intermediate 8192, vocabulary 128256, tied head).
  All 16 decoder layers are measured; the encoder too unless --ultravox-encoder-layers is lower (then its time
  is scaled to 32 layers, as for Qwen2-Audio).
- Qwen2-Audio-7B: bench_annotate.py's checkpoint (4 encoder + 2 decoder layers at the 7B widths), scaled to
  32 + 32 layers the way bench_annotate.py scales it (encoder and prefill x 32 / layers, decode x the ratio
  of weight bytes one step reads).

    .venv/bin/python bench/bench_families.py [--formats bf16 int8] [--batch-size 4] [--clip-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_annotate import REAL_LAYERS, run_format, scaled  # noqa: E402
from bench_model import (decode_weight_bytes_from, label, model_config, norm_or_weight, print_machine,  # noqa: E402
                         synthetic_checkpoint, write_checkpoint)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ultravox_tiny" / "real_v0_5_llama_3_2_1b"
ULTRAVOX_ENCODER_LAYERS = 32


def ultravox_config(encoder_layers: int) -> dict:
    """config.json of the hub's v0.5 1B upload with the resolved Llama 3.2 1B text_config embedded (the engine
    reads a self-contained folder) and the encoder's layer count set to what is measured."""
    config = json.loads((REFERENCE / "config.json").read_text())
    config["text_config"] = json.loads((REFERENCE / "text_config_resolved.json").read_text())
    config["text_model_id"] = config["audio_model_id"] = None  # the configs are embedded, not fetched by id
    config["audio_config"] = {**config["audio_config"], "encoder_layers": encoder_layers,
                              "num_hidden_layers": encoder_layers}
    return config


def ultravox_decode_bytes(config: dict, fmt) -> float:
    """Weight bytes one decode step reads: the decoder projections in ``fmt`` (int8/int4 with a float32 scale per
    128 inputs) and the tied head, which stays bf16 (the embedding is never quantized)."""
    text = config["text_config"]
    h, inter, head_dim = text["hidden_size"], text["intermediate_size"], text["head_dim"]
    q, kv = text["num_attention_heads"] * head_dim, text["num_key_value_heads"] * head_dim
    matrices = [(q, h), (kv, h), (kv, h), (h, q), (inter, h), (inter, h), (h, inter)]

    def size(rows: int, cols: int) -> float:
        if fmt is None:
            return 2.0 * rows * cols
        return rows * ((cols if fmt == "int8" else (cols + 1) // 2) + 4 * -(-cols // 128))

    layers = sum(size(rows, cols) for rows, cols in matrices) * text["num_hidden_layers"]
    return layers + 2.0 * text["vocab_size"] * h


def summary(row: dict) -> dict:
    prefill_tokens = row["prompt_tokens"] * row["batch_size"]
    return {"encoder_per_clip_s": row["encoder_s"] / row["batch_size"],
            "prefill_tokens_per_s": prefill_tokens / row["prefill_s"],
            "decode_tokens_per_s": row["decode_tokens_per_s"], "clips_per_hour": row["clips_per_hour"],
            "decode_step_s": row["decode_s"] / row["new_tokens"], "prompt_tokens": row["prompt_tokens"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--formats", nargs="+", default=["bf16", "int8"])
    parser.add_argument("--ultravox-encoder-layers", type=int, default=ULTRAVOX_ENCODER_LAYERS)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings of each part")
    parser.add_argument("--qwen-encoder-layers", type=int, default=4)
    parser.add_argument("--qwen-decoder-layers", type=int, default=2)
    args = parser.parse_args()
    formats = [None if name == "bf16" else name for name in args.formats]
    started = time.perf_counter()
    from qwen2audio import _core

    workdir = Path(tempfile.mkdtemp(prefix="qwen2audio_families_", dir="/tmp"))
    try:
        bandwidth = print_machine(args.threads)
        uv_config = ultravox_config(args.ultravox_encoder_layers)
        uv_folder = workdir / "ultravox_1b"
        print("writing the synthetic Ultravox-1B checkpoint ...", file=sys.stderr)
        write_checkpoint(uv_folder, uv_config, norm_or_weight(np.random.default_rng(1), fast=True),
                         generation_config={"eos_token_id": [128001, 128008, 128009], "pad_token_id": 128009})
        qwen_folder, qwen_config = synthetic_checkpoint(workdir, args.qwen_encoder_layers, args.qwen_decoder_layers)

        results: dict = {}
        for fmt in formats:
            for name, folder in (("Ultravox-1B", uv_folder), ("Qwen2-Audio-7B", qwen_folder)):
                print(f"measuring {name} {label(fmt)} ...", file=sys.stderr)
                results[(name, fmt)] = run_format(folder, fmt, args.threads, args.batch_size, [args.clip_seconds],
                                                  args.new_tokens, ("--no-baseline", "--repeats", str(args.repeats)))
        bandwidth = max(bandwidth, _core.read_bandwidth(1 << 30, 5, args.threads))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    seconds = f"{args.clip_seconds:g} s"
    print(f"## Ultravox-1B beside Qwen2-Audio-7B: {seconds} clips, {args.new_tokens}-token answers, "
          f"{args.threads} threads\n")
    print(f"Ultravox-1B: {args.ultravox_encoder_layers} encoder layers (of 32) and all 16 decoder layers measured"
          + ("" if args.ultravox_encoder_layers == 32 else ", encoder time scaled to 32 layers") +
          f". Qwen2-Audio-7B: {args.qwen_encoder_layers} encoder + {args.qwen_decoder_layers} decoder layers "
          "measured, scaled to 32 + 32 as bench_annotate.py does. Prefill: the clip's audio tokens plus 40 text "
          "tokens per prompt, the batch's prompts in one call; decode: the batch's rows per second; 'of bound': "
          "the time of a step if it only read the weights (bytes / read bandwidth) over its measured time (a step "
          f"reads them once for the whole batch). Each part: the best of {args.repeats} timings.\n")
    print("| model | format | batch | encoder s per clip | prompt tokens | prefill tok/s | decode tok/s | "
          "decode ms/step | of bound | clips/hour |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    table: dict = {}
    for fmt in formats:
        for name in ("Ultravox-1B", "Qwen2-Audio-7B"):
            if name == "Ultravox-1B":
                step_bytes = ultravox_decode_bytes(uv_config, fmt)
                def scale(row: dict) -> dict:  # only the encoder may have fewer layers than the real model
                    encoder = row["encoder_s"] * ULTRAVOX_ENCODER_LAYERS / args.ultravox_encoder_layers
                    return {**row, "encoder_s": encoder}
            else:
                step_bytes = decode_weight_bytes_from(model_config(REAL_LAYERS, REAL_LAYERS), fmt)
                ratio = step_bytes / decode_weight_bytes_from(qwen_config, fmt)
                def scale(row: dict, ratio: float = ratio) -> dict:
                    return scaled(row, args.qwen_encoder_layers, args.qwen_decoder_layers, ratio)
            for row in results[(name, fmt)]["rows"]:
                row = scale(row)
                total = row["encoder_s"] + row["prefill_s"] + row["decode_s"]
                row["clips_per_hour"] = 3600 * row["batch_size"] / total
                row["decode_tokens_per_s"] = row["batch_size"] * row["new_tokens"] / row["decode_s"]
                figures = summary(row)
                table[(name, fmt, row["batch_size"])] = figures
                bound = step_bytes / (bandwidth * 1e9) / figures["decode_step_s"]
                print(f"| {name} | {label(fmt)} | {row['batch_size']} | {figures['encoder_per_clip_s']:.2f} | "
                      f"{figures['prompt_tokens']} | {figures['prefill_tokens_per_s']:.0f} | "
                      f"{figures['decode_tokens_per_s']:.1f} | {1e3 * figures['decode_step_s']:.0f} | "
                      f"{100 * bound:.0f} % | {figures['clips_per_hour']:.0f} |")
    print(f"\nRead bandwidth, the better of before and after the runs: {bandwidth:.1f} GB/s. Weight bytes per "
          f"decode step: Ultravox-1B {ultravox_decode_bytes(uv_config, None) / 1e9:.2f} GB (bf16), Qwen2-Audio-7B "
          f"{decode_weight_bytes_from(model_config(REAL_LAYERS, REAL_LAYERS), None) / 1e9:.2f} GB (bf16).\n")
    for fmt in formats:
        for batch in sorted({key[2] for key in table}):
            uv, qwen = table.get(("Ultravox-1B", fmt, batch)), table.get(("Qwen2-Audio-7B", fmt, batch))
            if uv and qwen:
                print(f"- {label(fmt)}, batch {batch}: Ultravox-1B / Qwen2-Audio-7B clips per hour "
                      f"{uv['clips_per_hour'] / qwen['clips_per_hour']:.2f}x, decode tokens/s "
                      f"{uv['decode_tokens_per_s'] / qwen['decode_tokens_per_s']:.2f}x, encoder time per clip "
                      f"{uv['encoder_per_clip_s'] / qwen['encoder_per_clip_s']:.2f}x")
    print(f"\n({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
