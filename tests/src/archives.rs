//! Build-context archives as an attacker writes them: a gzipped tar written header by header,
//! because tar libraries refuse to write names such as `../x`.

/// One entry of [`raw_tar_gz`].
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Fifo(&'a str),
}

/// A gzipped tar of `entries`, names and link targets written as given.
pub fn raw_tar_gz(entries: &[Entry]) -> Vec<u8> {
    let mut tar = Vec::new();
    for e in entries {
        let (name, kind, body, link): (&str, tar::EntryType, &[u8], &str) = match e {
            Entry::File(n, b) => (n, tar::EntryType::Regular, b, ""),
            Entry::Dir(n) => (n, tar::EntryType::Directory, b"", ""),
            Entry::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", t),
            Entry::HardLink(n, t) => (n, tar::EntryType::Link, b"", t),
            Entry::Fifo(n) => (n, tar::EntryType::Fifo, b"", ""),
        };
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(body);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).expect("writing to memory");
    gz.finish().expect("writing to memory")
}
