//! `labelSelector` and `fieldSelector` on lists and watches: equality,
//! inequality and existence, the forms clients send for lookups. Anything
//! else is refused (400) rather than silently ignored.

use crate::status::ApiError;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
}

/// A parsed selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<Term>,
    fields: Vec<Term>,
}

fn terms(s: &str, what: &str) -> Result<Vec<Term>, ApiError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let term = if let Some((k, v)) = part.split_once("!=") {
            Term::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Term::Equals(k.trim().into(), v.trim().into())
        } else if part.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
            Term::Exists(part.into())
        } else {
            return Err(ApiError::bad_request(format!("unsupported {what} {part:?}")));
        };
        out.push(term);
    }
    Ok(out)
}

impl Selector {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, ApiError> {
        let fields = terms(fields.unwrap_or(""), "fieldSelector")?;
        for t in &fields {
            let (Term::Equals(k, _) | Term::NotEquals(k, _) | Term::Exists(k)) = t;
            if !matches!(k.as_str(), "metadata.name" | "metadata.namespace") || matches!(t, Term::Exists(_)) {
                return Err(ApiError::bad_request(format!("field label not supported: {k}")));
            }
        }
        Ok(Self {
            labels: terms(labels.unwrap_or(""), "labelSelector")?,
            fields,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let label = |k: &str| {
            obj.pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
        };
        let field = |k: &str| {
            let key = k.strip_prefix("metadata.").unwrap_or(k);
            obj.pointer(&format!("/metadata/{key}")).and_then(Value::as_str)
        };
        let key = |t: &Term| match t {
            Term::Equals(k, _) | Term::NotEquals(k, _) | Term::Exists(k) => k.clone(),
        };
        let holds = |t: &Term, got: Option<&str>| match t {
            Term::Equals(_, v) => got == Some(v.as_str()),
            Term::NotEquals(_, v) => got != Some(v.as_str()),
            Term::Exists(_) => got.is_some(),
        };
        self.labels.iter().all(|t| holds(t, label(&key(t)))) && self.fields.iter().all(|t| holds(t, field(&key(t))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects() {
        let obj = json!({"metadata": {"name": "a", "labels": {"app": "x"}}});
        let s = Selector::parse(Some("app=x"), Some("metadata.name=a")).unwrap();
        assert!(s.matches(&obj));
        assert!(!Selector::parse(Some("app!=x"), None).unwrap().matches(&obj));
        assert!(Selector::parse(None, Some("spec.x=1")).is_err());
        assert!(Selector::parse(Some("app in (x)"), None).is_err());
    }
}
