//! Storage URL → a configured store: a local folder, memory, S3, GCS or
//! Azure, every HTTP client trusting the optional extra CA roots.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use teledrop_core::tls::CaBundle;

use crate::client::client_options;
use crate::target::{self, Target};
use crate::{AzureUploads, Kind, MultipartUploads, Storage, StorageError};

impl Storage {
    /// [`Storage::open`] with no options and the system's CA roots only.
    pub fn from_url(url: &str) -> Result<Storage, StorageError> {
        Self::open(url, std::iter::empty(), None)
    }

    /// [`Storage::open`] with the system's CA roots only.
    pub fn from_url_with_options(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Storage, StorageError> {
        Self::open(url, options, None)
    }

    /// Opens the store named by `url`:
    ///
    /// - `file:///abs/dir` (created if missing) or a plain folder path
    ///   (relative ones are made absolute);
    /// - `memory://` (a new empty store);
    /// - `s3://bucket[/prefix]`, configured from the `AWS_*` environment
    ///   (`AWS_ENDPOINT_URL` / `AWS_ENDPOINT`, `AWS_REGION`,
    ///   `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, …),
    ///   path-style requests unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` says
    ///   otherwise;
    /// - `gs://bucket[/prefix]`, from the `GOOGLE_*` environment
    ///   (`GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_SERVICE_ACCOUNT_KEY`,
    ///   `GOOGLE_APPLICATION_CREDENTIALS`, `GOOGLE_BASE_URL` for an
    ///   emulator, …), else the machine's default credentials;
    /// - `az://container[/prefix]`, from the `AZURE_*` environment
    ///   (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY` or a
    ///   SAS / client secret / workload identity, `AZURE_STORAGE_ENDPOINT`,
    ///   `AZURE_STORAGE_USE_EMULATOR` with `AZURITE_BLOB_STORAGE_URL`, …).
    ///
    /// `options` override the environment; keys are object_store's config
    /// key names for the URL's cloud (`aws_endpoint`, `google_base_url`,
    /// `azure_storage_account_key`, `allow_http`, …), case-insensitive; an
    /// unknown key is a [`StorageError::Config`]. The local and memory
    /// stores ignore them.
    ///
    /// `ca` (`TELEDROP_CA_FILE`) is trusted by every HTTP client of the
    /// store on top of the system's roots: the store's own and the one
    /// that lists unfinished uploads.
    pub fn open(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
        ca: Option<&CaBundle>,
    ) -> Result<Storage, StorageError> {
        // object_store's HTTP client (reqwest 0.13 without a compiled-in
        // provider) takes the process default.
        teledrop_core::tls::install_crypto_provider();
        match target::parse(url)? {
            Target::Local { dir } => Self::local(dir),
            Target::Memory { prefix } => {
                let description = if prefix.as_ref().is_empty() {
                    "memory://".to_owned()
                } else {
                    format!("memory:///{prefix}")
                };
                Ok(Self::new(
                    with_prefix(InMemory::new(), prefix),
                    Kind::Memory,
                    description,
                ))
            }
            Target::S3 { bucket, prefix } => Self::s3(&bucket, prefix, options, ca),
            Target::Gcs { bucket, prefix } => Self::gcs(&bucket, prefix, options, ca),
            Target::Azure { container, prefix } => Self::azure(&container, prefix, options, ca),
        }
    }

    fn local(dir: PathBuf) -> Result<Storage, StorageError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::Config(format!("cannot create the storage folder {}: {e}", dir.display())))?;
        let root = std::fs::canonicalize(&dir)
            .map_err(|e| StorageError::Config(format!("cannot resolve the storage folder {}: {e}", dir.display())))?;
        if !root.is_dir() {
            return Err(StorageError::Config(format!(
                "the storage path {} is not a folder",
                root.display()
            )));
        }
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| StorageError::Config(e.to_string()))?
            // Deleting the last blob of a fan-out folder removes the folder.
            .with_automatic_cleanup(true);
        let description = url::Url::from_file_path(&root)
            .map(|u| u.to_string())
            .unwrap_or_else(|()| format!("file://{}", root.display()));
        Ok(Self::new(Arc::new(store), Kind::Local { root }, description))
    }

    fn s3(
        bucket: &str,
        prefix: Path,
        options: impl IntoIterator<Item = (String, String)>,
        ca: Option<&CaBundle>,
    ) -> Result<Storage, StorageError> {
        let mut builder = AmazonS3Builder::from_env().with_url(format!("s3://{bucket}"));
        for (key, value) in parse_options::<AmazonS3ConfigKey>(options, "S3")? {
            builder = builder.with_config(key, value);
        }
        let client = client_options(|k| builder.get_config_value(&AmazonS3ConfigKey::Client(k)), ca)?;
        let builder = builder.with_client_options(client.clone());
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .and_then(|e| public_endpoint(&e));
        let store = builder
            .clone()
            .build()
            .map_err(|e| StorageError::Config(format!("S3 store for bucket {bucket:?}: {e}")))?;
        let uploads = MultipartUploads::s3(&builder, store.clone(), bucket, &prefix, &client)?;
        let description = describe("s3", bucket, &prefix, endpoint);
        Ok(Self::new(
            with_prefix(store, prefix),
            Kind::Multipart(Arc::new(uploads)),
            description,
        ))
    }

    fn gcs(
        bucket: &str,
        prefix: Path,
        options: impl IntoIterator<Item = (String, String)>,
        ca: Option<&CaBundle>,
    ) -> Result<Storage, StorageError> {
        let mut builder = GoogleCloudStorageBuilder::from_env().with_url(format!("gs://{bucket}"));
        for (key, value) in parse_options::<GoogleConfigKey>(options, "GCS")? {
            builder = builder.with_config(key, value);
        }
        let client = client_options(|k| builder.get_config_value(&GoogleConfigKey::Client(k)), ca)?;
        let builder = builder.with_client_options(client.clone());
        let endpoint = builder
            .get_config_value(&GoogleConfigKey::BaseUrl)
            .and_then(|e| public_endpoint(&e));
        let store = builder
            .clone()
            .build()
            .map_err(|e| StorageError::Config(format!("GCS store for bucket {bucket:?}: {e}")))?;
        let uploads = MultipartUploads::gcs(&builder, store.clone(), bucket, &prefix, &client)?;
        let description = describe("gs", bucket, &prefix, endpoint);
        Ok(Self::new(
            with_prefix(store, prefix),
            Kind::Multipart(Arc::new(uploads)),
            description,
        ))
    }

    fn azure(
        container: &str,
        prefix: Path,
        options: impl IntoIterator<Item = (String, String)>,
        ca: Option<&CaBundle>,
    ) -> Result<Storage, StorageError> {
        let mut builder = MicrosoftAzureBuilder::from_env().with_url(format!("az://{container}"));
        for (key, value) in parse_options::<AzureConfigKey>(options, "Azure")? {
            builder = builder.with_config(key, value);
        }
        let client = client_options(|k| builder.get_config_value(&AzureConfigKey::Client(k)), ca)?;
        let builder = builder.with_client_options(client.clone());
        let store = builder
            .clone()
            .build()
            .map_err(|e| StorageError::Config(format!("Azure store for container {container:?}: {e}")))?;
        let uploads = AzureUploads::new(&builder, store.clone(), container, &prefix, &client)?;
        let endpoint = public_endpoint(uploads.account_url());
        let description = describe("az", container, &prefix, endpoint);
        Ok(Self::new(
            with_prefix(store, prefix),
            Kind::Azure(Arc::new(uploads)),
            description,
        ))
    }
}

/// Options as config keys of one cloud's builder.
fn parse_options<K: FromStr>(
    options: impl IntoIterator<Item = (String, String)>,
    cloud: &str,
) -> Result<Vec<(K, String)>, StorageError> {
    options
        .into_iter()
        .map(|(key, value)| {
            let parsed = key
                .to_ascii_lowercase()
                .parse()
                .map_err(|_| StorageError::Config(format!("unknown {cloud} storage option {key:?}")))?;
            Ok((parsed, value))
        })
        .collect()
}

/// `scheme://name[/prefix][ (endpoint …)]`, for logs.
fn describe(scheme: &str, name: &str, prefix: &Path, endpoint: Option<String>) -> String {
    let mut description = format!("{scheme}://{name}");
    if !prefix.as_ref().is_empty() {
        description.push('/');
        description.push_str(prefix.as_ref());
    }
    if let Some(endpoint) = endpoint {
        description.push_str(&format!(" (endpoint {endpoint})"));
    }
    description
}

pub(crate) fn with_prefix<T: ObjectStore>(store: T, prefix: Path) -> Arc<dyn ObjectStore> {
    if prefix.as_ref().is_empty() {
        Arc::new(store)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
    }
}

/// The endpoint without user info, query or fragment, for `describe`.
fn public_endpoint(endpoint: &str) -> Option<String> {
    let mut url = url::Url::parse(endpoint).ok()?;
    url.set_username("").ok()?;
    url.set_password(None).ok()?;
    url.set_query(None);
    url.set_fragment(None);
    Some(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_options(secret: &str) -> Vec<(String, String)> {
        [
            ("aws_endpoint", "http://user:pw@127.0.0.1:9/?x=1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("aws_secret_access_key", secret),
            ("aws_region", "us-east-1"),
            ("aws_allow_http", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn relative_folder_is_made_absolute_and_created() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().canonicalize().unwrap().join("nested/objects");
        // A relative path from the current folder to the temporary one.
        let cwd = std::env::current_dir().unwrap();
        let ups = "../".repeat(cwd.components().count() - 1);
        let relative = format!("./{ups}{}", target.strip_prefix("/").unwrap().to_str().unwrap());
        let storage = Storage::from_url(&relative).unwrap();
        assert!(target.is_dir(), "{} not created", target.display());
        assert_eq!(storage.describe(), format!("file://{}", target.display()));
    }

    #[test]
    fn file_url_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap().join("objects");
        let storage = Storage::from_url(&format!("file://{}", dir.display())).unwrap();
        assert!(dir.is_dir());
        assert_eq!(storage.describe(), format!("file://{}", dir.display()));
        assert!(format!("{storage:?}").contains(&storage.describe()));
    }

    #[test]
    fn a_file_in_the_way_is_a_config_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = Storage::from_url(file.to_str().unwrap()).unwrap_err();
        assert!(matches!(err, StorageError::Config(_)), "{err:?}");
    }

    #[test]
    fn memory_url() {
        assert_eq!(Storage::from_url("memory://").unwrap().describe(), "memory://");
        assert_eq!(Storage::from_url("memory:///p/q").unwrap().describe(), "memory:///p/q");
    }

    #[test]
    fn s3_url_with_prefix_and_no_secrets_shown() {
        let storage = Storage::from_url_with_options("s3://bucket/some/prefix", s3_options("s3cr3t-value")).unwrap();
        let described = storage.describe();
        assert_eq!(described, "s3://bucket/some/prefix (endpoint http://127.0.0.1:9)");
        let debug = format!("{storage:?}");
        for shown in [&described, &debug] {
            assert!(!shown.contains("s3cr3t-value"), "{shown}");
            assert!(!shown.contains("AKIDEXAMPLE"), "{shown}");
            assert!(!shown.contains("pw"), "{shown}");
        }
    }

    #[test]
    fn unknown_s3_option_is_rejected() {
        let mut options = s3_options("x");
        options.push(("aws_no_such_thing".into(), "1".into()));
        let err = Storage::from_url_with_options("s3://bucket", options).unwrap_err();
        match err {
            StorageError::Config(msg) => assert!(msg.contains("aws_no_such_thing"), "{msg}"),
            other => panic!("expected Config, got {other:?}"),
        }
    }

    #[test]
    fn gs_and_az_urls_describe_their_endpoint_and_no_secrets() {
        let gcs = Storage::from_url_with_options(
            "gs://bucket/p",
            [
                ("google_base_url", "http://127.0.0.1:9/"),
                ("google_skip_signature", "true"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap();
        assert_eq!(gcs.describe(), "gs://bucket/p (endpoint http://127.0.0.1:9)");
        let key = "c2VjcmV0LWtleS12YWx1ZQ==";
        let azure = Storage::from_url_with_options(
            "az://container",
            [
                ("azure_storage_account_name", "acct"),
                ("azure_storage_account_key", key),
                ("azure_storage_endpoint", "http://127.0.0.1:9/acct"),
                ("azure_allow_http", "true"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap();
        assert_eq!(azure.describe(), "az://container (endpoint http://127.0.0.1:9/acct)");
        assert!(!format!("{azure:?}").contains(key));
        let err = Storage::from_url_with_options("gs://b", [("google_nope".to_owned(), "1".to_owned())]).unwrap_err();
        assert!(
            matches!(&err, StorageError::Config(m) if m.contains("google_nope")),
            "{err:?}"
        );
    }

    #[test]
    fn unsupported_schemes_are_invalid_urls() {
        for (url, needle) in [("abfss://c@a.dfs.core.windows.net/", "abfss"), ("ftp://h/x", "ftp")] {
            match Storage::from_url(url).unwrap_err() {
                StorageError::InvalidUrl(msg) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("{url}: expected InvalidUrl, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_cloud_store_takes_a_ca_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
        let ca = CaBundle::load("TELEDROP_CA_FILE", &path).unwrap();
        let cases: [(&str, &[(&str, &str)]); 3] = [
            (
                "s3://b",
                &[("aws_endpoint", "https://127.0.0.1:9"), ("aws_region", "us-east-1")],
            ),
            (
                "gs://b",
                &[
                    ("google_base_url", "https://127.0.0.1:9"),
                    ("google_skip_signature", "true"),
                ],
            ),
            (
                "az://c",
                &[
                    ("azure_storage_account_name", "acct"),
                    ("azure_storage_account_key", "c2VjcmV0"),
                    ("azure_storage_endpoint", "https://127.0.0.1:9/acct"),
                ],
            ),
        ];
        for (url, options) in cases {
            let options = options.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            let storage = Storage::open(url, options, Some(&ca)).unwrap();
            assert!(storage.describe().starts_with(url), "{}", storage.describe());
        }
    }
}
