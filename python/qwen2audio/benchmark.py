"""Speed of a model folder: encoder time for a 30 s clip, prefill tokens/s, decode tokens/s at a given
context, peak memory, and the decode bound set by memory bandwidth.

``qwen2audio bench --model DIR`` prints these for one folder; ``bench/bench_model.py`` runs it on
synthetic checkpoints at Qwen2-Audio-7B's shapes for bf16, int8 and int4, beside torch eager.
This is a measurement tool, not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any, Optional

import numpy as np

__all__ = ["run_model_benchmark", "measure_model", "measure_decode_paired", "decode_weight_bytes", "read_bandwidth",
           "measure_annotation", "run_annotation_benchmark", "synthetic_clips"]

# Token ids drawn for synthetic prompts: ordinary text ids, below the special tokens.
_MAX_TEXT_ID = 150000


def read_bandwidth(threads: int, gib: float = 1.0) -> float:
    """Best streaming read GB/s with ``threads`` threads over a buffer far larger than the caches."""
    from . import _core

    return _core.read_bandwidth(int(gib * (1 << 30)), 5, int(threads))


def decode_weight_bytes(config: Any, quantization: Optional[str], group_size: int = 128,
                        float_bytes: int = 2) -> dict:
    """Bytes of weights one decode step reads: every decoder projection and the output head (the
    embedding reads one row). Unquantized weights take ``float_bytes`` each (2 for bf16, 4 for
    float32); quantized formats count their float32 scales, one per row and group of ``group_size``
    inputs (kernels/cpu/gemv.h)."""
    text = config.text_config
    hidden, intermediate = text.hidden_size, text.intermediate_size
    head_dim = getattr(text, "head_dim", None) or hidden // text.num_attention_heads
    q_width = text.num_attention_heads * head_dim
    kv_width = text.num_key_value_heads * head_dim
    # (out_features, in_features) of q, k, v, o, gate, up, down
    projections = [(q_width, hidden), (kv_width, hidden), (kv_width, hidden), (hidden, q_width),
                   (intermediate, hidden), (intermediate, hidden), (hidden, intermediate)]

    def matrix_bytes(rows: int, cols: int, fmt: Optional[str]) -> float:
        if fmt is None:
            return float(float_bytes * rows * cols)
        groups = -(-cols // group_size)
        code_bytes = cols if fmt == "int8" else (cols + 1) // 2
        return float(rows * (code_bytes + 4 * groups))

    head_format = None if quantization is None else "int8"  # model/quantization.h: lm_head is int8
    per_layer = sum(matrix_bytes(rows, cols, quantization) for rows, cols in projections)
    layers = per_layer * text.num_hidden_layers
    head = matrix_bytes(text.vocab_size, hidden, head_format)
    return {"layers": layers, "head": head, "total": layers + head, "per_layer": per_layer}


def _status_bytes(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss_bytes() -> int:
    """This process's peak resident memory. VmHWM belongs to the current address space; ru_maxrss
    would carry over a parent's peak across fork and exec."""
    peak = _status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB


def _is_ultravox(model: Any) -> bool:
    from .ultravox import UltravoxForConditionalGeneration

    return isinstance(model, UltravoxForConditionalGeneration)


def _text_id_limit(model: Any) -> int:
    # Llama 3's special tokens take the last 256 ids (128000+); Qwen2's start above 151643.
    return min(_MAX_TEXT_ID, int(model.config.text_config.vocab_size) - 256)


def _audio_workload(model: Any, count: int, seconds: float, rng: np.random.Generator,
                    full_window: bool = False) -> tuple[Any, int]:
    """``count`` synthetic clips of ``seconds`` in the model's own audio inputs: a callable that runs the
    encoder and projector on them, and the audio tokens each clip puts in a prompt. ``full_window``: each
    clip's whole 30 s window, as the reference Qwen2-Audio runs every clip (Qwen2-Audio only: Ultravox's
    reference already pads only to the longest clip)."""
    features, mask = synthetic_clips(count, seconds, rng)
    if _is_ultravox(model):
        if full_window:
            raise ValueError("the 30 s window baseline is Qwen2-Audio's; Ultravox pads to the longest clip")
        frames = int(mask[0].sum())
        values = np.ascontiguousarray(features[:, :, :frames])
        lens = np.full(count, frames, dtype=np.int64)
        from . import _core

        return (lambda: model.audio_embeddings(values, lens)), \
            _core.ultravox_audio_token_count(frames, model._core.stack_factor)
    tokens = int(model.audio_token_counts(mask)[0])
    if full_window:
        return (lambda: model._core.audio_embeddings(features, mask, full_window=True)), tokens
    return (lambda: model.encode_audio(features, mask)), tokens


def measure_model(model: Any, prompt_tokens: int = 800, new_tokens: int = 32, context: int = 1024,
                  encoder: bool = True, encoder_repeats: int = 2, seed: int = 0,
                  paired_weight_bytes: Optional[float] = None, paired_steps: int = 8) -> dict:
    """Times one loaded model. Prefill: ``prompt_tokens`` random text tokens in one call. Decode:
    after filling the cache to ``context`` tokens, ``new_tokens`` greedy steps (the first comes from
    the prefill's logits, so new_tokens - 1 forward passes are timed). With ``paired_weight_bytes`` (the
    bytes one step reads), ``paired_steps`` more steps of the same session each paired with a read
    (:func:`measure_decode_paired`): ``decode_paired_fraction`` and ``decode_paired_read_gbs``."""
    if prompt_tokens < 1 or new_tokens < 2 or context < prompt_tokens:
        raise ValueError("need prompt_tokens >= 1, new_tokens >= 2 and context >= prompt_tokens")
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {}
    if encoder:
        # What generation runs (each clip's attended positions), for 5, 10 and 30 s clips, and the
        # whole 30 s window every clip costs in the reference implementation.
        for seconds in (5, 10, 30):
            encode, _ = _audio_workload(model, 1, seconds, rng)
            result[f"encoder_{seconds}s_s"] = _best_time(encode, encoder_repeats)
        if not _is_ultravox(model):
            encode, _ = _audio_workload(model, 1, 5, rng, full_window=True)
            result["encoder_window_s"] = _best_time(encode, encoder_repeats)
        result["encoder_s"] = result["encoder_30s_s"]
    limit = _text_id_limit(model)
    session = model.start_session()
    session.append(rng.integers(0, limit, size=(1, 16)))  # threads and caches warm
    session.reset()
    prompt = rng.integers(0, limit, size=(1, prompt_tokens))
    started = time.perf_counter()
    session.append(prompt)
    result["prefill_s"] = time.perf_counter() - started
    result["prefill_tokens_per_s"] = prompt_tokens / result["prefill_s"]
    if context > prompt_tokens:
        session.append(rng.integers(0, limit, size=(1, context - prompt_tokens)))
    # The bound's bandwidth is read right before and right after the decode, and the higher of the
    # two kept: on a shared machine it drifts, and the bound must not be a lucky low. Its 1 GiB buffer
    # would raise the high-water mark, so the peak is taken before it; decoding allocates nothing per
    # token, and what it holds afterwards is counted from the resident size.
    peak_rss = _peak_rss_bytes()
    bandwidth_before = read_bandwidth(model.num_threads)
    started = time.perf_counter()
    session.generate(max_new_tokens=new_tokens, eos_token_id=[])
    decode_s = time.perf_counter() - started
    peak_rss = max(peak_rss, _status_bytes("VmRSS") or 0)
    result["read_bandwidth_gbs"] = max(bandwidth_before, read_bandwidth(model.num_threads))
    if paired_weight_bytes is not None:
        paired = measure_decode_paired(model, paired_weight_bytes, steps=paired_steps, sessions=[session])[1]
        result["decode_paired_fraction"] = paired["fraction"]
        result["decode_paired_read_gbs"] = paired["read_gbs"]
    result["decode_s_per_token"] = decode_s / (new_tokens - 1)
    result["decode_tokens_per_s"] = (new_tokens - 1) / decode_s
    result["decode_context"] = context
    result["peak_rss_bytes"] = peak_rss
    return result


def measure_decode_paired(model: Any, weight_bytes: float, batch_sizes: tuple[int, ...] = (1,), steps: int = 16,
                          context: int = 256, probe_bytes: int = 512 << 20, seed: int = 0,
                          sessions: Optional[list] = None) -> dict:
    """Decode steps each paired with a streaming read right before it, bench/bench_gemv.cpp's method for
    the kernels applied to the whole model. The bandwidth of a shared machine moves from second to second,
    so a bound read before or after a run is not the bandwidth the run saw; the read just before a step is
    (taken after another read, not after a step: a read that follows a step measured ~3 % slower, which
    would flatter the step). One session per batch size, filled to ``context`` tokens; the sizes take turns
    step by step, so their ratio sees the same machine too.

    Per batch size: the median step (``step_s``), the median paired read (``read_gbs``), and the median
    over steps of ``weight_bytes`` per step time over the paired read (``fraction``, with its ``min`` and
    ``max``): one step reads every weight once whatever the batch, so a batch's fraction passes 1 when
    the batch costs less than that many single steps. ``speedup`` (batch sizes > 1): the median over rounds
    of batch tokens/s over the first batch size's tokens/s in the same round; ``speedup_per_read``: the
    same with each step's time multiplied by its paired read (the ratio at equal bandwidth, as ``fraction``
    is). ``sessions``: sessions already holding their context, one per batch size (a real model's prefill
    of ``context`` tokens takes long)."""
    from . import _core

    if steps < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError("need steps >= 1 and batch sizes >= 1")
    if sessions is None:
        rng = np.random.default_rng(seed)
        limit = _text_id_limit(model)
        sessions = []
        for batch in batch_sizes:
            session = model.start_session(batch)
            session.append(rng.integers(0, limit, size=(batch, context)))
            session.generate(max_new_tokens=2, eos_token_id=[])  # threads, scratch and caches warm
            sessions.append(session)
    elif len(sessions) != len(batch_sizes):
        raise ValueError("give one session per batch size")
    probe = _core.ReadProbe(probe_bytes)
    threads = model.num_threads
    times: list[list[float]] = [[] for _ in batch_sizes]
    reads: list[list[float]] = [[] for _ in batch_sizes]
    for _ in range(steps):
        for index, session in enumerate(sessions):
            probe.read_gbs(threads)
            reads[index].append(probe.read_gbs(threads))
            started = time.perf_counter()
            session.generate(max_new_tokens=1, eos_token_id=[])
            times[index].append(time.perf_counter() - started)
    result: dict[int, dict] = {}
    for index, batch in enumerate(batch_sizes):
        fractions = [weight_bytes / step / (read * 1e9) for step, read in zip(times[index], reads[index])]
        entry = {"step_s": float(np.median(times[index])), "read_gbs": float(np.median(reads[index])),
                 "fraction": float(np.median(fractions)), "min": min(fractions), "max": max(fractions)}
        if index > 0:
            entry["speedup"] = float(np.median([batch * first / (batch_sizes[0] * step)
                                                for first, step in zip(times[0], times[index])]))
            # The same ratio with each step's time scaled by its own paired read: the bandwidth moves
            # between the two steps of a round too, and a memory-bound step's time follows it.
            entry["speedup_per_read"] = float(np.median([
                batch * first * first_read / (batch_sizes[0] * step * read)
                for first, first_read, step, read in zip(times[0], reads[0], times[index], reads[index])]))
        result[batch] = entry
    return result


def _best_time(work: Any, repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def synthetic_clips(count: int, seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel features of ``count`` clips of ``seconds`` (100 frames a second, the rest of the 30 s
    window padding, as the feature extractor leaves it) and their feature_attention_mask."""
    frames = int(round(seconds * 100))
    if not 1 <= frames <= 3000:
        raise ValueError(f"clip length must be within (0, 30] s, got {seconds}")
    features = np.full((count, 128, 3000), -0.75, dtype=np.float32)  # the padding's log-mel value
    features[:, :, :frames] = (rng.standard_normal((count, 128, frames)) * 0.5).astype(np.float32)
    mask = np.zeros((count, 3000), dtype=np.int64)
    mask[:, :frames] = 1
    return features, mask


# Text tokens around a clip's audio tokens in an annotation prompt: the chat template's system turn and
# roles, "Audio 1:", the audio markers and a one-sentence instruction.
ANNOTATION_TEXT_TOKENS = 40


def measure_annotation(model: Any, clip_seconds: float, batch_size: int = 1, new_tokens: int = 32,
                       encoder_window: bool = False, repeats: int = 1, seed: int = 0) -> dict:
    """One annotation batch, timed part by part on the loaded model: the encoder for ``batch_size``
    clips of ``clip_seconds`` (packed, or each clip's whole 30 s window with ``encoder_window``), the
    decoder prefill of their prompts (audio tokens plus ANNOTATION_TEXT_TOKENS), and ``new_tokens``
    decode steps of the batch. ``clips_per_hour`` follows from their sum."""
    rng = np.random.default_rng(seed)
    encode, audio_tokens = _audio_workload(model, batch_size, clip_seconds, rng, full_window=encoder_window)
    encoder_s = _best_time(encode, repeats)
    prompt_tokens = audio_tokens + ANNOTATION_TEXT_TOKENS
    prompt = rng.integers(0, _text_id_limit(model), size=(batch_size, prompt_tokens))
    # One untimed pass sizes the session's buffers and the thread team, so the timed passes measure
    # compute: the first touch of a batch's buffers (KV cache, activations) costs about 0.1 s a batch at
    # 32 layers, a fraction of a percent of its prefill, but a benchmark of 2 layers scaled to 32 would
    # count it 16 times.
    session = model.start_session(batch_size)
    session.append(prompt)
    session.generate(max_new_tokens=new_tokens, eos_token_id=[])
    prefill_s, decode_s = float("inf"), float("inf")
    for _ in range(max(1, repeats)):
        session.reset()
        started = time.perf_counter()
        session.append(prompt)
        prefill_s = min(prefill_s, time.perf_counter() - started)
        started = time.perf_counter()
        session.generate(max_new_tokens=new_tokens, eos_token_id=[])
        decode_s = min(decode_s, time.perf_counter() - started)
    total = encoder_s + prefill_s + decode_s
    return {"clip_seconds": clip_seconds, "batch_size": batch_size, "new_tokens": new_tokens,
            "prompt_tokens": prompt_tokens, "encoder_window": encoder_window, "encoder_s": encoder_s,
            "prefill_s": prefill_s, "decode_s": decode_s, "seconds_per_clip": total / batch_size,
            "clips_per_hour": 3600.0 * batch_size / total,
            "decode_tokens_per_s": batch_size * new_tokens / decode_s}


def run_annotation_benchmark(model_dir: str, dtype: str = "auto", quantization: Optional[str] = None,
                             threads: Optional[int] = None, clip_seconds: tuple = (5, 10, 30), batch_size: int = 4,
                             new_tokens: int = 32, baseline: bool = True, repeats: int = 1,
                             print_results: bool = True) -> dict:
    """Clips per hour of annotation (``clip_seconds`` clips, ``new_tokens``-token answers) at
    ``batch_size``, with the time split into encoder, prefill and decode; with ``baseline``, in the same
    process the behaviour before packed encoding and batching: each clip's whole 30 s window through
    the encoder, batch 1, and for a quantized model the prefill on weights widened to floats."""
    from . import _core
    from .auto import AutoModelForCausalLM
    from .modeling import Qwen2AudioForConditionalGeneration

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, num_threads=threads,
                                                 quantization=quantization)
    # The baseline is Qwen2-Audio's engine before packing and batching: Ultravox never had that engine.
    baseline = baseline and not _is_ultravox(model)
    rows = []
    for seconds in clip_seconds:
        rows.append({"run": "batched", **measure_annotation(model, seconds, batch_size, new_tokens, repeats=repeats)})
        if batch_size > 1:  # the same engine one clip at a time: what batching itself gains
            rows.append({"run": "batch 1", **measure_annotation(model, seconds, 1, new_tokens, repeats=repeats)})
    result = {"model": str(model_dir), "dtype": model.dtype, "quantization": quantization, "threads": model.num_threads,
              "integer_kernels": bool(getattr(model._core, "integer_kernels", quantization is not None)),
              "rows": rows}
    if baseline:
        reference = model
        if model._core.integer_kernels:
            del model, reference  # one quantized copy of the weights at a time
            core = _core.Model.load(str(model_dir), dtype, int(threads or 0), quantization=quantization or "none",
                                    integer_kernels=False)
            reference = Qwen2AudioForConditionalGeneration(core, str(model_dir))
        for seconds in clip_seconds:
            rows.append({"run": "baseline", **measure_annotation(reference, seconds, 1, new_tokens, encoder_window=True,
                                                                 repeats=repeats)})
    if print_results:
        print(f"annotation of clips with {new_tokens}-token answers, model {model_dir} "
              f"({quantization or result['dtype']}, {result['threads']} threads)")
        print(f"{'run':9} {'clip':>5} {'batch':>5} {'encoder s':>10} {'prefill s':>10} {'decode s':>9} "
              f"{'s/clip':>7} {'clips/hour':>11}")
        for row in rows:
            print(f"{row['run']:9} {row['clip_seconds']:>4}s {row['batch_size']:>5} {row['encoder_s']:>10.2f} "
                  f"{row['prefill_s']:>10.2f} {row['decode_s']:>9.2f} {row['seconds_per_clip']:>7.2f} "
                  f"{row['clips_per_hour']:>11.0f}")
        if baseline:
            for seconds in clip_seconds:
                new, old = (next(r for r in rows if r["run"] == run and r["clip_seconds"] == seconds)
                            for run in ("batched", "baseline"))
                print(f"  {seconds} s clips: {new['clips_per_hour'] / old['clips_per_hour']:.2f}x the baseline")
    return result


def run_model_benchmark(model_dir: str, dtype: str = "auto", quantization: Optional[str] = None,
                        threads: Optional[int] = None, prompt_tokens: int = 800, new_tokens: int = 32,
                        context: int = 1024, encoder: bool = True, print_results: bool = True,
                        paired_steps: int = 8) -> dict:
    """Loads ``model_dir`` and measures it (see :func:`measure_model`); prints a summary unless told
    not to, and returns the figures with the load time and the decode bandwidth bound."""
    from .auto import AutoModelForCausalLM

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, num_threads=threads,
                                                 quantization=quantization)
    load_s = time.perf_counter() - started
    stored = model.quantization_config
    fmt = quantization or (None if stored is None else {8: "int8", 4: "int4"}[stored["bits"]])
    group_size = stored["group_size"] if stored else 128
    result = {"model": str(model_dir), "dtype": model.dtype, "quantization": fmt, "threads": model.num_threads,
              "load_s": load_s}
    weight_bytes = decode_weight_bytes(model.config, fmt, group_size, 4 if model.dtype == "float32" else 2)
    result.update(measure_model(model, prompt_tokens, max(new_tokens, 2), max(context, prompt_tokens), encoder,
                                paired_weight_bytes=weight_bytes["total"], paired_steps=paired_steps))
    result["decode_weight_bytes"] = weight_bytes["total"]
    result["decode_bound_s_per_token"] = weight_bytes["total"] / (result["read_bandwidth_gbs"] * 1e9)
    result["decode_fraction_of_bound"] = result["decode_bound_s_per_token"] / result["decode_s_per_token"]
    if print_results:
        _print(result)
    return result


def _print(result: dict) -> None:
    label = result["quantization"] or result["dtype"]
    print(f"model {result['model']} ({label}, {result['threads']} threads), loaded in {result['load_s']:.1f} s")
    if "encoder_s" in result:
        print(f"  encoder, one clip of 5 / 10 / 30 s: {result['encoder_5s_s']:.2f} / {result['encoder_10s_s']:.2f} / "
              f"{result['encoder_30s_s']:.2f} s" + (
                  f" (the whole 30 s window, as the reference runs every clip: {result['encoder_window_s']:.2f} s)"
                  if "encoder_window_s" in result else ""))
    print(f"  prefill:                    {result['prefill_tokens_per_s']:.1f} tokens/s")
    print(f"  decode at {result['decode_context']} tokens:       {result['decode_tokens_per_s']:.2f} tokens/s "
          f"({result['decode_s_per_token'] * 1e3:.0f} ms/token)")
    print(f"  bandwidth bound:            {result['decode_bound_s_per_token'] * 1e3:.0f} ms/token "
          f"({result['decode_weight_bytes'] / 1e9:.2f} GB of weights at {result['read_bandwidth_gbs']:.1f} GB/s): "
          f"{100 * result['decode_fraction_of_bound']:.0f} % reached; "
          f"{100 * result['decode_paired_fraction']:.0f} % of a read paired with each step "
          f"(median, {result['decode_paired_read_gbs']:.1f} GB/s)")
    print(f"  peak RSS:                   {result['peak_rss_bytes'] / 2**30:.2f} GiB")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="measure one model folder (JSON out with --json)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quantization", default=None, choices=["int8", "int4"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prompt-tokens", type=int, default=800)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--no-encoder", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    args = parser.parse_args(argv)
    result = run_model_benchmark(args.model, dtype=args.dtype, quantization=args.quantization, threads=args.threads,
                                 prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, context=args.context,
                                 encoder=not args.no_encoder, print_results=not args.json)
    if args.json:
        json.dump(result, sys.stdout)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
