//! Uploads that were started and never finished: S3 multipart uploads and
//! the local store's staging files.
//!
//! A process killed mid-upload cannot abort its own upload, and S3 keeps
//! (and bills for) the parts of an unfinished multipart upload until
//! someone aborts it. object_store can abort an upload whose id it knows
//! but cannot list them, so the listing here is S3's
//! `ListMultipartUploads`, signed with the store's own credentials.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ClientConfigKey, ClientOptions};
use serde::Deserialize;

use crate::StorageError;

/// An upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedUpload {
    /// The key it would have written, relative to the store's root (and
    /// prefix).
    pub key: String,
    /// The store's handle on it: S3's upload id; the local store's staging
    /// file suffix.
    pub id: String,
    /// When it began (S3), or when its staging file was last written (the
    /// local store). Some S3-compatible servers report a fixed date.
    pub initiated: DateTime<Utc>,
}

/// Lists and aborts the multipart uploads of one S3 bucket (and key
/// prefix).
pub(crate) struct S3Uploads {
    /// Without the storage URL's prefix: keys here are full keys.
    store: AmazonS3,
    bucket_url: url::Url,
    region: String,
    client: HttpClient,
    skip_signature: bool,
    sign_payload: bool,
    request_payer: bool,
    /// The storage URL's key prefix followed by `/`, or empty.
    key_prefix: String,
    /// Why listing cannot work with this configuration.
    unsupported: Option<&'static str>,
}

impl fmt::Debug for S3Uploads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the store or the client: their Debug may show credentials.
        f.debug_struct("S3Uploads")
            .field("bucket_url", &self.bucket_url.as_str())
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// The HTTP client settings the store itself uses (TLS, proxy, timeouts).
const CLIENT_KEYS: [ClientConfigKey; 20] = [
    ClientConfigKey::AllowHttp,
    ClientConfigKey::AllowInvalidCertificates,
    ClientConfigKey::NoSystemCertificates,
    ClientConfigKey::ConnectTimeout,
    ClientConfigKey::DefaultContentType,
    ClientConfigKey::Http1Only,
    ClientConfigKey::Http2KeepAliveInterval,
    ClientConfigKey::Http2KeepAliveTimeout,
    ClientConfigKey::Http2KeepAliveWhileIdle,
    ClientConfigKey::Http2MaxFrameSize,
    ClientConfigKey::Http2Only,
    ClientConfigKey::PoolIdleTimeout,
    ClientConfigKey::PoolMaxIdlePerHost,
    ClientConfigKey::ProxyUrl,
    ClientConfigKey::ProxyCaCertificate,
    ClientConfigKey::ProxyExcludes,
    ClientConfigKey::RandomizeAddresses,
    ClientConfigKey::ReadTimeout,
    ClientConfigKey::Timeout,
    ClientConfigKey::UserAgent,
];

/// object_store's reading of a boolean setting (the builder accepted it).
fn truthy(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "on" | "yes" | "y"))
}

fn s3_error(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StorageError {
    StorageError::Store(object_store::Error::Generic {
        store: "S3",
        source: source.into(),
    })
}

impl S3Uploads {
    /// Reads from `builder` what the listing request needs (the same
    /// endpoint, region and client settings as `store`, which it built).
    pub(crate) fn new(
        builder: &AmazonS3Builder,
        store: AmazonS3,
        bucket: &str,
        prefix: &Path,
    ) -> Result<S3Uploads, StorageError> {
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
        let bucket_url = url::Url::parse(&bucket_url)
            .map_err(|e| StorageError::Config(format!("S3 endpoint of bucket {bucket:?}: {e}")))?;
        let mut options = ClientOptions::new();
        for key in CLIENT_KEYS {
            if let Some(value) = get(AmazonS3ConfigKey::Client(key)) {
                options = options.with_config(key, value);
            }
        }
        let client = ReqwestConnector::default()
            .connect(&options)
            .map_err(|e| StorageError::Config(format!("S3 client for bucket {bucket:?}: {e}")))?;
        let key_prefix = if prefix.as_ref().is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(S3Uploads {
            store,
            bucket_url,
            region,
            client,
            skip_signature: truthy(get(AmazonS3ConfigKey::SkipSignature)),
            sign_payload: !truthy(get(AmazonS3ConfigKey::UnsignedPayload)),
            request_payer: truthy(get(AmazonS3ConfigKey::RequestPayer)),
            key_prefix,
            // Directory buckets sign with session credentials object_store
            // keeps to itself.
            unsupported: truthy(get(AmazonS3ConfigKey::S3Express))
                .then_some("listing unfinished uploads is not supported for S3 Express One Zone buckets"),
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
            .map_err(s3_error)?;
        if !self.skip_signature {
            let credential = self
                .store
                .credentials()
                .get_credential()
                .await
                .map_err(StorageError::Store)?;
            AwsAuthorizer::new(&credential, "s3", &self.region)
                .with_sign_payload(self.sign_payload)
                .with_request_payer(self.request_payer)
                .try_authorize(&mut request, None)
                .map_err(StorageError::Store)?;
        }
        let response = self.client.execute(request).await.map_err(s3_error)?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(s3_error)?;
        if !status.is_success() {
            // S3's error document names the problem (AccessDenied, …); it
            // carries no secrets.
            let detail = quick_xml::de::from_reader::<_, S3ErrorBody>(body.as_ref())
                .map(|e| format!("{}: {}", e.code, e.message))
                .unwrap_or_default();
            return Err(s3_error(format!("listing multipart uploads: HTTP {status} {detail}")));
        }
        quick_xml::de::from_reader(body.as_ref())
            .map_err(|e| s3_error(format!("listing multipart uploads: unexpected answer: {e}")))
    }

    pub(crate) async fn abort(&self, upload: &UnfinishedUpload) -> Result<(), StorageError> {
        let location =
            Path::parse(format!("{}{}", self.key_prefix, upload.key)).map_err(|e| StorageError::Store(e.into()))?;
        match self.store.abort_multipart(&location, &upload.id).await {
            // Aborted meanwhile, by someone else or an earlier try.
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::Store(e)),
        }
    }
}

/// SigV4's encoding of a query value: everything but `A-Z a-z 0-9 - _ . ~`
/// as `%XX`. Sent exactly as it is signed, so no server can read a `+` or
/// a `/` differently from the signature.
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

// ------------------------------------------------------------ local store

/// object_store's local store writes every upload to `<key>#<n>` next to
/// its destination and renames it into place when complete: a process
/// killed before that leaves the staging file behind.
fn staging_key(root: &FsPath, path: &FsPath) -> Option<(String, String)> {
    let relative = path.strip_prefix(root).ok()?.to_str()?;
    let (key, id) = relative.rsplit_once('#')?;
    let numbered = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    numbered.then(|| (key.to_owned(), id.to_owned()))
}

fn confined(prefix: &str) -> Result<(), std::io::Error> {
    if prefix.split('/').any(|seg| seg == ".." || seg == ".") || prefix.starts_with('/') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{prefix:?} leaves the storage folder"),
        ));
    }
    Ok(())
}

/// The staging files under `root` whose key starts with `prefix`.
/// Blocking: call it off the async runtime.
pub(crate) fn local_staging_files(root: &FsPath, prefix: &str) -> Result<Vec<UnfinishedUpload>, std::io::Error> {
    confined(prefix)?;
    // Only the folder up to the prefix's last `/` can hold matches.
    let start = match prefix.rsplit_once('/') {
        Some((folder, _)) => root.join(folder),
        None => root.to_owned(),
    };
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut found = Vec::new();
    let mut folders: Vec<PathBuf> = vec![start];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            // Fan-out folders go away with their last object.
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            // Entries vanish while we look (uploads completing, folders
            // cleaned up): skip those.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e),
            };
            let path = entry.path();
            if meta.is_dir() {
                folders.push(path);
                continue;
            }
            let Some((key, id)) = staging_key(root, &path) else {
                continue;
            };
            if key.starts_with(prefix) {
                found.push(UnfinishedUpload {
                    key,
                    id,
                    initiated: meta.modified()?.into(),
                });
            }
        }
    }
    Ok(found)
}

/// Removes a staging file found by [`local_staging_files`]; one that is
/// gone already is not an error. Blocking.
pub(crate) fn remove_local_staging_file(root: &FsPath, upload: &UnfinishedUpload) -> Result<(), std::io::Error> {
    confined(&upload.key)?;
    if upload.id.is_empty() || !upload.id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{:?} is not a staging file suffix", upload.id),
        ));
    }
    match std::fs::remove_file(root.join(format!("{}#{}", upload.key, upload.id))) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_files_are_told_from_objects() {
        let root = FsPath::new("/data");
        let at = |p: &str| staging_key(root, &root.join(p));
        assert_eq!(at("blobs/a/b/k#1"), Some(("blobs/a/b/k".into(), "1".into())));
        assert_eq!(at("blobs/a/b/k#12"), Some(("blobs/a/b/k".into(), "12".into())));
        // object_store's own rule: a `#` suffix with a non-digit is a name.
        assert_eq!(at("blobs/a/b/k#x1"), None);
        assert_eq!(at("blobs/a/b/k#"), None);
        assert_eq!(at("blobs/a#1/b/k"), None);
        assert_eq!(at("blobs/a/b/k"), None);
    }

    #[test]
    fn prefixes_stay_inside_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../x", "blobs/../../x", "/etc/", "./blobs"] {
            assert!(local_staging_files(tmp.path(), bad).is_err(), "{bad}");
        }
        let upload = UnfinishedUpload {
            key: "../outside".into(),
            id: "1".into(),
            initiated: Utc::now(),
        };
        assert!(remove_local_staging_file(tmp.path(), &upload).is_err());
        let upload = UnfinishedUpload {
            key: "blobs/k".into(),
            id: "1/../../x".into(),
            initiated: Utc::now(),
        };
        assert!(remove_local_staging_file(tmp.path(), &upload).is_err());
    }

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
