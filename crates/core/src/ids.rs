//! Identifiers and validated keys.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! int_id {
    ($(#[$m:meta])* $name:ident($inner:ty)) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

int_id!(
    /// Telegram's `update_id`: the idempotency key of an accepted update.
    UpdateId(i64)
);
int_id!(
    /// A Telegram user id.
    UserId(i64)
);
int_id!(
    /// A Telegram chat id (negative for groups).
    ChatId(i64)
);
int_id!(
    /// A message id, unique within its chat.
    MessageId(i32)
);

macro_rules! uuid_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn from_uuid(u: Uuid) -> Self {
                Self(u)
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Primary key of a file row.
    FileId
);
uuid_id!(
    /// Primary key of a job.
    JobId
);

/// The public handle on a file: a random (v4) UUID, unguessable.
///
/// Parsing accepts only the canonical lowercase hyphenated form of a v4
/// UUID, so a link has exactly one spelling and nothing else reaches the
/// catalog.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LinkToken(Uuid);

impl LinkToken {
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
    /// For rows read back from the catalog, which only ever holds tokens
    /// built by [`LinkToken::generate`] or parsed.
    pub fn from_uuid(u: Uuid) -> Result<Self, InvalidLinkToken> {
        if u.get_version_num() == 4 {
            Ok(Self(u))
        } else {
            Err(InvalidLinkToken)
        }
    }
}

impl fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A token grants access: keep it out of debug logs.
        f.write_str("LinkToken(…)")
    }
}

impl fmt::Display for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a link token")]
pub struct InvalidLinkToken;

impl FromStr for LinkToken {
    type Err = InvalidLinkToken;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 36 {
            return Err(InvalidLinkToken);
        }
        let u = Uuid::parse_str(s).map_err(|_| InvalidLinkToken)?;
        if u.hyphenated().to_string() != s {
            return Err(InvalidLinkToken);
        }
        Self::from_uuid(u)
    }
}

impl TryFrom<String> for LinkToken {
    type Error = InvalidLinkToken;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<LinkToken> for String {
    fn from(t: LinkToken) -> String {
        t.to_string()
    }
}

/// A key in object storage: relative, `/`-separated, made of safe
/// characters, never `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object key {0:?}: use 1-512 characters of A-Z a-z 0-9 . _ - in /-separated segments")]
pub struct InvalidObjectKey(pub String);

impl ObjectKey {
    /// The key of a new blob; time-ordered so listings are chronological.
    pub fn for_new_blob() -> Self {
        let id = Uuid::now_v7().simple().to_string();
        // Two levels of fan-out from the random tail keep directories small
        // on file stores (the leading bits are a timestamp and would not).
        Self(format!("blobs/{}/{}/{}", &id[30..32], &id[28..30], id))
    }

    /// The key of a blob that `job` uploads: under
    /// [`ObjectKey::job_upload_prefix`], so whoever runs the job next can
    /// find what an attempt that died mid-upload left behind (S3 keeps an
    /// unfinished multipart upload until someone aborts it). The random
    /// tail keeps the attempts of one job apart.
    pub fn for_job_upload(job: JobId) -> Self {
        let tail = Uuid::new_v4().simple().to_string();
        Self(format!("{}{}", Self::job_upload_prefix(job), &tail[..16]))
    }

    /// What every [`ObjectKey::for_job_upload`] key of `job` starts with
    /// (a string prefix, not a whole segment): `blobs/<fan-out>/<job>-`.
    /// Job ids are time-ordered, so listings stay roughly chronological.
    pub fn job_upload_prefix(job: JobId) -> String {
        let id = job.as_uuid().simple().to_string();
        // Fan-out from the random tail, as for `for_new_blob`.
        format!("blobs/{}/{}/{}-", &id[30..32], &id[28..30], id)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ObjectKey {
    type Err = InvalidObjectKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 512
            && s.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidObjectKey(s.to_owned()))
        }
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = InvalidObjectKey;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ObjectKey> for String {
    fn from(k: ObjectKey) -> String {
        k.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha256: expected 64 hex digits")]
pub struct InvalidSha256;

impl Sha256 {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Digest of a complete buffer (tests and small payloads).
    pub fn digest(data: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(data).into())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Sha256 {
    type Err = InvalidSha256;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(InvalidSha256);
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| InvalidSha256)?;
        Ok(Self(out))
    }
}

impl TryFrom<String> for Sha256 {
    type Error = InvalidSha256;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Sha256> for String {
    fn from(s: Sha256) -> String {
        s.to_hex()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_token_accepts_only_canonical_v4() {
        let t = LinkToken::generate();
        assert_eq!(t.to_string().parse::<LinkToken>().unwrap(), t);
        let upper = t.to_string().to_uppercase();
        assert!(upper.parse::<LinkToken>().is_err());
        let simple = t.as_uuid().simple().to_string();
        assert!(simple.parse::<LinkToken>().is_err());
        let v7 = Uuid::now_v7().to_string();
        assert!(v7.parse::<LinkToken>().is_err());
        assert!("../../etc/passwd".parse::<LinkToken>().is_err());
        assert_eq!(format!("{t:?}"), "LinkToken(…)");
    }

    #[test]
    fn object_keys_are_confined() {
        assert!(ObjectKey::for_new_blob().as_str().parse::<ObjectKey>().is_ok());
        let job = JobId::new();
        let (a, b) = (ObjectKey::for_job_upload(job), ObjectKey::for_job_upload(job));
        assert_ne!(a, b, "attempts of one job get keys of their own");
        for k in [&a, &b] {
            assert!(k.as_str().parse::<ObjectKey>().is_ok(), "{k}");
            assert!(k.as_str().starts_with(&ObjectKey::job_upload_prefix(job)), "{k}");
        }
        assert!(
            !ObjectKey::for_job_upload(JobId::new())
                .as_str()
                .starts_with(&ObjectKey::job_upload_prefix(job))
        );
        for bad in [
            "",
            "/abs",
            "a//b",
            "../x",
            "a/../b",
            "a/./b",
            "sp ace",
            "a\\b",
            "trailing/",
        ] {
            assert!(bad.parse::<ObjectKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sha256_hex_round_trip() {
        let d = Sha256::digest(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_hex().parse::<Sha256>().unwrap(), d);
        assert!("zz".parse::<Sha256>().is_err());
    }
}
