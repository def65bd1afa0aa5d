//! The release path, checked without publishing: the krew manifest the release workflow writes,
//! the image build's context and caching, and the image the chart and Terraform install.

use std::process::Command;

use serde_json::Value;
use substratus_tests::manifests::repo_root;

#[test]
fn the_krew_manifest_names_every_platform_with_its_checksum() {
    let dist = tempfile::tempdir().unwrap();
    for os in ["linux", "darwin"] {
        for arch in ["amd64", "arm64"] {
            let name = format!("substratus-cli-v1.2.3-{os}-{arch}");
            let sum = format!("{:064x}  {name}.tar.gz\n", os.len() * 10 + arch.len());
            std::fs::write(dist.path().join(format!("{name}.tar.gz.sha256")), sum).unwrap();
        }
    }
    let out = Command::new(repo_root().join("deploy/krew/manifest.sh"))
        .args(["v1.2.3", "substratusai/substratus"])
        .arg(dist.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_saphyr::from_slice(&out.stdout).unwrap();
    assert_eq!(m["kind"], "Plugin");
    assert_eq!(m["spec"]["version"], "v1.2.3");
    let platforms = m["spec"]["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 4);
    for p in platforms {
        let (os, arch) = (
            p["selector"]["matchLabels"]["os"].as_str().unwrap(),
            p["selector"]["matchLabels"]["arch"].as_str().unwrap(),
        );
        let name = format!("substratus-cli-v1.2.3-{os}-{arch}");
        assert_eq!(
            p["uri"],
            format!(
                "https://github.com/substratusai/substratus/releases/download/v1.2.3/{name}.tar.gz"
            )
        );
        assert_eq!(p["sha256"], format!("{:064x}", os.len() * 10 + arch.len()));
        assert_eq!(p["files"][0]["from"], format!("{name}/kubectl-notebook"));
    }
    // A missing archive checksum fails the script rather than writing an empty one.
    std::fs::remove_file(
        dist.path()
            .join("substratus-cli-v1.2.3-darwin-arm64.tar.gz.sha256"),
    )
    .unwrap();
    let out = Command::new(repo_root().join("deploy/krew/manifest.sh"))
        .args(["v1.2.3", "substratusai/substratus"])
        .arg(dist.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a missing checksum must fail the release"
    );
}

#[test]
fn the_image_build_leaves_out_build_output_and_caches_dependencies() {
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for must in ["target/", ".git/", ".cluster/"] {
        assert!(rules.contains(&must), ".dockerignore leaves out {must}");
    }
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("--mount=type=cache,target=/usr/local/cargo/registry"));
    assert!(dockerfile.contains("--mount=type=cache,target=/src/target"));
    assert!(dockerfile.contains("FROM gcr.io/distroless/static-debian12:nonroot"));
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(dockerfile.contains("-unknown-linux-musl"), "a static build");
}

#[test]
fn the_chart_and_terraform_install_the_image_the_release_publishes() {
    let workflow =
        std::fs::read_to_string(repo_root().join(".github/workflows/release.yaml")).unwrap();
    assert!(workflow.contains("IMAGE: ghcr.io/${{ github.repository_owner }}/substratus-operator"));
    let published = "ghcr.io/substratusai/substratus-operator";
    let values =
        std::fs::read_to_string(repo_root().join("deploy/helm/substratus/values.yaml")).unwrap();
    assert!(
        values.contains(&format!("repository: {published}")),
        "the chart's default image"
    );
    for cloud in ["gcp", "aws", "azure"] {
        let vars =
            std::fs::read_to_string(repo_root().join(format!("terraform/{cloud}/variables.tf")))
                .unwrap();
        assert!(
            vars.contains(&format!("default     = \"{published}\"")),
            "terraform/{cloud}"
        );
    }
}
