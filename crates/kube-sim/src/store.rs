//! The objects, their resourceVersions and the history watches replay.
//!
//! One counter versions every write of every type, as etcd's revision
//! does; a write that changes nothing is not a write (no new version, no
//! watch event). `metadata.generation` moves only when something outside
//! `metadata` and `status` changes. Objects with finalizers are only
//! marked by a delete (`deletionTimestamp`) and go with the write that
//! removes their last finalizer.

use crate::fields::Owners;
use crate::resource::Resource;
use crate::status::ApiError;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many changes are kept for watches to resume from; older
/// resourceVersions get 410 Gone.
const HISTORY: usize = 10_000;

/// One watch event, as every watcher of its type sees it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub resource: Resource,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub type_: &'static str,
    pub object: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    resource: Resource,
    namespace: String,
    name: String,
}

struct Entry {
    object: Value,
    owners: Owners,
}

/// A watch's first events and the live changes after them.
pub type WatchStart = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// How a patch body is read (its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`: merge semantics, which
    /// is what it means for maps and scalars (the served types have no
    /// keyed lists a client patches).
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply.
    Apply { force: bool },
}

pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Entry>,
    history: VecDeque<Arc<Change>>,
    /// Watches can resume from this resourceVersion or later.
    oldest: u64,
    changes: broadcast::Sender<Arc<Change>>,
    /// The latest resourceVersion, for tests waiting on a change.
    version: tokio::sync::watch::Sender<u64>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn meta(v: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    v.get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let obj = v.as_object_mut().expect("an object");
    let m = obj.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut().expect("an object")
}

fn finalizers(v: &Value) -> Vec<String> {
    meta(v)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The object without `metadata` and `status`: what `generation` tracks.
fn desired(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

impl Store {
    pub fn new() -> Self {
        Self {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            oldest: 1,
            changes: broadcast::channel(1024).0,
            version: tokio::sync::watch::channel(1).0,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn versions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn key(resource: Resource, namespace: &str, name: &str) -> Key {
        Key {
            resource,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(resource, namespace, name))
            .map(|e| e.object.clone())
            .ok_or_else(|| ApiError::not_found(resource.plural, name))
    }

    /// Objects of a type (in one namespace or all), oldest name first, and
    /// the resourceVersion the list is consistent with.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, e)| e.object.clone())
            .collect();
        (items, self.rv)
    }

    /// Field owners of an object, for assertions.
    pub fn owners(&self, resource: Resource, namespace: &str, name: &str) -> Option<Owners> {
        self.objects
            .get(&Self::key(resource, namespace, name))
            .map(|e| e.owners.clone())
    }

    fn record(&mut self, key: &Key, type_: &'static str, object: Value) {
        let change = Arc::new(Change {
            rv: self.rv,
            resource: key.resource,
            namespace: key.namespace.clone(),
            type_,
            object,
        });
        self.history.push_back(change.clone());
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.oldest = old.rv;
            }
        }
        let _ = self.changes.send(change);
        self.version.send_replace(self.rv);
    }

    /// Forgets the history: a watch from any earlier resourceVersion gets
    /// 410 Gone, as after an etcd compaction.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest = self.rv;
    }

    pub fn create(
        &mut self,
        resource: Resource,
        namespace: &str,
        mut obj: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        check_type(resource, &obj)?;
        let m = meta_mut(&mut obj);
        let name = match m.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match m.get("generateName").and_then(Value::as_str) {
                Some(prefix) => format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..5]),
                None => {
                    return Err(ApiError::invalid(
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        if let Some(ns) = m.get("namespace").and_then(Value::as_str)
            && ns != namespace
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({ns}) does not match the namespace on the request ({namespace})"
            )));
        }
        let key = Self::key(resource, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(resource.plural, &name));
        }
        for server_set in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
        ] {
            m.remove(server_set);
        }
        self.rv += 1;
        m.insert("name".into(), name.clone().into());
        m.insert("namespace".into(), namespace.into());
        m.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        m.insert("creationTimestamp".into(), now().into());
        m.insert("generation".into(), 1.into());
        m.insert("resourceVersion".into(), self.rv.to_string().into());
        if resource.status_subresource
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        set_type(resource, &mut obj);
        let mut owners = Owners::default();
        owners.record_update(manager, &json!({}), &obj);
        self.objects.insert(
            key.clone(),
            Entry {
                object: obj.clone(),
                owners,
            },
        );
        self.record(&key, "ADDED", obj.clone());
        Ok(obj)
    }

    /// PUT: replaces the object (or its status) as a whole.
    pub fn update(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        status: bool,
        obj: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        check_type(resource, &obj)?;
        self.write(resource, namespace, name, status, manager, false, |_, _| Ok(obj))
    }

    /// PATCH in any of the four kinds; an apply to a missing object
    /// creates it.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        status: bool,
        kind: PatchKind,
        body: &Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let key = Self::key(resource, namespace, name);
        if let PatchKind::Apply { .. } = kind {
            check_type(resource, body)?;
            if !self.objects.contains_key(&key) && !status {
                let mut obj = json!({});
                let mut owners = Owners::default();
                let applied = owners.apply(manager, true, &obj, body)?;
                obj = applied;
                meta_mut(&mut obj).insert("name".into(), name.into());
                let created = self.create(resource, namespace, obj, manager)?;
                if let Some(e) = self.objects.get_mut(&key) {
                    e.owners = owners;
                }
                return Ok(created);
            }
        }
        let applied = matches!(kind, PatchKind::Apply { .. });
        self.write(
            resource,
            namespace,
            name,
            status,
            manager,
            applied,
            |current, owners| {
                let mut new = current.clone();
                match kind {
                    PatchKind::Merge | PatchKind::Strategic => json_patch::merge(&mut new, body),
                    PatchKind::Json => {
                        let ops: json_patch::Patch = serde_json::from_value(body.clone())
                            .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                        json_patch_as_the_api_server(&mut new, ops)?;
                    }
                    PatchKind::Apply { force } => new = owners.apply(manager, force, current, body)?,
                }
                Ok(new)
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    /// The common path of updates and patches: `change` proposes the new
    /// object from the current one; the server's rules decide the rest.
    fn write(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        status: bool,
        manager: &str,
        applied: bool,
        change: impl FnOnce(&Value, &mut Owners) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        if status && !resource.status_subresource {
            return Err(ApiError::not_found(resource.plural, &format!("{name}/status")));
        }
        let key = Self::key(resource, namespace, name);
        let entry = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(resource.plural, name))?;
        let old = entry.object.clone();
        let mut owners = entry.owners.clone();
        let proposed = change(&old, &mut owners)?;
        let current_rv = meta(&old).get("resourceVersion").cloned();
        if let Some(rv) = meta(&proposed).get("resourceVersion")
            && Some(rv) != current_rv.as_ref()
        {
            return Err(ApiError::stale(resource.plural, name));
        }
        let mut new = if status {
            // The status subresource changes status and nothing else.
            let mut new = old.clone();
            match proposed.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            }
            new
        } else {
            let mut new = proposed;
            if resource.status_subresource {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
            new
        };
        set_type(resource, &mut new);
        let server_owned = [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ];
        let m = meta_mut(&mut new);
        for f in server_owned {
            match meta(&old).get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        if meta(&old).contains_key("deletionTimestamp") {
            let before = finalizers(&old);
            if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(format!(
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]"
                )));
            }
        }
        if meta(&new)
            .get("finalizers")
            .is_some_and(|f| !f.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
        {
            return Err(ApiError::invalid("metadata.finalizers: must be a list of strings"));
        }
        if new == old {
            return Ok(old);
        }
        if !applied {
            owners.record_update(manager, &old, &new);
        }
        if desired(&old) != desired(&new) {
            let g = meta(&old).get("generation").and_then(Value::as_i64).unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), (g + 1).into());
        }
        self.rv += 1;
        meta_mut(&mut new).insert("resourceVersion".into(), self.rv.to_string().into());
        if meta(&new).contains_key("deletionTimestamp") && finalizers(&new).is_empty() {
            self.objects.remove(&key);
            self.record(&key, "DELETED", new.clone());
        } else {
            self.objects.insert(
                key.clone(),
                Entry {
                    object: new.clone(),
                    owners,
                },
            );
            self.record(&key, "MODIFIED", new.clone());
        }
        Ok(new)
    }

    /// DELETE: an object with finalizers is only marked for deletion.
    pub fn delete(&mut self, resource: Resource, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let key = Self::key(resource, namespace, name);
        let entry = self
            .objects
            .get_mut(&key)
            .ok_or_else(|| ApiError::not_found(resource.plural, name))?;
        let mut obj = entry.object.clone();
        if !finalizers(&obj).is_empty() {
            if meta(&obj).contains_key("deletionTimestamp") {
                return Ok(obj);
            }
            self.rv += 1;
            let m = meta_mut(&mut obj);
            m.insert("deletionTimestamp".into(), now().into());
            m.insert("deletionGracePeriodSeconds".into(), 0.into());
            m.insert("resourceVersion".into(), self.rv.to_string().into());
            entry.object = obj.clone();
            self.record(&key, "MODIFIED", obj.clone());
            return Ok(obj);
        }
        self.objects.remove(&key);
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), self.rv.to_string().into());
        self.record(&key, "DELETED", obj.clone());
        Ok(obj)
    }

    /// Where a watch from `from` starts: the changes after it still in
    /// the history (or, with no version or "0", every current object as
    /// ADDED), and the live changes after those. Taken under the store's
    /// lock, so nothing falls between the two.
    pub fn watch_from(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        from: Option<&str>,
    ) -> Result<WatchStart, ApiError> {
        let rx = self.changes.subscribe();
        let wanted = |c: &Change| c.resource == resource && namespace.is_none_or(|ns| c.namespace == ns);
        let start = match from {
            None | Some("" | "0") => {
                let current = self
                    .objects
                    .iter()
                    .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
                    .map(|(k, e)| {
                        Arc::new(Change {
                            rv: self.rv,
                            resource,
                            namespace: k.namespace.clone(),
                            type_: "ADDED",
                            object: e.object.clone(),
                        })
                    })
                    .collect();
                return Ok((current, rx));
            }
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
        };
        if start < self.oldest {
            return Err(ApiError::expired(&start.to_string()));
        }
        let replay = self
            .history
            .iter()
            .filter(|c| c.rv > start && wanted(c))
            .cloned()
            .collect();
        Ok((replay, rx))
    }
}

fn check_type(resource: Resource, obj: &Value) -> Result<(), ApiError> {
    let (api_version, kind) = (resource.api_version(), resource.kind);
    if let Some(v) = obj.get("apiVersion").and_then(Value::as_str)
        && v != api_version
    {
        return Err(ApiError::bad_request(format!(
            "apiVersion {v} does not match {api_version}"
        )));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && k != kind
    {
        return Err(ApiError::bad_request(format!("kind {k} does not match {kind}")));
    }
    Ok(())
}

fn set_type(resource: Resource, obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), resource.api_version().into());
        o.insert("kind".into(), resource.kind.into());
    }
}

/// Applies an RFC 6902 patch the way the API server's library does: a
/// `test` for `null` at a path that does not exist passes (kube's
/// finalizer helper relies on it: "no finalizers yet"), where strict
/// RFC 6902 fails it.
fn json_patch_as_the_api_server(target: &mut Value, ops: json_patch::Patch) -> Result<(), ApiError> {
    for op in ops.0 {
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && target.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(target, &[op]).map_err(|e| ApiError::invalid(format!("the JSON patch failed: {e}")))?;
    }
    Ok(())
}
