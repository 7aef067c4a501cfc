//! The reference for worker throughput: the same Bot API calls a worker
//! makes for a small file, made by a client with nothing else in it.
//! For each file: `sendMessage` (the status), `getFile`, the download
//! (written to a folder while its SHA-256 is computed), one `INSERT` into
//! Postgres, `editMessageText` (the link). No bus, no job states, no
//! retries, no quotas, no progress edits: what any tool must do at least.

use futures::StreamExt;
use serde_json::{Value, json};
use sha2::Digest;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;

/// Files per second `concurrency` tasks reach storing `files` (file ids and
/// their senders) from the Bot API at `api` into `dir` and `database`.
pub async fn run(
    api: &url::Url,
    token: &str,
    files: Vec<(String, i64)>,
    concurrency: usize,
    dir: &Path,
    database: &str,
) -> f64 {
    let pool = sqlx::PgPool::connect(database).await.unwrap();
    sqlx::query("CREATE TABLE IF NOT EXISTS minimal_files (id BIGSERIAL PRIMARY KEY, file_id TEXT NOT NULL, path TEXT NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let http = reqwest::Client::new();
    let method = |name: &str| format!("{api}bot{token}/{name}");
    let count = files.len();
    let queue = Arc::new(std::sync::Mutex::new(files));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (queue, http, pool, dir) = (queue.clone(), http.clone(), pool.clone(), dir.to_owned());
        let (send, get_file, edit) = (method("sendMessage"), method("getFile"), method("editMessageText"));
        let file_base = format!("{api}file/bot{token}/");
        tasks.spawn(async move {
            loop {
                let Some((file_id, chat)) = queue.lock().unwrap().pop() else {
                    return;
                };
                let call = |url: &str, body: Value| {
                    let req = http.post(url).json(&body).send();
                    async move {
                        let v: Value = req.await.unwrap().json().await.unwrap();
                        assert_eq!(v["ok"], true, "{v}");
                        v["result"].clone()
                    }
                };
                let status = call(&send, json!({"chat_id": chat, "text": "Receiving…"})).await;
                let file = call(&get_file, json!({"file_id": file_id})).await;
                let path = file["file_path"].as_str().unwrap().to_owned();
                let mut body = http
                    .get(format!("{file_base}{path}"))
                    .send()
                    .await
                    .unwrap()
                    .bytes_stream();
                let target = dir.join(file_id.replace('/', "_"));
                let mut out = tokio::fs::File::create(&target).await.unwrap();
                let (mut hasher, mut size) = (sha2::Sha256::new(), 0i64);
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.unwrap();
                    hasher.update(&chunk);
                    size += chunk.len() as i64;
                    out.write_all(&chunk).await.unwrap();
                }
                out.flush().await.unwrap();
                sqlx::query("INSERT INTO minimal_files (file_id, path, size, sha256) VALUES ($1, $2, $3, $4)")
                    .bind(&file_id)
                    .bind(target.display().to_string())
                    .bind(size)
                    .bind(hex::encode(hasher.finalize()))
                    .execute(&pool)
                    .await
                    .unwrap();
                let message_id = status["message_id"].clone();
                call(
                    &edit,
                    json!({"chat_id": chat, "message_id": message_id, "text": "https://example/download/x"}),
                )
                .await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}
