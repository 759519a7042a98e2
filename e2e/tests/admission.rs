//! The validating admission webhook, served by a host-run operator over TLS and registered
//! with the API server by URL: every manifest the controllers would refuse is refused at
//! `kubectl apply` with the field path in the message; the samples still apply; a rotated
//! certificate is served without a restart; with the operator stopped, `failurePolicy:
//! Fail` refuses rather than admits unchecked.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use celery_operator_e2e::operator::Operator;
use celery_operator_e2e::redis::free_port;
use celery_operator_e2e::{TestNamespace, apply_yaml, client, eventually, kubectl_with_input, ok};

/// Writes a CA and a serving certificate for 127.0.0.1 signed by it (`tls.crt`,
/// `tls.key`), with `serial`; returns the CA's PEM.
fn certificates(dir: &Path, serial: u32) -> String {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !dir.join("ca.crt").exists() {
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=e2e webhook CA",
        ]);
    }
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "next.key",
        "-out",
        "next.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "next.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-set_serial",
        &serial.to_string(),
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "next.crt",
    ]);
    // Key first, then certificate, each renamed into place: a reader never sees half a file.
    std::fs::rename(dir.join("next.key"), dir.join("tls.key")).expect("key");
    std::fs::rename(dir.join("next.crt"), dir.join("tls.crt")).expect("crt");
    std::fs::read_to_string(dir.join("ca.crt")).expect("ca")
}

/// The serial of the certificate the webhook serves now.
fn served_serial(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The webhook configuration, deleted when dropped (it is cluster-scoped).
struct Registration(String);

impl Registration {
    /// Without `ca` the operator is to fill the caBundle in.
    fn new(ns: &str, port: u16, ca: Option<&str>) -> Self {
        let name = format!("celery-operator-e2e-{ns}");
        let mut client_config =
            serde_json::json!({"url": format!("https://127.0.0.1:{port}/validate")});
        if let Some(ca) = ca {
            client_config["caBundle"] = BASE64.encode(ca).into();
        }
        let manifest = serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "validate.celeryoperator.io",
                "clientConfig": client_config,
                "rules": [{
                    "apiGroups": ["celeryoperator.io"], "apiVersions": ["v1alpha1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["periodictasks", "rediscaches", "workerpools"],
                }],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "timeoutSeconds": 5,
                "admissionReviewVersions": ["v1"],
            }],
        });
        ok(kubectl_with_input(
            &["apply", "-f", "-"],
            Some(&manifest.to_string()),
        ));
        Self(name)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = kubectl_with_input(&["delete", "validatingwebhookconfiguration", &self.0], None);
    }
}

const TASK: &str = "task: proj.tasks.refresh\n  broker: {redisCache: broker}\n";

fn task(name: usize, spec: &str) -> String {
    format!(
        "apiVersion: celeryoperator.io/v1alpha1\nkind: PeriodicTask\nmetadata: {{name: t{name}}}\nspec:\n  {TASK}  {spec}\n"
    )
}
fn cache(name: usize, spec: &str) -> String {
    format!(
        "apiVersion: celeryoperator.io/v1alpha1\nkind: RedisCache\nmetadata: {{name: c{name}}}\nspec:\n  {spec}\n"
    )
}
fn pool(name: usize, spec: &str) -> String {
    format!(
        "apiVersion: celeryoperator.io/v1alpha1\nkind: WorkerPool\nmetadata: {{name: w{name}}}\nspec:\n  image: x\n  app: proj\n  broker: {{redisCache: broker}}\n  {spec}\n"
    )
}

/// (kind builder, spec, what the refusal must name)
type Case = (fn(usize, &str) -> String, &'static str, &'static str);

/// Manifests the CRD schema and CEL let by and only the operator's own checks refuse.
#[rustfmt::skip]
const CORPUS: &[Case] = &[
    (task, "schedule: {crontab: {minute: '61'}}", "spec.schedule.crontab.minute"),
    (task, "schedule: {crontab: {minute: '60'}}", "spec.schedule.crontab.minute"),
    (task, "schedule: {crontab: {minute: '*/0'}}", "spec.schedule.crontab.minute"),
    (task, "schedule: {crontab: {minute: ','}}", "spec.schedule.crontab.minute"),
    (task, "schedule: {crontab: {minute: '5-'}}", "spec.schedule.crontab.minute"),
    (task, "schedule: {crontab: {minute: '-5'}}", "spec.schedule.crontab.minute"),
    (task, "schedule: {crontab: {minute: '0-60'}}", "spec.schedule.crontab.minute"),
    (task, "schedule: {crontab: {minute: 'a'}}", "spec.schedule.crontab.minute"),
    (task, "schedule: {crontab: {hour: '24'}}", "spec.schedule.crontab.hour"),
    (task, "schedule: {crontab: {hour: '-1'}}", "spec.schedule.crontab.hour"),
    (task, "schedule: {crontab: {hour: '*/3,8-25'}}", "spec.schedule.crontab.hour"),
    (task, "schedule: {crontab: {hour: '1,,2'}}", "spec.schedule.crontab.hour"),
    (task, "schedule: {crontab: {hour: '*/'}}", "spec.schedule.crontab.hour"),
    (task, "schedule: {crontab: {dayOfWeek: 'funday'}}", "spec.schedule.crontab.dayOfWeek"),
    (task, "schedule: {crontab: {dayOfWeek: '8'}}", "spec.schedule.crontab.dayOfWeek"),
    (task, "schedule: {crontab: {dayOfWeek: 'mon-'}}", "spec.schedule.crontab.dayOfWeek"),
    (task, "schedule: {crontab: {dayOfMonth: '0'}}", "spec.schedule.crontab.dayOfMonth"),
    (task, "schedule: {crontab: {dayOfMonth: '32'}}", "spec.schedule.crontab.dayOfMonth"),
    (task, "schedule: {crontab: {dayOfMonth: 'L'}}", "spec.schedule.crontab.dayOfMonth"),
    (task, "schedule: {crontab: {monthOfYear: '13'}}", "spec.schedule.crontab.monthOfYear"),
    (task, "schedule: {crontab: {monthOfYear: '0'}}", "spec.schedule.crontab.monthOfYear"),
    (task, "schedule: {crontab: {monthOfYear: 'smarch'}}", "spec.schedule.crontab.monthOfYear"),
    (task, "schedule: {crontab: {dayOfMonth: '31', monthOfYear: '2'}}", "spec.schedule.crontab"),
    (task, "schedule: {crontab: {dayOfMonth: '30', monthOfYear: 'feb'}}", "spec.schedule.crontab"),
    (task, "schedule: {cron: '61 * * * *'}", "spec.schedule.cron"),
    (task, "schedule: {cron: '* 24 * * *'}", "spec.schedule.cron"),
    (task, "schedule: {cron: '* * 32 * *'}", "spec.schedule.cron"),
    (task, "schedule: {cron: '* * * 13 *'}", "spec.schedule.cron"),
    (task, "schedule: {cron: '* * * * 7'}", "spec.schedule.cron"),
    (task, "schedule: {cron: '* * * * * *'}", "spec.schedule.cron"),
    (task, "schedule: {cron: '* * * *'}", "spec.schedule.cron"),
    (task, "schedule: {cron: '0 0 31 2 *'}", "spec.schedule.cron"),
    (task, "schedule: {cron: '0 0 30 2 *'}", "spec.schedule.cron"),
    (task, "schedule: {cron: '@fortnightly'}", "spec.schedule.cron"),
    (task, "schedule: {cron: ' @hourly'}", "spec.schedule.cron"),
    (task, "schedule: {cron: '*/0 * * * *'}", "spec.schedule.cron"),
    (task, "schedule: {cron: 'a b c d e'}", "spec.schedule.cron"),
    (task, "schedule: {every: 1m}\n  timeZone: Mars/Olympus", "spec.timeZone"),
    (task, "schedule: {crontab: {minute: '0'}}\n  timeZone: Europe/Berlinn", "spec.timeZone"),
    (task, "schedule: {cron: '@daily'}\n  timeZone: UTC+2", "spec.timeZone"),
    (task, "schedule: {every: 1m}\n  timeZone: America/New York", "spec.timeZone"),
    (task, "schedule: {every: 1m}\n  timeZone: Europe", "spec.timeZone"),
    (task, "schedule: {every: 99999999999999999d}", "spec.schedule.every"),
    (task, "schedule: {every: 1m}\n  kwargs: {'': 1}", "spec.kwargs"),
    (task, "schedule: {every: 1m}\n  args: [{__type__: nope, __value__: 1}]", "spec.args"),
    (task, "schedule: {every: 1m}\n  args: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", "spec.args"),
    (task, "schedule: {every: 1m}\n  headers: {id: x}", "spec.headers"),
    (task, "schedule: {every: 1m}\n  headers: {task: x}", "spec.headers"),
    (task, "schedule: {every: 1m}\n  headers: {Origin: x}", "spec.headers"),
    (task, "schedule: {every: 1m}\n  headers: {'bad name': x}", "spec.headers"),
    (task, "schedule: {every: 1m}\n  headers: {x: \"a\\u0007b\"}", "spec.headers"),
    (task, "schedule: {every: 1m}\n  expires: 99999999999999999d", "spec.expires"),
    (cache, "resources: {limits: {cpu: lots}}", "spec.resources.limits.cpu"),
    (cache, "resources: {requests: {memory: 12 parsecs}}", "spec.resources.requests.memory"),
    (cache, "resources: {limits: {ephemeral-storage: big}}", "spec.resources.limits.ephemeral-storage"),
    (cache, "resources: {requests: {cpu: 1.2.3}}", "spec.resources.requests.cpu"),
    (pool, "resources: {limits: {cpu: lots}}", "spec.resources.limits.cpu"),
    (pool, "resources: {requests: {memory: much}}", "spec.resources.requests.memory"),
    (pool, "resources: {limits: {ephemeral-storage: big}}", "spec.resources.limits.ephemeral-storage"),
    (pool, "autoscaling: {maxReplicas: 3, scaleDownStabilization: 99999999999999d}", "spec.autoscaling.scaleDownStabilization"),
    (pool, "autoscaling: {maxReplicas: 3, idleBeforeScaleToZero: 99999999999999d}", "spec.autoscaling.idleBeforeScaleToZero"),
    (pool, "autoscaling: {maxReplicas: 3, pollInterval: 99999999999999d}", "spec.autoscaling.pollInterval"),
    (pool, "extraArgs: [--pool=solo]", "spec.extraArgs[0]: --pool=solo is set by spec.pool"),
    (pool, "extraArgs: [--without-gossip, -A, other]", "spec.extraArgs[1]: -A is a `celery` option"),
    (pool, "extraArgs: [-Qfoo]", "spec.extraArgs[0]"),
    (cache, "config: {no-such-directive: x}", "spec.config.no-such-directive"),
    (cache, "config: {timeout: forever}", "spec.config.timeout"),
    (cache, "config: {loglevel: loud}", "spec.config.loglevel"),
    (cache, "config: {lazyfree-lazy-eviction: maybe}", "spec.config.lazyfree-lazy-eviction"),
];

#[tokio::test]
async fn the_webhook_refuses_what_the_controllers_would_naming_the_field() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "admission").await;
    let dir = std::env::temp_dir().join(format!("webhook-{}", ns.name));
    std::fs::create_dir_all(&dir).expect("cert dir");
    let ca = certificates(&dir, 1);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut operator = Operator::start_with(
        &ns.name,
        &[
            "--webhook-addr",
            &addr,
            "--webhook-cert-dir",
            dir.to_str().expect("utf-8"),
        ],
        &[],
    );
    let _registration = Registration::new(&ns.name, port, Some(&ca));
    let refused = |yaml: &str| {
        let out = apply_yaml(&ns.name, yaml);
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).to_string())
    };
    // The API server takes a moment to call a new webhook.
    let probe = task(999, "schedule: {crontab: {minute: '61'}}");
    eventually(Duration::from_secs(30), "the webhook to refuse", || async {
        refused(&probe).filter(|m| m.contains("denied the request"))
    })
    .await;

    assert!(CORPUS.len() >= 60, "{} cases", CORPUS.len());
    let mut failures = Vec::new();
    for (i, (build, spec, path)) in CORPUS.iter().enumerate() {
        let yaml = build(i, spec);
        match refused(&yaml) {
            Some(m) if m.contains("denied the request") && m.contains(path) => {}
            Some(m) => failures.push(format!("{spec}: refused without naming {path}: {m}")),
            None => failures.push(format!("{spec}: accepted")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // What is valid still applies.
    for sample in ["rediscache.yaml", "workerpool.yaml", "periodictask.yaml"] {
        let yaml = std::fs::read_to_string(
            celery_operator_e2e::repo_root()
                .join("deploy/samples")
                .join(sample),
        )
        .expect("sample");
        ok(apply_yaml(&ns.name, &yaml));
    }

    // A rotated certificate (same CA) is served without a restart, and admission goes on.
    assert_eq!(served_serial(port), "serial=01");
    certificates(&dir, 2);
    eventually(
        Duration::from_secs(10),
        "the new certificate served",
        || async { (served_serial(port) == "serial=02").then_some(()) },
    )
    .await;
    assert!(refused(&probe).is_some_and(|m| m.contains("spec.schedule.crontab.minute")));

    // Operator down: failurePolicy Fail refuses even a valid object rather than admit it
    // unchecked.
    operator.kill();
    let valid = task(1000, "schedule: {every: 1m}");
    let message = refused(&valid).expect("refused while the webhook is down");
    assert!(message.contains("failed calling webhook"), "{message}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn without_cert_manager_the_operator_issues_renews_and_publishes_its_certificate() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "admission-self").await;
    let dir = std::env::temp_dir().join(format!("webhook-{}", ns.name));
    std::fs::create_dir_all(&dir).expect("cert dir");
    let port = free_port();
    let registration = Registration::new(&ns.name, port, None);
    let addr = format!("127.0.0.1:{port}");
    let _operator = Operator::start_with(
        &ns.name,
        &[
            "--webhook-addr",
            &addr,
            "--webhook-cert-dir",
            dir.to_str().expect("utf-8"),
            "--webhook-secret",
            "webhook-certs",
            "--webhook-configuration",
            &registration.0,
            "--webhook-hosts",
            "127.0.0.1",
            "--lease-namespace",
            &ns.name,
        ],
        &[],
    );
    let probe = task(1, "schedule: {crontab: {minute: '61'}}");
    let refused = || {
        let out = apply_yaml(&ns.name, &probe);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (!out.status.success() && stderr.contains("spec.schedule.crontab.minute")).then_some(())
    };
    // The operator created the CA and put it in the caBundle: the API server trusts it.
    eventually(
        Duration::from_secs(30),
        "admission with the operator's CA",
        || async { refused() },
    )
    .await;
    let first = served_serial(port);

    // A certificate due for renewal is renewed under the same CA, served, and trusted.
    ok(celery_operator_e2e::kubectl(&[
        "annotate",
        "-n",
        &ns.name,
        "--overwrite",
        "secret",
        "webhook-certs",
        "celeryoperator.io/not-after=2000-01-01T00:00:00Z",
    ]));
    eventually(
        Duration::from_secs(30),
        "a renewed certificate served",
        || async {
            let now = served_serial(port);
            (!now.is_empty() && now != first).then_some(())
        },
    )
    .await;
    assert!(refused().is_some(), "admission after the renewal");
    std::fs::remove_dir_all(&dir).ok();
}
