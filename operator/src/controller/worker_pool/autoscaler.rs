//! The autoscaling loop: polls the load of every autoscaled pool, decides its replicas with the
//! pure `crate::autoscale::decide`, marks busy pods with a higher deletion cost, and asks the
//! controller to reconcile a pool when its decision (or reachability) changes; the reconcile
//! then applies the replicas and writes status, so the Deployment has one writer.

use std::collections::{BTreeMap, HashMap};
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
use crate::broker::Connections;
use crate::metrics::Metrics;

/// The annotation the ReplicaSet controller reads to pick which pods to remove first.
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Status (waiting, in flight) is refreshed at most this often when only the load moved.
const STATUS_REFRESH: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(100);

/// What the autoscaler needs of one pool, set by its reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    /// Holds a password: never logged.
    pub url: String,
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
}

pub struct Autoscaler {
    pools: Mutex<HashMap<ObjectRef<WorkerPool>, PoolState>>,
    connections: Connections,
    heartbeats: Heartbeats,
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
            connections: Connections::new(),
            heartbeats: Heartbeats::default(),
            trigger,
            client,
            metrics,
        }
    }

    /// Starts (or updates) autoscaling a pool; called by its reconcile.
    pub async fn register(&self, key: ObjectRef<WorkerPool>, target: Target) {
        let mut pools = self.pools.lock().await;
        match pools.get_mut(&key) {
            Some(state) if state.target == target => {}
            Some(state) => {
                state.target = target;
                state.next_poll = tokio::time::Instant::now();
            }
            None => {
                pools.insert(
                    key,
                    PoolState {
                        target,
                        history: History::default(),
                        measurement: None,
                        next_poll: tokio::time::Instant::now(),
                        last_trigger: None,
                        marked: BTreeMap::new(),
                    },
                );
            }
        }
    }

    /// Stops autoscaling a pool (deleted, or autoscaling removed from its spec).
    pub async fn unregister(&self, key: &ObjectRef<WorkerPool>) {
        self.pools.lock().await.remove(key);
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

    async fn poll_due(&self) {
        let now = tokio::time::Instant::now();
        // Due pools grouped by broker, so each broker gets one pipeline per poll.
        let mut by_url: HashMap<String, Vec<(ObjectRef<WorkerPool>, Target)>> = HashMap::new();
        {
            let mut pools = self.pools.lock().await;
            for (key, state) in pools.iter_mut() {
                if state.next_poll <= now {
                    state.next_poll = now + state.target.poll_interval;
                    by_url
                        .entry(state.target.url.clone())
                        .or_default()
                        .push((key.clone(), state.target.clone()));
                }
            }
        }
        for (url, due) in by_url {
            let keys: Vec<PoolKeys> = due.iter().map(|(_, t)| t.keys.clone()).collect();
            let result = match self.connections.get(&url).await {
                Ok(mut conn) => load::read(&mut conn, &keys).await,
                Err(e) => Err(e),
            };
            if result.is_err() {
                self.connections.forget(&url).await;
            }
            let running = self.heartbeats.active(&url).await;
            for (i, (key, target)) in due.iter().enumerate() {
                let reading = match &result {
                    Ok(loads) => {
                        let busy: BTreeMap<String, u64> = running
                            .iter()
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
                    let scaled = previous
                        .as_ref()
                        .is_none_or(|p| p.decision.desired != decision.desired);
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
                // Unreachable broker: hold the last decision (and the replicas).
                Err(error) => match &previous {
                    Some(p) => (
                        Measurement {
                            error: Some(error),
                            ..p.clone()
                        },
                        None,
                    ),
                    None => {
                        let desired = target.policy.min_replicas;
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
            let to_mark = busy.map(|busy| {
                let busy: BTreeMap<String, u64> =
                    busy.into_iter().filter(|(_, n)| *n > 0).collect();
                let mut changes = Vec::new();
                for (pod, n) in &busy {
                    if state.marked.get(pod) != Some(n) {
                        changes.push((pod.clone(), *n));
                    }
                }
                for pod in state.marked.keys() {
                    if !busy.contains_key(pod) {
                        changes.push((pod.clone(), 0));
                    }
                }
                state.marked = busy;
                changes
            });
            (trigger, to_mark.unwrap_or_default())
        };
        if trigger {
            let _ = self.trigger.unbounded_send(key.clone());
        }
        self.mark_pods(&target.namespace, to_mark).await;
    }

    /// Busy pods get a deletion cost equal to their running tasks, so scale-in removes idle
    /// pods first; a pod that became idle goes back to 0.
    async fn mark_pods(&self, namespace: &str, changes: Vec<(String, u64)>) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        for (pod, cost) in changes {
            let patch = serde_json::json!({"metadata": {"annotations": {DELETION_COST_ANNOTATION: cost.to_string()}}});
            if let Err(err) = pods
                .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(pod = %pod, error = %err, "could not set the pod deletion cost");
            }
        }
    }
}
