#!/usr/bin/env python3
"""Read key placements off Debian's nutcracker (twemproxy 0.5) and write a golden table.

Usage: python3 nutcracker_placements.py [OUT]   (default OUT: $RINGCHECK_DIR/placement.txt)

Starts memcached backends and one nutcracker on 127.0.0.1, sets every key through every pool,
then asks each backend directly which keys it holds. Only processes started here are stopped.
"""
import hashlib, os, random, signal, socket, subprocess, sys, time

HASHES = ["one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64", "fnv1a_64",
          "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins"]
WORK = os.environ.get("RINGCHECK_DIR", "/tmp/ringcheck/run")  # pidfiles, config, log
os.makedirs(WORK, exist_ok=True)
started = []  # Popen objects / pids we own


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def start_memcached(port):
    pidfile = f"{WORK}/mc{port}.pid"
    subprocess.check_call(["memcached", "-u", "root", "-U", "0", "-l", "127.0.0.1", "-p", str(port),
                           "-m", "8", "-t", "1", "-c", "1024", "-d", "-P", pidfile])
    for _ in range(100):
        if os.path.exists(pidfile) and os.path.getsize(pidfile) > 0:
            break
        time.sleep(0.05)
    started.append(int(open(pidfile).read().strip()))


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port)); self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d: raise EOFError
            self.buf += d
        l, self.buf = self.buf.split(b"\r\n", 1); return l

    def cmd(self, data):
        self.s.sendall(data); return self.line()

    def get(self, key):
        self.s.sendall(b"get " + key + b"\r\n"); l = self.line()
        if l == b"END": return None
        assert l.startswith(b"VALUE "), l
        v = self.line(); assert self.line() == b"END"; return v


# ---- keys: the DESIGN table keys, readable keys of many lengths, keys with bytes >= 0x80
random.seed(20240501)
keys = [b"foo", b"bar", b"baz", b"user:1", b"user:42", b"session:abc", b"key:0", b"key:1"]
alnum = b"abcdefghijklmnopqrstuvwxyz0123456789:_-."
for n in range(1, 33):
    keys.append(bytes(random.choice(alnum) for _ in range(n)))
for n in [1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 15, 17, 23]:
    keys.append(bytes(random.choice(alnum + bytes(range(0x80, 0x100))) for _ in range(n - 1)) + bytes([random.randrange(0x80, 0x100)]))
for n in [3, 7, 11, 19]:  # a high byte in hsieh's 3-byte tail position (signed char << 18)
    k = bytearray(random.choice(alnum) for _ in range(n)); k[-1] = 0xe9; keys.append(bytes(k))
keys += [b"obj:%d" % i for i in range(12)]
keys += [b"user{42}:name", b"user{42}:mail", b"{}plain", b"a{b", b"x{y}z{w}", b"{42}"]
# keys where 25 equal servers with f32 points (156) and f64 points (160) disagree
def ketama_py(names, ppd):
    pts = []
    for si, nm in enumerate(names):
        for i in range(ppd):
            d = hashlib.md5(f"{nm}-{i}".encode()).digest()
            pts += [(int.from_bytes(d[4*a:4*a+4], "little"), si) for a in range(4)]
    pts.sort(key=lambda p: p[0]); return pts
def fnv1a(k):
    h = 0x84222325
    for b in k:
        h ^= (b - 256 if b >= 128 else b) & 0xffffffff; h = (h * 0x1b3) & 0xffffffff
    return h
def disp(pts, h):
    import bisect
    i = bisect.bisect_left(pts, (h, -1)); return pts[i % len(pts)][1]
n25 = [f"m{i}" for i in range(25)]
r156, r160 = ketama_py(n25, 39), ketama_py(n25, 40)
i = 0; extra = []
while len(extra) < 8:
    k = b"k25:%d" % i; i += 1
    if disp(r156, fnv1a(k)) != disp(r160, fnv1a(k)): extra.append(k)
keys += extra
assert len(set(keys)) == len(keys)

# ---- backends
ports = [free_port() for _ in range(3)]
ports25 = [free_port() for _ in range(25)]
dead_port = free_port()  # nothing listens here
for p in ports + ports25: start_memcached(p)
for p in ports + ports25: wait_port(p)

pools = []  # (name, dist, hash, tag, [(name, weight, port)], eject)
def addr(p): return f"127.0.0.1:{p}"
for h in HASHES:
    plain = [(addr(p), 1, p) for p in ports]
    pools.append((f"k3_{h}", "ketama", h, None, plain, False))
    pools.append((f"m3_{h}", "modula", h, None, plain, False))
    pools.append((f"kw_{h}", "ketama", h, None, [("server1", 1, ports[0]), ("server2", 2, ports[1]), ("server3", 3, ports[2])], False))
    # names whose length order differs from byte order; weights make the order visible
    pools.append((f"mw_{h}", "modula", h, None, [("cache-10", 3, ports[0]), ("cache-9", 1, ports[1]), ("cache-100", 2, ports[2])], False))
pools.append(("design_row1", "ketama", "fnv1a_64", None, [(f"127.0.0.1:{11212+i}", 1, ports[i]) for i in range(3)], False))
pools.append(("design_row2", "ketama", "md5", None, [(f"10.0.0.{1+i}", 1, ports[i]) for i in range(3)], False))
pools.append(("tag_ketama", "ketama", "fnv1a_64", "{}", [(addr(p), 1, p) for p in ports], False))
pools.append(("k25_fnv1a_64", "ketama", "fnv1a_64", None, [(f"m{i}", 1, p) for i, p in enumerate(ports25)], False))
pools.append(("k25_md5", "ketama", "md5", None, [(f"m{i}", 1, p) for i, p in enumerate(ports25)], False))
dead = [("server1", 1, ports[0]), ("server2", 2, ports[1]), ("server3", 3, ports[2]), ("server4", 4, dead_port)]
pools.append(("dead_ketama", "ketama", "fnv1a_64", None, dead, True))
pools.append(("dead_modula", "modula", "fnv1a_64", None, dead, True))

listen = {p[0]: free_port() for p in pools}
with open(f"{WORK}/nutcracker.yml", "w") as f:
    for name, dist, h, tag, servers, eject in pools:
        f.write(f"{name}:\n  listen: 127.0.0.1:{listen[name]}\n  hash: {h}\n  distribution: {dist}\n")
        f.write("  timeout: 2000\n  server_connections: 1\n")
        if tag: f.write(f'  hash_tag: "{tag}"\n')
        if eject: f.write("  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 600000\n")
        f.write("  servers:\n")
        for sname, w, p in servers:
            f.write(f"   - 127.0.0.1:{p}:{w}" + ("" if sname == addr(p) else f" {sname}") + "\n")
stats_port = free_port()
nut = subprocess.Popen(["nutcracker", "-c", f"{WORK}/nutcracker.yml", "-s", str(stats_port),
                        "-a", "127.0.0.1", "-o", f"{WORK}/nutcracker.log", "-v", "6"])
results = {}
try:
    for name in listen: wait_port(listen[name])
    backend = {p: Conn(p) for p in ports + ports25}
    for pi, (name, dist, h, tag, servers, eject) in enumerate(pools):
        c = Conn(listen[name]); val = b"p%d" % pi
        if eject:  # let nutcracker eject the dead server: keys aimed at it fail until then
            for k in keys:
                r = c.cmd(b"set " + k + b" 0 0 %d\r\n" % len(val) + val + b"\r\n")
                if r != b"STORED": print(name, "warm-up", k, r, file=sys.stderr)
            for p in ports:
                for k in keys:
                    backend[p].cmd(b"delete " + k + b"\r\n")
        for k in keys:
            r = c.cmd(b"set " + k + b" 0 0 %d\r\n" % len(val) + val + b"\r\n")
            assert r == b"STORED", (name, k, r)
        row = []
        for k in keys:
            holders = [si for si, (_, _, p) in enumerate(servers)
                       if p != dead_port and backend[p].get(k) == val]
            assert len(holders) == 1 or len(set(servers[s][2] for s in holders)) == 1, (name, k, holders)
            row.append(holders[0])
        for p in set(s[2] for s in servers if s[2] != dead_port):
            for k in keys: backend[p].cmd(b"delete " + k + b"\r\n")
        results[name] = row
finally:
    nut.send_signal(signal.SIGTERM); nut.wait()
    for pid in started: os.kill(pid, signal.SIGTERM)

def esc(k):
    return "".join(chr(b) if 0x21 <= b < 0x7f and b != 0x5c else "\\x%02x" % b for b in k)

out = sys.argv[1] if len(sys.argv) > 1 else f"{WORK}/placement.txt"
with open(out, "w") as f:
    f.write("# Key placements read off Debian nutcracker 0.5.0+dfsg-2 (twemproxy 0.5); see README.md.\n")
    f.write("# pool <label> <distribution> <hash> <hash_tag or -> <name>=<weight>[=dead] ...\n")
    f.write("# then one line per key: <key, \\xNN-escaped> <server index per pool, in pool order>\n")
    for name, dist, h, tag, servers, eject in pools:
        ss = " ".join(f"{s}={w}" + ("=dead" if p == dead_port else "") for s, w, p in servers)
        f.write(f"pool {name} {dist} {h} {tag or '-'} {ss}\n")
    for ki, k in enumerate(keys):
        f.write(esc(k) + " " + " ".join(str(results[p[0]][ki]) for p in pools) + "\n")
print("pools", len(pools), "keys", len(keys), "->", out)
