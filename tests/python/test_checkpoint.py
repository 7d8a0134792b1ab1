"""The checkpoint loader against the tiny reference checkpoints and an independent reader."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import qwen2audio
from qwen2audio import Checkpoint, CheckpointError, ConfigError


# --- an independent safetensors reader: struct + json + numpy, sharing nothing with the engine ---
_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64, "I32": np.int32}


def read_safetensors_independently(path: Path) -> dict[str, tuple[str, tuple[int, ...], np.ndarray]]:
    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    header.pop("__metadata__", None)
    base = 8 + header_length
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        values = np.frombuffer(raw[base + begin : base + end], dtype=_NUMPY_DTYPES[entry["dtype"]])
        tensors[name] = (entry["dtype"], tuple(entry["shape"]), values.reshape(entry["shape"]))
    return tensors


def write_safetensors_independently(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], np.ndarray]]) -> None:
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, values) in tensors.items():
        blob = np.ascontiguousarray(values).tobytes()
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def raw_image(header: dict | bytes, data: bytes = b"", header_length: int | None = None) -> bytes:
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(encoded) if header_length is None else header_length
    return struct.pack("<Q", length) + encoded + data


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_every_tensor_matches_independent_reader(dtype: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(f"tiny_{dtype}")
    expected = read_safetensors_independently(folder / "model.safetensors")
    checkpoint = Checkpoint(folder)
    assert sorted(checkpoint.tensor_names()) == sorted(expected)
    for name, (stored_dtype, shape, values) in expected.items():
        assert checkpoint.dtype(name) == stored_dtype
        assert checkpoint.shape(name) == shape
        view = checkpoint[name]
        assert view.shape == shape
        np.testing.assert_array_equal(view, values, err_msg=name)


def test_views_are_zero_copy_and_read_only(tiny_bf16: Path) -> None:
    checkpoint = Checkpoint(tiny_bf16)
    name = "language_model.model.embed_tokens.weight"
    view = checkpoint[name]
    assert view.dtype == np.uint16  # bf16 bits
    assert not view.flags.writeable
    assert not view.flags.owndata
    with pytest.raises(ValueError):
        view[0, 0] = 1
    # Two views of one tensor share the mapping's memory.
    assert checkpoint[name].__array_interface__["data"][0] == view.__array_interface__["data"][0]
    # A view keeps the mapping alive after the checkpoint object is dropped.
    total = float(checkpoint.to_float32("language_model.model.norm.weight").sum())
    del checkpoint
    assert np.isfinite(view.astype(np.float32).sum())
    assert np.isfinite(total)


def test_bf16_and_f32_checkpoints_hold_identical_values(tiny_f32: Path, tiny_bf16: Path) -> None:
    f32, bf16 = Checkpoint(tiny_f32), Checkpoint(tiny_bf16)
    for name in ("audio_tower.conv1.weight", "language_model.model.layers.1.mlp.down_proj.weight"):
        np.testing.assert_array_equal(f32[name], bf16.to_float32(name))


def test_config_matches_config_json_and_hf_defaults(tiny_f32: Path) -> None:
    config = Checkpoint(tiny_f32).config
    raw = json.loads((tiny_f32 / "config.json").read_text())
    for key, value in raw["text_config"].items():
        if hasattr(config.text_config, key) and key != "eos_token_id":  # normalised to a list, checked below
            assert getattr(config.text_config, key) == value, key
    for key, value in raw["audio_config"].items():
        if hasattr(config.audio_config, key):
            assert getattr(config.audio_config, key) == value, key
    assert config.audio_token_index == 151646
    assert config.text_config.head_dim == 16
    assert config.text_config.eos_token_id == [151645]


def test_generation_config(tiny_f32: Path) -> None:
    generation = Checkpoint(tiny_f32).generation_config
    assert generation.eos_token_id == [151645, 151643]
    assert generation.pad_token_id == 151643
    assert generation.do_sample is False
    assert generation.top_k == 50  # transformers' GenerationConfig default where the file is silent


def test_weights_match_config(tiny_f32: Path) -> None:
    checkpoint = Checkpoint(tiny_f32)
    assert checkpoint.check_weights() == {"missing": [], "unexpected": [], "wrong_shape": [], "unsupported_dtype": []}
    checkpoint.require_weights()


def test_sharded_copy_reads_the_same(tiny_f32: Path, tmp_path: Path) -> None:
    tensors = read_safetensors_independently(tiny_f32 / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00003.safetensors": names[0::3], "model-00002-of-00003.safetensors": names[1::3],
              "model-00003-of-00003.safetensors": names[2::3]}
    weight_map = {}
    for shard, shard_names in shards.items():
        write_safetensors_independently(tmp_path / shard, {name: tensors[name] for name in shard_names})
        weight_map.update({name: shard for name in shard_names})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(tiny_f32 / "config.json", tmp_path / "config.json")

    checkpoint = Checkpoint(tmp_path)
    assert len(checkpoint.files) == 3
    assert sorted(checkpoint.tensor_names()) == names
    for name in names:
        assert Path(checkpoint.file_of(name)).name == weight_map[name]
        np.testing.assert_array_equal(checkpoint[name], tensors[name][2])
    checkpoint.require_weights()


# --- malformed checkpoints: each names the problem, the file and the tensor ---
def _write_single(folder: Path, image: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(image)
    return folder


GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    "image, message",
    [
        (b"\x01\x02", "too small"),
        (raw_image({"w": GOOD_ENTRY}, bytes(8), header_length=10**6), "runs past the end"),
        (raw_image(b"x" * 16, bytes(8), header_length=2**40), "runs past the end"),
        (raw_image(b"{\"w\": [", bytes(8)), "invalid JSON"),
        (raw_image({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)), "past the data section"),
        (raw_image({"w": GOOD_ENTRY, "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)), "overlap"),
        (raw_image({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)), "need 12"),
        (raw_image({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}, bytes(8)), "need 8") ,
        (raw_image(b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
                   b'"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', bytes(8)), "duplicate tensor name 'w'"),
        (raw_image({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)), "unknown dtype"),
    ],
)
def test_malformed_single_file(tmp_path: Path, image: bytes, message: str) -> None:
    if message == "need 8":
        Checkpoint(_write_single(tmp_path, image))  # 2x2 BF16 is exactly 8 bytes: valid
        return
    with pytest.raises(CheckpointError, match=message) as error:
        Checkpoint(_write_single(tmp_path, image))
    assert "model.safetensors" in str(error.value)
    assert isinstance(error.value, ValueError)


def test_error_names_the_tensor(tmp_path: Path) -> None:
    image = raw_image({"audio_tower.conv1.weight": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8))
    with pytest.raises(CheckpointError, match="audio_tower.conv1.weight"):
        Checkpoint(_write_single(tmp_path, image))


def _write_sharded(folder: Path, weight_map: dict[str, str], shards: dict[str, dict]) -> Path:
    for shard, entries in shards.items():
        write_safetensors_independently(folder / shard, entries)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


ONE = ("F32", (1,), np.ones(1, np.float32))


def test_missing_shard(tmp_path: Path) -> None:
    _write_sharded(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors"}, {"s1.safetensors": {"a": ONE}})
    with pytest.raises(CheckpointError, match="s2.safetensors.*missing"):
        Checkpoint(tmp_path)


def test_tensor_in_index_absent_from_shard(tmp_path: Path) -> None:
    _write_sharded(tmp_path, {"a": "s1.safetensors", "b": "s1.safetensors"}, {"s1.safetensors": {"a": ONE}})
    with pytest.raises(CheckpointError, match="'b'.*absent"):
        Checkpoint(tmp_path)


def test_duplicate_across_shards(tmp_path: Path) -> None:
    _write_sharded(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors"},
                   {"s1.safetensors": {"a": ONE}, "s2.safetensors": {"a": ONE, "b": ONE}})
    with pytest.raises(CheckpointError, match="duplicate tensor 'a'"):
        Checkpoint(tmp_path)


def test_shard_outside_folder(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "/etc/passwd"}}))
    with pytest.raises(CheckpointError, match="not a file name"):
        Checkpoint(tmp_path)


def test_invalid_index_json(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text("{weight_map")
    with pytest.raises(CheckpointError, match="invalid JSON"):
        Checkpoint(tmp_path)


def test_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        Checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        Checkpoint(tmp_path)


def test_missing_and_unexpected_tensors_reported_at_once(tiny_f32: Path, tmp_path: Path) -> None:
    tensors = read_safetensors_independently(tiny_f32 / "model.safetensors")
    dropped = ["language_model.lm_head.weight", "audio_tower.layers.1.fc2.bias"]
    kept = {name: value for name, value in tensors.items() if name not in dropped}
    kept["audio_tower.extra.weight"] = ONE
    write_safetensors_independently(tmp_path / "model.safetensors", kept)
    shutil.copy(tiny_f32 / "config.json", tmp_path / "config.json")
    checkpoint = Checkpoint(tmp_path)
    report = checkpoint.check_weights()
    assert sorted(report["missing"]) == sorted(dropped)
    assert report["unexpected"] == ["audio_tower.extra.weight"]
    with pytest.raises(CheckpointError) as error:
        checkpoint.require_weights()
    for name in dropped + ["audio_tower.extra.weight"]:
        assert name in str(error.value)


def test_shape_mismatch_against_config(tiny_f32: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_f32 / "model.safetensors", tmp_path / "model.safetensors")
    config = json.loads((tiny_f32 / "config.json").read_text())
    config["text_config"]["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"mlp.up_proj.weight: checkpoint \[128, 64\], config expects \[96, 64\]"):
        Checkpoint(tmp_path).require_weights()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"text_config": {"hidden_size": "wide"}}, "hidden_size"),
        ({"text_config": {"num_key_value_heads": 3}}, "num_key_value_heads"),
        ({"model_type": "whisper"}, "model_type"),
        ({"text_config": {"vocab_size": 10**12}}, "vocab_size"),
    ],
)
def test_bad_config_values(tiny_f32: Path, tmp_path: Path, change: dict, message: str) -> None:
    config = json.loads((tiny_f32 / "config.json").read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(tiny_f32 / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(ConfigError, match=message):
        Checkpoint(tmp_path)


def test_absent_config_fields_take_hf_defaults() -> None:
    config = qwen2audio.Qwen2AudioConfig.from_json_string('{"model_type": "qwen2_audio"}')
    assert config.audio_config.d_model == 1280 and config.audio_config.encoder_layers == 32
    assert config.text_config.hidden_size == 4096 and config.text_config.intermediate_size == 22016
    assert config.text_config.max_position_embeddings == 32768
    assert config.text_config.rms_norm_eps == 1e-6


def test_two_checkpoints_in_one_process(tiny_f32: Path, tiny_bf16: Path) -> None:
    a, b = Checkpoint(tiny_f32), Checkpoint(tiny_bf16)
    assert a.dtype("language_model.model.norm.weight") == "F32"
    assert b.dtype("language_model.model.norm.weight") == "BF16"
