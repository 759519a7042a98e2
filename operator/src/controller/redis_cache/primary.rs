//! With replication: which pod the Sentinels name as primary, and the role label that points
//! the client Service at it. The operator only reads Sentinel; it never resets or
//! reconfigures it, so a reconcile cannot undo a failover.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::roll::is_ready;
use super::secrets::{base_url, service_host};
use super::services::{PRIMARY, REPLICA, ROLE_LABEL, sentinel_name};
use super::settings::{REDIS_PORT, SENTINEL_PORT};
use crate::api::redis_cache::RedisReplica;
use crate::broker::{BrokerError, BrokerUrl};
use crate::controller::labels::OwnedBy;

/// Longest a look at the Sentinels may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a replicated cache's primary is looked at: a failover moves the client Service
/// within this (clients that follow Sentinel do not wait for it).
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(5);

/// What the Sentinels say of the primary.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PrimaryView {
    /// The pod they name.
    Named(String),
    /// Why no pod is named (no answer, or an address that is not one of the pods).
    Unknown(String),
}

/// The pod of an address the Sentinels give (`<pod>.<headless>.<ns>.svc`), if it is one of
/// the set `statefulset`'s.
pub(crate) fn pod_of(address: &str, statefulset: &str) -> Option<String> {
    let pod = address.split('.').next()?;
    pod.strip_prefix(statefulset)
        .and_then(|rest| rest.strip_prefix('-'))
        .filter(|ordinal| !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit()))
        .map(|_| pod.to_string())
}

/// `<command> <args>` on the server at `host:port`, within [`ASK_TIMEOUT`].
pub(super) async fn query<T: redis::FromRedisValue>(
    (host, port): (&str, i32),
    password: Option<&str>,
    command: &str,
    args: &[&str],
) -> Result<T, BrokerError> {
    let url = BrokerUrl::new(base_url(host, port, password));
    let ask = async {
        let mut conn = crate::broker::client(&url)
            .await?
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| BrokerError::Connect(BrokerError::describe(&e)))?;
        redis::cmd(command)
            .arg(args)
            .query_async(&mut conn)
            .await
            .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))
    };
    tokio::time::timeout(ASK_TIMEOUT, ask)
        .await
        .map_err(|_| BrokerError::Timeout(ASK_TIMEOUT))?
}

/// `SENTINEL <args>` on one of the Sentinels, through their Service.
async fn sentinel<T: redis::FromRedisValue>(
    owner: &OwnedBy,
    password: Option<&str>,
    args: &[&str],
) -> Result<T, BrokerError> {
    let host = service_host(&sentinel_name(&owner.name), &owner.namespace);
    query((&host, SENTINEL_PORT), password, "SENTINEL", args).await
}

/// `<command> <args>` on the primary, through the client Service.
async fn on_primary<T: redis::FromRedisValue>(
    owner: &OwnedBy,
    password: Option<&str>,
    command: &str,
    args: &[&str],
) -> Result<T, BrokerError> {
    let host = service_host(&owner.name, &owner.namespace);
    query((&host, REDIS_PORT), password, command, args).await
}

/// Replicas the Sentinels know as in sync with the primary (link up, not down): those a
/// failover can promote.
pub(crate) async fn replicas_in_sync(
    owner: &OwnedBy,
    password: Option<&str>,
) -> Result<usize, BrokerError> {
    let replicas: Vec<Vec<String>> = sentinel(owner, password, &["REPLICAS", &owner.name]).await?;
    Ok(replicas.iter().filter(|fields| in_sync(fields)).count())
}

/// One replica's fields (`name, value, ...`) as `SENTINEL REPLICAS` gives them.
fn in_sync(fields: &[String]) -> bool {
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| kv[0] == name)
            .and_then(|kv| kv.get(1))
            .map(String::as_str)
    };
    field("master-link-status") == Some("ok")
        && field("flags").is_some_and(|f| !f.contains("down") && !f.contains("disconnected"))
}

/// How long the primary holds writes while the Sentinels replace it: longer than they take
/// to promote a replica and demote it (seconds); the roll replaces its pod right after.
const PAUSE_WRITES_MS: u64 = 30_000;

/// The replicas as the primary sees them (`INFO replication`).
pub(crate) async fn replicas(
    owner: &OwnedBy,
    password: Option<&str>,
) -> Result<Vec<RedisReplica>, BrokerError> {
    let info: String = on_primary(owner, password, "INFO", &["replication"]).await?;
    Ok(replicas_of(&info, &owner.name))
}

/// The replicas of an `INFO replication` reply whose address is a pod of `statefulset`.
pub(crate) fn replicas_of(info: &str, statefulset: &str) -> Vec<RedisReplica> {
    let field = |line: &str, name: &str| -> Option<String> {
        line.split(',')
            .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name))
            .map(|(_, v)| v.trim().to_string())
    };
    let primary_offset: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains(":ip="))
        .filter_map(|l| {
            let (_, fields) = l.split_once(':')?;
            let number = |name| field(fields, name).and_then(|v| v.parse::<i64>().ok());
            Some(RedisReplica {
                pod: pod_of(&field(fields, "ip")?, statefulset)?,
                state: field(fields, "state")?,
                lag_bytes: (primary_offset - number("offset")?).max(0),
                lag_seconds: number("lag")?,
            })
        })
        .collect()
}

/// Asks the Sentinels to promote a replica now (a controlled failover, no waiting for the
/// primary to be seen down). The primary first stops taking writes: one it took after the
/// promotion and before its own demotion would be lost (its clients' connections stay on it
/// until then); held, such a write fails once it is a replica and is pushed again on the new
/// primary. A failover already going on is left to finish.
pub(crate) async fn fail_over(owner: &OwnedBy, password: Option<&str>) -> Result<(), BrokerError> {
    let pause = PAUSE_WRITES_MS.to_string();
    on_primary::<()>(owner, password, "CLIENT", &["PAUSE", &pause, "WRITE"]).await?;
    match sentinel::<()>(owner, password, &["FAILOVER", &owner.name]).await {
        Err(BrokerError::Command(e)) if e.contains("INPROG") => Ok(()),
        other => other,
    }
}

/// Asks the Sentinel Service which address the primary of `owner` has.
pub(crate) async fn ask(owner: &OwnedBy, password: Option<&str>) -> PrimaryView {
    let address: Result<Option<Vec<String>>, _> =
        sentinel(owner, password, &["get-master-addr-by-name", &owner.name]).await;
    match address.map(|a| a.and_then(|a| a.into_iter().next())) {
        Ok(Some(address)) => match pod_of(&address, &owner.name) {
            Some(pod) => PrimaryView::Named(pod),
            None => PrimaryView::Unknown(format!(
                "the Sentinels name {address}, which is not a pod of StatefulSet {}",
                owner.name
            )),
        },
        Ok(None) => PrimaryView::Unknown("the Sentinels know no primary yet".into()),
        Err(err) => PrimaryView::Unknown(format!("the Sentinels do not answer: {err}")),
    }
}

/// The role label each pod of the set should have, given the primary.
pub(crate) fn roles(statefulset: &str, pods: i32, primary: &str) -> Vec<(String, &'static str)> {
    (0..pods)
        .map(|n| format!("{statefulset}-{n}"))
        .map(|pod| {
            let role = if pod == primary { PRIMARY } else { REPLICA };
            (pod, role)
        })
        .collect()
}

/// Puts the role labels on the pods (a pod not there yet is labelled on a later look); a
/// primary that is not ready gets none, so the client Service waits for it.
pub(crate) async fn label(
    pods: &Api<Pod>,
    listed: &[Pod],
    statefulset: &str,
    count: i32,
    primary: &str,
) -> Result<(), kube::Error> {
    // The Sentinels go on naming a lost primary until `downAfter` passes; its replacement
    // pod, not ready yet, must not get the label: it will start as a replica.
    let ready = listed
        .iter()
        .any(|p| p.metadata.name.as_deref() == Some(primary) && is_ready(p));
    let primary = if ready { primary } else { "" };
    // The old primary loses its label first: the client Service never selects two pods.
    let mut roles = roles(statefulset, count, primary);
    roles.sort_by_key(|(_, role)| *role == PRIMARY);
    for (pod, role) in roles {
        let patch = json!({"metadata": {"labels": {ROLE_LABEL: role}}});
        match pods
            .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_names_a_pod_only_of_its_own_set() {
        assert_eq!(
            pod_of("broker-1.broker-headless.shop.svc", "broker").as_deref(),
            Some("broker-1")
        );
        assert_eq!(pod_of("broker-12", "broker").as_deref(), Some("broker-12"));
        assert_eq!(pod_of("broker-sentinel-0.x.shop.svc", "broker"), None);
        assert_eq!(pod_of("brokerx-0.x", "broker"), None);
        assert_eq!(pod_of("10.245.0.7", "broker"), None);
        assert_eq!(pod_of("broker-.x", "broker"), None);
    }

    #[test]
    fn one_pod_is_primary_and_the_others_replicas() {
        assert_eq!(
            roles("b", 3, "b-1"),
            vec![
                ("b-0".to_string(), REPLICA),
                ("b-1".to_string(), PRIMARY),
                ("b-2".to_string(), REPLICA)
            ]
        );
        assert!(
            roles("b", 3, "elsewhere")
                .iter()
                .all(|(_, r)| *r == REPLICA),
            "a primary outside the set labels none"
        );
    }

    #[test]
    fn a_replica_is_in_sync_with_its_link_up_and_not_down() {
        let replica = |flags: &str, link: &str| -> Vec<String> {
            ["name", "b-1", "flags", flags, "master-link-status", link]
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        assert!(in_sync(&replica("slave", "ok")));
        assert!(!in_sync(&replica("slave", "err")));
        assert!(!in_sync(&replica("s_down,slave,disconnected", "ok")));
        assert!(!in_sync(&["name".to_string(), "b-1".to_string()]));
    }

    #[test]
    fn replicas_and_their_lag_come_from_the_primarys_info() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=b-1.b-headless.shop.svc,port=6379,state=online,offset=900,lag=0\r\n\
            slave1:ip=b-2.b-headless.shop.svc,port=6379,state=wait_bgsave,offset=0,lag=3\r\n\
            slave2:ip=10.0.0.9,port=6379,state=online,offset=1000,lag=0\r\n\
            master_repl_offset:1000\r\n";
        assert_eq!(
            replicas_of(info, "b"),
            vec![
                RedisReplica {
                    pod: "b-1".into(),
                    state: "online".into(),
                    lag_bytes: 100,
                    lag_seconds: 0
                },
                RedisReplica {
                    pod: "b-2".into(),
                    state: "wait_bgsave".into(),
                    lag_bytes: 1000,
                    lag_seconds: 3
                },
            ],
            "an address that is no pod of the set is left out"
        );
    }
}
