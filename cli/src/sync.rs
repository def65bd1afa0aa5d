//! Notebook files back to the local directory: every 2 s the notebook container lists its
//! working directory (`/content`) through the Kubernetes exec API, and files created or
//! changed since the last look are copied down; files removed in the pod are removed
//! locally. The mounted `data`, `model` and `artifacts` folders and hidden files (`.git`,
//! `.ipynb_checkpoints`) are left out. One way, pod to local: local edits reach the pod by a
//! new build.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::AsyncReadExt;

const CONTAINER: &str = "notebook";

/// `(mtime, size)` per relative path.
pub type Listing = BTreeMap<String, (String, u64)>;

/// Parses `find -printf '%T@ %s %P\n'` output.
pub fn parse_listing(out: &str) -> Listing {
    out.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let mtime = parts.next()?.to_owned();
            let size = parts.next()?.parse().ok()?;
            let path = parts.next()?.to_owned();
            safe_relative(&path).then_some((path, (mtime, size)))
        })
        .collect()
}

/// A relative path that stays inside the directory.
pub fn safe_relative(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// What changed between two listings: `(copy, remove)`.
pub fn diff(before: &Listing, after: &Listing) -> (Vec<String>, Vec<String>) {
    let copy = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(v))
        .map(|(p, _)| p.clone())
        .collect();
    let remove = before
        .keys()
        .filter(|p| !after.contains_key(*p))
        .cloned()
        .collect();
    (copy, remove)
}

async fn exec(pods: &Api<Pod>, pod: &str, cmd: &[&str]) -> Result<Vec<u8>> {
    let params = AttachParams::default()
        .container(CONTAINER)
        .stdin(false)
        .stdout(true)
        .stderr(false);
    let mut p = pods
        .exec(pod, cmd.iter().copied(), &params)
        .await
        .with_context(|| format!("exec in {pod}"))?;
    let mut out = Vec::new();
    if let Some(mut stdout) = p.stdout() {
        stdout.read_to_end(&mut out).await?;
    }
    let status = p.take_status();
    p.join().await.ok();
    if let Some(s) = status
        && let Some(s) = s.await
        && s.status.as_deref() == Some("Failure")
    {
        bail!("{cmd:?} failed in {pod}: {}", s.message.unwrap_or_default());
    }
    Ok(out)
}

/// Lists the notebook's working directory.
pub async fn list(pods: &Api<Pod>, pod: &str) -> Result<Listing> {
    let out = exec(
        pods,
        pod,
        &[
            "find",
            ".",
            "-mindepth",
            "1",
            "(",
            "-path",
            "./data",
            "-o",
            "-path",
            "./model",
            "-o",
            "-path",
            "./artifacts",
            "-o",
            "-name",
            ".*",
            ")",
            "-prune",
            "-o",
            "-type",
            "f",
            "-printf",
            "%T@ %s %P\\n",
        ],
    )
    .await?;
    Ok(parse_listing(&String::from_utf8_lossy(&out)))
}

/// Copies one file of the pod to `dir`.
pub async fn copy_down(pods: &Api<Pod>, pod: &str, rel: &str, dir: &Path) -> Result<()> {
    if !safe_relative(rel) {
        bail!("refusing to write {rel:?} outside {}", dir.display());
    }
    let bytes = exec(pods, pod, &["cat", "--", rel]).await?;
    let target = dir.join(rel);
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let tmp = target.with_extension("substratus-sync");
    tokio::fs::write(&tmp, &bytes).await?;
    tokio::fs::rename(&tmp, &target).await?;
    Ok(())
}

/// One round: list, copy what changed, remove what went. Returns the new listing.
pub async fn round(pods: &Api<Pod>, pod: &str, dir: &Path, before: &Listing) -> Result<Listing> {
    let after = list(pods, pod).await?;
    let (copy, remove) = diff(before, &after);
    for rel in copy {
        copy_down(pods, pod, &rel, dir).await?;
        eprintln!("⇣ {rel}");
    }
    for rel in remove {
        let _ = tokio::fs::remove_file(dir.join(&rel)).await;
        eprintln!("✗ {rel} (removed in the notebook)");
    }
    Ok(after)
}

/// Syncs until aborted. Files present when it starts are the baseline (not copied).
pub fn start(pods: Api<Pod>, pod: String, dir: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Exec may not work the moment the pod is Ready: a few tries before giving up.
        let mut tries = 0;
        let mut last = loop {
            match list(&pods, &pod).await {
                Ok(l) => break l,
                Err(e) if tries >= 5 => {
                    eprintln!("file sync unavailable: {e:#}");
                    return;
                }
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        eprintln!("syncing files changed in the notebook to {}", dir.display());
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            match round(&pods, &pod, &dir, &last).await {
                Ok(l) => last = l,
                Err(e) => eprintln!("file sync: {e:#}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_and_diffs() {
        let a = parse_listing("1.5 10 nb.ipynb\n2.0 3 src/x.py\n3.0 1 ../escape\n1.0 1 /abs\n");
        assert_eq!(a.len(), 2, "paths leaving the directory are dropped: {a:?}");
        let b = parse_listing("1.5 10 nb.ipynb\n2.5 4 src/x.py\n1.0 1 new.txt\n");
        let (copy, remove) = diff(&a, &b);
        assert_eq!(copy, ["new.txt", "src/x.py"]);
        assert!(remove.is_empty());
        let (copy, remove) = diff(&b, &a);
        assert_eq!(copy, ["src/x.py"]);
        assert_eq!(remove, ["new.txt"]);
        assert!(parse_listing("1.0 1 file with spaces.txt\n").contains_key("file with spaces.txt"));
    }
}
