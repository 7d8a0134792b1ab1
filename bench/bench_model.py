"""Model benchmark at Qwen2-Audio-7B's shapes, bf16 / int8 / int4, beside torch eager (not a test).

Synthetic random weights at the real shapes (encoder d 1280, 20 heads, ffn 5120, 1500 frames; decoder
hidden 4096, intermediate 11008, 32 heads, 32 kv heads, vocab 156032), with fewer layers than the 32
+ 32 of the real model, so the run fits memory and time; the figures are then scaled to 32 layers
as stated in the output. For each format, in a fresh process (so peak RSS is its own): encoder time
for one 30 s clip, prefill tokens/s for an 800-token prompt, decode tokens/s at 1k context, peak
RSS, and the decode bound of memory bandwidth (weight bytes per token / measured read bandwidth).
In the same run: the same layers in torch eager (bf16, same threads), and the quantization error
tables (tiny reference checkpoint, synthetic full-width decoder layer).

    .venv/bin/python bench/bench_model.py            # full run (4 + 2 layers; 5-10 minutes on 2 cores)
    .venv/bin/python bench/bench_model.py --quick    # a minute or two: fewer layers and tokens
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

REFERENCE = ROOT.parent / "shared" / "reference"
FORMATS = [None, "int8", "int4"]


def label(fmt):
    return fmt or "bf16"


# ------------------------------------------------------------------------------ synthetic checkpoints

def model_config(encoder_layers: int, decoder_layers: int, vocab: int = 156032, hidden: int = 4096,
                 intermediate: int = 11008, heads: int = 32, kv_heads: int = 32, d_model: int = 1280,
                 encoder_heads: int = 20, encoder_ffn: int = 5120) -> dict:
    return {
        "architectures": ["Qwen2AudioForConditionalGeneration"], "model_type": "qwen2_audio",
        "audio_token_index": 151646, "vocab_size": vocab, "torch_dtype": "bfloat16",
        "audio_config": {"model_type": "qwen2_audio_encoder", "num_mel_bins": 128, "max_source_positions": 1500,
                         "d_model": d_model, "encoder_layers": encoder_layers,
                         "encoder_attention_heads": encoder_heads, "encoder_ffn_dim": encoder_ffn},
        "text_config": {"model_type": "qwen2", "vocab_size": vocab, "hidden_size": hidden,
                        "intermediate_size": intermediate, "num_hidden_layers": decoder_layers,
                        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "rope_theta": 10000.0,
                        "rms_norm_eps": 1e-6, "max_position_embeddings": 8192, "tie_word_embeddings": False,
                        "torch_dtype": "bfloat16"},
    }


def tensor_shapes(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """The state dict a checkpoint of ``config`` holds, for either family: what the engine's modules ask for."""
    from qwen2audio import _core
    return [(name, tuple(shape)) for name, shape in _core.expected_tensors(json.dumps(config))]


def fast_bf16(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random BF16 bits of trained-weight size (random sign and mantissa, magnitudes 2^-10..2^-3):
    cheap to make at gigabyte scale, no denormals. Speed does not depend on the values."""
    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
    return (bits & np.uint16(0x807F)) | ((np.uint16(117) + (bits >> np.uint16(8)) % np.uint16(8)) << np.uint16(7))


def gaussian_bf16(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    from qwen2audio.safetensors_writer import float32_to_bf16_bits

    return float32_to_bf16_bits((rng.standard_normal(shape, dtype=np.float32) * std))


def write_checkpoint(folder: Path, config: dict, make, generation_config: dict | None = None) -> None:
    """Streams one tensor at a time into model.safetensors (the 7B-shaped files are gigabytes), the tensors
    of ``config``'s family."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = tensor_shapes(config)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes:
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(folder / "model.safetensors", "wb") as stream:
        stream.write(len(encoded).to_bytes(8, "little"))
        stream.write(encoded)
        for name, shape in shapes:
            stream.write(np.ascontiguousarray(make(name, shape), dtype=np.uint16).tobytes())
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "generation_config.json").write_text(json.dumps(generation_config or {"eos_token_id": [151645, 151643]}))


def norm_or_weight(rng, fast: bool, std: float = 0.02):
    one = np.uint16(0x3F80)  # bf16 1.0

    def make(name, shape):
        if name.endswith("layernorm.weight") or name.endswith("norm.weight") or name.endswith("layer_norm.weight"):
            return np.full(shape, one, dtype=np.uint16)
        return fast_bf16(rng, shape) if fast else gaussian_bf16(rng, shape, std)
    return make


# ------------------------------------------------------------------------------ our engine, per format

def run_ours(folder: Path, fmt, threads: int, prompt: int, new_tokens: int, context: int, encoder: bool) -> dict:
    command = [sys.executable, "-m", "qwen2audio.benchmark", "--json", "--model", str(folder), "--threads",
               str(threads), "--prompt-tokens", str(prompt), "--new-tokens", str(new_tokens), "--context",
               str(context)]
    if fmt:
        command += ["--quantization", fmt]
    if not encoder:
        command.append("--no-encoder")
    environment = dict(os.environ, PYTHONPATH=str(ROOT / "python") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark of {label(fmt)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ torch eager baseline

def torch_baseline(threads: int, prompt: int, context: int, encoder: bool, decode_tokens: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16

    def weight(*shape):
        return (torch.randn(*shape, generator=generator) * 0.02).to(dtype)

    result = {}
    with torch.no_grad():
        # One Qwen2 decoder layer (q/k/v with bias, RoPE, causal attention over a KV cache, SwiGLU).
        h, inter, heads, vocab = 4096, 11008, 32, 156032
        hd = h // heads
        wq, wk, wv, wo = weight(h, h), weight(h, h), weight(h, h), weight(h, h)
        bq, bk, bv = weight(h), weight(h), weight(h)
        wg, wu, wd = weight(inter, h), weight(inter, h), weight(h, inter)
        norm1, norm2, final_norm = (torch.ones(h, dtype=dtype) for _ in range(3))
        head = weight(vocab, h)
        inverse = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))

        def rms(x, w):
            x32 = x.float()
            return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype) * w

        def rope(x, positions):  # x [heads, T, hd]
            angles = positions[:, None].float() * inverse[None, :]
            cos, sin = torch.cat([angles.cos()] * 2, -1).to(dtype), torch.cat([angles.sin()] * 2, -1).to(dtype)
            half = x.shape[-1] // 2
            rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
            return x * cos + rotated * sin

        def decoder_layer(x, positions, cache_k, cache_v, start):
            t = x.shape[0]
            y = rms(x, norm1)
            q = F.linear(y, wq, bq).view(t, heads, hd).transpose(0, 1)
            k = F.linear(y, wk, bk).view(t, heads, hd).transpose(0, 1)
            v = F.linear(y, wv, bv).view(t, heads, hd).transpose(0, 1)
            q, k = rope(q, positions), rope(k, positions)
            cache_k[:, start:start + t] = k
            cache_v[:, start:start + t] = v
            keys, values = cache_k[:, :start + t], cache_v[:, :start + t]
            scores = (q @ keys.transpose(1, 2)).float() / hd ** 0.5
            mask = torch.ones(t, start + t, dtype=torch.bool).tril(start)
            scores = scores.masked_fill(~mask, float("-inf"))
            attended = (scores.softmax(-1).to(dtype) @ values).transpose(0, 1).reshape(t, h)
            x = x + F.linear(attended, wo)
            y = rms(x, norm2)
            return x + F.linear(F.silu(F.linear(y, wg)) * F.linear(y, wu), wd)

        cache_k = torch.zeros(heads, context + decode_tokens + 1, hd, dtype=dtype)
        cache_v = torch.zeros_like(cache_k)
        x = torch.randn(prompt, h, generator=generator).to(dtype)
        started = time.perf_counter()
        decoder_layer(x, torch.arange(prompt), cache_k, cache_v, 0)
        result["prefill_layer_s"] = time.perf_counter() - started
        result["prefill_tokens"] = prompt
        layer_times, head_times = [], []
        for step in range(decode_tokens):
            position = context + step
            x = torch.randn(1, h, generator=generator).to(dtype)
            started = time.perf_counter()
            out = decoder_layer(x, torch.tensor([position]), cache_k, cache_v, position)
            layer_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            F.linear(rms(out, final_norm), head)
            head_times.append(time.perf_counter() - started)
        result["decode_layer_s"] = min(layer_times)
        result["decode_head_s"] = min(head_times)
        del wq, wk, wv, wo, wg, wu, wd, head

        if encoder:  # one Whisper encoder layer over 1500 frames
            d, ffn, eheads = 1280, 5120, 20
            ehd = d // eheads
            w = {name: weight(*shape) for name, shape in [("q", (d, d)), ("k", (d, d)), ("v", (d, d)), ("o", (d, d)),
                                                          ("fc1", (ffn, d)), ("fc2", (d, ffn))]}
            b = {name: weight(size) for name, size in [("q", d), ("v", d), ("o", d), ("fc1", ffn), ("fc2", d)]}
            ln = torch.ones(d, dtype=dtype), torch.zeros(d, dtype=dtype)
            x = torch.randn(1500, d, generator=generator).to(dtype)
            started = time.perf_counter()
            y = F.layer_norm(x, (d,), *ln)
            q = F.linear(y, w["q"], b["q"]).view(1500, eheads, ehd).transpose(0, 1) * ehd ** -0.5
            k = F.linear(y, w["k"]).view(1500, eheads, ehd).transpose(0, 1)
            v = F.linear(y, w["v"], b["v"]).view(1500, eheads, ehd).transpose(0, 1)
            attended = ((q @ k.transpose(1, 2)).float().softmax(-1).to(dtype) @ v).transpose(0, 1).reshape(1500, d)
            x = x + F.linear(attended, w["o"], b["o"])
            y = F.layer_norm(x, (d,), *ln)
            x = x + F.linear(F.gelu(F.linear(y, w["fc1"], b["fc1"])), w["fc2"], b["fc2"])
            result["encoder_layer_s"] = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------ quantization error

def error_rows(models: dict, prompts: list[dict], greedy_tokens: int) -> list[dict]:
    """Logits error and token agreement of each quantized model against the bf16 one."""
    reference = models[None]
    ref_logits = [reference(**p).logits[0] for p in prompts]
    ref_greedy = [reference.generate(**p, max_new_tokens=greedy_tokens, eos_token_id=[])[0, -greedy_tokens:]
                  for p in prompts]
    rows = []
    for fmt in ("int8", "int4"):
        logits = [models[fmt](**p).logits[0] for p in prompts]
        greedy = [models[fmt].generate(**p, max_new_tokens=greedy_tokens, eos_token_id=[])[0, -greedy_tokens:]
                  for p in prompts]
        error = sum(float(((a - b) ** 2).sum()) for a, b in zip(logits, ref_logits))
        norm = sum(float((b ** 2).sum()) for b in ref_logits)
        rows.append({
            "format": fmt,
            "max_abs": max(float(np.abs(a - b).max()) for a, b in zip(logits, ref_logits)),
            "rel_rms": (error / norm) ** 0.5,
            "logit_range": max(float(np.abs(b).max()) for b in ref_logits),
            "top1": float(np.mean(np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in zip(logits, ref_logits)]))),
            "positions": sum(len(b) for b in ref_logits),
            "greedy": float(np.mean(np.concatenate([g == r for g, r in zip(greedy, ref_greedy)]))),
            # tokens before the first difference: a greedy continuation diverges for good after one
            "greedy_prefix": float(np.mean([int(np.argmin(np.append(g == r, False))) for g, r in zip(greedy, ref_greedy)])),
        })
    return rows


def tiny_error_table(workdir: Path, threads: int) -> list[dict]:
    from qwen2audio import Qwen2AudioForConditionalGeneration as Model

    folder = workdir / "tiny_bf16"
    if not (folder / "model.safetensors").exists():
        folder.mkdir(parents=True, exist_ok=True)
        with gzip.open(REFERENCE / "tiny_model" / "bf16" / "model.safetensors.gz") as source, \
                open(folder / "model.safetensors", "wb") as out:
            shutil.copyfileobj(source, out)
        for name in ("config.json", "generation_config.json"):
            shutil.copy(REFERENCE / "tiny_model" / "bf16" / name, folder / name)
    goldens = json.loads((REFERENCE / "tiny_model" / "golden.json").read_text())["goldens"]
    prompts = []
    for golden in goldens:
        prompt = {"input_ids": np.array([golden["input_ids"]])}
        if golden["audio_cases"]:
            mel = REFERENCE / "mel"
            prompt["input_features"] = np.stack([np.load(mel / f"{c}.input_features.npy") for c in golden["audio_cases"]])
            prompt["feature_attention_mask"] = np.stack(
                [np.load(mel / f"{c}.feature_attention_mask.npy") for c in golden["audio_cases"]])
        prompts.append(prompt)
    models = {fmt: Model.from_pretrained(folder, dtype="bfloat16", quantization=fmt, num_threads=threads)
              for fmt in FORMATS}
    return error_rows(models, prompts, 12)


def full_width_error_table(workdir: Path, threads: int, vocab: int, prompt_tokens: int) -> list[dict]:
    """One decoder layer at full width (4096 / 11008, 32 heads), Gaussian weights (std 0.02, as
    transformers initialises), a small audio tower (unused) and a `vocab`-row head."""
    from qwen2audio import Qwen2AudioForConditionalGeneration as Model

    folder = workdir / f"full_width_v{vocab}"
    config = model_config(1, 1, vocab=vocab, d_model=64, encoder_heads=4, encoder_ffn=128)
    config["audio_token_index"] = vocab - 1
    if not (folder / "model.safetensors").exists():
        write_checkpoint(folder, config, norm_or_weight(np.random.default_rng(1), fast=False))
    rng = np.random.default_rng(2)
    prompts = [{"input_ids": rng.integers(0, vocab - 1, size=(1, prompt_tokens))} for _ in range(2)]
    models = {fmt: Model.from_pretrained(folder, dtype="bfloat16", quantization=fmt, num_threads=threads)
              for fmt in FORMATS}
    return error_rows(models, prompts, 16)


# ------------------------------------------------------------------------------ oneDNN's own GEMM

# Engine-layer and oneDNN-products benchmarks of bench/cpp/bench_kernels.cpp: per shape, the engine's
# Gemm (variants 0 f32 / 1 bf16 weights) and oneDNN's matmul (2 f32 / 3 bf16, weights in its preferred
# layout); per layer, the engine's encoder / prefill layer (0 / 1) and only its products in oneDNN (2).
KERNEL_FILTER = r"BM_Gemm/shape:[0-5]/variant:[0-3]/|BM_(Encoder|Prefill)Layer/variant:[0-2]/"
GEMM_SHAPES = ["encoder q/k/v/out 1500x1280x1280", "encoder fc1 1500x5120x1280", "encoder fc2 1500x1280x5120",
               "prefill q/k/v/o 800x4096x4096", "prefill gate/up 800x11008x4096", "prefill down 800x4096x11008"]
GEMM_VARIANTS = ["engine f32 weights", "engine bf16 weights", "oneDNN f32", "oneDNN bf16"]
# Products of one layer, 2 flops per multiply-add: encoder (1500 frames) and decoder prefill (800 tokens).
ENCODER_LAYER_GEMM_FLOPS = 2.0 * 1500 * 1280 * (4 * 1280 + 2 * 5120)
PREFILL_LAYER_GEMM_FLOPS = 2.0 * 800 * 4096 * (4 * 4096 + 3 * 11008)


def find_kernel_bench() -> Path | None:
    """The newest bench_kernels built under build/ (cmake -DQWEN2AUDIO_BUILD_BENCH=ON)."""
    found = sorted((ROOT / "build").glob("*/bench/cpp/bench_kernels"), key=lambda path: path.stat().st_mtime)
    return found[-1] if found else None


def onednn_ceiling(binary: Path, threads: int) -> dict:
    """Runs the GEMM and layer benchmarks of bench_kernels on `threads` threads: {name: (ms, GFLOP/s or
    None, label or error)} keyed like 'gemm 3 2' (shape, variant) and 'encoder 2' / 'prefill 2'."""
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_PROC_BIND="false")
    done = subprocess.run([str(binary), f"--benchmark_filter={KERNEL_FILTER}", "--benchmark_format=json",
                           "--benchmark_min_time=0.5"], capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{binary} failed:\n{done.stderr[-3000:]}")
    results = {}
    for entry in json.loads(done.stdout)["benchmarks"]:
        parts = dict(part.split(":") for part in entry["name"].split("/")[1:] if ":" in part)
        if entry["name"].startswith("BM_Gemm"):
            key = f"gemm {parts['shape']} {parts['variant']}"
        else:
            key = f"{'encoder' if 'Encoder' in entry['name'] else 'prefill'} {parts['variant']}"
        if entry.get("error_occurred"):
            results[key] = (None, None, entry.get("error_message", "skipped"))
        else:
            results[key] = (entry["real_time"], entry.get("GFLOP/s"), entry.get("label", ""))
    return results


# ------------------------------------------------------------------------------ report

def machine() -> str:
    from qwen2audio import _core

    lines = [f"- CPU: {_core.cpu_info()['description']}"]
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        keep = ("Model name", "CPU(s):", "Thread(s) per core", "L2 cache", "L3 cache", "Hypervisor vendor")
        lines += [f"- {line.split(':', 1)[0].strip()}: {line.split(':', 1)[1].strip()}"
                  for line in lscpu.splitlines() if line.strip().startswith(keep)]
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines.append(f"- memory {memory:.0f} GiB; {platform.platform()}; load average at start "
                 f"{' / '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return "\n".join(lines)


def print_machine(threads: int) -> float:
    """Prints the machine section of a report; returns the streaming read bandwidth (GB/s) it measured."""
    from qwen2audio import _core

    print("## Machine\n")
    print(machine())
    bandwidth = _core.read_bandwidth(1 << 30, 5, threads)
    print(f"- streaming read bandwidth, {threads} threads, 1 GiB: {bandwidth:.1f} GB/s\n")
    return bandwidth


def synthetic_checkpoint(workdir: Path, encoder_layers: int, decoder_layers: int) -> tuple[Path, dict]:
    """The folder (written once) and config of a synthetic checkpoint at the 7B widths with these layers."""
    folder = workdir / f"synthetic_e{encoder_layers}_d{decoder_layers}"
    config = model_config(encoder_layers, decoder_layers)
    if not (folder / "model.safetensors").exists():
        print(f"writing the synthetic checkpoint ({encoder_layers} encoder + {decoder_layers} decoder layers) ...",
              file=sys.stderr)
        write_checkpoint(folder, config, norm_or_weight(np.random.default_rng(0), fast=True))
    return folder, config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1+1 layers, short prompt, no torch encoder layer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoder-layers", type=int, default=None, help="default 4 (quick: 1)")
    parser.add_argument("--decoder-layers", type=int, default=None, help="default 2 (quick: 1)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the synthetic checkpoints here")
    parser.add_argument("--skip-errors", action="store_true", help="only the speed tables")
    parser.add_argument("--kernel-bench", type=Path, default=None,
                        help="bench_kernels binary for oneDNN's own GEMM throughput (default: the newest under "
                             "build/*/bench/cpp; build with -DQWEN2AUDIO_BUILD_BENCH=ON)")
    args = parser.parse_args()
    quick = args.quick
    encoder_layers = args.encoder_layers or (1 if quick else 4)
    decoder_layers = args.decoder_layers or (1 if quick else 2)
    prompt, context, new_tokens = (64, 128, 4) if quick else (800, 1024, 12)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qwen2audio_bench_"))
    started = time.perf_counter()

    print_machine(args.threads)
    folder, config = synthetic_checkpoint(workdir, encoder_layers, decoder_layers)
    ours = {}
    for fmt in FORMATS:
        print(f"measuring ours, {label(fmt)} ...", file=sys.stderr)
        ours[fmt] = run_ours(folder, fmt, args.threads, prompt, new_tokens, context, encoder=fmt is None)
    kernel_bench = args.kernel_bench or find_kernel_bench()
    ceiling = None
    if kernel_bench is not None:
        print(f"measuring oneDNN's own GEMM and the engine's layers ({kernel_bench}) ...", file=sys.stderr)
        ceiling = onednn_ceiling(kernel_bench, args.threads)
    print("measuring torch eager ...", file=sys.stderr)
    torch_prompt = 8 if quick else 32
    baseline = torch_baseline(args.threads, torch_prompt, context, encoder=not quick, decode_tokens=2)

    # ---- speed table
    real_layers = 32
    bytes_measured = {fmt: decode_weight_bytes_from(config, fmt) for fmt in FORMATS}
    bytes_real = {fmt: decode_weight_bytes_from(model_config(32, 32), fmt) for fmt in FORMATS}
    print(f"## Speed ({args.threads} threads; synthetic weights, {encoder_layers} encoder and {decoder_layers} decoder "
          f"layers measured, scaled to 32 + 32)\n")
    print("Scaling: encoder and prefill time x 32 / layers measured (the conv stem and the output head are then "
          "counted a few times too: a few % high); decode time x (weight bytes of the 32-layer model / those of "
          "the model measured), i.e. the same fraction of the bandwidth bound. The bound of each format uses the "
          "read bandwidth its own process measured right before and after its decode, the higher of the two (the "
          "machine's bandwidth drifts when shared). Torch: one layer measured, x 32, plus its output head for decode.\n")
    print("| format | encoder 30 s clip, s | prefill tok/s (800) | decode tok/s @1k | decode ms/token | "
          "bound ms/token | of bound | peak RSS GiB | load s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    encoder_32 = ours[None]["encoder_s"] * real_layers / encoder_layers
    for fmt in FORMATS:
        r = ours[fmt]
        prefill_32 = r["prefill_tokens_per_s"] * decoder_layers / real_layers
        decode_measured = r["decode_s_per_token"]
        decode_32 = decode_measured * bytes_real[fmt] / bytes_measured[fmt]
        bound_32 = bytes_real[fmt] / (r["read_bandwidth_gbs"] * 1e9)
        print(f"| {label(fmt)} | {encoder_32:.1f} | {prefill_32:.1f} | {1 / decode_32:.2f} | {decode_32 * 1e3:.0f} | "
              f"{bound_32 * 1e3:.0f} | {100 * bound_32 / decode_32:.0f} % | {r['peak_rss_bytes'] / 2**30:.2f} | "
              f"{r['load_s']:.1f} |")
    torch_decode_32 = baseline["decode_layer_s"] * real_layers + baseline["decode_head_s"]
    torch_prefill_32 = baseline["prefill_tokens"] / (baseline["prefill_layer_s"] * real_layers)
    torch_encoder = baseline.get("encoder_layer_s")
    print(f"| torch eager bf16 | {'-' if torch_encoder is None else f'{torch_encoder * real_layers:.0f}'} | "
          f"{torch_prefill_32:.2f} ({torch_prompt} tokens) | {1 / torch_decode_32:.3f} | {torch_decode_32 * 1e3:.0f} | "
          f"| | | |")
    print()
    print("Measured as run (not scaled):\n")
    print("| format | layers enc/dec | encoder s | prefill tok/s | decode ms/token | weight GB/token | read GB/s | "
          "bound ms | of bound |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for fmt in FORMATS:
        r = ours[fmt]
        bound = bytes_measured[fmt] / (r["read_bandwidth_gbs"] * 1e9)
        encoder_text = f"{r['encoder_s']:.2f}" if "encoder_s" in r else "(as bf16)"
        print(f"| {label(fmt)} | {encoder_layers}/{decoder_layers} | {encoder_text} | "
              f"{r['prefill_tokens_per_s']:.1f} | {r['decode_s_per_token'] * 1e3:.0f} | {bytes_measured[fmt] / 1e9:.2f} | "
              f"{r['read_bandwidth_gbs']:.1f} | {bound * 1e3:.0f} | {100 * bound / r['decode_s_per_token']:.0f} % |")
    print(f"| torch eager bf16 | 1/1 | {'-' if torch_encoder is None else f'{torch_encoder:.1f} (1 layer)'} | "
          f"{baseline['prefill_tokens'] / baseline['prefill_layer_s']:.2f} (1 layer) | "
          f"{(baseline['decode_layer_s'] + baseline['decode_head_s']) * 1e3:.0f} (1 layer + head) | | | | |")
    print()
    ratio_decode = torch_decode_32 / (ours[None]["decode_s_per_token"] * bytes_real[None] / bytes_measured[None])
    print(f"bf16 decode vs torch eager: {ratio_decode:.1f}x; prefill: "
          f"{ours[None]['prefill_tokens_per_s'] * decoder_layers / real_layers / torch_prefill_32:.1f}x"
          + ("" if torch_encoder is None else f"; encoder: {torch_encoder * real_layers / encoder_32:.1f}x") + "\n")

    if ceiling is None:
        print("oneDNN's own GEMM: not measured (no bench_kernels binary; build with -DQWEN2AUDIO_BUILD_BENCH=ON or "
              "pass --kernel-bench)\n")
    else:
        print_ceiling(ceiling, ours[None], encoder_layers, decoder_layers, kernel_bench)

    if not args.skip_errors:
        print("## Quantization error against bf16\n")
        print("Logits of every prompt position (teacher forced), and greedy continuations generated by each model.\n")
        tables = [("tiny reference checkpoint (4 golden prompts, 2+2 layers, hidden 64)",
                   tiny_error_table(workdir, args.threads))]
        vocab = 4096 if quick else 32768
        tables.append((f"synthetic full-width decoder layer (hidden 4096, intermediate 11008, 32 heads; "
                       f"Gaussian std 0.02 weights; head of {vocab} rows; 2 random prompts of 64 tokens)",
                       full_width_error_table(workdir, args.threads, vocab, 64)))
        for title, rows in tables:
            print(f"{title}:\n")
            print("| format | max abs error | relative RMS error | largest logit | top-1 agreement | greedy tokens equal "
                  "| tokens before first difference |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for row in rows:
                print(f"| {row['format']} | {row['max_abs']:.4f} | {100 * row['rel_rms']:.2f} % | "
                      f"{row['logit_range']:.2f} | {100 * row['top1']:.1f} % of {row['positions']} | "
                      f"{100 * row['greedy']:.0f} % | {row['greedy_prefix']:.1f} |")
            print()
    print(f"(run took {time.perf_counter() - started:.0f} s; load average at end "
          f"{' / '.join(f'{v:.1f}' for v in os.getloadavg())}; checkpoints in {workdir})")
    return 0


def print_ceiling(ceiling: dict, bf16: dict, encoder_layers: int, decoder_layers: int, binary: Path) -> None:
    print(f"## Against oneDNN's own GEMM (same threads; {binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary})\n")
    print("GEMM throughput, GFLOP/s (y = x W^T + bias; oneDNN with weights reordered to its preferred layout "
          "outside the timing):\n")
    print("| shape (m x n x k) | " + " | ".join(GEMM_VARIANTS) + " | engine bf16 / oneDNN f32 |")
    print("|---|" + "---:|" * (len(GEMM_VARIANTS) + 1))
    for shape, name in enumerate(GEMM_SHAPES):
        cells = []
        for variant in range(len(GEMM_VARIANTS)):
            time_ms, rate, note = ceiling.get(f"gemm {shape} {variant}", (None, None, "not run"))
            cells.append(f"{rate:.0f}" if rate else f"- ({note})")
        engine, onednn = ceiling.get(f"gemm {shape} 1", (0, 0, ""))[1], ceiling.get(f"gemm {shape} 2", (0, 0, ""))[1]
        cells.append(f"{100 * engine / onednn:.0f} %" if engine and onednn else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("Whole layers: the engine's layer (every op: norms, attention, activations) against only that layer's "
          "products run as oneDNN f32 matmuls; and the model's own per-layer time from the table above:\n")
    print("| layer | oneDNN products only, ms | engine layer f32, ms | engine layer bf16, ms | model (bf16) per layer, "
          "ms | oneDNN products / model |")
    print("|---|---:|---:|---:|---:|---:|")
    model_ms = {"encoder": 1e3 * bf16["encoder_s"] / encoder_layers,
                "prefill": 1e3 * bf16["prefill_s"] / decoder_layers}
    for layer in ("encoder", "prefill"):
        times = [ceiling.get(f"{layer} {variant}", (None, None, ""))[0] for variant in (2, 0, 1)]
        text = [f"{t:.0f}" if t else "-" for t in times]
        fraction = f"{100 * times[0] / model_ms[layer]:.0f} %" if times[0] else "-"
        print(f"| {layer} ({'1500 frames' if layer == 'encoder' else '800 tokens'}) | {' | '.join(text)} | "
              f"{model_ms[layer]:.0f} | {fraction} |")
    encoder_products = ceiling.get("encoder 2", (None,))[0]
    if encoder_products:
        print(f"\nAt oneDNN's products-only speed the 32-layer encoder would take {32 * encoder_products / 1e3:.1f} s "
              f"({ENCODER_LAYER_GEMM_FLOPS * 32 / 1e12:.2f} TFLOP of products; attention excluded).")
    print("(The model's per-layer time also carries the conv stem or the output head of one token, divided over "
          "the layers measured.)\n")


def decode_weight_bytes_from(config: dict, fmt) -> float:
    from qwen2audio.benchmark import decode_weight_bytes

    class Text:
        pass

    text = Text()
    for key, value in config["text_config"].items():
        setattr(text, key, value)
    text.head_dim = None

    class Config:
        text_config = text

    return decode_weight_bytes(Config, fmt)["total"]


if __name__ == "__main__":
    raise SystemExit(main())
