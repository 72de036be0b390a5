#!/usr/bin/env python3
"""Read the training shards `tritter --train CONFIG --prepare-only` writes (RUN/data/).

Standard library only (numpy is used when importable, for speed). The layout is documented in
docs/SCALE.md ("4. Prepared data"): `shards.json` names the shard files of the train and val
splits; each `SPLIT/shard-NNNNN.bin` is a 32-byte header (magic `TRTSHRD1`, u32 version 1,
u32 seq_len, u64 sequences, 8 reserved bytes) and then, per sequence, `seq_len` u32 token ids
followed by `seq_len` u32 document ids, all little-endian.

    python3 scripts/read_shards.py RUN/data                    # summary as JSON
    python3 scripts/read_shards.py RUN/data --dump 2 --split val   # sequences as JSON lines

As a library (a map-style dataset a torch DataLoader accepts as it is):

    from read_shards import ShardSet
    train = ShardSet("RUN/data").split("train")
    tokens, doc_ids = train[0]          # lists of seq_len ints (numpy arrays with numpy)
    stream = ShardSet("RUN/data").token_stream("train")   # non-padding tokens, in order
"""
import argparse
import array
import json
import os
import struct
import sys

try:
    import numpy as np
except ImportError:  # the standard-library path below
    np = None

MAGIC = b"TRTSHRD1"
VERSION = 1
HEADER = 32


class ShardError(Exception):
    """A shard or the index is not in the expected layout."""


def read_header(path):
    """(seq_len, sequences) of one shard file, after checking its header and size."""
    with open(path, "rb") as f:
        head = f.read(HEADER)
    if len(head) != HEADER or head[:8] != MAGIC:
        raise ShardError(f"{path}: not a Tritter shard (magic {head[:8]!r})")
    version, seq_len, sequences = struct.unpack_from("<IIQ", head, 8)
    if version != VERSION:
        raise ShardError(f"{path}: version {version}, this reader knows {VERSION}")
    size = os.path.getsize(path)
    if size != HEADER + sequences * seq_len * 8:
        raise ShardError(f"{path}: {size} bytes, header says {sequences} x {seq_len}")
    return seq_len, sequences


class Split:
    """The sequences of one split, in order, with random access."""

    def __init__(self, data_dir, name, entry, seq_len):
        self.name = name
        self.seq_len = seq_len
        self.files = []
        self.starts = []
        total = 0
        for shard in entry["shards"]:
            path = os.path.join(data_dir, shard["file"])
            sl, n = read_header(path)
            if sl != seq_len or n != shard["sequences"]:
                raise ShardError(f"{path}: {n} x {sl}, the index says {shard['sequences']} x {seq_len}")
            self.files.append(path)
            self.starts.append(total)
            total += n
        if total != entry["sequences"]:
            raise ShardError(f"{name}: {total} sequences in the shards, {entry['sequences']} in the index")
        self.sequences = total

    def __len__(self):
        return self.sequences

    def __getitem__(self, i):
        """(tokens, doc_ids) of sequence `i`: `seq_len` ints each."""
        if i < 0:
            i += self.sequences
        if not 0 <= i < self.sequences:
            raise IndexError(f"sequence {i} of {self.sequences} in {self.name}")
        k = max(j for j, s in enumerate(self.starts) if s <= i)
        width = self.seq_len * 4
        with open(self.files[k], "rb") as f:
            f.seek(HEADER + (i - self.starts[k]) * 2 * width)
            raw = f.read(2 * width)
        if np is not None:
            row = np.frombuffer(raw, dtype="<u4")
            return row[: self.seq_len], row[self.seq_len:]
        vals = array.array("I")
        vals.frombytes(raw)
        if sys.byteorder != "little":
            vals.byteswap()
        return vals[: self.seq_len].tolist(), vals[self.seq_len:].tolist()

    def __iter__(self):
        for i in range(self.sequences):
            yield self[i]


class ShardSet:
    """`shards.json` of a prepared data directory and its two splits."""

    def __init__(self, data_dir):
        self.data_dir = str(data_dir)
        with open(os.path.join(self.data_dir, "shards.json")) as f:
            self.index = json.load(f)
        if self.index.get("version") != VERSION:
            raise ShardError(f"shards.json version {self.index.get('version')}, expected {VERSION}")
        self.seq_len = self.index["seq_len"]
        self.pad_id = self.index["pad_id"]
        self.pad_doc = self.index["pad_doc"]

    def split(self, name):
        """The `train` or `val` split."""
        if name not in ("train", "val"):
            raise ValueError(f"split {name!r}: train or val")
        return Split(self.data_dir, name, self.index[name], self.seq_len)

    def token_stream(self, name):
        """The split's tokens without padding (positions whose document id is `pad_doc`)."""
        out = []
        for tokens, docs in self.split(name):
            out.extend(int(t) for t, d in zip(tokens, docs) if int(d) != self.pad_doc)
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", help="RUN/data, the directory holding shards.json")
    ap.add_argument("--split", choices=("train", "val"), default="train")
    ap.add_argument("--dump", type=int, default=0, metavar="N",
                    help="print the first N sequences as JSON lines {tokens, doc_ids}")
    args = ap.parse_args()
    try:
        shards = ShardSet(args.data_dir)
        split = shards.split(args.split)
        if args.dump:
            for i in range(min(args.dump, len(split))):
                tokens, docs = split[i]
                print(json.dumps({"tokens": [int(t) for t in tokens],
                                  "doc_ids": [int(d) for d in docs]}))
            return 0
        tokens = sum(1 for _, docs in split for d in docs if int(d) != shards.pad_doc)
        print(json.dumps({"split": args.split, "seq_len": shards.seq_len,
                          "sequences": len(split), "shards": len(split.files),
                          "tokens": tokens, "tokens_in_index": shards.index[args.split]["tokens"]}))
    except (OSError, ShardError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
