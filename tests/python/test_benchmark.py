"""`qwen2audio bench` and qwen2audio.benchmark end to end on tiny checkpoints: the report's fields
and their consistency, never its timings (speed is shown by bench/, not asserted in tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen2audio.benchmark import decode_weight_bytes, run_model_benchmark
from qwen2audio.demo import demo_checkpoint

FIELDS = {"model", "dtype", "quantization", "threads", "load_s", "encoder_s", "encoder_5s_s", "encoder_10s_s",
          "encoder_30s_s", "encoder_window_s", "prefill_s", "prefill_tokens_per_s",
          "decode_s_per_token", "decode_tokens_per_s", "decode_context", "peak_rss_bytes", "read_bandwidth_gbs",
          "decode_weight_bytes", "decode_bound_s_per_token", "decode_fraction_of_bound", "decode_paired_fraction",
          "decode_paired_read_gbs"}


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_checkpoint(tmp_path_factory.mktemp("demo") / "model")


def _bench(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "qwen2audio", "bench", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _weight_bytes_by_hand(config: dict, bytes_per_weight: float, head_bytes_per_weight: float,
                          scale_bytes_per_row: int = 0, head_scale_bytes_per_row: int = 0) -> float:
    """Bytes one decode step reads, from config.json alone: 7 projections per layer plus the head."""
    text = config["text_config"]
    h, inter = text["hidden_size"], text["intermediate_size"]
    head_dim = h // text["num_attention_heads"]
    kv = text["num_key_value_heads"] * head_dim
    rows = [(h, h), (kv, h), (kv, h), (h, h), (inter, h), (inter, h), (h, inter)]
    layer = sum(n * k * bytes_per_weight + n * scale_bytes_per_row for n, k in rows)
    head = text["vocab_size"] * (h * head_bytes_per_weight + head_scale_bytes_per_row)
    return layer * text["num_hidden_layers"] + head


def _check_consistent(report: dict, context: int) -> None:
    assert FIELDS <= set(report)
    for key in ("load_s", "encoder_s", "encoder_5s_s", "encoder_window_s", "prefill_s", "prefill_tokens_per_s",
                "decode_s_per_token",
                "decode_tokens_per_s", "read_bandwidth_gbs", "decode_bound_s_per_token", "decode_fraction_of_bound",
                "decode_paired_fraction", "decode_paired_read_gbs"):
        assert report[key] > 0, key
    assert report["threads"] >= 1
    assert report["encoder_s"] == report["encoder_30s_s"]
    assert report["decode_context"] == context
    assert report["decode_tokens_per_s"] == pytest.approx(1 / report["decode_s_per_token"])
    assert report["decode_bound_s_per_token"] == pytest.approx(
        report["decode_weight_bytes"] / (report["read_bandwidth_gbs"] * 1e9))
    assert report["decode_fraction_of_bound"] == pytest.approx(
        report["decode_bound_s_per_token"] / report["decode_s_per_token"])
    # Python and the engine are resident, and a 151649 x 64 BF16 head alone is 19 MB.
    assert 50 * 2**20 < report["peak_rss_bytes"] < 8 * 2**30


def test_cli_bench_json_on_demo_checkpoint(demo_model: Path) -> None:
    result = _bench("--model", str(demo_model), "--prompt-tokens", "24", "--new-tokens", "4", "--context", "40",
                    "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    _check_consistent(report, 40)
    assert report["model"] == str(demo_model)
    assert report["dtype"] == "bfloat16" and report["quantization"] is None
    config = json.loads((demo_model / "config.json").read_text())
    assert report["decode_weight_bytes"] == _weight_bytes_by_hand(config, 2, 2)


def test_cli_bench_prints_summary(demo_model: Path) -> None:
    result = _bench("--model", str(demo_model), "--prompt-tokens", "16", "--new-tokens", "3", "--context", "32",
                    "--threads", "1", "--quantization", "int8")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "int8, 1 threads" in out
    for label in ("encoder, one clip of 5 / 10 / 30 s:", "the whole 30 s window", "prefill:", "decode at 32 tokens:",
                  "bandwidth bound:", "peak RSS:"):
        assert label in out, out
    assert "% reached" in out


def test_cli_bench_rejects_bad_arguments(demo_model: Path) -> None:
    result = _bench("--model", str(demo_model), "--prompt-tokens", "0")
    assert result.returncode == 2
    assert "prompt_tokens" in result.stderr
    result = _bench("--model", str(demo_model), "--prompt-tokens", "8", "--context", "9000", "--no-encoder")
    assert result.returncode == 2
    assert "error" in result.stderr and "Traceback" not in result.stderr
    result = _bench("--model", str(demo_model.parent / "missing"))
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize("quantization", [None, "int8", "int4"])
def test_run_model_benchmark_on_tiny_reference(tiny_bf16: Path, quantization) -> None:
    report = run_model_benchmark(str(tiny_bf16), quantization=quantization, threads=1, prompt_tokens=20,
                                 new_tokens=3, context=30, print_results=False)
    _check_consistent(report, 30)
    assert report["quantization"] == quantization and report["threads"] == 1
    config = json.loads((tiny_bf16 / "config.json").read_text())
    # hidden 64 and intermediate 128 are at most one group of 128: one float32 scale per row.
    expected = {None: _weight_bytes_by_hand(config, 2, 2),
                "int8": _weight_bytes_by_hand(config, 1, 1, 4, 4),
                "int4": _weight_bytes_by_hand(config, 0.5, 1, 4, 4)}[quantization]
    assert report["decode_weight_bytes"] == expected


def test_decode_weight_bytes_at_the_real_shapes() -> None:
    """7.1 B weights read per token (issue 5): 14.2 GB in bf16, with the int8 head in both quantized modes."""

    class Text:
        hidden_size, intermediate_size, num_attention_heads, num_key_value_heads = 4096, 11008, 32, 32
        num_hidden_layers, vocab_size = 32, 156032

    class Config:
        text_config = Text

    weights = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    head = 156032 * 4096
    assert decode_weight_bytes(Config, None)["total"] == 2 * (weights + head)
    # int8: one byte and 4 / 128 bytes of scale per weight (4096 and 11008 are multiples of 128)
    assert decode_weight_bytes(Config, "int8")["total"] == pytest.approx((weights + head) * (1 + 4 / 128))
    assert decode_weight_bytes(Config, "int4")["total"] == pytest.approx(weights * (0.5 + 4 / 128)
                                                                         + head * (1 + 4 / 128))
    assert decode_weight_bytes(Config, None, float_bytes=4)["total"] == 4 * (weights + head)


def test_cli_bench_annotate_reports_each_clip_length_beside_the_baseline(demo_model: Path) -> None:
    result = _bench("--model", str(demo_model), "--annotate", "--clip-seconds", "5", "30", "--batch-size", "2",
                    "--new-tokens", "3", "--quantization", "int8", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    rows = {(row["run"], row["clip_seconds"]): row for row in report["rows"]}
    assert set(rows) == {(run, seconds) for run in ("batched", "batch 1", "baseline") for seconds in (5.0, 30.0)}
    for (run, seconds), row in rows.items():
        assert row["batch_size"] == (2 if run == "batched" else 1)
        assert row["encoder_window"] == (run == "baseline")
        # prompt: the clip's audio tokens (25 a second) plus the template's text
        assert row["prompt_tokens"] == int(25 * seconds) + 40
        for key in ("encoder_s", "prefill_s", "decode_s"):
            assert row[key] > 0
        assert row["clips_per_hour"] == pytest.approx(
            3600 * row["batch_size"] / (row["encoder_s"] + row["prefill_s"] + row["decode_s"]))
        assert row["decode_tokens_per_s"] == pytest.approx(row["batch_size"] * 3 / row["decode_s"])
    printed = _bench("--model", str(demo_model), "--annotate", "--clip-seconds", "10", "--new-tokens", "2")
    assert printed.returncode == 0, printed.stderr
    assert "clips/hour" in printed.stdout and "x the baseline" in printed.stdout


def test_decode_paired_with_reads_reports_each_batch_size(tiny_bf16: Path) -> None:
    from qwen2audio import Qwen2AudioForConditionalGeneration
    from qwen2audio.benchmark import measure_decode_paired

    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, num_threads=1)
    weight_bytes = decode_weight_bytes(model.config, None)["total"]
    report = measure_decode_paired(model, weight_bytes, batch_sizes=(1, 3), steps=3, context=12, probe_bytes=4 << 20)
    assert set(report) == {1, 3}
    for batch, entry in report.items():
        assert entry["step_s"] > 0 and entry["read_gbs"] > 0
        assert 0 < entry["min"] <= entry["fraction"] <= entry["max"]
        assert ("speedup" in entry) == (batch > 1)
    assert report[3]["speedup"] > 0 and report[3]["speedup_per_read"] > 0
    with pytest.raises(ValueError, match="steps"):
        measure_decode_paired(model, weight_bytes, steps=0)


def test_decode_speedup_per_read_scales_each_step_by_its_own_read(tiny_bf16: Path, monkeypatch) -> None:
    # Each round reads twice before each step (a warm-up read, then the paired one); a probe that pairs
    # batch 1 with 10 GB/s and batch 2 with 40 GB/s makes every round's per-read ratio a quarter of its
    # plain ratio, so the medians differ by exactly that.
    from qwen2audio import Qwen2AudioForConditionalGeneration, _core
    from qwen2audio.benchmark import measure_decode_paired

    class FixedReads:
        def __init__(self, _bytes: int) -> None:
            self.calls = 0

        def read_gbs(self, _threads: int) -> float:
            self.calls += 1
            return {1: 1.0, 2: 10.0, 3: 1.0, 0: 40.0}[self.calls % 4]

    monkeypatch.setattr(_core, "ReadProbe", FixedReads)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, num_threads=1)
    report = measure_decode_paired(model, 1e6, batch_sizes=(1, 2), steps=5, context=8)
    assert report[1]["read_gbs"] == 10.0 and report[2]["read_gbs"] == 40.0
    assert report[2]["speedup_per_read"] == pytest.approx(report[2]["speedup"] * 10.0 / 40.0)
    assert report[2]["fraction"] == pytest.approx(1e6 / report[2]["step_s"] / 40e9)


def _compare_builds_module():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "bench" / "compare_builds.py"
    spec = importlib.util.spec_from_file_location("compare_builds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_builds_summary_pairs_rounds() -> None:
    # Round r of each build is compared with round r of the other only: the medians alone would hide
    # that B lost the round where both were slow.
    compare = _compare_builds_module()

    def rows(one: float, four: float, speedup: float) -> dict:
        return {"1": {"fraction": one}, "4": {"fraction": four, "speedup": speedup}}

    first = [rows(0.80, 0.60, 3.0), rows(0.90, 0.70, 3.1), rows(0.50, 0.40, 3.2)]
    second = [rows(0.88, 0.60, 3.3), rows(1.08, 0.63, 3.1), rows(0.45, 0.48, 3.6)]
    summary = compare.summarize(first, second)
    one = summary["batch 1, of read"]
    assert one["first"] == pytest.approx(0.80) and one["second"] == pytest.approx(0.88)
    assert one["ratios"] == pytest.approx([1.1, 1.2, 0.9])
    assert one["ratio"] == pytest.approx(1.1) and one["second_higher"] == 2
    four = summary["batch 4, of read"]
    assert four["ratios"] == pytest.approx([1.0, 0.9, 1.2]) and four["second_higher"] == 1
    assert summary["batch 4 / batch 1"]["ratios"] == pytest.approx([1.1, 1.0, 1.125])
    with pytest.raises(ValueError, match="same number of rounds"):
        compare.summarize(first, second[:2])
    with pytest.raises(ValueError, match="same number of rounds"):
        compare.summarize([], [])


def test_compare_builds_runs_the_same_build_twice(tiny_bf16: Path, tmp_path: Path) -> None:
    import qwen2audio

    script = Path(__file__).resolve().parents[2] / "bench" / "compare_builds.py"
    core_dir = Path(qwen2audio._core.__file__).parent
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(script), str(core_dir), str(core_dir), "--model", str(tiny_bf16),
                           "--rounds", "2", "--steps", "2", "--context", "8", "--threads", "1", "--probe-mib", "4"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # ABBA: round 0 runs A first, round 1 B first.
    assert [line.split(":")[0] for line in lines if line.startswith("round ")] == [
        "round 0 A", "round 0 B", "round 1 B", "round 1 A"]
    table = [line for line in lines if line.startswith("| batch")]
    assert len(table) == 3 and all(line.rstrip().endswith("of 2 |") for line in table)

    empty = tmp_path / "no_build"
    empty.mkdir()
    refused = subprocess.run([sys.executable, str(script), str(core_dir), str(empty), "--model", str(tiny_bf16)],
                             capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2 and str(empty) in refused.stderr and "_core" in refused.stderr
