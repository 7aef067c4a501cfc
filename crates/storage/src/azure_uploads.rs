//! Azure's unfinished uploads: blobs that have uncommitted blocks and no
//! committed content.
//!
//! object_store uploads a large blob as blocks and commits them with one
//! block list; its abort does nothing, since Azure has no call that drops
//! uploaded blocks (they expire a week after the last one). They still
//! take space until then, so here they are found with List Blobs
//! (`include=uncommittedblobs`, minus the committed listing) and dropped
//! the one way Azure offers: committing an empty block list, which
//! discards every uncommitted block, only if no committed blob exists
//! (`If-None-Match: *`), then deleting that empty blob (`If-Match` its
//! ETag). A blob someone committed meanwhile is never touched.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use http::{Method, StatusCode, header};
use object_store::ClientOptions;
use object_store::azure::{AzureAuthorizer, AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::path::Path;
use serde::Deserialize;

use crate::client::truthy;
use crate::{StorageError, UnfinishedUpload};

/// object_store's emulator account and address when none is configured.
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_URL: &str = "http://127.0.0.1:10000";

/// Lists and drops the uncommitted blobs of one container (and prefix).
pub(crate) struct AzureUploads {
    store: MicrosoftAzure,
    account: String,
    /// `…/account` on the emulator, `https://account.blob.core.windows.net`
    /// or the configured endpoint otherwise.
    account_url: String,
    container_url: url::Url,
    client: HttpClient,
    signed: bool,
    /// The storage URL's key prefix followed by `/`, or empty.
    key_prefix: String,
}

impl fmt::Debug for AzureUploads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the store or the client: their Debug may show credentials.
        f.debug_struct("AzureUploads")
            .field("container_url", &self.container_url.as_str())
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

fn azure_error(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StorageError {
    StorageError::Store(object_store::Error::Generic {
        store: "MicrosoftAzure",
        source: source.into(),
    })
}

impl AzureUploads {
    /// Derives the container's address the way object_store does for
    /// `store`, which `builder` built.
    pub(crate) fn new(
        builder: &MicrosoftAzureBuilder,
        store: MicrosoftAzure,
        container: &str,
        prefix: &Path,
        client: &ClientOptions,
    ) -> Result<AzureUploads, StorageError> {
        let get = |key: AzureConfigKey| builder.get_config_value(&key);
        let (account, account_url, client) = if truthy(get(AzureConfigKey::UseEmulator)) {
            let account = get(AzureConfigKey::AccountName).unwrap_or_else(|| EMULATOR_ACCOUNT.to_owned());
            let service = std::env::var("AZURITE_BLOB_STORAGE_URL").unwrap_or_else(|_| EMULATOR_URL.to_owned());
            let url = format!("{}/{account}", service.trim_end_matches('/'));
            // object_store allows plain HTTP to the emulator by itself.
            (account, url, client.clone().with_allow_http(true))
        } else {
            let account = get(AzureConfigKey::AccountName).unwrap_or_default();
            let url = match get(AzureConfigKey::Endpoint) {
                Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
                None if truthy(get(AzureConfigKey::UseFabricEndpoint)) => {
                    format!("https://{account}.blob.fabric.microsoft.com")
                }
                None => format!("https://{account}.blob.core.windows.net"),
            };
            (account, url, client.clone())
        };
        let container_url = url::Url::parse(&format!("{account_url}/{container}"))
            .map_err(|e| StorageError::Config(format!("Azure endpoint of container {container:?}: {e}")))?;
        let client = ReqwestConnector::default()
            .connect(&client)
            .map_err(|e| StorageError::Config(format!("Azure client for container {container:?}: {e}")))?;
        Ok(AzureUploads {
            store,
            account,
            account_url,
            container_url,
            client,
            signed: !truthy(get(AzureConfigKey::SkipSignature)),
            key_prefix: if prefix.as_ref().is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }

    pub(crate) fn account_url(&self) -> &str {
        &self.account_url
    }

    /// Uncommitted blobs whose key (relative to the storage URL) starts
    /// with `prefix`. Both listings are read whole before the first item.
    pub(crate) fn list(self: Arc<Self>, prefix: &str) -> BoxStream<'static, Result<UnfinishedUpload, StorageError>> {
        let full_prefix = format!("{}{prefix}", self.key_prefix);
        stream::once(async move {
            let committed: HashSet<String> = self
                .list_all(&full_prefix, false)
                .await?
                .into_iter()
                .map(|b| b.name)
                .collect();
            let everything = self.list_all(&full_prefix, true).await?;
            let found: Vec<Result<UnfinishedUpload, StorageError>> = everything
                .into_iter()
                .filter(|b| !committed.contains(&b.name))
                .filter_map(|b| {
                    let key = b.name.strip_prefix(&self.key_prefix)?.to_owned();
                    let initiated = DateTime::parse_from_rfc2822(&b.properties.last_modified)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_default();
                    Some(Ok(UnfinishedUpload {
                        id: b.name,
                        key,
                        initiated,
                    }))
                })
                .collect();
            Ok::<_, StorageError>(stream::iter(found))
        })
        .flat_map(|listed| match listed {
            Ok(items) => items.boxed(),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        })
        .boxed()
    }

    async fn list_all(&self, full_prefix: &str, uncommitted: bool) -> Result<Vec<BlobItem>, StorageError> {
        let mut blobs = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut url = self.container_url.clone();
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("restype", "container").append_pair("comp", "list");
                query.append_pair("prefix", full_prefix);
                if uncommitted {
                    query.append_pair("include", "uncommittedblobs");
                }
                if let Some(m) = &marker {
                    query.append_pair("marker", m);
                }
            }
            let (status, _, body) = self.send(Method::GET, url, &[], Vec::new()).await?;
            if !status.is_success() {
                return Err(azure_error(format!(
                    "listing blobs: HTTP {status} {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            let page: EnumerationResults = quick_xml::de::from_reader(body.as_ref())
                .map_err(|e| azure_error(format!("listing blobs: unexpected answer: {e}")))?;
            blobs.extend(page.blobs.blob);
            match page.next_marker.filter(|m| !m.is_empty()) {
                Some(next) => marker = Some(next),
                None => return Ok(blobs),
            }
        }
    }

    /// Drops the uncommitted blocks of `upload`'s blob unless a committed
    /// blob is there (see the module's comment).
    pub(crate) async fn abort(&self, upload: &UnfinishedUpload) -> Result<(), StorageError> {
        self.discard(&format!("{}{}", self.key_prefix, upload.key)).await
    }

    /// [`AzureUploads::abort`] for an upload object_store just gave up,
    /// `key` relative to the storage URL.
    pub(crate) async fn discard_relative(&self, key: &str) -> Result<(), StorageError> {
        self.discard(&format!("{}{key}", self.key_prefix)).await
    }

    async fn discard(&self, name: &str) -> Result<(), StorageError> {
        let mut url = self.container_url.clone();
        url.path_segments_mut()
            .map_err(|()| azure_error("the container URL cannot take a path"))?
            .extend(name.split('/'));
        let mut commit = url.clone();
        commit.query_pairs_mut().append_pair("comp", "blocklist");
        let body = br#"<?xml version="1.0" encoding="utf-8"?><BlockList></BlockList>"#.to_vec();
        let (status, headers, text) = self
            .send(Method::PUT, commit, &[(header::IF_NONE_MATCH, "*")], body)
            .await?;
        match status {
            // A committed blob is there (or appeared): not ours to touch.
            StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED | StatusCode::NOT_FOUND => return Ok(()),
            s if s.is_success() => {}
            s => {
                return Err(azure_error(format!(
                    "dropping uncommitted blocks of {name:?}: HTTP {s} {}",
                    String::from_utf8_lossy(&text)
                )));
            }
        }
        let etag = headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| azure_error("committing an empty block list: no ETag in the answer"))?
            .to_owned();
        let (status, _, text) = self
            .send(Method::DELETE, url, &[(header::IF_MATCH, &etag)], Vec::new())
            .await?;
        if status.is_success() || status == StatusCode::NOT_FOUND || status == StatusCode::PRECONDITION_FAILED {
            Ok(())
        } else {
            Err(azure_error(format!(
                "deleting the emptied blob {name:?}: HTTP {status} {}",
                String::from_utf8_lossy(&text)
            )))
        }
    }

    async fn send(
        &self,
        method: Method,
        url: url::Url,
        extra: &[(header::HeaderName, &str)],
        body: Vec<u8>,
    ) -> Result<(StatusCode, http::HeaderMap, bytes::Bytes), StorageError> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(header::CONTENT_LENGTH, body.len().to_string());
        for (name, value) in extra {
            request = request.header(name, *value);
        }
        let mut request = request.body(HttpRequestBody::from(body)).map_err(azure_error)?;
        if self.signed {
            let credential = self
                .store
                .credentials()
                .get_credential()
                .await
                .map_err(StorageError::Store)?;
            AzureAuthorizer::new(&credential, &self.account)
                .try_authorize(&mut request)
                .map_err(StorageError::Store)?;
        }
        let response = self.client.execute(request).await.map_err(azure_error)?;
        let (parts, body) = response.into_parts();
        let body = body.bytes().await.map_err(azure_error)?;
        Ok((parts.status, parts.headers, body))
    }
}

#[derive(Debug, Deserialize)]
struct EnumerationResults {
    #[serde(rename = "Blobs", default)]
    blobs: Blobs,
    #[serde(rename = "NextMarker", default)]
    next_marker: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Blobs {
    #[serde(rename = "Blob", default)]
    blob: Vec<BlobItem>,
}

#[derive(Debug, Deserialize)]
struct BlobItem {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Properties")]
    properties: BlobProperties,
}

#[derive(Debug, Deserialize)]
struct BlobProperties {
    #[serde(rename = "Last-Modified", default)]
    last_modified: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_listings_are_read() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="c">
  <Prefix>blobs/</Prefix>
  <Blobs>
    <Blob><Name>blobs/a&amp;b</Name><Properties><Last-Modified>Thu, 03 Dec 2026 10:00:00 GMT</Last-Modified><Content-Length>0</Content-Length></Properties></Blob>
    <Blob><Name>blobs/c</Name><Properties><Last-Modified>Thu, 03 Dec 2026 10:00:01 GMT</Last-Modified></Properties></Blob>
  </Blobs>
  <NextMarker>m2</NextMarker>
</EnumerationResults>"#;
        let page: EnumerationResults = quick_xml::de::from_reader(xml.as_bytes()).unwrap();
        assert_eq!(page.blobs.blob.len(), 2);
        assert_eq!(page.blobs.blob[0].name, "blobs/a&b");
        assert_eq!(page.next_marker.as_deref(), Some("m2"));
        let t = DateTime::parse_from_rfc2822(&page.blobs.blob[1].properties.last_modified).unwrap();
        assert_eq!(t.timestamp() % 60, 1);

        let empty = r#"<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>"#;
        let page: EnumerationResults = quick_xml::de::from_reader(empty.as_bytes()).unwrap();
        assert!(page.blobs.blob.is_empty());
        assert!(page.next_marker.unwrap_or_default().is_empty());
    }
}
