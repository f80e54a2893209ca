//! Engine throughput: starts the engine in-process on loopback, then with N concurrent HTTP/1.1 keep-alive
//! clients measures enrollment PUTs per second and symmetric-key device registrations per second
//! (register + poll until assigned), for individual enrollments and for one symmetric-key group.
//! Bounded in count and time; prints figures, asserts nothing about timing.
//!
//! `cargo bench --bench engine_throughput` (env: `ENGINE_BENCH_CLIENTS`, `ENGINE_BENCH_COUNT`,
//! `ENGINE_BENCH_SECONDS`).

#[path = "../tests/engine_common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dps_operator::engine::{EngineInfo, sas, util};
use serde_json::{Value, json};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `count` jobs over `clients` workers, stopping early at `limit`; returns (done, failed, elapsed).
async fn drive<F, Fut>(clients: usize, count: usize, limit: Duration, job: F) -> (usize, usize, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (job, next, failed, done) = (job.clone(), next.clone(), failed.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || start.elapsed() > limit {
                    break;
                }
                if job(i).await {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), start.elapsed())
}

async fn register(client: &reqwest::Client, info: &EngineInfo, id: &str, key: &str) -> bool {
    let token = common::device_token(info, id, key);
    let base = format!("{}/{}/registrations/{id}", info.device_endpoint, info.id_scope);
    let Ok(resp) = client
        .put(format!("{base}/register?api-version=2021-06-01"))
        .header("authorization", &token)
        .json(&json!({ "registrationId": id }))
        .send()
        .await
    else {
        return false;
    };
    if resp.status().as_u16() != 202 {
        return false;
    }
    let Ok(op) = resp.json::<Value>().await else { return false };
    let Some(op_id) = op.get("operationId").and_then(Value::as_str) else { return false };
    for _ in 0..20 {
        let Ok(r) = client
            .get(format!("{base}/operations/{op_id}?api-version=2021-06-01"))
            .header("authorization", &token)
            .send()
            .await
        else {
            return false;
        };
        let Ok(v) = r.json::<Value>().await else { return false };
        match v.get("status").and_then(Value::as_str) {
            Some("assigned") => return true,
            Some("assigning") => tokio::time::sleep(Duration::from_millis(5)).await,
            _ => return false,
        }
    }
    false
}

fn report(what: &str, (done, failed, elapsed): (usize, usize, Duration)) {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    println!("{what:<44} {done:>7} ok {failed:>5} failed in {:>6.2} s = {rate:>8.0}/s", elapsed.as_secs_f64());
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return;
        }
    };
    rt.block_on(async {
        let clients = env("ENGINE_BENCH_CLIENTS", 64);
        let count = env("ENGINE_BENCH_COUNT", 10_000);
        let limit = Duration::from_secs(env("ENGINE_BENCH_SECONDS", 20) as u64);
        let (engine, dir) = common::start_engine("bench").await;
        let info = Arc::new(engine.info.clone());
        let client = common::client(&info, None);
        let service = Arc::new(common::service_token(&info));
        println!("engine at {} ({} clients, at most {count} operations or {limit:?} per phase)", info.device_endpoint, clients);

        // Phase 1: individual enrollment PUTs with caller-supplied keys.
        let keys: Arc<Vec<String>> = Arc::new((0..count).map(|_| util::generate_key()).collect());
        let (c, i2, s2, k2) = (client.clone(), info.clone(), service.clone(), keys.clone());
        let put = drive(clients, count, limit, move |i| {
            let (c, info, service, keys) = (c.clone(), i2.clone(), s2.clone(), k2.clone());
            async move {
                let body = json!({
                    "registrationId": format!("bench-{i}"),
                    "attestation": { "type": "symmetricKey", "symmetricKey": { "primaryKey": keys[i], "secondaryKey": keys[i] } },
                });
                c.put(format!("{}/enrollments/bench-{i}?api-version=2021-10-01", info.provisioning_service.endpoint))
                    .header("authorization", service.as_str())
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        report("enrollment PUTs", put);
        let enrolled = put.0 + put.1;

        // Phase 2: registrations of the enrolled devices.
        let (c, i2, k2) = (client.clone(), info.clone(), keys.clone());
        let reg = drive(clients, enrolled, limit, move |i| {
            let (c, info, keys) = (c.clone(), i2.clone(), k2.clone());
            async move { register(&c, &info, &format!("bench-{i}"), &keys[i]).await }
        })
        .await;
        report("registrations (individual, register + poll)", reg);

        // Phase 3: registrations through one symmetric-key group (derived device keys).
        let group_key = util::generate_key();
        let created = client
            .put(format!("{}/enrollmentGroups/bench-group?api-version=2021-10-01", info.provisioning_service.endpoint))
            .header("authorization", service.as_str())
            .json(&json!({
                "enrollmentGroupId": "bench-group",
                "attestation": { "type": "symmetricKey", "symmetricKey": { "primaryKey": group_key, "secondaryKey": group_key } },
            }))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if created {
            let (c, i2) = (client.clone(), info.clone());
            let gk = Arc::new(group_key);
            let grp = drive(clients, count, limit, move |i| {
                let (c, info, gk) = (c.clone(), i2.clone(), gk.clone());
                async move {
                    let id = format!("bench-g-{i}");
                    let Some(key) = sas::derive_device_key(&gk, &id) else { return false };
                    register(&c, &info, &id, &key).await
                }
            })
            .await;
            report("registrations (group, register + poll)", grp);
        } else {
            println!("could not create the benchmark group");
        }
        engine.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
