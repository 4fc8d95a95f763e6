#!/usr/bin/env python3
"""tbq-agent's HTTP channel as openai-python (PyPI `openai`) sees it.

    python3 agent-bin/tests/openai_client.py --base-url http://127.0.0.1:PORT/v1 --token T \
        --model NAME --workers W --queue Q [--llama-url http://127.0.0.1:LPORT]

Checks /v1/models, a plain and a streamed completion (stream_options.include_usage: the last
chunk has no choices and the usage), OpenAI's error shape for 401 and 400, /health without the
token, and concurrency: W + Q + 2 requests at once are answered W at a time (seen on
tbq-agent's /health and, with --llama-url, on llama-server's /slots), Q wait, and the 2 beyond
get 429 with a Retry-After.

openai is installed if missing: into the venv $TBQ_PY_VENV (default ./.py-openai), created
with `python3 -m venv` and `pip install openai`, then the script runs again from it. Prints one
line per check and exits non-zero on the first failure.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request


def ensure_openai():
    try:
        import openai  # noqa: F401

        return
    except ImportError:
        pass
    venv = os.path.abspath(os.environ.get("TBQ_PY_VENV", ".py-openai"))
    py = os.path.join(venv, "bin", "python")
    # Running from the venv already (sys.prefix, not the interpreter's path: a venv's python is
    # a symlink to the system one).
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        sys.exit(f"openai is still missing in {venv} after installing it")
    if not os.path.exists(py):
        print(f"installing openai into {venv}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", venv])
    subprocess.check_call([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "openai"])
    os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])


ensure_openai()
import openai  # noqa: E402

passed = 0


def check(cond, what, detail=""):
    global passed
    if not cond:
        print(f"FAIL {what} {detail}", flush=True)
        sys.exit(1)
    passed += 1
    print(f"ok   {what}", flush=True)


def get_json(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--llama-url")
    a = ap.parse_args()
    print(f"openai-python {openai.__version__} against {a.base_url}", flush=True)
    root = a.base_url.rsplit("/v1", 1)[0]
    client = openai.OpenAI(base_url=a.base_url, api_key=a.token, max_retries=0, timeout=300)
    msgs = [{"role": "user", "content": "Say hello in one short sentence."}]

    status, health = get_json(f"{root}/health")
    check(status == 200 and health["status"] == "ok", "/health answers 200 without the token", health)
    check(health["workers"] == a.workers, f"/health: {a.workers} workers", health)

    ids = [m.id for m in client.models.list().data]
    check(ids == [a.model], "models.list() names the model", ids)

    r = client.chat.completions.create(model=a.model, messages=msgs)
    check(r.object == "chat.completion" and r.model == a.model, "create(): a chat.completion from the model", r.model)
    check(bool(r.choices[0].message.content), "create(): the answer has text", repr(r.choices[0].message.content))
    check(r.choices[0].finish_reason == "stop", "create(): finish_reason stop")
    u = r.usage
    check(u.prompt_tokens > 0 and u.completion_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens,
          "create(): usage adds up", u)

    chunks = list(client.chat.completions.create(model=a.model, messages=msgs, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(bool(text), "stream: deltas carry the text", repr(text))
    check(any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks), "stream: a chunk finishes with stop")
    last = chunks[-1]
    check(last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0,
          "stream: include_usage's last chunk has no choices and the usage", last)
    check(all(c.usage is None for c in chunks[:-1]), "stream: earlier chunks have usage null")

    plain = list(client.chat.completions.create(model=a.model, messages=msgs, stream=True))
    check(all(c.usage is None for c in plain) and all(c.choices for c in plain),
          "stream without include_usage: no usage chunk")

    try:
        openai.OpenAI(base_url=a.base_url, api_key="wrong", max_retries=0).models.list()
        check(False, "a wrong token is refused")
    except openai.AuthenticationError as e:
        check(e.status_code == 401 and e.code == "invalid_api_key" and e.body["type"] == "invalid_request_error"
              and "param" in e.body, "a wrong token: AuthenticationError 401, code invalid_api_key", e.body)

    try:
        client.chat.completions.create(model=a.model, messages=[{"role": "assistant", "content": "hi"}])
        check(False, "a body without a final user message is refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and e.param == "messages" and e.code == "invalid_value",
              "no final user message: BadRequestError 400, param messages", e.body)

    # Concurrency: everything at once; workers answer, the queue waits, the rest get 429.
    n = a.workers + a.queue + 2
    results = [None] * n
    busy_seen, slots_seen = [0], [0]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                busy_seen[0] = max(busy_seen[0], get_json(f"{root}/health")[1]["busy"])
                if a.llama_url:
                    slots = get_json(f"{a.llama_url}/slots")[1]
                    slots_seen[0] = max(slots_seen[0], sum(1 for s in slots if s.get("is_processing")))
            except Exception:
                pass
            time.sleep(0.02)

    def one(i):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=a.model, messages=[{"role": "user", "content": f"Say the number {i}."}])
            results[i] = ("ok", raw.parse().choices[0].message.content)
        except openai.RateLimitError as e:
            results[i] = ("429", e.response.headers.get("retry-after"), e.code)
        except Exception as e:  # noqa: BLE001
            results[i] = ("error", repr(e))

    poller = threading.Thread(target=poll)
    poller.start()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    poller.join()
    oks = [r for r in results if r[0] == "ok"]
    limited = [r for r in results if r[0] == "429"]
    print(f"     {n} requests at once in {time.time() - t0:.1f} s: {len(oks)} answered, {len(limited)} got 429 "
          f"{limited}; most busy at once: agent {busy_seen[0]}, llama-server slots {slots_seen[0]}", flush=True)
    check(len(oks) == a.workers + a.queue and len(limited) == 2,
          f"{a.workers} workers + {a.queue} queued answered, the 2 beyond got 429", results)
    check(all(r[1] is not None and int(r[1]) >= 1 and r[2] == "queue_full" for r in limited),
          "429s carry Retry-After (seconds) and code queue_full", limited)
    check(busy_seen[0] == a.workers, f"the agent answered {a.workers} turns at the same time", busy_seen)
    if a.llama_url:
        check(slots_seen[0] == a.workers, f"llama-server processed {a.workers} requests at the same time", slots_seen)
    print(f"openai-python: all {passed} checks passed", flush=True)


if __name__ == "__main__":
    main()
