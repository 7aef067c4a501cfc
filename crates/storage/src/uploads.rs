//! Multipart uploads that were started and never finished, on the stores
//! that speak S3's XML protocol for them: S3 and Google Cloud Storage.
//!
//! A process killed mid-upload cannot abort its own upload, and both keep
//! (and bill for) the parts of an unfinished multipart upload until
//! someone aborts it. object_store can abort an upload whose id it knows
//! but cannot list them, so the listing here is `ListMultipartUploads`
//! (`GET /bucket?uploads`, the same request and answer on GCS's XML API),
//! signed with the store's own credentials.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use object_store::ClientOptions;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use serde::Deserialize;

use crate::StorageError;
use crate::client::truthy;

/// An upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedUpload {
    /// The key it would have written, relative to the store's root (and
    /// prefix).
    pub key: String,
    /// The store's handle on it: S3's and GCS's upload id; the local
    /// store's staging file suffix; Azure's blob name.
    pub id: String,
    /// When it began (S3, GCS), or when it was last written (the local
    /// store, Azure). Some S3-compatible servers report a fixed date.
    pub initiated: DateTime<Utc>,
}

/// GCS's XML API root when no other is configured.
const GCS_DEFAULT_BASE_URL: &str = "https://storage.googleapis.com";

/// How listing requests are authorised: as the store signs its own.
enum Signing {
    Unsigned,
    Aws {
        store: AmazonS3,
        region: String,
        sign_payload: bool,
        request_payer: bool,
    },
    /// OAuth bearer tokens; an empty one (emulators) is sent as none.
    Google(GoogleCloudStorage),
}

/// Lists and aborts the multipart uploads of one bucket (and key prefix)
/// on S3 or GCS.
pub(crate) struct MultipartUploads {
    /// Names the store in errors: "S3", "GCS".
    store_name: &'static str,
    /// Without the storage URL's prefix: keys here are full keys.
    multipart: Arc<dyn MultipartStore>,
    bucket_url: url::Url,
    client: HttpClient,
    signing: Signing,
    /// The storage URL's key prefix followed by `/`, or empty.
    key_prefix: String,
    /// Why listing cannot work with this configuration.
    unsupported: Option<&'static str>,
}

impl fmt::Debug for MultipartUploads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the store or the client: their Debug may show credentials.
        f.debug_struct("MultipartUploads")
            .field("store", &self.store_name)
            .field("bucket_url", &self.bucket_url.as_str())
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

fn key_prefix(prefix: &Path) -> String {
    if prefix.as_ref().is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

impl MultipartUploads {
    /// Reads from `builder` what the listing request needs (the same
    /// endpoint and region as `store`, which it built); `client` carries
    /// the store's client settings (TLS roots, proxy, timeouts).
    pub(crate) fn s3(
        builder: &AmazonS3Builder,
        store: AmazonS3,
        bucket: &str,
        prefix: &Path,
        client: &ClientOptions,
    ) -> Result<MultipartUploads, StorageError> {
        let get = |key: AmazonS3ConfigKey| builder.get_config_value(&key);
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".to_owned());
        let virtual_hosted = truthy(get(AmazonS3ConfigKey::VirtualHostedStyleRequest));
        // The bucket's address as object_store derives it: an S3-specific
        // endpoint before the generic one; with virtual-hosted requests the
        // endpoint already names the bucket.
        let bucket_url = match get(AmazonS3ConfigKey::S3Endpoint).or_else(|| get(AmazonS3ConfigKey::Endpoint)) {
            Some(endpoint) if virtual_hosted => endpoint,
            Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            None if virtual_hosted => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            None => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let signing = if truthy(get(AmazonS3ConfigKey::SkipSignature)) {
            Signing::Unsigned
        } else {
            Signing::Aws {
                store: store.clone(),
                region,
                sign_payload: !truthy(get(AmazonS3ConfigKey::UnsignedPayload)),
                request_payer: truthy(get(AmazonS3ConfigKey::RequestPayer)),
            }
        };
        Ok(MultipartUploads {
            store_name: "S3",
            multipart: Arc::new(store),
            bucket_url: parse_bucket_url("S3", bucket, &bucket_url)?,
            client: connect("S3", bucket, client)?,
            signing,
            key_prefix: key_prefix(prefix),
            // Directory buckets sign with session credentials object_store
            // keeps to itself.
            unsupported: truthy(get(AmazonS3ConfigKey::S3Express))
                .then_some("listing unfinished uploads is not supported for S3 Express One Zone buckets"),
        })
    }

    /// Like [`MultipartUploads::s3`] for GCS. The XML API root is the
    /// configured `google_base_url`, else GCS's own (a base URL given only
    /// inside a service-account file is not seen here).
    pub(crate) fn gcs(
        builder: &GoogleCloudStorageBuilder,
        store: GoogleCloudStorage,
        bucket: &str,
        prefix: &Path,
        client: &ClientOptions,
    ) -> Result<MultipartUploads, StorageError> {
        let base = builder
            .get_config_value(&GoogleConfigKey::BaseUrl)
            .unwrap_or_else(|| GCS_DEFAULT_BASE_URL.to_owned());
        let bucket_url = format!("{}/{bucket}", base.trim_end_matches('/'));
        let signing = if truthy(builder.get_config_value(&GoogleConfigKey::SkipSignature)) {
            Signing::Unsigned
        } else {
            Signing::Google(store.clone())
        };
        Ok(MultipartUploads {
            store_name: "GCS",
            multipart: Arc::new(store),
            bucket_url: parse_bucket_url("GCS", bucket, &bucket_url)?,
            client: connect("GCS", bucket, client)?,
            signing,
            key_prefix: key_prefix(prefix),
            unsupported: None,
        })
    }

    fn error(&self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StorageError {
        StorageError::Store(object_store::Error::Generic {
            store: self.store_name,
            source: source.into(),
        })
    }

    /// Every unfinished upload whose key (relative to the storage URL)
    /// starts with `prefix`, page by page.
    pub(crate) fn list(self: Arc<Self>, prefix: &str) -> BoxStream<'static, Result<UnfinishedUpload, StorageError>> {
        if let Some(why) = self.unsupported {
            return stream::once(async move {
                Err(StorageError::Store(object_store::Error::NotSupported {
                    source: why.into(),
                }))
            })
            .boxed();
        }
        let full_prefix = format!("{}{prefix}", self.key_prefix);
        // The markers of the next page; `None` once the last page is read.
        let first: Option<Markers> = Some(Markers::default());
        stream::try_unfold((self, full_prefix, first), |(this, full_prefix, next)| async move {
            let Some(markers) = next else { return Ok(None) };
            let page = this.page(&full_prefix, &markers).await?;
            let next = match (page.is_truncated, non_empty(page.next_key_marker)) {
                (true, Some(key)) => Some(Markers {
                    key: Some(key),
                    upload_id: non_empty(page.next_upload_id_marker),
                }),
                // A truncated page without a marker to go on from cannot be
                // continued; stopping beats asking for it again forever.
                _ => None,
            };
            let uploads: Vec<Result<UnfinishedUpload, StorageError>> = page
                .uploads
                .into_iter()
                .filter_map(|u| {
                    let key = u.key.strip_prefix(&this.key_prefix)?.to_owned();
                    Some(Ok(UnfinishedUpload {
                        key,
                        id: u.upload_id,
                        initiated: u.initiated,
                    }))
                })
                .collect();
            Ok(Some((stream::iter(uploads), (this, full_prefix, next))))
        })
        .try_flatten()
        .boxed()
    }

    async fn page(&self, full_prefix: &str, markers: &Markers) -> Result<ListMultipartUploadsResult, StorageError> {
        let mut query = format!("uploads&prefix={}", aws_encode(full_prefix));
        if let Some(key) = &markers.key {
            query.push_str(&format!("&key-marker={}", aws_encode(key)));
        }
        if let Some(id) = &markers.upload_id {
            query.push_str(&format!("&upload-id-marker={}", aws_encode(id)));
        }
        let mut url = self.bucket_url.clone();
        url.set_query(Some(&query));
        let mut request = http::Request::builder()
            .method(http::Method::GET)
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| self.error(e))?;
        self.sign(&mut request).await?;
        let response = self.client.execute(request).await.map_err(|e| self.error(e))?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(|e| self.error(e))?;
        if !status.is_success() {
            // The error document names the problem (AccessDenied, …); it
            // carries no secrets.
            let detail = quick_xml::de::from_reader::<_, S3ErrorBody>(body.as_ref())
                .map(|e| format!("{}: {}", e.code, e.message))
                .unwrap_or_default();
            return Err(self.error(format!("listing multipart uploads: HTTP {status} {detail}")));
        }
        quick_xml::de::from_reader(body.as_ref())
            .map_err(|e| self.error(format!("listing multipart uploads: unexpected answer: {e}")))
    }

    async fn sign(&self, request: &mut http::Request<HttpRequestBody>) -> Result<(), StorageError> {
        match &self.signing {
            Signing::Unsigned => {}
            Signing::Aws {
                store,
                region,
                sign_payload,
                request_payer,
            } => {
                let credential = store
                    .credentials()
                    .get_credential()
                    .await
                    .map_err(StorageError::Store)?;
                AwsAuthorizer::new(&credential, "s3", region)
                    .with_sign_payload(*sign_payload)
                    .with_request_payer(*request_payer)
                    .try_authorize(request, None)
                    .map_err(StorageError::Store)?;
            }
            Signing::Google(store) => {
                let credential = store
                    .credentials()
                    .get_credential()
                    .await
                    .map_err(StorageError::Store)?;
                if !credential.bearer.is_empty() {
                    let value = http::HeaderValue::try_from(format!("Bearer {}", credential.bearer))
                        .map_err(|e| self.error(e))?;
                    request.headers_mut().insert(http::header::AUTHORIZATION, value);
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn abort(&self, upload: &UnfinishedUpload) -> Result<(), StorageError> {
        let location =
            Path::parse(format!("{}{}", self.key_prefix, upload.key)).map_err(|e| StorageError::Store(e.into()))?;
        match self.multipart.abort_multipart(&location, &upload.id).await {
            // Aborted meanwhile, by someone else or an earlier try.
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::Store(e)),
        }
    }
}

fn parse_bucket_url(store: &str, bucket: &str, url: &str) -> Result<url::Url, StorageError> {
    url::Url::parse(url).map_err(|e| StorageError::Config(format!("{store} endpoint of bucket {bucket:?}: {e}")))
}

fn connect(store: &str, bucket: &str, options: &ClientOptions) -> Result<HttpClient, StorageError> {
    ReqwestConnector::default()
        .connect(options)
        .map_err(|e| StorageError::Config(format!("{store} client for bucket {bucket:?}: {e}")))
}

/// SigV4's encoding of a query value: everything but `A-Z a-z 0-9 - _ . ~`
/// as `%XX`. Sent exactly as it is signed, so no server can read a `+` or
/// a `/` differently from the signature (GCS reads it the same way).
fn aws_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Default)]
struct Markers {
    key: Option<String>,
    upload_id: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMultipartUploadsResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<S3Upload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct S3Upload {
    key: String,
    upload_id: String,
    initiated: DateTime<Utc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct S3ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded_as_signed() {
        assert_eq!(aws_encode("blobs/ab/cd/0190-"), "blobs%2Fab%2Fcd%2F0190-");
        assert_eq!(aws_encode("a b+c~d_e.f"), "a%20b%2Bc~d_e.f");
        assert_eq!(aws_encode("é"), "%C3%A9");
    }

    #[test]
    fn list_answers_are_read() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker/><UploadIdMarker/>
  <NextKeyMarker>blobs/a/b/k2</NextKeyMarker><NextUploadIdMarker>id-2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>blobs/a/b/k1</Key><UploadId>id-1</UploadId><Initiated>2026-11-10T20:48:33.000Z</Initiated></Upload>
  <Upload><Key>blobs/a/b/k&amp;2</Key><UploadId>id-2</UploadId><Initiated>2026-11-10T20:49:00Z</Initiated><StorageClass>STANDARD</StorageClass></Upload>
</ListMultipartUploadsResult>"#;
        let page: ListMultipartUploadsResult = quick_xml::de::from_reader(xml.as_bytes()).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_key_marker.as_deref(), Some("blobs/a/b/k2"));
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[1].key, "blobs/a/b/k&2");
        assert_eq!(page.uploads[0].upload_id, "id-1");

        let empty =
            r#"<ListMultipartUploadsResult><KeyMarker/><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
        let page: ListMultipartUploadsResult = quick_xml::de::from_reader(empty.as_bytes()).unwrap();
        assert!(!page.is_truncated && page.uploads.is_empty());
    }
}
