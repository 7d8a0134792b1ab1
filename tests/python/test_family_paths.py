"""The user paths over a second family: the tiny Ultravox checkpoint (../shared/reference/ultravox_tiny) through
the Python chat and batch APIs, `qwen2audio chat`, `annotate`, `serve`, `eval` and `bench`, each answer checked
against the Python API's greedy answer for the same prompt. The family comes from config.json everywhere."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import qwen2audio
from qwen2audio import UltravoxForConditionalGeneration, UltravoxProcessor, load_audio
from qwen2audio.cli import main
from test_ultravox import _materialize

NEW_TOKENS = 6
INSTRUCTION = "Describe the sound."


@pytest.fixture(scope="module")
def ultravox(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _materialize(reference_dir, "f32", tmp_path_factory.mktemp("family") / "ultravox")


@pytest.fixture(scope="module")
def model(ultravox: Path) -> UltravoxForConditionalGeneration:
    return qwen2audio.AutoModelForCausalLM.from_pretrained(ultravox)


@pytest.fixture(scope="module")
def processor(ultravox: Path) -> UltravoxProcessor:
    return qwen2audio.AutoProcessor.from_pretrained(ultravox)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, sine_wav) -> Path:
    # Two clips of one length (they batch together) and a longer one (Ultravox batches it alone: see
    # UltravoxProcessor.batch_group).
    folder = tmp_path_factory.mktemp("family-clips")
    for index, seconds in enumerate((0.8, 0.8, 1.5)):
        sine_wav(folder / f"clip{index}.wav", seconds, 250 + 150 * index)
    return folder


def _conversation(audio: object, text: str = INSTRUCTION) -> list:
    return [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": text}]}]


def _greedy_answer(model, processor, conversation: list, new_tokens: int = NEW_TOKENS) -> tuple[str, list[int]]:
    """What the Python API answers: the processor's chat template, generate, the new tokens up to EOS."""
    inputs = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, sampling_rate=16000)
    tokens = model.generate(**inputs, max_new_tokens=new_tokens)[0, inputs["input_ids"].shape[1]:].tolist()
    eos = set(model.generation_config.eos_token_id)
    cut = next((index for index, token in enumerate(tokens) if token in eos), len(tokens))
    return processor.decode(tokens[:cut], skip_special_tokens=True), tokens[:cut]


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qwen2audio", *args], capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


# ------------------------------------------------------------------------------ Python API


def test_chat_messages_render_audio_parts_as_placeholders(processor):
    prompt = processor.apply_chat_template(_conversation(np.zeros(1600, dtype=np.float32)))
    assert "<|audio|>\n" + INSTRUCTION + "<|eot_id|>" in prompt
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    with pytest.raises(ValueError, match="text and audio"):
        processor.apply_chat_template([{"role": "user", "content": [{"type": "image", "image": "x.png"}]}])


def test_batched_generate_equals_one_by_one(model, processor, clips):
    # Clips of equal length with prompts of different lengths: left padding and flattened audio starts.
    conversations = [_conversation(str(clips / "clip0.wav"), "Describe the sound in a few words, please."),
                     _conversation(str(clips / "clip1.wav")), [{"role": "user", "content": "No audio here."}]]
    batch = processor.apply_chat_template(conversations, tokenize=True, return_dict=True, padding=True)
    assert batch["input_ids"].shape[0] == 3 and (batch["attention_mask"][:, -1] == 1).all()
    assert (batch["attention_mask"][1:, 0] == 0).all()
    assert batch["audio_batch_size"].tolist() == [1, 1, 0]
    new = model.generate(**batch, max_new_tokens=NEW_TOKENS, eos_token_id=[])[:, batch["input_ids"].shape[1]:]
    for row, conversation in enumerate(conversations):
        single = processor.apply_chat_template(conversation, tokenize=True, return_dict=True)
        alone = model.generate(**single, max_new_tokens=NEW_TOKENS, eos_token_id=[])
        assert new[row].tolist() == alone[0, single["input_ids"].shape[1]:].tolist(), row


def test_chat_reuses_the_cache_and_streams_the_same_answer(model, processor, clips):
    clip = str(clips / "clip1.wav")
    conversation = _conversation(clip)
    expected, _ = _greedy_answer(model, processor, conversation)
    stats: dict = {}
    from qwen2audio.chat import chat

    assert chat(model, processor, conversation, max_new_tokens=NEW_TOKENS, stats=stats) == expected
    assert stats["reused_tokens"] == 0
    follow_up = conversation + [{"role": "assistant", "content": expected},
                                {"role": "user", "content": [{"type": "audio", "audio": str(clips / "clip0.wav")},
                                                             {"type": "text", "text": "And this one?"}]}]
    streamed = "".join(chat(model, processor, follow_up, stream=True, max_new_tokens=NEW_TOKENS, stats=stats))
    # The first turn (its clip included) came from the cache; only the new turn was prefilled.
    assert stats["reused_tokens"] > 0 and stats["prefill_tokens"] < stats["prompt_tokens"]
    assert streamed == _greedy_answer(model, processor, follow_up)[0]


def test_session_generate_takes_ultravox_audio(model, processor, clips):
    inputs = processor.apply_chat_template(_conversation(str(clips / "clip2.wav")), tokenize=True, return_dict=True)
    session = model.start_session()
    new = session.generate(**inputs, max_new_tokens=NEW_TOKENS, eos_token_id=[])
    whole = model.generate(**inputs, max_new_tokens=NEW_TOKENS, eos_token_id=[])
    assert new[0].tolist() == whole[0, inputs["input_ids"].shape[1]:].tolist()
    with pytest.raises(TypeError, match="audio_values"):
        session.append(inputs["input_ids"], input_features=np.zeros((1, 128, 3000), dtype=np.float32))


def test_padding_changes_ultravox_audio_tokens_so_batches_group_by_length(model, processor):
    # Why annotate groups Ultravox batches by processor.batch_group: the reference encoder reads a clip's padding.
    clip = np.random.default_rng(1).standard_normal(160 * 60).astype(np.float32) * 0.1
    alone = processor(text="<|audio|>", audio=[clip])
    padded = np.pad(alone["audio_values"], ((0, 0), (0, 0), (0, 40)))
    assert not np.allclose(model.audio_embeddings(padded, alone["audio_lens"]),
                           model.audio_embeddings(alone["audio_values"], alone["audio_lens"]), atol=1e-3)
    assert processor.batch_group(9600) == processor.batch_group(9590) != processor.batch_group(9601)


def test_generate_arguments_apply_to_ultravox(model, processor, clips, capsys):
    from qwen2audio import TextStreamer

    inputs = processor.apply_chat_template(_conversation(str(clips / "clip0.wav")), tokenize=True, return_dict=True)
    prompt = inputs["input_ids"].shape[1]
    greedy = model.generate(**inputs, max_new_tokens=8, eos_token_id=[])[0, prompt:]
    seen: list = []
    output = model.generate(**inputs, max_new_tokens=8, eos_token_id=[],
                            streamer=lambda step: seen.append(int(step[0])), return_dict_in_generate=True,
                            output_logprobs=True)
    assert seen == greedy.tolist() == output.sequences[0, prompt:].tolist()
    assert output.logprobs.shape == (1, 8) and (output.logprobs <= 0).all()
    sampled = [model.generate(**inputs, max_new_tokens=8, do_sample=True, temperature=1.5, seed=7, eos_token_id=[])
               for _ in range(2)]
    assert (sampled[0] == sampled[1]).all()
    text = processor.decode(greedy, skip_special_tokens=True)
    cut = next(index for index in range(1, len(text) + 1) if text[:index].strip())  # the first visible character
    stopped = model.generate(**inputs, max_new_tokens=8, eos_token_id=[], stop_strings=text[:cut],
                             tokenizer=processor.tokenizer)[0, prompt:]
    assert len(stopped) < 8 and stopped.tolist() == greedy[:len(stopped)].tolist()
    model.generate(**inputs, max_new_tokens=8, eos_token_id=[],
                   streamer=TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True))
    assert capsys.readouterr().out.rstrip("\n") == text


def test_long_audio_truncate_or_chunk(processor):
    clip = np.random.default_rng(0).standard_normal(16000 * 31).astype(np.float32) * 0.1
    chunked = processor(text="<|audio|>", audio=[clip])
    assert chunked["audio_values"].shape[0] == 2
    with pytest.warns(qwen2audio.AudioTruncatedWarning):
        truncated = processor(text="<|audio|>", audio=[clip], long_audio="truncate")
    assert truncated["audio_values"].shape[0] == 1 and truncated["audio_lens"].tolist() == [3000]


# ------------------------------------------------------------------------------ command line


def test_cli_chat_answers_as_the_python_api(ultravox, model, processor, clips):
    clip = clips / "clip0.wav"
    result = _run("chat", "--model", str(ultravox), "--audio", str(clip), "--max-new-tokens", str(NEW_TOKENS),
                  INSTRUCTION)
    assert result.returncode == 0, result.stderr
    expected, tokens = _greedy_answer(model, processor, _conversation(str(clip)))
    assert tokens  # the comparison says something only if there is an answer
    assert result.stdout.rstrip("\n") == expected
    assert "tokens in" in result.stderr  # the figures line went to stderr, not into the answer


def test_cli_annotate_one_line_per_file_then_resume(ultravox, model, processor, clips, tmp_path):
    output = tmp_path / "out.jsonl"
    command = ["annotate", "--model", str(ultravox), "--input", str(clips), "--prompt", INSTRUCTION, "--output",
               str(output), "--max-new-tokens", str(NEW_TOKENS), "--batch-size", "2", "--quiet"]
    result = _run(*command)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(record["id"] for record in records) == ["clip0.wav", "clip1.wav", "clip2.wav"]
    for record in records:
        expected, tokens = _greedy_answer(model, processor, _conversation(record["path"]))
        assert record["answer"] == expected.strip() and record["tokens"] == len(tokens), record
    again = _run(*command)
    assert again.returncode == 0, again.stderr
    assert '"skipped": 3' in again.stderr
    assert output.read_text().count("\n") == 3


def test_cli_bench_runs_an_ultravox_folder(ultravox):
    result = _run("bench", "--model", str(ultravox), "--prompt-tokens", "16", "--new-tokens", "4", "--context", "32",
                  "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["decode_tokens_per_s"] > 0 and figures["prefill_tokens_per_s"] > 0
    assert figures["encoder_30s_s"] > figures["encoder_5s_s"] > 0
    result = _run("bench", "--model", str(ultravox), "--annotate", "--clip-seconds", "5", "--batch-size", "2",
                  "--new-tokens", "4", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert {row["run"] for row in rows} == {"batched", "batch 1"}  # no Qwen2-Audio baseline for Ultravox
    assert all(row["clips_per_hour"] > 0 for row in rows)


# ------------------------------------------------------------------------------ eval


@pytest.fixture(scope="module")
def airbench(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("airbench") / "Foundation"
    folder = root / "Speaker_Gender_Recognition_cv"
    folder.mkdir(parents=True)
    meta = []
    for index, answer in enumerate(["male", "female"]):
        (folder / f"{index}.wav").write_bytes((clips / f"clip{index}.wav").read_bytes())
        meta.append({"path": f"{index}.wav", "question": "What is the gender of the speaker?", "choice_a": "male",
                     "choice_b": "female", "answer_gt": answer, "task_name": "Speaker_Gender_Recognition",
                     "dataset_name": "cv", "uniq_id": 100 + index})
    (root / "Foundation_meta.json").write_text(json.dumps(meta))
    return root


def test_eval_airbench_end_to_end(ultravox, model, processor, airbench, tmp_path, capsys):
    from qwen2audio.eval import tasks

    out = tmp_path / "out"
    assert main(["eval", "--model", str(ultravox), "--datasets", "airbench_foundation", "--airbench-root",
                 str(airbench), "--output-dir", str(out), "--max-new-tokens", str(NEW_TOKENS), "--batch-size", "2",
                 "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["airbench"]["total_sum"] + summary["airbench"]["fail_num"] == 2
    responses = [json.loads(line) for line in (out / "airbench_foundation.responses.jsonl").read_text().splitlines()]
    meta = json.loads((airbench / "Foundation_meta.json").read_text())
    for line, item in zip(sorted(responses, key=lambda line: line["uniq_id"]), meta):
        # The instruction in Ultravox's own chat template, after the system prompt, greedy with at least 1 token.
        conversation = [{"role": "system", "content": tasks.SYSTEM_PROMPT},
                        *_conversation(str(airbench / "Speaker_Gender_Recognition_cv" / item["path"]),
                                       tasks.airbench_instruction(item))]
        inputs = processor.apply_chat_template(conversation, tokenize=True, return_dict=True)
        tokens = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=1, do_sample=False)
        tokens = tokens[0, inputs["input_ids"].shape[1]:].tolist()
        eos = set(model.generation_config.eos_token_id)
        tokens = tokens[:next((index for index, token in enumerate(tokens) if token in eos), len(tokens))]
        assert line["response"] == processor.decode(tokens, skip_special_tokens=True)


def test_eval_refuses_qwen2_audio_prompted_tasks(ultravox, tmp_path, capsys):
    with pytest.raises(ValueError, match="Qwen2-Audio-7B's base-model prompt"):
        from qwen2audio.eval.command import _run as run_eval
        import argparse

        data = tmp_path / "data" / "asr"
        data.mkdir(parents=True)
        (data / "librispeech_eval.jsonl").write_text(json.dumps(
            {"audio": "a.wav", "prompt": "<|startoftranscript|>", "gt": "x", "source": "librispeech"}) + "\n")
        run_eval(argparse.Namespace(model=str(ultravox), datasets=["librispeech"], output_dir=str(tmp_path / "o"),
                                    batch_size=1, max_new_tokens=4, shard=None, data=str(tmp_path / "data"),
                                    audio_root=None, airbench_root=None, dask_scheduler=None))


# ------------------------------------------------------------------------------ serve


@pytest.fixture(scope="module")
def server(ultravox: Path) -> Iterator:
    from test_server import Server

    instance = Server(ultravox, "--max-batch", "4", "--context-length", "1024")
    yield instance
    instance.close()


def _audio_message(path: Path, text: str = INSTRUCTION) -> list:
    return [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(path.read_bytes()).decode(), "format": "wav"}},
        {"type": "text", "text": text}]}]


def test_serve_answers_as_the_python_api(server, model, processor, clips):
    from test_server import _sse

    clip = clips / "clip1.wav"
    expected, tokens = _greedy_answer(model, processor, _conversation(load_audio(clip, sampling_rate=16000)))
    assert tokens
    response = server.chat(_audio_message(clip), max_tokens=NEW_TOKENS, temperature=0)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == expected
    assert body["usage"]["completion_tokens"] == len(tokens) + (len(tokens) < NEW_TOKENS)
    with server.client.stream("POST", "/v1/chat/completions", json={
            "model": "tiny", "messages": _audio_message(clip), "max_tokens": NEW_TOKENS, "temperature": 0,
            "stream": True}) as streamed:
        events = _sse(streamed)
    assert events[-1] == "[DONE]"
    assert "".join(event["choices"][0]["delta"].get("content") or "" for event in events[:-1]) == expected


def test_serve_transcribes_with_the_chat_template(server, clips):
    audio = (clips / "clip0.wav").read_bytes()
    response = server.client.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)},
                                  data={"model": "tiny", "response_format": "json"})
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["text"], str)


def test_base_asr_prompt_is_refused_for_ultravox(model, processor):
    from qwen2audio.server import ServerLimits, ServerState

    state = ServerState(None, "tiny", ServerLimits(), asr_style="base")
    with pytest.raises(ValueError, match="Qwen2-Audio-7B's ASR prompt"):
        state.attach(model, processor)


@pytest.mark.parametrize("family", ["qwen2_audio", "ultravox"])
def test_inspect_describes_each_family_and_checks_its_weights(family, request, tmp_path, capsys) -> None:
    folder = request.getfixturevalue("tiny_f32" if family == "qwen2_audio" else "ultravox")
    config = json.loads((folder / "config.json").read_text())
    audio, text = config["audio_config"], config["text_config"]
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"model type: {family}" in out
    assert (f"audio encoder: d_model {audio['d_model']}, {audio['encoder_layers']} layers, "
            f"{audio['encoder_attention_heads']} heads, ffn {audio['encoder_ffn_dim']}") in out
    assert (f"text decoder: hidden {text['hidden_size']}, {text['num_hidden_layers']} layers, "
            f"{text['num_attention_heads']} heads ({text['num_key_value_heads']} kv)") in out
    if family == "ultravox":
        assert f"projector: {config['stack_factor']} frames stacked per token, hidden {config['hidden_size']}" in out
    assert "weights match config.json" in out

    # The same folder less one tensor and with one too many: the family's own layout names both.
    from qwen2audio.checkpoint import Checkpoint
    from qwen2audio.safetensors_writer import save_file

    checkpoint = Checkpoint(folder)
    names = list(checkpoint)
    dropped = next(name for name in names if "layers.1." in name and name.endswith("weight"))
    tensors = {name: checkpoint.to_float32(name) for name in names if name != dropped}
    tensors["extra.weight"] = np.zeros(3, dtype=np.float32)
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in folder.iterdir():
        if item.name != "model.safetensors" and item.is_file():
            (broken / item.name).write_bytes(item.read_bytes())
    save_file(tensors, broken / "model.safetensors")
    assert main(["inspect", str(broken)]) == 0
    out = capsys.readouterr().out
    assert "weight problems" in out and dropped in out and "extra.weight" in out
    assert Checkpoint(broken).check_weights()["missing"] == [dropped]
    with pytest.raises(qwen2audio.CheckpointError, match=dropped.replace(".", r"\.")):
        Checkpoint(broken).require_weights()
