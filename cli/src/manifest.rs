//! Reading manifests: a file, every `*.yaml`/`*.yml` of a directory (not recursive), or an
//! http(s) URL; documents split on `---`; Substratus kinds recognised by name.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub use substratus_crds::Kind;

/// Splits a YAML stream into its non-empty documents.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<Value>> {
    // Empty and null documents are skipped by the parser.
    serde_saphyr::from_multiple::<Value>(text).with_context(|| format!("{origin}: not valid YAML"))
}

/// Reads `source`: a file, a directory's `*.yaml`, or an http(s) URL (30 s timeout).
pub async fn read(source: &str) -> Result<Vec<Value>> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let text = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?
            .get(source)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("fetching {source}"))?
            .text()
            .await
            .with_context(|| format!("fetching {source}"))?;
        return parse_documents(&text, source);
    }
    let path = Path::new(source);
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("reading {source}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            out.extend(parse_documents(&text, &f.display().to_string())?);
        }
        return Ok(out);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {source}"))?;
    parse_documents(&text, source)
}

/// The first object of the first of `kinds` present.
pub fn pick(docs: &[Value], kinds: &[Kind]) -> Option<(Kind, Value)> {
    kinds.iter().find_map(|k| {
        docs.iter()
            .find(|d| Kind::of(d) == Some(*k))
            .map(|d| (*k, d.clone()))
    })
}

/// `metadata.name`, or an error naming the kind.
pub fn name_of(obj: &Value) -> Result<String> {
    match obj["metadata"]["name"].as_str() {
        Some(n) if !n.is_empty() => Ok(n.to_owned()),
        _ => bail!(
            "a {} manifest without metadata.name",
            obj["kind"].as_str().unwrap_or("")
        ),
    }
}

/// `KIND/NAME` or `KIND` (for `get`/`delete`).
pub fn parse_scope(s: &str) -> Result<(Kind, Option<String>)> {
    let (k, n) = match s.split_once('/') {
        Some((k, n)) => (k, Some(n.to_owned())),
        None => (s, None),
    };
    let kind = Kind::parse(k).with_context(|| {
        format!("unknown kind {k:?}: expected models, datasets, servers or notebooks")
    })?;
    Ok((kind, n.filter(|n| !n.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_kinds() {
        let docs = parse_documents(
            "apiVersion: v1\nkind: ConfigMap\n---\n---\napiVersion: substratus.ai/v1\nkind: Dataset\nmetadata: {name: d}\n---\napiVersion: substratus.ai/v1\nkind: Model\nmetadata: {name: m}\n",
            "t",
        )
        .unwrap();
        assert_eq!(docs.len(), 3);
        let (k, m) = pick(&docs, &[Kind::Model, Kind::Dataset]).unwrap();
        assert_eq!((k, name_of(&m).unwrap()), (Kind::Model, "m".to_owned()));
        let (k, _) = pick(&docs, &[Kind::Notebook, Kind::Dataset]).unwrap();
        assert_eq!(k, Kind::Dataset);
        assert!(pick(&docs, &[Kind::Server]).is_none());
        assert!(
            parse_documents("a: [", "bad.yaml")
                .unwrap_err()
                .to_string()
                .contains("bad.yaml")
        );
    }

    #[test]
    fn scopes() {
        assert_eq!(
            parse_scope("models/m").unwrap(),
            (Kind::Model, Some("m".into()))
        );
        assert_eq!(parse_scope("nb").unwrap(), (Kind::Notebook, None));
        assert!(parse_scope("pods/x").is_err());
    }
}
