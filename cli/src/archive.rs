//! The build context: a tar.gz of a directory, honouring its `.dockerignore`, written to a
//! file while its MD5 is computed. Memory stays bounded whatever the size: the tar stream is
//! cut into chunks that cross a bounded channel to a second thread, which compresses, hashes
//! and writes them (so reading files and compressing use both cores).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::write::GzEncoder;
use globset::{GlobBuilder, GlobMatcher};
use md5::{Digest, Md5};

/// Chunks in flight between the tar and the gzip threads: at most `CHUNKS * CHUNK` bytes.
const CHUNK: usize = 256 * 1024;
const CHUNKS: usize = 8;

/// A packed build context.
#[derive(Debug)]
pub struct Archive {
    pub path: PathBuf,
    pub md5_hex: String,
    /// Size of the tar.gz.
    pub size: u64,
    /// Files and directories in it.
    pub entries: u64,
}

/// `.dockerignore` rules, applied as Docker does: patterns are relative to the context root,
/// the last pattern matching a path or one of its parents decides, and `!` re-includes.
#[derive(Debug, Default)]
pub struct DockerIgnore {
    rules: Vec<(GlobMatcher, bool)>,
}

impl DockerIgnore {
    /// Parses the contents of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<DockerIgnore> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclude, pattern) = match line.strip_prefix('!') {
                Some(p) => (false, p.trim()),
                None => (true, line),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .with_context(|| format!(".dockerignore line {}: {line:?}", i + 1))?;
            rules.push((glob.compile_matcher(), exclude));
        }
        Ok(DockerIgnore { rules })
    }

    /// Reads `<dir>/.dockerignore`, if any.
    pub fn of_dir(dir: &Path) -> Result<DockerIgnore> {
        match std::fs::read_to_string(dir.join(".dockerignore")) {
            Ok(text) => DockerIgnore::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DockerIgnore::default()),
            Err(e) => Err(e).context("reading .dockerignore"),
        }
    }

    /// Whether `rel` (slash-separated, relative to the root) is left out.
    pub fn excludes(&self, rel: &str) -> bool {
        let mut excluded = false;
        for (glob, exclude) in &self.rules {
            let hit =
                std::iter::successors(Some(rel), |p| p.rsplit_once('/').map(|(parent, _)| parent))
                    .any(|p| glob.is_match(p));
            if hit {
                excluded = *exclude;
            }
        }
        excluded
    }

    /// Whether an excluded directory may still hold re-included paths (then it is walked).
    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, exclude)| !exclude)
    }
}

/// A pattern as Docker cleans it: no leading `/` or `./`, no trailing `/`.
fn clean(pattern: &str) -> String {
    let mut p = pattern.trim_start_matches('/');
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    p.trim_end_matches('/').to_owned()
}

/// A writer that sends full chunks over a bounded channel.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: SyncSender<Vec<u8>>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the compressor stopped"))
    }
}

/// Hashes and counts what goes through to the file.
struct HashingWriter<W> {
    inner: W,
    md5: Md5,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.md5.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn compress(rx: Receiver<Vec<u8>>, out: File) -> io::Result<(String, u64)> {
    let hashing = HashingWriter {
        inner: BufWriter::with_capacity(CHUNK, out),
        md5: Md5::new(),
        size: 0,
    };
    let mut gz = GzEncoder::new(hashing, Compression::new(6));
    for chunk in rx {
        gz.write_all(&chunk)?;
    }
    let mut hashing = gz.finish()?;
    hashing.flush()?;
    let md5 = hashing.md5.finalize();
    Ok((hex(&md5), hashing.size))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Packs `dir` into `out` (created or truncated). Entries are in sorted order with owners
/// cleared, so an unchanged directory packs to the same bytes and the same md5.
pub fn pack(dir: &Path, out: &Path) -> Result<Archive> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if !dir.join("Dockerfile").is_file() {
        bail!(
            "{} has no Dockerfile: the build context needs one at its root",
            dir.display()
        );
    }
    let ignore = DockerIgnore::of_dir(dir)?;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let (tx, rx) = sync_channel::<Vec<u8>>(CHUNKS);
    let compressor = std::thread::spawn(move || compress(rx, file));
    let mut builder = tar::Builder::new(ChunkWriter {
        buf: Vec::with_capacity(CHUNK),
        tx,
    });
    builder.follow_symlinks(false);
    let mut entries = 0;
    let walked = walk(dir, dir, &ignore, &mut builder, &mut entries);
    let finished = walked.and_then(|()| {
        let mut w = builder.into_inner().context("finishing the tar stream")?;
        w.flush().context("finishing the tar stream")?;
        Ok(())
    });
    // Dropping the sender (with the builder) ends the compressor's loop.
    let compressed = compressor
        .join()
        .map_err(|_| anyhow::anyhow!("the compressor thread panicked"))?;
    finished?;
    let (md5_hex, size) = compressed.with_context(|| format!("writing {}", out.display()))?;
    Ok(Archive {
        path: out.to_path_buf(),
        md5_hex,
        size,
        entries,
    })
}

fn walk(
    root: &Path,
    dir: &Path,
    ignore: &DockerIgnore,
    builder: &mut tar::Builder<ChunkWriter>,
    entries: &mut u64,
) -> Result<()> {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    children.sort_by_key(|e| e.file_name());
    for entry in children {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .context("a path outside the context")?
            .to_string_lossy()
            .replace('\\', "/");
        let kind = entry.file_type()?;
        let keep = rel == "Dockerfile" || !ignore.excludes(&rel);
        if kind.is_dir() {
            if keep {
                append(builder, &path, &rel)?;
                *entries += 1;
            }
            if keep || ignore.has_exceptions() {
                walk(root, &path, ignore, builder, entries)?;
            }
        } else if keep && (kind.is_file() || kind.is_symlink()) {
            append(builder, &path, &rel)?;
            *entries += 1;
        }
    }
    Ok(())
}

fn append(builder: &mut tar::Builder<ChunkWriter>, path: &Path, rel: &str) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
    // Keep real modification times (the builder's cache uses them) but no owners.
    header.set_mtime(
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)?;
        builder.append_link(&mut header, rel, target)?;
    } else if meta.is_dir() {
        builder.append_data(&mut header, format!("{rel}/"), io::empty())?;
    } else {
        let f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
        builder
            .append_data(&mut header, rel, f)
            .with_context(|| format!("adding {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn names(archive: &Path) -> Vec<String> {
        let f = File::open(archive).unwrap();
        let mut t = tar::Archive::new(flate2::read::GzDecoder::new(f));
        t.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn write(dir: &Path, rel: &str, body: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    #[test]
    fn dockerignore_follows_docker_rules() {
        let d = DockerIgnore::parse(
            "# comment\n*.md\n!README.md\n/build/\nsrc/**/*.pyc\ndata\n!data/keep.txt\n./tmp\n",
        )
        .unwrap();
        assert!(d.excludes("notes.md"));
        assert!(!d.excludes("README.md"));
        assert!(
            !d.excludes("docs/notes.md"),
            "patterns are anchored at the root"
        );
        assert!(d.excludes("build") && d.excludes("build/out.bin"));
        assert!(d.excludes("src/a/b/c.pyc") && d.excludes("src/c.pyc"));
        assert!(!d.excludes("src/c.py"));
        assert!(d.excludes("data/big.bin"));
        assert!(
            !d.excludes("data/keep.txt"),
            "an exception inside an excluded dir"
        );
        assert!(d.excludes("tmp/x"));
        assert!(!d.excludes("Dockerfile"));
    }

    #[test]
    fn packs_what_is_not_ignored_and_hashes_the_bytes_written() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "Dockerfile", "FROM scratch\n");
        write(d, ".dockerignore", "secrets\n*.log\n");
        write(d, "src/main.py", "print(1)\n");
        write(d, "secrets/key", "k");
        write(d, "run.log", "x");
        let out = tempfile::NamedTempFile::new().unwrap();
        let a = pack(d, out.path()).unwrap();
        let mut bytes = Vec::new();
        File::open(out.path())
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(a.md5_hex, hex(&Md5::digest(&bytes)));
        assert_eq!(a.size, bytes.len() as u64);
        let got = names(out.path());
        assert_eq!(got, [".dockerignore", "Dockerfile", "src/", "src/main.py"]);
        // Unchanged directory, same bytes.
        let again = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(pack(d, again.path()).unwrap().md5_hex, a.md5_hex);
        // A change, another md5.
        write(d, "src/main.py", "print(2)\n");
        let changed = tempfile::NamedTempFile::new().unwrap();
        assert_ne!(pack(d, changed.path()).unwrap().md5_hex, a.md5_hex);
    }

    #[test]
    fn large_files_stream_through_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "Dockerfile", "FROM scratch\n");
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        std::fs::write(d.join("weights.bin"), &big).unwrap();
        let out = tempfile::NamedTempFile::new().unwrap();
        pack(d, out.path()).unwrap();
        let mut t = tar::Archive::new(flate2::read::GzDecoder::new(
            File::open(out.path()).unwrap(),
        ));
        let mut found = None;
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy() == "weights.bin" {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                found = Some(v);
            }
        }
        assert_eq!(found.unwrap(), big);
    }

    #[test]
    fn a_context_without_a_dockerfile_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::NamedTempFile::new().unwrap();
        let e = pack(dir.path(), out.path()).unwrap_err();
        assert!(e.to_string().contains("Dockerfile"), "{e}");
    }
}
