//! Namespace tenancy on GKE (`TENANCY=namespace`). Pods act as their own Kubernetes service
//! accounts through Workload Identity Federation for GKE: no Google service account is
//! impersonated, so the bucket and the registry see the namespace's principal set,
//! `principalSet://…/workloadIdentityPools/<project>.svc.id.goog/namespace/<ns>`. The
//! operator grants that set:
//!
//! - `roles/storage.objectUser` on the bucket under an IAM condition that allows objects
//!   only inside the namespace's folder (`namespaces/<ns>/`); the bucket itself stays
//!   listable, since Cloud Storage checks `objects.list` on the bucket, not on a prefix
//!   (a tenant sees object names of other namespaces, never their contents);
//! - `roles/artifactregistry.writer` on an Artifact Registry repository of its own,
//!   `<repository>-<ns>`, which the operator creates.

use serde_json::{Value, json};
use substratus_core::cloud::BucketUrl;

/// Read and write objects (and list the bucket).
pub const OBJECT_USER: &str = "roles/storage.objectUser";
/// Push and pull images of one repository.
pub const REGISTRY_WRITER: &str = "roles/artifactregistry.writer";
/// Longest Artifact Registry repository ID.
const MAX_REPOSITORY: usize = 63;

/// The IAM member standing for every Kubernetes service account of `namespace`.
pub fn namespace_member(project_number: &str, project: &str, namespace: &str) -> String {
    format!(
        "principalSet://iam.googleapis.com/projects/{project_number}/locations/global/\
         workloadIdentityPools/{project}.svc.id.goog/namespace/{namespace}"
    )
}

/// The IAM condition allowing only objects in `folder` (the namespace's folder of the
/// bucket), plus the bucket itself for listing.
pub fn folder_condition(namespace: &str, folder: &BucketUrl) -> Value {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let objects = format!(
        "projects/_/buckets/{}/objects/{}/",
        folder.bucket, folder.path
    );
    json!({
        "title": format!("substratus-{namespace}"),
        "description": format!("Substratus: namespace {namespace} reaches only its folder"),
        "expression": format!(
            "resource.type == \"storage.googleapis.com/Bucket\" || \
             resource.name.startsWith(\"{}\")",
            quote(&objects)
        ),
    })
}

/// The repository of `namespace`: `<base>-<namespace>`, or with the namespace shortened and
/// a hash of it when that is longer than Artifact Registry allows.
pub fn namespace_repository(base: &str, namespace: &str) -> String {
    substratus_core::names::per_namespace(base, namespace, MAX_REPOSITORY)
}

/// An Artifact Registry Docker repository: `<location>-docker.pkg.dev/<project>/<id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    pub location: String,
    pub project: String,
    pub id: String,
}

impl Repository {
    /// Parses `REGISTRY_URL`; anything else is refused, naming the setting.
    pub fn parse(registry: &str) -> Result<Repository, String> {
        let parts: Vec<&str> = registry.trim_end_matches('/').split('/').collect();
        let location = parts
            .first()
            .and_then(|h| h.strip_suffix("-docker.pkg.dev"))
            .filter(|l| !l.is_empty());
        match (location, parts.as_slice()) {
            (Some(location), [_, project, id]) if !project.is_empty() && !id.is_empty() => {
                Ok(Repository {
                    location: location.to_owned(),
                    project: (*project).to_owned(),
                    id: (*id).to_owned(),
                })
            }
            _ => Err(format!(
                "REGISTRY_URL: {registry:?} is not an Artifact Registry repository \
                 (<location>-docker.pkg.dev/<project>/<repository>), which TENANCY=namespace \
                 needs to give each namespace a repository of its own"
            )),
        }
    }

    /// The repository of `namespace`, next to this one.
    pub fn of_namespace(&self, namespace: &str) -> Repository {
        Repository {
            id: namespace_repository(&self.id, namespace),
            ..self.clone()
        }
    }

    /// `projects/<project>/locations/<location>/repositories/<id>`.
    pub fn resource(&self) -> String {
        format!(
            "projects/{}/locations/{}/repositories/{}",
            self.project, self.location, self.id
        )
    }

    /// Where images of this repository are pushed.
    pub fn url(&self) -> String {
        format!(
            "{}-docker.pkg.dev/{}/{}",
            self.location, self.project, self.id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_granted_its_folder_only() {
        let folder = BucketUrl::parse("gs://artifacts/root/namespaces/team-a").unwrap();
        let c = folder_condition("team-a", &folder);
        assert_eq!(
            c["expression"],
            "resource.type == \"storage.googleapis.com/Bucket\" || \
             resource.name.startsWith(\"projects/_/buckets/artifacts/objects/root/namespaces/team-a/\")"
        );
        // The trailing slash keeps team-a from reaching team-ab's folder.
        assert!(!c["expression"].as_str().unwrap().contains("team-a\")"));
        assert_eq!(
            namespace_member("123", "p", "team-a"),
            "principalSet://iam.googleapis.com/projects/123/locations/global/\
             workloadIdentityPools/p.svc.id.goog/namespace/team-a"
        );
    }

    #[test]
    fn each_namespace_gets_a_repository_whose_id_fits() {
        let r = Repository::parse("us-central1-docker.pkg.dev/proj-1/substratus").unwrap();
        assert_eq!(
            r.resource(),
            "projects/proj-1/locations/us-central1/repositories/substratus"
        );
        let a = r.of_namespace("team-a");
        assert_eq!(
            a.url(),
            "us-central1-docker.pkg.dev/proj-1/substratus-team-a"
        );
        let long = "n".repeat(63);
        let l = r.of_namespace(&long);
        assert!(l.id.len() <= MAX_REPOSITORY, "{}", l.id);
        assert_ne!(l.id, r.of_namespace(&"n".repeat(62)).id);
        assert!(
            l.id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        for bad in [
            "gcr.io/proj/x",
            "us-docker.pkg.dev/proj",
            "us-docker.pkg.dev/p/r/extra",
        ] {
            let err = Repository::parse(bad).unwrap_err();
            assert!(err.starts_with("REGISTRY_URL:"), "{err}");
        }
    }
}
