//! Reads of the objects broker references name (Secrets, RedisCaches): at most one GET per
//! version of each. A metadata-only watch says which version is current, and only a version
//! not read yet is fetched, so a thousand tasks sharing one broker Secret cost one read per
//! change, not one per task per resync. Only metadata is kept of the objects nobody
//! references (a namespace's Helm release Secrets can weigh megabytes). Callers wanting the
//! same version at once share one GET: a thousand reconciles after a restart or a rotation
//! are one request, not a thousand connections.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use kube::core::{NamespaceResourceScope, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

pub(crate) type Key = (String, String);

/// What a read gives; the error is shared by every caller that waited on the read.
pub(crate) type Read<K> = Result<Option<Arc<K>>, Arc<kube::Error>>;

/// GETs on their way, by key and the version the watch showed when each started.
type Flights<K> = HashMap<(Key, Option<String>), Shared<BoxFuture<'static, Read<K>>>>;

/// Changes held for a listener that is behind; one further behind re-reads at its resync.
const CHANGES_BUFFERED: usize = 4096;

pub(crate) struct ReadCache<K: Resource<DynamicType = ()> + 'static> {
    client: Client,
    versions: Store<PartialObjectMeta<K>>,
    read: Mutex<HashMap<Key, Arc<K>>>,
    /// A caller joins a read started for the version it sees, never one that may be older.
    reading: Mutex<Flights<K>>,
    /// `(namespace, name)` of read objects whose version moved on: their users act on the
    /// change now rather than at their next resync.
    changed: broadcast::Sender<Key>,
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
        let cache = Arc::new(Self {
            client,
            versions,
            read: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashMap::new()),
            changed: broadcast::channel(CHANGES_BUFFERED).0,
        });
        let stream = watcher(watched, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        let watching = cache.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(touched) = stream.next().await {
                if let Ok(meta) = touched {
                    watching.touched(&meta);
                }
            }
        });
        cache
    }

    /// Changes of objects read through this cache, from now on.
    pub(crate) fn changes(&self) -> broadcast::Receiver<Key> {
        self.changed.subscribe()
    }

    fn touched(&self, meta: &PartialObjectMeta<K>) {
        let key = (
            meta.metadata.namespace.clone().unwrap_or_default(),
            meta.metadata.name.clone().unwrap_or_default(),
        );
        let moved = self
            .lock()
            .get(&key)
            .is_some_and(|read| read.meta().resource_version != meta.metadata.resource_version);
        if moved {
            // Nobody listening is fine: nothing to tell.
            let _ = self.changed.send(key);
        }
    }

    /// `ns/name` as the API server has it now: from the last read when the watch has seen no
    /// newer version since, else read (also when the watch has not seen it at all: just
    /// created, or missing).
    pub(crate) async fn get_opt(&self, ns: &str, name: &str) -> Read<K> {
        let key = (ns.to_string(), name.to_string());
        let current = self
            .versions
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|meta| meta.metadata.resource_version.clone());
        if let Some(version) = &current
            && let Some(hit) = self.lock().get(&key)
            && hit.meta().resource_version.as_ref() == Some(version)
        {
            return Ok(Some(hit.clone()));
        }
        let flight = (key, current);
        let read = self
            .reading()
            .entry(flight.clone())
            .or_insert_with(|| {
                let api: Api<K> = Api::namespaced(self.client.clone(), ns);
                let name = name.to_string();
                async move {
                    let got = api.get_opt(&name).await;
                    got.map(|o| o.map(Arc::new)).map_err(Arc::new)
                }
                .boxed()
                .shared()
            })
            .clone();
        let got = read.clone().await;
        // The first caller back stores what the read gave, for everyone.
        let mut reading = self.reading();
        if reading.get(&flight).is_some_and(|r| r.ptr_eq(&read)) {
            reading.remove(&flight);
            let (key, _) = flight;
            match &got {
                Ok(Some(obj)) => {
                    self.lock().insert(key, obj.clone());
                }
                Ok(None) => {
                    self.lock().remove(&key);
                }
                Err(_) => {}
            }
        }
        got
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<K>>> {
        self.read.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reading(&self) -> std::sync::MutexGuard<'_, Flights<K>> {
        self.reading.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
