//! Server-side apply of owned objects under the operator's one field manager, reporting
//! whether the apply created or changed anything (for events).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::core::Request;
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, FIELD_MANAGER, Result};

/// What an apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// Applies `desired` (which must carry apiVersion, kind, name) with force, so the operator
/// takes back fields someone else changed. A no-op apply does not write to etcd.
pub(crate) async fn apply<K>(api: &Api<K>, desired: &K) -> Result<(K, Outcome)>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = desired.name_any();
    let before = api.get_metadata_opt(&name).await?.map(|m| m.metadata);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api.patch(&name, &params, &Patch::Apply(desired)).await?;
    let outcome = match before {
        None => Outcome::Created,
        Some(before) => changed(&before, applied.meta()),
    };
    Ok((applied, outcome))
}

/// Whether an apply changed the object. Objects with a generation (workloads) bump it only
/// on spec changes; for the others (ConfigMaps, Secrets, Services) nobody else writes status,
/// so the resourceVersion tells.
fn changed(before: &ObjectMeta, after: &ObjectMeta) -> Outcome {
    let same = match (before.generation, after.generation) {
        (Some(a), Some(b)) => a == b,
        _ => before.resource_version == after.resource_version,
    };
    if same {
        Outcome::Unchanged
    } else {
        Outcome::Updated
    }
}

/// Applies an object `owner` owns and records a Created/Updated event on the owner.
pub(crate) async fn apply_and_report<O, K>(
    ctx: &Context,
    owner: &O,
    api: &Api<K>,
    desired: &K,
) -> Result<K>
where
    O: Resource<DynamicType = ()>,
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let (applied, outcome) = apply(api, desired).await?;
    let what = format!("{} {}", K::kind(&()), desired.name_any());
    match outcome {
        Outcome::Created => ctx.publish(
            owner,
            EventType::Normal,
            "Created",
            &format!("Create{}", K::kind(&())),
            format!("Created {what}"),
        ),
        Outcome::Updated => ctx.publish(
            owner,
            EventType::Normal,
            "Updated",
            &format!("Update{}", K::kind(&())),
            format!("Updated {what}"),
        ),
        Outcome::Unchanged => {}
    }
    Ok(applied)
}

/// Writes `new` to the status subresource unless it equals `old`, so a reconcile of an
/// unchanged object writes nothing. The object the API server answers with is not parsed:
/// nothing reads it, and at a hundred writes a second parsing it was a cost of its own.
pub(crate) async fn write_status<K, S>(
    client: &Client,
    obj: &K,
    ns: &str,
    old: Option<&S>,
    new: S,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if old == Some(&new) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let request = Request::new(K::url_path(&(), Some(ns)))
        .patch_subresource("status", &obj.name_any(), &params, &Patch::Apply(patch))
        .map_err(kube::Error::BuildRequest)?;
    client.request_text(request).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(generation: Option<i64>, rv: &str) -> ObjectMeta {
        ObjectMeta {
            generation,
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_status_write_by_another_controller_is_not_an_update() {
        assert_eq!(
            changed(&meta(Some(1), "10"), &meta(Some(1), "12")),
            Outcome::Unchanged
        );
        assert_eq!(
            changed(&meta(Some(1), "10"), &meta(Some(2), "12")),
            Outcome::Updated
        );
    }

    #[test]
    fn objects_without_generation_compare_resource_versions() {
        assert_eq!(
            changed(&meta(None, "10"), &meta(None, "10")),
            Outcome::Unchanged
        );
        assert_eq!(
            changed(&meta(None, "10"), &meta(None, "11")),
            Outcome::Updated
        );
    }
}
