#!/usr/bin/env python3
"""Maps the per-layer allocations of a calibration.json (`tbq-validate calibrate`) onto a model of
another depth, as `K/V@spec` pairs for scripts/gpu-e2e.sh's TBQ_E2E_PAIRS.

The reference model has 8 layers and the benchmark shapes 28 or 32: layer l of the calibrated model
becomes the layers round(N/n · l) … round(N/n · (l+1)) − 1 of the N-layer one, so the first and last
layers keep their types and the bits per element stay within a few hundredths of the budget's.

    scripts/gpu-map-allocation.py CALIBRATION.json N_LAYERS   ->  one pair per line
"""
import json
import sys


def layer_types(config, n):
    """(K types, V types) per layer of an allocation's config 'K/V@spec' (spec: ';'-separated)."""
    base, _, spec = config.partition("@")
    k, v = base.split("/")
    types = {"k": [k] * n, "v": [v] * n}
    for item in filter(None, spec.split(";")):
        lhs, t = item.split("=")
        sides, layers = (lhs[:2], lhs[2:]) if lhs.startswith("kv") else (lhs[0], lhs[1:])
        lo, _, hi = layers.partition("-")
        for s in sides:
            for il in range(int(lo), int(hi or lo) + 1):
                types[s][il] = t
    return types["k"], types["v"]


def spec_of(side, types, base):
    """'side'-rows that differ from base, consecutive layers of one type as ranges."""
    out, il = [], 0
    while il < len(types):
        if types[il] == base:
            il += 1
            continue
        j = il
        while j + 1 < len(types) and types[j + 1] == types[il]:
            j += 1
        out.append(f"{side}{il}={types[il]}" if j == il else f"{side}{il}-{j}={types[il]}")
        il = j + 1
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    cal = json.load(open(sys.argv[1]))
    big = int(sys.argv[2])
    n = 1 + max(r["layer"] for r in cal["rows"])
    for a in cal["allocations"]:
        k, v = layer_types(a["config"], n)
        bounds = [round(big / n * l) for l in range(n + 1)]
        kb = [k[l] for l in range(n) for _ in range(bounds[l], bounds[l + 1])]
        vb = [v[l] for l in range(n) for _ in range(bounds[l], bounds[l + 1])]
        kbase, vbase = max(set(kb), key=kb.count), max(set(vb), key=vb.count)
        spec = spec_of("k", kb, kbase) + spec_of("v", vb, vbase)
        print(f"{kbase}/{vbase}" + ("@" + ";".join(spec) if spec else ""))


if __name__ == "__main__":
    main()
