#!/usr/bin/env python3
"""cpu-bench-table.py DIR [BEFORE AFTER] — the markdown table of DIR/before.jsonl and DIR/after.jsonl
(scripts/cpu-bench.sh; other names of the two files in DIR, without .jsonl, as BEFORE and AFTER):
t/s per cache pair and test, and the ratio to q4_0/q4_0 of the same side."""
import json
import sys
from pathlib import Path

d = Path(sys.argv[1])
tests = [(512, 0, 0), (0, 32, 0), (512, 0, 2048), (0, 32, 2048)]
names = {t: (f"pp{t[0]}" if t[0] else f"tg{t[1]}") + (f" @ d{t[2]}" if t[2] else "") for t in tests}


files = {"before": "before", "after": "after"}
if len(sys.argv) == 4:
    files = {"before": sys.argv[2], "after": sys.argv[3]}


def load(side):
    rows = {}
    for line in (d / f"{files[side]}.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[(f"{r['type_k']}/{r['type_v']}", (r["n_prompt"], r["n_gen"], r["n_depth"]))] = r["avg_ts"]
    return rows


sides = {s: load(s) for s in ("before", "after")}
pairs = list(dict.fromkeys(p for p, _ in sides["after"]))
print("| K/V | " + " | ".join(f"{names[t]} before | {names[t]} after" for t in tests) + " |")
print("|---|" + "---|---|" * len(tests))
for p in pairs:
    cells = []
    for t in tests:
        for s in ("before", "after"):
            v, base = sides[s].get((p, t)), sides[s].get(("q4_0/q4_0", t))
            cells.append(f"{v:.1f} ({v / base:.2f}×)" if v and base else "–")
    print(f"| {p} | " + " | ".join(cells) + " |")
