//! The autoscaling loop: polls the load of every autoscaled pool, decides its replicas with the
//! pure `crate::autoscale::decide`, marks busy pods with a higher deletion cost, and asks the
//! controller to reconcile a pool when its decision (or reachability) changes; the reconcile
//! then applies the replicas and writes status, so the Deployment has one writer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client};
use tokio::sync::Mutex;

use super::heartbeats::{Heartbeats, pod_of_pool};
use super::load::{self, PoolKeys};
use crate::api::WorkerPool;
use crate::autoscale::{Decision, History, Load, Policy, decide};
use crate::broker::{BrokerUrl, Connections, UrlUsers};
use crate::metrics::Metrics;

/// The annotation the ReplicaSet controller reads to pick which pods to remove first.
pub(crate) const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Status (waiting, in flight) is refreshed at most this often when only the load moved.
const STATUS_REFRESH: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(100);

/// What the autoscaler needs of one pool, set by its reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub url: BrokerUrl,
    pub keys: PoolKeys,
    pub policy: Policy,
    pub poll_interval: Duration,
}

/// The latest reading and decision of one pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub load: Load,
    pub decision: Decision,
    /// Set while the broker cannot be read; the decision is then the last good one.
    pub error: Option<String>,
    pub last_scale_time: Option<DateTime<Utc>>,
}

struct PoolState {
    target: Target,
    history: History,
    measurement: Option<Measurement>,
    next_poll: tokio::time::Instant,
    last_trigger: Option<tokio::time::Instant>,
    /// Pods this loop marked with a deletion cost, and the cost.
    marked: BTreeMap<String, u64>,
    /// The Deployment's replicas when autoscaling of the pool started in this process: held
    /// while the broker cannot be read before a first reading.
    running: Option<u32>,
}

pub struct Autoscaler {
    pools: Mutex<HashMap<ObjectRef<WorkerPool>, PoolState>>,
    /// Brokers with a poll under way; they are skipped until it ends.
    polling: std::sync::Mutex<HashSet<BrokerUrl>>,
    connections: Connections,
    heartbeats: Heartbeats,
    /// Pools per broker URL, so the last pool to go closes the broker's connections.
    users: std::sync::Mutex<UrlUsers>,
    trigger: UnboundedSender<ObjectRef<WorkerPool>>,
    client: Client,
    metrics: Arc<Metrics>,
}

impl Autoscaler {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        trigger: UnboundedSender<ObjectRef<WorkerPool>>,
    ) -> Self {
        Self {
            pools: Mutex::default(),
            polling: std::sync::Mutex::default(),
            connections: Connections::new(),
            heartbeats: Heartbeats::default(),
            users: std::sync::Mutex::default(),
            trigger,
            client,
            metrics,
        }
    }

    /// Starts (or updates) autoscaling a pool; called by its reconcile. `running` is the
    /// Deployment's replicas, if it exists: after an operator restart or failover the
    /// stabilization window starts from them, so a new leader never scales in at once.
    pub async fn register(&self, key: ObjectRef<WorkerPool>, target: Target, running: Option<u32>) {
        let mut pools = self.pools.lock().await;
        match pools.get_mut(&key) {
            Some(state) if state.target == target => {}
            Some(state) => {
                self.use_url(&target.url);
                let old = std::mem::replace(&mut state.target, target);
                state.next_poll = tokio::time::Instant::now();
                self.release(&old.url).await;
            }
            None => {
                self.use_url(&target.url);
                let history = running
                    .map(|r| History::resumed(r, Utc::now()))
                    .unwrap_or_default();
                pools.insert(
                    key,
                    PoolState {
                        target,
                        history,
                        measurement: None,
                        next_poll: tokio::time::Instant::now(),
                        last_trigger: None,
                        marked: BTreeMap::new(),
                        running,
                    },
                );
            }
        }
    }

    /// Stops autoscaling a pool (deleted, or autoscaling removed from its spec).
    pub async fn unregister(&self, key: &ObjectRef<WorkerPool>) {
        let removed = self.pools.lock().await.remove(key);
        if let Some(state) = removed {
            self.release(&state.target.url).await;
        }
    }

    /// Stops autoscaling every pool `live` says is gone.
    pub(crate) async fn retain(&self, live: impl Fn(&ObjectRef<WorkerPool>) -> bool) {
        let gone: Vec<ObjectRef<WorkerPool>> = {
            let pools = self.pools.lock().await;
            pools.keys().filter(|k| !live(k)).cloned().collect()
        };
        for key in gone {
            self.unregister(&key).await;
        }
    }

    fn use_url(&self, url: &BrokerUrl) {
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .add(url);
    }

    /// One pool less reads `url`; the last one closes the broker's connection and heartbeat
    /// subscriptions (a deleted pool, a changed password).
    async fn release(&self, url: &BrokerUrl) {
        let last = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .release(url);
        if last {
            self.connections.forget(url).await;
            self.heartbeats.forget(url).await;
        }
    }

    pub async fn measurement(&self, key: &ObjectRef<WorkerPool>) -> Option<Measurement> {
        self.pools
            .lock()
            .await
            .get(key)
            .and_then(|s| s.measurement.clone())
    }

    /// Polls due pools forever.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(TICK).await;
            self.poll_due().await;
        }
    }

    /// Starts one poll per broker with due pools. A broker whose last poll is still under way
    /// is skipped, so a slow or unreachable broker never delays the pools of another.
    async fn poll_due(self: &Arc<Self>) {
        let now = tokio::time::Instant::now();
        let mut by_url: HashMap<BrokerUrl, Vec<(ObjectRef<WorkerPool>, Target)>> = HashMap::new();
        {
            let mut pools = self.pools.lock().await;
            let mut polling = self
                .polling
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (key, state) in pools.iter_mut() {
                if state.next_poll <= now && !polling.contains(&state.target.url) {
                    state.next_poll = now + state.target.poll_interval;
                    by_url
                        .entry(state.target.url.clone())
                        .or_default()
                        .push((key.clone(), state.target.clone()));
                }
            }
            polling.extend(by_url.keys().cloned());
        }
        for (url, due) in by_url {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let _done = PollDone {
                    autoscaler: &this,
                    url: &url,
                };
                this.poll_broker(&url, &due).await;
            });
        }
    }

    /// Reads the load of every due pool of one broker in one pipeline and decides each.
    async fn poll_broker(&self, url: &BrokerUrl, due: &[(ObjectRef<WorkerPool>, Target)]) {
        let keys: Vec<PoolKeys> = due.iter().map(|(_, t)| t.keys.clone()).collect();
        let result = match self.connections.get(url).await {
            Ok(mut conn) => load::read(&mut conn, &keys).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.connections.forget(url).await;
        }
        // Workers publish heartbeats under their transport's key prefix.
        let mut running_by_prefix: HashMap<&str, HashMap<String, u64>> = HashMap::new();
        for (i, (key, target)) in due.iter().enumerate() {
            let reading = match &result {
                Ok(loads) => {
                    let prefix = target.keys.transport.global_key_prefix.as_str();
                    if !running_by_prefix.contains_key(prefix) {
                        let running = self.heartbeats.active(url, prefix).await;
                        running_by_prefix.insert(prefix, running);
                    }
                    let busy: BTreeMap<String, u64> = running_by_prefix
                        .get(prefix)
                        .into_iter()
                        .flatten()
                        .filter_map(|(host, n)| {
                            pod_of_pool(host, &target.name).map(|pod| (pod.to_string(), *n))
                        })
                        .collect();
                    let running_total: u64 = busy.values().sum();
                    let q = loads.get(i).copied().unwrap_or_default();
                    Ok((
                        Load {
                            waiting: q.waiting,
                            in_flight: q.reserved + running_total,
                        },
                        busy,
                    ))
                }
                Err(e) => Err(e.to_string()),
            };
            self.update(key, target, reading).await;
        }
    }

    async fn update(
        &self,
        key: &ObjectRef<WorkerPool>,
        target: &Target,
        reading: Result<(Load, BTreeMap<String, u64>), String>,
    ) {
        let now = Utc::now();
        let (trigger, to_mark) = {
            let mut pools = self.pools.lock().await;
            let Some(state) = pools.get_mut(key) else {
                return;
            };
            let previous = state.measurement.clone();
            let (measurement, busy) = match reading {
                Ok((load, busy)) => {
                    let decision = decide(&target.policy, load, now, &mut state.history);
                    let scaled = match &previous {
                        Some(p) => p.decision.desired != decision.desired,
                        // The first reading scaled only if it moved what runs (or the minimum
                        // the Deployment starts with).
                        None => {
                            decision.desired != state.running.unwrap_or(target.policy.min_replicas)
                        }
                    };
                    let last_scale_time = if scaled {
                        Some(now)
                    } else {
                        previous.as_ref().and_then(|p| p.last_scale_time)
                    };
                    (
                        Measurement {
                            load,
                            decision,
                            error: None,
                            last_scale_time,
                        },
                        Some(busy),
                    )
                }
                // Unreachable broker: hold the last decision, or before any reading the
                // replicas that run, so a restart while Redis is down never scales in.
                Err(error) => match &previous {
                    Some(p) => (
                        Measurement {
                            error: Some(error),
                            ..p.clone()
                        },
                        None,
                    ),
                    None => {
                        let desired = state.running.unwrap_or(target.policy.min_replicas);
                        let decision = Decision {
                            desired,
                            limited: None,
                        };
                        (
                            Measurement {
                                load: Load::default(),
                                decision,
                                error: Some(error),
                                last_scale_time: None,
                            },
                            None,
                        )
                    }
                },
            };
            let labels = crate::metrics::PoolLabels {
                namespace: target.namespace.clone(),
                name: target.name.clone(),
            };
            self.metrics
                .pool_backlog
                .get_or_create(&labels)
                .set(i64::try_from(measurement.load.total()).unwrap_or(i64::MAX));
            self.metrics
                .pool_desired_replicas
                .get_or_create(&labels)
                .set(i64::from(measurement.decision.desired));
            let changed = previous.as_ref().is_none_or(|p| {
                p.decision != measurement.decision
                    || p.error.is_some() != measurement.error.is_some()
            });
            let load_moved = previous
                .as_ref()
                .is_some_and(|p| p.load != measurement.load);
            let stale = state
                .last_trigger
                .is_none_or(|t| t.elapsed() >= STATUS_REFRESH);
            let trigger = changed || (load_moved && stale);
            if trigger {
                state.last_trigger = Some(tokio::time::Instant::now());
            }
            state.measurement = Some(measurement);
            let to_mark = busy
                .map(|busy| deletion_cost_changes(&state.marked, &busy))
                .unwrap_or_default();
            (trigger, to_mark)
        };
        if trigger {
            let _ = self.trigger.unbounded_send(key.clone());
        }
        if to_mark.is_empty() {
            return;
        }
        let marked = self.mark_pods(&target.namespace, to_mark).await;
        // Only patches that took effect are remembered, so a failed one is retried next poll.
        if let Some(state) = self.pools.lock().await.get_mut(key) {
            for (pod, cost) in marked {
                if cost == 0 {
                    state.marked.remove(&pod);
                } else {
                    state.marked.insert(pod, cost);
                }
            }
        }
    }

    /// Busy pods get a deletion cost equal to their running tasks, so scale-in removes idle
    /// pods first; a pod that became idle goes back to 0. Returns the changes that hold now:
    /// the patched pods, and pods that no longer exist (nothing left to mark).
    async fn mark_pods(&self, namespace: &str, changes: Vec<(String, u64)>) -> Vec<(String, u64)> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut done = Vec::with_capacity(changes.len());
        for (pod, cost) in changes {
            let patch = serde_json::json!({"metadata": {"annotations": {DELETION_COST_ANNOTATION: cost.to_string()}}});
            match pods
                .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => done.push((pod, cost)),
                Err(kube::Error::Api(e)) if e.code == 404 => done.push((pod, 0)),
                Err(err) => {
                    tracing::warn!(pod = %pod, error = %err, "could not set the pod deletion cost; retrying next poll");
                }
            }
        }
        done
    }
}

/// Ends a broker's poll in [`Autoscaler::polling`], also if the poll panics.
struct PollDone<'a> {
    autoscaler: &'a Autoscaler,
    url: &'a BrokerUrl,
}

impl Drop for PollDone<'_> {
    fn drop(&mut self) {
        self.autoscaler
            .polling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(self.url);
    }
}

/// The deletion-cost patches that bring the marked pods to `busy` (running tasks per pod):
/// busy pods to their count, pods no longer busy back to 0.
fn deletion_cost_changes(
    marked: &BTreeMap<String, u64>,
    busy: &BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    let mut changes: Vec<(String, u64)> = busy
        .iter()
        .filter(|(pod, n)| **n > 0 && marked.get(*pod) != Some(n))
        .map(|(pod, n)| (pod.clone(), *n))
        .collect();
    changes.extend(
        marked
            .keys()
            .filter(|pod| busy.get(*pod).is_none_or(|n| *n == 0))
            .map(|pod| (pod.clone(), 0)),
    );
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletion_costs_follow_running_tasks_and_return_to_zero() {
        let marked: BTreeMap<String, u64> = [("a".into(), 2), ("b".into(), 1)].into();
        let busy: BTreeMap<String, u64> =
            [("a".into(), 2), ("b".into(), 0), ("c".into(), 3)].into();
        assert_eq!(
            deletion_cost_changes(&marked, &busy),
            [("c".to_string(), 3), ("b".to_string(), 0)]
        );
        // Nothing changed: no patch.
        assert!(deletion_cost_changes(&marked, &marked).is_empty());
    }
}
