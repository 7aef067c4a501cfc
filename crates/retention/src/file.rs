//! Policies for `standalone`, read from a YAML file of one or more
//! `RetentionPolicy` documents (the same objects `kubectl apply` takes),
//! checked by the same types that generate the CRD's schema. They are
//! stored in the catalog under `file:<name>`.

use serde::Deserialize;
use std::path::Path;

use crate::policy::{Policy, RetentionPolicySpec};

#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    // `cause`, not `source`: printed here, so not a `source()` as well.
    #[error("cannot read policy file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{origin}: document {index}{name}: {message}")]
    Invalid {
        origin: String,
        /// 1-based.
        index: usize,
        /// ` (name)` when the document has one.
        name: String,
        message: String,
    },
    #[error("{origin}: two policies are named {name:?}")]
    Duplicate { origin: String, name: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: serde_yaml::Value,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
struct Metadata {
    name: Option<String>,
}

/// Reads and validates a policy file.
pub fn load_policy_file(path: &Path) -> Result<Vec<Policy>, PolicyFileError> {
    let text = std::fs::read_to_string(path).map_err(|cause| PolicyFileError::Read {
        path: path.display().to_string(),
        cause,
    })?;
    parse_policy_documents(&path.display().to_string(), &text)
}

/// Parses YAML documents into policies keyed `file:<name>`. `origin`
/// names the source in errors.
pub fn parse_policy_documents(origin: &str, text: &str) -> Result<Vec<Policy>, PolicyFileError> {
    let mut policies: Vec<Policy> = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let invalid = |name: &str, message: String| PolicyFileError::Invalid {
            origin: origin.to_owned(),
            index,
            name: if name.is_empty() {
                String::new()
            } else {
                format!(" ({name})")
            },
            message,
        };
        let value = serde_yaml::Value::deserialize(de).map_err(|e| invalid("", e.to_string()))?;
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        let doc: Document = serde_path_to_error::deserialize(value).map_err(|e| invalid("", describe(&e)))?;
        let name = doc.metadata.name.unwrap_or_default();
        if doc.api_version != "teledrop.dev/v1alpha1" || doc.kind != "RetentionPolicy" {
            return Err(invalid(
                &name,
                format!(
                    "expected apiVersion teledrop.dev/v1alpha1 and kind RetentionPolicy, found {} {}",
                    doc.api_version, doc.kind
                ),
            ));
        }
        if !is_dns_label(&name) {
            return Err(invalid(
                &name,
                "metadata.name must be a DNS label (lower-case letters, digits, '-', at most 63)".into(),
            ));
        }
        let spec: RetentionPolicySpec =
            serde_path_to_error::deserialize(doc.spec).map_err(|e| invalid(&name, format!("spec.{}", describe(&e))))?;
        spec.validate().map_err(|e| invalid(&name, format!("spec: {e}")))?;
        let key = format!("file:{name}");
        if policies.iter().any(|p| p.key == key) {
            return Err(PolicyFileError::Duplicate {
                origin: origin.to_owned(),
                name,
            });
        }
        policies.push(Policy { key, spec });
    }
    Ok(policies)
}

fn describe(e: &serde_path_to_error::Error<serde_yaml::Error>) -> String {
    let path = e.path().to_string();
    if path == "." {
        e.inner().to_string()
    } else {
        format!("{path}: {}", e.inner())
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "\
apiVersion: teledrop.dev/v1alpha1
kind: RetentionPolicy
metadata:
  name: short-lived
spec:
  maxAge: 2s
  interval: 1s
---
apiVersion: teledrop.dev/v1alpha1
kind: RetentionPolicy
metadata:
  name: quota
  namespace: ignored-here
spec:
  selector:
    mimeTypes: [\"video/*\"]
  perUser:
    maxBytes: 5Gi
    maxFiles: 100
---
";

    #[test]
    fn several_documents() {
        let p = parse_policy_documents("p.yaml", TWO).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].key, "file:short-lived");
        assert_eq!(p[0].spec.max_age.unwrap().as_duration().as_secs(), 2);
        assert_eq!(p[1].spec.per_user.as_ref().unwrap().max_files, Some(100));
    }

    #[test]
    fn errors_name_the_document_and_the_field() {
        let bad = TWO.replace("maxBytes: 5Gi", "maxBytes: 5 gigs");
        let e = parse_policy_documents("p.yaml", &bad).unwrap_err().to_string();
        assert!(
            e.starts_with("p.yaml: document 2 (quota): spec.perUser.maxBytes"),
            "{e}"
        );

        let bad = TWO.replace("maxAge: 2s", "maxAge: 2s\n  maxAgeSeconds: 2");
        let e = parse_policy_documents("p.yaml", &bad).unwrap_err().to_string();
        assert!(
            e.contains("document 1 (short-lived)") && e.contains("maxAgeSeconds"),
            "{e}"
        );

        let bad = TWO.replace(
            "kind: RetentionPolicy\nmetadata:\n  name: quota",
            "kind: Policy\nmetadata:\n  name: quota",
        );
        let e = parse_policy_documents("p.yaml", &bad).unwrap_err().to_string();
        assert!(e.contains("document 2 (quota)") && e.contains("kind"), "{e}");

        let bad = TWO.replace("name: quota", "name: short-lived");
        let e = parse_policy_documents("p.yaml", &bad).unwrap_err().to_string();
        assert!(e.contains("two policies"), "{e}");

        let bad = TWO.replace("name: quota", "name: Quota_1");
        assert!(parse_policy_documents("p.yaml", &bad).is_err());

        let e = parse_policy_documents("p.yaml", "apiVersion: [")
            .unwrap_err()
            .to_string();
        assert!(e.contains("document 1"), "{e}");

        let bad = TWO.replace("  maxAge: 2s\n  interval: 1s", "  interval: 1s");
        let e = parse_policy_documents("p.yaml", &bad).unwrap_err().to_string();
        assert!(e.contains("none of maxAge"), "{e}");
    }

    #[test]
    fn an_empty_file_has_no_policies() {
        assert!(parse_policy_documents("p.yaml", "").unwrap().is_empty());
        assert!(parse_policy_documents("p.yaml", "---\n").unwrap().is_empty());
    }
}
