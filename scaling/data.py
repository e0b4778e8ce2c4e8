"""Offline corpora as memory-mapped uint16 token files, and the deterministic batches read from them.

Corpora (the `data.corpus` value):
- `"stdlib"` (default, no network): the `*.py` sources of the running interpreter's standard library,
  `sysconfig.get_paths()["stdlib"]`. Excluded: any file below a directory named `site-packages`, `dist-packages`,
  `test`, `tests`, `idle_test` or `__pycache__` (e.g. `test/`, `lib2to3/tests/`, `idlelib/idle_test/`), below a
  build directory `config-*`, and the build-specific `_sysconfigdata*.py`. About 12 MB for CPython 3.11.
- a path to a text file: the whole file is one document.
- a path to a directory: every `*.txt`, `*.md`, `*.rst`, `*.py` file below it (recursive, symlinked directories not
  followed, paths with a component starting with `.` skipped), one document each. A directory holding `train.bin` and
  `val.bin` is instead a nanoGPT-style pre-tokenized corpus (uint16 tokens, used in place, not copied); its vocab
  size is `vocab_size` if given, else max token + 1 (which can be below the real tokenizer's vocab: pass it).
- `"hf:<name>[:config]"`: the `text` column of a Hugging Face dataset's `train` split (needs `datasets` and the
  network; meant for small datasets, it is read into memory).

Documents are ordered by relative POSIX path (bytes read exactly, no newline translation). The split is by document:
documents sorted by sha256 of their relative path are held out, in that order, whenever they still fit within 1% of
the total bytes. If that holds out less than half of the 1% (a single file, or a few large ones), the split is by
position instead: the last 1% of the token stream is the validation split. `train.bin` holds the training documents
joined by one separator token (byte 0 for `bytes`, `<|endoftext|>` for `bpe`), `val.bin` the held-out ones likewise.
Tokens are little-endian uint16; the fingerprint is sha256 of the train token bytes followed by the val token bytes,
so the same corpus and tokenizer give the same fingerprint on any machine (for stdlib: with the same Python build).

Each corpus is prepared once into `<cache>/corpora/<key>/` (`train.bin`, `val.bin`, `meta.json`, and `tokenizer.json`
for `bpe`), where `<cache>` is `cache_dir`, else `$SCALING_CACHE`, else `~/.cache/scaling`, and `<key>` hashes the
corpus identity (path and file listing, or Python version and listing for stdlib), tokenizer and vocab size.
Preparation writes a temporary directory beside the entry and renames it into place; concurrent preparers are safe,
and one that loses the rename uses the winner's entry.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import shutil
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from scaling.errors import ConfigError
from scaling.tokenizers import BpeTokenizer, ByteTokenizer, check_tokenizer

CORPORA = ("stdlib",)  # built-in corpus names; "hf:<name>[:config]" and paths are the other corpus values
FORMAT_VERSION = 1  # part of every cache key: bump when the preparation rules change
VAL_FRACTION = 0.01  # share of the corpus held out for validation (bytes for the file split, tokens by position)
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")
STDLIB_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
TOKEN_DTYPE = np.dtype("<u2")  # little-endian uint16 on disk, whatever the machine


@dataclass
class Corpus:
    """A prepared corpus: read-only uint16 token memmaps plus the facts about them (also in `meta.json`)."""

    train: np.ndarray  # np.memmap, uint16 tokens of the training split
    val: np.ndarray  # np.memmap, uint16 tokens of the validation split
    vocab_size: int
    fingerprint: str  # sha256 hex of train then val token bytes
    meta: dict = field(repr=False)
    path: Path  # the cache entry directory


@dataclass(frozen=True)
class Document:
    """One document of a corpus: `name` is its relative POSIX path (or row id), `size` its length in bytes."""

    name: str
    size: int
    path: Path | None = None  # read from here...
    data: bytes | None = None  # ...or held in memory

    def read(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()


# ---------------------------------------------------------------------------------------------------- public API


def prepare_corpus(
    corpus: str | os.PathLike = "stdlib",
    tokenizer: str = "bytes",
    *,
    cache_dir: str | os.PathLike | None = None,
    vocab_size: int | None = None,
) -> Corpus:
    """Tokenize `corpus` once into the cache (see the module docstring) and return it memory-mapped."""
    t0 = time.perf_counter()
    corpus = os.fspath(corpus)
    if isinstance(corpus, bytes) or not corpus:
        raise ConfigError("data.corpus", "'stdlib', 'hf:<name>[:config]', or a path", corpus)
    if corpus not in CORPORA and not corpus.startswith("hf:") and is_nanogpt_dir(corpus):
        return _prepare_nanogpt(Path(corpus), tokenizer, vocab_size, cache_dir)
    vocab_size = check_tokenizer(tokenizer, vocab_size)
    source = _resolve_source(corpus)
    key_parts = {"format": FORMAT_VERSION, **source["identity"], "tokenizer": tokenizer, "vocab_size": vocab_size}
    entry = _corpora_dir(cache_dir) / _entry_name(source["label"], tokenizer, vocab_size, key_parts)
    if not (entry / "meta.json").exists():
        _build_entry(entry, lambda tmp: _write_corpus(tmp, corpus, source, tokenizer, vocab_size, t0))
    return load_corpus(entry)


def load_corpus(entry: str | os.PathLike) -> Corpus:
    """Open a prepared cache entry (a directory holding `meta.json`)."""
    entry = Path(entry)
    meta = json.loads((entry / "meta.json").read_text())
    train_path = Path(meta.get("train_path", entry / "train.bin"))
    val_path = Path(meta.get("val_path", entry / "val.bin"))
    return Corpus(
        train=np.memmap(train_path, dtype=TOKEN_DTYPE, mode="r"),
        val=np.memmap(val_path, dtype=TOKEN_DTYPE, mode="r"),
        vocab_size=meta["vocab_size"],
        fingerprint=meta["fingerprint"],
        meta=meta,
        path=entry,
    )


def batch_at(
    tokens: np.ndarray,
    step: int,
    batch_size: int,
    seq_len: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch of optimizer step `step`: inputs x and next-token targets y, int64 [rows, seq_len].

    `batch_size` is the global number of sequences at this step. Window starts are drawn uniformly from
    `np.random.default_rng([seed, step])`; rank r gets the contiguous rows r*b .. (r+1)*b - 1, b = batch_size //
    world_size, so the ranks together read exactly the single-process batch. A pure function of its arguments:
    resuming at step k reads the batches an uninterrupted run would.
    """
    n = len(tokens)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError("train.seed", "a non-negative integer", seed)
    if not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in 0..{world_size - 1}, got {rank}")
    if batch_size <= 0 or batch_size % world_size:
        raise ConfigError("train.batch_size", f"a positive multiple of the number of ranks ({world_size})", batch_size)
    if n <= seq_len:
        raise ConfigError("data.corpus", f"more than seq_len ({seq_len}) training tokens", n)
    starts = np.random.default_rng([int(seed), int(step)]).integers(0, n - seq_len, size=batch_size)
    rows = batch_size // world_size
    starts = starts[rank * rows : (rank + 1) * rows]
    windows = np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)]).astype(np.int64)  # [rows, seq_len + 1]
    w = torch.from_numpy(windows)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def val_batches(
    corpus: Corpus | np.ndarray,
    seq_len: int,
    max_tokens: int | None,
    batch_size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed validation set: non-overlapping windows from the start of the val tokens, as (x, y) int64 batches.

    Window i predicts val[i*seq_len + 1 .. (i+1)*seq_len]; there are min((len(val) - 1) // seq_len,
    max_tokens // seq_len) windows (all of them when `max_tokens` is None), in batches of `batch_size` windows (the
    last may be smaller). The same for every run with the same `seq_len`.
    """
    val = corpus.val if isinstance(corpus, Corpus) else corpus
    if max_tokens is not None and max_tokens < seq_len:
        raise ConfigError("eval.tokens", f"at least seq_len ({seq_len})", max_tokens)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n_windows = (len(val) - 1) // seq_len
    if n_windows < 1:
        raise ConfigError("data.corpus", f"a validation split of more than seq_len ({seq_len}) tokens", len(val))
    if max_tokens is not None:
        n_windows = min(n_windows, max_tokens // seq_len)
    return _val_windows(val, seq_len, n_windows, batch_size)


def describe(corpus: Corpus) -> str:
    """One line: source, split sizes in tokens, vocab, fingerprint prefix."""
    m = corpus.meta
    return (
        f"{m['source_label']}: {_si(len(corpus.train))} train + {_si(len(corpus.val))} val tokens "
        f"({m['tokenizer']}, vocab {corpus.vocab_size}), fingerprint {corpus.fingerprint[:12]}"
    )


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[str]:
    """Relative POSIX paths of the stdlib corpus files, sorted (the exclusion rule is in the module docstring)."""
    root = stdlib_dir() if root is None else Path(root)
    keep = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked directories
        dirnames[:] = [d for d in dirnames if d not in STDLIB_EXCLUDED_DIRS and not d.startswith("config-")]
        for name in filenames:
            if name.endswith(".py") and not name.startswith("_sysconfigdata"):
                keep.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(keep)


def text_files(directory: Path) -> list[str]:
    """Relative POSIX paths of the text files of a directory corpus, sorted."""
    keep = []
    for dirpath, dirnames, filenames in os.walk(directory):  # does not follow symlinked directories
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.endswith(TEXT_SUFFIXES):
                keep.append((Path(dirpath) / name).relative_to(directory).as_posix())
    return sorted(keep)


def split_by_file(sizes: Mapping[str, int], val_fraction: float = VAL_FRACTION) -> set[str]:
    """Names of the held-out documents: in sha256 order of the name, each non-empty one that still fits in
    `val_fraction` of the total bytes. Independent of the order of `sizes`."""
    budget = val_fraction * sum(sizes.values())
    held, used = set(), 0
    for name in sorted(sizes, key=_name_hash):
        if 0 < sizes[name] and used + sizes[name] <= budget:
            held.add(name)
            used += sizes[name]
    return held


def is_nanogpt_dir(corpus: str | os.PathLike) -> bool:
    path = Path(corpus)
    return path.is_dir() and (path / "train.bin").is_file() and (path / "val.bin").is_file()


# ---------------------------------------------------------------------------------------------------- sources


def _resolve_source(corpus: str) -> dict:
    """Documents of a text corpus plus the identity that goes into its cache key."""
    if corpus == "stdlib":
        root = stdlib_dir()
        docs = _file_documents(root, stdlib_files(root))
        python = f"{platform.python_implementation()}-{platform.python_version()}"
        identity = {"kind": "stdlib", "python": python, "files": _listing_digest(docs)}
        return {"kind": "stdlib", "label": f"stdlib-py{platform.python_version()}", "root": str(root),
                "identity": identity, "documents": docs}
    if corpus.startswith("hf:"):
        return _hf_source(corpus)
    path = Path(corpus).expanduser()
    if not path.exists():
        raise ConfigError("data.corpus", "'stdlib', 'hf:<name>[:config]', or an existing file or directory", corpus)
    path = path.resolve()
    if path.is_dir():
        names = text_files(path)
        if not names:
            raise ConfigError("data.corpus", f"a directory holding {'/'.join(TEXT_SUFFIXES)} files", corpus)
        docs, kind = _file_documents(path, names), "directory"
    else:
        docs, kind = _file_documents(path.parent, [path.name]), "file"
    stats = [(d.name, d.size, d.path.stat().st_mtime_ns) for d in docs]
    identity = {"kind": kind, "path": str(path), "files": _digest(stats)}
    return {"kind": kind, "label": path.name, "root": str(path), "identity": identity, "documents": docs}


def _file_documents(root: Path, names: list[str]) -> list[Document]:
    return [Document(name, (root / name).stat().st_size, path=root / name) for name in names]


def _hf_source(corpus: str) -> dict:
    """The `text` column of the train split of a Hugging Face dataset, one document per row (row index as name)."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "data.corpus", "the `datasets` package for 'hf:' corpora (pip install scaling-planner[hf])", corpus
        ) from None
    name, _, config = corpus[len("hf:") :].partition(":")
    try:
        rows = datasets.load_dataset(name, config or None, split="train")
    except Exception as e:  # network, unknown name, bad config: all are the user's to fix
        raise ConfigError("data.corpus", f"a Hugging Face dataset that loads ({type(e).__name__}: {e})", corpus) from e
    if "text" not in rows.column_names:
        raise ConfigError("data.corpus", f"a dataset with a 'text' column (has {rows.column_names})", corpus)
    texts = [t.encode("utf-8") for t in rows["text"]]
    docs = [Document(f"{i:09d}", len(t), data=t) for i, t in enumerate(texts)]
    identity = {"kind": "hf", "name": name, "config": config, "rows": len(docs), "files": _listing_digest(docs)}
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", f"hf-{name}-{config}".rstrip("-"))
    return {"kind": "hf", "label": label, "root": corpus, "identity": identity, "documents": docs}


# ---------------------------------------------------------------------------------------------------- preparation


def _write_corpus(tmp: Path, corpus: str, source: dict, tokenizer_name: str, vocab_size: int, t0: float) -> dict:
    """Split, (train the BPE,) tokenize and write `train.bin` / `val.bin` into `tmp`; return the meta dict."""
    docs = source["documents"]
    total_bytes = sum(d.size for d in docs)
    held = split_by_file({d.name: d.size for d in docs})
    held_bytes = sum(d.size for d in docs if d.name in held)
    by_position = held_bytes < 0.5 * VAL_FRACTION * total_bytes
    if by_position:
        held = set()
    train_docs = [d for d in docs if d.name not in held]
    val_docs = [d for d in docs if d.name in held]

    if tokenizer_name == "bpe":
        tok = BpeTokenizer.train((d.read() for d in train_docs), vocab_size)
        tok.save(tmp / "tokenizer.json")
    else:
        tok = ByteTokenizer()
    n_train = _write_tokens(tmp / "train.bin", train_docs, tok)
    n_val = _write_tokens(tmp / "val.bin", val_docs, tok)
    if by_position:
        n_train, n_val = _move_tail(tmp / "train.bin", tmp / "val.bin", math.ceil(VAL_FRACTION * n_train))
    if n_train < 1 or n_val < 1:
        raise ConfigError("data.corpus", "enough text for a train and a validation split", f"{total_bytes} bytes")

    meta = {
        "format": FORMAT_VERSION,
        "corpus": corpus,
        "kind": source["kind"],
        "source": source["root"],
        "source_label": source["label"],
        "python": platform.python_version() if source["kind"] == "stdlib" else None,
        "tokenizer": tokenizer_name,
        "vocab_size": vocab_size,
        "separator_token": int(tok.sep),
        "dtype": "uint16 little-endian",
        "split": "by_position" if by_position else "by_file",
        "n_documents": len(docs),
        "n_train_documents": len(train_docs),
        "val_documents": sorted(held),
        "bytes": total_bytes,
        "train_tokens": n_train,
        "val_tokens": n_val,
        "val_fraction": n_val / (n_train + n_val),
        "fingerprint": _fingerprint(tmp / "train.bin", tmp / "val.bin"),
        "prepare_seconds": round(time.perf_counter() - t0, 3),
    }
    return meta


def _write_tokens(path: Path, docs: list[Document], tok) -> int:
    """Write the documents' tokens joined by the separator token; return the number of tokens written."""
    sep = np.array([tok.sep], dtype=TOKEN_DTYPE).tobytes()
    n = 0
    with open(path, "wb") as f:
        for i, doc in enumerate(docs):
            if i:
                f.write(sep)
                n += 1
            ids = tok.encode(doc.read()).astype(TOKEN_DTYPE, copy=False)
            f.write(ids.tobytes())
            n += len(ids)
    return n


def _move_tail(train: Path, val: Path, n_tail: int) -> tuple[int, int]:
    """Move the last `n_tail` tokens of `train` to the (empty) `val` file; return the new token counts."""
    tokens = np.fromfile(train, dtype=TOKEN_DTYPE)
    n_tail = min(n_tail, len(tokens))
    tokens[len(tokens) - n_tail :].tofile(val)
    with open(train, "r+b") as f:
        f.truncate((len(tokens) - n_tail) * TOKEN_DTYPE.itemsize)
    return len(tokens) - n_tail, n_tail


def _prepare_nanogpt(path: Path, tokenizer: str, vocab_size: int | None, cache_dir) -> Corpus:
    """Register a nanoGPT-style directory (train.bin, val.bin of uint16) in the cache: meta.json only."""
    if tokenizer != "bytes":  # "bytes" is the default, i.e. the user did not ask for a tokenizer
        raise ConfigError("data.tokenizer", "unset for a pre-tokenized train.bin/val.bin corpus", tokenizer)
    if vocab_size is not None and (not isinstance(vocab_size, int) or not 1 <= vocab_size <= 2**16):
        raise ConfigError("data.vocab_size", "an integer in 1..65536", vocab_size)
    path = path.resolve()
    files = {split: path / f"{split}.bin" for split in ("train", "val")}
    stats = {split: (f.stat().st_size, f.stat().st_mtime_ns) for split, f in files.items()}
    for split, (size, _) in stats.items():
        if size == 0 or size % 2:
            raise ConfigError(f"data.corpus ({files[split]})", "a non-empty file of uint16 tokens", f"{size} bytes")
    identity = {"format": FORMAT_VERSION, "kind": "nanogpt", "path": str(path), "files": stats,
                "vocab_size": vocab_size}
    entry = _corpora_dir(cache_dir) / _entry_name(path.name, "pretokenized", vocab_size or "", identity)
    if not (entry / "meta.json").exists():
        _build_entry(entry, lambda tmp: _nanogpt_meta(path, files, vocab_size))
    return load_corpus(entry)


def _nanogpt_meta(path: Path, files: dict[str, Path], vocab_size: int | None) -> dict:
    t0 = time.perf_counter()
    train = np.memmap(files["train"], dtype=TOKEN_DTYPE, mode="r")
    val = np.memmap(files["val"], dtype=TOKEN_DTYPE, mode="r")
    top = max(_chunked_max(train), _chunked_max(val))
    if vocab_size is not None and top >= vocab_size:
        raise ConfigError("data.vocab_size", f"more than the largest token id ({top}) in {path}", vocab_size)
    return {
        "format": FORMAT_VERSION,
        "corpus": str(path),
        "kind": "nanogpt",
        "source": str(path),
        "source_label": path.name,
        "train_path": str(files["train"]),
        "val_path": str(files["val"]),
        "tokenizer": "pretokenized",
        "vocab_size": vocab_size if vocab_size is not None else top + 1,
        "vocab_inferred": vocab_size is None,
        "dtype": "uint16 little-endian",
        "split": "given",
        "train_tokens": len(train),
        "val_tokens": len(val),
        "val_fraction": len(val) / (len(train) + len(val)),
        "fingerprint": _fingerprint(files["train"], files["val"]),
        "prepare_seconds": round(time.perf_counter() - t0, 3),
    }


def _build_entry(entry: Path, write) -> None:
    """Run `write(tmp) -> meta` in a temp dir beside `entry`, then rename it into place (first preparer wins)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent))
    try:
        meta = write(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared cache should be readable by all
        _publish(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, entry: Path) -> Path:
    """Rename `tmp` to `entry`; if another preparer got there first, keep theirs and drop `tmp`."""
    try:
        os.rename(tmp, entry)
    except OSError:
        if not (entry / "meta.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


# ---------------------------------------------------------------------------------------------------- small helpers


def _corpora_dir(cache_dir: str | os.PathLike | None) -> Path:
    root = cache_dir if cache_dir is not None else os.environ.get("SCALING_CACHE") or "~/.cache/scaling"
    return Path(root).expanduser() / "corpora"


def _entry_name(label: str, tokenizer: str, vocab_size: int | str, key_parts: dict) -> str:
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:60]
    return f"{label}-{tokenizer}{vocab_size}-{_digest(key_parts)[:12]}"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _listing_digest(docs: list[Document]) -> str:
    return _digest([(d.name, d.size) for d in docs])


def _name_hash(name: str) -> bytes:
    return hashlib.sha256(name.encode("utf-8", errors="surrogateescape")).digest()


def _fingerprint(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def _chunked_max(tokens: np.ndarray, chunk: int = 1 << 26) -> int:
    return max(int(tokens[i : i + chunk].max()) for i in range(0, len(tokens), chunk))


def _val_windows(val: np.ndarray, seq_len: int, n_windows: int, batch_size: int):
    for first in range(0, n_windows, batch_size):
        count = min(batch_size, n_windows - first)
        block = np.asarray(val[first * seq_len : (first + count) * seq_len + 1]).astype(np.int64)
        idx = np.arange(count)[:, None] * seq_len + np.arange(seq_len)  # [count, seq_len]
        yield torch.from_numpy(block[idx]), torch.from_numpy(block[idx + 1])


def _si(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
