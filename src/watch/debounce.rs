//! When a burst of file events becomes one reload.
//!
//! Editors and deploy tools write a file in several steps, so a reload waits until the events
//! have been quiet for a moment. A file that never goes quiet (a generator rewriting it every
//! 100 ms) would then never be reloaded at all, so the wait is also capped from the first event
//! of the burst: whatever the file does, what it holds is applied at least every
//! `max_delay` + one event interval.

use std::time::Duration;

use tokio::time::Instant;

/// The timer state of the config watcher: quiet time after the last event, capped from the
/// first event since the last reload.
#[derive(Debug, Clone)]
pub struct Debounce {
    quiet: Duration,
    max_delay: Duration,
    /// The first event since the last trigger.
    burst_start: Option<Instant>,
    /// When the trigger is due.
    due: Option<Instant>,
}

impl Debounce {
    /// Fires `quiet` after the last event, but never later than `max_delay` after the first
    /// event since the last time it fired (`max_delay` is raised to at least `quiet`).
    pub fn new(quiet: Duration, max_delay: Duration) -> Debounce {
        Debounce {
            quiet,
            max_delay: max_delay.max(quiet),
            burst_start: None,
            due: None,
        }
    }

    /// A relevant file event happened at `now`.
    pub fn event(&mut self, now: Instant) {
        let start = *self.burst_start.get_or_insert(now);
        self.due = Some((now + self.quiet).min(start + self.max_delay));
    }

    /// When the next trigger is due (`None`: no event waiting).
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The trigger was sent: the next event starts a new burst.
    pub fn fired(&mut self) {
        self.due = None;
        self.burst_start = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::sleep_until;

    const QUIET: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_millis(800);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives a `Debounce` the way the watcher's select loop does: events every `every` until
    /// `events_end`, and returns when each trigger fired, relative to the start.
    async fn drive(every: Duration, events_end: Duration, run: Duration) -> Vec<Duration> {
        let mut d = Debounce::new(QUIET, MAX);
        let start = Instant::now();
        let mut next_event = start;
        let mut fired = Vec::new();
        loop {
            let event_due = (next_event < start + events_end).then_some(next_event);
            let wake = [event_due, d.due()].into_iter().flatten().min();
            let Some(wake) = wake.filter(|w| *w <= start + run) else {
                return fired;
            };
            sleep_until(wake).await;
            let now = Instant::now();
            // A trigger due at the same instant as an event goes first, as a ready timer may.
            if d.due().is_some_and(|due| due <= now) {
                d.fired();
                fired.push(now - start);
            }
            if event_due.is_some_and(|e| e <= now) {
                d.event(now);
                next_event += every;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_event_fires_once_after_the_quiet_time() {
        let fired = drive(ms(10_000), ms(1), ms(5_000)).await;
        assert_eq!(fired, vec![QUIET]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_burst_fires_once_after_its_last_event() {
        // Events at 0, 50, …, 300 ms: one trigger, 200 ms after the last.
        let fired = drive(ms(50), ms(301), ms(5_000)).await;
        assert_eq!(fired, vec![Duration::from_millis(500)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_that_keeps_changing_fires_at_least_once_a_second() {
        // Rewritten every 100 ms for 30 s: the quiet time never comes, the cap does.
        let fired = drive(ms(100), ms(30_000), ms(31_000)).await;
        assert_eq!(
            fired.first(),
            Some(&MAX),
            "first trigger at the cap: {fired:?}"
        );
        for (i, pair) in fired.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(gap <= Duration::from_secs(1), "gap {gap:?} in {fired:?}");
            // While the writes go on, not more often than the cap either: one reload per burst
            // (the last trigger is the quiet time after the last write).
            if i + 2 < fired.len() {
                assert!(gap >= MAX, "gap {gap:?} in {fired:?}");
            }
        }
        // The last write (29.9 s) is applied once the file is quiet.
        assert_eq!(
            fired.last(),
            Some(&(Duration::from_millis(29_900) + QUIET)),
            "{fired:?}"
        );
        assert!(fired.len() >= 30, "{} triggers: {fired:?}", fired.len());
    }
}
