"""CLIP byte-level BPE tokenizer (49,408 tokens, context 77), written from the published algorithm.

Text is cleaned (HTML unescape, whitespace collapse, lower-case), split into words by a regex, each word's
UTF-8 bytes are mapped to printable unicode characters, and merges are applied greedily by rank.
The merge list is the vendored `bpe_simple_vocab_16e6.txt.gz` (MIT, see LICENSE_bpe_simple_vocab.txt).

    >>> tok = ClipTokenizer()
    >>> tok.encode("a photo of a cat")[:2]
    [320, 1125]
    >>> tok(["a cat"]).shape
    torch.Size([1, 77])
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
from pathlib import Path

import torch

from ...errors import OpenLSMError

VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
SOT_TOKEN, EOT_TOKEN = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77
NUM_MERGES = 49152 - 256 - 2  # merges used by CLIP; vocab = 256 bytes + 256 bytes</w> + merges + 2 specials


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Bijection byte -> printable unicode char: printable latin-1 bytes map to themselves, others to 256+n."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


def clean_text(text: str) -> str:
    """Normalisation applied before tokenising (ftfy is not used: plain `html.unescape` twice)."""
    text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


def _word_pattern():
    # `regex` supports unicode classes; fall back to `re` (letters = [^\W\d_], numbers = \d).
    try:
        import regex

        return regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
    except ImportError:  # pragma: no cover - regex ships with transformers
        import re

        return re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+""",
                          re.IGNORECASE)


class ClipTokenizer:
    """Byte-level BPE with CLIP's vocabulary. `__call__` returns padded int64 tokens [N, context_length]."""

    def __init__(self, vocab_path: str | Path = VOCAB_PATH, context_length: int = CONTEXT_LENGTH):
        path = Path(vocab_path)
        if not path.is_file():
            raise OpenLSMError(f"CLIP BPE vocabulary not found: {path}")
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines[1 : NUM_MERGES + 1]]  # line 0 is a version header
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.sot, self.eot = self.encoder[SOT_TOKEN], self.encoder[EOT_TOKEN]
        self.context_length = context_length
        self.pattern = _word_pattern()
        self._cache: dict[str, list[str]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, word: str) -> list[str]:
        """Merge the symbols of one word (last symbol carries `</w>`) by ascending merge rank."""
        if word in self._cache:
            return self._cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in itertools.pairwise(parts)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without start/end tokens."""
        ids: list[int] = []
        for word in self.pattern.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Inverse of `encode` up to whitespace: words end at `</w>`; SOT dropped, EOT and padding after it cut."""
        ids = list(ids)
        if self.eot in ids:
            ids = ids[: ids.index(self.eot)]
        toks = "".join(self.decoder[i] for i in ids if i not in (self.sot, self.eot))
        words = [bytearray(self.byte_decoder[c] for c in w).decode("utf-8", errors="replace") for w in toks.split("</w>")]
        return " ".join(w for w in words if w)

    def __call__(self, texts: list[str] | str, truncate: bool = True) -> torch.Tensor:
        """[N, context_length] int64: SOT, tokens, EOT, zero padding. Over-long texts are cut (EOT kept)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), self.context_length, dtype=torch.int64)
        for i, text in enumerate(texts):
            ids = [self.sot] + self.encode(text) + [self.eot]
            if len(ids) > self.context_length:
                if not truncate:
                    raise OpenLSMError(f"text too long for CLIP context {self.context_length}: {text[:40]!r}...")
                ids = ids[: self.context_length - 1] + [self.eot]
            out[i, : len(ids)] = torch.tensor(ids)
        return out
