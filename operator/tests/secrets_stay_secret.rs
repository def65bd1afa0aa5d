//! Secrets stay secret: the operator binary runs at the most verbose log level through a
//! notebook and an upload build; its logs, the objects' status and the Events never hold the
//! notebook token, the storage secret key, the operator's own bearer token or a signed URL's
//! signature.

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::core::DynamicObject;
use serde_json::json;
use substratus_devcluster::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use substratus_tests::cluster::{TestNamespace, client, shared, wait_for};
use substratus_tests::objects::api_resource;
use substratus_tests::operator::operator_kubeconfig;

fn port() -> u16 {
    substratus_devcluster::ports::free_loopback_port().unwrap()
}

struct Operator(std::process::Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn tokens_keys_and_signatures_appear_in_no_log_status_or_event() {
    let ns = TestNamespace::new("secrets");
    let c = client().await;
    let s3 = S3Server::start(&shared().bin_dir, "substratus-artifacts").unwrap();
    let log_path = std::env::temp_dir().join(format!("operator-secrets-{}.log", ns.name));
    let log = std::fs::File::create(&log_path).unwrap();
    let operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_substratus-operator"))
            .arg("run")
            .env("KUBECONFIG", operator_kubeconfig())
            .env("RUST_LOG", "trace")
            .env("CLOUD", "kind")
            .env("CLUSTER_NAME", "test")
            .env("S3_ENDPOINT", s3.endpoint())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("WATCH_NAMESPACE", &ns.name)
            .env("METRICS_BIND_ADDRESS", format!("127.0.0.1:{}", port()))
            .env("HEALTH_PROBE_BIND_ADDRESS", format!("127.0.0.1:{}", port()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the operator binary"),
    );

    let nb: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Notebook", "metadata": {"name": "nb"},
        "spec": {"image": "jupyter"}
    }))
    .unwrap();
    let notebooks =
        Api::<DynamicObject>::namespaced_with(c.clone(), &ns.name, &api_resource("Notebook"));
    notebooks.create(&PostParams::default(), &nb).await.unwrap();
    let model: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Model", "metadata": {"name": "m"},
        "spec": {"build": {"upload": {"md5Checksum": "0123456789abcdef0123456789abcdef", "requestID": "r1"}}}
    }))
    .unwrap();
    let models = Api::<DynamicObject>::namespaced_with(c.clone(), &ns.name, &api_resource("Model"));
    models.create(&PostParams::default(), &model).await.unwrap();

    wait_for("the notebook Ready", Duration::from_secs(60), || async {
        let o = notebooks.get("nb").await.map_err(|e| e.to_string())?;
        Ok((o.data["status"]["ready"] == true).then_some(()))
    })
    .await;
    let url = wait_for("a signed URL", Duration::from_secs(60), || async {
        let o = models.get("m").await.map_err(|e| e.to_string())?;
        Ok(o.data["status"]["buildUpload"]["signedURL"]
            .as_str()
            .map(str::to_owned))
    })
    .await;
    // Let the operator log whatever it logs after that.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(operator);

    let token = {
        let s = Api::<Secret>::namespaced(c.clone(), &ns.name)
            .get("nb-notebook-token")
            .await
            .unwrap();
        String::from_utf8(s.data.unwrap()["token"].0.clone()).unwrap()
    };
    let signature = url
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("X-Amz-Signature="))
        .expect("a SigV4 signature in the URL")
        .to_owned();
    let bearer = {
        let kc: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(operator_kubeconfig()).unwrap())
                .unwrap();
        kc["users"][0]["user"]["token"].as_str().unwrap().to_owned()
    };
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.lines().count() > 50,
        "trace logging produced {} lines",
        logs.lines().count()
    );
    for (what, secret) in [
        ("the notebook token", token.as_str()),
        ("the storage secret key", SECRET_KEY),
        ("the operator's bearer token", bearer.as_str()),
        ("a signed URL's signature", signature.as_str()),
    ] {
        assert!(
            !logs.contains(secret),
            "{what} is in the operator's logs ({})",
            log_path.display()
        );
    }

    let nb = notebooks.get("nb").await.unwrap();
    let status = nb.data["status"].to_string();
    assert!(
        !status.contains(&token),
        "the token is in the Notebook's status"
    );
    assert_eq!(nb.data["status"]["tokenSecret"], "nb-notebook-token");
    let events = Api::<Event>::namespaced(c.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(!events.items.is_empty(), "Events were published");
    for e in &events.items {
        let text = serde_json::to_string(e).unwrap();
        assert!(!text.contains(&token), "the token is in an Event: {text}");
        assert!(
            !text.contains(&signature),
            "a signed URL is in an Event: {text}"
        );
    }
    let _ = std::fs::remove_file(&log_path);
}
