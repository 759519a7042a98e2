//! The data plane beside the cluster: the redis.conf the operator renders is loaded by a real
//! redis-server, and the worker command line it renders runs a real Celery worker.

use std::collections::BTreeMap;
use std::path::PathBuf;

use celery_operator::api::redis_cache::{Persistence, PersistenceMode, Purpose, RedisCacheSpec};
use celery_operator::api::shared::BrokerRef;
use celery_operator::api::worker_pool::{WorkerPoolKind, WorkerPoolSpec};
use celery_operator::controller::OwnedBy;
use celery_operator::controller::broker_ref as broker;
use celery_operator::controller::redis_cache::{config_map, secrets, settings};
use celery_operator::controller::worker_pool::deployment;
use celery_operator_e2e::celery::{CeleryWorker, expand_env, python};
use celery_operator_e2e::redis::RedisServer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Writes a rendered redis.conf for this host into a fresh directory: the pod's data volume
/// `/data` becomes that directory (redis chdirs to it while reading the file). Returns the
/// directory and the file.
fn write_host_conf(conf: &str) -> (PathBuf, PathBuf) {
    assert_eq!(
        conf.lines().filter(|l| *l == "dir /data").count(),
        1,
        "the pod's data volume is /data"
    );
    let dir =
        std::env::temp_dir().join(format!("e2e-redis-data-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("data dir");
    let path = dir.join("redis.conf");
    std::fs::write(
        &path,
        conf.replace("dir /data", &format!("dir {}", dir.display())),
    )
    .expect("write conf");
    (dir, path)
}

fn start_with_rendered_conf(spec: &RedisCacheSpec, password: Option<&str>) -> RedisServer {
    let conf = config_map::render_redis_conf(&settings::resolve(spec).expect("valid spec"));
    // Port and dir are overridden on the command line, which the pod does the same way for
    // --requirepass.
    let (dir, path) = write_host_conf(&conf);
    let redis = RedisServer::start(Some(&path), password, &[]);
    // Loaded: the server keeps its data in a directory of its own.
    let _ = std::fs::remove_dir_all(dir);
    redis
}

#[test]
fn broker_conf_loads_in_real_redis_with_the_requested_settings() {
    let spec = RedisCacheSpec {
        purpose: Purpose::Broker,
        max_memory: Some(Quantity("100Mi".into())),
        config: BTreeMap::from([("timeout".to_string(), "300".to_string())]),
        ..Default::default()
    };
    let redis = start_with_rendered_conf(&spec, Some("s3cret"));
    assert_eq!(redis.config_get("maxmemory"), "104857600");
    assert_eq!(redis.config_get("maxmemory-policy"), "noeviction");
    assert_eq!(redis.config_get("appendonly"), "yes");
    assert_eq!(redis.config_get("appendfsync"), "everysec");
    assert_eq!(redis.config_get("timeout"), "300");
    assert_eq!(redis.config_get("requirepass"), "s3cret");
    let anonymous = String::from_utf8_lossy(&redis.cli_anonymous(&["PING"]).stdout).into_owned();
    assert!(
        anonymous.contains("NOAUTH"),
        "unauthenticated clients are refused: {anonymous}"
    );
}

/// The pod's own command line: `sh -c START_SCRIPT` reading the rendered file (port and data
/// directory moved for the host), with the passwords only in the environment: the password
/// Secret's and the clients' (the connection Secret's), both accepted while a rotation makes
/// them differ.
#[test]
fn the_pods_start_command_runs_redis_with_the_passwords_from_the_environment() {
    use celery_operator::controller::redis_cache::settings::REDIS_PORT;
    use celery_operator::controller::redis_cache::stateful_set::START_SCRIPT;
    use celery_operator_e2e::redis::free_port;

    let spec = RedisCacheSpec {
        purpose: Purpose::Broker,
        ..Default::default()
    };
    let conf = config_map::render_redis_conf(&settings::resolve(&spec).expect("valid spec"));
    let same = [
        ("REDIS_PASSWORD", "fr0m-env"),
        ("REDISCLI_AUTH", "fr0m-env"),
    ];
    let rotating = [("REDIS_PASSWORD", "n3w \"pass\""), ("REDISCLI_AUTH", "0ld")];
    for (env, accepted) in [
        (&same[..], &["fr0m-env"][..]),
        (&rotating[..], &["0ld", "n3w \"pass\""][..]),
        (&[][..], &[][..]),
    ] {
        let port = free_port();
        let port_line = format!("port {REDIS_PORT}");
        assert!(conf.lines().any(|l| l == port_line));
        let mut host_conf = conf.replace(&port_line, &format!("port {port}"));
        if accepted.is_empty() {
            // The pod's `bind * -::*` is loaded with auth above; unauthenticated, stay local.
            host_conf = host_conf.replace("bind * -::*", "bind 127.0.0.1");
        }
        let (dir, path) = write_host_conf(&host_conf);
        let script = START_SCRIPT.replace("/etc/redis/redis.conf", &path.display().to_string());
        let redis =
            RedisServer::start_pod_command(&script, env, dir, port, accepted.first().copied());
        assert_eq!(redis.config_get("appendonly"), "yes");
        let ping_as = |password: &str| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "PING"])
                .env("REDISCLI_AUTH", password)
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        for password in accepted {
            assert_eq!(ping_as(password), "PONG", "{password} is accepted");
        }
        let anonymous =
            String::from_utf8_lossy(&redis.cli_anonymous(&["PING"]).stdout).into_owned();
        if accepted.is_empty() {
            assert_eq!(anonymous.trim(), "PONG", "auth disabled: no password");
        } else {
            assert!(anonymous.contains("NOAUTH"), "{anonymous}");
            assert_ne!(ping_as("fr0m-elsewhere"), "PONG", "only those two");
        }
    }
}

#[test]
fn cache_conf_loads_in_real_redis_evicting_without_persistence() {
    let spec = RedisCacheSpec {
        max_memory: Some(Quantity("64Mi".into())),
        ..Default::default()
    };
    let redis = start_with_rendered_conf(&spec, None);
    assert_eq!(redis.config_get("maxmemory"), "67108864");
    assert_eq!(redis.config_get("maxmemory-policy"), "allkeys-lru");
    assert_eq!(redis.config_get("appendonly"), "no");
    assert_eq!(redis.config_get("save"), "");
}

#[test]
fn rdb_persistence_conf_snapshots() {
    let spec = RedisCacheSpec {
        persistence: Some(Persistence {
            mode: PersistenceMode::Rdb,
            ..Default::default()
        }),
        ..Default::default()
    };
    let redis = start_with_rendered_conf(&spec, None);
    assert_eq!(redis.config_get("appendonly"), "no");
    assert_eq!(redis.config_get("save"), "3600 1 300 100 60 10000");
}

/// The Deployment's container env as the kubelet would give it to the process: Secret
/// references replaced by the values the connection Secret would hold, then `$(VAR)` expanded.
fn container_env(
    d: &k8s_openapi::api::apps::v1::Deployment,
    secret_values: &BTreeMap<(String, String), String>,
) -> BTreeMap<String, String> {
    let c = &d
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod")
        .containers[0];
    let vars: Vec<(String, String)> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let value = match (
                &e.value,
                e.value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref()),
            ) {
                (Some(v), _) => v.clone(),
                (None, Some(sel)) => secret_values
                    .get(&(sel.name.clone(), sel.key.clone()))
                    .unwrap_or_else(|| panic!("no value for Secret {}/{}", sel.name, sel.key))
                    .clone(),
                _ => String::new(),
            };
            (e.name, value)
        })
        .collect();
    expand_env(&vars)
}

#[test]
fn rendered_worker_command_runs_real_celery_on_every_queue() {
    let redis = RedisServer::start(None, Some("w0rker"), &[]);
    let spec = WorkerPoolSpec {
        image: "unused".into(),
        app: "tasks".into(),
        queues: vec!["celery".into(), "mail".into()],
        concurrency: Some(2),
        pool: Some(WorkerPoolKind::Threads),
        prefetch_multiplier: Some(1),
        max_tasks_per_child: Some(50),
        max_memory_per_child: Some(500_000),
        extra_args: vec!["--without-gossip".into(), "--without-mingle".into()],
        broker: BrokerRef {
            redis_cache: Some("broker".into()),
            database: Some(0),
            ..Default::default()
        },
        result_backend: Some(BrokerRef {
            redis_cache: Some("broker".into()),
            database: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    let resolved = |db| broker::ResolvedBroker::RedisCache {
        connection_secret: "broker-connection".into(),
        database: db,
    };
    let mut url_env = broker::url_env("CELERY_BROKER_URL", &resolved(0));
    url_env.extend(broker::url_env("CELERY_RESULT_BACKEND", &resolved(1)));
    let d = deployment::build(deployment::Inputs {
        owner: &OwnedBy {
            name: "default".into(),
            namespace: "e2e".into(),
            ..Default::default()
        },
        spec: &spec,
        replicas: 1,
        url_env,
        secret_versions: BTreeMap::new(),
    });
    // What the RedisCache's connection Secret holds, pointed at the local Redis.
    let base = secrets::base_url("127.0.0.1", i32::from(redis.port), Some("w0rker"));
    let values = BTreeMap::from([(
        ("broker-connection".to_string(), "baseUrl".to_string()),
        base,
    )]);
    let env = container_env(&d, &values);
    assert_eq!(env["CELERY_BROKER_URL"], redis.url(0));
    assert_eq!(env["CELERY_RESULT_BACKEND"], redis.url(1));

    let c = &d
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod")
        .containers[0];
    assert_eq!(c.command.as_deref(), Some(&["celery".to_string()][..]));
    let worker = CeleryWorker::start(c.args.as_ref().expect("args"), &env);

    let out = python(
        r#"
from tasks import record
results = [record.apply_async(args=(q,), kwargs={"via": q}, queue=q) for q in ("celery", "mail")]
for r in results:
    entry = r.get(timeout=60)
    print(entry["queue"], entry["args"][0], entry["kwargs"]["via"])
"#,
        &env,
    );
    assert!(
        out.status.success(),
        "tasks did not run: {}\nworker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        worker.log_text()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "celery celery celery\nmail mail mail\n"
    );
    let log = worker.log_text();
    assert!(
        log.contains("concurrency: 2 (thread)"),
        "worker runs the flags the spec implies:\n{log}"
    );
}
