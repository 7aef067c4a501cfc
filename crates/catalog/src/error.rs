use teledrop_core::{IllegalTransition, JobState};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("database URL must start with postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl,
    #[error("connecting to the database")]
    Connect(#[source] sqlx::Error),
    #[error("applying migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// No connection of the pool came free (or could be opened) within
    /// its acquire timeout: every one is busy, or the database does not
    /// answer. Nothing was queried; callers answer "try again later"
    /// rather than wait on.
    #[error("no database connection free within the pool's acquire timeout (pool exhausted or database unreachable)")]
    PoolTimedOut,
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    #[error("job is {actual}, not {expected}")]
    StateConflict { expected: JobState, actual: JobState },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A [`crate::FileFilter`] that cannot be turned into a query; nothing
    /// was queried.
    #[error("invalid file filter: {0}")]
    InvalidFilter(String),
}

impl From<sqlx::Error> for CatalogError {
    /// sqlx reports an exhausted pool as one more query error; it gets its
    /// own variant so callers can tell "busy, come back" from a failure.
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Self::PoolTimedOut,
            other => Self::Query(other),
        }
    }
}

impl CatalogError {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnsupportedUrl => "unsupported_url",
            Self::Connect(_) => "connect",
            Self::Migrate(_) => "migrate",
            Self::PoolTimedOut => "pool_timed_out",
            Self::Query(_) => "query",
            Self::NotFound(_) => "not_found",
            Self::IllegalTransition(_) => "illegal_transition",
            Self::StateConflict { .. } => "state_conflict",
            Self::Corrupt(_) => "corrupt",
            Self::InvalidFilter(_) => "invalid_filter",
        }
    }

    /// Whether the same call may succeed later (connection trouble).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::PoolTimedOut | Self::Query(sqlx::Error::Io(_) | sqlx::Error::PoolClosed)
        )
    }
}
