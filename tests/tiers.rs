//! Fallback tiers, one test per row of DESIGN §4's table, plus the stale-data guarantees of its
//! acceptance story (an old value never comes back, a deleted key stays deleted, a counter keeps
//! counting). Pool `new` (two memcacheds) is tier 0, pool `old` (one memcached) is tier 1.
//!
//! Every check is made twice: through memroute, and directly on the backends with exact bytes
//! (`mg <key> v f t` shows value, flags and remaining TTL).

mod common;
mod tiers_support;

use common::{Memcached, Memroute, counter, poll, poll_for, storage, value_reply};
use tiers_support::{
    Migration, TIMEOUT, assert_ttl_close, get, hit, item, read_cas_hit, read_retrieval, unix_now,
};

const DAY: i64 = 24 * 3600;

// ---- get -----------------------------------------------------------------------------------

#[test]
fn get_falls_through_to_old_and_copies_with_flags_and_remaining_ttl() {
    let (m, mut c) = Migration::holding_old("k1", 42, 1000, b"old-value");
    assert_eq!(get(&mut c, "k1"), hit("k1", 42, b"old-value"));

    // The copy is made in the background; old keeps its item (a read changes nothing there).
    let copy = poll("k1 copied into new", || m.in_new("k1"));
    let original = m.in_old("k1").expect("old still has k1");
    assert_eq!((copy.flags, &copy.value[..]), (42, &b"old-value"[..]));
    assert_eq!(
        (original.flags, &original.value[..]),
        (42, &b"old-value"[..])
    );
    assert!(copy.ttl > 0 && copy.ttl <= 1000, "{copy:?}");
    assert_ttl_close(copy.ttl, original.ttl);
    // Served from tier 0 now, same bytes.
    assert_eq!(get(&mut c, "k1"), hit("k1", 42, b"old-value"));
}

#[test]
fn get_fallback_copy_of_item_without_expiry_never_expires() {
    let (m, mut c) = Migration::holding_old("forever", 7, 0, b"v");
    assert_eq!(get(&mut c, "forever"), hit("forever", 7, b"v"));
    let copy = poll("copied into new", || m.in_new("forever"));
    assert_eq!(copy, item(7, -1, b"v"));
    assert_eq!(m.in_old("forever"), Some(item(7, -1, b"v")));
}

#[test]
fn get_fallback_copy_of_item_with_ttl_over_30_days_keeps_its_remaining_ttl() {
    let m = Migration::start();
    // More than 30 days must be written as an absolute Unix time.
    m.put_old("long", 1, unix_now() + 40 * DAY, b"lived");
    let original = m.in_old("long").expect("in old");
    assert!(original.ttl > 30 * DAY, "{original:?}");
    let mut c = m.client();
    assert_eq!(get(&mut c, "long"), hit("long", 1, b"lived"));
    let copy = poll("copied into new", || m.in_new("long"));
    assert_eq!((copy.flags, &copy.value[..]), (1, &b"lived"[..]));
    // Sent as a relative 3,456,000 s memcached would have read as a date in 1970 and expired
    // the copy at once; sent as an absolute time it keeps the original's remaining life.
    assert_ttl_close(copy.ttl, m.in_old("long").unwrap().ttl);
}

#[test]
fn get_fallback_does_not_copy_when_warm_is_false() {
    let m = Migration::start_with("warm = false", false);
    m.put_old("cold", 0, 0, b"x");
    let mut c = m.client();
    assert_eq!(get(&mut c, "cold"), hit("cold", 0, b"x"));
    assert_eq!(poll_for(TIMEOUT, || m.in_new("cold")), None);
    assert_eq!(get(&mut c, "cold"), hit("cold", 0, b"x"));
}

#[test]
fn multi_get_fetches_missing_keys_from_old_with_one_request_per_server_and_tier() {
    // warm = false, so the only requests old sees are the lookups (no background copies).
    let m = Migration::start_with("warm = false", true);
    let mut c = m.client();
    let keys: Vec<String> = (0..20).map(|i| format!("mk{i}")).collect();
    // Even keys: written through memroute (tier 0) and then a stale value directly in old;
    // odd keys: only in old; "nokey0"/"nokey1": nowhere.
    for (i, k) in keys.iter().enumerate() {
        if i % 2 == 0 {
            c.roundtrip(
                &storage("set", k, i as u32, 0, format!("new{i}").as_bytes(), ""),
                b"STORED\r\n",
            );
        }
        m.put_old(k, 100 + i as u32, 0, format!("old{i}").as_bytes());
    }
    let holders: Vec<usize> = keys
        .iter()
        .step_by(2)
        .map(|k| m.new_holder(k).expect("even keys are in new"))
        .collect();
    assert!(
        holders.contains(&0) && holders.contains(&1),
        "the test needs keys on both new servers: {holders:?}"
    );

    let mut asked: Vec<String> = keys.clone();
    asked.insert(3, "nokey0".into());
    asked.push("nokey1".into());
    asked.push("mk1".into()); // a duplicate is answered twice, as memcached does
    let before = m.metrics();
    c.send(format!("get {}\r\n", asked.join(" ")).as_bytes());
    let mut expected = Vec::new();
    for k in &asked {
        let Some(i) = keys.iter().position(|x| x == k) else {
            continue;
        };
        expected.extend(if i % 2 == 0 {
            value_reply(k, i as u32, format!("new{i}").as_bytes())
        } else {
            value_reply(k, 100 + i as u32, format!("old{i}").as_bytes())
        });
    }
    expected.extend_from_slice(b"END\r\n");
    assert_eq!(
        String::from_utf8_lossy(&read_retrieval(&mut c)),
        String::from_utf8_lossy(&expected)
    );

    let after = m.metrics();
    let delta = |name: &str, labels: &[(&str, &str)]| {
        counter(&after, name, labels) - counter(&before, name, labels)
    };
    let requests = "memroute_backend_requests_total";
    // Each new server: the lookup, and one `get` of the tombstones of the keys it missed (sent
    // alongside the lookup in old; both servers miss some of these keys). Old: one lookup.
    for server in &m.new {
        let addr = server.addr();
        assert_eq!(
            delta(requests, &[("server", &addr)]),
            2.0,
            "lookup and tombstone check on {addr}"
        );
    }
    let addr = m.old.addr();
    assert_eq!(
        delta(requests, &[("server", &addr)]),
        1.0,
        "one request to {addr}"
    );
    let lookups = "memroute_tier_lookups_total";
    let old = |result| [("pool", "old"), ("tier", "1"), ("result", result)];
    // Tier 0 missed the 10 odd keys, the duplicate mk1 and the 2 keys that are nowhere.
    assert_eq!(delta(lookups, &old("hit")), 11.0);
    assert_eq!(delta(lookups, &old("miss")), 2.0);
    assert_eq!(delta(lookups, &old("error")), 0.0);
}

// ---- gets, gat, gats -----------------------------------------------------------------------

#[test]
fn gets_after_fallback_returns_tier0_cas_and_a_following_cas_succeeds() {
    let (m, mut c) = Migration::holding_old("g", 3, 1000, b"v1");
    c.send(b"gets g\r\n");
    let (flags, cas, value) = read_cas_hit(&mut c, "g");
    assert_eq!((flags, &value[..]), (3, &b"v1"[..]));
    // Copied before answering (not in the background), and the token is tier 0's.
    m.assert_tier0_cas("g", cas);
    assert_ttl_close(m.in_new("g").unwrap().ttl, m.in_old("g").unwrap().ttl);

    c.roundtrip(
        &storage("cas", "g", 4, 0, b"v2", &cas.to_string()),
        b"STORED\r\n",
    );
    assert_eq!(get(&mut c, "g"), hit("g", 4, b"v2"));
    assert_eq!(m.in_new("g"), Some(item(4, -1, b"v2")));
    // cas changed tier 0: the old value is deleted from old (lower_on_write = "delete").
    assert_eq!(m.in_old("g"), None);
}

#[test]
fn gat_after_fallback_sets_tier0_ttl_and_leaves_old_alone() {
    let (m, mut c) = Migration::holding_old("t", 5, 1000, b"val");
    c.roundtrip(b"gat 300 t\r\n", &hit("t", 5, b"val"));
    // gat copied t into tier 0 before answering.
    m.assert_in_new("t", 5, b"val", 300);
    assert_ttl_close(m.in_old("t").unwrap().ttl, 1000);
}

#[test]
fn gats_after_fallback_returns_tier0_cas_and_sets_tier0_ttl() {
    let (m, mut c) = Migration::holding_old("ts", 6, 0, b"abc");
    c.send(b"gats 200 ts\r\n");
    let (flags, cas, value) = read_cas_hit(&mut c, "ts");
    assert_eq!((flags, &value[..]), (6, &b"abc"[..]));
    m.assert_tier0_cas("ts", cas);
    assert_ttl_close(m.in_new("ts").unwrap().ttl, 200);
    c.roundtrip(
        &storage("cas", "ts", 6, 0, b"xyz", &cas.to_string()),
        b"STORED\r\n",
    );
    m.assert_tiers("ts", Some(item(6, -1, b"xyz")), None);
}

#[test]
fn multi_gets_mixes_tier0_hits_and_copied_lower_hits_all_with_tier0_cas() {
    let m = Migration::start();
    let mut c = m.client();
    c.roundtrip(&storage("set", "a0", 1, 0, b"new", ""), b"STORED\r\n");
    m.put_old("a1", 2, 0, b"old");
    c.send(b"gets a0 nothing a1\r\n");
    let mut got = Vec::new();
    for _ in 0..2 {
        let header = String::from_utf8(c.read_line()).unwrap();
        let f: Vec<String> = header.split_whitespace().map(String::from).collect();
        let len: usize = f[3].parse().unwrap();
        let mut v = c.read_exact_bytes(len + 2);
        v.truncate(len);
        got.push((f[1].clone(), f[2].clone(), f[4].parse::<u64>().unwrap(), v));
    }
    c.expect(b"END\r\n");
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("a0", "1"));
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), ("a1", "2"));
    assert_eq!((&got[0].3[..], &got[1].3[..]), (&b"new"[..], &b"old"[..]));
    for (key, _, cas, _) in &got {
        m.assert_tier0_cas(key, *cas);
    }
}

// ---- set, cas and lower_on_write -----------------------------------------------------------

#[test]
fn set_writes_tier0_and_deletes_the_key_from_old() {
    let (m, mut c) = Migration::holding_old("s", 1, 0, b"old");
    c.roundtrip(&storage("set", "s", 2, 100, b"new", ""), b"STORED\r\n");
    m.assert_in_new("s", 2, b"new", 100);
    assert_eq!(m.in_old("s"), None);
    assert_eq!(get(&mut c, "s"), hit("s", 2, b"new"));
}

#[test]
fn cas_writes_tier0_and_deletes_the_key_from_old() {
    let m = Migration::start();
    let mut c = m.client();
    c.roundtrip(&storage("set", "c", 0, 0, b"one", ""), b"STORED\r\n");
    // A stale copy in old (e.g. written by a client that bypasses memroute).
    m.put_old("c", 0, 0, b"stale");
    let cas = c.gets_cas("c");
    c.roundtrip(
        &storage("cas", "c", 0, 0, b"two", &cas.to_string()),
        b"STORED\r\n",
    );
    m.assert_tiers("c", Some(item(0, -1, b"two")), None);
    // A failed cas changes nothing anywhere.
    m.put_old("c", 0, 0, b"stale");
    c.roundtrip(
        &storage("cas", "c", 0, 0, b"three", &cas.to_string()),
        b"EXISTS\r\n",
    );
    m.assert_tiers("c", Some(item(0, -1, b"two")), Some(item(0, -1, b"stale")));
}

#[test]
fn lower_on_write_ignore_leaves_old_alone() {
    let m = Migration::start_with("lower_on_write = \"ignore\"", false);
    m.put_old("i", 1, 0, b"old");
    m.put_old("n", 0, 0, b"5");
    let mut c = m.client();
    c.roundtrip(&storage("set", "i", 2, 0, b"new", ""), b"STORED\r\n");
    m.assert_tiers("i", Some(item(2, -1, b"new")), Some(item(1, -1, b"old")));
    // incr copies up, counts on in tier 0, and old keeps its value.
    c.roundtrip(b"incr n 1\r\n", b"6\r\n");
    m.assert_tiers("n", Some(item(0, -1, b"6")), Some(item(0, -1, b"5")));
}

#[test]
fn lower_on_write_set_writes_old_too() {
    let m = Migration::start_with("lower_on_write = \"set\"", false);
    let mut c = m.client();
    c.roundtrip(&storage("set", "w", 9, 100, b"both", ""), b"STORED\r\n");
    assert_eq!(m.in_new("w").map(|i| i.value), Some(b"both".to_vec()));
    let old = m.in_old("w").expect("set writes old too");
    assert_eq!((old.flags, &old.value[..]), (9, &b"both"[..]));
    assert_ttl_close(old.ttl, 100);

    // Commands without the whole value (append, incr) copy tier 0's result down.
    m.put_old("ap", 4, 0, b"abc");
    c.roundtrip(&storage("append", "ap", 0, 0, b"def", ""), b"STORED\r\n");
    m.assert_tiers(
        "ap",
        Some(item(4, -1, b"abcdef")),
        Some(item(4, -1, b"abcdef")),
    );
    m.put_old("cnt", 0, 0, b"10");
    c.roundtrip(b"incr cnt 5\r\n", b"15\r\n");
    m.assert_tiers("cnt", Some(item(0, -1, b"15")), Some(item(0, -1, b"15")));
}

// ---- delete --------------------------------------------------------------------------------

#[test]
fn delete_reaches_every_tier_and_the_key_never_comes_back() {
    let m = Migration::start_with("", true);
    let mut c = m.client();
    m.put_old("only-old", 0, 0, b"o");
    c.roundtrip(b"delete only-old\r\n", b"DELETED\r\n");
    c.roundtrip(&storage("set", "both", 0, 0, b"n", ""), b"STORED\r\n");
    m.put_old("both", 0, 0, b"o");
    c.roundtrip(b"delete both\r\n", b"DELETED\r\n");
    c.roundtrip(b"delete nowhere\r\n", b"NOT_FOUND\r\n");
    c.roundtrip(b"delete only-old\r\n", b"NOT_FOUND\r\n");
    m.assert_gone(&mut c, &["only-old", "both", "nowhere"]);
    // After the delayed double deletes (one timeout after each of the 4 deletes): still gone.
    m.wait_for_double_deletes(4);
    m.assert_gone(&mut c, &["only-old", "both"]);
}

// ---- add -----------------------------------------------------------------------------------

#[test]
fn add_answers_not_stored_when_only_old_holds_the_key_and_copies_it_up() {
    let (m, mut c) = Migration::holding_old("ad", 8, 1000, b"old");
    c.roundtrip(&storage("add", "ad", 0, 0, b"new", ""), b"NOT_STORED\r\n");
    // The add copied the key up.
    m.assert_in_new("ad", 8, b"old", m.in_old("ad").unwrap().ttl);
    assert_eq!(get(&mut c, "ad"), hit("ad", 8, b"old"));

    // A key nowhere is added to tier 0.
    c.roundtrip(&storage("add", "fresh", 1, 0, b"f", ""), b"STORED\r\n");
    m.assert_tiers("fresh", Some(item(1, -1, b"f")), None);
}

// ---- replace, append, prepend, incr, decr, touch: copy up and retry ------------------------

#[test]
fn replace_on_a_key_only_old_holds_copies_up_and_succeeds() {
    let (m, mut c) = Migration::holding_old("r", 9, 0, b"old");
    c.roundtrip(&storage("replace", "r", 1, 0, b"rep", ""), b"STORED\r\n");
    assert_eq!(get(&mut c, "r"), hit("r", 1, b"rep"));
    m.assert_tiers("r", Some(item(1, -1, b"rep")), None);
    c.roundtrip(
        &storage("replace", "none", 1, 0, b"x", ""),
        b"NOT_STORED\r\n",
    );
    m.assert_tiers("none", None, None);
}

#[test]
fn append_and_prepend_on_a_key_only_old_holds_copy_up_and_keep_flags() {
    let m = Migration::start();
    m.put_old("ap", 11, 1000, b"mid");
    m.put_old("pp", 12, 0, b"mid");
    let mut c = m.client();
    c.roundtrip(&storage("append", "ap", 0, 0, b"-end", ""), b"STORED\r\n");
    c.roundtrip(
        &storage("prepend", "pp", 0, 0, b"start-", ""),
        b"STORED\r\n",
    );
    assert_eq!(get(&mut c, "ap"), hit("ap", 11, b"mid-end"));
    assert_eq!(get(&mut c, "pp"), hit("pp", 12, b"start-mid"));
    let ap = m.in_new("ap").unwrap();
    assert_eq!((ap.flags, &ap.value[..]), (11, &b"mid-end"[..]));
    assert!(
        ap.ttl > 990 && ap.ttl <= 1000,
        "append keeps the TTL: {ap:?}"
    );
    assert_eq!(m.in_new("pp"), Some(item(12, -1, b"start-mid")));
    assert_eq!((m.in_old("ap"), m.in_old("pp")), (None, None));
    c.roundtrip(
        &storage("append", "none", 0, 0, b"x", ""),
        b"NOT_STORED\r\n",
    );
    c.roundtrip(
        &storage("prepend", "none", 0, 0, b"x", ""),
        b"NOT_STORED\r\n",
    );
}

#[test]
fn incr_and_decr_on_a_counter_only_old_holds_continue_from_its_value() {
    let m = Migration::start();
    m.put_old("up", 0, 0, b"41");
    m.put_old("down", 0, 0, b"10");
    let mut c = m.client();
    c.roundtrip(b"incr up 1\r\n", b"42\r\n");
    c.roundtrip(b"decr down 3\r\n", b"7\r\n");
    c.roundtrip(b"incr up 8\r\n", b"50\r\n");
    assert_eq!(get(&mut c, "up"), hit("up", 0, b"50"));
    // memcached keeps the length of a decremented value, padding with spaces: "10" - 3 = "7 ".
    assert_eq!(get(&mut c, "down"), hit("down", 0, b"7 "));
    assert_eq!(m.in_new("up"), Some(item(0, -1, b"50")));
    assert_eq!((m.in_old("up"), m.in_old("down")), (None, None));
    c.roundtrip(b"incr none 1\r\n", b"NOT_FOUND\r\n");
    c.roundtrip(b"decr none 1\r\n", b"NOT_FOUND\r\n");
    m.assert_tiers("none", None, None);
}

#[test]
fn touch_on_a_key_only_old_holds_copies_up_and_sets_tier0_ttl() {
    let (m, mut c) = Migration::holding_old("to", 2, 1000, b"val");
    c.roundtrip(b"touch to 100\r\n", b"TOUCHED\r\n");
    m.assert_in_new("to", 2, b"val", 100);
    assert_eq!(get(&mut c, "to"), hit("to", 2, b"val"));
    c.roundtrip(b"touch none 100\r\n", b"NOT_FOUND\r\n");
}

// ---- stale data (the acceptance story) -----------------------------------------------------

#[test]
fn read_after_eviction_from_new_does_not_return_the_pre_migration_value() {
    let m = Migration::start();
    let mut c = m.client();
    let keys: Vec<String> = (0..20).map(|i| format!("ev{i}")).collect();
    for k in &keys {
        m.put_old(k, 0, 0, b"pre-migration");
        c.roundtrip(&storage("set", k, 0, 0, b"latest", ""), b"STORED\r\n");
    }
    for k in &keys {
        m.evict_from_new(k);
        // A cache may lose an item, but it must not go back in time.
        assert_eq!(get(&mut c, k), b"END\r\n", "{k}");
        assert_eq!(m.in_old(k), None, "{k}");
    }
}

#[test]
fn deleted_key_never_comes_back_even_after_a_racing_read() {
    let m = Migration::start_with("", true);
    let mut c = m.client();
    let keys: Vec<String> = (0..50).map(|i| format!("race{i}")).collect();
    for k in &keys {
        m.put_old(k, 0, 0, b"old");
    }
    for k in &keys {
        // The get copies the key up in the background; the delete right behind it must still
        // win, for this client at once and for everyone after the double delete.
        c.send(format!("get {k}\r\ndelete {k}\r\nget {k}\r\n").as_bytes());
        c.expect(&hit(k, 0, b"old"));
        c.expect(b"DELETED\r\n");
        c.expect(b"END\r\n");
    }
    m.wait_for_double_deletes(keys.len());
    m.assert_gone(&mut c, &keys);
}

#[test]
fn deleted_key_never_comes_back_while_another_client_keeps_reading_it() {
    let m = Migration::start_with("", true);
    let keys: Vec<String> = (0..20).map(|i| format!("rr{i}")).collect();
    for k in &keys {
        m.put_old(k, 0, 0, b"old");
    }
    let port = m.proxy.port;
    let reader_keys = keys.clone();
    let reader = std::thread::spawn(move || {
        let mut c = common::Client::connect(port);
        for _ in 0..10 {
            for k in &reader_keys {
                get(&mut c, k);
            }
        }
    });
    let mut c = m.client();
    for k in &keys {
        get(&mut c, k);
        c.roundtrip(format!("delete {k}\r\n").as_bytes(), b"DELETED\r\n");
    }
    reader.join().expect("reader thread");
    // Racing reads may have copied the old value up; the double delete removes it.
    m.wait_for_double_deletes(keys.len());
    m.assert_gone(&mut c, &keys);
}

#[test]
fn counter_only_in_old_keeps_counting_and_a_later_get_agrees() {
    let (m, mut c) = Migration::holding_old("visits", 0, 0, b"1000");
    for i in 1..=10 {
        c.roundtrip(b"incr visits 1\r\n", format!("{}\r\n", 1000 + i).as_bytes());
    }
    assert_eq!(get(&mut c, "visits"), hit("visits", 0, b"1010"));
    m.assert_tiers("visits", Some(item(0, -1, b"1010")), None);
    // Even if tier 0 now loses it, the old value does not come back.
    m.evict_from_new("visits");
    assert_eq!(get(&mut c, "visits"), b"END\r\n");
}

#[test]
fn pipelined_requests_on_a_migrating_key_behave_as_on_one_memcached() {
    let m = Migration::start();
    m.put_old("p", 3, 0, b"100");
    m.put_old("q", 4, 0, b"q");
    let mut c = m.client();
    // One write; each request on a tiered route is a barrier, so every command sees the
    // effect of the one before it, noreply ones included.
    let mut batch = b"incr p 1 noreply\r\nget p\r\nincr p 1\r\n".to_vec();
    batch.extend(storage("append", "q", 0, 0, b"+", "noreply"));
    batch.extend_from_slice(b"gets q\r\ndelete p noreply\r\nget p q\r\ndelete q\r\nget q\r\n");
    c.send(&batch);
    c.expect(&hit("p", 3, b"101"));
    c.expect(b"102\r\n");
    let (flags, _, value) = read_cas_hit(&mut c, "q");
    assert_eq!((flags, &value[..]), (4, &b"q+"[..]));
    c.expect(&hit("q", 4, b"q+"));
    c.expect(b"DELETED\r\nEND\r\n");
    c.roundtrip(
        b"version\r\n",
        format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    for k in ["p", "q"] {
        assert_eq!((m.in_new(k), m.in_old(k)), (None, None), "{k}");
    }
}

#[test]
fn three_tiers_fall_through_in_order_and_writes_clear_every_lower_tier() {
    use tiers_support::{meta_get, put};
    let (new, mid, old) = (Memcached::start(), Memcached::start(), Memcached::start());
    let proxy = Memroute::builder()
        .pool("new", [&new])
        .pool("mid", [&mid])
        .pool("old", [&old])
        .route("", &["new", "mid", "old"])
        .start();
    put(mid.port, "both", 1, 0, b"from-mid");
    put(old.port, "both", 2, 0, b"from-old");
    put(old.port, "deep", 3, 0, b"deep");
    let mut c = common::Client::connect(proxy.port);
    // The first lower tier that has a key wins.
    c.roundtrip(
        b"get both deep none\r\n",
        &[
            value_reply("both", 1, b"from-mid"),
            value_reply("deep", 3, b"deep"),
            b"END\r\n".to_vec(),
        ]
        .concat(),
    );
    let copied = poll("both copies", || {
        Some((meta_get(new.port, "both")?, meta_get(new.port, "deep")?))
    });
    assert_eq!(copied, (item(1, -1, b"from-mid"), item(3, -1, b"deep")));
    // A write clears every lower tier; a delete reaches every tier.
    c.roundtrip(&storage("set", "both", 0, 0, b"latest", ""), b"STORED\r\n");
    assert_eq!(
        (meta_get(mid.port, "both"), meta_get(old.port, "both")),
        (None, None)
    );
    c.roundtrip(b"delete deep\r\n", b"DELETED\r\n");
    for m in [&new, &mid, &old] {
        assert_eq!(meta_get(m.port, "deep"), None);
    }
    // incr on a counter only the deepest tier holds continues from it.
    put(old.port, "n", 0, 0, b"7");
    c.roundtrip(b"incr n 1\r\n", b"8\r\n");
    assert_eq!(meta_get(new.port, "n"), Some(item(0, -1, b"8")));
    assert_eq!(meta_get(old.port, "n"), None);
}

#[test]
fn multi_get_mixing_a_plain_route_and_a_tiered_route_answers_in_key_order() {
    use tiers_support::{meta_get, put};
    let (plain, new, old) = (Memcached::start(), Memcached::start(), Memcached::start());
    let proxy = Memroute::builder()
        .pool("plain", [&plain])
        .pool("new", [&new])
        .pool("old", [&old])
        .route("", &["plain"])
        .route("user:", &["new", "old"])
        .start();
    put(plain.port, "a", 1, 0, b"plain-a");
    put(old.port, "a", 9, 0, b"never"); // old is not a tier of the route of "a"
    put(new.port, "user:1", 2, 0, b"new-1");
    put(old.port, "user:2", 3, 0, b"old-2");
    let mut c = common::Client::connect(proxy.port);
    c.roundtrip(
        b"get user:2 a user:1 b user:3 user:2\r\n",
        &[
            value_reply("user:2", 3, b"old-2"),
            value_reply("a", 1, b"plain-a"),
            value_reply("user:1", 2, b"new-1"),
            value_reply("user:2", 3, b"old-2"),
            b"END\r\n".to_vec(),
        ]
        .concat(),
    );
    assert_eq!(
        poll("user:2 copied", || meta_get(new.port, "user:2")),
        item(3, -1, b"old-2")
    );
    // Keys of the plain route are never copied anywhere.
    assert_eq!(meta_get(new.port, "a"), None);
}

#[test]
fn keys_whose_tier0_server_is_down_are_left_out_not_served_from_old() {
    let mut m = Migration::start();
    let keys: Vec<String> = (0..20).map(|i| format!("dn{i}")).collect();
    let mut c = m.client();
    // Learn each key's tier-0 server by writing it through memroute, then keep it in old only.
    let mut on_first = Vec::new();
    for k in &keys {
        c.roundtrip(&storage("set", k, 0, 0, b"x", ""), b"STORED\r\n");
        on_first.push(m.new_holder(k) == Some(0));
        m.evict_from_new(k);
        m.put_old(k, 0, 0, b"old");
    }
    assert!(on_first.contains(&true) && on_first.contains(&false));
    m.new[0].stop();
    c.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let mut expected = Vec::new();
    for (k, first) in keys.iter().zip(&on_first) {
        if !first {
            expected.extend(value_reply(k, 0, b"old"));
        }
    }
    expected.extend_from_slice(b"END\r\n");
    assert_eq!(
        String::from_utf8_lossy(&read_retrieval(&mut c)),
        String::from_utf8_lossy(&expected)
    );
    // A write whose tier 0 fails is an error and leaves old alone.
    let k = &keys[on_first.iter().position(|&f| f).unwrap()];
    c.send(&storage("set", k, 0, 0, b"new", ""));
    assert!(c.read_line().starts_with(b"SERVER_ERROR "));
    assert_eq!(m.in_old(k), Some(item(0, -1, b"old")));
}
