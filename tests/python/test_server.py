"""`qwen2audio serve` on loopback: OpenAI-shaped answers (plain HTTP and the official OpenAI JS client),
continuous batching (concurrent greedy requests equal sequential ones; late requests join the running
batch), KV reuse across turns, limits, and bad input that must never take the server down."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import write_sine_wav

ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = ROOT / "tests" / "node"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, model: Path, *options: str, media: Path | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "qwen2audio", "serve", "--model", str(model), "--port", str(self.port),
                   "--served-model-name", "tiny", "--threads", "2", "--log-level", "warning", *options]
        if media is not None:
            command += ["--allowed-local-media-path", str(media)]
        self.log = open(model.parent / f"server-{self.port}.log", "w+")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=120)
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, self.output()
            try:
                if self.client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stats(self) -> dict:
        return self.client.get("/stats").json()

    def chat(self, messages: list, **params: Any) -> httpx.Response:
        return self.client.post("/v1/chat/completions", json={"model": "tiny", "messages": messages, **params})

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    write_sine_wav(folder / "tone.wav", 1.0, 440.0)
    write_sine_wav(folder.parent / "outside.wav", 1.0, 440.0)
    return folder


@pytest.fixture(scope="module")
def server(tiny_f32: Path, media: Path) -> Iterator[Server]:
    instance = Server(tiny_f32, "--max-batch", "8", "--context-length", "2048", "--max-new-tokens", "1500",
                      "--max-body-mb", "4", "--max-audio-seconds", "100", media=media)
    yield instance
    instance.close()


def _audio_part(path: Path) -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(path.read_bytes()).decode(),
                                                   "format": "wav"}}


def _ask(text: str, audio: Path | None = None) -> list:
    content: list = [_audio_part(audio)] if audio else []
    return [{"role": "user", "content": content + [{"type": "text", "text": text}]}]


def _sse(response: httpx.Response) -> list:
    events = []
    for line in response.iter_lines():
        line = line.rstrip("\r\n")  # httpx 0.23 keeps the line ending
        if line.startswith("data: "):
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def _check_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_health_models_and_unknown_routes(server: Server) -> None:
    assert server.client.get("/health").json() == {"status": "ok"}
    models = server.client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]
    assert server.client.get("/v1/models/tiny").json()["object"] == "model"
    _check_error(server.client.get("/v1/models/other"), 404)
    _check_error(server.client.get("/v1/nothing"), 404)
    _check_error(server.client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": _ask("hi")}), 404)
    _check_error(server.client.get("/v1/chat/completions"), 405)


def test_chat_completion_shape(server: Server, media: Path) -> None:
    response = server.chat(_ask("Describe the sound.", media / "tone.wav"), max_tokens=5, temperature=0)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny" and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 20  # the clip's audio tokens
    assert 1 <= usage["completion_tokens"] <= 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 5


def test_stream_matches_whole_answer(server: Server, media: Path) -> None:
    messages = [{"role": "system", "content": "You are terse."}] + _ask("What is this?", media / "tone.wav")
    whole = server.chat(messages, max_completion_tokens=12, temperature=0).json()
    with server.client.stream("POST", "/v1/chat/completions", json={
            "model": "tiny", "messages": messages, "max_completion_tokens": 12, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_audio_url_data_and_local_paths(server: Server, media: Path) -> None:
    data = base64.b64encode((media / "tone.wav").read_bytes()).decode()
    by_data = server.chat([{"role": "user", "content": [
        {"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{data}"}},
        {"type": "text", "text": "Describe the sound."}]}], max_tokens=6, temperature=0)
    inline = server.chat(_ask("Describe the sound.", media / "tone.wav"), max_tokens=6, temperature=0)
    by_path = server.chat([{"role": "user", "content": [
        {"type": "audio_url", "audio_url": {"url": str(media / "tone.wav")}},
        {"type": "text", "text": "Describe the sound."}]}], max_tokens=6, temperature=0)
    texts = [r.json()["choices"][0]["message"]["content"] for r in (by_data, inline, by_path)]
    assert texts[0] == texts[1] == texts[2]
    for url in (str(media.parent / "outside.wav"), f"{media}/../outside.wav", "/etc/passwd",
                f"file://{media.parent / 'outside.wav'}"):
        _check_error(server.chat([{"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": url}}]}]),
                     400)
    error = _check_error(server.chat([{"role": "user", "content": [
        {"type": "audio_url", "audio_url": {"url": "http://127.0.0.1:1/a.wav"}}]}]), 400)
    assert "not fetched" in error["message"]


def test_several_audios_and_multi_turn_reuse_the_cache(server: Server, media: Path, tmp_path: Path) -> None:
    second = write_sine_wav(tmp_path / "low.wav", 0.7, 220.0)
    first_turn = [{"role": "system", "content": "Compare clips."},
                  {"role": "user", "content": [_audio_part(media / "tone.wav"), _audio_part(second),
                                               {"type": "text", "text": "Which is lower?"}]}]
    reply = server.chat(first_turn, max_tokens=6, temperature=0).json()
    before = server.stats()["reused_tokens"]
    follow_up = first_turn + [{"role": "assistant", "content": reply["choices"][0]["message"]["content"]},
                              {"role": "user", "content": "And which is longer?"}]
    answer = server.chat(follow_up, max_tokens=6, temperature=0)
    assert answer.status_code == 200
    # The first turn's prompt (both clips' tokens included) came from the cache.
    assert server.stats()["reused_tokens"] - before >= reply["usage"]["prompt_tokens"]


def test_concurrent_greedy_requests_equal_sequential(server: Server, tmp_path: Path) -> None:
    clips = [write_sine_wav(tmp_path / f"c{i}.wav", 0.5 + 0.1 * i, 200.0 + 50 * i) for i in range(8)]
    requests = [(_ask(f"Question {i}: what do you hear?", clips[i]), 10 + i) for i in range(8)]

    def send(item: tuple) -> str:
        response = server.chat(item[0], max_tokens=item[1], temperature=0, seed=1)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    sequential = [send(item) for item in requests]
    before = server.stats()
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(send, requests))
    after = server.stats()
    assert concurrent == sequential
    assert after["max_running"] >= 2
    assert after["joined_running_batch"] > before["joined_running_batch"]


def test_request_arriving_mid_batch_joins_it(server: Server) -> None:
    before = server.stats()["joined_running_batch"]
    with server.client.stream("POST", "/v1/chat/completions", json={
            "model": "tiny", "messages": _ask("a long answer"), "max_tokens": 1500, "temperature": 0,
            "ignore_eos": True, "stream": True}) as running:
        lines = running.iter_lines()
        next(line for line in lines if line.startswith("data: "))  # the long request is decoding now
        late = server.chat(_ask("a short one"), max_tokens=2, temperature=0)
        assert late.status_code == 200
        assert server.stats()["joined_running_batch"] == before + 1


def test_stop_strings(server: Server) -> None:
    full = server.chat(_ask("Say something"), max_tokens=20, temperature=0).json()["choices"][0]["message"]["content"]
    if len(full) < 4:
        pytest.skip("the tiny model's greedy answer is too short to cut")
    stop = full[2:4]
    cut = server.chat(_ask("Say something"), max_tokens=20, temperature=0, stop=[stop]).json()
    assert cut["choices"][0]["message"]["content"] == full[:full.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


def test_sampling_with_seed_is_reproducible(server: Server) -> None:
    def sample() -> str:
        return server.chat(_ask("Tell me"), max_tokens=8, temperature=0.9, top_p=0.9, seed=123,
                           repetition_penalty=1.1).json()["choices"][0]["message"]["content"]

    assert sample() == sample()


def test_client_disconnect_frees_the_slot(server: Server) -> None:
    before = server.stats()["cancelled"]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json={
                "model": "tiny", "messages": _ask("go on"), "max_tokens": 1500, "temperature": 0,
                "ignore_eos": True, "stream": True}) as response:
            next(line for line in response.iter_lines() if line.startswith("data: "))
    deadline = time.monotonic() + 30
    while server.stats()["cancelled"] == before or server.stats()["in_flight"]:
        assert time.monotonic() < deadline, server.stats()
        time.sleep(0.05)


BAD_REQUESTS = {
    "invalid base64": (400, {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "not base64!!", "format": "wav"}}]}]}),
    "not audio": (422, {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"hello, not a sound" * 50).decode(),
                                                "format": "wav"}}]}]}),
    "empty audio": (400, {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}),
    "unknown format": (400, {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "aiff"}}]}]}),
    "unknown part type": (400, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
    "messages not a list": (400, {"messages": "hello"}),
    "message not an object": (400, {"messages": ["hello"]}),
    "no messages": (400, {"messages": []}),
    "bad role": (400, {"messages": [{"role": "robot", "content": "hi"}]}),
    "content a number": (400, {"messages": [{"role": "user", "content": 5}]}),
    "text not a string": (400, {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}),
    "max_tokens a string": (400, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"}),
    "max_tokens zero": (400, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
    "max_tokens above limit": (400, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}),
    "temperature a string": (400, {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
    "temperature out of range": (400, {"messages": [{"role": "user", "content": "hi"}], "temperature": 9}),
    "stream not a boolean": (400, {"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}),
    "stop not strings": (400, {"messages": [{"role": "user", "content": "hi"}], "stop": [1]}),
    "n above one": (400, {"messages": [{"role": "user", "content": "hi"}], "n": 2}),
    "seed a float": (400, {"messages": [{"role": "user", "content": "hi"}], "seed": 1.5}),
    "prompt beyond the context": (400, {"messages": [{"role": "user", "content": "hello " * 3000}]}),
    "audio placeholder without audio": (400, {"messages": [{"role": "user", "content": "<|AUDIO|> what is this?"}]}),
    "ends with the assistant": (400, {"messages": [{"role": "user", "content": "hi"},
                                                   {"role": "assistant", "content": "hello"}]}),
    "audio in a system message": (400, {"messages": [{"role": "system", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
    "unknown model": (404, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_get_json_errors(server: Server, name: str) -> None:
    status, body = BAD_REQUESTS[name]
    _check_error(server.client.post("/v1/chat/completions", json={"model": "tiny", **body}), status)
    assert server.chat(_ask("still there?"), max_tokens=1).status_code == 200


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b"\xff\xfe", b'{"messages": [' * 100000])
def test_malformed_bodies(server: Server, raw: bytes) -> None:
    response = server.client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    _check_error(response, 413 if len(raw) > 4 << 20 else 400)
    assert server.client.get("/health").status_code == 200


def test_oversized_bodies(server: Server) -> None:
    _check_error(server.client.post("/v1/chat/completions", content=b"x" * (100 << 20),
                                    headers={"content-type": "application/json"}), 413)

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused while streaming in
        for _ in range(10):
            yield b" " * (1 << 20)

    _check_error(server.client.post("/v1/chat/completions", content=chunked(),
                                    headers={"content-type": "application/json"}), 413)
    assert server.chat(_ask("still there?"), max_tokens=1).status_code == 200


def test_audio_seconds_limit(server: Server, tmp_path: Path) -> None:
    long = write_sine_wav(tmp_path / "long.wav", 101.0, 300.0)  # 3.2 MB: under the body limit, over 100 s
    error = _check_error(server.client.post("/v1/audio/transcriptions", files={"file": long.open("rb")},
                                            data={"model": "tiny"}), 413)
    assert error["code"] == "audio_too_long"


def test_transcriptions(server: Server, tmp_path: Path) -> None:
    clip = write_sine_wav(tmp_path / "speech.wav", 65.0, 330.0)  # three 30 s windows
    def post(**data: str) -> httpx.Response:
        return server.client.post("/v1/audio/transcriptions", files={"file": ("speech.wav", clip.read_bytes())},
                                  data={"model": "tiny", **data})

    plain = post()
    assert plain.status_code == 200, plain.text
    text = plain.json()["text"]
    assert isinstance(text, str)
    assert post(response_format="text").text == text
    verbose = post(response_format="verbose_json", language="en").json()
    assert verbose["task"] == "transcribe" and verbose["language"] == "en"
    assert abs(verbose["duration"] - 65.0) < 0.01
    assert [(s["start"], s["end"]) for s in verbose["segments"]] == [(0.0, 30.0), (30.0, 60.0), (60.0, 65.0)]
    _check_error(post(response_format="srt"), 400)
    _check_error(server.client.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"")},
                                    data={"model": "tiny"}), 400)
    _check_error(server.client.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"garbage" * 100)},
                                    data={"model": "tiny"}), 422)
    _check_error(server.client.post("/v1/audio/transcriptions", data={"model": "tiny"}), 400)
    _check_error(server.client.post("/v1/audio/transcriptions", json={"file": "x"}), 400)


def test_base_model_transcription_prompt(tiny_f32: Path) -> None:
    from qwen2audio import Qwen2AudioProcessor
    from qwen2audio.server import ServerLimits, ServerState, _transcription_prompt

    state = ServerState(None, "tiny", ServerLimits(), asr_style="base")
    state.processor = Qwen2AudioProcessor.from_pretrained(tiny_f32)
    import numpy as np

    prompt = _transcription_prompt(state, np.zeros(16000, dtype=np.float32), "en", "")
    text = state.processor.tokenizer.decode(prompt.ids.tolist())
    assert text.startswith("<|audio_bos|><|AUDIO|>")
    assert text.endswith("<|audio_eos|>Detect the language and recognize the speech: <|en|>")


def test_busy_server_answers_503_with_retry_after(tiny_f32: Path) -> None:
    busy = Server(tiny_f32, "--max-batch", "1", "--max-queue", "0", "--max-new-tokens", "4000")
    try:
        with busy.client.stream("POST", "/v1/chat/completions", json={
                "model": "tiny", "messages": _ask("long"), "max_tokens": 4000, "temperature": 0,
                "ignore_eos": True, "stream": True}) as running:
            # The line iterator is held until the end of the block: dropping it would close the connection
            # (httpx closes a stream whose iterator is collected), and the server would rightly cancel the
            # request and free its slot before the second one arrives.
            lines = running.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            refused = busy.chat(_ask("me too"), max_tokens=1)
            error = _check_error(refused, 503)
            assert error["code"] == "server_busy" and int(refused.headers["retry-after"]) >= 1
            assert busy.stats()["cancelled"] == 0  # refused while the first request was still running
            del lines
        deadline = time.monotonic() + 30
        while busy.stats()["in_flight"]:  # the cancelled stream leaves its slot
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert busy.chat(_ask("now?"), max_tokens=1).status_code == 200
    finally:
        busy.close()


@pytest.mark.skipif(shutil.which("node") is None or not (NODE_CLIENT / "node_modules" / "openai").is_dir(),
                    reason="node or the openai npm package is missing (scripts/install-deps.sh installs them)")
def test_official_openai_js_client(server: Server, media: Path) -> None:
    run = subprocess.run(["node", str(NODE_CLIENT / "openai_client.mjs"), f"{server.url}/v1", "tiny",
                          str(media / "tone.wav")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["models"] == ["tiny"]
    completion = result["completion"]
    assert completion["object"] == "chat.completion" and completion["role"] == "assistant"
    expected = server.chat(_ask("What is in this clip?", media / "tone.wav"), max_tokens=8, temperature=0).json()
    assert completion["content"] == expected["choices"][0]["message"]["content"]
    assert completion["usage"] == expected["usage"]
    assert completion["finish_reason"] == expected["choices"][0]["finish_reason"]
    stream = result["stream"]
    assert stream["content"] == completion["content"] and stream["finish_reason"] == completion["finish_reason"]
    assert stream["usage"] == expected["usage"] and stream["chunks"] >= 3
    transcription = server.client.post("/v1/audio/transcriptions", files={"file": (media / "tone.wav").open("rb")},
                                       data={"model": "tiny", "language": "en"}).json()
    assert result["transcription"] == transcription["text"]


def test_disconnect_of_a_whole_answer_cancels_it(server: Server) -> None:
    before = server.stats()["cancelled"]
    with httpx.Client(base_url=server.url, timeout=0.5) as client:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            client.post("/v1/chat/completions", json={"model": "tiny", "messages": _ask("long"), "max_tokens": 1500,
                                                      "temperature": 0, "ignore_eos": True})
    deadline = time.monotonic() + 30
    while server.stats()["cancelled"] == before or server.stats()["in_flight"]:
        assert time.monotonic() < deadline, server.stats()
        time.sleep(0.05)


def test_not_ready_until_loaded() -> None:
    from starlette.testclient import TestClient

    from qwen2audio.server import ServerLimits, ServerState, create_app

    state = ServerState(None, "tiny", ServerLimits())
    with TestClient(create_app(state)) as client:
        health = client.get("/health")
        assert health.status_code == 503 and health.json() == {"status": "loading"}
        error = _check_error(client.post("/v1/chat/completions", json={"messages": _ask("hi")}), 503)
        assert error["code"] == "model_loading"
        assert client.get("/v1/models").status_code == 200


def _readme_serve_blocks(language: str) -> list[str]:
    from test_readme import BLOCKS

    return [block.code for block in BLOCKS if block.section == "Serve" and block.language == language]


def _as_test_server(code: str, server: Server) -> str:
    return code.replace("http://localhost:8000", server.url).replace("Qwen2-Audio-7B-Instruct", "tiny")


def test_readme_curl_examples(server: Server, media: Path, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    shutil.copy(media / "tone.wav", tmp_path / "clip.wav")
    [block] = [code for code in _readme_serve_blocks("sh") if "curl" in code]
    run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", _as_test_server(block, server)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    decoder = json.JSONDecoder()
    completion, end = decoder.raw_decode(run.stdout)
    transcription, _ = decoder.raw_decode(run.stdout[end:].lstrip())
    assert completion["object"] == "chat.completion" and "text" in transcription


@pytest.mark.skipif(shutil.which("node") is None or not (NODE_CLIENT / "node_modules" / "openai").is_dir(),
                    reason="node or the openai npm package is missing (scripts/install-deps.sh installs them)")
def test_readme_javascript_example(server: Server, media: Path, tmp_path: Path) -> None:
    shutil.copy(media / "tone.wav", tmp_path / "clip.wav")
    (tmp_path / "node_modules").symlink_to(NODE_CLIENT / "node_modules")
    [block] = _readme_serve_blocks("js")
    (tmp_path / "example.mjs").write_text(_as_test_server(block, server))
    run = subprocess.run(["node", "example.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) >= 2


def test_serve_refuses_bad_options(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "qwen2audio", "serve", "--model", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "no such model folder" in run.stderr
