//! The whole test corpus (`tests/corpus/`) in one namespace with the operator running on the
//! GKE profile: every shape the original project's examples used becomes Ready (or
//! Suspended, as asked), and what the shapes carry reaches the workloads.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use substratus_tests::cluster::{TestNamespace, client};
use substratus_tests::manifests::{corpus_dir, documents, yaml_files};
use substratus_tests::objects::{create, wait_ready, wait_reason};
use substratus_tests::operator::{RunningOperator, kind_cloud};

/// The params.json an object's workload reads.
async fn params_json(c: &kube::Client, ns: &str, config_map: &str) -> Value {
    let cm = Api::<ConfigMap>::namespaced(c.clone(), ns)
        .get(config_map)
        .await
        .unwrap_or_else(|e| panic!("ConfigMap {config_map}: {e}"));
    serde_json::from_str(&cm.data.unwrap()["params.json"]).unwrap()
}

#[tokio::test]
async fn every_corpus_shape_runs_on_the_gke_profile() {
    let ns = TestNamespace::new("corpus");
    let c = client().await;
    let op = RunningOperator::start(&ns.name, kind_cloud("gcp")).await;

    // The Secret the gated import reads its token from.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "hub-credentials"},
        "stringData": {"HUB_TOKEN": "t0ken"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(c.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let mut objects = Vec::new();
    for file in yaml_files(&corpus_dir()) {
        for doc in documents(&file).unwrap() {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
            let suspended = doc["spec"]["suspend"] == json!(true);
            create(&c, &ns.name, doc).await;
            objects.push((kind, name, suspended));
        }
    }
    assert_eq!(objects.len(), 19, "{objects:?}");
    for (kind, name, suspended) in &objects {
        if *suspended {
            wait_reason(&c, &ns.name, kind, name, "Suspended").await;
        } else {
            wait_ready(&c, &ns.name, kind, name).await;
        }
    }

    // The token reaches the loader from the Secret, never as a literal.
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    let loader = jobs.get("gated-lm-modeller").await.unwrap();
    let env = loader.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let token = env
        .iter()
        .find(|e| e.name == "HUGGING_FACE_HUB_TOKEN")
        .expect("the token's variable");
    assert_eq!(token.value, None);
    let key = token
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("a secretKeyRef");
    assert_eq!(
        (key.name.as_str(), key.key.as_str()),
        ("hub-credentials", "HUB_TOKEN")
    );

    // Multi-line and string-typed params arrive in params.json as written.
    let tune = params_json(&c, &ns.name, "tiny-lm-howtos-model-params").await;
    assert_eq!(
        tune,
        json!({
            "learning_rate": "2e-4",
            "num_train_epochs": 3,
            "prompt_template": "### Instruction:\n{prompt}\n\n### Response:\n{completion}\n",
            "save_steps": 10,
            "target_modules": "q_proj,v_proj",
        })
    );
    let urls = params_json(&c, &ns.name, "cluster-howtos-dataset-params").await;
    assert_eq!(
        urls["urls"],
        "https://example.com/howtos/part-1.jsonl,https://example.com/howtos/part-2.jsonl"
    );
    op.stop().await;
}
