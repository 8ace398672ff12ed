#!/usr/bin/env python3
"""Aggregate throughput of concurrent bulk loaders: the other side of src/server/fair.rs.

Pacing serves pipelining clients in a few heavy turns so that light clients never wait behind
them (tests/abuse.rs measures the light side). This measures what the pacing costs the heavy
side: N clients each pipeline 50,000 `get`s of 1,000 stored 100-byte keys at once, reading
concurrently, three times; prints requests per second for each round. Starts two memcacheds and
memroute (--threads 1, one connection per server) on free loopback ports, stops them by PID.

    bench/bulk.py BINARY [N]

Seen (cfa1727 + HEAVY_TURNS as committed = 2, 4 loaders): ~340,000 req/s; with HEAVY_TURNS = 1,
~220,000 (and tests/abuse.rs's light clients x0.75-0.79 instead of x0.65-0.73).
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

PER = 50000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on port {port}")


def loader(port, request):
    c = socket.create_connection(("127.0.0.1", port))
    sender = threading.Thread(target=c.sendall, args=(request,))
    sender.start()
    ends, tail = 0, b""
    while ends < PER:
        data = c.recv(1 << 20)
        if not data:
            sys.exit("memroute closed a loader's connection")
        ends += (tail + data).count(b"END\r\n")
        tail = data[-4:]
    sender.join()
    c.close()


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    started = []
    try:
        ports = [free_port(), free_port()]
        for p in ports:
            started.append(subprocess.Popen(["memcached", "-u", "root", "-U", "0", "-l",
                                             "127.0.0.1", "-p", str(p), "-t", "1"]))
        for p in ports:
            wait_port(p)
        port = free_port()
        config = os.path.join(tempfile.mkdtemp(prefix="memroute-bulk-"), "memroute.toml")
        with open(config, "w") as f:
            f.write(f'[listen]\naddress = "127.0.0.1:{port}"\n\n[pools.main]\nservers = '
                    f'["127.0.0.1:{ports[0]}", "127.0.0.1:{ports[1]}"]\nconnections = 1\n\n'
                    '[[routes]]\nprefix = ""\ntiers = ["main"]\n')
        started.append(subprocess.Popen([binary, "--config", config, "--threads", "1"],
                                        stderr=subprocess.DEVNULL))
        wait_port(port)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"".join(b"set k%d 0 0 100 noreply\r\n%s\r\n" % (i, b"x" * 100)
                               for i in range(1000)) + b"get k1\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                reply += s.recv(4096)
        request = b"".join(b"get k%d\r\n" % (i % 1000) for i in range(PER))
        for _ in range(3):
            threads = [threading.Thread(target=loader, args=(port, request)) for _ in range(n)]
            t0 = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rate = n * PER / (time.time() - t0)
            print(f"{n} loaders x {PER} pipelined gets: {rate:,.0f} req/s ({binary})")
    finally:
        for proc in reversed(started):
            proc.terminate()
        for proc in started:
            proc.wait(30)


if __name__ == "__main__":
    main()
