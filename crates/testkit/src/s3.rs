//! A fresh bucket per test on the S3-compatible server of the test run.

/// Where a test's bucket lives and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Bucket {
    /// The storage URL teledrop takes (`TELEDROP_STORAGE_URL`).
    pub fn url(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    /// The variables teledrop reads for an S3-compatible endpoint.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TELEDROP_STORAGE_URL", self.url()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// `GET /{bucket}?uploads`, unsigned (moto accepts it): the keys of
    /// the in-progress multipart uploads, looked at behind the product's
    /// back.
    pub async fn in_progress_multipart_uploads(&self) -> Vec<String> {
        let body = self.get_xml("uploads", "<ListMultipartUploadsResult").await;
        elements(&body, "Upload", "Key")
    }

    /// `GET /{bucket}?list-type=2`, unsigned: the key and size of every
    /// object (up to the first 1000).
    pub async fn objects(&self) -> Vec<(String, u64)> {
        let body = self.get_xml("list-type=2", "<ListBucketResult").await;
        let keys = elements(&body, "Contents", "Key");
        let sizes = elements(&body, "Contents", "Size");
        keys.into_iter()
            .zip(sizes)
            .map(|(k, s)| (k, s.parse().expect("an object size")))
            .collect()
    }

    async fn get_xml(&self, query: &str, root: &str) -> String {
        let url = format!("{}/{}?{query}", self.endpoint.trim_end_matches('/'), self.bucket);
        let resp = reqwest::get(&url).await.unwrap();
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        let body = resp.text().await.unwrap();
        assert!(body.contains(root), "unexpected answer to {url}: {body}");
        body
    }
}

/// The text of `<field>` in each `<entry>` of an S3 listing (keys here are
/// plain, so no XML unescaping is needed).
fn elements(body: &str, entry: &str, field: &str) -> Vec<String> {
    let (open, close) = (format!("<{field}>"), format!("</{field}>"));
    body.split(&format!("<{entry}>"))
        .skip(1)
        .map(|item| {
            item.split_once(&open)
                .and_then(|(_, rest)| rest.split_once(&close))
                .map(|(text, _)| text.to_owned())
                .unwrap_or_else(|| format!("<no {field}>"))
        })
        .collect()
}

/// Creates an empty bucket on the server named by `TEST_S3_ENDPOINT`.
pub async fn fresh_bucket() -> S3Bucket {
    bucket_on(crate::require_env("TEST_S3_ENDPOINT"), &reqwest::Client::new()).await
}

/// Creates an empty bucket on the moto server at `endpoint`, through
/// `client` (which trusts the server's certificate when it is HTTPS).
pub async fn bucket_on(endpoint: String, client: &reqwest::Client) -> S3Bucket {
    let bucket = format!("t-{}", crate::unique_suffix());
    // moto accepts unsigned requests; a plain PUT creates the bucket.
    let resp = client
        .put(format!("{}/{}", endpoint.trim_end_matches('/'), bucket))
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating a bucket on {endpoint}: {e}"));
    assert!(resp.status().is_success(), "creating bucket: {}", resp.status());
    S3Bucket {
        endpoint,
        bucket,
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
    }
}
