//! The local store's unfinished uploads: staging files a killed process
//! left next to their destination.

use std::path::{Path as FsPath, PathBuf};

use crate::UnfinishedUpload;

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
    use chrono::Utc;

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
}
