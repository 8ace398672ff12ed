//! Checks the config tests share.

use std::fmt::Debug;

/// Asserts that `got` holds one message per `want`, in the same order, and that each message
/// `fits` its wanted text: `|m, w| m.starts_with(w)` where the wanted text is how a message
/// begins, `|m, w| m.contains(w)` where it is a part of one.
pub(crate) fn messages<S: AsRef<str> + Debug>(
    got: &[S],
    want: &[&str],
    fits: impl Fn(&str, &str) -> bool,
) {
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (message, want) in got.iter().zip(want) {
        let message = message.as_ref();
        assert!(fits(message, want), "{message:?} should match {want:?}");
    }
}
