//! Rotating the password with no failed command. The password Secret holds the password
//! wanted; the connection Secret the one clients use. While they differ, or until the old
//! one is gone, each reconcile takes one step:
//! 1. every server (the Redis pods and the Sentinels) is made to accept the new password as
//!    well as the old (`ACL SETUSER default >new`);
//! 2. once all do, and the status shows the rotation (so that it is still known to go on
//!    once both Secrets hold the same password), clients move: the connection Secret gets
//!    the new password, and the WorkerPools that read it roll to it;
//! 3. once those have rolled, each server authenticates its own links with the new password
//!    (`masterauth`, the Sentinels' `auth-pass` and `sentinel-pass`) and drops every other
//!    (`ACL SETUSER default resetpass >new`).
//!
//! Connections authenticated before keep working through all of it. A server that starts
//! during a rotation accepts both passwords from its environment (see the start scripts),
//! so a pod lost mid-way does not stop it. The state lives in the servers' ACLs, the
//! connection Secret and the `PasswordRotated` condition, never in the operator.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::events::EventType;
use ring::digest::{SHA256, digest};

use super::primary::query;
use super::secrets;
use super::services::{headless_service_name, sentinel_headless_service_name, sentinel_name};
use super::settings::{REDIS_PORT, SENTINEL_PORT, Settings};
use crate::api::redis_cache::RedisCache;
use crate::broker::BrokerError;
use crate::controller::conditions::{Conditioned, Observed};
use crate::controller::labels::OwnedBy;
use crate::controller::worker_pool::deployment::SECRET_VERSIONS_ANNOTATION;
use crate::controller::{Context, Result};

/// How often a rotation is looked at while it goes on: each look takes one step.
pub(crate) const LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The condition a rotation writes; a cache whose password never changed has none.
const ROTATED: &str = "PasswordRotated";

/// A Redis pod or a Sentinel, at its pod's DNS name.
#[derive(Clone, Debug, PartialEq)]
struct Server {
    pod: String,
    host: String,
    port: i32,
    sentinel: bool,
}

/// Every server of a cache: `redis_pods` Redis pods and `sentinels` Sentinels.
fn servers(owner: &OwnedBy, redis_pods: i32, sentinels: i32) -> Vec<Server> {
    let (name, ns) = (&owner.name, &owner.namespace);
    let set = |statefulset: String, service: String, count: i32, port: i32, sentinel| {
        (0..count).map(move |n| Server {
            pod: format!("{statefulset}-{n}"),
            host: format!("{statefulset}-{n}.{service}.{ns}.svc"),
            port,
            sentinel,
        })
    };
    set(
        name.clone(),
        headless_service_name(name),
        redis_pods,
        REDIS_PORT,
        false,
    )
    .chain(set(
        sentinel_name(name),
        sentinel_headless_service_name(name),
        sentinels,
        SENTINEL_PORT,
        true,
    ))
    .collect()
}

/// How Redis shows a password in `ACL GETUSER`.
fn hash(password: &str) -> String {
    digest(&SHA256, password.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The next step of a rotation.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    /// Every server accepts the wanted password only, and clients use it.
    Done,
    /// These pods do not answer: nothing moves until they do (or restart, accepting both).
    Unreachable(Vec<String>),
    /// These servers do not accept the wanted password yet.
    Accept(Vec<Server>),
    /// Every server accepts it, but the object shows no rotation yet: status records it
    /// first, so that a reconcile failing after the clients moved still finds it going on.
    Record,
    /// Every server accepts it: clients may move to it.
    MoveClients,
    /// These Deployments and pods still run, or would start, with the old password.
    WaitForClients(Vec<String>),
    /// Clients have moved: the servers drop every other password.
    DropOld,
}

/// What to do, given the password hashes each server accepts (None: it did not answer),
/// whether clients were given the wanted password, whether the object's status shows this
/// rotation, and the client Deployments not rolled to it yet.
fn next(
    wanted: &str,
    clients_given_it: bool,
    recorded: bool,
    accepted: &[(Server, Option<Vec<String>>)],
    rolling: Vec<String>,
) -> Step {
    let unreachable: Vec<String> = accepted
        .iter()
        .filter(|(_, hashes)| hashes.is_none())
        .map(|(s, _)| s.pod.clone())
        .collect();
    if !unreachable.is_empty() {
        return Step::Unreachable(unreachable);
    }
    let wanted = hash(wanted);
    let hashes = accepted
        .iter()
        .map(|(s, h)| (s, h.as_deref().unwrap_or_default()));
    if !clients_given_it {
        let missing: Vec<Server> = hashes
            .filter(|(_, h)| !h.contains(&wanted))
            .map(|(s, _)| s.clone())
            .collect();
        return match (missing.is_empty(), recorded) {
            (false, _) => Step::Accept(missing),
            (true, false) => Step::Record,
            (true, true) => Step::MoveClients,
        };
    }
    if hashes.clone().all(|(_, h)| h == [wanted.clone()]) {
        Step::Done
    } else if !rolling.is_empty() {
        Step::WaitForClients(rolling)
    } else {
        Step::DropOld
    }
}

/// The condition a step shows.
fn condition(step: &Step) -> Observed {
    let names = |v: &[String]| v.join(", ");
    let (status, reason, message) = match step {
        Step::Done => (
            true,
            "Rotated",
            "every server accepts only the password of the password Secret, and clients use it"
                .to_string(),
        ),
        Step::Unreachable(pods) => (
            false,
            "ServerUnreachable",
            format!("rotating the password: waiting for {} to answer", names(pods)),
        ),
        Step::Accept(servers) => (
            false,
            "AcceptingNew",
            format!(
                "rotating the password: {} accept the new one next to the old",
                names(&servers.iter().map(|s| s.pod.clone()).collect::<Vec<_>>())
            ),
        ),
        Step::Record => (
            false,
            "AcceptedEverywhere",
            "rotating the password: every server accepts both; the connection Secret moves once this is recorded".to_string(),
        ),
        Step::MoveClients => (
            false,
            "MovingClients",
            "rotating the password: every server accepts both; the connection Secret moves to the new one".to_string(),
        ),
        Step::WaitForClients(clients) => (
            false,
            "WaitingForClients",
            format!(
                "rotating the password: waiting for {} to move to the new one",
                names(clients)
            ),
        ),
        Step::DropOld => (
            false,
            "DroppingOld",
            "rotating the password: clients use the new one; the servers drop the old".to_string(),
        ),
    };
    Observed::new(ROTATED, status, reason, message)
}

/// What still runs, or would start, with an older version of `secret` than `version`: the
/// Deployments whose pod template reads an older one (not rebuilt yet), and the pods made
/// from one, terminating ones included (a worker in its warm shutdown may reconnect).
fn rolling_clients(
    deployments: &[Deployment],
    pods: &[Pod],
    secret: &str,
    version: &str,
) -> Vec<String> {
    let stale = |meta: Option<&ObjectMeta>| {
        meta.and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(SECRET_VERSIONS_ANNOTATION))
            .and_then(|v| read_versions(v).remove(secret))
            .is_some_and(|seen| seen != version)
    };
    let templates = deployments
        .iter()
        .filter(|d| stale(d.spec.as_ref().and_then(|s| s.template.metadata.as_ref())))
        .filter_map(|d| d.metadata.name.as_ref())
        .map(|name| format!("Deployment {name}"));
    let finished = |p: &Pod| {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        matches!(phase, Some("Succeeded" | "Failed"))
    };
    let pods = pods
        .iter()
        .filter(|p| !finished(p) && stale(Some(&p.metadata)))
        .filter_map(|p| p.metadata.name.as_ref())
        .map(|name| format!("pod {name}"));
    templates.chain(pods).collect()
}

/// `name=version,...` as the annotation holds it.
fn read_versions(annotation: &str) -> BTreeMap<String, String> {
    annotation
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The password hashes `server` accepts, asked with a password it accepts.
async fn accepted(server: &Server, password: &str) -> Result<Vec<String>, BrokerError> {
    let user: Vec<redis::Value> = query(
        (&server.host, server.port),
        Some(password),
        "ACL",
        &["GETUSER", "default"],
    )
    .await?;
    let field = user.chunks(2).find(|kv| {
        matches!(&kv[0], redis::Value::BulkString(b) if b == b"passwords")
            || matches!(&kv[0], redis::Value::SimpleString(s) if s == "passwords")
    });
    let passwords = field
        .and_then(|kv| kv.get(1))
        .cloned()
        .unwrap_or(redis::Value::Nil);
    redis::from_redis_value(passwords).map_err(|e| BrokerError::Command(e.to_string()))
}

/// Makes `server` accept `wanted` next to what it accepts.
async fn accept(server: &Server, password: &str, wanted: &str) -> Result<(), BrokerError> {
    let add = format!(">{wanted}");
    query(
        (&server.host, server.port),
        Some(password),
        "ACL",
        &["SETUSER", "default", &add],
    )
    .await
}

/// Makes `server` authenticate its own links (to the primary, to Redis and to the other
/// Sentinels) with `wanted`, which every server accepts by now.
async fn authenticate_links_with(
    server: &Server,
    master_name: &str,
    wanted: &str,
) -> Result<(), BrokerError> {
    let at = (server.host.as_str(), server.port);
    if server.sentinel {
        query::<()>(
            at,
            Some(wanted),
            "SENTINEL",
            &["SET", master_name, "auth-pass", wanted],
        )
        .await?;
        query(
            at,
            Some(wanted),
            "SENTINEL",
            &["CONFIG", "SET", "sentinel-pass", wanted],
        )
        .await
    } else {
        query(at, Some(wanted), "CONFIG", &["SET", "masterauth", wanted]).await
    }
}

/// Makes `server` accept `wanted` only.
async fn drop_others(server: &Server, wanted: &str) -> Result<(), BrokerError> {
    let only = format!(">{wanted}");
    query(
        (&server.host, server.port),
        Some(wanted),
        "ACL",
        &["SETUSER", "default", "resetpass", &only],
    )
    .await
}

/// Moves every server's own links to `wanted`, which all of them accept, then drops every
/// other password; a server that fails stops it (the next look starts over).
async fn drop_old_password(
    servers: &[Server],
    master_name: &str,
    wanted: &str,
) -> std::result::Result<(), String> {
    for server in servers {
        authenticate_links_with(server, master_name, wanted)
            .await
            .map_err(|err| {
                format!(
                    "{} did not move its links to the new password: {err}",
                    server.pod
                )
            })?;
    }
    for server in servers {
        drop_others(server, wanted)
            .await
            .map_err(|err| format!("{} did not drop the old password: {err}", server.pod))?;
    }
    Ok(())
}

/// The password clients use after this reconcile's step of a rotation (see the module),
/// and the rotation's condition (None for a cache whose password never changed).
/// `connection` is the connection Secret as it was, holding the password clients use.
pub(crate) async fn rotate(
    ctx: &Context,
    rc: &RedisCache,
    owner: &OwnedBy,
    settings: &Settings,
    wanted: &str,
    connection: Option<&Secret>,
) -> Result<(String, Option<Observed>)> {
    let in_use = connection
        .and_then(|s| secrets::secret_value(s, secrets::PASSWORD_KEY))
        .unwrap_or_else(|| wanted.to_string());
    let previous = rc.conditions().iter().find(|c| c.type_ == ROTATED);
    // A rotation shown going on: with both Secrets equal, the only sign the old password
    // may still be accepted.
    let recorded = previous.is_some_and(|c| c.status != "True");
    if in_use == wanted && !recorded {
        let done = previous.map(|_| condition(&Step::Done));
        return Ok((in_use, done));
    }
    let (redis_pods, sentinels) = match &settings.replication {
        Some(r) => (1 + r.replicas, r.sentinels),
        None => (1, 0),
    };
    let servers = servers(owner, redis_pods, sentinels);
    let asked = futures::future::join_all(servers.iter().map(|s| accepted(s, &in_use)));
    let accepted: Vec<_> = servers
        .iter()
        .cloned()
        .zip(asked.await)
        .map(|(server, answer)| {
            if let Err(err) = &answer {
                tracing::debug!(pod = %server.pod, error = %err, "password rotation: no answer");
            }
            (server, answer.ok())
        })
        .collect();
    let rolling = match connection {
        Some(secret) if in_use == wanted => {
            let ns = &owner.namespace;
            let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
            let deployments = deployments.list(&ListParams::default()).await?.items;
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
            let pods = pods.list(&ListParams::default()).await?.items;
            let version = secret.metadata.resource_version.as_deref();
            let name = secrets::connection_secret_name(&owner.name);
            rolling_clients(&deployments, &pods, &name, version.unwrap_or_default())
        }
        _ => Vec::new(),
    };
    let step = next(wanted, in_use == wanted, recorded, &accepted, rolling);
    let servers: Vec<_> = accepted.into_iter().map(|(s, _)| s).collect();
    let mut client_password = in_use.clone();
    let done = match &step {
        Step::Accept(missing) => {
            let mut done = Ok("every server accepts the new password next to the old".into());
            for server in missing {
                if let Err(err) = accept(server, &in_use, wanted).await {
                    done = Err(format!(
                        "{} did not take the new password: {err}",
                        server.pod
                    ));
                }
            }
            done
        }
        Step::MoveClients => {
            client_password = wanted.to_string();
            Ok(format!(
                "connection Secret {} moved to the new password; the WorkerPools that read it roll to it",
                secrets::connection_secret_name(&owner.name)
            ))
        }
        Step::DropOld => drop_old_password(&servers, &owner.name, wanted)
            .await
            .map(|()| "every server accepts only the new password now".into()),
        _ => return Ok((client_password, Some(condition(&step)))),
    };
    match done {
        Ok(note) => ctx.publish(
            rc,
            EventType::Normal,
            "RotatingPassword",
            "RotatePassword",
            note,
        ),
        // The next look tries again from what the servers then accept.
        Err(note) => ctx.publish(
            rc,
            EventType::Warning,
            "RotationStalled",
            "RotatePassword",
            note,
        ),
    }
    Ok((client_password, Some(condition(&step))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::conditions::Status;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{PodStatus, PodTemplateSpec};

    fn owner() -> OwnedBy {
        OwnedBy {
            name: "b".into(),
            namespace: "shop".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_servers_are_every_redis_pod_and_every_sentinel_at_their_pod_names() {
        let s = servers(&owner(), 3, 3);
        assert_eq!(
            s.iter()
                .map(|s| (s.host.as_str(), s.port))
                .collect::<Vec<_>>(),
            [
                ("b-0.b-headless.shop.svc", 6379),
                ("b-1.b-headless.shop.svc", 6379),
                ("b-2.b-headless.shop.svc", 6379),
                ("b-sentinel-0.b-sentinel-headless.shop.svc", 26379),
                ("b-sentinel-1.b-sentinel-headless.shop.svc", 26379),
                ("b-sentinel-2.b-sentinel-headless.shop.svc", 26379),
            ]
        );
        assert_eq!(servers(&owner(), 1, 0).len(), 1, "one pod, no Sentinel");
    }

    #[test]
    fn the_hash_is_the_one_redis_shows() {
        // `ACL SETUSER default >old` then `ACL GETUSER default` on redis-server 7.0.15.
        assert_eq!(
            hash("old"),
            "cba06b5736faf67e54b07b561eae94395e774c517a7d910a54369e1263ccfbd4"
        );
    }

    fn acl(pod: &str, passwords: &[&str]) -> (Server, Option<Vec<String>>) {
        let server = servers(&owner(), 3, 0)
            .into_iter()
            .find(|s| s.pod == pod)
            .expect("pod");
        (server, Some(passwords.iter().map(|p| hash(p)).collect()))
    }

    #[test]
    fn a_rotation_accepts_the_new_password_everywhere_before_clients_get_it() {
        let some = [acl("b-0", &["old", "new"]), acl("b-1", &["old"])];
        match next("new", false, true, &some, Vec::new()) {
            Step::Accept(missing) => {
                assert_eq!(
                    missing.iter().map(|s| s.pod.as_str()).collect::<Vec<_>>(),
                    ["b-1"]
                )
            }
            other => panic!("{other:?}"),
        }
        let all = [acl("b-0", &["old", "new"]), acl("b-1", &["new", "old"])];
        assert_eq!(
            next("new", false, true, &all, Vec::new()),
            Step::MoveClients
        );
    }

    #[test]
    fn clients_move_only_once_the_rotation_is_recorded_in_status() {
        // Otherwise a reconcile failing after the move would leave both Secrets equal and no
        // condition: nothing would tell that the servers still accept the old password.
        let all = [acl("b-0", &["old", "new"]), acl("b-1", &["new", "old"])];
        assert_eq!(next("new", false, false, &all, Vec::new()), Step::Record);
        assert_eq!(condition(&Step::Record).status, Status::False);
    }

    #[test]
    fn the_old_password_goes_only_once_the_clients_rolled() {
        let both = [acl("b-0", &["old", "new"]), acl("b-1", &["old", "new"])];
        assert_eq!(
            next("new", true, true, &both, vec!["pool".into()]),
            Step::WaitForClients(vec!["pool".into()])
        );
        assert_eq!(next("new", true, true, &both, Vec::new()), Step::DropOld);
        let only = [acl("b-0", &["new"]), acl("b-1", &["new"])];
        assert_eq!(
            next("new", true, true, &only, vec!["pool".into()]),
            Step::Done
        );
    }

    #[test]
    fn a_server_that_does_not_answer_holds_every_step() {
        let mut some = vec![acl("b-0", &["old", "new"])];
        some.push((acl("b-1", &[]).0, None));
        assert_eq!(
            next("new", true, true, &some, Vec::new()),
            Step::Unreachable(vec!["b-1".into()])
        );
    }

    fn annotated(name: &str, versions: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            annotations: Some(BTreeMap::from([(
                SECRET_VERSIONS_ANNOTATION.to_string(),
                versions.to_string(),
            )])),
            ..Default::default()
        }
    }

    fn deployment(versions: &str) -> Deployment {
        Deployment {
            metadata: annotated("pool", ""),
            spec: Some(DeploymentSpec {
                template: PodTemplateSpec {
                    metadata: Some(annotated("", versions)),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(name: &str, versions: &str, phase: &str) -> Pod {
        Pod {
            metadata: annotated(name, versions),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn clients_have_moved_once_no_template_or_pod_reads_an_older_version() {
        let rolling = |d: &[Deployment], p: &[Pod]| rolling_clients(d, p, "b-connection", "7");
        let current = [deployment("b-connection=7")];
        assert_eq!(
            rolling(&current, &[pod("new", "b-connection=7", "Running")]),
            Vec::<String>::new()
        );
        assert_eq!(
            rolling(&[deployment("b-connection=6")], &[]),
            ["Deployment pool"],
            "not rebuilt yet: would start pods with the old password"
        );
        assert_eq!(
            rolling(&current, &[pod("old", "b-connection=6", "Running")]),
            ["pod old"],
            "still running, or terminating: a warm shutdown may reconnect"
        );
        assert_eq!(
            rolling(&current, &[pod("done", "b-connection=6", "Succeeded")]),
            Vec::<String>::new(),
            "finished"
        );
        assert_eq!(
            rolling(
                &[deployment("other-connection=1,x=2")],
                &[
                    pod("other", "other-connection=1", "Running"),
                    pod("plain", "", "Running")
                ]
            ),
            Vec::<String>::new(),
            "reads another Secret, or none"
        );
    }
}
