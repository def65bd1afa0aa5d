//! Every manifest of the test corpus (the shapes of the original project's examples), and
//! every example of ours, reads into the Rust types without losing a field.

use std::path::Path;

use serde_json::Value;
use substratus_crds::{AnyObject, GpuType};
use substratus_tests::manifests::{corpus_dir, documents, lost_fields, repo_root, yaml_files};

/// Files of the corpus that use the legacy `modelName` field.
const LEGACY_MODEL_NAME: [&str; 2] = [
    "notebooks/legacy-model-name.yaml",
    "servers/legacy-model-name.yaml",
];

fn read_all(dir: &Path) -> Vec<(String, Value, AnyObject)> {
    let files = yaml_files(dir);
    assert!(
        !files.is_empty(),
        "no manifests found under {}",
        dir.display()
    );
    let mut out = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(dir)
            .unwrap_or(&file)
            .display()
            .to_string();
        for doc in documents(&file).unwrap_or_else(|e| panic!("{e}")) {
            let obj = AnyObject::from_value(doc.clone())
                .unwrap_or_else(|e| panic!("{rel} does not read as substratus.ai/v1: {e}"));
            out.push((rel.clone(), doc, obj));
        }
    }
    out
}

fn assert_round_trip_keeps_every_field(objects: &[(String, Value, AnyObject)]) {
    for (rel, original, obj) in objects {
        let lost = lost_fields(original, &obj.to_value());
        assert!(lost.is_empty(), "{rel}: the types lost or changed {lost:?}");
    }
}

#[test]
fn every_corpus_manifest_reads_into_the_types_without_loss() {
    let dir = corpus_dir();
    let objects = read_all(&dir);
    // Each of the corpus's 19 files holds one object.
    assert_eq!(
        objects.len(),
        19,
        "unexpected number of corpus manifests in {}",
        dir.display()
    );
    assert_round_trip_keeps_every_field(&objects);
}

#[test]
fn legacy_model_name_is_an_alias_of_model_name() {
    let dir = corpus_dir();
    for rel in LEGACY_MODEL_NAME {
        let docs = documents(&dir.join(rel)).unwrap();
        assert!(
            docs[0]["spec"].get("modelName").is_some(),
            "{rel} uses modelName"
        );
        let model = match AnyObject::from_value(docs[0].clone()).unwrap() {
            AnyObject::Server(s) => s.spec.model_name().map(str::to_owned),
            AnyObject::Notebook(n) => n.spec.model_name().map(str::to_owned),
            other => panic!("{rel}: unexpected kind {}", other.kind()),
        };
        assert_eq!(model.as_deref(), Some("tiny-lm-howtos"), "{rel}");
    }
}

#[test]
fn corpus_fields_keep_their_meaning() {
    let dir = corpus_dir();
    let objects = read_all(&dir);
    let find = |rel: &str| {
        objects
            .iter()
            .find(|(r, _, _)| r == rel)
            .map(|(_, _, o)| o.clone())
            .unwrap_or_else(|| panic!("{rel} missing"))
    };
    let param = |params: &substratus_crds::Params, key: &str| {
        serde_json::to_value(params.get(key).unwrap_or_else(|| panic!("no param {key}"))).unwrap()
    };
    match find("fine-tunes/four-gpus.yaml") {
        AnyObject::Model(m) => {
            let r = m.spec.resources.clone().unwrap();
            let gpu = r.gpu.clone().unwrap();
            assert_eq!(gpu.gpu_type, Some(GpuType::NvidiaL4));
            assert_eq!(gpu.count(), 4);
            assert_eq!((r.cpu, r.memory, r.disk), (4, 32, 50));
            assert_eq!(m.spec.model.unwrap().name, "gated-lm");
            assert_eq!(m.spec.dataset.unwrap().name, "trivia");
        }
        other => panic!("expected a Model, got {}", other.kind()),
    }
    match find("servers/any-gpu.yaml") {
        AnyObject::Server(s) => {
            let r = s.spec.resources.unwrap();
            let gpu = r.gpu.unwrap();
            // A count without a type asks for any GPU.
            assert_eq!((gpu.gpu_type, gpu.count()), (None, 1));
            // Defaults of the original's CRD apply when `resources` is present.
            assert_eq!((r.cpu, r.memory, r.disk), (2, 10, 10));
        }
        other => panic!("expected a Server, got {}", other.kind()),
    }
    match find("imports/gated.yaml") {
        AnyObject::Model(m) => assert_eq!(
            m.spec.env.get("HUGGING_FACE_HUB_TOKEN").map(String::as_str),
            Some("${{ secrets.hub-credentials.HUB_TOKEN }}")
        ),
        other => panic!("expected a Model, got {}", other.kind()),
    }
    match find("fine-tunes/custom-prompt.yaml") {
        AnyObject::Model(m) => {
            let p = &m.spec.params;
            assert_eq!(param(p, "num_train_epochs"), 3);
            assert_eq!(param(p, "learning_rate"), "2e-4");
            // The block scalar keeps its lines and its blank line.
            assert_eq!(
                param(p, "prompt_template"),
                "### Instruction:\n{prompt}\n\n### Response:\n{completion}\n"
            );
        }
        other => panic!("expected a Model, got {}", other.kind()),
    }
    match find("notebooks/gitops-suspended.yaml") {
        AnyObject::Notebook(n) => {
            assert!(n.spec.is_suspended());
            assert_eq!(n.spec.command, vec!["notebook.sh"]);
            let git = n.spec.build.unwrap().git.unwrap();
            assert_eq!(git.path.as_deref(), Some("explore"));
            assert_eq!(param(&n.spec.params, "max_new_tokens"), 256);
            assert_eq!(param(&n.spec.params, "topic"), "kubernetes");
        }
        other => panic!("expected a Notebook, got {}", other.kind()),
    }
    match find("datasets/gitops.yaml") {
        AnyObject::Dataset(d) => {
            assert_eq!(
                d.spec.build.unwrap().git.unwrap().branch.as_deref(),
                Some("nightly")
            )
        }
        other => panic!("expected a Dataset, got {}", other.kind()),
    }
    match find("fine-tunes/gitops.yaml") {
        AnyObject::Model(m) => {
            assert_eq!(
                m.spec.build.unwrap().git.unwrap().tag.as_deref(),
                Some("v1.2.0")
            )
        }
        other => panic!("expected a Model, got {}", other.kind()),
    }
}

#[test]
fn repository_examples_read_without_loss() {
    let objects = read_all(&repo_root().join("examples"));
    assert_round_trip_keeps_every_field(&objects);
    let server = objects
        .iter()
        .find_map(|(rel, _, o)| match o {
            AnyObject::Server(s) if rel == "falcon-40b/server.yaml" => Some(s.clone()),
            _ => None,
        })
        .expect("examples/falcon-40b/server.yaml is a Server");
    assert_eq!(server.spec.model_name(), Some("falcon-40b"));
    let gpu = server.spec.resources.unwrap().gpu.unwrap();
    assert_eq!((gpu.gpu_type, gpu.count()), (Some(GpuType::NvidiaL4), 4));
}

#[test]
fn a_manifest_of_another_api_is_refused_with_the_field_named() {
    let err = AnyObject::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Pod"}))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("apiVersion:"), "{err}");
    let err =
        AnyObject::from_value(serde_json::json!({"apiVersion": "substratus.ai/v1", "kind": "Job"}))
            .unwrap_err()
            .to_string();
    assert!(err.starts_with("kind:"), "{err}");
    let err = AnyObject::from_value(serde_json::json!({
        "apiVersion": "substratus.ai/v1", "kind": "Model",
        "metadata": {"name": "m"},
        "spec": {"resources": {"gpu": {"type": "nvidia-v100", "count": 1}}}
    }))
    .unwrap_err()
    .to_string();
    assert!(err.contains("nvidia-v100"), "{err}");
}
