"""A byte-level BPE tokenizer from a `tokenizer.json` (standard library only).

Reads the kind of tokenizer Tritter's data pipeline trains (HF `tokenizers`: model `BPE`,
pre-tokenizer and decoder `ByteLevel` with the GPT-2 split pattern, no normalizer) and encodes
text as training text: added special-token strings stay text, nothing is prepended. The GPT-2
pattern's Unicode classes (`\\p{L}`, `\\p{N}`, `\\s`) are built from `unicodedata`, as Python's
`re` has no `\\p{..}`. tests/eval_model_py.rs checks the ids against the Rust `tokenizers`
crate on the default model's tokenizer.
"""

import json
import re
import sys
import unicodedata

# Unicode White_Space (what `\s` means in the Rust regex engines `tokenizers` uses).
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _class_ranges(prefix):
    """A regex character-class body of every code point whose category starts with `prefix`."""
    out, start, prev = [], None, None
    for cp in range(sys.maxunicode + 1):
        hit = unicodedata.category(chr(cp)).startswith(prefix)
        if hit and start is None:
            start = cp
        if not hit and start is not None:
            out.append((start, prev))
            start = None
        prev = cp
    if start is not None:
        out.append((start, prev))
    esc = lambda c: "\\U%08x" % c  # noqa: E731
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in out)


_PATTERN = None


def split_pattern():
    """The GPT-2 pre-tokenizer pattern with explicit Unicode classes (compiled once)."""
    global _PATTERN
    if _PATTERN is None:
        L, N, S = _class_ranges("L"), _class_ranges("N"), WHITE_SPACE
        _PATTERN = re.compile(
            rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+"
        )
    return _PATTERN


def bytes_to_unicode():
    """GPT-2's byte → printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Tokenizer:
    """Encode/decode with one `tokenizer.json`."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        model = tj["model"]
        if model.get("type") != "BPE" or (tj.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
            raise ValueError(f"{path}: not a byte-level BPE tokenizer")
        if tj.get("normalizer"):
            raise ValueError(f"{path}: a normalizer is not supported")
        self.vocab = model["vocab"]
        self.inv = {i: t for t, i in self.vocab.items()}
        for a in tj.get("added_tokens", []):
            self.inv[a["id"]] = a["content"]
        merges = [
            tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]
        ]
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.byte_map = bytes_to_unicode()
        self.unbyte = {c: b for b, c in self.byte_map.items()}
        self.cache = {}

    def _bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            best, at = None, -1
            for k in range(len(parts) - 1):
                r = self.ranks.get((parts[k], parts[k + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, k
            if best is None:
                break
            pair, merged, k = (parts[at], parts[at + 1]), [], 0
            while k < len(parts):
                if k < len(parts) - 1 and (parts[k], parts[k + 1]) == pair:
                    merged.append(parts[k] + parts[k + 1])
                    k += 2
                else:
                    merged.append(parts[k])
                    k += 1
            parts = merged
        return [self.vocab[p] for p in parts]

    def encode(self, text):
        ids = []
        for piece in split_pattern().findall(text):
            word = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
            got = self.cache.get(word)
            if got is None:
                got = self._bpe(word)
                if len(self.cache) < 200_000:
                    self.cache[word] = got
            ids.extend(got)
        return ids

    def decode(self, ids):
        chars = "".join(self.inv[i] for i in ids)
        return bytes(self.unbyte[c] for c in chars).decode("utf-8", errors="replace")
