//! Everything a link request can end with besides the file itself, and
//! the one place that decides how each is answered.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use teledrop_catalog::CatalogError;
use teledrop_core::file::LinkGone;
use teledrop_core::report;
use teledrop_storage::StorageError;

use crate::range::unsatisfied_content_range;
use crate::response::{html_page, security_headers};

#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    /// The token is malformed or names no link.
    #[error("no such link")]
    NotFound,
    /// The link exists but no longer serves its file.
    #[error("the link is gone: {}", gone_reason(*.0))]
    Gone(LinkGone),
    /// The link is live but its object is missing from storage.
    #[error("the link's object is missing from storage")]
    ObjectMissing,
    /// A well-formed `Range` that selects nothing in `total` bytes.
    #[error("range not satisfiable (the file has {total} bytes)")]
    RangeNotSatisfiable { total: u64 },
    /// A download limit could not be checked against a settled count.
    #[error("the download count is being written; try again")]
    Busy,
    #[error("catalog")]
    Catalog(#[from] CatalogError),
    #[error("storage")]
    Storage(#[source] StorageError),
}

impl From<StorageError> for LinksError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => Self::ObjectMissing,
            other => Self::Storage(other),
        }
    }
}

fn gone_reason(g: LinkGone) -> &'static str {
    match g {
        LinkGone::Expired => "expired",
        LinkGone::Revoked => "revoked",
        LinkGone::FileDeleted => "file deleted",
        LinkGone::DownloadLimitReached => "download limit reached",
    }
}

impl LinksError {
    /// A stable, low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Gone(LinkGone::Expired) => "expired",
            Self::Gone(LinkGone::Revoked) => "revoked",
            Self::Gone(LinkGone::FileDeleted) => "file_deleted",
            Self::Gone(LinkGone::DownloadLimitReached) => "download_limit_reached",
            Self::ObjectMissing => "object_missing",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Self::Busy => "busy",
            Self::Catalog(CatalogError::PoolTimedOut) => "catalog_busy",
            Self::Catalog(_) => "catalog",
            Self::Storage(_) => "storage",
        }
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Gone(_) | Self::ObjectMissing => StatusCode::GONE,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Catalog(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Storage(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Catalog(_) | Self::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for LinksError {
    fn into_response(self) -> Response {
        let status = self.status();
        let label = self.label();
        let (title, message) = match &self {
            Self::NotFound => (
                "Link not found",
                "This link does not exist. Check that it was copied completely.",
            ),
            Self::Gone(LinkGone::Expired) => ("Link expired", "This link has expired. Ask the sender for a new one."),
            Self::Gone(LinkGone::Revoked) => ("Link revoked", "This link was revoked by its owner."),
            Self::Gone(LinkGone::FileDeleted) => ("File deleted", "The file behind this link was deleted."),
            Self::Gone(LinkGone::DownloadLimitReached) => (
                "Download limit reached",
                "This link has been used as many times as its owner allowed. Ask the sender for a new one.",
            ),
            Self::ObjectMissing => {
                tracing::warn!(error = label, "a live link's object is missing from storage");
                (
                    "File no longer available",
                    "The file behind this link is no longer available.",
                )
            }
            Self::RangeNotSatisfiable { .. } => (
                "Range not satisfiable",
                "The requested part of the file lies beyond its end.",
            ),
            Self::Busy => ("Temporarily unavailable", "Please try again in a moment."),
            Self::Catalog(CatalogError::PoolTimedOut) => {
                // Load, not a fault: every database connection of this
                // replica is busy (or Postgres does not answer). Answering
                // at once keeps requests from piling up behind the pool.
                tracing::warn!(error = label, "no catalog connection free; answering 503");
                ("Temporarily unavailable", "Please try again in a moment.")
            }
            Self::Catalog(e) => {
                tracing::error!(error = label, detail = %report(e), "catalog failed while serving a link");
                (
                    "Temporarily unavailable",
                    "Something went wrong on our side. Please try again in a moment.",
                )
            }
            Self::Storage(e) => {
                tracing::error!(error = label, detail = %report(e), "storage failed while serving a link");
                (
                    "Temporarily unavailable",
                    "Something went wrong on our side. Please try again in a moment.",
                )
            }
        };
        let mut response = (status, html_page(title, message)).into_response();
        let headers = response.headers_mut();
        security_headers(headers);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
        );
        match self {
            Self::RangeNotSatisfiable { total } => {
                if let Ok(v) = HeaderValue::from_str(&unsatisfied_content_range(total)) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            }
            Self::Busy | Self::Catalog(CatalogError::PoolTimedOut) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Catalog(_) | Self::Storage(_) if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response.extensions_mut().insert(ErrorLabel(label));
        response
    }
}

/// Put on error responses so request logging can name the error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorLabel(pub(crate) &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_status_and_label() {
        let cases = [
            (LinksError::NotFound, 404, "not_found"),
            (LinksError::Gone(LinkGone::Expired), 410, "expired"),
            (LinksError::Gone(LinkGone::Revoked), 410, "revoked"),
            (LinksError::Gone(LinkGone::FileDeleted), 410, "file_deleted"),
            (
                LinksError::Gone(LinkGone::DownloadLimitReached),
                410,
                "download_limit_reached",
            ),
            (LinksError::ObjectMissing, 410, "object_missing"),
            (
                LinksError::RangeNotSatisfiable { total: 7 },
                416,
                "range_not_satisfiable",
            ),
            (LinksError::Busy, 503, "busy"),
            (LinksError::Catalog(CatalogError::PoolTimedOut), 503, "catalog_busy"),
            (LinksError::Catalog(CatalogError::Corrupt("x".into())), 500, "catalog"),
            (LinksError::from(StorageError::InvalidRange), 500, "storage"),
        ];
        for (err, status, label) in cases {
            assert_eq!(err.label(), label);
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status, "{label}");
            assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
            assert_eq!(resp.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        assert_eq!(LinksError::from(StorageError::NotFound).label(), "object_missing");
        let resp = LinksError::RangeNotSatisfiable { total: 7 }.into_response();
        assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes */7");
        let resp = LinksError::Catalog(CatalogError::PoolTimedOut).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn messages_never_carry_details_of_the_request() {
        assert_eq!(
            LinksError::Gone(LinkGone::Expired).to_string(),
            "the link is gone: expired"
        );
        assert_eq!(LinksError::NotFound.to_string(), "no such link");
    }
}
