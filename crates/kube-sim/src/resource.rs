//! The resource types the stand-in serves and how request paths name
//! them, after the API conventions: `/api/v1/...` for the core group,
//! `/apis/{group}/{version}/...` for the others, then
//! `namespaces/{ns}/{plural}[/{name}[/{subresource}]]` or, for a list or
//! watch across all namespaces, `{plural}`.

/// One served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    /// Empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    /// Whether writes to the object ignore `status`, which only the
    /// `status` subresource changes (as for a CRD with
    /// `subresources.status`).
    pub status_subresource: bool,
}

impl Resource {
    /// `apiVersion` of its objects: `v1` for core, else `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// teledrop's `RetentionPolicy` CRD (`teledrop crd`).
pub const RETENTION_POLICIES: Resource = Resource {
    group: "teledrop.dev",
    version: "v1alpha1",
    plural: "retentionpolicies",
    kind: "RetentionPolicy",
    status_subresource: true,
};

/// Leader election (`kube-lease-manager`).
pub const LEASES: Resource = Resource {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    kind: "Lease",
    status_subresource: false,
};

/// Events as kube's `Recorder` writes them.
pub const EVENTS: Resource = Resource {
    group: "events.k8s.io",
    version: "v1",
    plural: "events",
    kind: "Event",
    status_subresource: false,
};

/// The older core events, which many tools still write.
pub const CORE_EVENTS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "events",
    kind: "Event",
    status_subresource: false,
};

/// Every type served; all are namespaced.
pub const SERVED: [Resource; 4] = [RETENTION_POLICIES, LEASES, EVENTS, CORE_EVENTS];

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub resource: Resource,
    /// `None`: across all namespaces (lists and watches only).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses a request path; `None` for anything not served (answered 404).
pub fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] if namespace.is_some() => (*plural, Some(*name), None),
        [plural, name, sub] if namespace.is_some() => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    let resource = SERVED
        .into_iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)?;
    if name.is_some_and(str::is_empty) {
        return None;
    }
    Some(Target {
        resource,
        namespace,
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_path("/apis/teledrop.dev/v1alpha1/namespaces/ns/retentionpolicies/a/status").unwrap();
        assert_eq!(t.resource, RETENTION_POLICIES);
        assert_eq!(
            (t.namespace.as_deref(), t.name.as_deref(), t.subresource.as_deref()),
            (Some("ns"), Some("a"), Some("status"))
        );
        let t = parse_path("/apis/teledrop.dev/v1alpha1/retentionpolicies").unwrap();
        assert_eq!((t.namespace, t.name), (None, None));
        let t = parse_path("/api/v1/namespaces/default/events").unwrap();
        assert_eq!(t.resource, CORE_EVENTS);
        assert!(parse_path("/apis/teledrop.dev/v1/retentionpolicies").is_none());
        assert!(parse_path("/apis/apps/v1/namespaces/x/deployments").is_none());
        // A name needs a namespace: every served type is namespaced.
        assert!(parse_path("/apis/coordination.k8s.io/v1/leases/x").is_none());
    }
}
