//! `sub notebook` in a real terminal (tmux): wait for Ready, the port-forward through the API
//! server with the token from the Notebook's Secret, files changed in the notebook synced to
//! the local directory, and the exit prompt. `sub serve` with its stdin: forward, then quit
//! and delete.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use substratus_cli::manifest::Kind;
use substratus_cli::objects;
use substratus_tests::cluster::{TestNamespace, client, shared, wait_for};
use substratus_tests::kubelet;
use substratus_tests::operator::{RunningOperator, kind_cloud};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

/// A stand-in for Jupyter (or a model server): answers every request with `body` and keeps
/// the request lines it saw.
async fn stand_in(body: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                log.lock()
                    .unwrap()
                    .push(req.lines().next().unwrap_or("").to_owned());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

fn free_port() -> u16 {
    substratus_devcluster::ports::free_loopback_port().unwrap()
}

async fn get(url: &str) -> Result<String, String> {
    let res = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    res.text().await.map_err(|e| e.to_string())
}

struct Tmux(String);

impl Tmux {
    fn start(name: &str, cmd: &str) -> Tmux {
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "220",
                "-y",
                "50",
                cmd,
            ])
            .status()
            .expect("tmux")
            .success();
        assert!(ok, "starting tmux");
        Tmux(name.to_owned())
    }
    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-J", "-S", "-200", "-t", &self.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.0];
        args.extend(keys);
        assert!(Command::new("tmux").args(&args).status().unwrap().success());
    }
    async fn wait_for_text(&self, text: &str) -> String {
        wait_for(&format!("{text:?} on the terminal"), WAIT, || async {
            let s = self.screen();
            if s.contains(text) {
                Ok(Some(s))
            } else {
                Err(s)
            }
        })
        .await
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

fn write(dir: &Path, rel: &str, body: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

#[tokio::test]
async fn sub_notebook_forwards_with_the_token_syncs_files_and_suspends_on_exit() {
    let ns = TestNamespace::new("sub-nb");
    let c = client().await;
    let _op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    let project = tempfile::tempdir().unwrap();
    write(
        project.path(),
        "notebook.yaml",
        "apiVersion: substratus.ai/v1\nkind: Notebook\nmetadata:\n  name: nb\nspec:\n  image: jupyter/minimal-notebook\n",
    );
    // The pod's /content, as exec sees it.
    let content = tempfile::tempdir().unwrap();
    write(content.path(), "existing.py", "x = 1\n");
    let (jupyter, seen) = stand_in("jupyter").await;
    let port = free_port();

    let cmd = format!(
        "{} --kubeconfig {} -n {} notebook {} --no-open-browser --port {port}; sleep 60",
        env!("CARGO_BIN_EXE_sub"),
        shared().kubeconfig.display(),
        ns.name,
        project.path().display()
    );
    let term = Tmux::start(&format!("{}-nb", ns.name), &cmd);

    // The simulated pod's Jupyter and shell are the stand-ins.
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    wait_for("the notebook pod", WAIT, || async {
        Ok(pods
            .get_opt("nb-notebook")
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ()))
    })
    .await;
    kubelet::serve_port(&c, &ns.name, "nb-notebook", 8888, jupyter).await;
    // The notebook image is busybox-like: no GNU find, stat or tar.
    let _applets = kubelet::serve_exec_busybox(&c, &ns.name, "nb-notebook", content.path()).await;

    let screen = term.wait_for_text("?token=").await;
    let url = screen
        .split_whitespace()
        .find(|w| w.starts_with("http://localhost:"))
        .expect("a URL")
        .to_owned();
    let secret = Api::<Secret>::namespaced(c.clone(), &ns.name)
        .get("nb-notebook-token")
        .await
        .unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    assert!(url.ends_with(&format!("?token={token}")), "{url}");
    let body = wait_for("Jupyter through the forward", WAIT, || async {
        get(&url.replace("localhost", "127.0.0.1")).await.map(Some)
    })
    .await;
    assert_eq!(body, "jupyter");
    assert!(
        seen.lock().unwrap().iter().any(|l| l.contains(&token)),
        "{seen:?}"
    );

    // A file saved in the notebook comes down; the ones there at start are left alone.
    term.wait_for_text("syncing files").await;
    write(content.path(), "analysis/report.ipynb", "{\"cells\": []}");
    write(
        content.path(),
        "data/huge.bin",
        "mounted data is not synced",
    );
    let local = project.path().join("analysis/report.ipynb");
    wait_for("the saved notebook synced down", WAIT, || async {
        Ok(std::fs::read_to_string(&local)
            .ok()
            .filter(|s| s.contains("cells"))
            .map(|_| ()))
    })
    .await;
    assert!(!project.path().join("data").exists());
    assert!(!project.path().join("existing.py").exists());

    // Quit, and choose to suspend at the prompt.
    term.keys(&["q", "Enter"]);
    term.wait_for_text("[s]uspend, [d]elete or [k]eep").await;
    term.keys(&["s", "Enter"]);
    term.wait_for_text("suspended").await;
    let nb = objects::api(&c, Kind::Notebook, &ns.name)
        .get("nb")
        .await
        .unwrap();
    assert_eq!(nb.data["spec"]["suspend"], true);
}

#[tokio::test]
async fn sub_serve_forwards_to_a_ready_server_and_deletes_it_on_exit() {
    let ns = TestNamespace::new("sub-srv");
    let c = client().await;
    let _op = RunningOperator::start(&ns.name, kind_cloud("kind")).await;
    let project = tempfile::tempdir().unwrap();
    write(
        project.path(),
        "base.yaml",
        "apiVersion: substratus.ai/v1\nkind: Model\nmetadata:\n  name: base\nspec:\n  image: loader\n",
    );
    write(
        project.path(),
        "server.yaml",
        "apiVersion: substratus.ai/v1\nkind: Server\nmetadata:\n  name: srv\nspec:\n  image: server\n  model:\n    name: base\n",
    );
    let (server, _) = stand_in("completions").await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sub"))
        .arg("--kubeconfig")
        .arg(&shared().kubeconfig)
        .args([
            "-n",
            &ns.name,
            "serve",
            "--no-open-browser",
            "--on-exit",
            "delete",
        ])
        .args(["--port", &port.to_string()])
        .arg(project.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The Model the Server needs (sub serve applies only the Server).
    substratus_cli::commands::apply(
        &substratus_cli::client::Cluster {
            client: c.clone(),
            context_namespace: ns.name.clone(),
            flag_namespace: None,
        },
        project.path().join("base.yaml").to_str().unwrap(),
        true,
    )
    .await
    .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push(l);
            }
        })
    };
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let pod = wait_for("a server pod", WAIT, || async {
        let l = pods
            .list(&ListParams::default().labels("server=srv,role=run"))
            .await
            .map_err(|e| e.to_string())?;
        Ok(l.items.first().and_then(|p| p.metadata.name.clone()))
    })
    .await;
    kubelet::serve_port(&c, &ns.name, &pod, 8080, server).await;
    wait_for("the forward's URL", WAIT, || async {
        let l = lines.lock().unwrap();
        if l.iter()
            .any(|l| l.contains(&format!("http://localhost:{port}/")))
        {
            Ok(Some(()))
        } else {
            Err(l.join("\n"))
        }
    })
    .await;
    let body = wait_for("the server through the forward", WAIT, || async {
        get(&format!("http://127.0.0.1:{port}/")).await.map(Some)
    })
    .await;
    assert_eq!(body, "completions");
    writeln!(child.stdin.as_mut().unwrap(), "q").unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    reader.join().unwrap();
    let out = lines.lock().unwrap().join("\n");
    assert!(status.success(), "{out}");
    assert!(out.contains("Server srv deleted"), "{out}");
    let api = objects::api(&c, Kind::Server, &ns.name);
    wait_for("the Server gone", WAIT, || async {
        Ok(api
            .get_opt("srv")
            .await
            .map_err(|e| e.to_string())?
            .is_none()
            .then_some(()))
    })
    .await;
}
