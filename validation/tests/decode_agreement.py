#!/usr/bin/env python3
"""Decode through centred tbq keys agrees with f16 more often than decode through uncentred ones.

llama-perplexity scores whole 512-token ubatches; a chat decodes one token at a time. This walks a
text through the real llama-server one token per request (the cached prompt is reused, so every
step is a 1-token ubatch after one prompt ubatch that sets the key offset) and counts how often the
greedy next token equals the f16 cache's, for tbq4_0/tbq3_0 with and without key centring.
Measured (Gemma 3 270M, 120 steps from token 300): centred 0.742, uncentred 0.558, mean |Δ logprob|
of f16's token 0.67 vs 2.00. Asserted: centred at least 0.1 above uncentred, and every step a
1-token evaluation.

usage: decode_agreement.py LLAMA_SERVER MODEL TEXT_FILE WORK_DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import state_roundtrip as rt  # noqa: E402  (the llama-server harness)

START, STEPS = 300, 120


def walk(name, k, v, env=None):
    s = rt.Server(name, env=env, k=k, v=v)
    status, r = s.request("POST", "/tokenize", {"content": rt.words(3000, 1500)})
    assert status == 200, r
    toks = r["tokens"]
    steps = []
    for i in range(STEPS):
        status, r = s.request("POST", "/completion", {
            "prompt": toks[:START + i], "n_predict": 1, "temperature": 0, "cache_prompt": True,
            "n_probs": 20, "id_slot": 0})
        assert status == 200, r
        p = r["completion_probabilities"][0]
        assert i == 0 or r["timings"]["prompt_n"] == 1, r["timings"]
        steps.append((p["id"], {t["id"]: t["logprob"] for t in p["top_logprobs"]}))
    s.stop()
    return steps


def main():
    rt.configure(*sys.argv[1:5])
    ref = walk("f16", "f16", "f16")
    score = {}
    for name, env in [("centred", None), ("uncentred", {"LLAMA_TBQ_KEY_CENTRE_DISABLE": "1"})]:
        got = walk(name, "tbq4_0", "tbq3_0", env)
        same = sum(a[0] == b[0] for a, b in zip(ref, got)) / STEPS
        dlp = sum(abs(b[1].get(a[0], -30.0) - a[1][a[0]]) for a, b in zip(ref, got)) / STEPS
        score[name] = same
        print(f"tbq4_0/tbq3_0 {name}: same greedy token as f16 {same:.3f}, mean |Δ logprob| of f16's {dlp:.3f}")
    assert score["centred"] >= score["uncentred"] + 0.1, score
    print("ok")


if __name__ == "__main__":
    main()
