"""Qwen2Tokenizer against the reference data (llama.cpp vectors and chat examples, both made with HF
tokenizers), an independent pure-Python BPE, and the behaviour HF users rely on."""

from __future__ import annotations

import json
import random
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import qwen2audio
from qwen2audio import ConfigError, Qwen2Tokenizer

VECTOR_SEPARATOR = "\n__ggml_vocab_test__\n"
ENDOFTEXT, IM_START, IM_END, AUDIO, AUDIO_BOS, AUDIO_EOS = range(151643, 151649)


# --------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tokenizer_dir(reference_dir: Path) -> Path:
    return reference_dir / "tokenizer"


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> Qwen2Tokenizer:
    loaded = Qwen2Tokenizer.from_pretrained(tokenizer_dir)
    assert loaded._core.model_source == "tokenizer.json"
    return loaded


@pytest.fixture(scope="module")
def merges_tokenizer(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Qwen2Tokenizer:
    """The same tokenizer from vocab.json + merges.txt (no tokenizer.json in the folder)."""
    folder = tmp_path_factory.mktemp("vocab_merges")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, folder / name)
    loaded = Qwen2Tokenizer.from_pretrained(folder)
    assert loaded._core.model_source == "vocab.json+merges.txt"
    return loaded


@pytest.fixture(scope="module")
def vectors(tokenizer_dir: Path) -> list[tuple[str, list[int]]]:
    folder = tokenizer_dir / "llama_cpp_vectors"
    inputs = (folder / "ggml-vocab-qwen2.gguf.inp").read_text(encoding="utf-8").split(VECTOR_SEPARATOR)
    outputs = (folder / "ggml-vocab-qwen2.gguf.out").read_text(encoding="utf-8").split("\n")
    assert inputs[-1] == "", "the .inp file ends with a separator"
    inputs = inputs[:-1]
    outputs = outputs[: len(inputs)]
    assert len(inputs) == 46 and len(outputs) == 46
    return [(text, [int(token) for token in line.split()]) for text, line in zip(inputs, outputs)]


@pytest.fixture(scope="module")
def chat_examples(tokenizer_dir: Path) -> list[dict]:
    examples = json.loads((tokenizer_dir / "chat_examples.json").read_text(encoding="utf-8"))["examples"]
    assert len(examples) == 10
    return examples


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, written out independently of the C++ one."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


@pytest.fixture(scope="module")
def python_bpe(tokenizer_dir: Path):
    """A plain-Python byte-level BPE over the reference vocab.json and merges.txt."""
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    ranks = {}
    for rank, line in enumerate((tokenizer_dir / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]):
        left, right = line.split(" ")
        ranks[(left, right)] = rank
    byte_encoder = bytes_to_unicode()

    def encode_word(word: bytes) -> list[int]:
        symbols = [byte_encoder[byte] for byte in word]
        while len(symbols) > 1:
            candidates = [(ranks[pair], index) for index, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks]
            if not candidates:
                break
            _, index = min(candidates)
            symbols[index : index + 2] = [symbols[index] + symbols[index + 1]]
        return [vocab[symbol] for symbol in symbols]

    return encode_word


RANDOM_POOL = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "      \n\n\t\r.,;:!?'\"()[]{}-_=+*/\\@#$%^&~`|"
    "éèàüößçñÄÉ" "e\u0301a\u0308" "\u00a0\u3000\u2009\u0085"
    "你好世界的是不了人我在有他这中大来上国个到说们为子和你地出道也时年"
    "нещоаБългарски" "日本語のテキスト" "한국어" "مرحبا" "नमस्ते" "🦙🚀😀👍🏽❤️"
)


def random_text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(RANDOM_POOL) for _ in range(length))


# ------------------------------------------------------------------------------- reference parity
def test_llama_cpp_vectors_encode_exactly(tokenizer, merges_tokenizer, vectors):
    mismatches = [(text, expected, tokenizer.encode(text)) for text, expected in vectors
                  if tokenizer.encode(text) != expected]
    assert not mismatches, mismatches[:3]
    mismatches = [text for text, expected in vectors if merges_tokenizer.encode(text) != expected]
    assert not mismatches, mismatches[:3]


def test_llama_cpp_vectors_decode_round_trip(tokenizer, vectors):
    for text, expected in vectors:
        assert tokenizer.decode(expected) == text
        assert tokenizer.decode(np.array(expected, dtype=np.int64)) == text


def test_chat_examples_give_the_reference_ids(tokenizer, merges_tokenizer, chat_examples):
    for example in chat_examples:
        for tk in (tokenizer, merges_tokenizer):
            ids = tk.encode(example["expanded_prompt"])
            assert ids == example["input_ids"], example["name"]
            assert len(ids) == example["num_input_ids"]
            assert ids.count(AUDIO) == sum(example["num_audio_tokens"])
            assert tk.encode(example["prompt"]) == example["input_ids_unexpanded"], example["name"]
            assert tk(example["expanded_prompt"])["input_ids"] == example["input_ids"]
        assert tokenizer.decode(example["input_ids"]) == example["expanded_prompt"]


def test_bpe_matches_plain_python_bpe_on_random_text(tokenizer, python_bpe):
    """Our words (pre-tokenizer output) through a textbook BPE must give our ids; covers the short-
    and long-word code paths (long CJK runs and long words over 32 bytes)."""
    rng = random.Random(1234)
    texts = [random_text(rng, rng.randint(1, 200)) for _ in range(300)]
    texts += ["".join(rng.choice("你好世界的是不了人我在有他这") for _ in range(300)), "x" * 100, "🦙" * 40]
    for text in texts:
        words = tokenizer._core.pre_tokenize(text)
        assert b"".join(words) == __import__("unicodedata").normalize("NFC", text).encode()
        expected = [token for word in words for token in python_bpe(word)]
        assert tokenizer.encode(text) == expected, text


def test_both_loading_routes_agree(tokenizer, merges_tokenizer):
    rng = random.Random(7)
    for _ in range(200):
        text = random_text(rng, rng.randint(0, 120)) + rng.choice(["", "<|im_end|>", "<|AUDIO|>x"])
        assert tokenizer.encode(text) == merges_tokenizer.encode(text)
    assert len(tokenizer) == len(merges_tokenizer) == 151649
    assert tokenizer.get_vocab() == merges_tokenizer.get_vocab()
    assert tokenizer.added_tokens_decoder == merges_tokenizer.added_tokens_decoder


def test_nfc_normalization(tokenizer):
    assert tokenizer.encode("Cafe\u0301 a\u0308") == tokenizer.encode("Café ä")
    assert tokenizer.decode(tokenizer.encode("Cafe\u0301")) == "Café"


# ------------------------------------------------------------------------------ special tokens
def test_attributes(tokenizer, tokenizer_dir):
    assert len(tokenizer) == 151649
    assert tokenizer.vocab_size == 151643
    assert tokenizer.bos_token is None and tokenizer.bos_token_id is None
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", IM_END)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", ENDOFTEXT)
    assert tokenizer.all_special_tokens == ["<|im_end|>", "<|endoftext|>", "<|im_start|>", "<|AUDIO|>",
                                            "<|audio_bos|>", "<|audio_eos|>"]
    assert tokenizer.all_special_ids == [IM_END, ENDOFTEXT, IM_START, AUDIO, AUDIO_BOS, AUDIO_EOS]
    special = json.loads((tokenizer_dir / "special_tokens.json").read_text())["special_tokens"]
    assert tokenizer.added_tokens_encoder == special
    assert all(token.special and not token.normalized for token in tokenizer.added_tokens_decoder.values())
    assert tokenizer.chat_template == (tokenizer_dir / "chat_template.jinja").read_text(encoding="utf-8")
    assert tokenizer.model_max_length == 32768
    vocab = tokenizer.get_vocab()
    assert len(vocab) == 151649 and vocab["<|AUDIO|>"] == AUDIO and vocab["Ġworld"] == 1879
    assert tokenizer.convert_tokens_to_ids(["Hello", "<|im_end|>", "no such token"]) == [9707, IM_END, None]
    assert tokenizer.convert_ids_to_tokens([9707, 1879, IM_END]) == ["Hello", "Ġworld", "<|im_end|>"]
    assert tokenizer.convert_ids_to_tokens(IM_END, skip_special_tokens=True) == "<|im_end|>"
    assert tokenizer.convert_ids_to_tokens([9707, IM_END], skip_special_tokens=True) == ["Hello"]
    assert tokenizer.tokenize("Hello world") == ["Hello", "Ġworld"]


@pytest.mark.parametrize("content,token_id", [("<|im_start|>", IM_START), ("<|im_end|>", IM_END),
                                              ("<|AUDIO|>", AUDIO), ("<|audio_bos|>", AUDIO_BOS),
                                              ("<|endoftext|>", ENDOFTEXT)])
def test_special_tokens_are_never_split(tokenizer, content, token_id):
    enc = tokenizer.encode
    assert enc(content) == [token_id]
    assert enc("abc" + content + "def") == enc("abc") + [token_id] + enc("def")
    assert enc(content * 3) == [token_id] * 3
    assert enc(" " + content + " \n") == enc(" ") + [token_id] + enc(" \n")
    assert enc("你好" + content + "🦙") == enc("你好") + [token_id] + enc("🦙")
    assert enc("<" + content + ">") == enc("<") + [token_id] + enc(">")
    assert token_id not in enc(content[:-1]) and token_id not in enc(content[1:])
    # split_special_tokens: the same text encoded as ordinary text
    split = tokenizer.encode(content, split_special_tokens=True)
    assert token_id not in split and tokenizer.decode(split) == content


def test_decode_with_and_without_skipping_special_tokens(tokenizer):
    ids = [IM_START] + tokenizer.encode("user\nHi there") + [IM_END, AUDIO_BOS, AUDIO, AUDIO_EOS]
    assert tokenizer.decode(ids) == "<|im_start|>user\nHi there<|im_end|><|audio_bos|><|AUDIO|><|audio_eos|>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nHi there"
    assert tokenizer.batch_decode([ids, ids[:2]], skip_special_tokens=True) == ["user\nHi there", "user"]
    assert tokenizer.batch_decode(np.array([ids[:3], ids[1:4]])) == [tokenizer.decode(ids[:3]),
                                                                      tokenizer.decode(ids[1:4])]


def test_decode_accepts_lists_arrays_tensors_and_ints(tokenizer):
    ids = tokenizer.encode("Hello world")
    expected = "Hello world"
    assert tokenizer.decode(ids) == expected
    assert tokenizer.decode(tuple(ids)) == expected
    assert tokenizer.decode(np.array(ids, dtype=np.int32)) == expected
    assert tokenizer.decode(np.array(ids, dtype=np.uint64)) == expected
    assert tokenizer.decode([np.int64(token) for token in ids]) == expected
    assert tokenizer.decode(ids[0]) == "Hello"
    assert tokenizer.decode([]) == ""
    torch = pytest.importorskip("torch")
    assert tokenizer.decode(torch.tensor(ids)) == expected
    assert tokenizer.batch_decode(torch.tensor([ids, ids])) == [expected, expected]


def test_decode_rejects_ids_outside_the_vocabulary(tokenizer):
    for bad in ([151649], [-1], [1, 2, 10**9]):
        with pytest.raises(ValueError, match="not in the vocabulary"):
            tokenizer.decode(bad)
    with pytest.raises(ValueError, match="batch_decode"):
        tokenizer.decode([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="integers"):
        tokenizer.decode(np.array([1.5, 2.0]))
    with pytest.raises(ValueError, match="integers"):
        tokenizer.decode([1.5])
    with pytest.raises(ValueError, match="integers"):
        tokenizer.decode(["a"])
    with pytest.raises(ValueError, match="batch_decode"):
        tokenizer.decode(([1], [2]))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.decode([2**70])
    decoder = tokenizer.incremental_decoder()
    with pytest.raises(ValueError, match="not in the vocabulary"):
        decoder.add(151649)


def test_invalid_utf8_decodes_to_replacement_characters(tokenizer):
    core = tokenizer._core
    byte_id = {core.token_bytes(token_id)[0]: token_id for token_id in range(151643)
               if len(core.token_bytes(token_id)) == 1}
    assert len(byte_id) == 256
    cases = [b"\xe4", b"\xe4\xbd", b"\xe4\xbda", b"\xff\xfe", b"\xed\xa0\x80", b"\xf0\x9f\xa6", b"\xc0\xaf",
             b"a\x80b", b"\xf4\x90\x80\x80", "你好".encode() + b"\xe4"]
    for raw in cases:
        ids = [byte_id[byte] for byte in raw]
        assert tokenizer.decode(ids) == raw.decode("utf-8", errors="replace"), raw
    assert tokenizer.decode([byte_id[0xE4]]) == "\ufffd"
    # Random token sequences: the same rule as Python's errors="replace" everywhere.
    rng = random.Random(3)
    for _ in range(300):
        ids = [rng.randrange(151649) for _ in range(rng.randint(1, 12))]
        raw = b"".join(core.token_bytes(token_id) for token_id in ids)
        assert tokenizer.decode(ids) == raw.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------- incremental decoding
def test_incremental_decoder_never_yields_a_broken_character(tokenizer):
    text = "Hello 你好世界! 🦙🚀 emoji 😶‍🌫️ нещо ok 🇫🇷 done 日本語 한국어"
    ids = tokenizer.encode(text)
    # The test is only meaningful if some character's bytes are spread over several tokens.
    assert any(len(tokenizer._core.token_bytes(token_id).decode("utf-8", errors="replace")) !=
               len(tokenizer._core.token_bytes(token_id).decode("utf-8", errors="ignore")) for token_id in ids)
    decoder = tokenizer.incremental_decoder()
    pieces = [decoder.add(token_id) for token_id in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)
    # Each character comes out as soon as its last byte is in: the text so far is the longest
    # complete prefix of the bytes so far.
    so_far = b""
    emitted = ""
    for token_id, piece in zip(ids, pieces):
        so_far += tokenizer._core.token_bytes(token_id)
        emitted += piece
        assert emitted == so_far.decode("utf-8", errors="ignore")
        assert emitted.encode() == so_far[: len(emitted.encode())]


def test_incremental_decoder_matches_decode_on_random_ids(tokenizer):
    rng = random.Random(11)
    for skip in (True, False):
        for _ in range(200):
            ids = [rng.randrange(151649) for _ in range(rng.randint(0, 15))]
            decoder = tokenizer.incremental_decoder(skip_special_tokens=skip)
            streamed = "".join(decoder.add(token_id) for token_id in ids) + decoder.flush()
            assert streamed == tokenizer.decode(ids, skip_special_tokens=skip)
            assert decoder.pending_bytes == 0


def test_incremental_decoder_special_tokens_and_flush(tokenizer):
    ids = tokenizer.encode("🦙") + [IM_END] + tokenizer.encode("a")
    decoder = tokenizer.incremental_decoder()  # skips special tokens by default, as streaming wants
    assert "".join(decoder.add(token_id) for token_id in ids) + decoder.flush() == "🦙a"
    decoder = tokenizer.incremental_decoder(skip_special_tokens=False)
    assert "".join(decoder.add(token_id) for token_id in ids) + decoder.flush() == "🦙<|im_end|>a"
    first_byte = tokenizer.convert_tokens_to_ids(bytes_to_unicode()[0xF0])  # lead byte of a 4-byte character
    assert decoder.add(first_byte) == "" and decoder.pending_bytes == 1
    assert decoder.flush() == "\ufffd" and decoder.flush() == ""


# ------------------------------------------------------------------------- __call__: padding etc.
def test_call_single_and_batch(tokenizer):
    single = tokenizer("Hello world")
    assert single == {"input_ids": [9707, 1879], "attention_mask": [1, 1]}
    assert single.input_ids == [9707, 1879]
    batch = tokenizer(["Hello world", "Hi"])
    assert batch["input_ids"] == [[9707, 1879], tokenizer.encode("Hi")]
    array = tokenizer("Hello world", return_tensors="np")
    assert array["input_ids"].dtype == np.int64 and array["input_ids"].shape == (1, 2)
    assert tokenizer("x", return_attention_mask=False).keys() == {"input_ids"}
    assert tokenizer([]) == {"input_ids": [], "attention_mask": []}


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_sides(tokenizer, side):
    texts = ["Hello world, how are you?", "Hi", ""]
    lengths = [len(tokenizer.encode(text)) for text in texts]
    out = tokenizer(texts, padding=True, padding_side=side, return_tensors="np")
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (3, max(lengths)) and ids.dtype == mask.dtype == np.int64
    for row, text, length in zip(range(3), texts, lengths):
        real = slice(max(lengths) - length, None) if side == "left" else slice(0, length)
        assert ids[row][real].tolist() == tokenizer.encode(text)
        assert mask[row].sum() == length and mask[row][real].all()
        assert (ids[row][mask[row] == 0] == tokenizer.pad_token_id).all()


def test_padding_defaults_to_the_tokenizer_attribute(tokenizer_dir):
    tk = Qwen2Tokenizer.from_pretrained(tokenizer_dir)
    assert tk.padding_side == "left"
    assert tk(["a b c", "a"], padding=True)["attention_mask"][1][0] == 0
    tk.padding_side = "right"
    assert tk(["a b c", "a"], padding=True)["attention_mask"][1][-1] == 0
    assert Qwen2Tokenizer.from_pretrained(tokenizer_dir, padding_side="right").padding_side == "right"


def test_padding_to_max_length_multiples_and_truncation(tokenizer):
    out = tokenizer(["a b", "a"], padding="max_length", max_length=6, padding_side="right")
    assert [len(row) for row in out["input_ids"]] == [6, 6]
    assert out["attention_mask"] == [[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]
    out = tokenizer(["a b c d e"], padding=True, pad_to_multiple_of=8)
    assert len(out["input_ids"][0]) == 8
    ids = tokenizer.encode("one two three four five")
    assert tokenizer("one two three four five", truncation=True, max_length=3)["input_ids"] == ids[:3]
    assert tokenizer.encode("one two three four five", max_length=2) == ids[:2]
    assert tokenizer("one two three four five", truncation=False, max_length=2)["input_ids"] == ids


def test_call_rejects_bad_input(tokenizer):
    with pytest.raises(ValueError, match="string"):
        tokenizer(123)
    with pytest.raises(ValueError, match="string"):
        tokenizer(["ok", None])
    with pytest.raises(ValueError, match="padding=True"):
        tokenizer(["a b c", "a"], return_tensors="np")
    with pytest.raises(ValueError, match="padding_side"):
        tokenizer(["a"], padding=True, padding_side="middle")
    with pytest.raises(ValueError, match="string"):
        tokenizer.encode(b"bytes")
    with pytest.raises(ValueError):
        tokenizer.encode("lone surrogate \ud800")


def test_no_pad_token_refuses_to_pad(tokenizer_dir):
    tk = Qwen2Tokenizer.from_pretrained(tokenizer_dir)
    tk.pad_token = None
    with pytest.raises(ValueError, match="pad_token"):
        tk(["a b", "a"], padding=True)


# ------------------------------------------------------------------------------ loading and saving
def test_from_pretrained_on_a_checkpoint_folder(tiny_f32, tokenizer):
    tk = Qwen2Tokenizer.from_pretrained(tiny_f32)
    assert tk.encode("Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>") == \
        tokenizer.encode("Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>")
    assert qwen2audio.Qwen2Tokenizer is Qwen2Tokenizer


@pytest.mark.parametrize("route", ["tokenizer.json", "vocab.json+merges.txt"])
def test_save_pretrained_round_trip(tokenizer, merges_tokenizer, tmp_path, route):
    source = tokenizer if route == "tokenizer.json" else merges_tokenizer
    written = {Path(path).name for path in source.save_pretrained(tmp_path)}
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= written
    assert ("tokenizer.json" in written) == (route == "tokenizer.json")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == tokenizer.chat_template
    assert config["added_tokens_decoder"][str(AUDIO)]["content"] == "<|AUDIO|>"
    reloaded = Qwen2Tokenizer.from_pretrained(tmp_path)
    assert reloaded._core.model_source == route
    rng = random.Random(5)
    for _ in range(50):
        text = random_text(rng, 80) + "<|im_end|>"
        assert reloaded.encode(text) == tokenizer.encode(text)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.all_special_tokens == tokenizer.all_special_tokens
    assert reloaded.chat_template == tokenizer.chat_template
    assert reloaded.model_max_length == tokenizer.model_max_length


def test_constructor_with_files(tokenizer_dir, tokenizer):
    tk = Qwen2Tokenizer(vocab_file=tokenizer_dir / "vocab.json", merges_file=tokenizer_dir / "merges.txt",
                        tokenizer_config_file=tokenizer_dir / "tokenizer_config.json")
    assert tk.encode("Hello <|im_end|>") == tokenizer.encode("Hello <|im_end|>")
    assert tk.eos_token_id == IM_END
    with pytest.raises(ValueError, match="vocab_file"):
        Qwen2Tokenizer(vocab_file=tokenizer_dir / "vocab.json")


# --------------------------------------------------------------------------- small synthetic files
def write_small_tokenizer(folder: Path, merges=(("h", "e"), ("l", "l"), ("he", "ll")), added=None,
                          config_extra=None) -> Path:
    """A byte-level BPE over the 256 byte tokens plus the given merges."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = bytes_to_unicode()
    vocab = {alphabet[byte]: byte for byte in range(256)}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    config = {"added_tokens_decoder": {str(token_id): {"content": content, "special": True}
                                       for token_id, content in (added or {}).items()},
              "eos_token": None, "pad_token": None}
    config.update(config_extra or {})
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_small_synthetic_tokenizer(tmp_path):
    tk = Qwen2Tokenizer.from_pretrained(write_small_tokenizer(tmp_path, added={300: "<|x|>"}))
    hello = tk.convert_tokens_to_ids("hell")
    assert tk.encode("hello") == [hello, ord("o")]
    assert tk.encode("hello<|x|>hello") == [hello, ord("o"), 300, hello, ord("o")]
    assert len(tk) == 256 + 3 + 1 and tk.vocab_size == 259


def test_two_tokenizers_in_one_process_are_independent(tmp_path, tokenizer):
    first = Qwen2Tokenizer.from_pretrained(write_small_tokenizer(tmp_path / "a", added={300: "<|x|>"}))
    second = Qwen2Tokenizer.from_pretrained(write_small_tokenizer(tmp_path / "b", merges=(("l", "o"),),
                                                                  added={300: "<|y|>"}))
    text = "hello <|x|><|y|> hello"
    for _ in range(2):  # the second pass runs on warm word caches
        a, b = first.encode(text), second.encode(text)
        assert 300 in a and a.count(300) == 1 and first.decode(a) == text
        assert 300 in b and b.count(300) == 1 and second.decode(b) == text
        assert first.encode("hello") == [first.convert_tokens_to_ids("hell"), ord("o")]
        assert second.encode("hello") == [ord("h"), ord("e"), ord("l"), second.convert_tokens_to_ids("lo")]
        assert tokenizer.encode("hello") == [14990]


def test_threads_encoding_at_once(tokenizer, merges_tokenizer):
    rng = random.Random(21)
    texts = [random_text(rng, rng.randint(1000, 20000)) for _ in range(24)]
    expected = [tokenizer.encode(text) for text in texts]
    expected_batch = tokenizer(texts)["input_ids"]
    assert expected_batch == expected
    fresh = Qwen2Tokenizer.from_pretrained(Path(tokenizer.name_or_path))  # an empty word cache
    start = threading.Barrier(6)

    def work(index: int) -> bool:
        if index < 6:
            start.wait()
        tk = (fresh, merges_tokenizer, tokenizer)[index % 3]
        return tk.encode(texts[index % len(texts)]) == expected[index % len(texts)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert all(pool.map(work, range(72)))
    assert fresh._core.cached_words > 0


# ----------------------------------------------------------------------------------- hostile files
def corrupt(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return folder


@pytest.mark.parametrize("name,content,message", [
    ("vocab.json", "{not json", "vocab.json: not valid JSON"),
    ("vocab.json", "[1, 2]", "vocabulary must be an object"),
    ("vocab.json", '{"a": "zero"}', "token id must be an integer"),
    ("vocab.json", '{"a": -3}', "outside"),
    ("vocab.json", '{"a": 99999999999}', "outside"),
    ("merges.txt", "#version: 0.2\nh e\nonlyone\n", "merges.txt line 3"),
    ("merges.txt", "#version: 0.2\nh e x\n", "two tokens separated by one space"),
    ("merges.txt", "#version: 0.2\nq z\n", "makes 'qz', which is not in the vocabulary"),
    ("merges.txt", b"#version: 0.2\n\xff\xfe\n", "not valid UTF-8"),
    ("tokenizer_config.json", "{", "tokenizer_config.json: not valid JSON"),
    ("tokenizer_config.json", '{"added_tokens_decoder": {"abc": {"content": "<x>"}}}', "'abc' is not a token id"),
    ("tokenizer_config.json", '{"added_tokens_decoder": {"300": {"special": true}}}', "non-empty string 'content'"),
])
def test_malformed_files_give_clear_errors(tmp_path, name, content, message):
    folder = corrupt(write_small_tokenizer(tmp_path), name, content)
    with pytest.raises(ConfigError, match=message) as error:
        Qwen2Tokenizer.from_pretrained(folder)
    assert name in str(error.value)
    assert isinstance(error.value, ValueError)


def test_vocab_missing_a_byte_token(tmp_path):
    folder = write_small_tokenizer(tmp_path)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    del vocab["a"]
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(ConfigError, match="no token for byte 97"):
        Qwen2Tokenizer.from_pretrained(folder)


def test_vocab_with_two_tokens_sharing_an_id(tmp_path):
    folder = write_small_tokenizer(tmp_path)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    vocab["he"] = vocab["h"]
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(ConfigError, match="share id"):
        Qwen2Tokenizer.from_pretrained(folder)


@pytest.mark.parametrize("mutate,message", [
    (lambda doc: doc.pop("model"), "no 'model'"),
    (lambda doc: doc["model"].update(type="WordPiece"), "model type 'WordPiece' is not supported"),
    (lambda doc: doc["model"].update(vocab=[1, 2]), "vocabulary must be an object"),
    (lambda doc: doc["model"].update(merges={"a": 1}), "'merges' must be an array"),
    (lambda doc: doc["model"]["merges"].append(["h"]), "merge 4"),
    (lambda doc: doc["model"]["merges"].append(7), "merge 4"),
    (lambda doc: doc["model"].pop("merges"), "needs 'vocab' and 'merges'"),
    (lambda doc: doc.update(normalizer={"type": "Lowercase"}), "normalizer"),
    (lambda doc: doc.update(pre_tokenizer={"type": "Whitespace"}), "pre-tokenizer 'Whitespace'"),
    (lambda doc: doc["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex="(unclosed"), "does not compile"),
    (lambda doc: doc.update(added_tokens=[{"content": "<|z|>"}]), "needs an 'id'"),
])
def test_malformed_tokenizer_json(tmp_path, mutate, message):
    folder = write_small_tokenizer(tmp_path)
    alphabet = bytes_to_unicode()
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    document = {
        "version": "1.0", "added_tokens": [], "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\s+|\\S+"}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "model": {"type": "BPE", "vocab": vocab, "merges": ["h e", ["l", "l"], "he ll"]},
    }
    assert alphabet[ord("h")] == "h"
    (folder / "tokenizer.json").write_text(json.dumps(document), encoding="utf-8")
    assert Qwen2Tokenizer.from_pretrained(folder).encode("hello") == [vocab["hell"], ord("o")]
    mutate(document)
    (folder / "tokenizer.json").write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as error:
        Qwen2Tokenizer.from_pretrained(folder)
    assert "tokenizer.json" in str(error.value)


def test_oversized_file_is_refused_before_reading(tmp_path):
    folder = write_small_tokenizer(tmp_path)
    with open(folder / "tokenizer.json", "wb") as handle:
        handle.truncate(600 << 20)  # sparse: nothing is written, only the size is large
    with pytest.raises(ConfigError, match="over the .*-byte limit"):
        Qwen2Tokenizer.from_pretrained(folder)


def test_missing_files(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        Qwen2Tokenizer.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(ConfigError, match="no tokenizer here"):
        Qwen2Tokenizer.from_pretrained(tmp_path)
