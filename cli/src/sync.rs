//! Notebook files back to the local directory: every 2 s the notebook container lists its
//! working directory (`/content`) through the Kubernetes exec API, and files created or
//! changed since the last look are copied down as one tar stream, unpacked as it arrives (no
//! file is held in memory); files removed in the pod are removed locally. The mounted `data`,
//! `model` and `artifacts` folders and hidden files (`.git`, `.ipynb_checkpoints`) are left
//! out. Only POSIX `sh`, `find`, `stat -c` and `tar` are used, as busybox (and so Alpine)
//! images have them. One way, pod to local: local edits reach the pod by a new build.

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

/// Parses lines of `mtime size path` (`stat -c '%Y %s %n'` of `find .`'s files: paths
/// start with `./`).
pub fn parse_listing(out: &str) -> Listing {
    out.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let mtime = parts.next()?.to_owned();
            let size = parts.next()?.parse().ok()?;
            let raw = parts.next()?;
            let path = raw.strip_prefix("./").unwrap_or(raw).to_owned();
            safe_relative(&path).then_some((path, (mtime, size)))
        })
        .collect()
}

/// The listing: regular files below the working directory, without the mounts and hidden
/// files, with their modification time (seconds) and size.
pub const LIST: &str = "find . -mindepth 1 \\( -path ./data -o -path ./model -o -path ./artifacts \
    -o -name '.*' \\) -prune -o -type f -exec stat -c '%Y %s %n' {} +";

/// A relative path that stays inside the directory and has no hidden component: the pod's
/// listing is the image's to write, and a name like `.git/hooks/pre-commit` or
/// `.bashrc` would run code on this machine.
pub fn safe_relative(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p).components().all(|c| match c {
            Component::Normal(name) => !name.to_string_lossy().starts_with('.'),
            _ => false,
        })
}

/// Makes the folders of `rel` below `dir`, refusing one that is a symbolic link (or not a
/// folder): nothing is written through a link to outside `dir`. Returns the target's folder.
fn folders_within(dir: &Path, rel: &str) -> Result<PathBuf> {
    let mut at = dir.to_owned();
    let parent = Path::new(rel).parent().unwrap_or(Path::new(""));
    for part in parent.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => bail!(
                "refusing to write {rel:?}: {} is not a folder (a link?)",
                at.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&at)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(at)
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
    finished(p, &format!("{cmd:?}"), pod).await?;
    Ok(out)
}

/// Waits for an exec to end; its `Failure` status is an error naming `what` and the pod.
async fn finished(mut p: kube::api::AttachedProcess, what: &str, pod: &str) -> Result<()> {
    let status = p.take_status();
    p.join().await.ok();
    if let Some(s) = status
        && let Some(s) = s.await
        && s.status.as_deref() == Some("Failure")
    {
        bail!("{what} failed in {pod}: {}", s.message.unwrap_or_default());
    }
    Ok(())
}

/// Writes the named files as one tar stream; through the shell, so that `tar` is the
/// image's own wherever its PATH has it.
pub const COPY: &str = "exec tar cf - -- \"$@\"";

/// Writes the regular files of a tar stream named in `wanted` below `dir` (see [`copy_down`]).
pub fn unpack_into(reader: impl std::io::Read, wanted: &[String], dir: &Path) -> Result<()> {
    unpack(reader, &wanted.iter().cloned().collect(), dir)
}

/// Lists the notebook's working directory.
pub async fn list(pods: &Api<Pod>, pod: &str) -> Result<Listing> {
    let out = exec(pods, pod, &["sh", "-c", LIST]).await?;
    Ok(parse_listing(&String::from_utf8_lossy(&out)))
}

/// Copies `rels` of the pod's working directory to `dir`: one `tar` of them over exec,
/// unpacked as the bytes arrive. Each file is written beside its target and renamed over it
/// once complete; an entry the request did not name is refused.
pub async fn copy_down(pods: &Api<Pod>, pod: &str, rels: &[String], dir: &Path) -> Result<()> {
    if let Some(bad) = rels.iter().find(|r| !safe_relative(r)) {
        bail!("refusing to write {bad:?} outside {}", dir.display());
    }
    if rels.is_empty() {
        return Ok(());
    }
    let mut cmd = vec!["sh", "-c", COPY, "sh"];
    cmd.extend(rels.iter().map(String::as_str));
    let params = AttachParams::default()
        .container(CONTAINER)
        .stdin(false)
        .stdout(true)
        .stderr(false);
    let mut p = pods
        .exec(pod, cmd, &params)
        .await
        .with_context(|| format!("exec in {pod}"))?;
    let stdout = p.stdout().context("no output stream from tar")?;
    let wanted: std::collections::BTreeSet<String> = rels.iter().cloned().collect();
    let dir = dir.to_owned();
    let reader = tokio_util::io::SyncIoBridge::new(stdout);
    let unpacked = tokio::task::spawn_blocking(move || unpack(reader, &wanted, &dir))
        .await
        .context("unpacking")?;
    finished(p, "tar", pod).await?;
    unpacked
}

/// Writes the regular files of a tar stream named in `wanted` below `dir`.
fn unpack(
    reader: impl std::io::Read,
    wanted: &std::collections::BTreeSet<String>,
    dir: &Path,
) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().context("reading the tar stream")? {
        let mut entry = entry.context("reading the tar stream")?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let rel = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if !wanted.contains(&rel) || !safe_relative(&rel) {
            bail!("the notebook sent {rel:?}, which was not asked for");
        }
        let folder = folders_within(dir, &rel)?;
        let target = dir.join(&rel);
        if std::fs::symlink_metadata(&target).is_ok_and(|m| !m.file_type().is_file()) {
            bail!("refusing to write {rel:?}: it is not a regular file here (a link?)");
        }
        // A new file of a fresh name (never an existing one, nor a link planted there),
        // renamed over the target once complete.
        let mut out = tempfile::NamedTempFile::new_in(&folder)?;
        std::io::copy(&mut entry, &mut out)?;
        out.persist(&target)?;
    }
    Ok(())
}

/// One round: list, copy what changed, remove what went. `written` holds what the sync
/// wrote: a file removed in the notebook is removed here only if the sync wrote it (and it is
/// still a regular file), never a file of the user's. Returns the new listing.
pub async fn round(
    pods: &Api<Pod>,
    pod: &str,
    dir: &Path,
    before: &Listing,
    written: &mut std::collections::BTreeSet<String>,
) -> Result<Listing> {
    let after = list(pods, pod).await?;
    let (copy, remove) = diff(before, &after);
    copy_down(pods, pod, &copy, dir).await?;
    for rel in copy {
        eprintln!("⇣ {rel}");
        written.insert(rel);
    }
    for rel in remove_written(dir, remove, written) {
        eprintln!("✗ {rel} (removed in the notebook)");
    }
    Ok(after)
}

/// Removes the files of `remove` that the sync wrote (leaving `written`), when they are
/// still regular files reached through no link; returns those removed.
fn remove_written(
    dir: &Path,
    remove: Vec<String>,
    written: &mut std::collections::BTreeSet<String>,
) -> Vec<String> {
    remove
        .into_iter()
        .filter(|rel| written.remove(rel))
        .filter(|rel| {
            let path = dir.join(rel);
            std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file())
                && folders_within(dir, rel).is_ok()
                && std::fs::remove_file(&path).is_ok()
        })
        .collect()
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
        let mut written = std::collections::BTreeSet::new();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            match round(&pods, &pod, &dir, &last, &mut written).await {
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
        let a = parse_listing("1.5 10 ./nb.ipynb\n2.0 3 ./src/x.py\n3.0 1 ../escape\n1.0 1 /abs\n");
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

    #[test]
    fn hidden_components_absolute_paths_and_parents_are_refused() {
        for bad in [
            ".git/hooks/pre-commit",
            "src/.env",
            ".bashrc",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "",
        ] {
            assert!(!safe_relative(bad), "{bad}");
        }
        let listed = parse_listing("1 1 ./.git/hooks/pre-commit\n1 1 ./ok.py\n1 1 ./a/.hidden/x\n");
        assert_eq!(listed.keys().collect::<Vec<_>>(), ["ok.py"]);
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut built = tar::Builder::new(Vec::new());
        for (path, body) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            built.append_data(&mut h, path, *body).unwrap();
        }
        built.into_inner().unwrap()
    }

    #[test]
    fn nothing_is_written_through_a_link_in_the_local_directory() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("src")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("t"), dir.path().join("nb.ipynb")).unwrap();
        let bytes = tar_of(&[("src/x.py", b"evil")]);
        let wanted = ["src/x.py".to_owned()].into_iter().collect();
        let err = unpack(&bytes[..], &wanted, dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a folder"), "{err}");
        let bytes = tar_of(&[("nb.ipynb", b"evil")]);
        let wanted = ["nb.ipynb".to_owned()].into_iter().collect();
        assert!(unpack(&bytes[..], &wanted, dir.path()).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn only_files_the_sync_wrote_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["mine.py", "synced.ipynb", "linked"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        std::fs::remove_file(dir.path().join("linked")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("keep"), dir.path().join("linked")).unwrap();
        let mut written: std::collections::BTreeSet<String> = ["synced.ipynb", "linked"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let removed = remove_written(
            dir.path(),
            vec!["mine.py".into(), "synced.ipynb".into(), "linked".into()],
            &mut written,
        );
        assert_eq!(removed, ["synced.ipynb"]);
        assert!(dir.path().join("mine.py").exists(), "a file of the user's");
        assert!(outside.path().join("keep").exists());
        assert!(written.is_empty());
    }

    #[test]
    fn a_tar_stream_is_unpacked_only_where_it_was_asked() {
        let mut built = tar::Builder::new(Vec::new());
        let mut add = |path: &str, body: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            built.append_data(&mut h, path, body).unwrap();
        };
        add("./src/x.py", b"print(1)");
        add("nb.ipynb", b"{}");
        let bytes = built.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wanted = ["src/x.py".to_owned(), "nb.ipynb".to_owned()]
            .into_iter()
            .collect();
        unpack(&bytes[..], &wanted, dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("src/x.py")).unwrap(),
            b"print(1)"
        );
        assert_eq!(std::fs::read(dir.path().join("nb.ipynb")).unwrap(), b"{}");
        // An entry nobody asked for is refused, and nothing of it is written.
        let only = ["nb.ipynb".to_owned()].into_iter().collect();
        let other = tempfile::tempdir().unwrap();
        assert!(unpack(&bytes[..], &only, other.path()).is_err());
        assert!(!other.path().join("src").exists());
    }
}
