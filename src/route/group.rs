//! Grouping a multi-key request's keys by the server (or shadow) they go to, so that each gets
//! one request: groups in the order their first key came, keys in request order within a group.

/// Adds `member` to the group of `key` (the first group whose key is `same` as it), or opens a
/// new group at the end for it.
pub fn add<K, T>(groups: &mut Vec<(K, Vec<T>)>, key: K, member: T, same: impl Fn(&K, &K) -> bool) {
    match groups.iter_mut().find(|(k, _)| same(k, &key)) {
        Some((_, members)) => members.push(member),
        None => groups.push((key, vec![member])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_first_seen_order_and_members_their_order() {
        let mut groups = Vec::new();
        for (server, key) in [(2, "a"), (1, "b"), (2, "c"), (3, "d"), (1, "e")] {
            add(&mut groups, server, key, |a, b| a == b);
        }
        assert_eq!(
            groups,
            [(2, vec!["a", "c"]), (1, vec!["b", "e"]), (3, vec!["d"])]
        );
    }
}
