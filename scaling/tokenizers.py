"""Tokenizers for `scaling.data`: raw bytes (vocab 256, the default) and an optional locally trained byte-level BPE.

A tokenizer turns one document (bytes) into uint16 token ids and back. Documents in a token file are separated by
`tokenizer.sep`, one token: byte 0 for `bytes`, the special token `<|endoftext|>` for `bpe`.

The BPE tokenizer needs the Hugging Face `tokenizers` package (`pip install scaling-planner[bpe]`). It is trained on
the training documents only (never the validation ones) and saved as `tokenizer.json` beside the token files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from scaling.errors import ConfigError

TOKENIZERS = ("bytes", "bpe")
DEFAULT_BPE_VOCAB = 4096  # small enough for the tiny models of a CPU sweep
MAX_VOCAB = 2**16  # tokens are stored as uint16
EOT = "<|endoftext|>"  # the BPE document separator


class ByteTokenizer:
    """Each byte is a token (ids 0..255); documents are separated by byte 0, which Python source never contains."""

    name = "bytes"
    vocab_size = 256
    sep = 0

    def encode(self, doc: bytes) -> np.ndarray:
        return np.frombuffer(doc, dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: Iterable[int]) -> bytes:
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise ValueError("byte tokens must lie in 0..255")
        return ids.astype(np.uint8).tobytes()


class BpeTokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenization) wrapping a Hugging Face `tokenizers.Tokenizer`.

    Text is decoded from UTF-8 with invalid bytes replaced by U+FFFD, so `decode(encode(doc))` equals `doc` exactly
    only for valid UTF-8 documents.
    """

    name = "bpe"

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        self.vocab_size = hf_tokenizer.get_vocab_size()
        self.sep = hf_tokenizer.token_to_id(EOT)

    def encode(self, doc: bytes) -> np.ndarray:
        return np.asarray(self.hf.encode(doc.decode("utf-8", errors="replace")).ids, dtype=np.uint16)

    def decode(self, ids: Iterable[int]) -> bytes:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False).encode("utf-8")

    def save(self, path: Path) -> None:
        self.hf.save(str(path))

    @classmethod
    def load(cls, path: Path) -> BpeTokenizer:
        return cls(_hf_tokenizers().Tokenizer.from_file(str(path)))

    @classmethod
    def train(cls, docs: Iterable[bytes], vocab_size: int) -> BpeTokenizer:
        """Train on `docs` (bytes, decoded as UTF-8); the vocab holds `<|endoftext|>`, the 256 bytes, then merges."""
        hf = _hf_tokenizers()
        tok = hf.Tokenizer(hf.models.BPE())
        tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = hf.decoders.ByteLevel()
        trainer = hf.trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator((d.decode("utf-8", errors="replace") for d in docs), trainer=trainer)
        return cls(tok)


def check_tokenizer(name: str, vocab_size: int | None) -> int:
    """Validate the tokenizer name and vocab size; return the vocab size to use."""
    if name not in TOKENIZERS:
        raise ConfigError("data.tokenizer", f"one of {TOKENIZERS}", name)
    if vocab_size is not None and (not isinstance(vocab_size, int) or isinstance(vocab_size, bool)):
        raise ConfigError("data.vocab_size", "an integer", vocab_size)
    if name == "bytes":
        if vocab_size not in (None, 256):
            raise ConfigError("data.vocab_size", "256 (or unset) for tokenizer 'bytes'", vocab_size)
        return 256
    _hf_tokenizers()  # fail early, before any work, when the extra is missing
    vocab_size = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
    if not 257 <= vocab_size <= MAX_VOCAB:
        raise ConfigError("data.vocab_size", f"an integer in 257..{MAX_VOCAB} for tokenizer 'bpe'", vocab_size)
    return vocab_size


def load_tokenizer(corpus) -> ByteTokenizer | BpeTokenizer:
    """The tokenizer a prepared `scaling.data.Corpus` was made with (for decoding samples)."""
    name = corpus.meta["tokenizer"]
    if name == "bytes":
        return ByteTokenizer()
    if name == "bpe":
        return BpeTokenizer.load(Path(corpus.path) / "tokenizer.json")
    raise ConfigError("data.tokenizer", "'bytes' or 'bpe' to decode (a pre-tokenized corpus has no tokenizer)", name)


def _hf_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ConfigError(
            "data.tokenizer",
            "'bytes', or the `tokenizers` package for 'bpe' (pip install scaling-planner[bpe])",
            "bpe",
        ) from None
    return tokenizers
