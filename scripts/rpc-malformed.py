#!/usr/bin/env python3
"""Malformed messages against a running ggml-rpc-server: each is refused (the worker drops that
connection and logs why) and the worker lives on (a fresh connection is answered).

    scripts/rpc-malformed.py HOST:PORT [--pid PID] [--log WORKER_LOG] [--report-only]

Speaks the RPC protocol of the pinned tree (ggml/src/ggml-rpc/ggml-rpc.cpp, protocol 7.0.0):
a command is | cmd u8 | size u64 | payload |, a reply | size u64 | payload |, all little-endian,
structures packed. A positive control comes first (a buffer is allocated, a tbq tensor written
and read back bit for bit), so that a refusal below is the worker's and not this client's mistake.
Each case names the worker's log line it must cause (with --log). Exit 0 when every case is
refused and the worker answers after each; 1 otherwise. --report-only prints the outcome of each
case and exits 0 (for an upstream worker, which crashes on some of them).
"""
import argparse
import os
import socket
import struct
import sys
import time

# enum rpc_cmd
ALLOC_BUFFER, GET_ALIGNMENT, GET_MAX_SIZE, BUFFER_GET_BASE, FREE_BUFFER, BUFFER_CLEAR, SET_TENSOR, \
    SET_TENSOR_HASH, GET_TENSOR, COPY_TENSOR, GRAPH_COMPUTE, GET_DEVICE_MEMORY, INIT_TENSOR, \
    GET_ALLOC_SIZE, HELLO, DEVICE_COUNT, GRAPH_RECOMPUTE, MEMSET_TENSOR = range(18)
CONN_CAPS = 24
MAX_DIMS, MAX_SRC, MAX_OP_PARAMS, MAX_NAME = 4, 10, 64, 64
# ggml types (the patched ggml.h)
F32, TBQ4_0, TBQ3_0 = 0, 43, 44
TBQ_BLOCK, TBQ4_0_BYTES = 128, 66
OP_NONE, OP_ADD = 0, 2

# struct rpc_tensor, packed
TENSOR = struct.Struct(f"<QIQ{MAX_DIMS}I{MAX_DIMS}II{MAX_OP_PARAMS // 4}ii{MAX_SRC}QQQQ{MAX_NAME}si")
assert TENSOR.size % 8 == 0, TENSOR.size


def tensor(*, id=1, type=F32, buffer=0, ne=(1, 1, 1, 1), nb=None, data=0, op=OP_NONE, src=(), name=b"t"):
    if nb is None:
        ts, bs = (TBQ4_0_BYTES, TBQ_BLOCK) if type == TBQ4_0 else (4, 1)
        n0 = ne[0] // bs * ts
        nb = (ts, n0, n0 * ne[1], n0 * ne[1] * ne[2])
    srcs = list(src) + [0] * (MAX_SRC - len(src))
    return TENSOR.pack(id, type, buffer, *ne, *nb, op, *([0] * (MAX_OP_PARAMS // 4)), 0, *srcs, 0, 0, data,
                       name.ljust(MAX_NAME, b"\0"), 0)


class Conn:
    def __init__(self, endpoint, timeout=10):
        host, port = endpoint.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=timeout)
        self.s.sendall(struct.pack("<BQ", HELLO, CONN_CAPS) + bytes(CONN_CAPS))
        major, minor, patch, tbq = struct.unpack("<4B", self.reply(4 + CONN_CAPS)[:4])
        self.version, self.tbq_format = (major, minor, patch), tbq

    def send(self, cmd, payload, size=None):
        self.s.sendall(struct.pack("<BQ", cmd, len(payload) if size is None else size) + payload)

    def recv_exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.s.recv(n - len(out))
            if not chunk:
                raise EOFError(f"connection closed after {len(out)} of {n} bytes")
            out += chunk
        return out

    def reply(self, size):
        (got,) = struct.unpack("<Q", self.recv_exact(8))
        if got != size:
            raise ValueError(f"reply of {got} bytes, expected {size}")
        return self.recv_exact(size)

    def call(self, cmd, payload, size):
        self.send(cmd, payload)
        return self.reply(size)

    def closed_by_peer(self, wait=10):
        """True when the worker closed this connection (it refused the last message)."""
        self.s.settimeout(wait)
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def alloc(c, size):
    ptr, got = struct.unpack("<QQ", c.call(ALLOC_BUFFER, struct.pack("<IQ", 0, size), 16))
    (base,) = struct.unpack("<Q", c.call(BUFFER_GET_BASE, struct.pack("<Q", ptr), 8))
    return ptr, base, got


def alive(endpoint, pid):
    if pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
    try:
        c = Conn(endpoint)
        free, total = struct.unpack("<QQ", c.call(GET_DEVICE_MEMORY, struct.pack("<I", 0), 16))
        c.close()
        return total > 0
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("endpoint")
    ap.add_argument("--pid", type=int, help="the worker's pid: checked alive after each case")
    ap.add_argument("--log", help="the worker's log: each case's error line must appear in it")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()

    # --- positive control: the client speaks the protocol ----------------------------------------
    c = Conn(a.endpoint)
    print(f"worker {a.endpoint}: protocol {'.'.join(map(str, c.version))}, tbq format {c.tbq_format}")
    size = 1 << 16
    ptr, base, got = alloc(c, size)
    assert ptr and got >= size, (ptr, got)
    # one 256-wide tbq4_0 row (2 blocks); f32 on a worker without the tbq types
    kind, t_type, n_bytes = ("tbq4_0", TBQ4_0, 2 * TBQ4_0_BYTES) if c.tbq_format else ("f32", F32, 256 * 4)
    row = (bytes(range(256)) * 4)[:n_bytes]
    t_ok = tensor(type=t_type, buffer=ptr, ne=(256, 1, 1, 1), data=base)
    c.send(SET_TENSOR, t_ok + b"\0" + struct.pack("<Q", 0) + row)
    back = c.call(GET_TENSOR, t_ok + struct.pack("<QQ", 0, len(row)), len(row))
    assert back == row, f"the {kind} row did not come back bit for bit"
    c.close()
    print(f"control: ALLOC_BUFFER, BUFFER_GET_BASE, SET_TENSOR and GET_TENSOR of a {kind} row: ok")

    cases = []  # (name, function(conn, ptr, base) -> None, log line expected)

    def case(name, expect):
        def deco(f):
            cases.append((name, f, expect))
            return f
        return deco

    @case("SET_TENSOR shorter than its tensor header (truncated tensor)", None)
    def _(c, ptr, base):
        c.send(SET_TENSOR, tensor(type=F32, buffer=ptr, data=base)[:40])

    @case("message whose length field says more than is sent (truncated message, then closed)", None)
    def _(c, ptr, base):
        c.send(SET_TENSOR, tensor(type=F32, buffer=ptr, data=base)[:40], size=TENSOR.size + 9 + 64)
        c.s.shutdown(socket.SHUT_WR)

    @case("SET_TENSOR with a length of 2^64 - 1", "Failed to allocate input buffer")
    def _(c, ptr, base):
        c.send(SET_TENSOR, b"", size=(1 << 64) - 1)

    @case("SET_TENSOR at an offset past the buffer's end", "out of buffer bounds")
    def _(c, ptr, base):
        c.send(SET_TENSOR, tensor(type=F32, buffer=ptr, ne=(16, 1, 1, 1), data=base) + b"\0"
               + struct.pack("<Q", size) + bytes(64))

    @case("SET_TENSOR whose data runs past the buffer's end", "out of buffer bounds")
    def _(c, ptr, base):
        c.send(SET_TENSOR, tensor(type=F32, buffer=ptr, ne=(16, 1, 1, 1), data=base) + b"\0"
               + struct.pack("<Q", size - 32) + bytes(64))

    @case("GET_TENSOR of a region past the buffer's end", "out of buffer bounds")
    def _(c, ptr, base):
        c.send(GET_TENSOR, tensor(type=F32, buffer=ptr, ne=(16, 1, 1, 1), data=base) + struct.pack("<QQ", size, 1 << 40))

    @case("tensor whose data lies past its buffer (GET_TENSOR)", "out of buffer bounds")
    def _(c, ptr, base):
        c.send(GET_TENSOR, tensor(type=F32, buffer=ptr, ne=(16, 1, 1, 1), data=base + size) + struct.pack("<QQ", 0, 4))

    @case("tensor whose data lies past its buffer (INIT_TENSOR)", "out of buffer bounds")
    def _(c, ptr, base):
        c.send(INIT_TENSOR, tensor(type=TBQ4_0, buffer=ptr, ne=(128, 1024, 1, 1), data=base))

    @case("tensor whose strides overflow 64 bits", "tensor extent overflows")
    def _(c, ptr, base):
        m = 0xFFFFFFFF
        c.send(SET_TENSOR, tensor(type=F32, buffer=ptr, ne=(16, m, m, m), nb=(4, m, m, m), data=base)
               + b"\0" + struct.pack("<Q", 0) + bytes(64))

    @case("tensor whose element count overflows int64 (zero strides)", "tensor extent overflows")
    def _(c, ptr, base):
        m = 0xFFFFFFFF
        c.send(SET_TENSOR, tensor(type=F32, buffer=ptr, ne=(16, m, m, m), nb=(4, 0, 0, 0), data=base)
               + b"\0" + struct.pack("<Q", 0) + bytes(64))

    @case("tbq4_0 tensor of 100 values, not a whole number of 128-value blocks (SET_TENSOR)",
          "not a whole number of 128-element blocks")
    def _(c, ptr, base):
        c.send(SET_TENSOR, tensor(type=TBQ4_0, buffer=ptr, ne=(100, 1, 1, 1), nb=(66, 66, 66, 66), data=base)
               + b"\0" + struct.pack("<Q", 0) + bytes(66))

    @case("tbq3_0 node of 200 values in GRAPH_COMPUTE", "not a whole number of 128-element blocks")
    def _(c, ptr, base):
        t = tensor(id=7, type=TBQ3_0, buffer=ptr, ne=(200, 1, 1, 1), nb=(50, 100, 100, 100), data=base)
        c.send(GRAPH_COMPUTE, struct.pack("<IIQI", 0, 1, 7, 1) + t)

    @case("GRAPH_COMPUTE that announces more tensors than it carries", None)
    def _(c, ptr, base):
        t = tensor(id=7, type=F32, buffer=ptr, ne=(16, 1, 1, 1), data=base, op=OP_ADD, src=(7, 7))
        c.send(GRAPH_COMPUTE, struct.pack("<IIQI", 0, 1, 7, 1000) + t)

    @case("GRAPH_COMPUTE on device 99", None)
    def _(c, ptr, base):
        c.send(GRAPH_COMPUTE, struct.pack("<IIQI", 99, 0, 0, 0))

    @case("tensor of type 200", "invalid tensor type")
    def _(c, ptr, base):
        c.send(GET_TENSOR, tensor(type=200, buffer=ptr, data=base) + struct.pack("<QQ", 0, 4))

    @case("FREE_BUFFER of a buffer the worker never gave", "buffer not found")
    def _(c, ptr, base):
        c.send(FREE_BUFFER, struct.pack("<Q", ptr ^ 0x5A5A0000))

    @case("BUFFER_CLEAR of a buffer the worker never gave", "buffer not found")
    def _(c, ptr, base):
        c.send(BUFFER_CLEAR, struct.pack("<QB", ptr + 8, 0))

    @case("BUFFER_GET_BASE with a short request", None)
    def _(c, ptr, base):
        c.send(BUFFER_GET_BASE, struct.pack("<I", 1))

    @case("unknown command 200", "Unknown command")
    def _(c, ptr, base):
        c.send(200, b"")

    failed = 0
    for name, f, expect in cases:
        log_before = os.path.getsize(a.log) if a.log else 0
        try:
            c = Conn(a.endpoint)
            ptr, base, _ = alloc(c, size)
            f(c, ptr, base)
            refused = c.closed_by_peer()
            c.close()
        except OSError as e:
            refused = True  # the worker dropped the connection while we were still sending
        time.sleep(0.05)
        up = alive(a.endpoint, a.pid)
        logged = True
        if a.log and expect:
            with open(a.log, "rb") as fh:
                fh.seek(log_before)
                logged = expect.encode() in fh.read()
        ok = refused and up and logged
        failed += not ok
        what = "refused" if refused else "NOT refused"
        what += ", worker answers" if up else ", worker DEAD"
        if expect and a.log:
            what += f", log: {expect!r}" if logged else f", log lacks {expect!r}"
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {what}")
        if not up:
            if a.report_only:
                print("worker is gone: the remaining cases are not run")
                return 0
            return 1
    print(f"{len(cases) - failed} of {len(cases)} malformed messages refused, the worker alive after each")
    return 0 if a.report_only or failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
