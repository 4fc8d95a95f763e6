#!/usr/bin/env python3
"""The GPU benchmark report: reads what scripts/gpu.sh and scripts/gpu-e2e.sh left in OUT_DIR and prints
the tables (last), writes OUT_DIR/gpu-report.json, and with --plot draws tok/s and GB/s against context.

    python3 scripts/gpu-report.py OUT_DIR [--json FILE] [--plot FILE.png]

Inputs (each optional):
  bench.json          the crate's kernel benchmark (tbq-gpu-bench): copy bandwidth, set_rows,
                      dequantize, FA decode of the crate's kernels with its own L2-defeating input sets
  fa-perf.log         test-backend-ops perf -o FLASH_ATTN_EXT: upstream's kernels and tbq's in one
                      harness (it re-runs one input set: caches under ~50 MB partly hit the L2)
  llama-bench.jsonl   llama-bench -o jsonl: tg128 at depths, pp2048
Bandwidth on K/V bytes = the bytes of the cache read per decode step / time; % of copy against the
measured device-to-device copy (bytes read + written) of the same run.
"""
import argparse
import json
import os
import re
import sys

# K/V bytes per element of each cache type (ggml block sizes; tbq from the crate's format table)
# bytes per element of each cache type (tbq: bytes per 128-element block / 128, src/format.rs)
BPE = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
BPE.update({t: b / 128 for t, b in {"tbq4_0": 66, "tbq3_0": 50, "tbq5_0": 82, "tbq6_0": 98,
                                     "tbq3_1": 52, "tbq4_1": 68, "tbq5_1": 84}.items()})


def load_bench(out):
    p = os.path.join(out, "bench.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def load_fa_perf(out):
    p = os.path.join(out, "fa-perf.log")
    rows = []
    if not os.path.exists(p):
        return rows
    pat = re.compile(r"FLASH_ATTN_EXT\((.*?)\):\s+(\d+) runs -\s+([0-9.]+) us/run")
    for line in open(p, errors="replace"):
        m = pat.search(line)
        if not m:
            continue
        kv = dict(re.findall(r"(\w+)=(\[[^\]]*\]|[^,]+)", m.group(1)))
        d = int(kv["hsk"])
        n_kv = int(kv["kv"])
        nh = int(kv["nh"])
        gqa = int(kv["nr23"].strip("[]").split(",")[0])
        tk, tv = kv["type_K"], kv["type_V"]
        us = float(m.group(3))
        kv_bytes = n_kv * nh * d * (BPE[tk] + BPE[tv])
        rows.append({"d": d, "gqa": gqa, "n_kv": n_kv, "n_head_kv": nh, "type_k": tk, "type_v": tv,
                     "us": us, "kv_bytes": kv_bytes, "gbs": kv_bytes / us / 1e3})
    return rows


def load_llama_bench(out):
    p = os.path.join(out, "llama-bench.jsonl")
    rows = []
    if not os.path.exists(p):
        return rows
    for line in open(p):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        model = os.path.basename(r.get("model_filename", "?"))
        test = f"pp{r['n_prompt']}" if r.get("n_gen", 0) == 0 else f"tg{r['n_gen']}"
        rows.append({"model": model, "model_type": r.get("model_type", ""), "type_k": r["type_k"],
                     "type_v": r["type_v"], "test": test, "depth": r.get("n_depth", 0),
                     "ts": r["avg_ts"], "ts_sd": r.get("stddev_ts", 0.0)})
    return rows


def pair(r):
    """The K/V cache-type pair of a result row, as llama.cpp writes it: "tbq4_0/tbq3_0"."""
    return f"{r['type_k']}/{r['type_v']}"


def fmt_kv(n):
    return f"{n // 1024}K" if n >= 1024 else str(n)


def print_tables(bench, perf, lb):
    copy = bench["copy_gbs"] if bench else None
    if bench:
        print(f"copy D2D: {copy:.0f} GB/s (read + write)")
        for r in bench["results"]:
            if r["op"] in ("set_rows", "dequantize"):
                print(f"  {r['op']:<10} {r['type']:<7} {r['rows']} rows: {r['ms'] * 1e3:8.1f} us "
                      f"{r['gbs']:6.0f} GB/s ({100 * r['gbs'] / copy:.0f}% of copy)")
        fa = [r for r in bench["results"] if r["op"] == "fattn"]
        if fa:
            print("\nFA decode, the crate's kernels (tbq-gpu-bench; µs, % of copy on K/V bytes)")
            for r in fa:
                print(f"  {r['pair']:<10} D{r['d']:<4} GQA{r['gqa']:<2} {fmt_kv(r['n_kv']):>5}: "
                      f"{r['ms'] * 1e3:8.1f} us {r['gbs']:6.0f} GB/s {r['pct_copy']:4.0f}%")
    if perf:
        pairs = []
        for r in perf:
            p = pair(r)
            if p not in pairs:
                pairs.append(p)
        print("\nFA decode in one harness (test-backend-ops perf; 8 KV heads, 1 query row; µs, GB/s on K/V)")
        print(f"  {'D':>4} {'GQA':>3} {'n_kv':>5} " + " ".join(f"{p:>20}" for p in pairs))
        keys = sorted({(r["d"], r["gqa"], r["n_kv"]) for r in perf})
        by = {(r["d"], r["gqa"], r["n_kv"], pair(r)): r for r in perf}
        for k in keys:
            cells = []
            for p in pairs:
                r = by.get(k + (p,))
                cells.append(f"{r['us']:8.1f} ({r['gbs']:5.0f})" if r else f"{'-':>16}")
            print(f"  {k[0]:>4} {k[1]:>3} {fmt_kv(k[2]):>5} " + " ".join(f"{c:>20}" for c in cells))
    if lb:
        print("\nllama-bench (tok/s; -ngl 99 -fa 1)")
        models = []
        for r in lb:
            if r["model"] not in models:
                models.append(r["model"])
        tests = []
        for r in lb:
            t = (r["test"], r["depth"])
            if t not in tests:
                tests.append(t)
        for m in models:
            print(f"  {m}")
            print(f"    {'K/V':<16}" + "".join(f"{t[0] + ('@d' + fmt_kv(t[1]) if t[1] else ''):>14}" for t in tests))
            rows = {}
            for r in lb:
                if r["model"] == m:
                    rows.setdefault(pair(r), {})[(r["test"], r["depth"])] = r["ts"]
            base = rows.get("f16/f16", {})
            for kvp, vals in rows.items():
                cells = []
                for t in tests:
                    v = vals.get(t)
                    if v is None:
                        cells.append(f"{'-':>14}")
                    elif kvp != "f16/f16" and t in base:
                        cells.append(f"{v:8.1f} {v / base[t]:4.2f}x")
                    else:
                        cells.append(f"{v:14.1f}")
                print(f"    {kvp:<16}" + "".join(cells))


def plot(bench, perf, lb, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    copy = bench["copy_gbs"] if bench else None
    sel = [r for r in perf if r["d"] == 128 and r["gqa"] == 4]
    for p in sorted({pair(r) for r in sel}):
        pts = sorted((r["n_kv"], r["gbs"]) for r in sel if pair(r) == p)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=p)
    if copy:
        ax.axhline(copy, color="k", ls="--", lw=1, label=f"D2D copy {copy:.0f} GB/s")
        ax.axhline(0.8 * copy, color="gray", ls=":", lw=1, label="80% of copy")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context (n_kv)")
    ax.set_ylabel("GB/s on K/V bytes")
    ax.set_title("FA decode, D=128, 8 KV heads, GQA 4 (test-backend-ops perf)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[1]
    tg = [r for r in lb if r["test"].startswith("tg")]
    for m in sorted({r["model"] for r in tg}):
        for p in sorted({pair(r) for r in tg if r["model"] == m}):
            pts = sorted((r["depth"], r["ts"]) for r in tg if r["model"] == m and pair(r) == p)
            ls = "-" if "llama" in m else "--"
            ax.plot([max(x, 512) for x, _ in pts], [y for _, y in pts], marker="o", ls=ls,
                    label=f"{m.replace('-q4_k_m.gguf', '')} {p}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("depth (tokens already in the cache; 0 drawn at 512)")
    ax.set_ylabel("tok/s (tg128)")
    gpus = sorted({r.get("gpu_info", "") for r in tg} - {""})
    ax.set_title(f"llama-bench decode on one {gpus[0] if len(gpus) == 1 else 'GPU'}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--json", default=None, help="where to write the combined JSON (default OUT/gpu-report.json)")
    ap.add_argument("--plot", default=None, help="write a PNG plot here (needs matplotlib)")
    a = ap.parse_args()
    bench, perf, lb = load_bench(a.out), load_fa_perf(a.out), load_llama_bench(a.out)
    if not (bench or perf or lb):
        sys.exit(f"gpu-report: nothing to report in {a.out} (bench.json, fa-perf.log, llama-bench.jsonl)")
    rep = {"copy_gbs": bench["copy_gbs"] if bench else None,
           "kernels": bench["results"] if bench else [], "fa_perf": perf, "llama_bench": lb}
    with open(a.json or os.path.join(a.out, "gpu-report.json"), "w") as f:
        json.dump(rep, f, indent=1)
    if a.plot:
        plot(bench, perf, lb, a.plot)
    print_tables(bench, perf, lb)


if __name__ == "__main__":
    main()
