//! `/route?key=K`: where a key goes: the route its prefix matches and, for each tier, the pool
//! and the server that owns the key there (computed exactly as a request would, with
//! [`crate::backend::Pool::locate_index`], so an ejecting pool shows the server after ejections).
//!
//! ```json
//! {"key": "foo", "route": "", "tiers": [{"tier": 0, "pool": "main", "server": "127.0.0.1:11211", "down": false}]}
//! ```
//!
//! The key is percent-decoded (`%20` → space); `+` stays a plus sign, since memcached keys have
//! no spaces and `+` is a common key character. With `distribution = "random"` the server shown
//! is one random pick. No matching route gives `"route": null`. While a reshard window is open
//! the pool's previous rings are listed after it, each with `previous_ring` (1 = newest),
//! `moved` (the key's owner changed, so the previous owner is asked) and `window_left_s`.

use serde_json::{Value, json};

use crate::route::describe::tier;
use crate::state::Snapshot;

/// The JSON answer for the query string, or what is wrong with it (a `400`).
pub fn render(snapshot: &Snapshot, query: Option<&str>) -> Result<Value, String> {
    let raw = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .ok_or("missing query parameter: /route?key=K")?;
    let key = percent_decode(raw).ok_or("bad percent-encoding in key")?;
    if key.is_empty() {
        return Err("empty key".into());
    }
    let shown = String::from_utf8_lossy(&key);
    let Some(route) = snapshot.router.route(&key) else {
        return Ok(json!({ "key": shown, "route": null, "tiers": [] }));
    };
    // While a resized pool's reshard window is open its previous rings follow it: shown with
    // the pool's tier number, `previous_ring` (1 = newest) and whether the key moved (only then
    // is the previous owner asked).
    let mut tiers: Vec<Value> = Vec::new();
    let (mut explicit, mut nth) = (0, 0);
    for (i, pool) in route.tiers.iter().enumerate() {
        match route.previous(i) {
            None => {
                tiers.push(tier(explicit, pool, &key));
                explicit += 1;
                nth = 0;
            }
            Some(p) => {
                nth += 1;
                let mut t = tier(explicit.saturating_sub(1), pool, &key);
                t["previous_ring"] = json!(nth);
                t["moved"] = json!(route.asks(i, &key));
                let left = p.until.saturating_duration_since(std::time::Instant::now());
                t["window_left_s"] = json!(left.as_secs());
                tiers.push(t);
            }
        }
    }
    let mut answer = json!({ "key": shown, "route": route.prefix, "tiers": tiers });
    crate::route::describe::key(route, &key, &mut answer);
    Ok(answer)
}

/// Decodes `%XX` escapes; `None` for a `%` not followed by two hex digits.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Digit by digit: `u8::from_str_radix` would accept a sign (`%+1`).
            let digit = |j: usize| char::from(*bytes.get(j)?).to_digit(16);
            out.push((digit(i + 1)? * 16 + digit(i + 2)?) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_escapes_are_decoded_and_plus_is_kept() {
        assert_eq!(percent_decode("user%3A42").unwrap(), b"user:42");
        assert_eq!(percent_decode("a+b%2Bc").unwrap(), b"a+b+c");
        assert_eq!(percent_decode("%e2%82%AC").unwrap(), "€".as_bytes());
        assert_eq!(percent_decode("%ff").unwrap(), [0xff]);
    }

    #[test]
    fn broken_escapes_are_refused() {
        assert_eq!(percent_decode("abc%"), None);
        assert_eq!(percent_decode("abc%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%+1"), None);
    }
}
