#!/usr/bin/env python3
"""Instructions per request of memroute, counted by callgrind (bench/README.md).

Wall-clock CPU per request moves by 10-30 % between runs on a shared machine; instruction
counts do not. This starts two memcached servers and memroute (--threads 1, one connection per
server, the benchmark's config) under `valgrind --tool=callgrind`, fills the keys, warms up,
zeroes the counters, drives a fixed number of requests with a closed-loop client of 50
connections, dumps, and prints instructions per request. Loopback only; it stops the processes
it started, by PID.

    bench/callgrind.py BINARY [--load a|b|c|f|d] [--rounds N] [--syscalls]

With --syscalls memroute runs natively and `perf stat` (Debian's linux-perf) counts its
system calls and context switches per request over the same measured requests instead: the
kernel side of the cost, which callgrind does not see.

Loads (50 connections each, 40,000 requests with the default rounds):
  a  one request per round trip, get:set 9:1, 100-byte values
  b  16 pipelined requests per round trip, as a
  c  one 10-key get per round trip
  f  meta: mg <key> f v : ms 9:1
  d  as a, with 1,000 connections (the rest idle but open)
"""

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

KEYS = 10000
VALUE = 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=60.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on port {port}")


def value(i):
    return ((b"%d-" % i) * VALUE)[:VALUE]


def read_reply(sock, buf, end):
    """Reads until `buf` holds a reply ending with `end`; returns what follows it."""
    while True:
        i = buf.find(end)
        if i >= 0:
            return buf[i + len(end):]
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit("memroute closed a connection")
        buf += chunk


def request(rng, load):
    k = rng.randrange(KEYS)
    if load == "c":
        keys = rng.sample(range(KEYS), 10)
        return b"get " + b" ".join(b"bench:%d" % j for j in keys) + b"\r\n", b"END\r\n"
    if load == "f":
        if rng.random() < 0.1:
            return b"ms bench:%d %d F%d\r\n" % (k, VALUE, k) + value(k) + b"\r\n", b"HD\r\n"
        return b"mg bench:%d f v\r\n" % k, value(k) + b"\r\n"
    if rng.random() < 0.1:
        return b"set bench:%d %d 0 %d\r\n" % (k, k, VALUE) + value(k) + b"\r\n", b"STORED\r\n"
    return b"get bench:%d\r\n" % k, b"END\r\n"


def drive(conns, rounds, per_write, load, rng):
    bufs = [b""] * len(conns)
    for _ in range(rounds):
        ends = []
        for s in conns:
            reqs = [request(rng, load) for _ in range(per_write)]
            s.sendall(b"".join(r for r, _ in reqs))
            ends.append([e for _, e in reqs])
        for i, s in enumerate(conns):
            for end in ends[i]:
                bufs[i] = read_reply(s, bufs[i], end)


EVENTS = ["raw_syscalls:sys_enter", "context-switches"]


def count_syscalls(pid, tmp, run, requests, args):
    """Counts memroute's system calls and context switches while `run` drives the requests."""
    out = os.path.join(tmp, "perf.txt")
    perf = subprocess.Popen(["perf", "stat", "-x,", "-o", out, "-e", ",".join(EVENTS),
                             "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf attaches
    run()
    perf.send_signal(signal.SIGINT)
    perf.wait(30)
    counts = {}
    with open(out) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) > 2 and fields[2] in EVENTS and fields[0].isdigit():
                counts[fields[2]] = int(fields[0])
    if len(counts) != len(EVENTS):
        sys.exit(f"perf stat counted {counts} (is linux-perf installed?)")
    print(f"load {args.load}: {requests} requests: "
          + ", ".join(f"{n} {counts[n] / requests:.3f}/req" for n in EVENTS)
          + f" ({args.binary})")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary")
    p.add_argument("--load", default="a", choices="abcdf")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--syscalls", action="store_true",
                   help="count system calls per request with perf stat instead")
    args = p.parse_args()
    per_write = 16 if args.load == "b" else 1
    rounds = args.rounds or (50 if args.load == "b" else 800)
    started = []
    tmp = tempfile.mkdtemp(prefix="memroute-cg-")
    try:
        ports = [free_port(), free_port()]
        for port in ports:
            started.append(subprocess.Popen(
                ["memcached", "-u", "root", "-U", "0", "-l", "127.0.0.1", "-p", str(port),
                 "-t", "1", "-c", "4096", "-m", "256"]))
        for port in ports:
            wait_port(port)
        for port in ports:
            with socket.create_connection(("127.0.0.1", port)) as s:
                for start in range(0, KEYS, 500):
                    batch = b"".join(
                        b"set bench:%d %d 0 %d noreply\r\n" % (i, i, VALUE) + value(i) + b"\r\n"
                        for i in range(start, start + 500))
                    s.sendall(batch + b"mn\r\n")
                    read_reply(s, b"", b"MN\r\n")
        port = free_port()
        config = os.path.join(tmp, "memroute.toml")
        with open(config, "w") as f:
            f.write(f'[listen]\naddress = "127.0.0.1:{port}"\nmax_connections = 20000\n\n'
                    f'[pools.main]\nservers = ["127.0.0.1:{ports[0]}", "127.0.0.1:{ports[1]}"]\n'
                    'connections = 1\n\n[[routes]]\nprefix = ""\ntiers = ["main"]\n')
        out = os.path.join(tmp, "callgrind.out")
        tool = [] if args.syscalls else [
            "valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={out}"]
        memroute = subprocess.Popen(
            tool + [args.binary, "--config", config, "--threads", "1"],
            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        started.append(memroute)
        wait_port(port, 120)
        rng = random.Random(1)
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        idle = []
        if args.load == "d":
            idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(950)]
        for s in conns:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        drive(conns, 40, per_write, args.load, rng)
        requests = rounds * per_write * len(conns)
        if args.syscalls:
            count_syscalls(memroute.pid, tmp, lambda: drive(conns, rounds, per_write, args.load,
                                                            rng), requests, args)
            return
        subprocess.run(["callgrind_control", "-z", str(memroute.pid)], check=True,
                       stdout=subprocess.DEVNULL)
        drive(conns, rounds, per_write, args.load, rng)
        subprocess.run(["callgrind_control", "-d", str(memroute.pid)], check=True,
                       stdout=subprocess.DEVNULL)
        dumps = sorted(f for f in os.listdir(tmp) if f.startswith("callgrind.out"))
        total = None
        for name in dumps:
            with open(os.path.join(tmp, name)) as f:
                for line in f:
                    m = re.match(r"(?:totals|summary): (\d+)", line)
                    if m and name != "callgrind.out":
                        total = int(m.group(1))
        if total is None:
            sys.exit(f"no callgrind dump in {tmp}: {dumps}")
        print(f"load {args.load}: {total} instructions / {requests} requests = "
              f"{total / requests:,.0f} per request ({args.binary})")
        for s in conns + idle:
            s.close()
    finally:
        for proc in reversed(started):
            proc.send_signal(signal.SIGINT if proc is started[-1] else signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
