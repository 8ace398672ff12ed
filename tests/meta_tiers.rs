//! Meta commands through a tiered route `["new", "old"]` (DESIGN §4, issue 14 acceptance 3):
//! `mg` falls through and copies up with the remaining TTL, `md` removes the key from both
//! tiers, a counter made with `ma` in old continues in new, a vivify stub in new is never
//! overwritten by a copy-up. Every check is made through memroute and on the backends directly.

mod common;
mod tiers_support;

use tiers_support::{Migration, assert_ttl_close, item, unix_now};

#[test]
fn mg_of_an_old_only_key_returns_old_value_and_copies_it_up_with_its_ttl() {
    let (m, mut c) = Migration::holding_old("k1", 42, 1000, b"old-value");
    c.send(b"mg k1 v f k O7\r\n");
    c.expect(b"VA 9 f42 kk1 O7\r\nold-value\r\n");
    // Answered from tier 0 after the copy: the copy is there already.
    let copy = m.in_new("k1").expect("k1 copied into new");
    let original = m.in_old("k1").expect("old keeps k1");
    assert_eq!((copy.flags, &copy.value[..]), (42, &b"old-value"[..]));
    assert!(copy.ttl > 0 && copy.ttl <= 1000, "{copy:?}");
    assert_ttl_close(copy.ttl, original.ttl);
    // Item state comes from tier 0: its TTL, and a CAS a later ms C<cas> can use.
    c.send(b"mg k1 t c\r\n");
    let line = String::from_utf8(c.read_line()).unwrap();
    let fields: Vec<&str> = line.trim_end().split(' ').collect();
    assert_eq!(fields[0], "HD", "{line}");
    let ttl: i64 = fields[1].strip_prefix('t').unwrap().parse().unwrap();
    assert_ttl_close(ttl, original.ttl);
    let cas = fields[2].strip_prefix('c').unwrap();
    c.roundtrip(format!("ms k1 3 C{cas}\r\nnew\r\n").as_bytes(), b"HD\r\n");
    assert_eq!(m.in_new("k1").map(|i| i.value), Some(b"new".to_vec()));
    // lower_on_write = "delete": the old value cannot come back.
    assert_eq!(m.in_old("k1"), None);
}

#[test]
fn mg_quiet_miss_on_both_tiers_stays_quiet() {
    let (m, mut c) = Migration::holding_old("q1", 0, 0, b"x");
    c.roundtrips(rows![
        b"mg nowhere v q\r\nmg nowhere v\r\nmn\r\n" => b"EN\r\nMN\r\n",
        // Only old has q1: found there, so not a miss.
        b"mg q1 v q\r\nmn\r\n" => b"VA 1\r\nx\r\nMN\r\n",
    ]);
    assert_eq!(m.in_new("q1"), Some(item(0, -1, b"x")));
}

#[test]
fn md_removes_the_key_from_both_tiers() {
    let (m, mut c) = Migration::holding_old("d1", 0, 0, b"x");
    // Only old has it: the key existed for the client.
    c.roundtrip(b"md d1 O5\r\n", b"HD O5\r\n");
    assert_eq!(m.in_old("d1"), None);
    assert_eq!(m.in_new("d1"), None);
    c.roundtrip(b"md d1\r\n", b"NF\r\n");
    // In both tiers.
    m.put_old("d2", 0, 0, b"x");
    c.roundtrip(b"mg d2 v\r\n", b"VA 1\r\nx\r\n");
    assert!(m.in_new("d2").is_some());
    c.roundtrip(b"md d2 q\r\nmn\r\n", b"MN\r\n");
    m.assert_tiers("d2", None, None);
    c.roundtrip(b"mg d2 v\r\n", b"EN\r\n");
}

#[test]
fn md_invalidate_marks_the_copied_item_stale_and_deletes_below() {
    let (m, mut c) = Migration::holding_old("s1", 0, 0, b"old");
    c.roundtrip(b"md s1 I T30\r\n", b"HD\r\n");
    assert_eq!(m.in_old("s1"), None);
    c.roundtrip(b"mg s1 v t\r\n", b"VA 3 t30 X W\r\nold\r\n");
    c.roundtrip(b"mg s1 v\r\n", b"VA 3 Z X\r\nold\r\n");
}

#[test]
fn a_counter_made_with_ma_in_old_continues_in_new() {
    let m = Migration::start();
    // Made in old (before the migration) with ma.
    let mut old = common::Client::connect(m.old.port);
    old.roundtrip(b"ma n1 N0 J10 v\r\n", b"VA 2\r\n10\r\n");
    let mut c = m.client();
    c.roundtrip(b"ma n1 v\r\n", b"VA 2\r\n11\r\n");
    c.roundtrip(b"ma n1 D4 v\r\n", b"VA 2\r\n15\r\n");
    assert_eq!(m.in_new("n1").map(|i| i.value), Some(b"15".to_vec()));
    assert_eq!(
        m.in_old("n1"),
        None,
        "lower_on_write deleted the old counter"
    );
    // With vivify: a lower counter continues instead of a new one starting at J.
    old.roundtrip(b"ma n2 N0 J100 v\r\n", b"VA 3\r\n100\r\n");
    c.roundtrip(b"ma n2 N0 J0 v\r\n", b"VA 3\r\n101\r\n");
    c.roundtrip(b"ma n3 N0 J7 v q\r\nma n3 v\r\n", b"VA 1\r\n8\r\n");
}

#[test]
fn a_vivify_stub_in_new_is_never_overwritten_by_a_copy_up() {
    let m = Migration::start();
    let mut c = m.client();
    // The winner's stub in new...
    c.roundtrip(b"mg v1 N30 v\r\n", b"VA 0 W\r\n\r\n");
    // ...meanwhile old gets a value (a late writer on the old cluster).
    m.put_old("v1", 0, 0, b"old");
    c.roundtrip(b"mg v1 v\r\n", b"VA 0 Z\r\n\r\n");
    // Directly on the new servers: the stub (empty, token sent) is still there.
    let answers: Vec<Vec<u8>> = m
        .new
        .iter()
        .map(|b| {
            let mut d = common::Client::connect(b.port);
            d.send(b"mg v1 s\r\n");
            d.read_line()
        })
        .collect();
    let mut sorted = answers.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [b"EN\r\n".to_vec(), b"HD s0 Z\r\n".to_vec()],
        "{answers:?}"
    );
    // But a key only old holds wins over vivify: it is copied, not stubbed.
    m.put_old("v2", 3, 0, b"warm");
    c.roundtrip(b"mg v2 N30 v f\r\n", b"VA 4 f3\r\nwarm\r\n");
    assert_eq!(m.in_new("v2"), Some(item(3, -1, b"warm")));
}

#[test]
fn ms_modes_follow_the_classic_rules_on_tiers() {
    let m = Migration::start();
    let mut c = m.client();
    // add (ME) of a key only old holds fails, as on one cache.
    m.put_old("a1", 0, 0, b"x");
    c.roundtrip(b"ms a1 1 ME\r\ny\r\n", b"NS\r\n");
    // append (MA) to a key only old holds continues its value.
    m.put_old("a2", 0, 0, b"ab");
    c.roundtrip(b"ms a2 1 MA\r\nc\r\n", b"HD\r\n");
    c.roundtrip(b"mg a2 v\r\n", b"VA 3\r\nabc\r\n");
    assert_eq!(m.in_old("a2"), None);
    // set: tier 0, then the old value is deleted below.
    m.put_old("a3", 0, 0, b"old");
    c.roundtrip(b"ms a3 3 T100\r\nnew\r\n", b"HD\r\n");
    assert_eq!(m.in_old("a3"), None);
    let copy = m.in_new("a3").unwrap();
    assert!(copy.ttl > 95 && copy.ttl <= 100, "{copy:?}");
    let _ = unix_now();
}
