//! The commands of `sub` (and of the kubectl plugins, which reuse them).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::client::Cluster;
use crate::manifest::{self, Kind};
use crate::objects::{self, Outcome};
use crate::{archive, logs, portforward, sync};

/// What to do with a Notebook or Server when the user leaves.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExit {
    /// Ask (when attached to a terminal; otherwise suspend notebooks, keep servers).
    Ask,
    Suspend,
    Delete,
    Keep,
}

/// `sub apply -f FILE|DIR|URL`: server-side apply of every document, in order.
pub async fn apply(cluster: &Cluster, source: &str, force: bool) -> Result<()> {
    let docs = manifest::read(source).await?;
    if docs.is_empty() {
        bail!("{source}: no manifests found");
    }
    let mut failed = 0;
    for doc in docs {
        let what = format!(
            "{}/{}",
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
        match apply_one(cluster, doc, force).await {
            Ok(ns) => eprintln!("✓ {what} applied in {ns}"),
            Err(e) => {
                failed += 1;
                eprintln!("✗ {what}: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} object(s) not applied");
    }
    Ok(())
}

async fn apply_one(cluster: &Cluster, mut doc: Value, force: bool) -> Result<String> {
    let (group, version) = match doc["apiVersion"].as_str() {
        Some(av) => match av.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), av.to_owned()),
        },
        None => bail!("no apiVersion"),
    };
    let kind = doc["kind"].as_str().context("no kind")?.to_owned();
    let gvk = GroupVersionKind::gvk(&group, &version, &kind);
    let (ar, caps) = kube::discovery::pinned_kind(&cluster.client, &gvk)
        .await
        .with_context(|| {
            format!(
                "{av} {kind} is not served by this cluster",
                av = doc["apiVersion"]
            )
        })?;
    let name = manifest::name_of(&doc)?;
    let mut params = PatchParams::apply(objects::FIELD_MANAGER);
    params.force = force;
    let ns = if caps.scope == kube::discovery::Scope::Namespaced {
        let ns = cluster.namespace_for(doc["metadata"]["namespace"].as_str())?;
        doc["metadata"]["namespace"] = json!(ns);
        let api: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), &ns, &ar);
        api.patch(&name, &params, &Patch::Apply(&doc)).await?;
        ns
    } else {
        let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &ar);
        api.patch(&name, &params, &Patch::Apply(&doc)).await?;
        "the cluster".into()
    };
    Ok(ns)
}

/// Options of `sub run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Build context: a directory with a Dockerfile (and the manifests, unless -f).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Manifest file or directory (default: the context directory's *.yaml).
    #[arg(short = 'f', long)]
    pub file: Option<String>,
    /// Create `<name>-<N>`, N one more than the highest existing.
    #[arg(short = 'i', long, conflicts_with = "replace")]
    pub increment: bool,
    /// Delete an existing object of the same name first.
    #[arg(short = 'r', long)]
    pub replace: bool,
    /// Give up waiting after this long (e.g. 30m, 90s).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Do not follow the logs of the build and run pods.
    #[arg(long)]
    pub no_logs: bool,
}

/// `30m`, `90s`, `2h`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30m or 90s"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    })
}

/// Packs `dir` into a temporary file.
pub fn pack(dir: &Path) -> Result<(tempfile::TempDir, archive::Archive)> {
    let tmp = tempfile::Builder::new()
        .prefix("substratus-upload")
        .tempdir()
        .context("creating a temporary directory")?;
    let started = std::time::Instant::now();
    let a = archive::pack(dir, &tmp.path().join("context.tar.gz"))?;
    eprintln!(
        "✓ packed {} ({} entries, {} bytes, md5 {}) in {:.1?}",
        dir.display(),
        a.entries,
        a.size,
        a.md5_hex,
        started.elapsed()
    );
    Ok((tmp, a))
}

async fn next_increment(api: &Api<DynamicObject>, base: &str) -> Result<String> {
    let list = api.list(&ListParams::default()).await?;
    let prefix = format!("{base}-");
    let max = list
        .items
        .iter()
        .filter_map(|o| {
            o.metadata
                .name
                .as_deref()?
                .strip_prefix(&prefix)?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    Ok(format!("{base}-{}", max + 1))
}

async fn wait_gone(api: &Api<DynamicObject>, name: &str) -> Result<()> {
    for _ in 0..600 {
        if api.get_opt(name).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{name} still exists after 120s")
}

/// Applies `obj` (of `kind`) as an upload build of `dir`, uploads, and returns its name.
pub async fn apply_with_upload(
    cluster: &Cluster,
    kind: Kind,
    mut obj: Value,
    dir: &Path,
    force: bool,
    timeout: Duration,
) -> Result<(Api<DynamicObject>, String)> {
    let ns = cluster.namespace_for(obj["metadata"]["namespace"].as_str())?;
    obj["metadata"]["namespace"] = json!(ns);
    let name = manifest::name_of(&obj)?;
    let (_tmp, archive) = pack(dir)?;
    let request = objects::request_id();
    objects::set_upload(&mut obj, &archive.md5_hex, &request);
    let api = objects::api(&cluster.client, kind, &ns);
    objects::apply(&api, &obj, force).await?;
    eprintln!("✓ {} {name} applied in {ns}", kind.name());
    objects::upload(&api, &name, &archive, request, timeout).await?;
    Ok((api, name))
}

/// `sub run [DIR]`: build a Model (or Dataset) from DIR and run it until Ready.
pub async fn run(cluster: &Cluster, args: &RunArgs) -> Result<()> {
    let source = args
        .file
        .clone()
        .unwrap_or_else(|| args.dir.display().to_string());
    let docs = manifest::read(&source).await?;
    let (kind, mut obj) = manifest::pick(&docs, &[Kind::Model, Kind::Dataset])
        .with_context(|| format!("{source}: no Model or Dataset manifest"))?;
    let ns = cluster.namespace_for(obj["metadata"]["namespace"].as_str())?;
    let api = objects::api(&cluster.client, kind, &ns);
    let mut name = manifest::name_of(&obj)?;
    if args.increment {
        name = next_increment(&api, &name).await?;
        obj["metadata"]["name"] = json!(name);
    } else if args.replace && api.get_opt(&name).await?.is_some() {
        objects::delete(&api, kind, &name).await?;
        wait_gone(&api, &name).await?;
        eprintln!("✓ deleted the earlier {} {name}", kind.name());
    }
    let (api, name) = apply_with_upload(
        cluster,
        kind,
        obj,
        &args.dir,
        true,
        Duration::from_secs(120),
    )
    .await?;
    let follower =
        (!args.no_logs).then(|| logs::follow(cluster.client.clone(), ns, kind, name.clone()));
    let outcome = objects::wait(&api, kind, &name, args.timeout).await;
    if let Some(f) = follower {
        f.finish().await;
    }
    match outcome? {
        Outcome::Ready => Ok(()),
        Outcome::Failed { reason, message } => {
            bail!("{} {name} failed: {reason}: {message}", kind.name())
        }
    }
}

/// `sub delete KIND/NAME`.
pub async fn delete(cluster: &Cluster, target: &str) -> Result<()> {
    let (kind, name) = manifest::parse_scope(target)?;
    let name = name.with_context(|| format!("{target}: name the object as KIND/NAME"))?;
    let ns = cluster.namespace_for(None)?;
    objects::delete(&objects::api(&cluster.client, kind, &ns), kind, &name).await?;
    eprintln!("✓ {} {name} deleted from {ns}", kind.name());
    Ok(())
}

/// A Notebook for working on `obj` (a Model, Dataset or Server): `<name>-<kind>`, with its
/// image, env, params, resources and references.
pub fn notebook_for(kind: Kind, obj: &Value) -> Result<Value> {
    let name = manifest::name_of(obj)?;
    let spec = &obj["spec"];
    let mut nb = json!({
        "apiVersion": substratus_crds::API_VERSION,
        "kind": "Notebook",
        "metadata": {"name": format!("{name}-{}", kind.lower())},
        "spec": {},
    });
    if let Some(ns) = obj["metadata"]["namespace"].as_str() {
        nb["metadata"]["namespace"] = json!(ns);
    }
    for field in [
        "image",
        "build",
        "env",
        "params",
        "resources",
        "model",
        "dataset",
    ] {
        if let Some(v) = spec.get(field).filter(|v| !v.is_null()) {
            nb["spec"][field] = v.clone();
        }
    }
    Ok(nb)
}

/// Options of `sub notebook`.
#[derive(clap::Args, Debug, Clone)]
pub struct NotebookArgs {
    /// Directory with the manifests (and a Dockerfile to build from, if any).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Manifest file or directory (default: DIR's *.yaml).
    #[arg(short = 'f', long)]
    pub file: Option<String>,
    /// Do not open a browser; print the URL.
    #[arg(long)]
    pub no_open_browser: bool,
    /// Do not copy files changed in the notebook back to DIR.
    #[arg(long)]
    pub no_sync: bool,
    /// What to do with the Notebook on exit.
    #[arg(long, value_enum, default_value = "ask")]
    pub on_exit: OnExit,
    /// Local port of the notebook.
    #[arg(long, default_value_t = 8888)]
    pub port: u16,
    /// Give up waiting after this long.
    #[arg(long, default_value = "20m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// A page in `dir` that sends the browser on to `url`, readable by its owner only: the
/// browser opener gets the page's path, so a URL holding a token never shows in the process
/// list (as Jupyter's own `jpserver-*-open.html` does).
pub fn redirect_page(dir: &Path, url: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("open.html");
    let escaped = url.replace('&', "&amp;").replace('"', "&quot;");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(
        f,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url={escaped}\"></head>\
         <body><a href=\"{escaped}\">Open</a></body></html>"
    )?;
    Ok(path)
}

/// Opens `url` in a browser (through a private redirect page, kept while the returned
/// folder lives), or says where to go.
fn open_browser(url: &str, skip: bool) -> Option<tempfile::TempDir> {
    eprintln!("→ {url}");
    if skip {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("sub-open-")
        .tempdir()
        .ok()?;
    let page = redirect_page(dir.path(), url).ok()?;
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(opener)
        .arg(&page)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    Some(dir)
}

/// Waits for Ctrl-C, or `q` + Enter on stdin.
async fn wait_for_quit() {
    let stdin_quit = async {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim().eq_ignore_ascii_case("q") {
                return;
            }
        }
        // stdin closed: wait for a signal only.
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = stdin_quit => {},
    }
}

/// Resolves `Ask` by prompting on a terminal.
async fn decide(on_exit: OnExit, default: OnExit, what: &str) -> OnExit {
    if on_exit != OnExit::Ask {
        return on_exit;
    }
    if !std::io::stdin().is_terminal() {
        return default;
    }
    eprint!("{what}: [s]uspend, [d]elete or [k]eep running? ");
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(tokio::io::stdin());
    let _ = tokio::time::timeout(Duration::from_secs(60), r.read_line(&mut line)).await;
    match line.trim().chars().next() {
        Some('d' | 'D') => OnExit::Delete,
        Some('k' | 'K') => OnExit::Keep,
        Some('s' | 'S') => OnExit::Suspend,
        _ => default,
    }
}

/// The notebook's token, from the Secret its status names.
async fn notebook_token(client: &kube::Client, ns: &str, nb: &DynamicObject) -> Result<String> {
    let secret = nb.data["status"]["tokenSecret"]
        .as_str()
        .context("the Notebook's status names no token Secret")?;
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(secret)
        .await
        .with_context(|| format!("reading Secret {ns}/{secret}"))?;
    let bytes = s
        .data
        .and_then(|d| d.get("token").cloned())
        .with_context(|| format!("Secret {secret} has no key token"))?;
    String::from_utf8(bytes.0).context("the token is not UTF-8")
}

/// `sub notebook [DIR]`: open a Notebook for DIR's Notebook (or Model, Dataset, Server).
pub async fn notebook(cluster: &Cluster, args: &NotebookArgs) -> Result<()> {
    let source = args
        .file
        .clone()
        .unwrap_or_else(|| args.dir.display().to_string());
    let docs = manifest::read(&source).await?;
    let (kind, obj) = manifest::pick(
        &docs,
        &[Kind::Notebook, Kind::Model, Kind::Dataset, Kind::Server],
    )
    .with_context(|| format!("{source}: no Notebook, Model, Dataset or Server manifest"))?;
    let mut nb = if kind == Kind::Notebook {
        obj
    } else {
        notebook_for(kind, &obj)?
    };
    nb["spec"]["suspend"] = json!(false);
    let build = args.dir.join("Dockerfile").is_file();
    let (api, name) = if build {
        apply_with_upload(
            cluster,
            Kind::Notebook,
            nb,
            &args.dir,
            true,
            Duration::from_secs(120),
        )
        .await?
    } else {
        let ns = cluster.namespace_for(nb["metadata"]["namespace"].as_str())?;
        nb["metadata"]["namespace"] = json!(ns);
        let api = objects::api(&cluster.client, Kind::Notebook, &ns);
        objects::apply(&api, &nb, true).await?;
        (api, manifest::name_of(&nb)?)
    };
    let ns = api.namespace().unwrap_or("default").to_owned();
    open_notebook(cluster, &api, &ns, &name, args).await
}

/// Waits for a Notebook, forwards its port, syncs files, and handles the exit.
pub async fn open_notebook(
    cluster: &Cluster,
    api: &Api<DynamicObject>,
    ns: &str,
    name: &str,
    args: &NotebookArgs,
) -> Result<()> {
    if let Outcome::Failed { reason, message } =
        objects::wait(api, Kind::Notebook, name, args.timeout).await?
    {
        bail!("Notebook {name} failed: {reason}: {message}");
    }
    let nb = api.get(name).await?;
    let token = notebook_token(&cluster.client, ns, &nb).await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let pod = format!("{name}-notebook");
    let fwd = portforward::start(pods.clone(), &pod, args.port, 8888).await?;
    let _page = open_browser(
        &format!("http://localhost:{}/?token={token}", fwd.local.port()),
        args.no_open_browser,
    );
    let syncer = (!args.no_sync).then(|| sync::start(pods, pod.clone(), args.dir.clone()));
    eprintln!("Press q and Enter (or Ctrl-C) to stop.");
    wait_for_quit().await;
    drop(fwd);
    if let Some(s) = syncer {
        s.abort();
    }
    match decide(args.on_exit, OnExit::Suspend, &format!("Notebook {name}")).await {
        OnExit::Delete => {
            objects::delete(api, Kind::Notebook, name).await?;
            eprintln!("✓ Notebook {name} deleted");
        }
        OnExit::Keep => eprintln!("Notebook {name} keeps running"),
        OnExit::Suspend | OnExit::Ask => {
            objects::suspend(api, name, true).await?;
            eprintln!("✓ Notebook {name} suspended (sub notebook resumes it)");
        }
    }
    Ok(())
}

/// Options of `sub serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Directory with the Server manifest.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Manifest file or directory (default: DIR's *.yaml).
    #[arg(short = 'f', long)]
    pub file: Option<String>,
    /// Local port forwarded to the server's port 8080.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[arg(long)]
    pub no_open_browser: bool,
    /// What to do with the Server on exit (suspend means keep for Servers).
    #[arg(long, value_enum, default_value = "ask")]
    pub on_exit: OnExit,
    #[arg(long, default_value = "20m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `sub serve`: apply a Server, wait, and forward `localhost:8000` to it.
pub async fn serve(cluster: &Cluster, args: &ServeArgs) -> Result<()> {
    let source = args
        .file
        .clone()
        .unwrap_or_else(|| args.dir.display().to_string());
    let docs = manifest::read(&source).await?;
    let (_, mut obj) = manifest::pick(&docs, &[Kind::Server])
        .with_context(|| format!("{source}: no Server manifest"))?;
    let ns = cluster.namespace_for(obj["metadata"]["namespace"].as_str())?;
    obj["metadata"]["namespace"] = json!(ns);
    let name = manifest::name_of(&obj)?;
    let api = objects::api(&cluster.client, Kind::Server, &ns);
    objects::apply(&api, &obj, true).await?;
    eprintln!("✓ Server {name} applied in {ns}");
    if let Outcome::Failed { reason, message } =
        objects::wait(&api, Kind::Server, &name, args.timeout).await?
    {
        bail!("Server {name} failed: {reason}: {message}");
    }
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("server={name},role=run")))
        .await?;
    let pod = list
        .items
        .iter()
        .find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .and_then(|p| p.metadata.name.clone())
        .with_context(|| format!("no Ready pod of Server {name}"))?;
    let fwd = portforward::start(pods, &pod, args.port, 8080).await?;
    let _page = open_browser(
        &format!("http://localhost:{}/", fwd.local.port()),
        args.no_open_browser,
    );
    eprintln!("Press q and Enter (or Ctrl-C) to stop.");
    wait_for_quit().await;
    drop(fwd);
    match decide(args.on_exit, OnExit::Keep, &format!("Server {name}")).await {
        OnExit::Delete => {
            objects::delete(&api, Kind::Server, &name).await?;
            eprintln!("✓ Server {name} deleted");
        }
        _ => eprintln!("Server {name} keeps running"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_page_holds_the_url_for_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let url = "http://localhost:8888/?token=abc&x=\"y";
        let page = redirect_page(dir.path(), url).unwrap();
        assert!(
            !page.to_string_lossy().contains("abc"),
            "the token in the path"
        );
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(
            html.contains("url=http://localhost:8888/?token=abc&amp;x=&quot;y\""),
            "{html}"
        );
        let mode = std::fs::metadata(&page).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            redirect_page(dir.path(), url).is_err(),
            "never over a planted file"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn a_notebook_for_a_model_copies_what_it_needs() {
        let m = json!({"apiVersion": "substratus.ai/v1", "kind": "Model",
            "metadata": {"name": "opt", "namespace": "ns"},
            "spec": {"image": "img", "command": ["train.sh"], "params": {"a": 1},
                     "dataset": {"name": "d"}, "resources": {"cpu": 4}}});
        let nb = notebook_for(Kind::Model, &m).unwrap();
        assert_eq!(nb["metadata"]["name"], "opt-model");
        assert_eq!(nb["metadata"]["namespace"], "ns");
        assert_eq!(nb["spec"]["image"], "img");
        assert_eq!(nb["spec"]["dataset"]["name"], "d");
        assert_eq!(nb["spec"]["params"]["a"], 1);
        assert!(
            nb["spec"].get("command").is_none(),
            "the notebook's own command runs"
        );
    }
}
