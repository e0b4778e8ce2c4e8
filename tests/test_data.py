"""scaling.data: corpus preparation (stdlib, text, directory, nanoGPT .bin), the split, the cache, and batches."""

from __future__ import annotations

import hashlib
import math
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling.data import (
    Corpus,
    _publish,
    batch_at,
    describe,
    prepare_corpus,
    split_by_file,
    stdlib_dir,
    stdlib_files,
    val_batches,
)
from scaling.errors import ConfigError
from scaling.tokenizers import ByteTokenizer, load_tokenizer

SEP = b"\x00"  # the document separator of the bytes tokenizer


@pytest.fixture(scope="session")
def stdlib(tmp_path_factory) -> Corpus:
    return prepare_corpus(cache_dir=tmp_path_factory.mktemp("cache"))


def token_bytes(tokens: np.ndarray) -> bytes:
    return np.asarray(tokens, dtype=np.uint8).tobytes()


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)


# ---------------------------------------------------------------------------------------------------- stdlib


def test_stdlib_file_rule():
    files = stdlib_files()
    assert files == sorted(files)
    assert {"os.py", "json/decoder.py", "asyncio/base_events.py", "email/message.py"} <= set(files)
    banned = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
    for name in files:
        assert name.endswith(".py")
        assert not banned & set(name.split("/")[:-1]), name
        assert not name.startswith("_sysconfigdata")
    assert not any(name.startswith(("idlelib/idle_test/", "lib2to3/tests/", "test/")) for name in files)
    size = sum((stdlib_dir() / name).stat().st_size for name in files)
    assert 5e6 < size < 40e6  # ~12 MB for CPython 3.11


def test_stdlib_tokens_are_the_files_bytes_split_by_file(stdlib):
    meta = stdlib.meta
    files = stdlib_files()
    val_files = set(meta["val_documents"])
    assert meta["split"] == "by_file" and val_files and val_files < set(files)
    root = stdlib_dir()
    train_bytes = SEP.join((root / f).read_bytes() for f in files if f not in val_files)
    val_bytes = SEP.join((root / f).read_bytes() for f in files if f in val_files)
    assert token_bytes(stdlib.train) == train_bytes
    assert token_bytes(stdlib.val) == val_bytes
    # no file in both splits: every held-out file's text is absent from the training stream
    for f in sorted(val_files, key=lambda f: -(root / f).stat().st_size)[:3]:
        assert (root / f).read_bytes() not in train_bytes
    fraction = len(stdlib.val) / (len(stdlib.train) + len(stdlib.val))
    assert 0.005 < fraction < 0.02
    assert meta["train_tokens"] == len(stdlib.train) and meta["val_tokens"] == len(stdlib.val)


def test_stdlib_decodes_to_first_train_file(stdlib):
    first = next(f for f in stdlib_files() if f not in stdlib.meta["val_documents"])
    text = (stdlib_dir() / first).read_bytes()
    n = min(len(text), 1000)
    assert load_tokenizer(stdlib).decode(stdlib.train[:n]) == text[:n]
    assert stdlib.vocab_size == 256 and int(stdlib.train.max()) < 256


def test_stdlib_preparation_is_deterministic(stdlib, tmp_path):
    again = prepare_corpus("stdlib", cache_dir=tmp_path)
    assert again.path != stdlib.path
    assert (again.path / "train.bin").read_bytes() == (stdlib.path / "train.bin").read_bytes()
    assert (again.path / "val.bin").read_bytes() == (stdlib.path / "val.bin").read_bytes()
    expected = hashlib.sha256(np.asarray(stdlib.train).tobytes() + np.asarray(stdlib.val).tobytes()).hexdigest()
    assert again.fingerprint == stdlib.fingerprint == expected


def test_prepared_once_and_read_only(stdlib):
    mtime = (stdlib.path / "train.bin").stat().st_mtime_ns
    again = prepare_corpus(cache_dir=stdlib.path.parents[1])
    assert again.path == stdlib.path and (again.path / "train.bin").stat().st_mtime_ns == mtime
    assert isinstance(again.train, np.memmap) and again.train.dtype == np.uint16
    with pytest.raises(ValueError):
        again.train[0] = 1
    line = describe(again)
    assert stdlib.fingerprint[:12] in line and "vocab 256" in line


# ---------------------------------------------------------------------------------------------------- the split


def test_split_by_file_holds_about_one_percent_independent_of_order():
    rng = np.random.default_rng(0)
    sizes = {f"dir{i % 7}/file{i}.txt": int(s) for i, s in enumerate(rng.lognormal(8, 1.5, size=2000))}
    sizes["huge.txt"] = sum(sizes.values()) // 10
    held = split_by_file(sizes)
    fraction = sum(sizes[n] for n in held) / sum(sizes.values())
    assert 0.009 < fraction <= 0.01
    assert "huge.txt" not in held
    assert split_by_file(dict(reversed(list(sizes.items())))) == held
    assert held != split_by_file({"x" + k: v for k, v in sizes.items()})  # the names, not the order, decide


# ---------------------------------------------------------------------------------------------------- user corpora


def test_directory_corpus_split_by_file(tmp_path):
    rng = np.random.default_rng(1)
    files = {f"sub{i % 3}/doc{i:03d}.txt": rng.integers(32, 127, size=200 + i).astype(np.uint8).tobytes()
             for i in range(300)}
    write_files(tmp_path / "text", files)
    write_files(tmp_path / "text", {"skip.bin": b"binary", ".hidden/a.txt": b"hidden", "sub0/.b.md": b"hidden"})
    c = prepare_corpus(tmp_path / "text", cache_dir=tmp_path / "cache")
    assert c.meta["split"] == "by_file" and c.meta["n_documents"] == 300
    held = c.meta["val_documents"]
    names = sorted(files)
    assert held and set(held) < set(names)
    assert token_bytes(c.train) == SEP.join(files[n] for n in names if n not in held)
    assert token_bytes(c.val) == SEP.join(files[n] for n in names if n in held)


def test_few_files_split_by_position(tmp_path):
    files = {"b.md": b"# title\n" * 300, "a/c.py": b"x = 1\r\n" * 500, "d.rst": b"text " * 400}
    write_files(tmp_path / "docs", files)
    c = prepare_corpus(str(tmp_path / "docs"), cache_dir=tmp_path / "cache")
    assert c.meta["split"] == "by_position" and c.meta["val_documents"] == []
    stream = SEP.join(files[n] for n in sorted(files))  # a/c.py, b.md, d.rst; \r\n kept as is
    n_val = math.ceil(0.01 * len(stream))
    assert token_bytes(c.train) == stream[:-n_val] and token_bytes(c.val) == stream[-n_val:]


def test_text_file_corpus(tmp_path):
    text = "".join(f"line {i}: ünïcode\n" for i in range(2000)).encode()
    (tmp_path / "input.txt").write_bytes(text)
    c = prepare_corpus(tmp_path / "input.txt", cache_dir=tmp_path / "cache")
    assert token_bytes(c.train) + token_bytes(c.val) == text
    assert len(c.val) == math.ceil(0.01 * len(text))
    (tmp_path / "input.txt").write_bytes(text + b"more\n")  # an edited file is prepared afresh
    assert prepare_corpus(tmp_path / "input.txt", cache_dir=tmp_path / "cache").fingerprint != c.fingerprint


def test_nanogpt_bin_corpus(tmp_path):
    rng = np.random.default_rng(2)
    train, val = rng.integers(0, 1000, size=5000, dtype=np.uint16), rng.integers(0, 1000, size=500, dtype=np.uint16)
    train[7] = 1234
    train.tofile(tmp_path / "train.bin")
    val.tofile(tmp_path / "val.bin")
    c = prepare_corpus(tmp_path, cache_dir=tmp_path / "cache")
    assert c.vocab_size == 1235 and c.meta["vocab_inferred"]
    np.testing.assert_array_equal(c.train, train)
    np.testing.assert_array_equal(c.val, val)
    assert c.fingerprint == hashlib.sha256(train.tobytes() + val.tobytes()).hexdigest()
    assert prepare_corpus(tmp_path, cache_dir=tmp_path / "cache", vocab_size=50304).vocab_size == 50304
    with pytest.raises(ConfigError, match="data.vocab_size"):
        prepare_corpus(tmp_path, cache_dir=tmp_path / "cache", vocab_size=1000)
    with pytest.raises(ConfigError, match="data.tokenizer"):
        prepare_corpus(tmp_path, "bpe", cache_dir=tmp_path / "cache")
    (tmp_path / "val.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(ConfigError, match="val.bin"):
        prepare_corpus(tmp_path, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------------- errors


def test_missing_path_names_field_and_path(tmp_path):
    missing = tmp_path / "no_such_corpus"
    with pytest.raises(ConfigError, match="data.corpus") as e:
        prepare_corpus(missing, cache_dir=tmp_path / "cache")
    assert str(missing) in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="data.corpus"):
        prepare_corpus(tmp_path / "empty", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "corpora").exists() or not any((tmp_path / "cache" / "corpora").iterdir())


def test_bad_tokenizer_settings(tmp_path):
    with pytest.raises(ConfigError, match="data.tokenizer"):
        prepare_corpus("stdlib", "gpt2", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="data.vocab_size"):
        prepare_corpus("stdlib", "bytes", cache_dir=tmp_path, vocab_size=512)


def test_bpe_without_tokenizers_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(ConfigError, match=r"data.tokenizer.*pip install scaling-planner\[bpe\]"):
        prepare_corpus("stdlib", "bpe", cache_dir=tmp_path)


def test_hf_without_datasets_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ConfigError, match=r"data.corpus.*pip install scaling-planner\[hf\]"):
        prepare_corpus("hf:roneneldan/TinyStories", cache_dir=tmp_path)


def test_bpe_corpus(tmp_path):
    pytest.importorskip("tokenizers")
    files = {f"doc{i}.txt": (f"def function_{i}(x):\n    return x * {i}\n\n" * (20 + i)).encode() for i in range(40)}
    write_files(tmp_path / "src", files)
    a = prepare_corpus(tmp_path / "src", "bpe", vocab_size=300, cache_dir=tmp_path / "a")
    b = prepare_corpus(tmp_path / "src", "bpe", vocab_size=300, cache_dir=tmp_path / "b")
    assert (a.path / "tokenizer.json").is_file() and a.vocab_size == 300
    assert a.fingerprint == b.fingerprint and int(a.train.max()) < 300
    tok = load_tokenizer(a)
    first = next(n for n in sorted(files) if n not in a.meta["val_documents"])
    assert tok.decode(a.train[: len(tok.encode(files[first]))]) == files[first]


# ---------------------------------------------------------------------------------------------------- cache races


def test_losing_the_rename_race_keeps_the_winner(stdlib, tmp_path):
    loser = tmp_path / "loser"
    loser.mkdir()
    (loser / "train.bin").write_bytes(b"other")
    assert _publish(loser, stdlib.path) == stdlib.path
    assert not loser.exists()
    assert prepare_corpus(cache_dir=stdlib.path.parents[1]).fingerprint == stdlib.fingerprint


def test_concurrent_preparers_agree(tmp_path):
    write_files(tmp_path / "src", {f"f{i}.md": bytes(range(32, 127)) * (i + 1) for i in range(120)})
    results, errors = [], []

    def prepare():
        try:
            results.append(prepare_corpus(tmp_path / "src", cache_dir=tmp_path / "cache"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=prepare) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.fingerprint for r in results}) == 1 and len({r.path for r in results}) == 1
    assert [p.name for p in (tmp_path / "cache" / "corpora").iterdir()] == [results[0].path.name]  # no temp dirs


# ---------------------------------------------------------------------------------------------------- batches


def test_batch_at_windows_are_contiguous_and_in_range():
    n, seq_len = 1000, 10
    tokens = np.arange(n, dtype=np.uint16)
    starts = []
    for step in range(200):
        x, y = batch_at(tokens, step, batch_size=50, seq_len=seq_len, seed=3)
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (50, seq_len)
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert torch.equal(y - x, torch.ones_like(x))  # tokens are positions: every row is a contiguous slice
        starts.append(x[:, 0])
    starts = torch.cat(starts)
    assert starts.min() >= 0 and starts.max() <= n - seq_len - 1
    assert len(starts.unique()) > 0.95 * (n - seq_len)  # uniform over every valid start


def test_batch_at_is_pure_and_resumable():
    tokens = np.random.default_rng(4).integers(0, 256, size=10_000).astype(np.uint16)
    run = [batch_at(tokens, step, 8, 32, seed=5) for step in range(6)]
    resumed = [batch_at(tokens, step, 8, 32, seed=5) for step in range(3, 6)]
    for (x1, y1), (x2, y2) in zip(run[3:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(run[0][0], run[1][0])
    assert not torch.equal(run[0][0], batch_at(tokens, 0, 8, 32, seed=6)[0])


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_together_read_the_single_process_batch(world_size):
    tokens = np.random.default_rng(5).integers(0, 256, size=5000).astype(np.uint16)
    x, y = batch_at(tokens, 7, 16, 24, seed=1)
    parts = [batch_at(tokens, 7, 16, 24, seed=1, rank=r, world_size=world_size) for r in range(world_size)]
    assert all(p[0].shape == (16 // world_size, 24) for p in parts)
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)


def test_batch_at_rejects_bad_arguments():
    tokens = np.zeros(100, dtype=np.uint16)
    with pytest.raises(ConfigError, match="train.batch_size"):
        batch_at(tokens, 0, 10, 8, seed=0, rank=0, world_size=4)
    with pytest.raises(ConfigError, match="data.corpus"):
        batch_at(tokens, 0, 4, 100, seed=0)
    with pytest.raises(ConfigError, match="train.seed"):
        batch_at(tokens, 0, 4, 8, seed=-1)


def test_val_batches_fixed_contiguous_windows(stdlib):
    seq_len, max_tokens = 64, 1000
    batches = list(val_batches(stdlib, seq_len, max_tokens, batch_size=4))
    assert [len(x) for x, _ in batches] == [4, 4, 4, 3]  # 1000 // 64 = 15 windows
    x = torch.cat([b[0] for b in batches]).reshape(-1)
    y = torch.cat([b[1] for b in batches]).reshape(-1)
    val = torch.from_numpy(np.asarray(stdlib.val[: 15 * seq_len + 1]).astype(np.int64))
    assert torch.equal(x, val[:-1]) and torch.equal(y, val[1:])
    again = list(val_batches(stdlib.val, seq_len, max_tokens, batch_size=15))
    assert len(again) == 1 and torch.equal(again[0][0].reshape(-1), x)


def test_val_batches_all_and_errors():
    val = np.arange(101, dtype=np.uint16)
    assert sum(len(x) for x, _ in val_batches(val, 10, None, 3)) == 10
    with pytest.raises(ConfigError, match="eval.tokens"):
        val_batches(val, 10, 5, 3)
    with pytest.raises(ConfigError, match="data.corpus"):
        val_batches(val[:10], 10, None, 3)


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    data = bytes(range(256)) + "naïve\r\n".encode()
    assert tok.decode(tok.encode(data)) == data
