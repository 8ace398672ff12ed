"""Drives RevenueCat's meta-memcache (a meta-protocol-only client from PyPI) against one
host:port: get/set/cas/delete/counters/stale-while-revalidate, a non-ASCII key (sent as a
base64 `b` key) and a multi-get. Exits non-zero with a message on the first surprise; prints
`ok <checks>` at the end. Used by tests/meta_client.rs."""

import sys

from meta_memcache import (
    CacheClient,
    Key,
    RecachePolicy,
    ServerAddress,
    StalePolicy,
    connection_pool_factory_builder,
)

checks = 0


def check(what, got, want):
    global checks
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")
    checks += 1


host, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = CacheClient.cache_client_from_servers(
    servers=[ServerAddress(host=host, port=port)],
    connection_pool_factory_fn=connection_pool_factory_builder(recv_timeout=5),
)

k = f"{tag}:plain"
check("miss", client.get(k), None)
check("set", client.set(k, "hello", ttl=100), True)
check("get", client.get(k), "hello")
check("set bytes", client.set(k, b"\x00\r\nbytes", ttl=100), True)
check("get bytes", client.get(k), b"\x00\r\nbytes")
check("set object", client.set(k, {"a": [1, 2]}, ttl=100), True)
check("get object", client.get(k), {"a": [1, 2]})

# cas: a stale token fails, the fresh one wins.
value, cas = client.get_cas(k)
check("get_cas value", value, {"a": [1, 2]})
check("cas ok", client.set(k, "v2", ttl=100, cas_token=cas), True)
check("cas stale", client.set(k, "v3", ttl=100, cas_token=cas), False)
check("after cas", client.get(k), "v2")

# add mode via refill, touch, delete.
check("refill existing", client.refill(k, "other", ttl=100), False)
check("touch", client.touch(k, ttl=50), True)
check("delete", client.delete(k), True)
check("delete again", client.delete(k), False)
check("invalidate missing", client.invalidate(k), True)
check("refill missing", client.refill(k, "filled", ttl=100), True)
check("get filled", client.get(k), "filled")

# counters
c = f"{tag}:counter"
check("delta missing", client.delta(c, 1), False)
check("delta_initialize", client.delta_initialize(c, 1, initial_value=10, initial_ttl=100), True)
check("delta_and_get", client.delta_and_get(c, 5), 15)
check("decrement", client.delta_and_get(c, -3), 12)
check("counter as get", client.get(c), "12")

# stale-while-revalidate: delete marks stale; the first reader wins a miss and recomputes,
# the others keep reading the stale value until the winner stores a fresh one.
s = f"{tag}:stale"
policy = StalePolicy(mark_stale_on_deletion_ttl=30)
check("set stale key", client.set(s, "old", ttl=100), True)
check("mark stale", client.delete(s, stale_policy=policy), True)
check("winner misses", client.get(s), None)
check("loser reads stale", client.get(s), "old")
check("winner refreshes", client.set(s, "new", ttl=100, stale_policy=policy), True)
check("fresh value", client.get(s), "new")

# recache: with little TTL left, one client wins a miss to recompute early.
r = f"{tag}:recache"
check("set short", client.set(r, "soon", ttl=10), True)
check("recache winner", client.get(r, recache_policy=RecachePolicy(ttl=30)), None)
check("recache loser", client.get(r, recache_policy=RecachePolicy(ttl=30)), "soon")

# a non-ASCII key travels as base64 (`b`).
u = Key(f"{tag}:ключ-🔑")
check("set unicode", client.set(u, "unicode", ttl=100), True)
check("get unicode", client.get(u), "unicode")

keys = [f"{tag}:m{i}" for i in range(10)]
for i, key in enumerate(keys):
    client.set(key, i, ttl=100)
got = client.multi_get(keys + [f"{tag}:missing"])
check("multi_get", [got[Key(key)] for key in keys], list(range(10)))
check("multi_get miss", got[Key(f"{tag}:missing")], None)

print(f"ok {checks}")
