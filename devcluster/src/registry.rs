//! Pushing a docker-archive ([`crate::image`]) to a registry over the Docker Registry HTTP
//! API v2 (plain HTTP, no authentication: the local cluster's registry inside the real node's
//! namespace), as an OCI image manifest with an uncompressed layer.
//!
//! The calls: `HEAD /v2/<name>/blobs/<digest>` (skip what is there), `POST
//! /v2/<name>/blobs/uploads/` then `PUT <location>?digest=<digest>` (a monolithic upload),
//! `PUT /v2/<name>/manifests/<tag>`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One HTTP answer: status and headers (lower-case names).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a status line and headers, then the body (by Content-Length, else to the end).
fn read_answer(stream: impl Read) -> Result<(Answer, Vec<u8>)> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let answer = Answer { status, headers };
    let mut body = Vec::new();
    match answer
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        Some(n) => {
            r.take(n).read_to_end(&mut body)?;
        }
        None => {
            r.read_to_end(&mut body)?;
        }
    }
    Ok((answer, body))
}

/// A registry reached through `dial` (which opens a connection to it), named `host` in
/// requests.
pub struct Registry<D> {
    pub host: String,
    pub dial: D,
}

impl<D: Fn() -> std::io::Result<TcpStream>> Registry<D> {
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(Answer, Vec<u8>)> {
        let mut s = (self.dial)().with_context(|| format!("connecting to {}", self.host))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        read_answer(s)
    }

    fn push_blob(&self, name: &str, data: &[u8]) -> Result<String> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        let (a, _) = self.request("HEAD", &format!("/v2/{name}/blobs/{digest}"), &[], &[])?;
        if a.status == 200 {
            return Ok(digest);
        }
        let (a, body) = self.request("POST", &format!("/v2/{name}/blobs/uploads/"), &[], &[])?;
        if a.status != 202 {
            bail!(
                "starting an upload to {name}: HTTP {}: {}",
                a.status,
                String::from_utf8_lossy(&body)
            );
        }
        let location = a
            .header("location")
            .context("the registry gave no upload location")?;
        // The location may be absolute; keep its path and query.
        let path = match location.find("://") {
            Some(i) => {
                let rest = &location[i + 3..];
                rest.find('/').map(|j| &rest[j..]).unwrap_or("/")
            }
            None => location,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let (a, body) = self.request(
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        )?;
        if a.status != 201 {
            bail!(
                "uploading {digest} to {name}: HTTP {}: {}",
                a.status,
                String::from_utf8_lossy(&body)
            );
        }
        Ok(digest)
    }

    /// Pushes the image of a docker-archive as `<name>:<tag>`; returns the manifest digest.
    pub fn push_archive(&self, archive: &Path, name: &str, tag: &str) -> Result<String> {
        let mut files = std::collections::BTreeMap::new();
        let mut a = tar::Archive::new(
            std::fs::File::open(archive).with_context(|| format!("{}", archive.display()))?,
        );
        for e in a.entries()? {
            let mut e = e?;
            let path = e.path()?.to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data)?;
            files.insert(path, data);
        }
        let manifest: Value = serde_json::from_slice(
            files
                .get("manifest.json")
                .context("the archive has no manifest.json")?,
        )?;
        let config_name = manifest[0]["Config"]
            .as_str()
            .context("manifest.json names no config")?;
        let config = files.get(config_name).context("the config is missing")?;
        let mut layers = Vec::new();
        for l in manifest[0]["Layers"].as_array().into_iter().flatten() {
            let l = l.as_str().context("a layer name")?;
            let data = files
                .get(l)
                .with_context(|| format!("layer {l} is missing"))?;
            let digest = self.push_blob(name, data)?;
            layers.push(json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest,
                "size": data.len(),
            }));
        }
        let config_digest = self.push_blob(name, config)?;
        let oci = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers,
        }))?;
        let (a, body) = self.request(
            "PUT",
            &format!("/v2/{name}/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &oci,
        )?;
        if a.status != 201 {
            bail!(
                "putting the manifest {name}:{tag}: HTTP {}: {}",
                a.status,
                String::from_utf8_lossy(&body)
            );
        }
        Ok(format!("sha256:{}", hex::encode(Sha256::digest(&oci))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_with_its_headers_and_sized_body() {
        let text = b"HTTP/1.1 202 Accepted\r\nLocation: /v2/x/blobs/uploads/u?_state=s\r\nContent-Length: 2\r\n\r\nokEXTRA";
        let (a, body) = read_answer(&text[..]).unwrap();
        assert_eq!(a.status, 202);
        assert_eq!(a.header("location"), Some("/v2/x/blobs/uploads/u?_state=s"));
        assert_eq!(body, b"ok");
        assert!(read_answer(&b"garbage\r\n\r\n"[..]).is_err());
    }
}
