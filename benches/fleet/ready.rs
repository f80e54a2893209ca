//! 10,000 IndividualEnrollments until Ready, against a bare kube client making the same apiserver writes
//! per object (one finalizer patch, one status write); then an operator restart over them, counting the
//! apiserver and backend writes it makes (target: none) and how its reads spread.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use dps_operator::api::{IndividualEnrollment, ProvisioningService};

use crate::figures::{Figures, seconds};
use crate::support::engine::free_port;
use crate::support::operator::{Bed, SERVICE};
use crate::support::{TestNamespace, client};
use crate::watch::{self, Tally, calls, create_all, metric, versions};

/// A TPM endorsement key (public): enrollments need no Secret, so the benchmark measures the controller.
const ENDORSEMENT_KEY: &str = "6oiD+dkhBFgyfWFcXmrX7bTM0aVQy/Vc1inQp/KQAqx53Rhk/gBN1+1Q+ieeyeyiTN0JCThus0nRL22wFkzORrCDGUgu3pGrIhW75yIvYlINM1t7KiqFasOaS8+zJ5yfEgv7vJdoMOCyRGMoBfIEOgHI8fm9YiRc4N18IDI8NVnz9CGlgK1gGfeDEck8qaqXmhPaJgfG/0H8MTPblpFJ9KUpGIZQpETIQayz0aog8FfWAKKOaQ7d2Skf7rpAxyD1AfmU2qOSxh6BNhjb4VxYeMc4smqrOhueENu2uGV6aiuo2CkqAComHnhZxU2zSJfT98/JZascsU4lPKLj+kohTkjnOfJUhLYCqO9gqNca";

fn enrollment(name: &str) -> IndividualEnrollment {
    serde_json::from_value(json!({
        "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "IndividualEnrollment",
        "metadata": { "name": name },
        "spec": {
            "provisioningServiceRef": { "name": SERVICE },
            "attestation": { "tpm": { "endorsementKey": ENDORSEMENT_KEY } },
        }
    }))
    .expect("IndividualEnrollment")
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

pub async fn run(n: usize, restart: bool, deadline: Duration, figures: &mut Figures) {
    let port = free_port();
    let env = crate::operator_env(port);
    let mut bed = Bed::start_with_args("fleet-ready", &[], &crate::borrowed(&env)).await;
    // The engine has no quota; Azure's 1,000 a minute would make this a benchmark of the budget.
    let limits = json!({"spec": {"rateLimits": {"serviceOperationsPerMinute": 1_000_000, "registryOperationsPerMinute": 1_000_000}}});
    bed.api::<ProvisioningService>()
        .patch(SERVICE, &PatchParams::default(), &Patch::Merge(limits))
        .await
        .expect("limits");
    bed.wait_ready::<ProvisioningService>(SERVICE).await;

    let api = bed.api::<IndividualEnrollment>();
    let tally = Tally::start(&api, watch::ready).await;
    let created_from = Instant::now();
    let last_create = create_all(&api, names("ienr", n).iter().map(|name| enrollment(name)).collect()).await;
    figures.add(&format!("create {n} IndividualEnrollments"), seconds(last_create - created_from), "");
    let all_ready = tally.wait(n, "enrollments Ready", deadline).await;
    let operator = all_ready.saturating_duration_since(last_create);
    figures.add(&format!("{n} IndividualEnrollments: last create -> all Ready"), seconds(operator), "");
    let lists = metric(port, "dps_operator_watch_lists_total", &["kind=\"individualenrollment\""]).await;
    figures.add("watch lists of the enrollments by the operator meanwhile (1 = no relist)", lists, "");

    let bare = bare_client_writes(n).await;
    figures.add(&format!("bare kube client: {n} x (finalizer patch + status write)"), seconds(bare), "");
    let ratio = operator.as_secs_f64() / bare.as_secs_f64().max(0.001);
    figures.add("ready-time ratio (operator / bare client)", format!("{ratio:.2}"), "<= 1.5");

    if restart {
        restart_with_ready_objects(&mut bed, n, port, &env, deadline, figures).await;
    }
    bed.ns.delete().await;
}

/// The same apiserver writes per object the operator must make at the least, by a bare client with the
/// operator's default concurrency, on objects created beforehand in a namespace no operator watches; done
/// when the same kind of watch as the operator's run saw every object Ready.
async fn bare_client_writes(n: usize) -> Duration {
    let client = client().await;
    let ns = TestNamespace::create(&client, "fleet-bare").await;
    let api = Api::<IndividualEnrollment>::namespaced(client.clone(), &ns.name);
    let names = names("bare", n);
    create_all(&api, names.iter().map(|name| enrollment(name)).collect()).await;
    let concurrency = usize::from(dps_operator::controller::context::DEFAULT_CONCURRENCY);
    // Counted as the operator's run is, by a watch that sees each object become Ready: the same watch
    // load on the apiserver and the same way of deciding "all done".
    let tally = Tally::start(&api, watch::ready).await;
    let started = Instant::now();
    futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                let finalizer = json!({ "metadata": { "finalizers": ["dps.iot-operator.dev/finalizer"] } });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(finalizer)).await.expect("finalizer");
                let status = json!({
                    "apiVersion": "dps.iot-operator.dev/v1alpha1", "kind": "IndividualEnrollment",
                    "status": {
                        "observedGeneration": 1,
                        "conditions": [{
                            "type": "Ready", "status": "True", "reason": "EntryInSync",
                            "message": "the DPS entry matches the spec", "observedGeneration": 1,
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }],
                    }
                });
                let params = PatchParams::apply("bare-client").force();
                api.patch_status(&name, &params, &Patch::Apply(status)).await.expect("status");
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    let took = tally.wait(n, "bare objects Ready", Duration::from_secs(3600)).await.saturating_duration_since(started);
    // The objects keep their finalizer with no operator to release it; the namespace goes with the run.
    ns.delete().await;
    took
}

/// Restarts the operator over `n` Ready enrollments and counts what it writes until it has reconciled
/// each of them once.
async fn restart_with_ready_objects(
    bed: &mut Bed,
    n: usize,
    port: u16,
    env: &[(String, String)],
    deadline: Duration,
    figures: &mut Figures,
) {
    let api = bed.api::<IndividualEnrollment>();
    bed.operator.terminate(Duration::from_secs(30)).await;
    let before = versions(&api).await;
    let events_before = bed.api::<Event>().list(&ListParams::default()).await.expect("events").items.len();
    let log_mark = bed.engine.log().len();
    let restarted = Instant::now();
    bed.operator.restart_with(&crate::borrowed(env));
    let reconciled = ["controller=\"individualenrollment\"", "result=\"success\""];
    let mut last_print = Instant::now();
    while metric(port, "controller_runtime_reconcile_total", &reconciled).await < n as f64 {
        assert!(restarted.elapsed() < deadline, "the restarted operator did not reconcile {n} enrollments");
        if last_print.elapsed() > Duration::from_secs(30) {
            let done = metric(port, "controller_runtime_reconcile_total", &reconciled).await;
            eprintln!("[fleet] restart: {done}/{n} reconciled after {:?}", restarted.elapsed());
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = restarted.elapsed();
    let after = versions(&api).await;
    let changed = before.iter().filter(|(name, rv)| after.get(*name) != Some(rv)).count();
    let events_after = bed.api::<Event>().list(&ListParams::default()).await.expect("events").items.len();
    let host = bed.engine.info.provisioning_service.host_name.clone();
    let backend = calls(&bed.engine.log(), log_mark, &host);
    figures.add(&format!("restart over {n} Ready: every enrollment reconciled once"), seconds(took), "");
    figures.add(
        "restart: apiserver writes (objects changed + events)",
        changed + events_after.saturating_sub(events_before),
        "0",
    );
    figures.add("restart: backend writes", backend.dps_writes + backend.registry_writes, "0");
    let per_minute = backend.dps_reads as f64 / took.as_secs_f64().max(0.001) * 60.0;
    figures.add(
        "restart: backend reads (per minute)",
        format!("{} DPS + {} registry ({per_minute:.0}/min at DPS)", backend.dps_reads, backend.registry_reads),
        "within the resync share of the budget",
    );
}
