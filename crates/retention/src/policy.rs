//! The `RetentionPolicy` resource (`teledrop.dev/v1alpha1`).
//!
//! A policy selects files (owners, chats, MIME patterns, size range; an
//! empty selector selects every file) and says when they go: older than
//! `maxAge`, not downloaded for `maxIdle`, or, with `EvictOldest`, the
//! oldest ones of a user (or of everyone) over a quota. With `Reject`, a
//! quota instead refuses new files at ingest. The controller stores each
//! policy's spec in the catalog under `namespace/name`; workers read them
//! from there.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use teledrop_catalog::FileFilter;
use teledrop_core::{ChatId, UserId};

use crate::values::{MimePattern, PolicyDuration, Quantity};

/// Cleanup and quota rules for files stored by teledrop.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "teledrop.dev",
    version = "v1alpha1",
    kind = "RetentionPolicy",
    plural = "retentionpolicies",
    singular = "retentionpolicy",
    shortname = "rp",
    namespaced,
    status = "RetentionPolicyStatus",
    printcolumn = r#"{"name":"Max Age","type":"string","jsonPath":".spec.maxAge"}"#,
    printcolumn = r#"{"name":"Max Idle","type":"string","jsonPath":".spec.maxIdle","priority":1}"#,
    printcolumn = r#"{"name":"User Quota","type":"string","jsonPath":".spec.perUser.maxBytes"}"#,
    printcolumn = r#"{"name":"Total Quota","type":"string","jsonPath":".spec.total.maxBytes"}"#,
    printcolumn = r#"{"name":"On Exceeded","type":"string","jsonPath":".spec.onQuotaExceeded","priority":1}"#,
    printcolumn = r#"{"name":"Last Run","type":"date","jsonPath":".status.lastRunTime"}"#,
    printcolumn = r#"{"name":"Deleted","type":"integer","jsonPath":".status.totalDeletedFiles"}"#,
    printcolumn = r#"{"name":"Would Reject","type":"integer","jsonPath":".status.wouldReject","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionPolicySpec {
    /// Which files the policy applies to. Empty: every file.
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub selector: Selector,
    /// Delete files older than this (e.g. 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<PolicyDuration>,
    /// Delete files not downloaded for this long (counted from upload if
    /// never downloaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_idle: Option<PolicyDuration>,
    /// A quota for each user's selected files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user: Option<Quota>,
    /// A quota for all selected files together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Quota>,
    /// What happens when a quota is exceeded.
    #[serde(default)]
    pub on_quota_exceeded: OnQuotaExceeded,
    /// How often the policy is swept (default 1h).
    #[serde(default = "default_interval")]
    pub interval: PolicyDuration,
    /// Report what a sweep would delete without deleting anything, and
    /// accept files a `Reject` quota would refuse, counting them in
    /// `status.wouldReject`.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_interval() -> PolicyDuration {
    "1h".parse().expect("a valid duration")
}

/// Which files a policy applies to; every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// Telegram user ids of the files' owners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<i64>,
    /// Telegram chat ids the files were sent in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chats: Vec<i64>,
    /// MIME type patterns (`video/*`, `application/pdf`); any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mime_types: Vec<MimePattern>,
    /// Files at least this large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<Quantity>,
    /// Files at most this large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Quantity>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The catalog filter selecting the same files.
    pub fn filter(&self) -> FileFilter {
        FileFilter {
            owners: self.users.iter().map(|&u| UserId(u)).collect(),
            chats: self.chats.iter().map(|&c| ChatId(c)).collect(),
            mime_patterns: self.mime_types.iter().map(|m| m.as_str().to_owned()).collect(),
            min_size: self.min_size.map(Quantity::bytes),
            max_size: self.max_size.map(Quantity::bytes),
            ..FileFilter::default()
        }
    }

    /// Whether an incoming file matches, judged before it is downloaded.
    /// An unknown size matches any size range (the quota check then
    /// limits the download instead).
    pub fn matches(&self, owner: UserId, chat: ChatId, mime: &str, size: Option<u64>) -> bool {
        (self.users.is_empty() || self.users.contains(&owner.0))
            && (self.chats.is_empty() || self.chats.contains(&chat.0))
            && (self.mime_types.is_empty() || self.mime_types.iter().any(|p| p.matches(mime)))
            && size.is_none_or(|s| {
                self.min_size.is_none_or(|m| s >= m.bytes()) && self.max_size.is_none_or(|m| s <= m.bytes())
            })
    }
}

/// Limits on bytes and files; either may be absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_files: Option<u64>,
}

/// What a quota does when exceeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnQuotaExceeded {
    /// Refuse new files that would exceed it; the user is told why.
    #[default]
    Reject,
    /// Accept them; the sweep deletes the oldest files until it holds.
    EvictOldest,
}

impl RetentionPolicySpec {
    /// Rules a schema cannot express; the controller reports a violation
    /// as `Ready=False` and the policy file loader refuses it.
    pub fn validate(&self) -> Result<(), String> {
        if let (Some(min), Some(max)) = (self.selector.min_size, self.selector.max_size)
            && min > max
        {
            return Err(format!(
                "selector.minSize ({min}) is larger than selector.maxSize ({max})"
            ));
        }
        for (name, q) in [("perUser", &self.per_user), ("total", &self.total)] {
            if let Some(q) = q
                && q.max_bytes.is_none()
                && q.max_files.is_none()
            {
                return Err(format!("{name} sets neither maxBytes nor maxFiles"));
            }
        }
        if self.max_age.is_none() && self.max_idle.is_none() && self.per_user.is_none() && self.total.is_none() {
            return Err("the policy sets none of maxAge, maxIdle, perUser, total".into());
        }
        Ok(())
    }
}

/// What the controller last observed and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
    /// What the last sweep matched and deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunCounts>,
    /// Files deleted by this policy since it was created.
    #[serde(default)]
    pub total_deleted_files: u64,
    /// Bytes freed by this policy since it was created.
    #[serde(default)]
    pub total_freed_bytes: u64,
    /// The selected files now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageStatus>,
    /// With `dryRun`: files a `Reject` quota of this policy would have
    /// refused since the policy was created (they were accepted). Updated
    /// at each sweep.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub would_reject: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunCounts {
    pub matched_files: u64,
    pub matched_bytes: u64,
    pub deleted_files: u64,
    pub freed_bytes: u64,
    /// The run was a dry run: `deleted`/`freed` say what it would delete.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageStatus {
    pub files: u64,
    pub bytes: u64,
}

/// A policy as the rest of the system uses it: a key and a valid spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `namespace/name` (controller) or `file:name` (standalone).
    pub key: String,
    pub spec: RetentionPolicySpec,
}

impl Policy {
    /// Parses a spec as stored in the catalog.
    pub fn from_row(row: &teledrop_catalog::PolicyRow) -> Result<Self, String> {
        let spec: RetentionPolicySpec =
            serde_json::from_value(row.spec.clone()).map_err(|e| format!("policy {}: {e}", row.key))?;
        spec.validate().map_err(|e| format!("policy {}: {e}", row.key))?;
        Ok(Self {
            key: row.key.clone(),
            spec,
        })
    }

    pub fn next_run(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        after + self.spec.interval.as_chrono()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn spec(json: serde_json::Value) -> Result<RetentionPolicySpec, String> {
        serde_json::from_value::<RetentionPolicySpec>(json).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_round_trip() {
        let s = spec(serde_json::json!({"maxAge": "30d"})).unwrap();
        assert_eq!(s.interval.to_string(), "1h");
        assert_eq!(s.on_quota_exceeded, OnQuotaExceeded::Reject);
        assert!(!s.dry_run);
        assert!(s.selector.is_empty());
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(spec(back).unwrap(), s);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_with_their_names() {
        let e = spec(serde_json::json!({"maxAge": "30d", "maxAgee": "1d"})).unwrap_err();
        assert!(e.contains("maxAgee"), "{e}");
        let e = spec(serde_json::json!({"maxAge": "30 days"})).unwrap_err();
        assert!(e.contains("duration"), "{e}");
        let e = spec(serde_json::json!({"perUser": {"maxBytes": "5GB!"}})).unwrap_err();
        assert!(e.contains("quantity"), "{e}");
        let e = spec(serde_json::json!({"maxAge": "1d", "onQuotaExceeded": "Delete"})).unwrap_err();
        assert!(e.contains("Delete"), "{e}");
    }

    #[test]
    fn rules_beyond_the_schema() {
        let s = spec(serde_json::json!({"selector": {"minSize": "2Mi", "maxSize": "1Mi"}, "maxAge": "1d"})).unwrap();
        assert!(s.validate().unwrap_err().contains("minSize"));
        let s = spec(serde_json::json!({"perUser": {}})).unwrap();
        assert!(s.validate().unwrap_err().contains("perUser"));
        let s = spec(serde_json::json!({"dryRun": true})).unwrap();
        assert!(s.validate().is_err());
    }

    #[test]
    fn selector_matching_before_download() {
        let s: Selector = serde_json::from_value(serde_json::json!({
            "users": [7], "mimeTypes": ["video/*"], "maxSize": "10Mi"
        }))
        .unwrap();
        assert!(s.matches(UserId(7), ChatId(1), "video/mp4", Some(1 << 20)));
        assert!(s.matches(UserId(7), ChatId(1), "video/mp4", None));
        assert!(!s.matches(UserId(8), ChatId(1), "video/mp4", Some(1)));
        assert!(!s.matches(UserId(7), ChatId(1), "audio/mpeg", Some(1)));
        assert!(!s.matches(UserId(7), ChatId(1), "video/mp4", Some(11 << 20)));
        let f = s.filter();
        assert_eq!(f.owners, vec![UserId(7)]);
        assert_eq!(f.max_size, Some(10 << 20));
    }

    #[test]
    fn the_crd_has_names_columns_and_status() {
        let crd = RetentionPolicy::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("retentionpolicies.teledrop.dev"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["rp".to_owned()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        for want in ["Max Age", "User Quota", "Total Quota", "Last Run", "Deleted", "Ready"] {
            assert!(cols.contains(&want), "{cols:?}");
        }
        let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["maxAge"]["pattern"], "^([0-9]+(s|m|h|d|w))+$");
        assert_eq!(
            spec["onQuotaExceeded"]["enum"],
            serde_json::json!(["Reject", "EvictOldest"])
        );
    }
}
