"""Load test of `qwen2audio serve` on loopback (not a test): requests/s and generated tokens/s at concurrency
1, 4 and 8, on the built-in demo checkpoint and on the synthetic checkpoint at Qwen2-Audio-7B's widths that
bench_model.py writes (4 encoder + 2 decoder layers by default, ~3 GB, under --workdir).

Each level sends a fixed number of chat requests (a short text prompt, a different one per request, greedy,
`ignore_eos` so every answer has --max-tokens tokens) from that many concurrent clients (asyncio + httpx), and
stops early at --level-timeout seconds. Decode reads every weight once per step whatever the number of rows,
so with continuous batching the aggregate tokens/s should grow with concurrency; the target on the 7B widths
is concurrency 4 >= 2.5x concurrency 1.

    .venv/bin/python bench/bench_serve.py [--workdir /tmp/qwen2audio-bench] [--threads 2] [--requests 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import print_machine, synthetic_checkpoint  # noqa: E402

LEVELS = (1, 4, 8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_tokenizer(folder: Path, source: Path) -> Path:
    """The synthetic checkpoint has weights and config only; the server also needs the processor's files."""
    for item in source.iterdir():
        if item.is_file() and item.suffix != ".safetensors" and item.name not in ("config.json", "fingerprint"):
            target = folder / item.name
            if not target.exists():
                shutil.copy(item, target)
    return folder


class Server:
    def __init__(self, model: Path, threads: int, max_tokens: int, log: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qwen2audio", "serve", "--model", str(model), "--port", self.url.rsplit(":", 1)[1],
             "--threads", str(threads), "--max-batch", str(max(LEVELS)), "--max-new-tokens", str(max_tokens),
             "--context-length", "1024", "--served-model-name", "bench", "--log-level", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited; see {log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > 600:
                raise RuntimeError("the server did not load within 10 minutes")
            time.sleep(0.5)
        self.load_seconds = time.monotonic() - started

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


async def run_level(url: str, concurrency: int, requests: int, max_tokens: int, timeout: float) -> dict:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)
    done: list[dict] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            started = time.perf_counter()
            response = await http.post("/v1/chat/completions", json={
                "model": "bench", "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                "messages": [{"role": "user", "content": f"Request {index}: describe a sound of the sea in a few "
                                                         "words."}]})
            response.raise_for_status()
            done.append({"tokens": response.json()["usage"]["completion_tokens"],
                         "latency": time.perf_counter() - started})

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
        tasks = [asyncio.create_task(client(http)) for _ in range(concurrency)]
        finished, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in finished:
            task.result()
    seconds = time.perf_counter() - started
    tokens = sum(item["tokens"] for item in done)
    return {"concurrency": concurrency, "requests": len(done), "seconds": seconds, "tokens": tokens,
            "requests_per_s": len(done) / seconds, "tokens_per_s": tokens / seconds,
            "mean_latency_s": sum(item["latency"] for item in done) / max(1, len(done)),
            "timed_out": bool(pending)}


def bench(name: str, model: Path, args: argparse.Namespace, requests: int) -> list[dict]:
    server = Server(model, args.threads, args.max_tokens, args.workdir / f"server-{name}.log")
    try:
        print(f"{name}: loaded in {server.load_seconds:.1f} s", file=sys.stderr)
        asyncio.run(run_level(server.url, 1, 1, 4, args.level_timeout))  # warm-up: first-touch of the buffers
        rows = []
        for level in LEVELS:
            row = asyncio.run(run_level(server.url, level, requests, args.max_tokens, args.level_timeout))
            print(f"{name}: {json.dumps(row)}", file=sys.stderr)
            rows.append(row)
        stats = httpx.get(f"{server.url}/stats").json()
        print(f"{name}: server stats {json.dumps(stats)}", file=sys.stderr)
        return rows
    finally:
        server.close()


def print_table(name: str, rows: list[dict]) -> None:
    base = rows[0]["tokens_per_s"]
    print(f"\n### {name}\n")
    print("| concurrency | requests | seconds | requests/s | generated tokens/s | vs concurrency 1 | "
          "mean latency (s) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        note = " (timed out)" if row["timed_out"] else ""
        print(f"| {row['concurrency']} | {row['requests']}{note} | {row['seconds']:.1f} | "
              f"{row['requests_per_s']:.2f} | {row['tokens_per_s']:.1f} | {row['tokens_per_s'] / base:.2f}x | {row['mean_latency_s']:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qwen2audio-bench"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=8, help="requests per concurrency level (7B widths)")
    parser.add_argument("--demo-requests", type=int, default=32, help="requests per level on the demo checkpoint")
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens generated per request")
    parser.add_argument("--level-timeout", type=float, default=300.0, help="seconds per level at most")
    parser.add_argument("--encoder-layers", type=int, default=4)
    parser.add_argument("--decoder-layers", type=int, default=2)
    parser.add_argument("--skip-synthetic", action="store_true", help="the demo checkpoint only")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    from qwen2audio.demo import demo_checkpoint

    print("# qwen2audio serve: load test\n")
    print_machine(args.threads)
    print(f"Each level: a fixed number of chat requests (text prompt of ~30 tokens, greedy, {args.max_tokens} "
          f"generated tokens each), sent by that many concurrent clients over loopback; server --max-batch "
          f"{max(LEVELS)}, --threads {args.threads}.")
    demo = demo_checkpoint()
    print_table("demo checkpoint (tiny random weights, real tokenizer)", bench("demo", demo, args, args.demo_requests))
    if not args.skip_synthetic:
        folder, _ = synthetic_checkpoint(args.workdir, args.encoder_layers, args.decoder_layers)
        rows = bench("synthetic", with_tokenizer(folder, demo), args, args.requests)
        print_table(f"synthetic 7B widths ({args.encoder_layers} encoder + {args.decoder_layers} decoder layers, "
                    "bf16)", rows)
        ratio = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
        print(f"\nTarget: aggregate tokens/s at concurrency 4 >= 2.5x concurrency 1 on the 7B widths: "
              f"{ratio:.2f}x, {'met' if ratio >= 2.5 else 'missed'}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
