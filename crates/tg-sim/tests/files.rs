//! getFile, downloads, deterministic content, local mode and download
//! faults.

mod common;

use common::{bot, eventually, file_url, http, sha256_hex, sim, start};
use futures::StreamExt;
use serde_json::Value;
use teloxide::net::Download;
use teloxide::prelude::*;
use teloxide::types::FileId;
use teloxide::{ApiError, RequestError};
use tg_sim::{Faults, FileSpec, MediaKind, SimConfig};

const USER: i64 = 99;
const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn cloud_get_file_and_download_are_byte_identical() {
    let sim = sim().await;
    let bot = bot(&sim);
    let sent = sim
        .control()
        .send_file(FileSpec::document(USER, 3 * MIB + 17, 5).named("movie.pdf"))
        .await
        .unwrap();
    assert_eq!(sent.sha256.len(), 64, "hash computed at send time for small files");

    let file = bot.get_file(FileId(sent.file_id.clone())).await.expect("getFile");
    assert!(
        file.path.starts_with("documents/file_") && file.path.ends_with(".pdf"),
        "{}",
        file.path
    );
    assert_eq!(u64::from(file.size), 3 * MIB + 17);
    assert_eq!(file.unique_id.0, sent.file_unique_id);
    // The same file_id keeps its path.
    assert_eq!(
        bot.get_file(FileId(sent.file_id.clone())).await.unwrap().path,
        file.path
    );

    // teloxide sends the path as one segment with %2F.
    let mut dst = Vec::new();
    bot.download_file(&file.path, &mut dst).await.expect("download");
    assert_eq!(dst.len() as u64, sent.size);
    assert_eq!(sha256_hex(&dst), sent.sha256);

    // A plain '/' works too, with Content-Length.
    let resp = http().get(file_url(&sim, &file.path)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(sent.size));
    assert_eq!(resp.bytes().await.unwrap(), dst);

    let info = sim.control().file_info(&sent.file_unique_id).await.unwrap();
    assert_eq!((info.size, info.sha256.as_str()), (sent.size, sent.sha256.as_str()));
    sim.shutdown().await;
}

#[tokio::test]
async fn cloud_limits_and_unknown_ids() {
    let sim = sim().await;
    let bot = bot(&sim);
    let ctl = sim.control();
    let limit = tg_sim::CLOUD_DOWNLOAD_LIMIT;
    let at_limit = ctl.send_file(FileSpec::video(USER, limit, 1)).await.unwrap();
    let file = bot
        .get_file(FileId(at_limit.file_id))
        .await
        .expect("exactly 20 MB is allowed");
    assert!(file.path.starts_with("videos/"), "{}", file.path);

    let big = ctl.send_file(FileSpec::document(USER, limit + 1, 1)).await.unwrap();
    let e = bot.get_file(FileId(big.file_id.clone())).await.unwrap_err();
    // teloxide 0.17 has no variant for this text.
    assert!(
        matches!(&e, RequestError::Api(ApiError::Unknown(t)) if t == "Bad Request: file is too big"),
        "{e:?}"
    );

    let e = bot.get_file(FileId("BQACAgIAAxkBAAIbogus".into())).await.unwrap_err();
    assert!(
        matches!(&e, RequestError::Api(ApiError::Unknown(t)) if t == "Bad Request: invalid file_id"),
        "{e:?}"
    );

    // Paths never handed out by getFile are 404s, in Telegram's JSON.
    let resp = http()
        .get(file_url(&sim, "documents/file_999.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["description"], "Not Found");
    let mut dst = Vec::new();
    assert!(bot.download_file("documents/file_999.bin", &mut dst).await.is_err());
    sim.shutdown().await;
}

#[tokio::test]
async fn content_is_deterministic_per_seed_and_size() {
    let sim = sim().await;
    let ctl = sim.control();
    let a = ctl.send_file(FileSpec::document(USER, 4096, 11)).await.unwrap();
    let b = ctl
        .send_file(FileSpec::new(MediaKind::Video, USER + 1, 4096, 11))
        .await
        .unwrap();
    let c = ctl.send_file(FileSpec::document(USER, 4096, 12)).await.unwrap();
    let d = ctl.send_file(FileSpec::document(USER, 4097, 11)).await.unwrap();
    assert_eq!(a.file_unique_id, b.file_unique_id);
    assert_eq!(a.sha256, b.sha256);
    assert_ne!(a.file_id, b.file_id);
    assert!(a.file_id.starts_with("BQACAgIAAxkBAAI") && b.file_id.starts_with("BAACAgIAAxkBAAI"));
    assert!(a.file_unique_id.starts_with("AgAD"));
    assert_ne!(a.file_unique_id, c.file_unique_id);
    assert_ne!(a.sha256, c.sha256);
    assert_ne!(a.file_unique_id, d.file_unique_id);

    // A second simulator generates the same content and ids.
    let other = common::sim().await;
    let again = other
        .control()
        .send_file(FileSpec::document(USER, 4096, 11))
        .await
        .unwrap();
    assert_eq!((again.file_unique_id, again.sha256), (a.file_unique_id, a.sha256));
    other.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn huge_file_streams_without_being_stored() {
    let sim = sim().await;
    let ctl = sim.control();
    let size = 3 * 1024 * MIB;
    let sent = ctl.send_file(FileSpec::document(USER, size, 3)).await.unwrap();
    assert_eq!(sent.size, size);
    assert!(sent.sha256.is_empty(), "too big to hash at send time");
    // Over the cloud limit, so only the test back door hands out a path.
    let path = ctl.file_path(&sent.file_id).await.unwrap();
    let resp = http().get(file_url(&sim, &path)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(size));
    let mut body = resp.bytes_stream();
    let mut head = Vec::new();
    while (head.len() as u64) < 4 * MIB {
        head.extend_from_slice(&body.next().await.expect("more body").expect("chunk"));
    }
    drop(body);
    head.truncate(4 * MIB as usize);

    // A range request returns the same bytes.
    let resp = http()
        .get(file_url(&sim, &path))
        .header("Range", format!("bytes={}-{}", MIB, 2 * MIB - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes {}-{}/{size}", MIB, 2 * MIB - 1)
    );
    let part = resp.bytes().await.unwrap();
    assert_eq!(&part[..], &head[MIB as usize..2 * MIB as usize]);
    sim.shutdown().await;
}

#[tokio::test]
async fn cut_download_ends_with_a_truncated_body() {
    let sim = sim().await;
    let ctl = sim.control();
    let sent = ctl.send_file(FileSpec::document(USER, 30 * MIB, 8)).await.unwrap();
    let path = ctl.file_path(&sent.file_id).await.unwrap();
    let cut = 5 * MIB + 123;
    ctl.set_faults(Faults {
        cut_download_after: Some(cut),
        ..Faults::default()
    })
    .await
    .unwrap();
    let resp = http().get(file_url(&sim, &path)).send().await.unwrap();
    assert_eq!(resp.content_length(), Some(30 * MIB));
    let mut body = resp.bytes_stream();
    let mut got = 0u64;
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => got += c.len() as u64,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body must end in an error, not look complete");
    assert_eq!(got, cut);
    sim.shutdown().await;
}

#[tokio::test]
async fn download_bandwidth_is_capped() {
    let sim = sim().await;
    let ctl = sim.control();
    let sent = ctl.send_file(FileSpec::document(USER, 256 * 1024, 9)).await.unwrap();
    let file = bot(&sim).get_file(FileId(sent.file_id)).await.unwrap();
    ctl.set_faults(Faults {
        download_bytes_per_sec: Some(MIB),
        ..Faults::default()
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let body = http()
        .get(file_url(&sim, &file.path))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&body), sent.sha256);
    // 256 KiB at 1 MiB/s cannot take less than 250 ms.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(240),
        "{:?}",
        started.elapsed()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn local_mode_writes_real_files_and_serves_no_http() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(SimConfig {
        local_mode: true,
        local_dir: dir.path().to_owned(),
        ..SimConfig::default()
    })
    .await;
    let bot = bot(&sim);
    // Over the cloud limit: local mode has none.
    let sent = sim
        .control()
        .send_file(FileSpec::document(USER, 21 * MIB, 4).named("big.zip"))
        .await
        .unwrap();
    let file = bot.get_file(FileId(sent.file_id)).await.expect("getFile in local mode");
    let path = std::path::Path::new(&file.path);
    assert!(path.is_absolute(), "{}", file.path);
    assert!(
        path.starts_with(dir.path().join(sim.token()).join("documents")),
        "{}",
        file.path
    );
    assert!(file.path.ends_with(".zip"));
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(sha256_hex(&bytes), sent.sha256);

    // teloxide turns the path into an HTTP URL, which 404s.
    let mut dst = Vec::new();
    assert!(bot.download_file(&file.path, &mut dst).await.is_err());
    sim.shutdown().await;
}

#[tokio::test]
async fn local_get_file_answers_once_the_paced_fetch_is_done_and_outlives_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(SimConfig {
        local_mode: true,
        local_dir: dir.path().to_owned(),
        local_fetch_rate: Some(4 * MIB),
        ..SimConfig::default()
    })
    .await;
    let bot = bot(&sim);
    let ctl = sim.control();
    let sent = ctl.send_file(FileSpec::document(USER, 2 * MIB, 8)).await.unwrap();
    let started = std::time::Instant::now();

    // A caller that gives up leaves the fetch running on the server.
    let impatient = bot.get_file(FileId(sent.file_id.clone()));
    let gave_up = tokio::time::timeout(std::time::Duration::from_millis(100), impatient).await;
    assert!(gave_up.is_err(), "2 MiB at 4 MiB/s cannot answer within 100 ms");
    let during = eventually("the fetch goes on after the caller left", || async {
        let all = ctl.local_fetches().await.unwrap();
        all.into_iter().find(|f| f.file_id == sent.file_id && f.fetched > 0)
    })
    .await;
    assert!(during.started && during.fetched < 2 * MIB, "{during:?}");

    // Asking again joins it: the answer comes when the whole file is there.
    let file = bot.get_file(FileId(sent.file_id.clone())).await.expect("getFile");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(480),
        "2 MiB at 4 MiB/s takes half a second: {:?}",
        started.elapsed()
    );
    let bytes = std::fs::read(&file.path).unwrap();
    assert_eq!(sha256_hex(&bytes), sent.sha256);
    let after = ctl.local_fetches().await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!((after[0].get_file_calls, after[0].fetched), (2, 2 * MIB));
    sim.shutdown().await;
}

#[tokio::test]
async fn local_mode_get_file_can_be_made_to_return_any_path() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(SimConfig {
        local_mode: true,
        local_dir: dir.path().to_owned(),
        ..SimConfig::default()
    })
    .await;
    let bot = bot(&sim);
    let ctl = sim.control();
    let sent = ctl.send_file(FileSpec::document(USER, 1000, 6)).await.unwrap();
    ctl.set_local_file_path(&sent.file_id, "/etc/passwd").await.unwrap();
    let file = bot.get_file(FileId(sent.file_id.clone())).await.unwrap();
    assert_eq!(file.path, "/etc/passwd");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no copy was written"
    );
    let unknown = ctl.set_local_file_path("nope", "/x").await.unwrap_err();
    assert!(unknown.to_string().contains("404"), "{unknown}");
    sim.shutdown().await;

    // Cloud mode hands out relative paths only: the override is refused.
    let cloud = start(SimConfig::default()).await;
    let sent = cloud
        .control()
        .send_file(FileSpec::document(USER, 1000, 6))
        .await
        .unwrap();
    let err = cloud
        .control()
        .set_local_file_path(&sent.file_id, "/etc/passwd")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");
    cloud.shutdown().await;
}
