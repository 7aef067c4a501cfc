//! The storage adapter's error type.

/// Everything that can go wrong talking to object storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage URL cannot be used (bad syntax, unsupported scheme, …).
    #[error("invalid storage URL: {0}")]
    InvalidUrl(String),
    /// The store could not be configured (unknown option, bad value, the
    /// local folder cannot be created, …).
    #[error("storage configuration: {0}")]
    Config(String),
    /// The input stream of an upload failed (e.g. the download was cut).
    #[error("the upload's source failed")]
    SourceFailed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The upload's source yielded a different number of bytes than
    /// announced. When the source was too long, `actual` is the count at the
    /// moment the upload was stopped (the source was not read to its end).
    #[error("size mismatch: expected {expected} bytes, the source gave {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    /// The upload's source yielded more than the allowed number of bytes.
    #[error("object larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// No object at that key.
    #[error("object not found")]
    NotFound,
    /// The requested byte range cannot be satisfied (start at or past the
    /// end of the object, or an empty range).
    #[error("requested range not satisfiable")]
    InvalidRange,
    /// The object store failed.
    #[error("object store")]
    Store(#[source] object_store::Error),
}

impl StorageError {
    /// A stable, low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "invalid_url",
            Self::Config(_) => "config",
            Self::SourceFailed(_) => "source_failed",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::TooLarge { .. } => "too_large",
            Self::NotFound => "not_found",
            Self::InvalidRange => "invalid_range",
            Self::Store(_) => "store",
        }
    }

    /// Whether trying the same operation again later may succeed.
    ///
    /// A failed source or a size mismatch usually means a cut transfer, so
    /// they count as transient; store errors are transient unless they say
    /// something that another try will not change (missing object, bad
    /// path, permissions, unsupported operation, preconditions).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::SourceFailed(_) | Self::SizeMismatch { .. } => true,
            Self::InvalidUrl(_) | Self::Config(_) | Self::TooLarge { .. } | Self::NotFound | Self::InvalidRange => {
                false
            }
            Self::Store(e) => store_error_is_transient(e),
        }
    }
}

fn store_error_is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::NotFound { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. }
        | E::NotImplemented { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::UnknownConfigurationKey { .. } => false,
        // Generic (network, server errors after retries), JoinError and
        // anything added later.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_transience_is_classified() {
        let generic = || object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        };
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "403".into(),
        };
        let all = [
            (StorageError::InvalidUrl("x".into()), "invalid_url", false),
            (StorageError::Config("x".into()), "config", false),
            (StorageError::SourceFailed("cut".into()), "source_failed", true),
            (
                StorageError::SizeMismatch { expected: 1, actual: 2 },
                "size_mismatch",
                true,
            ),
            (StorageError::TooLarge { limit: 1 }, "too_large", false),
            (StorageError::NotFound, "not_found", false),
            (StorageError::InvalidRange, "invalid_range", false),
            (StorageError::Store(generic()), "store", true),
            (StorageError::Store(denied), "store", false),
        ];
        let mut labels = std::collections::BTreeSet::new();
        for (err, label, transient) in &all {
            assert_eq!(err.label(), *label, "{err}");
            assert_eq!(err.is_transient(), *transient, "{err}");
            labels.insert(err.label());
        }
        assert_eq!(labels.len(), 8);
    }

    #[test]
    fn source_failed_keeps_its_cause() {
        let err = StorageError::SourceFailed(Box::new(std::io::Error::other("download cut")));
        let cause = std::error::Error::source(&err).expect("a source");
        assert_eq!(cause.to_string(), "download cut");
        // The cause is printed by the chain, not again by the variant.
        assert_eq!(err.to_string(), "the upload's source failed");
        assert_eq!(
            teledrop_core::report(&err).to_string(),
            "the upload's source failed: download cut"
        );
    }
}
