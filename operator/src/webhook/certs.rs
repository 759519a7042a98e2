//! The webhook's own certificates when cert-manager does not provide them: a CA and a
//! serving certificate kept in a Secret every replica shares, written to the directory the
//! server reads, renewed a month before they expire, and the CA kept in the webhook
//! configuration's `caBundle`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use thiserror::Error;

/// The CA lives ten years; the serving certificate one, renewed 30 days before its end.
const CA_LIFETIME: TimeDelta = TimeDelta::days(3650);
const SERVING_LIFETIME: TimeDelta = TimeDelta::days(365);
const RENEW_BEFORE: TimeDelta = TimeDelta::days(30);
/// How often each replica looks at the Secret (a renewal by another replica, a deletion).
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// When the serving certificate ends (RFC 3339), so no replica parses certificates.
const NOT_AFTER_ANNOTATION: &str = "celeryoperator.io/not-after";
const CA_NAME: &str = "celery-operator webhook CA";

#[derive(Debug, Error)]
pub enum CertError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("Secret {0}: {1}")]
    Kube(String, kube::Error),
    #[error("Secret {0} lacks {1}")]
    Incomplete(String, &'static str),
    #[error("writing {0}: {1}")]
    Write(String, std::io::Error),
}

/// Where the certificates live and whom they serve.
#[derive(Clone)]
pub struct SelfSigned {
    pub client: Client,
    pub namespace: String,
    pub secret: String,
    /// Names the serving certificate is for (`<service>.<namespace>.svc`, or an address).
    pub hosts: Vec<String>,
    /// The ValidatingWebhookConfiguration whose caBundle is kept current.
    pub configuration: String,
    pub dir: PathBuf,
}

/// PEM of a CA and a serving certificate it signed.
#[derive(Clone, Debug, PartialEq)]
struct Bundle {
    ca_crt: String,
    ca_key: String,
    tls_crt: String,
    tls_key: String,
    not_after: DateTime<Utc>,
}

/// rcgen's validity instants (second resolution).
fn instant(t: DateTime<Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn ca_params(now: DateTime<Utc>) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.not_before = instant(now - TimeDelta::days(1));
    p.not_after = instant(now + CA_LIFETIME);
    Ok(p)
}

/// A new CA and serving certificate.
fn issue(hosts: &[String], now: DateTime<Utc>) -> Result<Bundle, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let ca = ca_params(now)?.self_signed(&ca_key)?;
    serve_with(ca.pem(), ca_key.serialize_pem(), hosts, now)
}

/// A new serving certificate from the CA of `ca_crt`: the caBundle clients trust stays.
fn serve_with(
    ca_crt: String,
    ca_key_pem: String,
    hosts: &[String],
    now: DateTime<Utc>,
) -> Result<Bundle, rcgen::Error> {
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    // The issuer name and key identifier come from the CA's name and key, both unchanged.
    let ca = ca_params(now)?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(hosts.to_vec())?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("webhook", String::as_str),
    );
    let not_after = now + SERVING_LIFETIME;
    p.not_before = instant(now - TimeDelta::days(1));
    p.not_after = instant(not_after);
    let tls = p.signed_by(&key, &issuer)?;
    Ok(Bundle {
        ca_crt,
        ca_key: ca_key_pem,
        tls_crt: tls.pem(),
        tls_key: key.serialize_pem(),
        not_after,
    })
}

fn due(not_after: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    not_after - now < RENEW_BEFORE
}

const KEYS: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

fn to_secret(name: &str, namespace: &str, b: &Bundle, resource_version: Option<String>) -> Secret {
    let values = [&b.ca_crt, &b.ca_key, &b.tls_crt, &b.tls_key];
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            resource_version,
            annotations: Some(BTreeMap::from([(
                NOT_AFTER_ANNOTATION.to_string(),
                b.not_after.to_rfc3339(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            KEYS.iter()
                .zip(values)
                .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn from_secret(s: &Secret) -> Result<Bundle, CertError> {
    let name = s.metadata.name.clone().unwrap_or_default();
    let get = |key: &'static str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| CertError::Incomplete(name.clone(), key))
    };
    let not_after = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NOT_AFTER_ANNOTATION))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| CertError::Incomplete(name.clone(), NOT_AFTER_ANNOTATION))?;
    Ok(Bundle {
        ca_crt: get("ca.crt")?,
        ca_key: get("ca.key")?,
        tls_crt: get("tls.crt")?,
        tls_key: get("tls.key")?,
        not_after,
    })
}

impl SelfSigned {
    /// The current bundle: created if there is none, renewed if due. Replicas racing on
    /// either take the winner's (create is exclusive, replace checks the resourceVersion).
    async fn current(&self) -> Result<Bundle, CertError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let kube_err = |e| CertError::Kube(self.secret.clone(), e);
        let now = Utc::now();
        match api.get_opt(&self.secret).await.map_err(kube_err)? {
            None => {
                let b = issue(&self.hosts, now)?;
                match api
                    .create(
                        &PostParams::default(),
                        &to_secret(&self.secret, &self.namespace, &b, None),
                    )
                    .await
                {
                    Ok(_) => Ok(b),
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        from_secret(&api.get(&self.secret).await.map_err(kube_err)?)
                    }
                    Err(e) => Err(kube_err(e)),
                }
            }
            Some(s) => {
                let old = from_secret(&s)?;
                if !due(old.not_after, now) {
                    return Ok(old);
                }
                let b = serve_with(old.ca_crt, old.ca_key, &self.hosts, now)?;
                let rv = s.metadata.resource_version.clone();
                match api
                    .replace(
                        &self.secret,
                        &PostParams::default(),
                        &to_secret(&self.secret, &self.namespace, &b, rv),
                    )
                    .await
                {
                    Ok(_) => {
                        tracing::info!(secret = %self.secret, "webhook certificate renewed");
                        Ok(b)
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        from_secret(&api.get(&self.secret).await.map_err(kube_err)?)
                    }
                    Err(e) => Err(kube_err(e)),
                }
            }
        }
    }

    /// Makes sure the files exist before the server starts.
    pub async fn prepare(&self) -> Result<(), CertError> {
        let b = self.current().await?;
        write_files(&self.dir, &b)
    }

    /// Keeps the files and the caBundle current; runs until the process ends.
    pub async fn maintain(self) {
        loop {
            match self.current().await {
                Ok(b) => {
                    if let Err(e) = write_files(&self.dir, &b) {
                        tracing::warn!(error = %e, "webhook certificate not written");
                    }
                    if let Err(e) = self.ca_bundle(&b.ca_crt).await {
                        tracing::warn!(error = %e, configuration = %self.configuration, "webhook caBundle not updated");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "webhook certificate not checked"),
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }

    /// Sets every webhook's caBundle of the configuration to the CA, when it differs.
    async fn ca_bundle(&self, ca: &str) -> Result<(), kube::Error> {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let mut config = api.get(&self.configuration).await?;
        let bundle = ByteString(ca.as_bytes().to_vec());
        let mut changed = false;
        for w in config.webhooks.iter_mut().flatten() {
            if w.client_config.ca_bundle.as_ref() != Some(&bundle) {
                w.client_config.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if changed {
            api.replace(&self.configuration, &PostParams::default(), &config)
                .await?;
            tracing::info!(configuration = %self.configuration, "webhook caBundle updated");
        }
        Ok(())
    }
}

/// Writes the serving pair when it differs from what is there, key first, each file
/// renamed into place so the server never reads half of one.
fn write_files(dir: &Path, b: &Bundle) -> Result<(), CertError> {
    for (name, content) in [("tls.key", &b.tls_key), ("tls.crt", &b.tls_crt)] {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_ref() == Some(content) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.tmp"));
        let err = |e| CertError::Write(path.display().to_string(), e);
        std::fs::write(&tmp, content).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_serving_certificate_keeps_the_ca_and_the_secret_round_trips() {
        let hosts = vec![
            "celery-operator-webhook.ops.svc".to_string(),
            "127.0.0.1".into(),
        ];
        let now = Utc::now();
        let first = issue(&hosts, now).expect("issue");
        assert!(!due(first.not_after, now));
        assert!(due(
            first.not_after,
            now + SERVING_LIFETIME - TimeDelta::days(29)
        ));
        let renewed =
            serve_with(first.ca_crt.clone(), first.ca_key.clone(), &hosts, now).expect("renew");
        assert_eq!(renewed.ca_crt, first.ca_crt);
        assert_ne!(renewed.tls_crt, first.tls_crt);
        let secret = to_secret("w", "ops", &renewed, None);
        assert_eq!(from_secret(&secret).expect("read back"), renewed);
    }
}
