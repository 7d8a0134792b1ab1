"""Memory of a loaded bf16 checkpoint: the weights are used in place from the memory map, so the
process never holds a second copy, and deleting the model returns the memory.

    QWEN2AUDIO_CORE_DIR=build/<dir>/py .venv/bin/python bench/bench_memory.py [--preset 7b] [--layers 4]

A synthetic checkpoint is written first (qwen2audio.safetensors_writer, every tensor BF16) with the
real Qwen2-Audio-7B shapes — vocabulary 156032, hidden 4096, MLP 11008, 32 heads; Whisper-large
encoder layers of width 1280 — but only a few layers, so it is several GB rather than 16. Each
measurement then runs in a fresh Python process that reads VmRSS / VmHWM from /proc/self/status:

  ours      baseline (package imported) -> after from_pretrained -> after one forward pass (a prompt
            with a short clip, so the encoder, projector, every decoder layer and lm_head run)
            -> after `del model; gc.collect()` -> after malloc_trim -> after a second model is
            loaded, run and deleted the same way
  baseline  what a loader that copies gives: every tensor read into NumPy arrays (np.fromfile), as
            a non-mmap loader would, before any conversion

The property checked, counting from the baseline process: peak RSS (VmHWM) grows by at most the file
size + 10% through loading and a forward pass; after the delete the mapping's pages are gone from RSS
at once (no mapping of the file is left), and once glibc hands back its cache of freed heap blocks
(malloc_trim) RSS is within 10% of the file size of where it started; a second model then adds
nothing more (what the first left is the runtime's one-time cost, not the model's). Pages of the
mapping count towards RSS only once touched, so right after loading RSS has barely moved.
`--json` prints the figures as JSON (tests/python/test_memory.py runs the small preset this way).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

# Qwen2-Audio-7B's config.json with the layer counts left to the caller.
PRESETS = {
    "7b": dict(vocab=156032, hidden=4096, intermediate=11008, heads=32, kv_heads=32, layers=4,
               d_model=1280, ffn=5120, audio_heads=20, audio_layers=2, audio_token=151646),
    # ~190 MB: what the pytest check uses.
    "small": dict(vocab=32000, hidden=1024, intermediate=2816, heads=16, kv_heads=16, layers=2,
                  d_model=256, ffn=1024, audio_heads=4, audio_layers=1, audio_token=31999),
}


def config_for(shape: dict) -> dict:
    return {
        "model_type": "qwen2_audio",
        "audio_token_index": shape["audio_token"],
        "audio_config": {"model_type": "qwen2_audio_encoder", "num_mel_bins": 128, "encoder_layers": shape["audio_layers"],
                         "encoder_attention_heads": shape["audio_heads"], "encoder_ffn_dim": shape["ffn"],
                         "d_model": shape["d_model"], "max_source_positions": 1500},
        "text_config": {"model_type": "qwen2", "vocab_size": shape["vocab"], "hidden_size": shape["hidden"],
                        "intermediate_size": shape["intermediate"], "num_hidden_layers": shape["layers"],
                        "num_attention_heads": shape["heads"], "num_key_value_heads": shape["kv_heads"],
                        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                        "tie_word_embeddings": False, "eos_token_id": 151645 % shape["vocab"]},
        "torch_dtype": "bfloat16",
    }


def write_checkpoint(folder: Path, shape: dict) -> int:
    """Writes model.safetensors (all BF16) and config.json; returns the weight file's size."""
    from qwen2audio import _core
    from qwen2audio.safetensors_writer import float32_to_bf16_bits, save_file

    config = config_for(shape)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    rng = np.random.default_rng(0)
    # One random block tiled over each tensor: realistic magnitudes (std 0.02) without generating
    # billions of random numbers. 4099 is prime, so consecutive rows do not repeat.
    pattern = float32_to_bf16_bits(rng.normal(0.0, 0.02, 4099).astype(np.float32))
    one = float32_to_bf16_bits(np.ones(1, np.float32))[0]
    tensors = {}
    for name, tensor_shape in _core.expected_tensors(json.dumps(config)):
        if "norm" in name and name.endswith("weight"):
            tensors[name] = np.full(tensor_shape, one, np.uint16)
        else:
            tensors[name] = np.resize(pattern, tensor_shape)
    save_file(tensors, folder / "model.safetensors", bf16=set(tensors), metadata={"format": "pt"})
    return (folder / "model.safetensors").stat().st_size


def status() -> dict[str, int]:
    """VmRSS, VmHWM, RssFile, RssAnon of this process; the resident part of any mapping of a
    model.safetensors ("Checkpoint") and the address space such mappings span ("CheckpointMapped"),
    in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssFile", "RssAnon"):
            fields[key] = int(value.split()[0]) * 1024
    fields["Checkpoint"] = fields["CheckpointMapped"] = 0
    in_checkpoint = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if not line[:1].isupper():  # a mapping's header line: address range, ..., path
            in_checkpoint = line.endswith("model.safetensors")
        elif in_checkpoint and line.startswith("Rss:"):
            fields["Checkpoint"] += int(line.split()[1]) * 1024
        elif in_checkpoint and line.startswith("Size:"):
            fields["CheckpointMapped"] += int(line.split()[1]) * 1024
    return fields


def load_and_run(folder: Path):
    """from_pretrained, then one forward pass over a prompt with a 2 s clip (200 valid mel frames ->
    50 audio tokens), so the encoder, projector, every decoder layer and lm_head run."""
    import qwen2audio
    from qwen2audio.audio import num_audio_tokens

    config = json.loads((folder / "config.json").read_text())
    start = time.perf_counter()
    model = qwen2audio.Qwen2AudioForConditionalGeneration.from_pretrained(folder)
    load_seconds = time.perf_counter() - start
    loaded = status()
    frames = 200
    features = np.random.default_rng(1).normal(-0.5, 0.3, (1, 128, 3000)).astype(np.float32)
    mask = np.zeros((1, 3000), np.int64)
    mask[0, :frames] = 1
    text = list(range(100, 116))
    ids = np.array([text[:8] + [config["audio_token_index"]] * num_audio_tokens(frames) + text[8:]], np.int64)
    start = time.perf_counter()
    logits = model(input_ids=ids, input_features=features, feature_attention_mask=mask).logits
    forward_seconds = time.perf_counter() - start
    assert np.isfinite(logits).all()
    return model, loaded, {"load_seconds": load_seconds, "forward_seconds": forward_seconds,
                           "prompt_tokens": int(ids.shape[1])}


def release() -> None:
    gc.collect()
    # What is left after the delete is glibc's heap of freed activations and scratch, kept for reuse;
    # malloc_trim shows it is free memory rather than anything still held.
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_ours(folder: Path) -> dict:
    import qwen2audio.audio  # noqa: F401 - the package's modules are part of the baseline
    import qwen2audio.modeling  # noqa: F401

    stages = {"baseline": status()}
    model, stages["loaded"], timings = load_and_run(folder)
    stages["forward"] = status()
    mapped, copied, dtype = model._core.mapped_weight_bytes, model._core.copied_weight_bytes, model.dtype
    del model
    gc.collect()
    stages["released"] = status()
    release()
    stages["trimmed"] = status()
    # A second model, loaded, run and deleted the same way: whatever the first left behind is the
    # runtime's one-time cost (threads, kernels, library code) if this one adds nothing to it.
    model, _, _ = load_and_run(folder)
    del model
    release()
    stages["second_model_trimmed"] = status()
    return {"stages": stages, **timings, "mapped_weight_bytes": mapped, "copied_weight_bytes": copied,
            "dtype": dtype}


def measure_copying_loader(folder: Path) -> dict:
    """The baseline: every tensor copied out of the file into its own NumPy array."""
    path = folder / "model.safetensors"
    stages = {"baseline": status()}
    with open(path, "rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_length))
    header.pop("__metadata__", None)
    start = time.perf_counter()
    arrays = {}
    with open(path, "rb") as handle:
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            handle.seek(8 + header_length + begin)
            arrays[name] = np.fromfile(handle, dtype=np.uint16, count=(end - begin) // 2).reshape(entry["shape"])
    load_seconds = time.perf_counter() - start
    stages["loaded"] = status()
    del arrays
    gc.collect()
    stages["released"] = status()
    return {"stages": stages, "load_seconds": load_seconds}


def run_child(mode: str, folder: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, f"--measure-{mode}", str(folder)], check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def evaluate(size: int, ours: dict) -> dict:
    """Growth is counted from the baseline process (interpreter, NumPy, the package): what the model costs."""
    stages = ours["stages"]
    base = stages["baseline"]["VmRSS"]
    peak = max(stages["loaded"]["VmHWM"], stages["forward"]["VmHWM"]) - base
    return {
        "peak_growth": peak,
        "peak_within_size_plus_10pct": peak <= 1.10 * size,
        "load_growth": stages["loaded"]["VmRSS"] - base,
        "forward_growth": stages["forward"]["VmRSS"] - base,
        "released_growth": stages["released"]["VmRSS"] - base,
        "released_checkpoint": stages["released"]["Checkpoint"],
        "released_checkpoint_mapped": stages["released"]["CheckpointMapped"],
        "trimmed_growth": stages["trimmed"]["VmRSS"] - base,
        "second_model_growth": stages["second_model_trimmed"]["VmRSS"] - stages["trimmed"]["VmRSS"],
        "memory_returned": stages["released"]["CheckpointMapped"] == 0
        and stages["trimmed"]["VmRSS"] - base <= 0.10 * size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="7b")
    parser.add_argument("--layers", type=int, help="decoder layers (default: the preset's)")
    parser.add_argument("--dir", type=Path, help="where to write the checkpoint (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint afterwards")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--measure-ours", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure-copy", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_ours:
        print(json.dumps(measure_ours(args.measure_ours)))
        return 0
    if args.measure_copy:
        print(json.dumps(measure_copying_loader(args.measure_copy)))
        return 0

    shape = dict(PRESETS[args.preset])
    if args.layers is not None:
        shape["layers"] = args.layers
    scratch = None
    if args.dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="qwen2audio-bench-memory-")
        folder = Path(scratch.name)
    else:
        folder = args.dir
    try:
        start = time.perf_counter()
        size = run_child_writer(folder, args.preset, shape)
        write_seconds = time.perf_counter() - start
        ours = run_child("ours", folder)
        copy = run_child("copy", folder)
    finally:
        if scratch is not None and not args.keep:
            scratch.cleanup()
    verdict = evaluate(size, ours)
    if args.json:
        print(json.dumps({"file_bytes": size, "ours": ours, "copy": copy, **verdict}))
    else:
        report(args.preset, shape, size, write_seconds, ours, copy, verdict)
    return 0 if verdict["peak_within_size_plus_10pct"] and verdict["memory_returned"] else 1


def run_child_writer(folder: Path, preset: str, shape: dict) -> int:
    # Written in a child so the writer's arrays never count towards the measured processes.
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_memory; "
            f"print(bench_memory.write_checkpoint(__import__('pathlib').Path({str(folder)!r}), "
            f"json.loads({json.dumps(json.dumps(shape))})))")
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(result.stdout.strip().splitlines()[-1])


def report(preset: str, shape: dict, size: int, write_seconds: float, ours: dict, copy: dict, verdict: dict) -> None:
    mb = lambda value: f"{value / 2**20:9.1f}"  # noqa: E731
    print(f"synthetic bf16 checkpoint, preset {preset}: {shape['layers']} decoder layers (hidden {shape['hidden']}, "
          f"MLP {shape['intermediate']}, vocab {shape['vocab']}), {shape['audio_layers']} encoder layers "
          f"(d_model {shape['d_model']}); model.safetensors {size / 2**30:.2f} GiB, written in {write_seconds:.0f} s")
    print(f"ours: dtype {ours['dtype']}, weights mapped {ours['mapped_weight_bytes'] / 2**20:.1f} MiB, "
          f"copied {ours['copied_weight_bytes'] / 2**20:.1f} MiB; load {ours['load_seconds']:.2f} s, "
          f"forward of {ours['prompt_tokens']} tokens {ours['forward_seconds']:.2f} s")
    print(f"\n{'MiB':<32}{'VmRSS':>10}{'VmHWM':>10}{'RssFile':>10}{'RssAnon':>10}{'mapped ckpt':>12}")
    for label, stages in (("ours", ours["stages"]), ("copying loader (NumPy)", copy["stages"])):
        for stage, values in stages.items():
            print(f"{label + ' ' + stage:<32}{mb(values['VmRSS'])} {mb(values['VmHWM'])} "
                  f"{mb(values.get('RssFile', 0))} {mb(values.get('RssAnon', 0))} {mb(values['Checkpoint'])}  ")
    print(f"\nfile size                  {size / 2**20:10.1f} MiB")
    print(f"ours: peak RSS growth      {verdict['peak_growth'] / 2**20:10.1f} MiB = {verdict['peak_growth'] / size:.3f} x file "
          f"size ({'within' if verdict['peak_within_size_plus_10pct'] else 'OVER'} file size + 10%)")
    print(f"ours: RSS growth on load   {verdict['load_growth'] / 2**20:10.1f} MiB (pages are mapped, not read)")
    print(f"ours: after forward        {verdict['forward_growth'] / 2**20:10.1f} MiB above the baseline")
    print(f"ours: after del + gc       {verdict['released_growth'] / 2**20:10.1f} MiB above the baseline; "
          f"{verdict['released_checkpoint_mapped'] / 2**20:.1f} MiB of the checkpoint still mapped")
    print(f"ours: after malloc_trim    {verdict['trimmed_growth'] / 2**20:10.1f} MiB above the baseline "
          f"({'within' if verdict['memory_returned'] else 'OVER'} 10% of the file size)")
    print(f"ours: a second model       {verdict['second_model_growth'] / 2**20:10.1f} MiB more after it too is "
          "loaded, run and deleted")
    copy_growth = copy["stages"]["loaded"]["VmRSS"] - copy["stages"]["baseline"]["VmRSS"]
    print(f"copying loader: growth     {copy_growth / 2**20:10.1f} MiB on load ({copy['load_seconds']:.1f} s), "
          "before any bf16 -> f32 conversion")


if __name__ == "__main__":
    sys.exit(main())
