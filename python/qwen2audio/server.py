"""``qwen2audio serve``: an OpenAI-compatible HTTP server (FastAPI on uvicorn) over the batching engine.

Endpoints: ``POST /v1/chat/completions`` (audio as ``input_audio`` or ``audio_url`` content parts),
``POST /v1/audio/transcriptions``, ``GET /v1/models``, ``GET /health`` and ``GET /stats``. Every error is
OpenAI's JSON shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import numpy as np
# FastAPI reads the route functions' annotations (strings here) in this module's namespace.
from fastapi import FastAPI, Request as HttpRequest
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .serving import Engine, EngineBusy, EngineStopped, Prompt, Request, SamplingParams

logger = logging.getLogger("qwen2audio.serve")

SAMPLING_RATE = 16000
WINDOW_SECONDS = 30.0
AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")
# Transcription of a base (non-Instruct) checkpoint: the prompt Qwen2-Audio was trained on for ASR.
ASR_PROMPT = "<|audio_bos|><|AUDIO|><|audio_eos|>Detect the language and recognize the speech: "
# Tokens per 30 s window: Whisper's own decoder limit, far above what speech in 30 s needs, so a model that
# never ends a window cannot hold its slot for --max-new-tokens.
TRANSCRIPTION_MAX_TOKENS = 448
_LANGUAGE = re.compile(r"[a-z]{2,3}")
_LANGUAGE_TAG = re.compile(r"^\s*<\|[a-z]{2,3}\|>\s*")


@dataclass
class ServerLimits:
    max_body_bytes: int = 64 << 20
    max_audio_seconds: float = 600.0
    max_new_tokens: int = 1024
    context_length: int = 4096
    max_batch: int = 8
    max_queue: int = 32
    kv_cache_entries: int = 8
    retry_after_seconds: int = 1


class ApiError(Exception):
    """An error a client caused (or a busy server): becomes an OpenAI-shaped JSON response."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 type: str = "invalid_request_error", headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}


def error_body(message: str, type: str, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ------------------------------------------------------------------------------------------ the state
class ServerState:
    """The loaded model, processor and engine; ``ready`` once loading finished."""

    def __init__(self, model_path: Optional[str], served_name: str, limits: ServerLimits,
                 allowed_media: Optional[str] = None, model_kwargs: Optional[dict] = None,
                 asr_style: str = "auto"):
        self.model_path = model_path
        self.served_name = served_name
        self.limits = limits
        self.allowed_media = Path(allowed_media).resolve() if allowed_media else None
        self.model_kwargs = model_kwargs or {}
        self.asr_style = asr_style
        self.created = int(time.time())
        self.model: Any = None
        self.processor: Any = None
        self.engine: Optional[Engine] = None
        self.load_error: Optional[BaseException] = None
        self.ready = threading.Event()

    def load(self) -> None:
        from .auto import AutoModelForCausalLM, AutoProcessor

        try:
            model = AutoModelForCausalLM.from_pretrained(self.model_path, **self.model_kwargs)
            processor = AutoProcessor.from_pretrained(self.model_path)
            self.attach(model, processor)
        except BaseException as error:  # noqa: BLE001 - /health reports it
            logger.exception("loading %s failed", self.model_path)
            self.load_error = error

    def attach(self, model: Any, processor: Any) -> None:
        limit = model.config.text_config.max_position_embeddings
        self.limits.context_length = min(self.limits.context_length, limit)
        from .modeling import Qwen2AudioForConditionalGeneration

        # The base prompt is the one Qwen2-Audio-7B was trained on for ASR; other families are asked in their chat
        # template.
        has_base_prompt = isinstance(model, Qwen2AudioForConditionalGeneration)
        if self.asr_style == "base" and not has_base_prompt:
            raise ValueError(f"--asr-prompt base is Qwen2-Audio-7B's ASR prompt; {type(model).__name__} has none: "
                             "use --asr-prompt chat (or auto)")
        if self.asr_style == "auto" and not has_base_prompt:
            self.asr_style = "chat"
        self.model, self.processor = model, processor
        if self.asr_style == "auto":
            folder = Path(self.model_path) if self.model_path else None
            instruct = folder is not None and ("instruct" in folder.name.lower() or
                                               (folder / "chat_template.json").is_file() or
                                               (folder / "chat_template.jinja").is_file())
            self.asr_style = "chat" if instruct else "base"
        self.engine = Engine(model, processor, max_batch=self.limits.max_batch,
                             context_length=self.limits.context_length, max_queue=self.limits.max_queue,
                             kv_cache_entries=self.limits.kv_cache_entries)
        self.ready.set()

    def require_ready(self) -> Engine:
        if not self.ready.is_set() or self.engine is None:
            raise ApiError(503, "the model is still loading", code="model_loading", type="server_error",
                           headers={"Retry-After": str(self.limits.retry_after_seconds)})
        return self.engine

    def check_model(self, name: Any, param: str = "model") -> None:
        if name is None:
            return
        if not isinstance(name, str):
            raise ApiError(400, f"'{param}' must be a string", param=param, code="invalid_type")
        if name != self.served_name:
            raise ApiError(404, f"the model '{name}' does not exist; this server serves '{self.served_name}'",
                           param=param, code="model_not_found")


# ------------------------------------------------------------------------------------------ validation
def _expect(value: Any, kinds: tuple, param: str, what: str) -> Any:
    # bool is an int in Python, but not a number in JSON's sense.
    if isinstance(value, bool) and bool not in kinds:
        raise ApiError(400, f"'{param}' must be {what}, got a boolean", param=param, code="invalid_type")
    if not isinstance(value, kinds):
        raise ApiError(400, f"'{param}' must be {what}, got {_json_type(value)}", param=param, code="invalid_type")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def _number(body: dict, name: str, low: float, high: float, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    _expect(value, (int, float), name, "a number")
    if not (low <= value <= high):
        raise ApiError(400, f"'{name}' must be within [{low}, {high}], got {value}", param=name, code="invalid_value")
    return float(value)


def _integer(body: dict, name: str, low: int, high: int) -> Optional[int]:
    value = body.get(name)
    if value is None:
        return None
    _expect(value, (int,), name, "an integer")
    if not (low <= value <= high):
        raise ApiError(400, f"'{name}' must be within [{low}, {high}], got {value}", param=name, code="invalid_value")
    return int(value)


def _decode_base64(data: Any, param: str) -> bytes:
    _expect(data, (str,), param, "a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"'{param}' is not valid base64", param=param, code="invalid_base64") from None
    if not raw:
        raise ApiError(400, f"'{param}' holds no audio (0 bytes)", param=param, code="empty_audio")
    return raw


class AudioLoader:
    """Decodes a request's audio parts, counting their seconds against the per-request limit."""

    def __init__(self, state: ServerState):
        self.state = state
        self.seconds = 0.0

    def load(self, source: Any, param: str) -> np.ndarray:
        from .audio import load_audio

        limit = self.state.limits.max_audio_seconds
        remaining = limit - self.seconds
        if remaining <= 0:
            raise ApiError(413, f"the request's audio exceeds {limit:g} s", param=param, code="audio_too_long")
        try:
            # One sample more than allowed tells "too long" apart from "exactly at the limit".
            audio = load_audio(source, SAMPLING_RATE, max_seconds=remaining + 1.0 / SAMPLING_RATE)
        except ValueError as error:
            if "longer than" in str(error) or "max_seconds" in str(error):
                raise ApiError(413, f"the request's audio exceeds {limit:g} s", param=param,
                               code="audio_too_long") from None
            # Well-formed request, content that cannot be processed.
            raise ApiError(422, f"'{param}' is not readable audio: {error}", param=param,
                           code="invalid_audio") from None
        self.seconds += audio.size / SAMPLING_RATE
        if self.seconds > limit:
            raise ApiError(413, f"the request's audio exceeds {limit:g} s", param=param, code="audio_too_long")
        if audio.size == 0:
            raise ApiError(400, f"'{param}' holds no samples", param=param, code="empty_audio")
        return audio

    def from_input_audio(self, part: Any, param: str) -> np.ndarray:
        _expect(part, (dict,), param, "an object")
        fmt = part.get("format")
        if fmt is not None:
            _expect(fmt, (str,), f"{param}.format", "a string")
            if fmt not in AUDIO_FORMATS:
                raise ApiError(400, f"'{param}.format' must be one of {', '.join(AUDIO_FORMATS)}, got '{fmt}'",
                               param=f"{param}.format", code="invalid_value")
        return self.load(_decode_base64(part.get("data"), f"{param}.data"), f"{param}.data")

    def from_url(self, part: Any, param: str) -> np.ndarray:
        url = part.get("url") if isinstance(part, dict) else part
        _expect(url, (str,), f"{param}.url", "a string")
        if url.startswith("data:"):
            header, comma, data = url.partition(",")
            if not comma or not header.endswith(";base64"):
                raise ApiError(400, f"'{param}.url' must be a base64 data URL (data:audio/...;base64,...)",
                               param=f"{param}.url", code="invalid_url")
            return self.load(_decode_base64(data, f"{param}.url"), f"{param}.url")
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url) and not url.startswith("file://"):
            raise ApiError(400, "audio URLs are not fetched; send the audio inline (input_audio or a data: URL)",
                           param=f"{param}.url", code="url_not_allowed")
        return self.load(self._local_path(url[len("file://"):] if url.startswith("file://") else url, param),
                         f"{param}.url")

    def _local_path(self, path: str, param: str) -> str:
        allowed = self.state.allowed_media
        if allowed is None:
            raise ApiError(400, "local audio paths are disabled (start the server with --allowed-local-media-path)",
                           param=f"{param}.url", code="path_not_allowed")
        resolved = Path(path).resolve()
        if resolved != allowed and allowed not in resolved.parents:
            raise ApiError(400, f"'{path}' is outside the allowed media directory", param=f"{param}.url",
                           code="path_not_allowed")
        if not resolved.is_file():
            raise ApiError(400, f"'{path}' is not a file", param=f"{param}.url", code="invalid_path")
        return str(resolved)


def parse_messages(messages: Any, loader: AudioLoader) -> list[dict[str, Any]]:
    """OpenAI messages -> the processor's conversation (audio decoded to arrays)."""
    _expect(messages, (list,), "messages", "an array")
    if not messages:
        raise ApiError(400, "'messages' must not be empty", param="messages", code="invalid_value")
    conversation = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        _expect(message, (dict,), param, "an object")
        role = message.get("role")
        _expect(role, (str,), f"{param}.role", "a string")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise ApiError(400, f"'{param}.role' must be system, developer, user or assistant, got '{role}'",
                           param=f"{param}.role", code="invalid_value")
        content = message.get("content")
        if content is None and role == "assistant":
            content = ""
        if isinstance(content, str):
            conversation.append({"role": role, "content": content})
            continue
        _expect(content, (list,), f"{param}.content", "a string or an array of content parts")
        items = []
        for number, part in enumerate(content):
            where = f"{param}.content[{number}]"
            _expect(part, (dict,), where, "an object")
            kind = part.get("type")
            _expect(kind, (str,), f"{where}.type", "a string")
            if kind == "text":
                items.append({"type": "text", "text": _expect(part.get("text"), (str,), f"{where}.text", "a string")})
            elif kind in ("input_audio", "audio_url"):
                if role != "user":
                    raise ApiError(400, f"audio is only accepted in user messages ({where})", param=where,
                                   code="invalid_value")
                if kind == "input_audio":
                    audio = loader.from_input_audio(part.get("input_audio"), f"{where}.input_audio")
                else:
                    audio = loader.from_url(part.get("audio_url"), f"{where}.audio_url")
                items.append({"type": "audio", "audio": audio})
            else:
                raise ApiError(400, f"unsupported content part type '{kind}' at {where} (text, input_audio or "
                                    "audio_url)", param=f"{where}.type", code="invalid_value")
        if role != "user":
            # The template renders system and assistant turns as text.
            conversation.append({"role": role, "content": "".join(item["text"] for item in items)})
        else:
            conversation.append({"role": role, "content": items})
    return conversation


def parse_stop(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    _expect(value, (list,), "stop", "a string or an array of strings")
    if len(value) > 4:
        raise ApiError(400, "'stop' takes at most 4 strings", param="stop", code="invalid_value")
    for index, item in enumerate(value):
        _expect(item, (str,), f"stop[{index}]", "a string")
        if not item:
            raise ApiError(400, "stop strings must not be empty", param=f"stop[{index}]", code="invalid_value")
    return list(value)


# ------------------------------------------------------------------------------------------ generation
class Generation:
    """A submitted request as the async side sees it: a queue of the engine's events."""

    def __init__(self, engine: Engine, prompt: Prompt, params: SamplingParams, limits: ServerLimits):
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.request = Request(prompt, params, lambda event: self.loop.call_soon_threadsafe(self.events.put_nowait,
                                                                                            event))
        try:
            engine.submit(self.request)
        except EngineBusy as error:
            raise ApiError(503, f"the server is busy ({error}); retry shortly", type="server_error",
                           code="server_busy",
                           headers={"Retry-After": str(limits.retry_after_seconds)}) from None
        except EngineStopped as error:
            raise ApiError(503, str(error), type="server_error", code="shutting_down") from None

    async def events_until_done(self, http_request: Any = None) -> AsyncIterator[tuple]:
        """Yields events; a client that disconnects (checked while waiting) cancels the request."""
        checked = time.monotonic()
        try:
            while True:
                try:
                    event = await asyncio.wait_for(self.events.get(), timeout=0.25)
                except asyncio.TimeoutError:
                    event = None
                # Checked by the clock, not only when idle: a busy request has an event every step.
                if http_request is not None and time.monotonic() - checked >= 0.25:
                    checked = time.monotonic()
                    if await http_request.is_disconnected():
                        self.request.cancel()
                        return
                if event is None:
                    continue
                yield event
                if event[0] in ("done", "error"):
                    return
        finally:
            # Leaving early (disconnect, a cancelled stream) frees the slot; after "done" this is a no-op.
            self.request.cancel()


def _engine_error(error: BaseException) -> ApiError:
    if isinstance(error, ValueError):
        return ApiError(400, str(error), code="invalid_value")
    if isinstance(error, EngineStopped):
        return ApiError(503, str(error), type="server_error", code="shutting_down")
    logger.error("generation failed: %r", error)
    return ApiError(500, "internal error during generation", type="server_error", code="internal_error")


def prepare_prompt(state: ServerState, conversation: list[dict[str, Any]]) -> Prompt:
    from .chat import _prepare

    try:
        ids, audio = _prepare(state.model, state.processor, conversation, long_audio="chunk")
    except ValueError as error:
        raise ApiError(400, str(error), code="invalid_value") from None
    return Prompt(ids, audio)


def sampling_params(state: ServerState, body: dict, prompt_tokens: int) -> SamplingParams:
    limits = state.limits
    room = limits.context_length - prompt_tokens
    if room < 1:
        raise ApiError(400, f"the prompt has {prompt_tokens} tokens, which leaves no room within the context length "
                            f"of {limits.context_length}", param="messages", code="context_length_exceeded")
    max_tokens = _integer(body, "max_completion_tokens", 1, 1 << 30)
    name = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, name = _integer(body, "max_tokens", 1, 1 << 30), "max_tokens"
    if max_tokens is None:
        max_tokens = min(limits.max_new_tokens, room)
    elif max_tokens > limits.max_new_tokens:
        raise ApiError(400, f"'{name}' is {max_tokens}, above this server's limit of {limits.max_new_tokens}",
                       param=name, code="invalid_value")
    elif prompt_tokens + max_tokens > limits.context_length:
        raise ApiError(400, f"the prompt ({prompt_tokens} tokens) plus '{name}' ({max_tokens}) exceeds the context "
                            f"length of {limits.context_length}", param=name, code="context_length_exceeded")
    seed = _integer(body, "seed", -(1 << 63), (1 << 64) - 1)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0, 1.0),
        top_p=_number(body, "top_p", 1e-9, 1.0, 1.0),
        seed=None if seed is None else seed % (1 << 64),
        repetition_penalty=_number(body, "repetition_penalty", 1e-3, 100.0, 1.0),
        stop=parse_stop(body.get("stop")),
        ignore_eos=_expect(body.get("ignore_eos", False), (bool,), "ignore_eos", "a boolean"))


# ------------------------------------------------------------------------------------------ the app
def create_app(state: ServerState) -> Any:
    app = FastAPI(title="qwen2audio", docs_url=None, redoc_url=None, openapi_url=None)

    def error_response(error: ApiError) -> JSONResponse:
        return JSONResponse(error_body(error.message, error.type, error.param, error.code), status_code=error.status,
                            headers=error.headers)

    @app.exception_handler(ApiError)
    async def _api_error(_: Any, error: ApiError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Any, error: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(error.detail), kind, None, None), status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Any, error: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return JSONResponse(error_body("internal server error", "server_error", None, "internal_error"),
                            status_code=500)

    app.add_middleware(BodyLimit, limit=state.limits.max_body_bytes)

    async def read_json(http_request: HttpRequest) -> dict:
        raw = await http_request.body()
        if not raw:
            raise ApiError(400, "the request body is empty; send a JSON object", code="invalid_json")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
        return _expect(body, (dict,), "body", "a JSON object")

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.load_error is not None:
            return JSONResponse({"status": "error", "message": str(state.load_error)}, status_code=503)
        if not state.ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503,
                                headers={"Retry-After": str(state.limits.retry_after_seconds)})
        return JSONResponse({"status": "ok"})

    @app.get("/stats")
    async def stats() -> JSONResponse:
        return JSONResponse(state.require_ready().snapshot())

    def model_card() -> dict:
        return {"id": state.served_name, "object": "model", "created": state.created, "owned_by": "qwen2audio",
                "max_model_len": state.limits.context_length}

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [model_card()]})

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> JSONResponse:
        state.check_model(name)
        return JSONResponse(model_card())

    @app.post("/v1/chat/completions")
    async def chat_completions(http_request: HttpRequest) -> Any:
        engine = state.require_ready()
        body = await read_json(http_request)
        state.check_model(body.get("model"))
        n = _integer(body, "n", 1, 128)
        if n not in (None, 1):
            raise ApiError(400, "only n=1 is supported", param="n", code="invalid_value")
        stream = body.get("stream", False)
        _expect(stream, (bool,), "stream", "a boolean")
        include_usage = False
        options = body.get("stream_options")
        if options is not None:
            _expect(options, (dict,), "stream_options", "an object")
            include_usage = _expect(options.get("include_usage", False), (bool,), "stream_options.include_usage",
                                    "a boolean")
        messages = body.get("messages")
        _expect(messages, (list,), "messages", "an array")
        loader = AudioLoader(state)
        conversation = await run_in_threadpool(parse_messages, messages, loader)
        if conversation[-1]["role"] == "assistant":
            raise ApiError(400, "the last message must not be the assistant's (nothing to answer)",
                           param="messages", code="invalid_value")
        prompt = await run_in_threadpool(prepare_prompt, state, conversation)
        params = sampling_params(state, body, int(prompt.ids.size))
        generation = Generation(engine, prompt, params, state.limits)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if stream:
            return StreamingResponse(
                _chat_stream(generation, completion_id, created, state.served_name, include_usage),
                media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        pieces: list[str] = []
        reason = None
        async for event in generation.events_until_done(http_request):
            if event[0] == "text":
                pieces.append(event[1])
            elif event[0] == "error":
                raise _engine_error(event[1])
            else:
                reason = event[1]
        if reason is None or reason == "cancelled":
            return PlainTextResponse("", status_code=499)  # the client is gone; nobody reads this
        request = generation.request
        return JSONResponse({
            "id": completion_id, "object": "chat.completion", "created": created, "model": state.served_name,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                         "logprobs": None, "finish_reason": reason}],
            "usage": _usage(request)})

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(http_request: HttpRequest) -> Any:
        engine = state.require_ready()
        content_type = http_request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(400, "send the audio as multipart/form-data with a 'file' field",
                           code="invalid_content_type")
        try:
            form = await http_request.form()
        except ApiError:
            raise
        except Exception as error:  # noqa: BLE001 - a malformed multipart body
            raise ApiError(400, f"the multipart body could not be parsed: {error}", code="invalid_multipart") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "the 'file' field with the audio is required", param="file", code="missing_file")
        state.check_model(form.get("model"))
        response_format = form.get("response_format") or "json"
        if response_format not in ("json", "text", "verbose_json"):
            raise ApiError(400, f"response_format must be json, text or verbose_json, got '{response_format}'",
                           param="response_format", code="invalid_value")
        language = form.get("language") or None
        if language is not None and not _LANGUAGE.fullmatch(str(language)):
            raise ApiError(400, f"'language' must be an ISO-639-1 code such as 'en', got '{language}'",
                           param="language", code="invalid_value")
        context = form.get("prompt") or ""
        temperature = form.get("temperature")
        try:
            temperature = 0.0 if temperature in (None, "") else float(temperature)
        except ValueError:
            raise ApiError(400, "'temperature' must be a number", param="temperature", code="invalid_type") from None
        if not 0.0 <= temperature <= 1.0:
            raise ApiError(400, "'temperature' must be within [0, 1]", param="temperature", code="invalid_value")
        data = await upload.read()
        if not data:
            raise ApiError(400, "the uploaded file is empty", param="file", code="empty_audio")
        audio = await run_in_threadpool(AudioLoader(state).load, data, "file")
        windows = [audio[start:start + int(WINDOW_SECONDS * SAMPLING_RATE)]
                   for start in range(0, audio.size, int(WINDOW_SECONDS * SAMPLING_RATE))]
        prompts = [await run_in_threadpool(_transcription_prompt, state, window, language, context)
                   for window in windows]
        # Every window is its own request, so the windows of one file decode together in the batch.
        generations = []
        for prompt in prompts:
            params = SamplingParams(max_tokens=min(state.limits.max_new_tokens, TRANSCRIPTION_MAX_TOKENS,
                                                   state.limits.context_length - int(prompt.ids.size)),
                                    temperature=temperature)
            if params.max_tokens < 1:
                raise ApiError(400, "the transcription prompt leaves no room within the context length",
                               code="context_length_exceeded")
            generations.append(Generation(engine, prompt, params, state.limits))
        texts = await asyncio.gather(*(_collect(g, http_request) for g in generations))
        texts = [_LANGUAGE_TAG.sub("", text).strip() for text in texts]
        text = " ".join(t for t in texts if t)
        if response_format == "text":
            return PlainTextResponse(text)
        if response_format == "json":
            return JSONResponse({"text": text})
        duration = audio.size / SAMPLING_RATE
        segments = []
        for index, piece in enumerate(texts):
            start = index * WINDOW_SECONDS
            segments.append({"id": index, "seek": int(start * 100), "start": start,
                             "end": min(duration, start + WINDOW_SECONDS), "text": piece,
                             "tokens": [], "temperature": temperature})
        return JSONResponse({"task": "transcribe", "language": language or "unknown", "duration": duration,
                             "text": text, "segments": segments})

    return app


async def _collect(generation: Generation, http_request: Any) -> str:
    pieces = []
    async for event in generation.events_until_done(http_request):
        if event[0] == "text":
            pieces.append(event[1])
        elif event[0] == "error":
            raise _engine_error(event[1])
    return "".join(pieces)


def _transcription_prompt(state: ServerState, window: np.ndarray, language: Optional[str], context: str) -> Prompt:
    if state.asr_style == "chat":
        instruction = "Transcribe the speech" + (f" (language: {language})" if language else "") + " verbatim."
        if context:
            instruction += f" Context: {context}"
        conversation = [{"role": "user", "content": [{"type": "audio", "audio": window},
                                                    {"type": "text", "text": instruction}]}]
        return prepare_prompt(state, conversation)
    text = (context + " " if context else "") + ASR_PROMPT + (f"<|{language}|>" if language else "")
    try:
        inputs = state.processor(text=text, audio=[window], sampling_rate=SAMPLING_RATE)
    except ValueError as error:
        raise ApiError(400, str(error), code="invalid_value") from None
    ids = np.asarray(inputs["input_ids"], dtype=np.int64)[0]
    return Prompt(ids, {key: np.asarray(value) for key, value in inputs.items()
                        if key not in ("input_ids", "attention_mask")})


def _usage(request: Request) -> dict:
    return {"prompt_tokens": request.prompt_tokens, "completion_tokens": request.completion_tokens,
            "total_tokens": request.prompt_tokens + request.completion_tokens}


async def _chat_stream(generation: Generation, completion_id: str, created: int, model: str,
                       include_usage: bool) -> AsyncIterator[bytes]:
    def chunk(delta: dict, reason: Optional[str] = None) -> bytes:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "system_fingerprint": None,
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}
        if include_usage:
            payload["usage"] = None
        return f"data: {json.dumps(payload)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    async for event in generation.events_until_done():
        if event[0] == "text":
            yield chunk({"content": event[1]})
        elif event[0] == "error":
            error = _engine_error(event[1])
            yield f"data: {json.dumps(error_body(error.message, error.type, error.param, error.code))}\n\n".encode()
            break
        elif event[1] != "cancelled":
            yield chunk({}, event[1])
            if include_usage:
                usage = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                         "system_fingerprint": None, "choices": [], "usage": _usage(generation.request)}
                yield f"data: {json.dumps(usage)}\n\n".encode()
    yield b"data: [DONE]\n\n"


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with 413: at once when Content-Length says so (after draining a
    bounded amount, so the client reads the answer instead of a reset connection), else as they stream."""

    DRAIN_LIMIT = 256 << 20

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        try:
            declared_size = int(declared) if declared is not None else None
        except ValueError:
            declared_size = None
        if declared_size is not None and declared_size > self.limit:
            drained = 0
            while drained <= self.DRAIN_LIMIT:
                message = await receive()
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            await self._refuse(send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge()
            return message

        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(error_body(f"the request body exceeds {self.limit} bytes", "invalid_request_error", None,
                                     "request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------ running
def serve(state: ServerState, host: str, port: int, log_level: str = "info") -> None:
    """Starts listening at once (``/health`` answers 503 until the model is loaded), loads, serves."""
    import uvicorn

    app = create_app(state)

    @app.on_event("startup")
    async def _start_loading() -> None:
        if not state.ready.is_set():
            threading.Thread(target=state.load, name="qwen2audio-load", daemon=True).start()

    @app.on_event("shutdown")
    async def _stop() -> None:
        if state.engine is not None:
            state.engine.shutdown()

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5)
