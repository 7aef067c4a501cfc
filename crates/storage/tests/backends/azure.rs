//! A fresh container per test on the Azurite of the test run
//! (`TEST_AZURE_ENDPOINT`), and a look at its uncommitted blobs that does
//! not go through the code under test.

use object_store::ClientOptions;
use object_store::azure::{AzureAccessKey, AzureAuthorizer, AzureCredential};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};

/// Azurite's well-known development account (public, in Azure's docs).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, Clone)]
pub struct AzureContainer {
    /// The Blob service root, e.g. `http://127.0.0.1:10000`.
    pub endpoint: String,
    pub container: String,
}

impl AzureContainer {
    pub fn url(&self) -> String {
        format!("az://{}", self.container)
    }

    /// The account URL path-style emulators answer on.
    pub fn account_url(&self) -> String {
        format!("{}/{ACCOUNT}", self.endpoint.trim_end_matches('/'))
    }

    /// Storage options reaching Azurite like any non-default Azure endpoint.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("azure_storage_account_name", ACCOUNT.to_owned()),
            ("azure_storage_account_key", ACCOUNT_KEY.to_owned()),
            ("azure_storage_endpoint", self.account_url()),
            ("azure_allow_http", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Names of blobs holding uncommitted blocks and nothing committed:
    /// every blob listed with `include=uncommittedblobs` that the plain
    /// listing lacks.
    pub async fn uncommitted_blobs(&self) -> Vec<String> {
        let query = "restype=container&comp=list";
        let committed = names(&self.get(query).await);
        let mut all = names(&self.get(&format!("{query}&include=uncommittedblobs")).await);
        all.retain(|n| !committed.contains(n));
        all
    }

    /// How many uncommitted blocks blob `name` holds.
    pub async fn uncommitted_blocks(&self, name: &str) -> usize {
        let listing = self.get_path(name, "comp=blocklist&blocklisttype=uncommitted").await;
        listing.matches("<Block>").count()
    }

    async fn get(&self, query: &str) -> String {
        self.get_path("", query).await
    }

    async fn get_path(&self, name: &str, query: &str) -> String {
        let name = if name.is_empty() {
            String::new()
        } else {
            format!("/{name}")
        };
        let url = format!("{}/{}{name}?{query}", self.account_url(), self.container);
        let (status, body) = send(http::Method::GET, &url).await;
        assert!(status.is_success(), "{url}: {status} {body}");
        body
    }
}

/// Creates an empty container on the Azurite named by `TEST_AZURE_ENDPOINT`.
pub async fn fresh_container() -> AzureContainer {
    let endpoint = teledrop_testkit::require_env("TEST_AZURE_ENDPOINT");
    let container = AzureContainer {
        endpoint,
        container: format!("t-{}", teledrop_testkit::unique_suffix()),
    };
    let url = format!("{}/{}?restype=container", container.account_url(), container.container);
    let (status, body) = send(http::Method::PUT, &url).await;
    assert!(status.is_success(), "creating container: {status} {body}");
    container
}

/// A SharedKey-signed request, body empty (as the emulator wants it).
async fn send(method: http::Method, url: &str) -> (http::StatusCode, String) {
    // object_store's reqwest has no TLS provider of its own.
    teledrop_core::tls::install_crypto_provider();
    let mut request = http::Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::CONTENT_LENGTH, "0")
        .body(HttpRequestBody::empty())
        .unwrap();
    let credential = AzureCredential::AccessKey(AzureAccessKey::try_new(ACCOUNT_KEY).unwrap());
    AzureAuthorizer::new(&credential, ACCOUNT)
        .try_authorize(&mut request)
        .unwrap();
    let client: HttpClient = ReqwestConnector::default()
        .connect(&ClientOptions::new().with_allow_http(true))
        .unwrap();
    let response = client.execute(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().bytes().await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The text of every `<Name>` inside a `<Blob>` (test keys need no XML
/// unescaping).
fn names(listing: &str) -> Vec<String> {
    listing
        .split("<Blob>")
        .skip(1)
        .filter_map(|blob| {
            let (_, rest) = blob.split_once("<Name>")?;
            Some(rest.split_once("</Name>")?.0.to_owned())
        })
        .collect()
}
