//! A leader cut off from the API server stops before its Lease can be taken, and the replica
//! that takes over finishes the work without duplicating it. Two operator binaries with
//! leader election: the leader reaches the API server through a loopback TCP relay that the
//! test turns into a black hole (bytes read and dropped, connections kept open, as on a
//! network partition), the standby directly.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::DynamicObject;
use serde_json::json;
use substratus_tests::audit;
use substratus_tests::cluster::{TestNamespace, client, wait_for};
use substratus_tests::objects::api;
use substratus_tests::operator::{
    OPERATOR_NAMESPACE, OPERATOR_USER, audit_log, operator_kubeconfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Seconds of a Lease term: short, so that the test is.
const LEASE_SECONDS: u64 = 6;

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    substratus_devcluster::ports::free_loopback_port().unwrap()
}

/// Copies bytes from `from` to `to` while `open`; while not, reads and drops them.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    open: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if open.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A loopback relay to `target`; returns its address. While `open` is false, it drops every
/// byte both ways.
async fn relay(target: String, open: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (target, open) = (target.clone(), open.clone());
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&target).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(pump(cr, sw, open.clone()), pump(sr, cw, open));
            });
        }
    });
    addr
}

fn start(
    identity: &str,
    kubeconfig: &std::path::Path,
    ns: &str,
    lease: &str,
    log: &std::path::Path,
) -> Operator {
    let log = std::fs::File::create(log).unwrap();
    Operator(
        Command::new(env!("CARGO_BIN_EXE_substratus-operator"))
            .arg("run")
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .env("CLOUD", "kind")
            .env("CLUSTER_NAME", "test")
            .env("S3_ENDPOINT", "http://127.0.0.1:9")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("WATCH_NAMESPACE", ns)
            .env("LEADER_ELECT", "true")
            .env("POD_NAME", identity)
            .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
            .env("LEASE_NAME", lease)
            .env("LEASE_DURATION_SECONDS", LEASE_SECONDS.to_string())
            .env("METRICS_BIND_ADDRESS", format!("127.0.0.1:{}", port()))
            .env("HEALTH_PROBE_BIND_ADDRESS", format!("127.0.0.1:{}", port()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the operator binary"),
    )
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn create_models(c: &kube::Client, ns: &str, names: impl Iterator<Item = String>) {
    for name in names {
        let m: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": name},
            "spec": {"image": "loader", "resources": {"cpu": 0, "memory": 0, "disk": 0}}
        }))
        .unwrap();
        api(c, ns, "Model")
            .create(&PostParams::default(), &m)
            .await
            .unwrap();
    }
}

async fn wait_ready(c: &kube::Client, ns: &str, n: usize) {
    wait_for(
        &format!("{n} Models Ready"),
        Duration::from_secs(120),
        || async {
            let list = api(c, ns, "Model")
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let ready = list
                .items
                .iter()
                .filter(|m| m.data["status"]["ready"] == true)
                .count();
            Ok((ready == n).then_some(()))
        },
    )
    .await;
}

#[tokio::test]
async fn a_partitioned_leader_stops_before_its_lease_can_be_taken_and_no_job_is_duplicated() {
    let ns = TestNamespace::new("partition");
    let c = client().await;
    let since = jiff::Timestamp::now();
    let lease_name = format!("partition-{}", ns.name);
    let leases: Api<Lease> = Api::namespaced(c.clone(), OPERATOR_NAMESPACE);

    // The leader's kubeconfig points at the relay.
    let direct = operator_kubeconfig();
    let mut kc: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&direct).unwrap()).unwrap();
    let server = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let open = Arc::new(AtomicBool::new(true));
    let relayed = relay(target.clone(), open.clone()).await;
    kc["clusters"][0]["cluster"]["server"] = json!(format!("https://{relayed}"));
    let dir = tempfile_dir(&ns.name);
    let via_relay = dir.join("leader.kubeconfig");
    std::fs::write(&via_relay, serde_json::to_vec(&kc).unwrap()).unwrap();

    let mut leader = start(
        "leader",
        &via_relay,
        &ns.name,
        &lease_name,
        &dir.join("leader.log"),
    );
    wait_for(
        "the first replica to hold the Lease",
        Duration::from_secs(30),
        || async {
            let l = leases
                .get_opt(&lease_name)
                .await
                .map_err(|e| e.to_string())?;
            let holder = l.and_then(|l| l.spec?.holder_identity);
            Ok((holder.as_deref() == Some("leader")).then_some(()))
        },
    )
    .await;
    let _standby = start(
        "standby",
        &direct,
        &ns.name,
        &lease_name,
        &dir.join("standby.log"),
    );
    create_models(&c, &ns.name, (0..4).map(|i| format!("before-{i}"))).await;
    wait_ready(&c, &ns.name, 4).await;

    // The partition: the leader's requests and the answers to them vanish.
    open.store(false, Ordering::SeqCst);
    let cut = Instant::now();
    create_models(&c, &ns.name, (0..4).map(|i| format!("during-{i}"))).await;

    // Follow the Lease until the standby holds it; the leader's last renewal ends its term.
    let mut term_end: Option<i64> = None;
    let mut leader_exit: Option<SystemTime> = None;
    let taken_at = loop {
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "the standby never took the Lease"
        );
        if leader_exit.is_none() && leader.0.try_wait().unwrap().is_some() {
            leader_exit = Some(SystemTime::now());
        }
        let spec = leases.get(&lease_name).await.unwrap().spec.unwrap();
        match spec.holder_identity.as_deref() {
            Some("leader") => {
                let renewed = spec.renew_time.or(spec.acquire_time).unwrap();
                term_end = Some(renewed.0.as_millisecond() + LEASE_SECONDS as i64 * 1000);
            }
            Some("standby") => break SystemTime::now(),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let term_end = term_end.expect("the leader's term was seen");
    // The leader must be gone by then: it could not know whether it was still leading.
    if leader_exit.is_none() {
        let exited = leader.0.try_wait().unwrap().is_some();
        assert!(
            exited,
            "the partitioned leader still runs after the standby took the Lease ({} ms after its term ended)",
            millis(taken_at) - term_end
        );
        leader_exit = Some(taken_at);
    }
    let exit = millis(leader_exit.unwrap());
    assert!(
        exit <= term_end,
        "the partitioned leader ran {} ms past the end of its term",
        exit - term_end
    );
    assert!(
        millis(taken_at) >= term_end,
        "the Lease was taken before its term ended"
    );
    let log = std::fs::read_to_string(dir.join("leader.log")).unwrap();
    assert!(
        log.contains("leadership ended"),
        "the leader says why it stopped:\n{log}"
    );

    // The partition heals; the new leader finishes the work, once.
    open.store(true, Ordering::SeqCst);
    wait_ready(&c, &ns.name, 8).await;
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    let names: Vec<_> = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect();
    assert_eq!(names.len(), 8, "one Job per Model: {names:?}");
    let mut creates = std::collections::BTreeMap::<String, usize>::new();
    for e in audit::entries(&audit_log(), OPERATOR_USER, since) {
        let Some(o) = e.object_ref.as_ref() else {
            continue;
        };
        if e.verb == "create"
            && o.resource == "jobs"
            && o.namespace.as_deref() == Some(ns.name.as_str())
            && e.response_status.as_ref().and_then(|s| s.code) == Some(201)
        {
            *creates
                .entry(o.name.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    assert!(
        creates.values().all(|n| *n == 1),
        "a Job created more than once: {creates:?}"
    );
    eprintln!(
        "the leader stopped {} ms before its term ended; the standby took the Lease {} ms after",
        term_end - exit,
        millis(taken_at) - term_end
    );
    let _ = leases.delete(&lease_name, &DeleteParams::default()).await;
    drop(leader);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("substratus-{name}"));
    std::fs::create_dir_all(&d).unwrap();
    d
}
