#!/usr/bin/env python3
"""Regenerates Appendix A of spec/FORMAT.md from spec/vectors/tiny.tqm.

Writes an annotated hex dump (16 bytes a line, each line labelled with the
structure its first byte belongs to) between the markers
<!-- HEXDUMP BEGIN tiny.tqm --> and <!-- HEXDUMP END -->. tests/vectors_test.cc
checks that the dump in the document equals the committed file byte for byte.
Parses the file with nothing but the layout in FORMAT.md (struct module only).
"""
import struct
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
data = (root / "spec/vectors/tiny.tqm").read_bytes()
doc_path = root / "spec/FORMAT.md"

labels = {}  # offset -> label


def mark(begin, length, label):
    for o in range(begin, begin + length):
        labels.setdefault(o, label)


mark(0, 64, "header")
dir_off, count = struct.unpack_from("<QI", data, 24)
mark(dir_off, 32 * count, "section directory")
names = {1: "METADATA", 2: "TABLE", 3: "TENSOR_INDEX", 4: "DATA"}
sections = {}
for i in range(count):
    sid, flags, off, length, _ = struct.unpack_from("<IIQQQ", data, dir_off + 32 * i)
    sections[sid] = (off, length)
idx_off, idx_len = sections[3]
n_tensors = struct.unpack_from("<I", data, idx_off)[0]
p = idx_off + 8
for _ in range(n_tensors):
    (name_len,) = struct.unpack_from("<H", data, p)
    name = data[p + 2 : p + 2 + name_len].decode()
    p += 2 + name_len
    dtype, storage, ndim, _ = struct.unpack_from("<BBBB", data, p)
    p += 8
    dims = struct.unpack_from("<%dQ" % ndim, data, p)
    p += 8 * ndim
    pairs = {1: 0, 2: 1, 3: dims[0]}[storage]
    p += 8 * pairs
    (n_chunks,) = struct.unpack_from("<I", data, p)
    p += 8
    for c in range(n_chunks):
        codec, _, _, dsize, off, esize, _, _ = struct.unpack_from("<BBHIQIIQ", data, p)
        p += 32
        codec_name = {0: "stored", 1: "seqtable"}.get(codec, str(codec))
        mark(off, esize, "DATA: %s chunk %d of %s" % (codec_name, c, name))
for sid, (off, length) in sections.items():
    if sid != 4:
        mark(off, length, names[sid])

lines = ["<!-- HEXDUMP BEGIN tiny.tqm -->", "```"]
prev = None
for base in range(0, len(data), 16):
    row = data[base : base + 16]
    hexes = " ".join("%02x" % b for b in row)
    label = labels.get(base, "padding (zero)")
    if all(b == 0 for b in row) and label == prev and base + 16 < len(data):
        pass
    note = label if label != prev else ""
    prev = label
    lines.append("%08x: %-47s  %s" % (base, hexes, note))
lines += ["```", "<!-- HEXDUMP END -->"]
block = "\n".join(lines)

doc = doc_path.read_text()
if "<!-- HEXDUMP BEGIN tiny.tqm -->" in doc:
    head, rest = doc.split("<!-- HEXDUMP BEGIN tiny.tqm -->", 1)
    _, tail = rest.split("<!-- HEXDUMP END -->", 1)
    doc = head + block + tail
elif "<!-- HEXDUMP -->" in doc:
    doc = doc.replace("<!-- HEXDUMP -->", block)
else:
    sys.exit("spec/FORMAT.md has no HEXDUMP marker")
doc_path.write_text(doc)
print("wrote %d lines of hex dump into %s" % (len(lines), doc_path))
