#!/usr/bin/env python3
"""tbq key centring survives llama-server's slot save and restore (patches/0007).

tbq keys are stored as k - mu, with mu set by the first long ubatch written into an empty cache. A
saved slot must bring its mu back, or every key written after the restore sits q·mu apart from the
restored ones in the softmax. Checked against the real llama-server on a real model:

1. exact: generate G tokens after a prompt, ask again (the server reuses its cache and evaluates
   only the last prompt token again), save the slot, start a fresh server, restore, ask again. The
   restored keys are the same bytes and mu comes back with them, so the second request of the
   first server and the request after the restore compute the same thing: log-probabilities equal
   within 1e-4. (Not the first request's: with centring on, evaluating the last prompt token alone
   gives log-probabilities up to ~0.3 away from evaluating it inside the prompt's ubatch on this
   model, although the cached K rows compare equal byte for byte; without centring they agree
   bit for bit. Not understood yet: see the issue-12 note.)
2. refused: the same file restored into a server started with LLAMA_TBQ_KEY_CENTRE_DISABLE=1 is
   refused with an error that names the setting, never read as garbage;
3. re-centred: restored into a server whose other slot has already set another mu (a different
   prompt first), the restored rows are moved to the cache's mu (one more rounding of every key):
   the next token must be the same and its log-probability within 0.5 (measured: 0.29, the size of
   the re-evaluation difference above; the greedy continuations then part after a token or two).

usage: state_roundtrip.py LLAMA_SERVER MODEL TEXT_FILE WORK_DIR [K V]
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

G = 24  # generated tokens compared
SERVER = MODEL = TEXT = WORK = None  # set by configure() (argv here, or a test that imports this file)
K, V = "tbq4_0", "tbq3_0"


def configure(server, model, text, work, k="tbq4_0", v="tbq3_0"):
    global SERVER, MODEL, TEXT, WORK, K, V
    SERVER, MODEL, TEXT, WORK, K, V = server, model, text, work, k, v
    os.makedirs(WORK + "/slots", exist_ok=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name, parallel=1, env=None, k=None, v=None):
        self.port = free_port()
        self.log_path = os.path.join(WORK, f"server-{name}.log")
        cmd = [SERVER, "-m", MODEL, "-c", "4096", "-np", str(parallel), "-fa", "on", "-ctk", k or K, "-ctv", v or V,
               "-t", "2", "--port", str(self.port), "--host", "127.0.0.1", "--slot-save-path", WORK + "/slots/",
               "-lv", "4", "--log-colors", "off",
               # no RAM prompt cache (it clears idle slots); a full-size SWA cache (Gemma 3 slides a window:
               # without it the server re-evaluates a restored prompt instead of reusing it)
               "--cache-ram", "0", "--swa-full"]
        if parallel > 1:
            cmd.append("--kv-unified")  # one stream, as the saving server had: slots share the cache and mu
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"llama-server exited with {self.proc.returncode}: see {self.log_path}")
            try:
                if self.get("/health").get("status") == "ok":
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        sys.exit(f"llama-server not healthy after 120 s: see {self.log_path}")

    def request(self, method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path):
        return self.request("GET", path)[1]

    def complete(self, prompt, slot):
        status, r = self.request("POST", "/completion", {
            "prompt": prompt, "n_predict": G, "temperature": 0, "top_k": 1, "cache_prompt": True,
            "id_slot": slot, "n_probs": 1, "samplers": ["top_k"]})
        assert status == 200, r
        probs = r["completion_probabilities"]
        self.prompt_evaluated = r["timings"]["prompt_n"]
        return [p["id"] for p in probs], [p["logprob"] for p in probs]

    def slot(self, slot, action, filename):
        return self.request("POST", f"/slots/{slot}?action={action}", {"filename": filename})

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def words(start, n):
    text = open(TEXT, encoding="utf-8").read().split()
    return " ".join(text[start:start + n])


def main():
    prompt = words(1000, 400)   # several hundred tokens: one ubatch of >= 64 sets mu
    other = words(20000, 400)

    s = Server("save")
    s.complete(prompt, 0)
    ids_a, lp_a = s.complete(prompt, 0)
    assert s.prompt_evaluated <= 2, s.prompt_evaluated
    status, r = s.slot(0, "save", "slot0.bin")
    assert status == 200, r
    s.stop()
    assert "tbq key centring on" in open(s.log_path).read(), "the cache did not report key centring"
    print(f"saved: {r.get('n_saved')} tokens, {r.get('n_written')} bytes")

    # 1. exact
    s = Server("restore")
    status, r = s.slot(0, "restore", "slot0.bin")
    assert status == 200, r
    ids_b, lp_b = s.complete(prompt, 0)
    s.stop()
    # the restored keys were used: only the last prompt token is evaluated again
    print(f"restored: {s.prompt_evaluated} prompt tokens evaluated")
    assert s.prompt_evaluated <= 2, s.prompt_evaluated
    d = max(abs(a - b) for a, b in zip(lp_a, lp_b))
    print(f"exact: tokens equal {ids_a == ids_b}, max |Δ logprob| {d:.2e} over {G} tokens")
    assert ids_a == ids_b and d < 1e-4

    # 2. refused
    s = Server("refuse", env={"LLAMA_TBQ_KEY_CENTRE_DISABLE": "1"})
    status, r = s.slot(0, "restore", "slot0.bin")
    s.stop()
    log = open(s.log_path).read()
    print(f"uncentred server: restore -> HTTP {status}")
    assert status != 200 and "LLAMA_TBQ_KEY_CENTRE_DISABLE" in log, (status, r)

    # 3. re-centred: slot 1 fills the empty cache first and sets its own mu
    s = Server("recentre", parallel=2)
    s.complete(other, 1)
    status, r = s.slot(0, "restore", "slot0.bin")
    assert status == 200, r
    ids_c, lp_c = s.complete(prompt, 0)
    s.stop()
    assert s.prompt_evaluated <= 2, s.prompt_evaluated
    assert "re-centred" in open(s.log_path).read(), "the restored keys were not re-centred"
    same = next((i for i, (a, c) in enumerate(zip(ids_a, ids_c)) if a != c), G)
    diffs = [abs(a - c) for a, c in zip(lp_a[:same], lp_c[:same])]
    d = max(diffs) if diffs else float("inf")
    m = sum(diffs) / len(diffs) if diffs else float("inf")
    print(f"re-centred: first {same} of {G} tokens equal, |Δ logprob| there mean {m:.2e}, max {d:.2e}")
    # one more rounding of every restored key: the continuation may drift as any two tbq runs do
    # (a centred tbq cache differs from f16 by a mean |Δ logprob| of ~0.75 in the 1-token test), so
    # the bound is on the mean over the agreeing prefix, at 2/3 of that; keys moved to the wrong
    # offset would break attention at once (the first token differs, or several nats)
    assert same >= 1 and m < 0.5 and d < 2.0, (same, m, d)
    print("ok")


if __name__ == "__main__":
    configure(*sys.argv[1:7])
    main()
