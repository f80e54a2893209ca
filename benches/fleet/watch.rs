//! What the scenarios share: creating many objects, waiting on a watch until they all reach a state,
//! counting the engine's requests from its log, and reading the operator's metrics and memory.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::support::process::strip_colours;

/// Objects created at once (the apiserver, not the client, should be what limits creation).
const IN_FLIGHT: usize = 32;

/// Creates every object, `IN_FLIGHT` at a time; returns when the last create was answered.
pub async fn create_all<K>(api: &Api<K>, objects: Vec<K>) -> Instant
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static,
{
    futures::stream::iter(objects)
        .map(|object| {
            let api = api.clone();
            async move {
                let name = object.meta().name.clone().unwrap_or_default();
                for attempt in 0..5 {
                    match api.create(&PostParams::default(), &object).await {
                        Ok(_) => return,
                        Err(kube::Error::Api(e)) if e.code == 409 => return,
                        Err(e) if attempt < 4 => {
                            eprintln!("[fleet] create {name} failed ({e}); again");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => panic!("create {name} failed: {e}"),
                    }
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    Instant::now()
}

/// Whether a resource's status says Ready for its current generation.
pub fn ready<K: Serialize + Resource>(object: &K) -> bool {
    let value = serde_json::to_value(object).unwrap_or_default();
    let generation = object.meta().generation;
    value.pointer("/status/observedGeneration").and_then(|g| g.as_i64()) == generation
        && value
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Counts, from a watch started before the objects are created, how many of them satisfy `done`: each
/// change is looked at once as it arrives, so the benchmark spends next to no CPU while the operator works
/// (rescanning every object on a timer would compete with it for the cores).
pub struct Tally {
    count: tokio::sync::watch::Receiver<(usize, Instant)>,
    driver: tokio::task::JoinHandle<()>,
}

impl Tally {
    /// Starts watching `api`.
    pub async fn start<K>(api: &Api<K>, done: fn(&K) -> bool) -> Self
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static,
    {
        let (tx, count) = tokio::sync::watch::channel((0, Instant::now()));
        let (synced_tx, synced) = tokio::sync::oneshot::channel();
        let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
        let driver = tokio::spawn(async move {
            let mut satisfied = std::collections::HashSet::new();
            let mut synced_tx = Some(synced_tx);
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                        if done(&o) {
                            satisfied.insert(o.name_any());
                        } else {
                            satisfied.remove(&o.name_any());
                        }
                    }
                    watcher::Event::Delete(o) => {
                        satisfied.remove(&o.name_any());
                    }
                    watcher::Event::Init => satisfied.clear(),
                    watcher::Event::InitDone => {
                        if let Some(tx) = synced_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                let _ = tx.send((satisfied.len(), Instant::now()));
            }
        });
        // The watch is open before the first object is created, so none of their changes is missed.
        let _ = synced.await;
        Self { count, driver }
    }

    /// Waits until at least `count` objects satisfy the condition; returns when the watch saw the last.
    pub async fn wait(mut self, count: usize, what: &str, deadline: Duration) -> Instant {
        let started = Instant::now();
        loop {
            let reached = tokio::time::timeout(Duration::from_secs(30), self.count.wait_for(|(n, _)| *n >= count))
                .await
                .map(|seen| seen.map(|seen| seen.1));
            match reached {
                Ok(Ok(at)) => {
                    self.driver.abort();
                    return at;
                }
                Ok(Err(_)) => panic!("{what}: the watch ended"),
                Err(_) => {
                    let n = self.count.borrow().0;
                    eprintln!("[fleet] {what}: {n}/{count} after {:?}", started.elapsed());
                    assert!(started.elapsed() < deadline, "{what}: only {n} of {count} after {deadline:?}");
                }
            }
        }
    }
}

/// Requests the engine logged, split by kind of call.
#[derive(Debug, Default, Clone, Copy)]
pub struct Calls {
    /// GETs, queries and attestation reads on the DPS service API.
    pub dps_reads: usize,
    /// Every other DPS service call.
    pub dps_writes: usize,
    /// Reads of the hubs' identity registries (GETs and queries).
    pub registry_reads: usize,
    /// Other calls to the hubs' identity registries (a bulk call counts once).
    pub registry_writes: usize,
    /// Device registration calls (the simulated devices).
    pub device: usize,
}

/// The engine's requests logged after byte `from` of its log (`dps_host`: the service API's host).
pub fn calls(log: &str, from: usize, dps_host: &str) -> Calls {
    let mut calls = Calls::default();
    for line in log.get(from..).unwrap_or_default().lines().filter(|l| l.contains("request")) {
        let plain = strip_colours(line);
        let Some(method) = field(&plain, "method") else { continue };
        let host = field(&plain, "host").unwrap_or_default();
        let path = field(&plain, "path").unwrap_or_default();
        if path.starts_with("/engine") {
            continue;
        }
        if host.starts_with(dps_host) {
            let read = method == "GET"
                || (method == "POST" && (path.ends_with("/query") || path.ends_with("/attestationmechanism")));
            if read {
                calls.dps_reads += 1;
            } else {
                calls.dps_writes += 1;
            }
        } else if path.starts_with("/devices") {
            if method == "GET" || path.starts_with("/devices/query") {
                calls.registry_reads += 1;
            } else {
                calls.registry_writes += 1;
            }
        } else {
            calls.device += 1;
        }
    }
    calls
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split_whitespace().next()
}

/// The sum of a counter family's samples whose labels contain every `labels` pair.
pub async fn metric(port: u16, name: &str, labels: &[&str]) -> f64 {
    let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else { return 0.0 };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Resident, peak resident and file-backed resident memory of a process, in MiB.
pub fn memory_mib(pid: u32) -> (f64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0, kib("RssFile:") / 1024.0)
}

/// The names of the objects of `api`, with their resourceVersions.
pub async fn versions<K>(api: &Api<K>) -> std::collections::BTreeMap<String, String>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = api.list(&Default::default()).await.expect("list");
    list.items.iter().map(|o| (o.name_any(), o.resource_version().unwrap_or_default())).collect()
}
