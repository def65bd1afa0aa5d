//! Reading YAML manifests from disk, and comparing what a round trip kept.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The test corpus: manifests in the shapes users write (`tests/corpus/`).
pub fn corpus_dir() -> PathBuf {
    repo_root().join("tests/corpus")
}

/// Every `*.yaml`/`*.yml` file below `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The documents of a YAML file as JSON values (empty documents skipped).
pub fn documents(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // Empty and null documents are skipped by the parser.
    serde_saphyr::from_multiple(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Paths (like `spec.resources.gpu.type`) present in `original` whose value is missing or
/// different in `roundtrip`. Empty when the round trip kept every field of the original.
pub fn lost_fields(original: &Value, roundtrip: &Value) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(am), Value::Object(bm)) => {
                for (k, av) in am {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match bm.get(k) {
                        Some(bv) => walk(&p, av, bv, out),
                        None => out.push(p),
                    }
                }
            }
            _ if a == b => {}
            _ => out.push(path.to_owned()),
        }
    }
    let mut out = Vec::new();
    walk("", original, roundtrip, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::lost_fields;
    use serde_json::json;

    #[test]
    fn lost_fields_names_dropped_and_changed_paths() {
        let original = json!({"spec": {"a": 1, "b": {"c": "x"}, "d": [1]}});
        let roundtrip = json!({"spec": {"a": 1, "b": {"c": "y"}, "e": 2}});
        assert_eq!(
            lost_fields(&original, &roundtrip),
            vec!["spec.b.c", "spec.d"]
        );
        assert!(lost_fields(&original, &original).is_empty());
    }
}
