//! The ingest job and its state machine.
//!
//! ```text
//! pending ──▶ running ──▶ stored
//!    │  ▲        │
//!    │  └────────┤ (retryable failure, or recovered after a crash)
//!    ▼           ▼
//!  failed ◀──────┘
//! ```
//! `stored` and `failed` are final. The catalog changes a job's state only
//! through one function that checks [`JobState::can_become`].

use crate::ErrorKind;
use crate::file::IncomingFile;
use crate::ids::{FileId, JobId, MessageId, UpdateId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Running,
    Stored,
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 4] = [Self::Pending, Self::Running, Self::Stored, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Stored => "stored",
            Self::Failed => "failed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Stored | Self::Failed)
    }

    /// The legal edges of the state machine.
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Pending, Running) | (Pending, Failed) | (Running, Pending) | (Running, Stored) | (Running, Failed)
        )
    }

    /// Checks an edge, for callers that want a typed error.
    pub fn transition(self, next: JobState) -> Result<JobState, IllegalTransition> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(IllegalTransition { from: self, to: next })
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct UnknownJobState(pub String);

impl FromStr for JobState {
    type Err = UnknownJobState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownJobState(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal job transition {from} → {to}")]
pub struct IllegalTransition {
    pub from: JobState,
    pub to: JobState,
}

/// One ingest job: an accepted update that carries a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub update_id: UpdateId,
    /// What the update asked us to store (user, chat, message, file).
    pub incoming: IncomingFile,
    pub state: JobState,
    /// How many times the job entered `running`.
    pub attempts: u32,
    pub error_kind: Option<ErrorKind>,
    /// Human-readable detail of the last error (already redacted).
    pub error_detail: Option<String>,
    /// The bot's status message that becomes the final reply.
    pub status_message_id: Option<MessageId>,
    /// The file row created when the job was stored.
    pub file_id: Option<FileId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the user was told the outcome of a final job.
    pub replied_at: Option<DateTime<Utc>>,
}

/// One entry of a job's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: JobId,
    pub at: DateTime<Utc>,
    /// `None` for the event that created the job.
    pub from: Option<JobState>,
    pub to: JobState,
    pub error_kind: Option<ErrorKind>,
    pub note: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_edges_are_legal() {
        use JobState::*;
        let legal = [
            (Pending, Running),
            (Pending, Failed),
            (Running, Pending),
            (Running, Stored),
            (Running, Failed),
        ];
        for a in JobState::ALL {
            for b in JobState::ALL {
                assert_eq!(a.can_become(b), legal.contains(&(a, b)), "{a} → {b}");
            }
        }
        assert!(Stored.transition(Running).is_err());
        assert!(Failed.transition(Pending).is_err());
    }

    #[test]
    fn state_labels_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
    }
}
