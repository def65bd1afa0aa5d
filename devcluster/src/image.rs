//! Container images without a Docker engine: a [`Recipe`] (files, symlinks and an image
//! config) becomes a docker-archive (`manifest.json` + config + one layer tar), the format
//! `ctr images import` and `docker load` read.
//!
//! The layer is written deterministically (sorted entries, mtime 0, owner 0:0), so the same
//! inputs give the same layer digest; archives are cached under that content key and only
//! written when missing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Where an image's file comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file on this machine, copied with the given mode.
    File(PathBuf, u32),
    /// Literal bytes with the given mode.
    Bytes(Vec<u8>, u32),
    /// A symbolic link to this target.
    Symlink(String),
    /// A directory with the given mode.
    Dir(u32),
}

/// The runtime part of an image config.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    /// `uid[:gid]`; empty for root.
    pub user: String,
    pub exposed_ports: Vec<u16>,
}

/// What an image holds: its name and tag, its files by path inside the image, its config.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// `repository:tag`, e.g. `localhost/substratus/busybox:1.35.0`.
    pub reference: String,
    pub files: BTreeMap<String, Source>,
    pub config: Config,
}

impl Recipe {
    pub fn new(reference: impl Into<String>) -> Recipe {
        Recipe {
            reference: reference.into(),
            files: BTreeMap::new(),
            config: Config::default(),
        }
    }

    /// Adds an entry at `path` (absolute inside the image), and every parent directory.
    pub fn add(&mut self, path: &str, source: Source) -> &mut Recipe {
        let clean = path.trim_matches('/');
        let mut parent = String::new();
        let parts: Vec<&str> = clean.split('/').collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            parent = if parent.is_empty() {
                (*p).to_owned()
            } else {
                format!("{parent}/{p}")
            };
            self.files
                .entry(parent.clone())
                .or_insert(Source::Dir(0o755));
        }
        self.files.insert(clean.to_owned(), source);
        self
    }
}

/// Writes the single layer of `recipe` as an uncompressed tar.
fn layer(recipe: &Recipe) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, source) in &recipe.files {
        if path.is_empty() || path.split('/').any(|c| c == ".." || c == ".") {
            bail!("image {}: invalid path {path:?}", recipe.reference);
        }
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match source {
            Source::Dir(mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            Source::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, path, target)?;
            }
            Source::Bytes(data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, path, data.as_slice())?;
            }
            Source::File(from, mode) => {
                let mut f = std::fs::File::open(from)
                    .with_context(|| format!("image {}: {}", recipe.reference, from.display()))?;
                let mut data = Vec::new();
                f.read_to_end(&mut data)?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, path, data.as_slice())?;
            }
        }
    }
    Ok(tar.into_inner()?)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The image config JSON for a layer whose uncompressed digest is `diff_id`.
fn config_json(recipe: &Recipe, diff_id: &str) -> Result<Vec<u8>> {
    let c = &recipe.config;
    let mut config = json!({
        "Env": c.env,
        "WorkingDir": c.working_dir,
        "User": c.user,
    });
    if !c.entrypoint.is_empty() {
        config["Entrypoint"] = json!(c.entrypoint);
    }
    if !c.cmd.is_empty() {
        config["Cmd"] = json!(c.cmd);
    }
    if !c.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, serde_json::Value> = c
            .exposed_ports
            .iter()
            .map(|p| (format!("{p}/tcp"), json!({})))
            .collect();
        config["ExposedPorts"] = ports.into();
    }
    Ok(serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "substratus-devcluster image"}],
    }))?)
}

/// A built image: the archive and its identity.
#[derive(Clone, Debug)]
pub struct Built {
    pub reference: String,
    /// `sha256:<hex>` of the config: the image ID containerd reports.
    pub id: String,
    pub archive: PathBuf,
    /// Size of the (uncompressed) layer.
    pub size: u64,
    /// Whether the archive was already in the cache.
    pub cached: bool,
}

/// Writes `recipe` as a docker-archive into `cache_dir` (named by its content), unless an
/// archive of the same content is already there.
pub fn build(recipe: &Recipe, cache_dir: &Path) -> Result<Built> {
    let layer = layer(recipe)?;
    let diff_id = sha256_hex(&layer);
    let config = config_json(recipe, &diff_id)?;
    let config_id = sha256_hex(&config);
    let safe: String = recipe
        .reference
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let archive = cache_dir.join(format!("{safe}-{}.tar", &config_id[..16]));
    let built = Built {
        reference: recipe.reference.clone(),
        id: format!("sha256:{config_id}"),
        archive: archive.clone(),
        size: layer.len() as u64,
        cached: archive.is_file(),
    };
    if built.cached {
        return Ok(built);
    }
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    let manifest = serde_json::to_vec(&json!([{
        "Config": format!("{config_id}.json"),
        "RepoTags": [recipe.reference],
        "Layers": [format!("{diff_id}/layer.tar")],
    }]))?;
    let partial = archive.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.mode(tar::HeaderMode::Deterministic);
    for (name, data) in [
        (format!("{diff_id}/layer.tar"), layer.as_slice()),
        (format!("{config_id}.json"), config.as_slice()),
        ("manifest.json".to_owned(), manifest.as_slice()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, name, data)?;
    }
    tar.into_inner()?.flush()?;
    std::fs::rename(&partial, &archive)?;
    Ok(built)
}

/// Adds `binary` at `path` with the shared libraries it loads (as `ldd` resolves them on this
/// machine), at their own paths: a dynamically linked program runs in an image with no other
/// base.
pub fn add_with_libraries(recipe: &mut Recipe, path: &str, binary: &Path) -> Result<()> {
    recipe.add(path, Source::File(binary.to_owned(), 0o755));
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && !text.contains("not a dynamic executable") {
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for lib in libraries_of(&text) {
        let real = std::fs::canonicalize(&lib)?;
        recipe.add(&lib, Source::File(real, 0o755));
    }
    Ok(())
}

/// The absolute library paths in `ldd` output.
fn libraries_of(ldd: &str) -> Vec<String> {
    ldd.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(archive: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(name, data);
        }
        out
    }

    fn recipe() -> Recipe {
        let mut r = Recipe::new("localhost/test/hello:1");
        r.add(
            "bin/hello",
            Source::Bytes(b"#!/bin/sh\necho hi\n".to_vec(), 0o755),
        )
        .add("bin/sh", Source::Symlink("busybox".into()));
        r.config.cmd = vec!["/bin/hello".into()];
        r.config.working_dir = "/content".into();
        r
    }

    #[test]
    fn an_archive_names_its_layer_and_config_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let built = build(&recipe(), dir.path()).unwrap();
        assert!(!built.cached);
        let files = entries(&built.archive);
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let config_name = manifest[0]["Config"].as_str().unwrap();
        let layer_name = manifest[0]["Layers"][0].as_str().unwrap();
        assert_eq!(manifest[0]["RepoTags"][0], "localhost/test/hello:1");
        assert_eq!(
            format!("{}.json", sha256_hex(&files[config_name])),
            config_name
        );
        assert_eq!(
            built.id,
            format!("sha256:{}", sha256_hex(&files[config_name]))
        );
        let config: serde_json::Value = serde_json::from_slice(&files[config_name]).unwrap();
        let diff_id = sha256_hex(&files[layer_name]);
        assert_eq!(config["rootfs"]["diff_ids"][0], format!("sha256:{diff_id}"));
        assert_eq!(config["config"]["WorkingDir"], "/content");
        assert_eq!(config["config"]["Cmd"][0], "/bin/hello");
        // The layer holds the parent directory, the file with its mode, and the link.
        let mut layer = tar::Archive::new(files[layer_name].as_slice());
        let seen: Vec<(String, u32, bool)> = layer
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.entry_type().is_symlink(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("bin/".to_owned(), 0o755, false),
                ("bin/hello".to_owned(), 0o755, false),
                ("bin/sh".to_owned(), 0o777, true),
            ]
        );
    }

    #[test]
    fn the_same_content_is_built_once_and_a_change_makes_a_new_archive() {
        let dir = tempfile::tempdir().unwrap();
        let first = build(&recipe(), dir.path()).unwrap();
        let again = build(&recipe(), dir.path()).unwrap();
        assert!(again.cached);
        assert_eq!(first.archive, again.archive);
        let mut changed = recipe();
        changed.config.env = vec!["A=b".into()];
        let other = build(&changed, dir.path()).unwrap();
        assert!(!other.cached);
        assert_ne!(other.archive, first.archive);
    }

    #[test]
    fn paths_that_climb_out_of_the_image_are_refused() {
        let mut r = Recipe::new("localhost/test/bad:1");
        r.files.insert("etc/../../x".into(), Source::Dir(0o755));
        let dir = tempfile::tempdir().unwrap();
        let err = build(&r, dir.path()).unwrap_err().to_string();
        assert!(err.contains("invalid path"), "{err}");
    }

    #[test]
    fn ldd_output_yields_the_absolute_library_paths() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        assert_eq!(
            libraries_of(ldd),
            vec![
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }
}
