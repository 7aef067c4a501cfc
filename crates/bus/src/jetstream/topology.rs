//! The topology on the server: the streams and the durable consumer are
//! created when missing and checked when present; a stream whose managed
//! settings differ is updated, and what could not be is refused by name.

use super::*;

/// The settings teledrop manages on a stream, as `(name, wanted, found)`
/// for those that differ.
pub(super) fn stream_differences(want: &stream::Config, have: &stream::Config) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut check = |name: &str, w: String, h: String| {
        if w != h {
            diffs.push(format!("{name} (wanted {w}, found {h})"));
        }
    };
    let mut ws = want.subjects.clone();
    let mut hs = have.subjects.clone();
    ws.sort();
    hs.sort();
    check("subjects", format!("{ws:?}"), format!("{hs:?}"));
    check(
        "retention",
        format!("{:?}", want.retention),
        format!("{:?}", have.retention),
    );
    check("storage", format!("{:?}", want.storage), format!("{:?}", have.storage));
    check("discard", format!("{:?}", want.discard), format!("{:?}", have.discard));
    // The server stores 0 ("no limit") as -1.
    let limit = |n: i64| if n <= 0 { -1 } else { n };
    check(
        "max_msgs",
        limit(want.max_messages).to_string(),
        limit(have.max_messages).to_string(),
    );
    check("max_age", format!("{:?}", want.max_age), format!("{:?}", have.max_age));
    if !want.duplicate_window.is_zero() {
        check(
            "duplicate_window",
            format!("{:?}", want.duplicate_window),
            format!("{:?}", have.duplicate_window),
        );
    }
    check(
        "num_replicas",
        want.num_replicas.max(1).to_string(),
        have.num_replicas.max(1).to_string(),
    );
    diffs
}

/// Ensures a stream with `want`'s managed settings exists: creates it, or
/// updates an existing one (keeping the settings teledrop does not manage).
pub(super) async fn ensure_stream(js: &jetstream::Context, want: stream::Config) -> Result<(), BusError> {
    let name = want.name.clone();
    // Another process may create the stream between our read and our
    // create; a few rounds settle every such race.
    for _ in 0..5 {
        match js.get_stream(&name).await {
            Ok(existing) => {
                let have = &existing.cached_info().config;
                let diffs = stream_differences(&want, have);
                if diffs.is_empty() {
                    return Ok(());
                }
                let mut updated = have.clone();
                updated.subjects = want.subjects.clone();
                updated.retention = want.retention;
                updated.storage = want.storage;
                updated.discard = want.discard;
                updated.max_messages = want.max_messages;
                updated.max_age = want.max_age;
                if !want.duplicate_window.is_zero() {
                    updated.duplicate_window = want.duplicate_window;
                }
                updated.num_replicas = want.num_replicas;
                let listed = diffs.join(", ");
                return match js.update_stream(&updated).await {
                    Ok(_) => {
                        info!(stream = %name, changed = %listed, "updated the stream's settings");
                        Ok(())
                    }
                    Err(e) => match e.kind() {
                        CreateStreamErrorKind::JetStream(api) => Err(BusError::Topology(format!(
                            "stream {name} exists with different settings: {listed}; the server refuses to \
                             change them ({api}). Move its messages elsewhere and delete the stream, or \
                             configure teledrop to use another stream name"
                        ))),
                        _ => Err(BusError::Transport(format!("updating stream {name}: {e}"))),
                    },
                };
            }
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                match js.create_stream(want.clone()).await {
                    Ok(_) => {
                        info!(stream = %name, "created the stream");
                        return Ok(());
                    }
                    // Created meanwhile by someone else: compare again.
                    Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref api) if api.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
                    {
                        continue;
                    }
                    Err(e) => {
                        return Err(match e.kind() {
                            CreateStreamErrorKind::JetStream(api) => {
                                BusError::Topology(format!("creating stream {name}: {api}"))
                            }
                            _ => BusError::Transport(format!("creating stream {name}: {e}")),
                        });
                    }
                }
            }
            Err(e) => return Err(BusError::Transport(format!("reading stream {name}: {e}"))),
        }
    }
    Err(BusError::Topology(format!(
        "stream {name} keeps changing while teledrop ensures it; is another deployment using it with other settings?"
    )))
}

/// Creates the durable pull consumer, or updates it to the wanted settings
/// (JetStream's create-or-update is idempotent for an identical config).
pub(super) async fn ensure_consumer(
    js: &jetstream::Context,
    config: &JetStreamConfig,
) -> Result<PullConsumer, BusError> {
    let stream = js
        .get_stream_no_info(&config.stream)
        .await
        .map_err(|e| BusError::Topology(format!("stream {}: {e}", config.stream)))?;
    stream
        .create_consumer(config.pull_consumer())
        .await
        .map_err(|e| match e.kind() {
            jetstream::stream::ConsumerErrorKind::JetStream(api) => BusError::Topology(format!(
                "consumer {} on stream {}: {api}. (A work-queue stream takes a single consumer, \
                 shared by all workers: delete any other consumer on it. Settings the server cannot \
                 change need the consumer deleted and created again.)",
                config.consumer, config.stream
            )),
            _ => BusError::Transport(format!(
                "ensuring consumer {} on stream {}: {e}",
                config.consumer, config.stream
            )),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_only_managed_stream_settings() {
        let config = JetStreamConfig::default();
        let want = config.work_stream();
        let mut have = want.clone();
        // What the server fills in is not a difference.
        have.max_bytes = -1;
        have.max_consumers = -1;
        have.num_replicas = 1;
        assert!(stream_differences(&want, &have).is_empty());
        have.storage = StorageType::Memory;
        have.max_messages = 5;
        let diffs = stream_differences(&want, &have);
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert!(diffs[0].starts_with("storage"), "{diffs:?}");
    }
}
