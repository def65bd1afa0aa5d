//! `sub`'s kubectl habits against the real API server: every KUBECONFIG file merged and
//! `--context`, `get -o json|yaml|wide`, `-A`, `--watch`, shell completions, one-line errors
//! and exit codes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kube::api::PostParams;
use kube::core::DynamicObject;
use serde_json::{Value, json};
use substratus_cli::manifest::Kind;
use substratus_cli::objects;
use substratus_tests::cluster::{TestNamespace, client, shared};

fn sub(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sub"))
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn model(c: &kube::Client, ns: &str, name: &str) {
    let m: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "substratus.ai/v1", "kind": "Model",
        "metadata": {"name": name}, "spec": {"image": "loader"}
    }))
    .unwrap();
    objects::api(c, Kind::Model, ns)
        .create(&PostParams::default(), &m)
        .await
        .unwrap();
}

#[tokio::test]
async fn get_prints_json_yaml_wide_and_all_namespaces_like_kubectl() {
    let ns = TestNamespace::new("subget");
    let c = client().await;
    model(&c, &ns.name, "m1").await;
    model(&c, &ns.name, "m2").await;
    let kc = shared().kubeconfig.clone();

    let out = sub(&kc, &["get", "models", "-n", &ns.name, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["m1", "m2"]);
    assert_eq!(list["items"][0]["kind"], "Model");
    assert!(list["items"][0]["metadata"].get("managedFields").is_none());

    let out = sub(&kc, &["get", "models/m1", "-n", &ns.name, "-o", "yaml"]);
    let one: Value = serde_saphyr::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (one["kind"].as_str(), one["spec"]["image"].as_str()),
        (Some("Model"), Some("loader"))
    );

    let out = sub(&kc, &["get", "models", "-n", &ns.name, "-o", "wide"]);
    let table = text(&out.stdout);
    assert!(
        table.lines().next().unwrap().ends_with("MESSAGE"),
        "{table}"
    );

    let out = sub(&kc, &["get", "models", "-A"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&ns.name) && l.contains("m2")),
        "{table}"
    );
}

#[tokio::test]
async fn get_watch_prints_each_change() {
    let ns = TestNamespace::new("subwatch");
    let c = client().await;
    model(&c, &ns.name, "first").await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sub"))
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(&shared().kubeconfig)
        .args(["get", "models", "-n", &ns.name, "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut created = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
        if !created && lines.iter().any(|l| l.contains("first")) {
            model(&c, &ns.name, "second").await;
            created = true;
        }
        if lines.iter().any(|l| l.contains("second")) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines[0].starts_with("KIND"), "{lines:?}");
    assert_eq!(
        lines.iter().filter(|l| l.contains("first")).count(),
        1,
        "listed once: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("second")),
        "the new Model was printed: {lines:?}"
    );
}

#[tokio::test]
async fn every_kubeconfig_file_is_merged_and_context_chooses_among_them() {
    let ns = TestNamespace::new("subctx");
    let c = client().await;
    model(&c, &ns.name, "here").await;
    let dir = tempfile::tempdir().unwrap();
    // The first file's current context points at a closed port; the real cluster's context
    // comes from the second file.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::write(
        &elsewhere,
        serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "elsewhere",
            "clusters": [{"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}}],
            "users": [{"name": "nobody", "user": {"token": "x"}}],
            "contexts": [{"name": "elsewhere", "context": {"cluster": "nowhere", "user": "nobody"}}]
        }))
        .unwrap(),
    )
    .unwrap();
    let real: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&shared().kubeconfig).unwrap()).unwrap();
    let context = real["current-context"].as_str().unwrap().to_owned();
    let merged =
        std::env::join_paths([elsewhere.as_path(), shared().kubeconfig.as_path()]).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sub"))
            .env("KUBECONFIG", &merged)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--context", &context, "get", "models", "-n", &ns.name]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("here"));
    // The current context (of the first file) is used without --context: its cluster is
    // unreachable, and the error says so on one line.
    let out = run(&["get", "models", "-n", &ns.name]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    let out = run(&["--context", "no-such-context", "get", "models"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no-such-context"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn errors_are_one_line_with_exit_codes_and_completions_are_printed() {
    let ns = TestNamespace::new("suberr");
    let kc = shared().kubeconfig.clone();
    let out = sub(&kc, &["get", "models/missing", "-n", &ns.name]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(
        err.trim_end(),
        "Error from server (NotFound): models.substratus.ai \"missing\" not found"
    );
    let out = sub(&kc, &["-v", "get", "models/missing", "-n", &ns.name]);
    let err = text(&out.stderr);
    assert!(
        err.lines().count() > 1 && !err.contains("Status {"),
        "{err}"
    );
    // A usage error: exit code 2.
    assert_eq!(sub(&kc, &["get", "--no-such-flag"]).status.code(), Some(2));
    assert_eq!(sub(&kc, &["get", "-o", "toml"]).status.code(), Some(2));
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef sub"),
        ("fish", "complete -c sub"),
    ] {
        let out = sub(&kc, &["completion", shell]);
        assert!(out.status.success());
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script:.200}");
        assert!(
            script.contains("notebook"),
            "{shell} completes the subcommands"
        );
    }
}
