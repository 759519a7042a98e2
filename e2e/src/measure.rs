//! What the benchmarks measure: Redis commands and CPU, a process's CPU, and the API
//! server's request counters.

use std::collections::BTreeMap;

use crate::redis::RedisServer;
use crate::{kubectl, ok};

/// `cmdstat_<name>` -> (calls, usec) from `INFO commandstats`.
pub fn command_stats(redis: &RedisServer) -> BTreeMap<String, (u64, u64)> {
    let out = String::from_utf8_lossy(&redis.cli(&["INFO", "commandstats"]).stdout).to_string();
    parse_command_stats(&out)
}

/// [`command_stats`] of the text of an `INFO commandstats` reply.
pub fn parse_command_stats(out: &str) -> BTreeMap<String, (u64, u64)> {
    out.lines()
        .filter_map(|l| {
            let (name, fields) = l.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((name.to_string(), (field("calls")?, field("usec")?)))
        })
        .collect()
}

/// Calls and Redis µs per second of each command that ran between two [`command_stats`].
pub fn command_rates(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
    secs: f64,
) -> BTreeMap<String, (f64, f64)> {
    after
        .iter()
        .filter_map(|(name, &(calls, usec))| {
            let (calls0, usec0) = before.get(name).copied().unwrap_or((0, 0));
            (calls > calls0).then(|| {
                let per_second = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
                (
                    name.clone(),
                    (per_second(calls, calls0), per_second(usec, usec0)),
                )
            })
        })
        .collect()
}

/// Seconds of CPU (user + system) Redis has used.
pub fn redis_cpu(redis: &RedisServer) -> f64 {
    let out = String::from_utf8_lossy(&redis.cli(&["INFO", "cpu"]).stdout).to_string();
    out.lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// Seconds of CPU (user + system) a process has used, from /proc (100 ticks per second).
pub fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds (user + system) used so far per command name, summed over every process in
/// /proc, and the machine's `steal` time (CPU the hypervisor gave to others): what ran
/// beside a moment being measured. Processes gone between two readings drop out of both.
pub fn cpu_by_command() -> BTreeMap<String, f64> {
    let mut by = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.trim().is_empty() {
            *by.entry(comm.trim().to_string()).or_insert(0.0) += process_cpu(pid);
        }
    }
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    by.insert("(steal)".into(), steal_secs(&stat));
    by
}

/// The machine's steal time in seconds from /proc/stat's `cpu` line (its 8th value, in
/// ticks of 1/100 s).
fn steal_secs(stat: &str) -> f64 {
    stat.lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .and_then(|values| values.split_whitespace().nth(7)?.parse::<f64>().ok())
        .map_or(0.0, |ticks| ticks / 100.0)
}

/// A process's resident memory and its peak, in KiB, from /proc.
pub fn process_rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    (kib_field(&status, "VmRSS:"), kib_field(&status, "VmHWM:"))
}

/// How much of a process's resident memory is transparent huge pages, in KiB (an allocator
/// that asks for them holds memory in 2 MiB units).
pub fn process_anon_huge_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    kib_field(&rollup, "AnonHugePages:")
}

/// The value of a `Name:   123 kB` line of a /proc file; 0 when there is none.
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The `p` quantile (0 to 1) of sorted values, nearest rank; the default when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The API server's `apiserver_request_total`, summed by "VERB resource[/subresource]".
pub fn api_requests() -> BTreeMap<String, f64> {
    let text = ok(kubectl(&["get", "--raw", "/metrics"]));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(name)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let resource = match label("subresource").as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        let key = format!("{} {resource}", label("verb"));
        *out.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// What grew between two counter snapshots, per second of `secs`.
pub fn rates(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    secs: f64,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let grown = v - before.get(k).copied().unwrap_or(0.0);
            (grown > 0.0).then(|| (k.clone(), grown / secs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{kib_field, steal_secs};

    #[test]
    fn steal_is_the_eighth_value_of_the_cpu_line() {
        let stat =
            "cpu  2051834 121376 330294 2195044 9837 0 26061 2838 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(steal_secs(stat), 28.38);
        assert_eq!(steal_secs("intr 1 2 3\n"), 0.0);
    }

    #[test]
    fn a_kib_field_is_read_by_its_name_and_is_zero_when_missing() {
        let rollup = "Rss:              131072 kB\nAnonHugePages:     59392 kB\nSwap:  0 kB\n";
        assert_eq!(kib_field(rollup, "AnonHugePages:"), 59_392);
        assert_eq!(kib_field(rollup, "Rss:"), 131_072);
        assert_eq!(kib_field(rollup, "VmHWM:"), 0);
    }
}
