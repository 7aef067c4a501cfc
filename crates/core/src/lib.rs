//! Domain types of teledrop, free of any framework.
//!
//! The data model: a Telegram *update* that carries a file becomes a
//! [`Job`](job::JobRecord) keyed by its `update_id`. A job that succeeds
//! produces a [`FileRecord`](file::FileRecord) (one per accepted message)
//! that points at a *blob* (one per distinct Telegram `file_unique_id`, the
//! bytes in object storage) and a [`LinkRecord`](file::LinkRecord) whose
//! random token is the public handle on the file. Per-user
//! [`Usage`](file::Usage) counts the files and bytes a user owns.
//!
//! Every value that crosses a trust boundary is a validated newtype built
//! through `FromStr`/`TryFrom`.

pub mod backoff;
pub mod error;
pub mod file;
pub mod ids;
pub mod job;
pub mod report;
pub mod secret;
pub mod size;
pub mod tls;

pub use error::ErrorKind;
pub use file::{BlobRecord, FileRecord, IncomingFile, LinkRecord, MediaKind, NewLink, Usage};
pub use ids::{ChatId, FileId, JobId, LinkToken, MessageId, ObjectKey, Sha256, UpdateId, UserId};
pub use job::{IllegalTransition, JobEvent, JobRecord, JobState};
pub use report::{Report, report};
pub use secret::{BotToken, Redactor, Secret};
pub use size::ByteSize;

/// The largest file the Bot API lets a bot download through a local server.
pub const MAX_FILE_SIZE: ByteSize = ByteSize::from_bytes(2000 * 1024 * 1024);
/// The cloud Bot API refuses `getFile` above this size.
pub const CLOUD_DOWNLOAD_LIMIT: ByteSize = ByteSize::from_bytes(20 * 1024 * 1024);
