//! The docs keep up with the code: every condition reason the operator writes has its entry
//! in `docs/troubleshooting.md`, and the API reference is the one the CRDs generate.

use substratus_tests::manifests::repo_root;

/// The values of the `pub const NAME: &str = "Value";` lines of the `pub mod reasons` block
/// of a source file.
fn reasons_in(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    let block = text
        .split("pub mod reasons {")
        .nth(1)
        .unwrap_or_else(|| panic!("{path} has a reasons module"));
    let block = &block[..block.find("\n}").unwrap()];
    block
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("pub const ")?;
            let (_, value) = rest.split_once(": &str = \"")?;
            Some(value.trim_end_matches("\";").to_owned())
        })
        .collect()
}

#[test]
fn every_reason_the_operator_writes_is_in_the_troubleshooting_guide() {
    let mut reasons = reasons_in("core/src/conditions.rs");
    reasons.extend(reasons_in("core/src/reconcile/failure.rs"));
    assert!(
        reasons.len() >= 35,
        "read {} reasons: {reasons:?}",
        reasons.len()
    );
    let guide = std::fs::read_to_string(repo_root().join("docs/troubleshooting.md")).unwrap();
    let headings: Vec<&str> = guide
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .flat_map(|h| h.split(" / "))
        .collect();
    let missing: Vec<_> = reasons
        .iter()
        .filter(|r| !headings.contains(&r.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "reasons without an entry in docs/troubleshooting.md: {missing:?}"
    );
}

#[test]
fn the_api_reference_is_the_one_the_crds_generate() {
    let committed = std::fs::read_to_string(repo_root().join("docs/api.md")).unwrap();
    assert!(
        committed == substratus_crds::api_reference(),
        "docs/api.md is out of date: run `cargo run -p substratus-operator -- api-reference > docs/api.md`"
    );
}
