//! The validating admission webhook: `kubectl apply` of a PeriodicTask, RedisCache or
//! WorkerPool the controllers would refuse is refused at once, with the controllers' own
//! checks ([`validate`]). Every replica serves it (not only the leader), over TLS with the
//! certificate and key in a directory (`tls.crt`, `tls.key`), re-read when they change so a
//! rotated certificate is served without a restart.

pub mod certs;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::api::{PeriodicTask, RedisCache, WorkerPool};

/// The path the webhook configuration points at.
pub const PATH: &str = "/validate";
/// A client that does not finish its TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum WebhookError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the webhook certificate in {dir}: {reason}")]
    Certificate { dir: String, reason: String },
}

/// Serves the webhook on `addr` with the certificate in `cert_dir`; returns the bound
/// address.
pub async fn serve(addr: SocketAddr, cert_dir: PathBuf) -> Result<SocketAddr, WebhookError> {
    let certs = Certs::load(cert_dir)?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Listen { addr, source })?;
    let bound = tcp
        .local_addr()
        .map_err(|source| WebhookError::Listen { addr, source })?;
    let app = Router::new().route(PATH, post(review));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(TlsListener { tcp, certs }, app).await {
            tracing::error!(error = %e, "webhook server stopped");
        }
    });
    Ok(bound)
}

/// The handler: an AdmissionReview in, the same review with its response out.
async fn review(body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {e}"),
            )
                .into_response();
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    // Input from anyone who may create these objects: a panic in a check refuses the
    // object with a message instead of taking the operator down or letting it through.
    let problems = std::panic::catch_unwind(|| problems(&request)).unwrap_or_else(|_| {
        vec!["the operator failed to check this object (a bug: please report it); refused rather than admitted unchecked".into()]
    });
    let response = AdmissionResponse::from(&request);
    let response = if problems.is_empty() {
        response
    } else {
        tracing::debug!(kind = %request.kind.kind, name = %request.name, "refused at admission");
        response.deny(problems.join("; "))
    };
    Json(response.into_review()).into_response()
}

fn problems(request: &AdmissionRequest<DynamicObject>) -> Vec<String> {
    let Some(object) = &request.object else {
        return Vec::new();
    };
    // Only a new or changed spec is checked. An object admitted before this webhook (or a
    // check) existed must still take finalizer, label and annotation changes, or it could
    // never be deleted; one being deleted only loses its finalizer.
    if request.operation == Operation::Update
        && (object.metadata.deletion_timestamp.is_some()
            || request
                .old_object
                .as_ref()
                .is_some_and(|old| old.data.get("spec") == object.data.get("spec")))
    {
        return Vec::new();
    }
    let value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return vec![format!("unreadable object: {e}")],
    };
    let now = chrono::Utc::now();
    let result = match request.kind.kind.as_str() {
        "PeriodicTask" => serde_json::from_value::<PeriodicTask>(value)
            .map(|pt| validate::periodic_task(&pt, now)),
        "RedisCache" => {
            serde_json::from_value::<RedisCache>(value).map(|rc| validate::redis_cache(&rc))
        }
        "WorkerPool" => {
            serde_json::from_value::<WorkerPool>(value).map(|wp| validate::worker_pool(&wp))
        }
        other => return vec![format!("this webhook does not validate {other}")],
    };
    result.unwrap_or_else(|e| vec![format!("spec: {e}")])
}

/// The certificate files and the TLS acceptor built from them, rebuilt when they change.
struct Certs {
    dir: PathBuf,
    loaded: Option<SystemTime>,
    acceptor: TlsAcceptor,
}

impl Certs {
    fn load(dir: PathBuf) -> Result<Self, WebhookError> {
        let loaded = modified(&dir);
        let acceptor = acceptor(&dir).map_err(|reason| WebhookError::Certificate {
            dir: dir.display().to_string(),
            reason,
        })?;
        Ok(Self {
            dir,
            loaded,
            acceptor,
        })
    }

    /// The acceptor for the files as they are now; a rotation half written (a bad pair)
    /// keeps the previous one until the files are whole.
    fn current(&mut self) -> TlsAcceptor {
        let now = modified(&self.dir);
        if now != self.loaded {
            match acceptor(&self.dir) {
                Ok(a) => {
                    self.acceptor = a;
                    self.loaded = now;
                    tracing::info!("webhook certificate reloaded");
                }
                Err(reason) => tracing::warn!(%reason, "webhook certificate not reloaded"),
            }
        }
        self.acceptor.clone()
    }
}

fn modified(dir: &Path) -> Option<SystemTime> {
    ["tls.crt", "tls.key"]
        .iter()
        .filter_map(|f| {
            std::fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .max()
}

fn acceptor(dir: &Path) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("tls.crt"))
        .and_then(|i| i.collect())
        .map_err(|e| format!("tls.crt: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_file(dir.join("tls.key")).map_err(|e| format!("tls.key: {e}"))?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

struct TlsListener {
    tcp: TcpListener,
    certs: Certs,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = self.certs.current();
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!(error = %e, %addr, "webhook TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "webhook TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn task(minute: &str) -> Value {
        json!({
            "apiVersion": "celeryoperator.io/v1alpha1", "kind": "PeriodicTask",
            "metadata": {"name": "t", "namespace": "shop", "uid": "u1"},
            "spec": {"task": "proj.tasks.t", "schedule": {"crontab": {"minute": minute}},
                     "broker": {"redisCache": "broker"}}
        })
    }

    fn request(
        operation: &str,
        object: Value,
        old: Option<Value>,
    ) -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "r1", "operation": operation, "name": "t", "namespace": "shop",
                "kind": {"group": "celeryoperator.io", "version": "v1alpha1", "kind": "PeriodicTask"},
                "resource": {"group": "celeryoperator.io", "version": "v1alpha1", "resource": "periodictasks"},
                "userInfo": {"username": "u"},
                "object": object, "oldObject": old, "dryRun": false
            }
        }))
        .expect("review");
        review.try_into().expect("request")
    }

    #[test]
    fn a_new_or_changed_spec_is_checked() {
        assert!(problems(&request("CREATE", task("61"), None))[0].contains("minute"));
        let changed = request("UPDATE", task("61"), Some(task("5")));
        assert!(problems(&changed)[0].contains("minute"));
        assert!(problems(&request("CREATE", task("5"), None)).is_empty());
    }

    #[test]
    fn an_update_that_leaves_the_spec_alone_is_admitted_even_if_the_spec_is_bad() {
        // Admitted before the webhook existed (or before a check was added): its finalizer,
        // labels and annotations must still change, or it could never be deleted.
        let mut annotated = task("61");
        annotated["metadata"]["annotations"] = json!({"celeryoperator.io/run-now": "1"});
        assert!(problems(&request("UPDATE", annotated, Some(task("61")))).is_empty());
        let mut deleting = task("61");
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-02T00:00:00Z");
        deleting["spec"]["task"] = json!("proj.tasks.other");
        assert!(problems(&request("UPDATE", deleting, Some(task("61")))).is_empty());
    }
}
