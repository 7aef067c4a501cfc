//! Storage URL → what to build.

use std::path::PathBuf;

use object_store::path::Path;
use url::Url;

use crate::StorageError;

/// What a storage URL names, before anything is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A local folder (absolute, not necessarily existing yet).
    Local { dir: PathBuf },
    /// A fresh in-memory store.
    Memory { prefix: Path },
    /// A bucket (and optional key prefix) on S3 or an S3-compatible server.
    S3 { bucket: String, prefix: Path },
    /// A Google Cloud Storage bucket (and optional key prefix).
    Gcs { bucket: String, prefix: Path },
    /// An Azure Blob Storage container (and optional key prefix).
    Azure { container: String, prefix: Path },
}

const USE: &str = "use file:///absolute/dir (or a plain folder path), s3://bucket[/prefix], \
                   gs://bucket[/prefix], az://container[/prefix] or memory://";

pub(crate) fn parse(input: &str) -> Result<Target, StorageError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(StorageError::InvalidUrl(format!("the storage URL is empty; {USE}")));
    }
    match Url::parse(input) {
        // One-letter schemes are Windows drive letters, i.e. paths.
        Ok(url) if url.scheme().len() > 1 => parse_url(&url),
        Ok(_) | Err(url::ParseError::RelativeUrlWithoutBase) => local_path(input),
        Err(e) if input.contains("://") => Err(StorageError::InvalidUrl(format!("cannot parse the storage URL: {e}"))),
        Err(_) => local_path(input),
    }
}

fn local_path(input: &str) -> Result<Target, StorageError> {
    let dir = std::path::absolute(input)
        .map_err(|e| StorageError::InvalidUrl(format!("cannot resolve the folder {input:?}: {e}")))?;
    Ok(Target::Local { dir })
}

fn parse_url(url: &Url) -> Result<Target, StorageError> {
    let scheme = url.scheme();
    match scheme {
        "file" => {
            let dir = url.to_file_path().map_err(|()| {
                StorageError::InvalidUrl(format!(
                    "a file URL must name an absolute local folder, like file:///var/lib/teledrop/objects \
                     (got host {:?})",
                    url.host_str().unwrap_or_default()
                ))
            })?;
            Ok(Target::Local { dir })
        }
        "memory" => {
            let raw = format!("{}{}", url.host_str().unwrap_or_default(), url.path());
            Ok(Target::Memory {
                prefix: prefix_path(&raw)?,
            })
        }
        "s3" | "s3a" => {
            let (bucket, prefix) = bucket_and_prefix(url, "bucket", "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")?;
            Ok(Target::S3 { bucket, prefix })
        }
        "gs" => {
            let (bucket, prefix) =
                bucket_and_prefix(url, "bucket", "GOOGLE_SERVICE_ACCOUNT / GOOGLE_APPLICATION_CREDENTIALS")?;
            Ok(Target::Gcs { bucket, prefix })
        }
        "az" | "azure" => {
            let (container, prefix) = bucket_and_prefix(
                url,
                "container",
                "AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY",
            )?;
            Ok(Target::Azure { container, prefix })
        }
        other => Err(StorageError::InvalidUrl(format!(
            "unsupported storage URL scheme {other:?}; {USE}"
        ))),
    }
}

/// The host as the bucket (or container) name and the path as a key
/// prefix. Credentials never ride in the URL: it ends up in logs.
fn bucket_and_prefix(url: &Url, what: &str, credentials_from: &str) -> Result<(String, Path), StorageError> {
    let scheme = url.scheme();
    if !url.username().is_empty() || url.password().is_some() {
        return Err(StorageError::InvalidUrl(format!(
            "credentials are not accepted inside an {scheme}:// URL; give them through \
             {credentials_from} or the storage options"
        )));
    }
    let name = url.host_str().unwrap_or_default();
    if name.is_empty() {
        return Err(StorageError::InvalidUrl(format!(
            "an {scheme}:// URL needs a {what}, like {scheme}://{what}[/prefix]"
        )));
    }
    Ok((name.to_owned(), prefix_path(url.path())?))
}

/// A URL path (percent-encoded) as a key prefix.
fn prefix_path(url_path: &str) -> Result<Path, StorageError> {
    Path::from_url_path(url_path).map_err(|e| StorageError::InvalidUrl(format!("invalid key prefix {url_path:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(input: &str) -> String {
        match parse(input) {
            Err(StorageError::InvalidUrl(msg)) => msg,
            other => panic!("{input:?}: expected InvalidUrl, got {other:?}"),
        }
    }

    #[test]
    fn plain_paths_are_local_folders() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            parse("./data/objects").unwrap(),
            Target::Local {
                dir: cwd.join("data/objects")
            }
        );
        assert_eq!(parse("data").unwrap(), Target::Local { dir: cwd.join("data") });
        assert_eq!(
            parse("/srv/objects").unwrap(),
            Target::Local {
                dir: PathBuf::from("/srv/objects")
            }
        );
    }

    #[test]
    fn file_urls() {
        assert_eq!(
            parse("file:///srv/my%20objects").unwrap(),
            Target::Local {
                dir: PathBuf::from("/srv/my objects")
            }
        );
        assert_eq!(
            parse("file://localhost/srv/o").unwrap(),
            Target::Local {
                dir: PathBuf::from("/srv/o")
            }
        );
        let msg = invalid("file://relative/dir");
        assert!(msg.contains("absolute"), "{msg}");
    }

    #[test]
    fn memory_urls() {
        for url in ["memory://", "memory:///", "memory:"] {
            assert_eq!(
                parse(url).unwrap(),
                Target::Memory {
                    prefix: Path::default()
                },
                "{url}"
            );
        }
        assert_eq!(
            parse("memory:///a/b").unwrap(),
            Target::Memory {
                prefix: Path::from("a/b")
            }
        );
    }

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse("s3://bucket").unwrap(),
            Target::S3 {
                bucket: "bucket".into(),
                prefix: Path::default()
            }
        );
        assert_eq!(
            parse("s3://my-bucket/some/prefix/").unwrap(),
            Target::S3 {
                bucket: "my-bucket".into(),
                prefix: Path::from("some/prefix")
            }
        );
        assert_eq!(
            parse("s3a://b/p").unwrap(),
            Target::S3 {
                bucket: "b".into(),
                prefix: Path::from("p")
            }
        );
        assert!(invalid("s3://").contains("bucket"));
        let msg = invalid("s3://AKIA:hunter2@bucket/p");
        assert!(msg.contains("credentials"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn gs_and_az_urls() {
        assert_eq!(
            parse("gs://b/some/prefix").unwrap(),
            Target::Gcs {
                bucket: "b".into(),
                prefix: Path::from("some/prefix")
            }
        );
        assert_eq!(
            parse("az://c").unwrap(),
            Target::Azure {
                container: "c".into(),
                prefix: Path::default()
            }
        );
        assert_eq!(
            parse("azure://c/p/").unwrap(),
            Target::Azure {
                container: "c".into(),
                prefix: Path::from("p")
            }
        );
        assert!(invalid("gs://").contains("bucket"));
        assert!(invalid("az:///p").contains("container"));
        let msg = invalid("az://account:k3y@c/p");
        assert!(
            msg.contains("AZURE_STORAGE_ACCOUNT_KEY") && !msg.contains("k3y"),
            "{msg}"
        );
    }

    #[test]
    fn unsupported_schemes_say_why() {
        let msg = invalid("abfss://fs@account.dfs.core.windows.net/x");
        assert!(msg.contains("\"abfss\"") && msg.contains("az://"), "{msg}");
        let msg = invalid("ftp://host/x");
        assert!(msg.contains("\"ftp\"") && msg.contains("s3://"), "{msg}");
        let msg = invalid("https://example.com/x");
        assert!(msg.contains("\"https\""), "{msg}");
        assert!(invalid("   ").contains("empty"));
    }
}
