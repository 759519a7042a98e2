//! celery-operator as users run it: `helm install` of the chart with its defaults (two
//! replicas, leader election, the chart's ServiceAccount and RBAC, the admission webhook),
//! only the image set to the locally built one, on the real node; RedisCaches, WorkerPools and PeriodicTasks
//! applied with kubectl; Redis, Celery workers and the beat all in pods, nothing on the host.
//!
//! The chart's operator watches every namespace, so this binary installs it once for all its
//! tests (cargo runs test binaries one after another: no host-run operator of another binary
//! competes with it) and uninstalls it at the end; libtest-mimic gives it libtest's filters.
//! Every test is named `real_node_*`, skipped with the node (`E2E_REAL_NODE=0`).

mod autoscaling;
mod django_site;
mod failover;
mod redis;
mod replication;
mod support;
mod workers;

use std::future::Future;
use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};

/// Release and namespace of the chart under test.
const RELEASE: &str = "celery-operator";
const RELEASE_NAMESPACE: &str = "celery-operator";

/// A test body on its own runtime; a panic is the test's failure.
fn trial<F, Fut>(name: &str, body: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::test(name, move || {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| Failed::from(e.to_string()))?;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(body()))).map_err(
            |panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into())
                    .into()
            },
        )
    })
}

/// libtest's options that take a value (the next argument is not a filter).
const VALUE_OPTIONS: &[&str] = &[
    "--skip",
    "--test-threads",
    "--logfile",
    "--format",
    "--color",
    "-Z",
];

/// The command line split into libtest-mimic's arguments and the name filters: libtest takes
/// any number of filters (`run-e2e.sh -- a b` passes them to every test binary), libtest-mimic
/// one.
fn arguments() -> (Arguments, Vec<String>) {
    let mut options = Vec::new();
    let mut filters = Vec::new();
    let mut args = std::env::args();
    options.extend(args.next());
    while let Some(arg) = args.next() {
        if VALUE_OPTIONS.contains(&arg.as_str()) {
            options.push(arg);
            options.extend(args.next());
        } else if arg.starts_with('-') {
            options.push(arg);
        } else {
            filters.push(arg);
        }
    }
    (Arguments::from_iter(options), filters)
}

/// `name` matches `pattern` as libtest matches a filter or a `--skip`.
fn matches(args: &Arguments, name: &str, pattern: &str) -> bool {
    if args.exact {
        name == pattern
    } else {
        name.contains(pattern)
    }
}

/// What libtest would run of a test that passed the filters (`--skip`, `--ignored`).
fn selected(args: &Arguments, name: &str) -> bool {
    !args.ignored && !args.skip.iter().any(|s| matches(args, name, s))
}

fn main() -> ExitCode {
    let (args, filters) = arguments();
    let trials = vec![
        trial(
            "real_node_in_cluster_operator_replicas_run_from_the_chart_and_elect_one_leader",
            support::operator_replicas_run_from_the_chart_and_elect_one_leader,
        ),
        trial(
            "real_node_in_cluster_webhook_in_the_operator_pods_refuses_a_bad_manifest",
            support::webhook_in_the_operator_pods_refuses_a_bad_manifest,
        ),
        trial(
            "real_node_in_cluster_broker_serves_clients_of_its_connection_secret_keeps_data_and_rolls_on_config",
            redis::broker_serves_clients_of_its_connection_secret_keeps_data_and_rolls_on_config,
        ),
        trial(
            "real_node_in_cluster_cache_evicts_least_recently_used_keys_at_max_memory",
            redis::cache_evicts_least_recently_used_keys_at_max_memory,
        ),
        trial(
            "real_node_in_cluster_worker_pods_execute_the_periodic_tasks_and_store_results",
            workers::worker_pods_execute_the_periodic_tasks_and_store_results,
        ),
        trial(
            "real_node_in_cluster_autoscaling_from_zero_through_a_burst_and_back_loses_and_repeats_nothing",
            autoscaling::from_zero_through_a_burst_and_back_loses_and_repeats_nothing,
        ),
        trial(
            "real_node_in_cluster_fixed_pool_of_the_same_size_drains_the_same_burst_once",
            autoscaling::a_fixed_pool_of_the_same_size_drains_the_same_burst_once,
        ),
        trial(
            "real_node_in_cluster_django_site_serves_its_cached_ranking_and_mails_after_a_retry",
            django_site::django_site_serves_its_cached_ranking_refreshed_on_schedule_and_mails_after_a_retry,
        ),
        trial(
            "real_node_in_cluster_replicated_broker_killing_the_primary_promotes_a_replica_and_the_old_one_returns_as_replica",
            replication::killing_the_primary_promotes_a_replica_and_the_old_one_returns_as_replica,
        ),
        trial(
            "real_node_in_cluster_replicated_broker_five_primary_kills_under_every_second_tasks_lose_and_double_no_push",
            replication::five_primary_kills_under_every_second_tasks_lose_and_double_no_push,
        ),
        trial(
            "real_node_in_cluster_replicated_broker_a_config_change_rolls_replicas_first_then_fails_over_once",
            replication::a_config_change_rolls_replicas_first_then_fails_over_once,
        ),
        trial(
            "real_node_in_cluster_replicated_broker_rotating_the_password_under_traffic_fails_no_command_and_drops_the_old_one",
            replication::rotating_the_password_under_traffic_fails_no_command_and_drops_the_old_one,
        ),
        trial(
            "real_node_in_cluster_leader_pod_killed_standby_takes_over_every_slot_once",
            failover::leader_pod_killed_standby_takes_over_every_slot_once,
        ),
    ];
    let trials: Vec<Trial> = trials
        .into_iter()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| matches(&args, t.name(), f)))
        .collect();
    let wanted = trials.iter().any(|t| selected(&args, t.name()));
    // Installed only when a test of it runs (`--list` and filtered-out runs skip the chart).
    let release = (wanted && !args.list).then(|| support::release().install());
    // Killing an operator pod leaves the webhook Service routing to it for a moment, so an
    // apply by a test running beside it is refused (failurePolicy Fail): that test runs
    // after the others, alone.
    let (alone, beside): (Vec<Trial>, Vec<Trial>) = trials.into_iter().partition(|t| {
        t.name()
            .ends_with("leader_pod_killed_standby_takes_over_every_slot_once")
    });
    let mut failed = libtest_mimic::run(&args, beside).has_failed();
    if !alone.is_empty() {
        failed |= libtest_mimic::run(&args, alone).has_failed();
    }
    if failed && let Some(release) = &release {
        support::save_operator_logs(release);
    }
    drop(release);
    if failed {
        ExitCode::from(101)
    } else {
        ExitCode::SUCCESS
    }
}
