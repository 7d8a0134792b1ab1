"""Two builds of the engine, the same whole-model decode measurement, in ABBA order (not a test).

A kernel change that wins in bench_gemv.cpp can still lose in the model (other code around it, the
layout of the whole library, weights mapped from the checkpoint), and this machine's bandwidth moves
by tens of percent between runs, so a before/after pair of bench_decode.py runs minutes apart tells
little. Here each build is a `_core` extension in a folder of its own, loaded through
QWEN2AUDIO_CORE_DIR; round r runs A then B when r is even and B then A when it is odd (a drift of
the machine hits both alike), each run a fresh process measuring bench_decode.py's paired fraction
at batch 1 and batch 4. The report gives each build's medians and, per round, B over A for each
figure with the count of rounds B came out higher. Run the same folder twice first (A/A): the
spread of those ratios is the noise a real difference has to clear.

A second build of another checkout or commit, beside the project's own:

    git worktree add /tmp/other <commit>   # then change it
    cmake -S /tmp/other -B /tmp/build_other -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \\
          -DQWEN2AUDIO_PYTHON_OUTPUT_DIR=/tmp/core_other
    cmake --build /tmp/build_other --target _core
    .venv/bin/python bench/compare_builds.py python/qwen2audio /tmp/core_other [--format bf16] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decode import worker_code  # noqa: E402
from bench_model import label, print_machine, synthetic_checkpoint  # noqa: E402

# The figures compared, as (name printed, batch size, field of measure_decode_paired's report).
FIGURES = (("batch 1, of read", "1", "fraction"), ("batch 4, of read", "4", "fraction"),
           ("batch 4 / batch 1", "4", "speedup"))


def core_library(folder: Path) -> Path:
    """The `_core` extension in `folder`; ValueError naming the folder when there is none or several."""
    found = sorted(folder.glob("_core*.so")) if folder.is_dir() else []
    if len(found) != 1:
        what = "not a folder" if not folder.is_dir() else f"{len(found)} _core*.so files"
        raise ValueError(f"{folder}: {what}; give the folder holding one build's _core extension")
    return found[0]


def run_build(core_dir: Path, folder: Path, fmt: Optional[str], threads: int, steps: int, context: int,
              probe_bytes: int) -> dict:
    code = worker_code(folder, fmt, threads, steps, context, probe_bytes)
    env = dict(os.environ, QWEN2AUDIO_CORE_DIR=str(core_dir))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the build in {core_dir} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The package falls back to its own _core when the folder's is not importable: say so, or an A/B
    # comparison silently becomes A/A.
    if Path(result["core"]).resolve() != core_library(core_dir).resolve():
        raise RuntimeError(f"the worker loaded {result['core']}, not the build in {core_dir}")
    return result["rows"]


def summarize(first: list[dict], second: list[dict]) -> dict:
    """Medians of each figure per build, and per round the second build's figure over the first's
    (round r of each list measured in the same round), with how many rounds it came out higher."""
    if len(first) != len(second) or not first:
        raise ValueError("need the same number of rounds, at least one, for both builds")
    summary = {}
    for name, batch, field in FIGURES:
        a = [rows[batch][field] for rows in first]
        b = [rows[batch][field] for rows in second]
        ratios = [y / x for x, y in zip(a, b)]
        summary[name] = {"first": statistics.median(a), "second": statistics.median(b),
                         "ratios": ratios, "ratio": statistics.median(ratios),
                         "second_higher": sum(r > 1 for r in ratios)}
    return summary


def shown(name: str, value: float) -> str:
    return f"{value:.2f}x" if "/" in name else f"{100 * value:.1f} %"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path, help="folder holding build A's _core extension")
    parser.add_argument("second", type=Path, help="folder holding build B's _core extension (A's again: A/A)")
    parser.add_argument("--format", default="bf16", choices=["bf16", "int8", "int4"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24, help="paired steps per batch size and run")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe-mib", type=int, default=512, help="size of the streaming read paired with a step")
    parser.add_argument("--decoder-layers", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the synthetic checkpoint here")
    parser.add_argument("--model", type=Path, default=None, help="a checkpoint folder instead of the synthetic one")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    try:
        builds = [core_library(args.first), core_library(args.second)]
    except ValueError as error:
        parser.error(str(error))
    fmt = None if args.format == "bf16" else args.format

    print_machine(args.threads)
    if args.model is None:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qwen2audio_bench_"))
        folder, _ = synthetic_checkpoint(workdir, 4, args.decoder_layers)
    else:
        folder = args.model
    print(f"A: {builds[0]}\nB: {builds[1]}\n{label(fmt)}, {folder}, {args.steps} paired steps per batch size at "
          f"{args.context} tokens of context, {args.rounds} rounds (A then B in even rounds, B then A in odd)\n")
    results: list[list[dict]] = [[], []]
    for round_index in range(args.rounds):
        order = (0, 1) if round_index % 2 == 0 else (1, 0)
        for which in order:
            rows = run_build(builds[which].parent, folder, fmt, args.threads, args.steps, args.context,
                             args.probe_mib << 20)
            results[which].append(rows)
            print(f"round {round_index} {'AB'[which]}: batch 1 {100 * rows['1']['fraction']:.0f} % of "
                  f"{rows['1']['read_gbs']:.1f} GB/s, batch 4 {100 * rows['4']['fraction']:.0f} %, "
                  f"batch 4 / batch 1 {rows['4']['speedup']:.2f}x", flush=True)
    summary = summarize(results[0], results[1])
    print("\n| figure | A (median) | B (median) | B / A per round | median | B higher |")
    print("|---|---:|---:|---|---:|---:|")
    for name, row in summary.items():
        print(f"| {name} | {shown(name, row['first'])} | {shown(name, row['second'])} | "
              f"{' '.join(f'{r:.3f}' for r in row['ratios'])} | {row['ratio']:.3f} | "
              f"{row['second_higher']} of {args.rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
