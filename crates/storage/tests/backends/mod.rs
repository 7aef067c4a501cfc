//! The backends the storage conformance suite runs against: the local
//! folder, memory, S3 (moto), GCS (object_store's GCS client against the
//! XML API of `TEST_GCS_ENDPOINT`, see scripts/servers.sh) and Azure
//! (Azurite), each with a way to look behind the storage's back.

pub mod azure;

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use teledrop_storage::Storage;
use teledrop_testkit::s3::{S3Bucket, fresh_bucket};

use azure::{AzureContainer, fresh_container};

/// The GCS client's static OAuth token for the XML-API server. object_store
/// 0.14's GCS uploads always send `Authorization: Bearer <token>` (even
/// with `google_skip_signature`, even empty), and moto picks the service
/// a request is for from that header's SigV4 credential scope: a token
/// shaped like one sends the requests to moto's S3. Real GCS would take a
/// real token; nothing else about the requests changes.
const GCS_TEST_TOKEN: &str = "teledrop-test/20260101/us-east-1/s3/aws4_request";

/// A storage under test plus what is needed to look behind its back.
pub struct Fixture {
    pub storage: Storage,
    pub backend: Backend,
}

pub enum Backend {
    Local(tempfile::TempDir),
    Memory,
    S3(S3Bucket),
    /// A bucket on the XML-API server: its listings are S3's.
    Gcs(S3Bucket),
    Azure(AzureContainer),
}

impl Fixture {
    pub fn local() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::from_url(&format!("file://{}", dir.path().display())).unwrap();
        Fixture {
            storage,
            backend: Backend::Local(dir),
        }
    }

    pub fn memory() -> Self {
        Fixture {
            storage: Storage::from_url("memory://").unwrap(),
            backend: Backend::Memory,
        }
    }

    pub async fn s3() -> Self {
        let bucket = fresh_bucket().await;
        Self::cloud(Backend::S3(bucket))
    }

    pub async fn gcs() -> Self {
        let endpoint = teledrop_testkit::require_env("TEST_GCS_ENDPOINT");
        let bucket = format!("t-{}", teledrop_testkit::unique_suffix());
        // Buckets are made the server's way; the code under test never
        // creates them.
        let resp = reqwest::Client::new()
            .put(format!("{}/{bucket}", endpoint.trim_end_matches('/')))
            .bearer_auth(GCS_TEST_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating bucket on TEST_GCS_ENDPOINT: {e}"));
        assert!(resp.status().is_success(), "creating bucket: {}", resp.status());
        Self::cloud(Backend::Gcs(S3Bucket {
            endpoint,
            bucket,
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
        }))
    }

    pub async fn azure() -> Self {
        Self::cloud(Backend::Azure(fresh_container().await))
    }

    fn cloud(backend: Backend) -> Self {
        let storage = backend.open("").expect("a cloud backend");
        Fixture { storage, backend }
    }

    /// The same bucket under a key prefix (`sub` like `/nested/deeper`);
    /// `None` for the local and memory stores.
    pub fn nested(&self, sub: &str) -> Option<Storage> {
        self.backend.open(sub)
    }

    /// Unfinished uploads the backend keeps: staging files of the local
    /// store, in-progress multipart uploads on S3 and GCS, blobs with only
    /// uncommitted blocks on Azure (the in-memory store's are not
    /// observable).
    pub async fn unfinished_uploads(&self) -> Vec<String> {
        match &self.backend {
            Backend::Local(dir) => staging_files(dir.path()),
            Backend::Memory => Vec::new(),
            Backend::S3(bucket) | Backend::Gcs(bucket) => bucket.in_progress_multipart_uploads().await,
            Backend::Azure(container) => container.uncommitted_blobs().await,
        }
    }

    /// Whether every unfinished upload has all of its `parts` stored. Azure
    /// stores a leaked upload's blocks in the background, and a block
    /// landing after the abort would make the blob anew; S3 and GCS refuse
    /// a part for an aborted upload, and the other stores write in order.
    pub async fn parts_landed(&self, parts: usize) -> bool {
        let Backend::Azure(container) = &self.backend else {
            return true;
        };
        for name in container.uncommitted_blobs().await {
            if container.uncommitted_blocks(&name).await < parts {
                return false;
            }
        }
        true
    }

    pub async fn assert_no_unfinished_uploads(&self) {
        let left = self.unfinished_uploads().await;
        assert!(left.is_empty(), "unfinished uploads left behind: {left:?}");
    }

    /// The backend's own object_store client, bypassing `Storage`.
    pub fn raw_store(&self) -> Option<Arc<dyn ObjectStore>> {
        use object_store::azure::MicrosoftAzureBuilder;
        use object_store::gcp::GoogleCloudStorageBuilder;
        Some(match &self.backend {
            Backend::Memory => return None,
            Backend::Local(dir) => Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap()),
            Backend::S3(bucket) => Arc::new(
                object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&bucket.bucket)
                    .with_endpoint(&bucket.endpoint)
                    .with_access_key_id(&bucket.access_key_id)
                    .with_secret_access_key(&bucket.secret_access_key)
                    .with_region(&bucket.region)
                    .with_allow_http(true)
                    .build()
                    .unwrap(),
            ),
            Backend::Gcs(bucket) => Arc::new(
                GoogleCloudStorageBuilder::new()
                    .with_bucket_name(&bucket.bucket)
                    .with_base_url(&bucket.endpoint)
                    .with_config(object_store::gcp::GoogleConfigKey::BearerToken, GCS_TEST_TOKEN)
                    .build()
                    .unwrap(),
            ),
            Backend::Azure(container) => Arc::new(
                MicrosoftAzureBuilder::new()
                    .with_container_name(&container.container)
                    .with_account(azure::ACCOUNT)
                    .with_access_key(azure::ACCOUNT_KEY)
                    .with_endpoint(container.account_url())
                    .with_allow_http(true)
                    .build()
                    .unwrap(),
            ),
        })
    }

    /// How `describe` must start, and a secret it must not show.
    pub fn expected_description(&self) -> (String, Option<&str>) {
        match &self.backend {
            Backend::Local(_) => ("file:///".to_owned(), None),
            Backend::Memory => ("memory://".to_owned(), None),
            Backend::S3(bucket) => (
                format!("s3://{}", bucket.bucket),
                Some(bucket.secret_access_key.as_str()),
            ),
            Backend::Gcs(bucket) => (format!("gs://{}", bucket.bucket), None),
            Backend::Azure(container) => (format!("az://{}", container.container), Some(azure::ACCOUNT_KEY)),
        }
    }
}

impl Backend {
    /// A `Storage` on this cloud bucket, its URL followed by `sub`.
    fn open(&self, sub: &str) -> Option<Storage> {
        let (url, options) = match self {
            Backend::Local(_) | Backend::Memory => return None,
            Backend::S3(bucket) => (bucket.url(), s3_options(bucket)),
            Backend::Gcs(bucket) => (
                format!("gs://{}", bucket.bucket),
                vec![
                    ("google_base_url".to_owned(), bucket.endpoint.clone()),
                    ("google_bearer_token".to_owned(), GCS_TEST_TOKEN.to_owned()),
                ],
            ),
            Backend::Azure(container) => (container.url(), container.options()),
        };
        Some(Storage::from_url_with_options(&format!("{url}{sub}"), options).unwrap())
    }
}

pub fn s3_options(bucket: &S3Bucket) -> Vec<(String, String)> {
    [
        ("aws_endpoint", bucket.endpoint.as_str()),
        ("aws_access_key_id", bucket.access_key_id.as_str()),
        ("aws_secret_access_key", bucket.secret_access_key.as_str()),
        ("aws_region", bucket.region.as_str()),
        ("aws_allow_http", "true"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec()
}

fn staging_files(root: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
            } else if path.file_name().unwrap().to_string_lossy().contains('#') {
                found.push(path.display().to_string());
            }
        }
    }
    found
}
