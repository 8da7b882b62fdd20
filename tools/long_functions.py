#!/usr/bin/env python3
"""Production functions longer than N lines (default 80) under src/, longest
first, and the largest source files. A function runs from its `fn` line to
the first `}` at the same indentation; `#[cfg(test)] mod` blocks, `tests.rs`
files and the fuzz oracle are skipped.

usage: tools/long_functions.py [N]"""
import os
import re
import sys

N = int(sys.argv[1]) if len(sys.argv) > 1 else 80
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
FN = re.compile(r"^(\s*)(pub(\([a-z]+\))? )?(const )?(unsafe )?fn (\w+)")
long_fns, sizes = [], []
for root, _, files in os.walk(ROOT):
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(root, name)
        lines = open(path).read().split("\n")
        rel = os.path.relpath(path, os.path.dirname(ROOT))
        sizes.append((len(lines), rel))
        if name == "tests.rs" or "fuzzing" in name:
            continue
        i = 0
        while i < len(lines):
            line = lines[i]
            if re.match(r"\s*#\[cfg\(test\)\]", line) and i + 1 < len(lines) \
                    and re.match(r"\s*(pub(\(crate\))? )?mod ", lines[i + 1]):
                break  # test modules come last in a file here
            m = FN.match(line)
            if m and not line.rstrip().endswith(";"):
                indent, j = m.group(1), i + 1
                while j < len(lines) and lines[j] != indent + "}":
                    j += 1
                if j - i + 1 > N:
                    long_fns.append((j - i + 1, rel, m.group(6)))
                i = j
            i += 1
for n, rel, fn in sorted(long_fns, reverse=True):
    print(f"{n:5} {rel} {fn}")
print(f"{len(long_fns)} production functions over {N} lines")
print("largest files:", ", ".join(f"{rel} {n}" for n, rel in sorted(sizes, reverse=True)[:3]))
