//! The committed CRD YAML must be exactly what the Rust types generate.

use std::path::Path;

#[test]
fn committed_crd_yaml_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("generated/crds.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/generated/crds.yaml is committed");
    let generated = substratus_crds::crds_yaml().expect("CRDs serialise to YAML");
    assert!(
        committed == generated,
        "{} is out of date; regenerate it with\n  cargo run -p substratus-operator -- crd > crds/generated/crds.yaml",
        path.display()
    );
}

#[test]
fn generation_is_deterministic() {
    let a = substratus_crds::crds_yaml().unwrap();
    let b = substratus_crds::crds_yaml().unwrap();
    assert_eq!(a, b);
}
