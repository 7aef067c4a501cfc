//! Field ownership, the part of server-side apply that decides who may
//! set what. A field is a leaf of the object (a scalar, a list — lists
//! are atomic here — or an empty map), named by its JSON pointer. Every
//! write makes its field manager the owner of the fields it changed; an
//! apply that would change a field another manager owns is a 409
//! Conflict unless forced, and an apply forgets fields its manager set
//! before but no longer sends. That is what makes `kube-lease-manager`'s
//! unforced apply of `holderIdentity` exclusive.

use crate::status::ApiError;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Fields the server owns, never tracked or set by a client write.
const SERVER_FIELDS: [&str; 8] = [
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/uid",
    "/metadata/resourceVersion",
    "/metadata/generation",
    "/metadata/creationTimestamp",
];

/// Managers and the fields each owns.
#[derive(Debug, Clone, Default)]
pub struct Owners(BTreeMap<String, BTreeSet<String>>);

/// The leaves of `v`: pointer → value.
pub fn leaves(v: &Value) -> BTreeMap<String, Value> {
    fn walk(v: &Value, at: &mut String, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    walk(child, at, out);
                    at.truncate(len);
                }
            }
            _ => {
                if !SERVER_FIELDS.contains(&at.as_str()) && !at.starts_with("/metadata/managedFields") {
                    out.insert(at.clone(), v.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, &mut String::new(), &mut out);
    out
}

/// Whether one pointer is the other or lies under it.
fn overlaps(a: &str, b: &str) -> bool {
    let under = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    };
    under(a, b) || under(b, a)
}

impl Owners {
    /// Who owns what, for assertions.
    pub fn managers(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.0
    }

    /// After a non-apply write (create, update, patch) by `manager`:
    /// changed and added fields become its alone, removed ones nobody's.
    pub fn record_update(&mut self, manager: &str, old: &Value, new: &Value) {
        let (before, after) = (leaves(old), leaves(new));
        for (path, value) in &after {
            if before.get(path) != Some(value) {
                self.take(manager, path);
            }
        }
        for path in before.keys().filter(|p| !after.contains_key(*p)) {
            self.forget(path);
        }
        self.0.retain(|_, fields| !fields.is_empty());
    }

    fn take(&mut self, manager: &str, path: &str) {
        for fields in self.0.values_mut() {
            fields.retain(|f| !overlaps(f, path));
        }
        self.0.entry(manager.to_owned()).or_default().insert(path.to_owned());
    }

    fn forget(&mut self, path: &str) {
        for fields in self.0.values_mut() {
            fields.retain(|f| !overlaps(f, path));
        }
    }

    /// Server-side apply of `config` by `manager` onto `current`: the new
    /// object, or a 409 naming the conflicting fields and their owners.
    pub fn apply(&mut self, manager: &str, force: bool, current: &Value, config: &Value) -> Result<Value, ApiError> {
        let wanted = leaves(config);
        let now = leaves(current);
        let mut conflicts = Vec::new();
        for (path, value) in &wanted {
            let differs = now.iter().any(|(p, v)| overlaps(p, path) && (p != path || v != value));
            if !differs {
                continue;
            }
            for (other, fields) in &self.0 {
                if other != manager && fields.iter().any(|f| overlaps(f, path)) {
                    conflicts.push(format!("conflict with \"{other}\": {}", path.replace('/', ".")));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(ApiError::new(
                http::StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Apply failed with {} conflicts: {}",
                    conflicts.len(),
                    conflicts.join("; ")
                ),
            ));
        }
        let mut new = current.clone();
        // Fields this manager applied before and dropped now go, unless
        // another manager still owns them.
        let previous = self.0.get(manager).cloned().unwrap_or_default();
        for path in previous.iter().filter(|p| !wanted.contains_key(*p)) {
            let shared = self.0.iter().any(|(m, fields)| m != manager && fields.contains(path));
            if !shared {
                remove_pointer(&mut new, path);
            }
        }
        merge_into(&mut new, config);
        // Ownership: the manager owns exactly what it applied; others
        // keep a field only where they agree on its value (shared); where
        // they did not, the apply was forced (or it failed above).
        for (other, fields) in self.0.iter_mut() {
            if other == manager {
                continue;
            }
            fields.retain(|f| {
                !wanted
                    .iter()
                    .any(|(p, v)| overlaps(f, p) && (f != p || now.get(p) != Some(v)))
            });
        }
        self.0.insert(manager.to_owned(), wanted.keys().cloned().collect());
        self.0.retain(|_, fields| !fields.is_empty());
        Ok(new)
    }
}

/// Applied configuration merges into the object: maps recursively, any
/// other value replaces, null removes.
fn merge_into(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
            for (k, v) in c {
                if v.is_null() {
                    t.remove(k);
                } else if v.is_object() {
                    let slot = t.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()));
                    if !slot.is_object() {
                        *slot = Value::Object(Map::new());
                    }
                    merge_into(slot, v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (t, c) => *t = c.clone(),
    }
}

fn remove_pointer(v: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    if let Some(Value::Object(m)) = v.pointer_mut(parent) {
        m.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unforced_apply_of_anothers_field_conflicts() {
        let mut owners = Owners::default();
        let empty = json!({"metadata": {"name": "l"}});
        let a = json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
        let after_a = owners.apply("a", false, &empty, &a).unwrap();
        let b = json!({"spec": {"holderIdentity": "b", "leaseDurationSeconds": 15}});
        let err = owners.apply("b", false, &after_a, &b).unwrap_err();
        assert_eq!((err.code, err.reason), (409, "Conflict"), "{err}");
        assert!(err.message.contains(".spec.holderIdentity"), "{err}");
        // A forced apply takes the field.
        let after_b = owners.apply("b", true, &after_a, &b).unwrap();
        assert_eq!(after_b["spec"]["holderIdentity"], "b");
        assert!(!owners.managers()["a"].contains("/spec/holderIdentity"));
        assert!(
            owners.managers()["a"].contains("/spec/leaseDurationSeconds"),
            "an agreed value is shared"
        );
    }

    #[test]
    fn fields_cleared_by_an_update_are_free_to_apply() {
        let mut owners = Owners::default();
        let a = json!({"spec": {"holderIdentity": "a"}});
        let held = owners.apply("a", false, &json!({}), &a).unwrap();
        let released = json!({"spec": {}});
        owners.record_update("b", &held, &released);
        let b = json!({"spec": {"holderIdentity": "b"}});
        assert_eq!(
            owners.apply("b", false, &released, &b).unwrap()["spec"]["holderIdentity"],
            "b"
        );
    }

    #[test]
    fn apply_drops_fields_its_manager_no_longer_sends() {
        let mut owners = Owners::default();
        let one = owners
            .apply("m", false, &json!({}), &json!({"status": {"a": 1, "b": 2}}))
            .unwrap();
        let two = owners.apply("m", false, &one, &json!({"status": {"a": 3}})).unwrap();
        assert_eq!(two, json!({"status": {"a": 3}}));
    }
}
