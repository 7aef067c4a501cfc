//! Fair queues: one user's many files wait in line without holding up
//! anyone else's, and never run more than the per-user limit at once.

use super::*;
use chrono::{DateTime, Utc};
use teledrop_core::{JobId, JobRecord};

/// The most jobs of `jobs` that were `running` at one moment, from their
/// timelines. An end and a start at the same millisecond count the end
/// first: a claim counts only jobs whose end it sees committed.
async fn max_running(catalog: &Arc<dyn Catalog>, jobs: &[JobId]) -> usize {
    let mut edges: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for job in jobs {
        for e in catalog.job_events(*job).await.unwrap() {
            if e.to == JobState::Running {
                edges.push((e.at, 1));
            } else if e.from == Some(JobState::Running) {
                edges.push((e.at, -1));
            }
        }
    }
    edges.sort();
    let (mut now, mut max) = (0, 0);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    usize::try_from(max).unwrap()
}

async fn job_of(rig: &Rig, update_id: i64) -> JobRecord {
    rig.catalog
        .job_by_update(UpdateId(update_id))
        .await
        .unwrap()
        .expect("a job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_file_passes_one_users_hundred() {
    const FILES: usize = 100;
    let (busy, other) = (60, 61);
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    // Paced downloads, so that jobs overlap and a queue forms.
    ctl.set_faults(Faults {
        download_bytes_per_sec: Some(400_000),
        ..Faults::default()
    })
    .await
    .unwrap();
    let mut updates = Vec::new();
    for seed in 0..FILES as u64 {
        let sent = ctl
            .send_file(FileSpec::document(busy, 20_000, 1000 + seed))
            .await
            .unwrap();
        updates.push(sent.update_id);
    }
    let late = ctl.send_file(FileSpec::document(other, 20_000, 5000)).await.unwrap();
    let mut envelopes = Vec::new();
    for id in updates.iter().chain([&late.update_id]) {
        envelopes.push(update_body(&rig, *id).await);
    }
    // In arrival order, through a small bus, as the poller feeds it.
    let bus = Arc::new(MemoryBus::new(16));
    let publisher = tokio::spawn({
        let bus = bus.clone();
        async move {
            for env in envelopes {
                bus.publish(env).await.unwrap();
            }
        }
    });
    let stop = CancellationToken::new();
    let worker = tokio::spawn(teledrop_worker::serve(
        bus.clone() as Arc<dyn Bus>,
        rig.pipeline.clone(),
        4,
        stop.clone(),
        WAIT,
    ));
    // The busy user's files wait, and the worker shows it.
    let metrics = rig.pipeline.metrics().clone();
    let queued = teledrop_testkit::poll_until(WAIT, || async { (metrics.jobs_waiting() >= 50).then_some(()) }).await;
    assert!(queued.is_some(), "no queue formed: {} waiting", metrics.jobs_waiting());
    ctl.wait_for(other, WAIT, |l| links(l).len() == 1).await.unwrap();
    ctl.wait_for(busy, Duration::from_secs(120), |l| links(l).len() == FILES)
        .await
        .unwrap();
    stop.cancel();
    worker.await.unwrap();
    publisher.await.unwrap();

    let mut busy_jobs = Vec::new();
    for id in &updates {
        busy_jobs.push(job_of(&rig, *id).await);
    }
    assert!(
        busy_jobs.iter().all(|j| j.state == JobState::Stored),
        "every file stored"
    );
    let mut replied: Vec<_> = busy_jobs.iter().map(|j| j.replied_at.expect("replied")).collect();
    replied.sort();
    let late_job = job_of(&rig, late.update_id).await;
    let late_at = late_job.replied_at.expect("replied");
    assert!(
        late_at < replied[9],
        "the other user's link ({late_at}) came after the busy user's 10th ({})",
        replied[9]
    );
    let ids: Vec<_> = busy_jobs.iter().map(|j| j.id).collect();
    let most = max_running(&rig.catalog, &ids).await;
    assert!(most <= 2, "{most} of one user's jobs ran at once; the limit is 2");
    assert_eq!(most, 2, "the user's two slots were used");
    // Waiting cost no attempt: each job started once.
    assert!(busy_jobs.iter().all(|j| j.attempts == 1));
    assert_eq!(metrics.deliveries("ack"), FILES as u64 + 1);
    assert_eq!(metrics.deliveries("retry"), 0, "no delivery went back to the bus");
    assert_eq!((metrics.jobs_waiting(), metrics.jobs_in_flight()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_keep_one_users_limit_between_them() {
    const FILES: usize = 16;
    let user = 62;
    let (rig, replicas) = two_replicas_on_postgres(None).await;
    let limited: Vec<Arc<Pipeline>> = {
        // The same replicas with the per-user limit (the helper turns it off).
        let mut v = Vec::new();
        for r in &replicas {
            let token: BotToken = rig.sim.token().parse().unwrap();
            let telegram = Telegram::new(TelegramConfig::new(token, rig.sim.base_url(), false)).unwrap();
            v.push(Arc::new(Pipeline::new(
                r.catalog().clone(),
                rig.storage.clone(),
                telegram,
                pipeline_config(3, None),
            )));
        }
        v
    };
    let ctl = rig.sim.control();
    ctl.set_faults(Faults {
        download_bytes_per_sec: Some(200_000),
        ..Faults::default()
    })
    .await
    .unwrap();
    let buses = [Arc::new(MemoryBus::new(64)), Arc::new(MemoryBus::new(64))];
    let mut updates = Vec::new();
    for seed in 0..FILES as u64 {
        let sent = ctl
            .send_file(FileSpec::document(user, 20_000, 7000 + seed))
            .await
            .unwrap();
        updates.push(sent.update_id);
        let env = update_body(&rig, sent.update_id).await;
        buses[updates.len() % 2].publish(env).await.unwrap();
    }
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for (bus, pipeline) in buses.iter().zip(&limited) {
        workers.push(tokio::spawn(teledrop_worker::serve(
            bus.clone() as Arc<dyn Bus>,
            pipeline.clone(),
            4,
            stop.clone(),
            WAIT,
        )));
    }
    ctl.wait_for(user, Duration::from_secs(120), |l| links(l).len() == FILES)
        .await
        .unwrap();
    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    let mut ids = Vec::new();
    for id in &updates {
        let job = job_of(&rig, *id).await;
        assert_eq!((job.state, job.attempts), (JobState::Stored, 1));
        ids.push(job.id);
    }
    let most = max_running(&rig.catalog, &ids).await;
    assert!(
        most <= 2,
        "{most} of one user's jobs ran at once over two replicas; the limit is 2"
    );
}

/// Hands out the deliveries it is given, with their delivery counts, as
/// a bus would after a worker died; settling does nothing.
struct Redeliveries(tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<(Envelope, u32)>>);

struct Unsettled;

#[async_trait::async_trait]
impl teledrop_bus::Settle for Unsettled {
    async fn ack(self: Box<Self>) -> Result<(), teledrop_bus::BusError> {
        Ok(())
    }
    async fn nak(self: Box<Self>, _: Duration) -> Result<(), teledrop_bus::BusError> {
        Ok(())
    }
    async fn term(self: Box<Self>) -> Result<(), teledrop_bus::BusError> {
        Ok(())
    }
    async fn in_progress(&self) -> Result<(), teledrop_bus::BusError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Bus for Redeliveries {
    async fn publish(&self, _: Envelope) -> Result<(), teledrop_bus::BusError> {
        Err(teledrop_bus::BusError::Closed)
    }
    async fn next(&self) -> Result<Option<teledrop_bus::Delivery>, teledrop_bus::BusError> {
        let got = self.0.lock().await.recv().await;
        Ok(got.map(|(envelope, attempt)| teledrop_bus::Delivery {
            envelope,
            attempt,
            settle: Box::new(Unsettled),
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_of_a_dead_worker_free_their_owners_slots_when_redelivered() {
    let user = 63;
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    let mut envelopes = Vec::new();
    let mut jobs = Vec::new();
    for seed in 0..3 {
        let sent = ctl
            .send_file(FileSpec::document(user, 5_000, 8000 + seed))
            .await
            .unwrap();
        let env = update_body(&rig, sent.update_id).await;
        let update: teledrop_telegram::Update = serde_json::from_slice(&env.body).unwrap();
        let teledrop_worker::Intake::NewJob(id) = rig.pipeline.accept(&update).await.unwrap() else {
            panic!("a new job")
        };
        envelopes.push(env);
        jobs.push(id);
    }
    // A worker died running the first two: the user's two slots are taken.
    for id in &jobs[..2] {
        rig.catalog
            .transition(
                *id,
                Transition::new(JobState::Pending, JobState::Running, "dead worker"),
            )
            .await
            .unwrap();
    }
    // The third file waits in line first; the dead worker's come back after it.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send((envelopes[2].clone(), 1)).unwrap();
    tx.send((envelopes[0].clone(), 2)).unwrap();
    tx.send((envelopes[1].clone(), 2)).unwrap();
    let bus = Arc::new(Redeliveries(tokio::sync::Mutex::new(rx)));
    let stop = CancellationToken::new();
    let worker = tokio::spawn(teledrop_worker::serve(
        bus as Arc<dyn Bus>,
        rig.pipeline.clone(),
        4,
        stop.clone(),
        WAIT,
    ));
    ctl.wait_for(user, WAIT, |l| links(l).len() == 3).await.unwrap();
    stop.cancel();
    worker.await.unwrap();
    drop(tx);
    let mut attempts = Vec::new();
    for id in &jobs {
        let job = rig.catalog.job(*id).await.unwrap().expect("job");
        assert_eq!(job.state, JobState::Stored);
        attempts.push(job.attempts);
    }
    assert_eq!(
        attempts,
        [2, 2, 1],
        "taken over once each; the waiting one started once"
    );
    assert!(max_running(&rig.catalog, &jobs).await <= 2);
}
