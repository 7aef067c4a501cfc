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
}

/// Creates an empty bucket on the server named by `TEST_S3_ENDPOINT`.
pub async fn fresh_bucket() -> S3Bucket {
    let endpoint = crate::require_env("TEST_S3_ENDPOINT");
    let bucket = format!("t-{}", crate::unique_suffix());
    // moto accepts unsigned requests; a plain PUT creates the bucket.
    let resp = reqwest::Client::new()
        .put(format!("{}/{}", endpoint.trim_end_matches('/'), bucket))
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating bucket on TEST_S3_ENDPOINT: {e}"));
    assert!(resp.status().is_success(), "creating bucket: {}", resp.status());
    S3Bucket {
        endpoint,
        bucket,
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
    }
}
