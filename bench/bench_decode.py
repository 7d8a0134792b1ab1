"""Decode at Qwen2-Audio-7B's decoder widths against the memory bandwidth, batch 1 and batch 4, bf16 / int8 /
int4 (not a test).

Every decode step of the whole model is paired with a streaming read right before it, bench_gemv.cpp's
method for the kernels alone (qwen2audio.benchmark.measure_decode_paired): this machine's bandwidth moves
from second to second (other tenants), and a bound read once before or after a run compares a step with a
different machine. Batch 1 and batch 4 take turns step by step, so their ratio sees the same machine too.
'of read' is the weight bytes one step reads (every decoder projection and the head, once whatever the
batch) per step time over the paired read; a batch passes 100 % when it costs less than that many single
steps. 'batch tokens/s over batch 1' is the median over rounds of the two steps' ratio; 'per paired read'
scales each step's time by its own read first, since the bandwidth also moves between the two steps of a
round. The synthetic checkpoint has the real widths and vocabulary with fewer decoder layers (each format
in its own process, holding its own quantized copy).

    .venv/bin/python bench/bench_decode.py [--decoder-layers 2] [--steps 24] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import label, print_machine, synthetic_checkpoint  # noqa: E402

# One process per measurement (each holds its own quantized copy); compare_builds.py runs it too, with
# QWEN2AUDIO_CORE_DIR naming the build, which "core" reports back.
WORKER = """
import json, sys
sys.path.insert(0, {python!r})
from qwen2audio import Qwen2AudioForConditionalGeneration, _core
from qwen2audio.benchmark import decode_weight_bytes, measure_decode_paired
fmt = {fmt!r}
model = Qwen2AudioForConditionalGeneration.from_pretrained({folder!r}, quantization=fmt, num_threads={threads})
weight_bytes = decode_weight_bytes(model.config, fmt)["total"]
report = measure_decode_paired(model, weight_bytes, batch_sizes=(1, 4), steps={steps}, context={context},
                               probe_bytes={probe_bytes})
print(json.dumps({{"core": _core.__file__, "weight_bytes": weight_bytes,
                  "rows": {{str(k): v for k, v in report.items()}}}}))
"""


def worker_code(folder: Path, fmt, threads: int, steps: int, context: int, probe_bytes: int = 512 << 20) -> str:
    return WORKER.format(python=str(ROOT / "python"), fmt=fmt, folder=str(folder), threads=threads, steps=steps,
                         context=context, probe_bytes=probe_bytes)


def run_format(folder: Path, fmt, threads: int, steps: int, context: int) -> dict:
    code = worker_code(folder, fmt, threads, steps, context)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{label(fmt)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoder-layers", type=int, default=4, help="only names the checkpoint (decode skips it)")
    parser.add_argument("--decoder-layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24, help="paired steps per batch size")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--formats", nargs="+", default=["bf16", "int8", "int4"])
    parser.add_argument("--workdir", type=Path, default=None, help="keep the synthetic checkpoint here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qwen2audio_bench_"))

    print_machine(args.threads)
    folder, _ = synthetic_checkpoint(workdir, args.encoder_layers, args.decoder_layers)
    print(f"## Decode, paired with reads ({args.threads} threads; {args.decoder_layers} decoder layers at the 7B "
          f"widths + the 156032 x 4096 head; {args.steps} steps per batch size at {args.context} tokens of "
          "context)\n")
    print("| format | GB a step | batch | ms a step | paired read GB/s | of read (median) | range | "
          "batch tokens/s over batch 1 | the same, per paired read |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for name in args.formats:
        fmt = None if name == "bf16" else name
        result = run_format(folder, fmt, args.threads, args.steps, args.context)
        for batch, row in result["rows"].items():
            speedup = f"{row['speedup']:.2f}x" if "speedup" in row else ""
            per_read = f"{row['speedup_per_read']:.2f}x" if "speedup_per_read" in row else ""
            print(f"| {label(fmt)} | {result['weight_bytes'] / 1e9:.2f} | {batch} | {row['step_s'] * 1e3:.1f} | "
                  f"{row['read_gbs']:.1f} | {100 * row['fraction']:.0f} % | {100 * row['min']:.0f}-"
                  f"{100 * row['max']:.0f} % | {speedup} | {per_read} |", flush=True)
    print("\nTargets (issue 14): batch 1 >= 85 % of the read for every format; batch 4 >= 3x the tokens/s of "
          "batch 1.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
