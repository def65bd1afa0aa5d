//! `substratus-operator unpack-context`: the first step of a build Job whose context is an
//! uploaded archive. It reads the archive once, unpacking it into the builder's workspace
//! while hashing the very bytes it unpacks, and fails (the builder never starts) when those
//! bytes do not have the md5 the object declares or when an entry would leave the context:
//! `..`, an absolute path, a link pointing out of it or written through, a hard link, a
//! device or a FIFO. The builder then reads a plain directory (`--context=dir://`), so its
//! own unpacking, which follows such entries, never sees the archive; and an upload replaced
//! through a URL that is still valid after the md5 was checked is refused here.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use md5::Digest;

/// Why an archive is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("archive entry {0:?} leaves the build context ({1})")]
    Escapes(String, &'static str),
    #[error("archive entry {0:?} is a {1}, which a build context may not hold")]
    Kind(String, &'static str),
    #[error(
        "the archive's md5 is {found}, not the {declared} of spec.build.upload.md5Checksum: it changed after it was checked; upload again"
    )]
    Md5 { found: String, declared: String },
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
}

/// Reads through `inner`, hashing every byte read.
struct Hashing<R> {
    inner: R,
    md5: md5::Md5,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.md5.update(&buf[..n]);
        Ok(n)
    }
}

/// The entry's path, relative and inside the context, or why not.
fn relative(name: &str, path: &Path) -> Result<PathBuf, Refused> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(Refused::Escapes(name.into(), "a `..` component")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(Refused::Escapes(name.into(), "an absolute path"));
            }
        }
    }
    Ok(out)
}

/// A symbolic link at `at` (relative) pointing to `target` stays inside the context.
fn link_stays_inside(name: &str, at: &Path, target: &Path) -> Result<(), Refused> {
    if target.has_root() {
        return Err(Refused::Escapes(name.into(), "a link to an absolute path"));
    }
    // The depth below the context's root, walked lexically from the link's folder.
    let mut depth = at.components().count().saturating_sub(1) as i64;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => depth -= 1,
            Component::RootDir | Component::Prefix(_) => depth = -1,
        }
        if depth < 0 {
            return Err(Refused::Escapes(name.into(), "a link pointing out of it"));
        }
    }
    Ok(())
}

/// Unpacks the gzipped tar at `archive` into `into`, checking every entry and the md5 of the
/// bytes read; returns how many entries were unpacked. On a refusal, what was unpacked is
/// removed.
pub fn unpack_context(archive: &Path, declared_md5: &str, into: &Path) -> Result<usize, Refused> {
    let file = std::fs::File::open(archive)?;
    let mut hashing = Hashing {
        inner: io::BufReader::new(file),
        md5: md5::Md5::new(),
    };
    let unpacked = unpack_entries(&mut hashing, into).and_then(|n| {
        // The rest of the file (gzip trailer, padding) counts towards the md5 too.
        io::copy(&mut hashing, &mut io::sink())?;
        let found = substratus_core::names::hex(&hashing.md5.clone().finalize());
        if found.eq_ignore_ascii_case(declared_md5) {
            Ok(n)
        } else {
            Err(Refused::Md5 {
                found,
                declared: declared_md5.to_owned(),
            })
        }
    });
    if unpacked.is_err() {
        clear(into);
    }
    unpacked
}

fn unpack_entries(reader: &mut impl Read, into: &Path) -> Result<usize, Refused> {
    let gz = flate2::read::GzDecoder::new(reader);
    let mut tar = tar::Archive::new(gz);
    tar.set_overwrite(true);
    tar.set_preserve_mtime(true);
    let mut count = 0;
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = relative(&name, &entry.path()?)?;
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Continuous | T::Directory => {}
            T::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| Refused::Kind(name.clone(), "link without a target"))?;
                link_stays_inside(&name, &path, &target)?;
            }
            T::Link => return Err(Refused::Kind(name, "hard link")),
            T::Char | T::Block => return Err(Refused::Kind(name, "device")),
            T::Fifo => return Err(Refused::Kind(name, "FIFO")),
            _ => return Err(Refused::Kind(name, "special entry")),
        }
        if path.as_os_str().is_empty() {
            continue;
        }
        // `unpack_in` also refuses to write through a link unpacked before (its parent
        // must resolve inside `into`).
        if !entry.unpack_in(into).map_err(|e| {
            if e.to_string().contains("outside of destination") {
                Refused::Escapes(name.clone(), "written through a link")
            } else {
                Refused::Io(e)
            }
        })? {
            return Err(Refused::Escapes(name, "a path out of it"));
        }
        count += 1;
    }
    // The end of the tar stream and of the gzip member.
    let mut gz = tar.into_inner();
    io::copy(&mut gz, &mut io::sink())?;
    links_resolve_inside(into)?;
    Ok(count)
}

/// Every link below `into` resolves to something inside it: a lexical check of each target
/// cannot see links made of other links (`a -> .`, `x -> a/a/a/..`).
fn links_resolve_inside(into: &Path) -> Result<(), Refused> {
    let root = std::fs::canonicalize(into)?;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let t = e.file_type()?;
            let path = e.path();
            let name = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            if t.is_symlink() {
                match std::fs::canonicalize(&path) {
                    Ok(resolved) if resolved.starts_with(&root) => {}
                    Ok(_) => return Err(Refused::Escapes(name, "a link resolving out of it")),
                    Err(_) => return Err(Refused::Kind(name, "link to nothing")),
                }
            } else if t.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// Removes what is in `dir` (not `dir`, a mount point).
fn clear(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let _ = if is_dir {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use substratus_tests::archives::{Entry as E, raw_tar_gz as archive};

    /// Unpacks `bytes` (as uploaded, with their md5) into a fresh folder inside a parent
    /// folder that stands for everything outside the context.
    fn run(bytes: &[u8]) -> (Result<usize, Refused>, tempfile::TempDir) {
        let outside = tempfile::tempdir().unwrap();
        let file = outside.path().join("latest.tar.gz");
        std::fs::write(&file, bytes).unwrap();
        let into = outside.path().join("workspace");
        std::fs::create_dir(&into).unwrap();
        let md5 = substratus_core::names::hex(&md5::Md5::digest(bytes));
        (unpack_context(&file, &md5, &into), outside)
    }

    /// Every file below `dir`, relative.
    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if e.file_type().unwrap().is_dir() {
                    stack.push(p.clone());
                }
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_plain_context_is_unpacked_with_its_relative_links() {
        let bytes = archive(&[
            E::File("Dockerfile", b"FROM busybox\n"),
            E::Dir("src/"),
            E::File("./src/train.py", b"print(1)\n"),
            E::Symlink("src/main.py", "train.py"),
            E::Symlink("entry.py", "src/../src/train.py"),
        ]);
        let (res, outside) = run(&bytes);
        assert_eq!(res.unwrap(), 5);
        let ws = outside.path().join("workspace");
        assert_eq!(
            std::fs::read_to_string(ws.join("src/main.py")).unwrap(),
            "print(1)\n"
        );
        assert_eq!(
            files(&ws),
            [
                "Dockerfile",
                "entry.py",
                "src",
                "src/main.py",
                "src/train.py"
            ]
        );
    }

    #[test]
    fn entries_that_leave_the_context_are_refused_and_nothing_is_written_outside() {
        let cases: Vec<(&str, Vec<E>)> = vec![
            ("..", vec![E::File("../escape.txt", b"x")]),
            ("nested ..", vec![E::File("src/../../escape.txt", b"x")]),
            ("absolute", vec![E::File("/tmp/escape.txt", b"x")]),
            ("absolute link", vec![E::Symlink("etc", "/etc")]),
            ("link up", vec![E::Symlink("up", "../..")]),
            ("link up, lexically", vec![E::Symlink("up", "a/../..")]),
            (
                "links of links",
                vec![E::Symlink("a", "."), E::Symlink("x", "a/a/a/..")],
            ),
            (
                "through links of links",
                vec![
                    E::Symlink("a", "."),
                    E::Symlink("x", "a/a/a/.."),
                    E::File("x/escape.txt", b"x"),
                ],
            ),
            ("hard link", vec![E::HardLink("passwd", "/etc/passwd")]),
            ("fifo", vec![E::Fifo("pipe")]),
        ];
        for (what, entries) in cases {
            let mut all = vec![E::File("Dockerfile", b"FROM busybox\n")];
            all.extend(entries);
            let (res, outside) = run(&archive(&all));
            let err = res.expect_err(what);
            assert!(
                matches!(err, Refused::Escapes(..) | Refused::Kind(..)),
                "{what}: {err}"
            );
            assert_eq!(
                files(outside.path()),
                ["latest.tar.gz", "workspace"],
                "{what}: something was written outside, or left in the workspace"
            );
        }
    }

    #[test]
    fn bytes_other_than_the_declared_ones_are_refused() {
        let bytes = archive(&[E::File("Dockerfile", b"FROM busybox\n")]);
        let outside = tempfile::tempdir().unwrap();
        let file = outside.path().join("latest.tar.gz");
        std::fs::write(&file, &bytes).unwrap();
        let into = outside.path().join("workspace");
        std::fs::create_dir(&into).unwrap();
        let err = unpack_context(&file, "0123456789abcdef0123456789abcdef", &into).unwrap_err();
        assert!(matches!(err, Refused::Md5 { .. }), "{err}");
        assert!(err.to_string().contains("upload again"), "{err}");
        assert!(
            files(&into).is_empty(),
            "the refused context was left behind"
        );
    }
}
