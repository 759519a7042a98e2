//! Reads of the objects broker references name (Secrets, RedisCaches): at most one GET per
//! version of each. A metadata-only watch says which version is current, and only a version
//! not read yet is fetched, so a thousand tasks sharing one broker Secret cost one read per
//! change, not one per task per resync. Only metadata is kept of the objects nobody
//! references (a namespace's Helm release Secrets can weigh megabytes).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use kube::core::{NamespaceResourceScope, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

type Key = (String, String);

pub(crate) struct ReadCache<K: Resource<DynamicType = ()> + 'static> {
    client: Client,
    versions: Store<PartialObjectMeta<K>>,
    read: Mutex<HashMap<Key, Arc<K>>>,
}

impl<K> ReadCache<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    /// Watches the metadata of every `K` in `namespace` (else all namespaces) for as long as
    /// the process runs. Needs a tokio runtime.
    pub(crate) fn start(client: Client, namespace: Option<&str>) -> Arc<Self> {
        let watched: Api<PartialObjectMeta<K>> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let (versions, writer) = reflector::store();
        let stream = watcher(watched, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| async {});
        tokio::spawn(stream);
        Arc::new(Self {
            client,
            versions,
            read: Mutex::new(HashMap::new()),
        })
    }

    /// `ns/name` as the API server has it now: from the last read when the watch has seen no
    /// newer version since, else read (also when the watch has not seen it at all: just
    /// created, or missing).
    pub(crate) async fn get_opt(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<Arc<K>>, kube::Error> {
        let key = (ns.to_string(), name.to_string());
        let current = self
            .versions
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|meta| meta.metadata.resource_version.clone());
        if let Some(version) = current
            && let Some(hit) = self.lock().get(&key)
            && hit.meta().resource_version.as_ref() == Some(&version)
        {
            return Ok(Some(hit.clone()));
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let got = api.get_opt(name).await?.map(Arc::new);
        match &got {
            Some(obj) => self.lock().insert(key, obj.clone()),
            None => self.lock().remove(&key),
        };
        Ok(got)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<K>>> {
        self.read.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
