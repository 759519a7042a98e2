//! The directives of redis.conf that Redis 7.0 knows, and what their values may be; read
//! from `CONFIG GET *` of redis-server 7.0.15, plus the file-only `include`, `loadmodule`,
//! `rename-command` and `user`. A value Redis would refuse (`timeout forever`) makes it exit
//! with "FATAL CONFIG FILE ERROR" at start, so it is refused here, at `kubectl apply`.

/// What a directive's value may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `yes` or `no`.
    YesNo,
    /// An integer, optionally with a memory unit (`64mb`) or a percentage (`10%`).
    Number,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// Anything on one line (paths, addresses, lists).
    Text,
}

/// Sorted by name.
pub(crate) const DIRECTIVES: &[(&str, Kind)] = &[
    (
        "acl-pubsub-default",
        Kind::OneOf(&["allchannels", "resetchannels"]),
    ),
    ("aclfile", Kind::Text),
    ("acllog-max-len", Kind::Number),
    ("active-defrag-cycle-max", Kind::Number),
    ("active-defrag-cycle-min", Kind::Number),
    ("active-defrag-ignore-bytes", Kind::Number),
    ("active-defrag-max-scan-fields", Kind::Number),
    ("active-defrag-threshold-lower", Kind::Number),
    ("active-defrag-threshold-upper", Kind::Number),
    ("active-expire-effort", Kind::Number),
    ("activedefrag", Kind::YesNo),
    ("activerehashing", Kind::YesNo),
    ("always-show-logo", Kind::YesNo),
    ("aof-disable-auto-gc", Kind::YesNo),
    ("aof-load-truncated", Kind::YesNo),
    ("aof-rewrite-incremental-fsync", Kind::YesNo),
    ("aof-timestamp-enabled", Kind::YesNo),
    ("aof-use-rdb-preamble", Kind::YesNo),
    ("aof_rewrite_cpulist", Kind::Text),
    ("appenddirname", Kind::Text),
    ("appendfilename", Kind::Text),
    ("appendfsync", Kind::OneOf(&["always", "everysec", "no"])),
    ("appendonly", Kind::YesNo),
    ("auto-aof-rewrite-min-size", Kind::Number),
    ("auto-aof-rewrite-percentage", Kind::Number),
    ("bgsave_cpulist", Kind::Text),
    ("bind", Kind::Text),
    ("bind-source-addr", Kind::Text),
    ("bio_cpulist", Kind::Text),
    ("busy-reply-threshold", Kind::Number),
    ("client-output-buffer-limit", Kind::Text),
    ("client-query-buffer-limit", Kind::Number),
    ("cluster-allow-pubsubshard-when-down", Kind::YesNo),
    ("cluster-allow-reads-when-down", Kind::YesNo),
    ("cluster-allow-replica-migration", Kind::YesNo),
    ("cluster-announce-bus-port", Kind::Number),
    ("cluster-announce-hostname", Kind::Text),
    ("cluster-announce-ip", Kind::Text),
    ("cluster-announce-port", Kind::Number),
    ("cluster-announce-tls-port", Kind::Number),
    ("cluster-config-file", Kind::Text),
    ("cluster-enabled", Kind::YesNo),
    ("cluster-link-sendbuf-limit", Kind::Number),
    ("cluster-migration-barrier", Kind::Number),
    ("cluster-node-timeout", Kind::Number),
    ("cluster-port", Kind::Number),
    (
        "cluster-preferred-endpoint-type",
        Kind::OneOf(&["ip", "hostname", "unknown-endpoint"]),
    ),
    ("cluster-replica-no-failover", Kind::YesNo),
    ("cluster-replica-validity-factor", Kind::Number),
    ("cluster-require-full-coverage", Kind::YesNo),
    ("cluster-slave-no-failover", Kind::YesNo),
    ("cluster-slave-validity-factor", Kind::Number),
    ("crash-log-enabled", Kind::YesNo),
    ("crash-memcheck-enabled", Kind::YesNo),
    ("daemonize", Kind::YesNo),
    ("databases", Kind::Number),
    ("dbfilename", Kind::Text),
    ("dir", Kind::Text),
    ("disable-thp", Kind::YesNo),
    ("dynamic-hz", Kind::YesNo),
    ("enable-debug-command", Kind::OneOf(&["yes", "no", "local"])),
    (
        "enable-module-command",
        Kind::OneOf(&["yes", "no", "local"]),
    ),
    (
        "enable-protected-configs",
        Kind::OneOf(&["yes", "no", "local"]),
    ),
    ("hash-max-listpack-entries", Kind::Number),
    ("hash-max-listpack-value", Kind::Number),
    ("hash-max-ziplist-entries", Kind::Number),
    ("hash-max-ziplist-value", Kind::Number),
    ("hll-sparse-max-bytes", Kind::Number),
    ("hz", Kind::Number),
    ("ignore-warnings", Kind::Text),
    ("include", Kind::Text),
    ("io-threads", Kind::Number),
    ("io-threads-do-reads", Kind::YesNo),
    ("jemalloc-bg-thread", Kind::YesNo),
    ("latency-monitor-threshold", Kind::Number),
    ("latency-tracking", Kind::YesNo),
    ("latency-tracking-info-percentiles", Kind::Text),
    ("lazyfree-lazy-eviction", Kind::YesNo),
    ("lazyfree-lazy-expire", Kind::YesNo),
    ("lazyfree-lazy-server-del", Kind::YesNo),
    ("lazyfree-lazy-user-del", Kind::YesNo),
    ("lazyfree-lazy-user-flush", Kind::YesNo),
    ("lfu-decay-time", Kind::Number),
    ("lfu-log-factor", Kind::Number),
    ("list-compress-depth", Kind::Number),
    ("list-max-listpack-size", Kind::Number),
    ("list-max-ziplist-size", Kind::Number),
    ("loadmodule", Kind::Text),
    ("logfile", Kind::Text),
    (
        "loglevel",
        Kind::OneOf(&["debug", "verbose", "notice", "warning", "nothing"]),
    ),
    ("lua-time-limit", Kind::Number),
    ("masterauth", Kind::Text),
    ("masteruser", Kind::Text),
    ("maxclients", Kind::Number),
    ("maxmemory", Kind::Number),
    ("maxmemory-clients", Kind::Number),
    ("maxmemory-eviction-tenacity", Kind::Number),
    (
        "maxmemory-policy",
        Kind::OneOf(&[
            "volatile-lru",
            "allkeys-lru",
            "volatile-lfu",
            "allkeys-lfu",
            "volatile-random",
            "allkeys-random",
            "volatile-ttl",
            "noeviction",
        ]),
    ),
    ("maxmemory-samples", Kind::Number),
    ("min-replicas-max-lag", Kind::Number),
    ("min-replicas-to-write", Kind::Number),
    ("min-slaves-max-lag", Kind::Number),
    ("min-slaves-to-write", Kind::Number),
    ("no-appendfsync-on-rewrite", Kind::YesNo),
    ("notify-keyspace-events", Kind::Text),
    (
        "oom-score-adj",
        Kind::OneOf(&["no", "yes", "relative", "absolute"]),
    ),
    ("oom-score-adj-values", Kind::Text),
    ("pidfile", Kind::Text),
    ("port", Kind::Number),
    ("proc-title-template", Kind::Text),
    (
        "propagation-error-behavior",
        Kind::OneOf(&["ignore", "panic", "panic-on-replicas"]),
    ),
    ("protected-mode", Kind::YesNo),
    ("proto-max-bulk-len", Kind::Number),
    ("rdb-del-sync-files", Kind::YesNo),
    ("rdb-save-incremental-fsync", Kind::YesNo),
    ("rdbchecksum", Kind::YesNo),
    ("rdbcompression", Kind::YesNo),
    ("rename-command", Kind::Text),
    ("repl-backlog-size", Kind::Number),
    ("repl-backlog-ttl", Kind::Number),
    ("repl-disable-tcp-nodelay", Kind::YesNo),
    (
        "repl-diskless-load",
        Kind::OneOf(&["disabled", "on-empty-db", "swapdb"]),
    ),
    ("repl-diskless-sync", Kind::YesNo),
    ("repl-diskless-sync-delay", Kind::Number),
    ("repl-diskless-sync-max-replicas", Kind::Number),
    ("repl-ping-replica-period", Kind::Number),
    ("repl-ping-slave-period", Kind::Number),
    ("repl-timeout", Kind::Number),
    ("replica-announce-ip", Kind::Text),
    ("replica-announce-port", Kind::Number),
    ("replica-announced", Kind::YesNo),
    ("replica-ignore-disk-write-errors", Kind::YesNo),
    ("replica-ignore-maxmemory", Kind::YesNo),
    ("replica-lazy-flush", Kind::YesNo),
    ("replica-priority", Kind::Number),
    ("replica-read-only", Kind::YesNo),
    ("replica-serve-stale-data", Kind::YesNo),
    ("replicaof", Kind::Text),
    ("requirepass", Kind::Text),
    (
        "sanitize-dump-payload",
        Kind::OneOf(&["yes", "no", "clients"]),
    ),
    ("save", Kind::Text),
    ("server_cpulist", Kind::Text),
    ("set-max-intset-entries", Kind::Number),
    ("set-proc-title", Kind::YesNo),
    ("shutdown-on-sigint", Kind::Text),
    ("shutdown-on-sigterm", Kind::Text),
    ("shutdown-timeout", Kind::Number),
    ("slave-announce-ip", Kind::Text),
    ("slave-announce-port", Kind::Number),
    ("slave-ignore-maxmemory", Kind::YesNo),
    ("slave-lazy-flush", Kind::YesNo),
    ("slave-priority", Kind::Number),
    ("slave-read-only", Kind::YesNo),
    ("slave-serve-stale-data", Kind::YesNo),
    ("slaveof", Kind::Text),
    ("slowlog-log-slower-than", Kind::Number),
    ("slowlog-max-len", Kind::Number),
    ("socket-mark-id", Kind::Number),
    ("stop-writes-on-bgsave-error", Kind::YesNo),
    ("stream-node-max-bytes", Kind::Number),
    ("stream-node-max-entries", Kind::Number),
    (
        "supervised",
        Kind::OneOf(&["upstart", "systemd", "auto", "no"]),
    ),
    ("syslog-enabled", Kind::YesNo),
    (
        "syslog-facility",
        Kind::OneOf(&[
            "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
        ]),
    ),
    ("syslog-ident", Kind::Text),
    ("tcp-backlog", Kind::Number),
    ("tcp-keepalive", Kind::Number),
    ("timeout", Kind::Number),
    ("tls-auth-clients", Kind::YesNo),
    ("tls-ca-cert-dir", Kind::Text),
    ("tls-ca-cert-file", Kind::Text),
    ("tls-cert-file", Kind::Text),
    ("tls-ciphers", Kind::Text),
    ("tls-ciphersuites", Kind::Text),
    ("tls-client-cert-file", Kind::Text),
    ("tls-client-key-file", Kind::Text),
    ("tls-client-key-file-pass", Kind::Text),
    ("tls-cluster", Kind::YesNo),
    ("tls-dh-params-file", Kind::Text),
    ("tls-key-file", Kind::Text),
    ("tls-key-file-pass", Kind::Text),
    ("tls-port", Kind::Number),
    ("tls-prefer-server-ciphers", Kind::YesNo),
    ("tls-protocols", Kind::Text),
    ("tls-replication", Kind::YesNo),
    ("tls-session-cache-size", Kind::Number),
    ("tls-session-cache-timeout", Kind::Number),
    ("tls-session-caching", Kind::YesNo),
    ("tracking-table-max-keys", Kind::Number),
    ("unixsocket", Kind::Text),
    ("unixsocketperm", Kind::Number),
    ("user", Kind::Text),
    ("zset-max-listpack-entries", Kind::Number),
    ("zset-max-listpack-value", Kind::Number),
    ("zset-max-ziplist-entries", Kind::Number),
    ("zset-max-ziplist-value", Kind::Number),
];

/// Why `value` is not a valid value of `directive`, if it is not.
pub(crate) fn check(directive: &str, value: &str) -> Result<(), String> {
    let Ok(i) = DIRECTIVES.binary_search_by(|(name, _)| (*name).cmp(directive)) else {
        return Err(format!(
            "{directive} is not a redis.conf directive Redis 7 knows"
        ));
    };
    let ok = match DIRECTIVES[i].1 {
        Kind::YesNo => matches!(value, "yes" | "no"),
        Kind::Number => is_number(value),
        Kind::OneOf(words) => value.split(' ').all(|w| words.contains(&w)),
        Kind::Text => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid value: expected {}",
            expected(DIRECTIVES[i].1)
        ))
    }
}

fn is_number(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let unit = digits[end..].to_ascii_lowercase();
    end > 0 && ["", "k", "kb", "m", "mb", "g", "gb", "%"].contains(&unit.as_str())
}

fn expected(kind: Kind) -> String {
    match kind {
        Kind::YesNo => "yes or no".into(),
        Kind::Number => "an integer (a memory size such as 64mb, or a percentage)".into(),
        Kind::OneOf(words) => format!("one of {}", words.join(", ")),
        Kind::Text => "a single line".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_for_the_binary_search() {
        assert!(DIRECTIVES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn values_redis_refuses_are_refused() {
        assert!(check("timeout", "300").is_ok());
        assert!(check("timeout", "forever").unwrap_err().contains("integer"));
        assert!(check("client-query-buffer-limit", "1gb").is_ok());
        assert!(check("lazyfree-lazy-eviction", "yes").is_ok());
        assert!(check("lazyfree-lazy-eviction", "maybe").is_err());
        assert!(check("loglevel", "warning").is_ok());
        assert!(
            check("loglevel", "loud")
                .unwrap_err()
                .contains("one of debug")
        );
        assert!(check("enable-debug-command", "local").is_ok());
        assert!(
            check("no-such-directive", "x")
                .unwrap_err()
                .contains("not a redis.conf directive")
        );
        assert!(check("notify-keyspace-events", "Ex").is_ok());
    }
}
