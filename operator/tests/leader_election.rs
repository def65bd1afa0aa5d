//! Two replicas of the operator binary on the real control plane: one leads and reconciles,
//! the other waits, ready to take over (readiness does not depend on the Lease); when the
//! leader is killed, the other takes over within the lease time.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::json;
use substratus_crds::Dataset;
use substratus_tests::cluster::{TestNamespace, client, wait_for};
use substratus_tests::operator::operator_kubeconfig;

struct Replica {
    name: &'static str,
    child: Child,
    health: u16,
    metrics: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port() -> u16 {
    substratus_devcluster::ports::free_loopback_port().unwrap()
}

fn start(name: &'static str, namespace: &str) -> Replica {
    let health = port();
    let metrics = port();
    let log = std::fs::File::create(
        std::env::temp_dir().join(format!("operator-{name}-{namespace}.log")),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_substratus-operator"))
        .arg("run")
        .env("KUBECONFIG", operator_kubeconfig())
        .env("CLOUD", "kind")
        .env("S3_ENDPOINT", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("LEADER_ELECT", "true")
        .env(
            "POD_NAMESPACE",
            substratus_tests::operator::OPERATOR_NAMESPACE,
        )
        .env("LEASE_NAME", format!("lease-{namespace}"))
        .env("POD_NAME", name)
        .env("LEASE_DURATION_SECONDS", "4")
        .env("WATCH_NAMESPACE", namespace)
        .env("METRICS_BIND_ADDRESS", format!("127.0.0.1:{metrics}"))
        .env("HEALTH_PROBE_BIND_ADDRESS", format!("127.0.0.1:{health}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting the operator binary");
    Replica {
        name,
        child,
        health,
        metrics,
    }
}

/// The reconciles a replica has run, from its `/metrics`.
fn reconciles(r: &Replica) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", r.metrics)).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("substratus_reconciles_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// GET /readyz on loopback: Some(true) for 200, Some(false) for another answer.
fn ready(r: &Replica) -> Option<bool> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", r.health)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    Some(buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200"))
}

async fn holder(leases: &Api<Lease>, namespace: &str) -> Option<String> {
    leases
        .get_opt(&format!("lease-{namespace}"))
        .await
        .ok()?
        .and_then(|l| l.spec?.holder_identity)
}

async fn dataset_ready(c: &kube::Client, ns: &str, name: &str) {
    let api: Api<Dataset> = Api::namespaced(c.clone(), ns);
    let d: Dataset = serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Dataset",
        "metadata": {"name": name}, "spec": {"image": "loader"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    wait_for(
        &format!("Dataset {name} to be ready"),
        Duration::from_secs(60),
        || async {
            let d = api.get(name).await.map_err(|e| e.to_string())?;
            Ok(d.status.filter(|s| s.ready).map(|_| ()))
        },
    )
    .await;
}

#[tokio::test]
async fn one_replica_leads_and_the_other_takes_over_when_it_dies() {
    let ns = TestNamespace::new("leader");
    let c = client().await;
    let leases: Api<Lease> =
        Api::namespaced(c.clone(), substratus_tests::operator::OPERATOR_NAMESPACE);
    let a = start("replica-a", &ns.name);
    let b = start("replica-b", &ns.name);

    let leader = wait_for("a leader", Duration::from_secs(30), || async {
        Ok(holder(&leases, &ns.name)
            .await
            .filter(|h| h == "replica-a" || h == "replica-b"))
    })
    .await;
    let (leader, follower) = if leader == a.name { (a, b) } else { (b, a) };
    wait_for(
        "the leader to be ready",
        Duration::from_secs(30),
        || async { Ok(ready(&leader).filter(|r| *r).map(|_| ())) },
    )
    .await;
    // The follower is ready (a standby that can take over: `helm install --wait` and rolling
    // updates need every replica ready), yet reconciles nothing while the leader lives.
    wait_for(
        "the follower to be ready",
        Duration::from_secs(30),
        || async { Ok(ready(&follower).filter(|r| *r).map(|_| ())) },
    )
    .await;
    dataset_ready(&c, &ns.name, "before").await;
    assert!(
        reconciles(&leader).is_some_and(|n| n > 0.0),
        "the leader reconciled nothing"
    );
    assert_eq!(reconciles(&follower), Some(0.0), "the follower reconciled");

    let killed_at = Instant::now();
    let mut leader = leader;
    leader.child.kill().unwrap();
    let _ = leader.child.wait();
    wait_for(
        "the follower to take the Lease",
        Duration::from_secs(30),
        || async {
            Ok(holder(&leases, &ns.name)
                .await
                .filter(|h| h == follower.name)
                .map(|_| ()))
        },
    )
    .await;
    wait_for(
        "the new leader to be ready",
        Duration::from_secs(30),
        || async { Ok(ready(&follower).filter(|r| *r).map(|_| ())) },
    )
    .await;
    eprintln!(
        "takeover after the leader's SIGKILL: {:?} (lease 4s)",
        killed_at.elapsed()
    );
    dataset_ready(&c, &ns.name, "after").await;
}
