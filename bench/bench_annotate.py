"""Clips per hour of annotation at Qwen2-Audio-7B's shapes: 5, 10 and 30 s clips with a 32-token answer,
bf16 / int8 / int4, the time split into encoder, prefill and decode, beside the behaviour before packed
encoding and batching (every clip's whole 30 s window through the encoder, batch 1, quantized prefill on
weights widened to floats) measured in the same process, and the decode bandwidth bound.

The checkpoint is synthetic (random BF16 weights at the real widths: hidden 4096, intermediate 11008, 32
heads, vocabulary 156032, encoder d_model 1280) with fewer layers than the real 32 + 32, so that three
formats fit in memory and minutes; times are scaled to 32 + 32 layers (see the printed note).

    .venv/bin/python bench/bench_annotate.py [--encoder-layers 4] [--decoder-layers 2] [--batch-size 4]
        [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import (decode_weight_bytes_from, label, model_config, print_machine,  # noqa: E402
                         synthetic_checkpoint)

REAL_LAYERS = 32


def run_format(folder: Path, fmt, threads: int, batch_size: int, clips: list[float], new_tokens: int,
               extra: tuple = ()) -> dict:
    """One format in a fresh process (each holds its own copy of the quantized weights); ``extra``: more
    ``qwen2audio bench --annotate`` options."""
    command = [sys.executable, "-m", "qwen2audio", "bench", "--annotate", "--json", "--model", str(folder),
               "--threads", str(threads), "--batch-size", str(batch_size), "--new-tokens", str(new_tokens),
               "--clip-seconds", *[str(seconds) for seconds in clips], *extra]
    if fmt:
        command += ["--quantization", fmt]
    environment = dict(os.environ, PYTHONPATH=str(ROOT / "python") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark of {label(fmt)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scaled(row: dict, encoder_layers: int, decoder_layers: int, bytes_ratio: float) -> dict:
    """A row's times at 32 + 32 layers: encoder and prefill x 32 / layers measured (the conv stem and the
    output head then count a few times: a few % high), decode x the ratio of weight bytes read per step
    (the same fraction of the bandwidth bound)."""
    encoder = row["encoder_s"] * REAL_LAYERS / encoder_layers
    prefill = row["prefill_s"] * REAL_LAYERS / decoder_layers
    decode = row["decode_s"] * bytes_ratio
    total = encoder + prefill + decode
    return {**row, "encoder_s": encoder, "prefill_s": prefill, "decode_s": decode,
            "seconds_per_clip": total / row["batch_size"], "clips_per_hour": 3600 * row["batch_size"] / total,
            "decode_tokens_per_s":
            row["batch_size"] * row["new_tokens"] / decode}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoder-layers", type=int, default=4)
    parser.add_argument("--decoder-layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--clips", type=float, nargs="+", default=[5, 10, 30])
    parser.add_argument("--formats", nargs="+", default=["bf16", "int8", "int4"])
    parser.add_argument("--workdir", type=Path, default=None, help="keep the synthetic checkpoint here")
    parser.add_argument("--repeats", type=int, default=1,
                        help="the best of this many timings of each part (a shared machine's noise is slow)")
    args = parser.parse_args()
    formats = [None if name == "bf16" else name for name in args.formats]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qwen2audio_bench_"))
    started = time.perf_counter()

    from qwen2audio import _core

    bandwidth = print_machine(args.threads)
    folder, config = synthetic_checkpoint(workdir, args.encoder_layers, args.decoder_layers)
    results = {}
    for fmt in formats:
        print(f"measuring {label(fmt)} ...", file=sys.stderr)
        results[fmt] = run_format(folder, fmt, args.threads, args.batch_size, args.clips, args.new_tokens,
                                  extra=("--repeats", str(args.repeats)))
    bandwidth_after = _core.read_bandwidth(1 << 30, 5, args.threads)
    bandwidth = max(bandwidth, bandwidth_after)

    print(f"## Annotation, {args.new_tokens}-token answers ({args.threads} threads; {args.encoder_layers} encoder and "
          f"{args.decoder_layers} decoder layers measured, scaled to 32 + 32; the best of {args.repeats} timing(s) of "
          "each part)\n")
    print("Scaling: encoder and prefill time x 32 / layers measured; decode time x (weight bytes one step reads in "
          "the 32-layer model / in the model measured). 'baseline' is the behaviour before this work, measured in "
          "the same process: the encoder over each clip's whole 30 s window, batch 1, and for int8/int4 the "
          "weights as stored (row kernels for decode, widened to floats for prefill); 'batch 1' is this engine one "
          "clip at a time.\n")
    print("| format | run | clip | batch | encoder s | prefill s | decode s | s per clip | clips/hour | "
          "decode tok/s | of bound |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    table = {}
    for fmt in formats:
        bytes_measured = decode_weight_bytes_from(config, fmt)
        bytes_real = decode_weight_bytes_from(model_config(REAL_LAYERS, REAL_LAYERS), fmt)
        bound_step = bytes_real / (bandwidth * 1e9)
        for row in results[fmt]["rows"]:
            r = scaled(row, args.encoder_layers, args.decoder_layers, bytes_real / bytes_measured)
            table[(fmt, r["run"], r["clip_seconds"])] = r
            step = r["decode_s"] / r["new_tokens"]
            print(f"| {label(fmt)} | {r['run']} | {r['clip_seconds']:g} s | {r['batch_size']} | {r['encoder_s']:.2f} | "
                  f"{r['prefill_s']:.2f} | {r['decode_s']:.2f} | {r['seconds_per_clip']:.2f} | "
                  f"{r['clips_per_hour']:.0f} | {r['decode_tokens_per_s']:.2f} | {100 * bound_step / step:.0f} % |")
    print(f"\nBound: the weight bytes one decode step reads over the better of the read bandwidths measured before and "
          f"after the runs ({bandwidth:.1f} GB/s); a batch's step reads them once for all its rows, so 'of bound' "
          "can pass 100 % for a batch.\n")

    print("## Targets\n")
    clips = args.clips

    def get(fmt, run, seconds):
        return table.get((fmt, run, seconds))

    if 5 in clips and 30 in clips and None in formats:
        ratio = get(None, "batched", 5)["encoder_s"] / get(None, "batched", 30)["encoder_s"]
        print(f"- encoder time of a 5 s clip / a 30 s clip (bf16): {100 * ratio:.0f} % (target <= 25 %)")
    for seconds in clips:
        if None in formats and "int8" in formats:
            ratio = get(None, "batched", seconds)["prefill_s"] / get("int8", "batched", seconds)["prefill_s"]
            print(f"- int8 prefill speed / bf16 prefill speed, {seconds:g} s clips: {ratio:.2f}x (target >= 1.6x on "
                  f"VNNI/AMX CPUs; integer kernels: {results['int8']['integer_kernels']})")
    for fmt in formats:
        batched, single = get(fmt, "batched", clips[0]), get(fmt, "batch 1", clips[0])
        step = single["decode_s"] / single["new_tokens"]
        bound = decode_weight_bytes_from(model_config(REAL_LAYERS, REAL_LAYERS), fmt) / (bandwidth * 1e9)
        print(f"- {label(fmt)} decode at batch 1: {100 * bound / step:.0f} % of the bandwidth bound (target >= 85 %); "
              f"tokens/s at batch {args.batch_size} / batch 1: "
              f"{batched['decode_tokens_per_s'] / single['decode_tokens_per_s']:.2f}x (target >= 3x at batch 4)")
    for fmt in formats:
        if 10 in clips:
            ratio = get(fmt, "batched", 10)["clips_per_hour"] / get(fmt, "baseline", 10)["clips_per_hour"]
            print(f"- {label(fmt)} annotation of 10 s clips, clips/hour / baseline: {ratio:.2f}x (target >= 3x for int8)")
    print(f"\n({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
