//! Turning runs into the printed tables: medians over rounds, per-request CPU, ratios to direct.

use std::fmt::Write;

use crate::workload::{LoadResult, Target, Workload};

/// Every run of one workload against one target.
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// The target.
    pub target: Target,
    /// One result per round.
    pub runs: Vec<LoadResult>,
    /// Why this target was not run (e.g. it answers `ERROR` to meta commands).
    pub skipped: Option<String>,
}

/// RSS of one proxy (bytes).
#[derive(Default)]
pub struct MemoryRow {
    /// Proxy name.
    pub name: &'static str,
    /// After start, no clients.
    pub idle: u64,
    /// Holding the idle connections.
    pub with_conns: u64,
    /// Connections that were open and answered a `get`.
    pub conns_ok: usize,
    /// Connections that could not be opened or did not answer.
    pub conns_failed: usize,
    /// After the connections closed and the wait.
    pub after_close: u64,
    /// Seconds between close and the last reading.
    pub after_secs: f64,
}

/// One row's medians.
struct Summary {
    rps: f64,
    /// (max − min) / median of req/s over rounds, %.
    spread: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    proxy_us: Option<f64>,
    backend_us: f64,
    loadgen_pct: f64,
    errors: u64,
    miss_pct: f64,
    fair: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn cpu(r: &LoadResult, label: &str) -> Option<f64> {
    r.cpu.iter().find(|(l, _)| l == label).map(|(_, s)| *s)
}

fn per_request_us(r: &LoadResult, label: &str) -> Option<f64> {
    cpu(r, label).map(|s| s * 1e6 / r.requests.max(1) as f64)
}

fn rps(r: &LoadResult) -> f64 {
    r.requests as f64 / r.secs.max(1e-9)
}

fn summarize(row: &Row) -> Summary {
    let runs = &row.runs;
    let of = |f: &dyn Fn(&LoadResult) -> f64| median(runs.iter().map(f).collect());
    let all_rps: Vec<f64> = runs.iter().map(rps).collect();
    let rps_median = median(all_rps.clone());
    let (lo, hi) = all_rps
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let asked: u64 = runs.iter().map(|r| r.keys_asked).sum();
    let missed: u64 = runs.iter().map(|r| r.keys_missed).sum();
    Summary {
        rps: rps_median,
        spread: if runs.is_empty() {
            0.0
        } else {
            (hi - lo) / rps_median * 100.0
        },
        p50: of(&|r| r.p50_us),
        p99: of(&|r| r.p99_us),
        p999: of(&|r| r.p999_us),
        proxy_us: (row.target != Target::Direct)
            .then(|| of(&|r| per_request_us(r, "proxy").unwrap_or(f64::NAN))),
        backend_us: of(&|r| per_request_us(r, "backends").unwrap_or(f64::NAN)),
        loadgen_pct: of(&|r| cpu(r, "loadgen").unwrap_or(f64::NAN) / r.secs.max(1e-9) * 100.0),
        errors: runs.iter().map(|r| r.errors + r.failed_conns).sum(),
        miss_pct: missed as f64 * 100.0 / asked.max(1) as f64,
        fair: of(&|r| r.slowest_conn_pct),
    }
}

fn us(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One line per finished run, on stderr while the bench runs.
pub fn progress(w: &Workload, t: Target, round: usize, rounds: usize, r: &LoadResult) -> String {
    let mut s = format!(
        "({}) round {round}/{rounds} {:<11} {:>9} req/s  p99 {:>7} µs  fair {:>3.0}%  errors {}",
        w.id,
        t.name(),
        thousands(rps(r)),
        us(r.p99_us),
        r.slowest_conn_pct,
        r.errors + r.failed_conns
    );
    if let Some(e) = &r.first_error {
        let _ = write!(s, "  first error: {e}");
    }
    s
}

/// The throughput and latency table.
pub fn throughput_table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<30} {:<11} {:>9} {:>5} {:>7} {:>7} {:>8} {:>7} {:>6} {:>5} {:>5} {:>6} {:>5} {:>7} {:>7}",
        "workload",
        "target",
        "req/s",
        "±%",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "proxy",
        "mc",
        "lg",
        "fair",
        "errors",
        "miss",
        "req/s",
        "p99"
    );
    let _ = writeln!(
        out,
        "{:<30} {:<11} {:>9} {:>5} {:>7} {:>7} {:>8} {:>7} {:>6} {:>5} {:>5} {:>6} {:>5} {:>7} {:>7}",
        "", "", "", "", "", "", "", "µs/req", "µs/req", "CPU%", "%", "", "%", "÷direct", "÷direct"
    );
    let mut direct: Option<Summary> = None;
    let mut last = ' ';
    for row in rows {
        let label = if row.workload.id != last {
            last = row.workload.id;
            direct = None;
            format!("({}) {}", row.workload.id, row.workload.title)
        } else {
            String::new()
        };
        if let Some(why) = &row.skipped {
            let _ = writeln!(out, "{label:<30} {:<11} skipped: {why}", row.target.name());
            continue;
        }
        let s = summarize(row);
        let (ratio_rps, ratio_p99) = match (&direct, row.target) {
            (Some(d), t) if t != Target::Direct => (
                format!("{:.2}", s.rps / d.rps),
                format!("{:.2}", s.p99 / d.p99),
            ),
            _ => (String::new(), String::new()),
        };
        let _ = writeln!(
            out,
            "{:<30} {:<11} {:>9} {:>5.1} {:>7} {:>7} {:>8} {:>7} {:>6} {:>5.0} {:>5.0} {:>6} {:>5.1} {:>7} {:>7}",
            label,
            row.target.name(),
            thousands(s.rps),
            s.spread,
            us(s.p50),
            us(s.p99),
            us(s.p999),
            s.proxy_us.map_or("-".to_string(), us),
            us(s.backend_us),
            s.loadgen_pct,
            s.fair,
            s.errors,
            s.miss_pct,
            ratio_rps,
            ratio_p99,
        );
        if row.target == Target::Direct {
            direct = Some(s);
        }
    }
    out
}

/// One worker thread against two (workload t, unpinned): throughput and own CPU per request of
/// each proxy that ran both ways. Empty if t did not run.
pub fn scaling_table(rows: &[Row]) -> String {
    let t: Vec<&Row> = rows
        .iter()
        .filter(|r| r.workload.unpinned && r.skipped.is_none() && !r.runs.is_empty())
        .collect();
    let find = |target| t.iter().find(|r| r.target == target).map(|r| summarize(r));
    let mut out = String::new();
    for (name, one, two) in [
        ("memroute", Target::Memroute, Target::Memroute2T),
        ("mcproxy", Target::McProxy, Target::McProxy2T),
    ] {
        let (Some(a), Some(b)) = (find(one), find(two)) else {
            continue;
        };
        if out.is_empty() {
            let _ = writeln!(
                out,
                "one worker thread -> two (workload t, unpinned; proxy µs/req is CPU of all its threads)"
            );
        }
        let (ua, ub) = (
            a.proxy_us.unwrap_or(f64::NAN),
            b.proxy_us.unwrap_or(f64::NAN),
        );
        let _ = writeln!(
            out,
            "{name:<10} req/s {} -> {} (x{:.2}), proxy µs/req {} -> {} (x{:.2}), p99 µs {} -> {}",
            thousands(a.rps),
            thousands(b.rps),
            b.rps / a.rps,
            us(ua),
            us(ub),
            ub / ua,
            us(a.p99),
            us(b.p99),
        );
    }
    out
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The memory table.
pub fn memory_table(rows: &[MemoryRow], conns: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "memory (RSS of a fresh proxy; {conns} idle client connections, each after one get)"
    );
    let _ = writeln!(
        out,
        "{:<12} {:>10} {:>18} {:>14} {:>20}",
        "proxy",
        "idle",
        format!("with {conns} conns"),
        "bytes/conn",
        "after close"
    );
    for r in rows {
        let per_conn = match r.conns_ok {
            0 => "-".to_string(),
            n => format!(
                "{:.0}",
                r.with_conns.saturating_sub(r.idle) as f64 / n as f64
            ),
        };
        let failed = if r.conns_failed > 0 {
            format!(" ({} failed)", r.conns_failed)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<12} {:>10} {:>18} {:>14} {:>20}{failed}",
            r.name,
            mib(r.idle),
            mib(r.with_conns),
            per_conn,
            format!("{} ({:.0} s)", mib(r.after_close), r.after_secs),
        );
    }
    out
}
