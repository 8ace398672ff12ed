#!/usr/bin/env python3
"""Record what a live memcached answers, byte for byte, to every case in MEMCACHED_NOTES.md.

Usage: python3 tests/memcached_probe.py            # starts its own memcached on a free port
       python3 tests/memcached_probe.py PORT       # probes a memcached already listening there

For each case it opens a fresh connection, writes the bytes (in one write unless the case
says otherwise), collects everything memcached answers until it has been silent for WAIT
seconds, records whether memcached closed the connection, and if not sends `version\r\n`
to see whether the connection is still usable (a missing answer means memcached is still
swallowing a data block). Keys are unique per case so cases do not influence each other.
"""
import socket
import subprocess
import sys
import time

WAIT = 0.3
MIB = 1024 * 1024


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def probe(port, data, chunks=None, wait=WAIT):
    s = socket.create_connection(("127.0.0.1", port))
    for c in chunks or [data]:
        s.sendall(c)
        if chunks:
            time.sleep(0.05)
    out, closed = b"", "no"
    s.settimeout(wait)
    try:
        while True:
            b = s.recv(1 << 20)
            if not b:
                closed = "yes (FIN)"
                break
            out += b
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = "yes (RST)"
    follow = None
    if closed == "no":
        s.sendall(b"version\r\n")
        follow = b""
        try:
            while not follow.endswith(b"\r\n"):
                b = s.recv(4096)
                if not b:
                    follow += b"<closed>"
                    break
                follow += b
        except socket.timeout:
            pass
    s.close()
    return out, closed, follow


def with_keys(data):
    for placeholder, key in KEYS.items():
        data = data.replace(placeholder, key)
    return data


def short(b, n=160):
    return repr(b) if len(b) <= n else repr(b[:n]) + "...(%d bytes)" % len(b)


K250 = b"a" * 250
K251 = b"b" * 251
# Where a case writes <K250> or <K251>, it sends a key of that many bytes instead.
KEYS = {b"<K250>": K250, b"<K251>": K251}
CASES = [
    # (name, bytes) or (name, bytes, {"chunks": [...], "wait": s})
    ("unknown command", b"foo\r\n"),
    ("unknown command with args", b"foo bar baz\r\n"),
    ("unknown command with noreply", b"foo noreply\r\n"),
    ("uppercase command", b"GET k\r\n"),
    ("empty line", b"\r\n"),
    ("bare LF empty line", b"\n"),
    ("spaces only", b"   \r\n"),
    ("CR CR LF", b"\r\r\n"),
    ("get without key", b"get\r\n"),
    ("get with only a space", b"get \r\n"),
    ("gets without key", b"gets\r\n"),
    ("gat without anything", b"gat\r\n"),
    ("gats without anything", b"gats\r\n"),
    ("gat exptime but no key", b"gat 0\r\n"),
    ("gats exptime but no key", b"gats 0\r\n"),
    ("gat key only (key taken as exptime)", b"gat k\r\n"),
    ("gat non-numeric exptime", b"gat abc k\r\n"),
    ("gats non-numeric exptime", b"gats abc k\r\n"),
    ("set 0 args", b"set\r\n"),
    ("set key only", b"set k\r\n"),
    ("set 3 args", b"set k 0 0\r\n"),
    ("append 3 args + data", b"append k 0 0\r\nx\r\n"),
    ("set noreply + extra token", b"set k1 0 0 1 noreply extra\r\nx\r\n"),
    ("replace noreply + extra token", b"replace k 0 0 1 noreply x\r\nx\r\n"),
    ("set 30 extra tokens", b"set k 0 0 1 noreply " + b" ".join([b"a"] * 30) + b"\r\nx\r\n"),
    ("set 6th token not noreply", b"set k2 0 0 1 foo\r\nx\r\n"),
    ("set NOREPLY uppercase", b"set k3 0 0 1 NOREPLY\r\nx\r\n"),
    ("set flags non-numeric", b"set k abc 0 1\r\nx\r\n"),
    ("set flags non-numeric noreply", b"set k abc 0 1 noreply\r\nx\r\n"),
    ("set flags negative", b"set k -1 0 1\r\nx\r\n"),
    ("set flags 1.5", b"set k 1.5 0 1\r\nx\r\n"),
    ("set flags 2^32-1", b"set f1 4294967295 0 1\r\nx\r\nget f1\r\n"),
    ("set flags 2^32+5 (truncated)", b"set f2 4294967301 0 1\r\nx\r\nget f2\r\n"),
    ("set flags 2^64", b"set f3 18446744073709551616 0 1\r\nx\r\n"),
    ("prepend flags non-numeric", b"prepend k x 0 1\r\nx\r\n"),
    ("set exptime non-numeric", b"set k 0 abc 1\r\nx\r\n"),
    ("add exptime non-numeric", b"add k 0 x 1\r\nx\r\n"),
    ("set exptime 1.5", b"set k 0 1.5 1\r\nx\r\n"),
    ("set exptime negative", b"set e1 0 -1 1\r\nx\r\nget e1\r\n"),
    ("set exptime 99999999999 (truncated)", b"set e2 0 99999999999 1\r\nx\r\nget e2\r\n"),
    ("set bytes non-numeric", b"set k 0 0 abc\r\nx\r\n"),
    ("set bytes 1x", b"set k 0 0 1x\r\nx\r\n"),
    ("set bytes +1", b"set b1 0 0 +1\r\nx\r\n"),
    ("set bytes 01", b"set b2 0 0 01\r\nx\r\n"),
    ("set bytes negative", b"set k 0 0 -1\r\nx\r\n"),
    ("set bytes negative noreply", b"set k 0 0 -1 noreply\r\nx\r\n"),
    ("set bytes 2147483645 (header only)", b"set k 0 0 2147483645\r\n"),
    ("set bytes 2147483646 (header only)", b"set k 0 0 2147483646\r\n"),
    ("set bytes 2147483647 + data", b"set k 0 0 2147483647\r\nx\r\n"),
    ("set bytes 2147483648 (header only)", b"set k 0 0 2147483648\r\n"),
    ("set bytes 2147483648 + data", b"set k 0 0 2147483648\r\nx\r\n"),
    ("set bytes 2147483648 noreply", b"set b3 0 0 2147483648 noreply\r\nget b3\r\n"),
    ("set bytes 4294967297 (truncated to 1)", b"set b4 0 0 4294967297\r\nx\r\nget b4\r\n"),
    ("set bytes 99999999999 (header only)", b"set k 0 0 99999999999\r\n"),
    ("set bytes 99999999999 + data", b"set k 0 0 99999999999\r\nx\r\n"),
    ("set bytes 2^64", b"set k 0 0 18446744073709551616\r\n"),
    ("cas without unique", b"cas k 0 0 1\r\nx\r\n"),
    ("cas 3 args", b"cas k 0 0\r\n"),
    ("cas unique non-numeric", b"cas k 0 0 1 abc\r\nx\r\n"),
    ("cas unique negative", b"cas k 0 0 1 -1\r\nx\r\n"),
    ("cas unique 2^64", b"cas k 0 0 1 18446744073709551616\r\nx\r\n"),
    ("cas 7th token not noreply", b"cas c1 0 0 1 1 foo\r\nx\r\n"),
    ("cas noreply + extra", b"cas k 0 0 1 1 noreply x\r\nx\r\n"),
    ("incr without delta", b"incr k\r\n"),
    ("decr without delta", b"decr k\r\n"),
    ("incr non-numeric delta", b"incr k abc\r\n"),
    ("decr non-numeric delta", b"decr k abc\r\n"),
    ("incr non-numeric delta noreply", b"incr k abc noreply\r\n"),
    ("incr negative delta", b"incr k -1\r\n"),
    ("incr delta 1.5", b"incr k 1.5\r\n"),
    ("incr delta 0x10", b"incr k 0x10\r\n"),
    ("incr delta 2^64", b"incr k 18446744073709551616\r\n"),
    ("incr 3rd token not noreply", b"incr i0 1 foo\r\n"),
    ("incr noreply + extra", b"incr k 1 noreply x\r\n"),
    ("decr 3 extra", b"decr k 1 2 3\r\n"),
    ("incr non-numeric value", b"set i1 0 0 3\r\nabc\r\nincr i1 1\r\n"),
    ("decr non-numeric value", b"set i2 0 0 3\r\nabc\r\ndecr i2 1\r\n"),
    ("incr value -5", b"set i3 0 0 2\r\n-5\r\nincr i3 1\r\n"),
    ("incr value ' 5'", b"set i4 0 0 2\r\n 5\r\nincr i4 1\r\n"),
    ("incr value '+5'", b"set i5 0 0 2\r\n+5\r\nincr i5 1\r\n"),
    ("incr value '12 '", b"set i6 0 0 3\r\n12 \r\nincr i6 1\r\n"),
    ("incr value '5x'", b"set i7 0 0 2\r\n5x\r\nincr i7 1\r\n"),
    ("incr value empty", b"set i8 0 0 0\r\n\r\nincr i8 1\r\n"),
    ("incr value 21 digits", b"set i9 0 0 21\r\n123456789012345678901\r\nincr i9 1\r\n"),
    ("incr value 2^64", b"set ia 0 0 20\r\n18446744073709551616\r\nincr ia 1\r\n"),
    ("incr 99 -> 100 grows", b"set ib 0 0 2\r\n99\r\nincr ib 1\r\nget ib\r\n"),
    ("decr 100 -> 99 pads", b"set ic 0 0 3\r\n100\r\ndecr ic 1\r\nget ic\r\n"),
    ("decr below zero", b"set id 0 0 1\r\n5\r\ndecr id 10\r\nget id\r\n"),
    ("incr wraps at 2^64", b"set ie 0 0 20\r\n18446744073709551615\r\nincr ie 2\r\nget ie\r\n"),
    ("incr 2^63-1 + 1", b"set if 0 0 19\r\n9223372036854775807\r\nincr if 1\r\n"),
    ("incr delta 2^63", b"set ig 0 0 1\r\n1\r\nincr ig 9223372036854775808\r\n"),
    ("incr missing", b"incr nosuch 1\r\n"),
    ("delete without key", b"delete\r\n"),
    ("delete k 0", b"delete k 0\r\n"),
    ("delete k 5", b"delete k 5\r\n"),
    ("delete k 00", b"delete k 00\r\n"),
    ("delete k foo", b"delete k foo\r\n"),
    ("delete k 0 foo", b"delete k 0 foo\r\n"),
    ("delete k 5 noreply", b"delete k 5 noreply\r\n"),
    ("delete k 0 noreply", b"delete k 0 noreply\r\n"),
    ("delete k 0 noreply x", b"delete k 0 noreply x\r\n"),
    ("touch without exptime", b"touch k\r\n"),
    ("touch non-numeric exptime", b"touch k abc\r\n"),
    ("touch non-numeric exptime noreply", b"touch k abc noreply\r\n"),
    ("touch 3rd token not noreply", b"touch k 0 foo\r\n"),
    ("touch noreply + extra", b"touch k 1 noreply x\r\n"),
    ("verbosity without level", b"verbosity\r\n"),
    ("verbosity 1", b"verbosity 1\r\n"),
    ("verbosity abc", b"verbosity abc\r\n"),
    ("verbosity -1", b"verbosity -1\r\n"),
    ("verbosity 1 noreply", b"verbosity 1 noreply\r\n"),
    ("verbosity 1 noreply x", b"verbosity 1 noreply x\r\n"),
    ("verbosity 1 2 3", b"verbosity 1 2 3\r\n"),
    ("version foo", b"version foo\r\n"),
    ("version noreply", b"version noreply\r\n"),
    ("flush_all abc", b"flush_all abc\r\n"),
    ("flush_all 0 foo", b"flush_all 0 foo\r\n"),
    ("stats nonsense", b"stats nonsense\r\n"),
    ("shutdown", b"shutdown\r\n"),
    ("quit", b"quit\r\n"),
    ("quit foo", b"quit foo\r\n"),
    ("get key of 250 bytes", b"get <K250>\r\n"),
    ("get key of 251 bytes", b"get <K251>\r\n"),
    ("get 251 then pipelined get", b"set g1 0 0 1\r\n1\r\nget <K251>\r\nget g1\r\n"),
    ("multi-get with a 251-byte key in the middle", b"set g2 0 0 1\r\n1\r\nget g2 <K251> g2\r\n"),
    ("gets key of 251 bytes", b"gets <K251>\r\n"),
    ("gat with a 251-byte key", b"gat 0 g2 <K251>\r\n"),
    ("set key of 250 bytes", b"set <K250> 0 0 1\r\nx\r\nget <K250>\r\n"),
    ("set key of 251 bytes", b"set <K251> 0 0 1\r\nx\r\n"),
    ("set key of 251 bytes noreply", b"set <K251> 0 0 1 noreply\r\nx\r\n"),
    ("set key of 251 bytes, data is a command", b"set g3 0 0 1\r\n1\r\nset <K251> 0 0 9\r\ndelete g3\r\nget g3\r\n"),
    ("refused get loses the STORED before it", b"set r1 0 0 1\r\nx\r\nget <K251>\r\n"),
    ("refused get loses the ERRORs before it", b"foo\r\nbar\r\nget <K251>\r\n"),
    ("refused get loses STORED and VERSION", b"set r2 0 0 1\r\nx\r\nversion\r\nget <K251>\r\n"),
    ("refused get after a get keeps replies", b"set r3 0 0 1\r\nx\r\nget r3\r\nget <K251>\r\n"),
    ("refused get after get, set", b"get r3\r\nset r3 0 0 1\r\nx\r\nget <K251>\r\n"),
    ("refused delete keeps the STORED before it", b"set r4 0 0 1\r\nx\r\ndelete <K251>\r\n"),
    ("refused get in a later write", b"", {"chunks": [b"set r5 0 0 1\r\nx\r\n", b"get <K251>\r\n"]}),
    ("cas key of 251 bytes", b"cas <K251> 0 0 1 1\r\nx\r\n"),
    ("delete key of 251 bytes", b"delete <K251>\r\n"),
    ("incr key of 251 bytes", b"incr <K251> 1\r\n"),
    ("touch key of 251 bytes", b"touch <K251> 0\r\n"),
    ("key with control bytes", b"set a\x01\x7fb 0 0 1\r\nx\r\nget a\x01\x7fb\r\n"),
    ("key with a tab", b"set a\tb 0 0 1\r\nx\r\nget a\tb\r\n"),
    ("tab as separator", b"get\tk\r\n"),
    ("key with a CR", b"set a\rb 0 0 1\r\nx\r\nget a\rb\r\n"),
    ("key with a NUL", b"set a\x00b 0 0 1\r\nx\r\nget a\x00b\r\n"),
    ("key with bytes >= 0x80", b"set \xc3\xa9\xff 0 0 1\r\nx\r\nget \xc3\xa9\xff\r\n"),
    ("several spaces between tokens", b"set  ms   0  0   1\r\nx\r\nget   ms  \r\n"),
    ("leading space", b"set ls 0 0 1\r\nx\r\n get ls\r\n"),
    ("LF-only line endings", b"set lf 0 0 1\nx\r\nget lf\n"),
    ("bad chunk: 2 extra bytes", b"set c2 0 0 1\r\nxyz\r\nget c2\r\n"),
    ("bad chunk: exactly bytes+2, nothing after", b"set c3 0 0 1\r\nxyz"),
    ("bad chunk: bytes+1 then CRLF", b"set c4 0 0 1\r\nxy\r\n"),
    ("bad chunk: data runs into next command", b"set c5 0 0 1\r\nxyget c5\r\n"),
    ("bad chunk: LF-only terminator", b"set c6 0 0 1\r\nx\nget c6\r\n"),
    ("bad chunk: CR + other byte", b"set c7 0 0 1\r\nx\rXget c7\r\n"),
    ("bad chunk: two other bytes", b"set c8 0 0 1\r\nxabget c8\r\n"),
    ("bad chunk: short data then CRLF", b"set c9 0 0 3\r\nx\r\nget c9\r\n"),
    ("bad chunk noreply", b"set ca 0 0 1 noreply\r\nxyz\r\nget ca\r\n"),
    ("bad chunk keeps the old value", b"set cb 0 0 1\r\na\r\nset cb 0 0 1\r\nxyz\r\nget cb\r\n"),
    ("bad chunk: data sent in pieces", b"", {"chunks": [b"set cc 0 0 1\r\n", b"x", b"yz\r\n", b"get cc\r\n"]}),
    ("bad chunk on cas", b"cas k 0 0 1 1\r\nxyz\r\n"),
    ("bad chunk on append", b"append k 0 0 1\r\nxyz\r\n"),
    ("value of 1 MiB + 1", b"set t1 0 0 %d\r\n" % (MIB + 1) + b"a" * (MIB + 1) + b"\r\nget t1\r\n", {"wait": 1}),
    ("value of 1 MiB + 1, header only", b"set t2 0 0 %d\r\n" % (MIB + 1)),
    ("value of 1 MiB + 1 noreply", b"set t3 0 0 %d noreply\r\n" % (MIB + 1) + b"a" * (MIB + 1) + b"\r\nget t3\r\n", {"wait": 1}),
    ("value of 1 MiB + 1, no CRLF after data", b"set t4 0 0 %d\r\n" % (MIB + 1) + b"a" * (MIB + 1) + b"XXget t4\r\n", {"wait": 1}),
    ("value of exactly 1 MiB", b"set t5 0 0 %d\r\n" % MIB + b"a" * MIB + b"\r\n", {"wait": 1}),
    ("value of 1 MiB - 60, key of 1 byte", b"set t 0 0 %d\r\n" % (MIB - 60) + b"a" * (MIB - 60) + b"\r\n", {"wait": 1}),
    ("value of 1 MiB - 59, key of 1 byte", b"set t 0 0 %d\r\n" % (MIB - 59) + b"a" * (MIB - 59) + b"\r\n", {"wait": 1}),
    ("value of 1 MiB - 60, key of 1 byte, flags 5", b"set t 5 0 %d\r\n" % (MIB - 60) + b"a" * (MIB - 60) + b"\r\n", {"wait": 1}),
    ("too large set removes the old value", b"set t6 0 0 1\r\nx\r\nset t6 0 0 %d\r\n" % (MIB + 1) + b"a" * (MIB + 1) + b"\r\nget t6\r\n", {"wait": 1}),
    ("too large set noreply removes the old value", b"set t7 0 0 1\r\nx\r\nset t7 0 0 %d noreply\r\n" % (MIB + 1) + b"a" * (MIB + 1) + b"\r\nget t7\r\n", {"wait": 1}),
    ("too large add keeps the old value", b"set t8 0 0 1\r\nx\r\nadd t8 0 0 %d\r\n" % (MIB + 1) + b"a" * (MIB + 1) + b"\r\nget t8\r\n", {"wait": 1}),
    ("too large replace keeps the old value", b"set t9 0 0 1\r\nx\r\nreplace t9 0 0 %d\r\n" % (MIB + 1) + b"a" * (MIB + 1) + b"\r\nget t9\r\n", {"wait": 1}),
    ("too large append keeps the old value", b"set ta 0 0 1\r\nx\r\nappend ta 0 0 %d\r\n" % (MIB + 1) + b"a" * (MIB + 1) + b"\r\nget ta\r\n", {"wait": 1}),
    ("too large cas keeps the old value", b"set tb 0 0 1\r\nx\r\ncas tb 0 0 %d 1\r\n" % (MIB + 1) + b"a" * (MIB + 1) + b"\r\nget tb\r\n", {"wait": 1}),
    ("2047 bytes without newline", b"x" * 2047),
    ("2048 bytes without newline", b"x" * 2048),
    ("2049 bytes without newline", b"x" * 2049),
    ("3000 bytes without newline, in 3 writes", b"", {"chunks": [b"x" * 1000] * 3}),
    ("3000 bytes + CRLF in one write", b"x" * 3000 + b"\r\n"),
    ("3000 bytes + CRLF in two writes", b"", {"chunks": [b"x" * 1500, b"x" * 1500 + b"\r\n"]}),
    ("delete line of 3000 bytes without newline", b"delete " + b"k" * 3000),
    ("get line of 3000 bytes without newline", b"get " + b"k" * 3000),
    ("gets line of 3000 bytes without newline", b"gets " + b"k" * 3000),
    ("gat line of 3000 bytes without newline", b"gat 0 " + b"k" * 3000),
    ("set line of 3016 bytes (trailing spaces) with CRLF", b"set sp 0 0 1" + b" " * 3000 + b"\r\nx\r\n"),
    ("get of 600 keys (5.4 KB line)", b"get " + b" ".join(b"key%05d" % i for i in range(600)) + b"\r\n"),
    ("get of 12000 keys (108 KB line)", b"get " + b" ".join(b"key%05d" % i for i in range(12000)) + b"\r\n", {"wait": 1}),
]


def main():
    proc = None
    if len(sys.argv) > 1:
        port = int(sys.argv[1])
    else:
        port = free_port()
        proc = subprocess.Popen(["memcached", "-u", "root", "-U", "0", "-l", "127.0.0.1",
                                 "-p", str(port), "-m", "64", "-t", "1"])
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
    try:
        print("memcached:", probe(port, b"version\r\n")[0])
        for case in CASES:
            name, data = case[0], with_keys(case[1])
            opts = case[2] if len(case) > 2 else {}
            if "chunks" in opts:
                opts = dict(opts, chunks=[with_keys(c) for c in opts["chunks"]])
            out, closed, follow = probe(port, data, opts.get("chunks"), opts.get("wait", WAIT))
            sent = data if data else b"".join(opts["chunks"])
            print("== %s\n   sent:   %s%s\n   answer: %s\n   closed: %s\n   then version: %s" % (
                name, short(sent), "  (in %d writes)" % len(opts["chunks"]) if "chunks" in opts else "",
                short(out, 400), closed, "-" if follow is None else short(follow)))
    finally:
        if proc:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
