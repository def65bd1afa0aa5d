//! Namespace tenancy on AKS (`TENANCY=namespace`): each namespace's workloads act as a
//! user-assigned managed identity of their own, which the operator creates (in a resource
//! group of its own) and federates with the namespace's role accounts only. Azure checks every
//! request against the identity's role assignments, which the operator makes with attribute
//! conditions (Azure ABAC):
//!
//! - Storage Blob Data Contributor on the artifacts container, allowed to read, write and
//!   delete only blobs whose path starts with the namespace's folder (`namespaces/<ns>/`) and
//!   to list only under that prefix;
//! - Container Registry Repository Writer on the registry, allowed to read and push only
//!   repositories under `<repository>/<ns>/`, where the namespace's images go. The registry
//!   must be in "RBAC Registry + ABAC Repository Permissions" mode (`terraform/azure`), in
//!   which ACR evaluates the condition.
//!
//! What is pure lives here: names, scopes, conditions and the request bodies, so that the ARM
//! calls in [`super::arm`] are thin.

use md5::{Digest, Md5};
use serde_json::{Value, json};

/// `Storage Blob Data Contributor`.
pub const BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";
/// `Container Registry Repository Writer`: read and write repositories, no delete, no catalog
/// listing (an ABAC-enabled role).
pub const REPOSITORY_WRITER: &str = "2a1e307c-b015-4ebd-883e-5b7698a07328";
/// Tag naming the namespace a managed identity serves.
pub const NAMESPACE_TAG: &str = "substratus-namespace";
/// Tag marking what the operator created.
pub const MANAGED_BY_TAG: &str = "managed-by";
pub const MANAGED_BY: &str = "substratus";
/// Longest managed identity name Azure accepts.
const MAX_IDENTITY_NAME: usize = 128;

/// The managed identity of `namespace`: `<base>-<namespace>`, shortened with a hash of the
/// namespace when longer than Azure allows.
pub fn identity_name(base: &str, namespace: &str) -> String {
    substratus_core::names::per_namespace(base, namespace, MAX_IDENTITY_NAME)
}

/// The tags of the identity the operator creates for `namespace`.
pub fn identity_tags(namespace: &str) -> Value {
    json!({MANAGED_BY_TAG: MANAGED_BY, NAMESPACE_TAG: namespace})
}

/// Whether an identity found under the name of `namespace`'s is the operator's for it; an
/// identity someone else made is never taken over (its federated credentials would let
/// the namespace act as it).
pub fn is_ours(identity: &Value, namespace: &str) -> bool {
    let tags = &identity["tags"];
    tags[MANAGED_BY_TAG] == MANAGED_BY && tags[NAMESPACE_TAG] == namespace
}

/// Where the cluster's storage and registry are, in Azure resource IDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scopes {
    pub subscription: String,
    /// The resource group of the storage account and the registry.
    pub resource_group: String,
    pub storage_account: String,
    pub container: String,
    /// The registry's name (`<name>.azurecr.io`).
    pub registry: String,
    /// The repository path images go under (`substratus` of `<name>.azurecr.io/substratus`;
    /// empty when images go at the registry's root).
    pub repository: String,
}

impl Scopes {
    /// The registry's name and repository path from `REGISTRY_URL`; anything but an ACR
    /// login server is refused, naming the setting.
    pub fn registry_of(registry_url: &str) -> Result<(String, String), String> {
        let url = registry_url.trim_end_matches('/');
        let (host, path) = url.split_once('/').unwrap_or((url, ""));
        match host.strip_suffix(".azurecr.io") {
            Some(name) if !name.is_empty() && !name.contains('.') => {
                Ok((name.to_owned(), path.to_owned()))
            }
            _ => Err(format!(
                "REGISTRY_URL: {registry_url:?} is not an Azure Container Registry \
                 (<name>.azurecr.io[/<repository>]), which TENANCY=namespace needs to give each \
                 namespace repositories of its own"
            )),
        }
    }

    fn group(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription, self.resource_group
        )
    }

    /// The artifacts container.
    pub fn container_scope(&self) -> String {
        format!(
            "{}/providers/Microsoft.Storage/storageAccounts/{}/blobServices/default/containers/{}",
            self.group(),
            self.storage_account,
            self.container
        )
    }

    /// The registry.
    pub fn registry_scope(&self) -> String {
        format!(
            "{}/providers/Microsoft.ContainerRegistry/registries/{}",
            self.group(),
            self.registry
        )
    }

    /// The repository prefix of `namespace`'s images: `<repository>/<ns>/`.
    pub fn repository_prefix(&self, namespace: &str) -> String {
        if self.repository.is_empty() {
            format!("{namespace}/")
        } else {
            format!("{}/{namespace}/", self.repository)
        }
    }

    /// A built-in role, as role assignments name it.
    pub fn role_definition(&self, role: &str) -> String {
        format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role}",
            self.subscription
        )
    }
}

const BLOB: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs";
const REPOSITORY: &str = "Microsoft.ContainerRegistry/registries/repositories";

/// Storage Blob Data Contributor's blob actions allowed only under `folder` (the path of the
/// namespace's folder inside the container, without a trailing slash), and listing only
/// with a prefix under it. The trailing slash keeps `team-a` from reaching `team-ab`.
pub fn blob_condition(container: &str, folder: &str) -> String {
    let folder = format!("{}/", folder.trim_end_matches('/'));
    format!(
        "((!(ActionMatches{{'{BLOB}/delete'}}) \
         AND !(ActionMatches{{'{BLOB}/read'}} AND NOT SubOperationMatches{{'Blob.List'}}) \
         AND !(ActionMatches{{'{BLOB}/write'}}) \
         AND !(ActionMatches{{'{BLOB}/add/action'}})) \
         OR (@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals '{container}' \
         AND @Resource[{BLOB}:path] StringStartsWith '{folder}')) \
         AND \
         ((!(ActionMatches{{'{BLOB}/read'}} AND SubOperationMatches{{'Blob.List'}})) \
         OR (@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals '{container}' \
         AND @Request[{BLOB}:prefix] StringStartsWith '{folder}'))"
    )
}

/// Container Registry Repository Writer's actions allowed only on repositories under
/// `prefix` (ends with `/`).
pub fn repository_condition(prefix: &str) -> String {
    format!(
        "((!(ActionMatches{{'{REPOSITORY}/content/read'}}) \
         AND !(ActionMatches{{'{REPOSITORY}/content/write'}}) \
         AND !(ActionMatches{{'{REPOSITORY}/metadata/read'}}) \
         AND !(ActionMatches{{'{REPOSITORY}/metadata/write'}})) \
         OR (@Request[{REPOSITORY}:name] StringStartsWithIgnoreCase '{prefix}'))"
    )
}

/// One role assignment a namespace's identity needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The resource ID it applies to.
    pub scope: String,
    /// A built-in role's ID.
    pub role: &'static str,
    pub condition: String,
}

impl Grant {
    /// The assignment's name: a GUID derived from scope, role and principal, so that a
    /// retried create writes the same assignment.
    pub fn name(&self, principal_id: &str) -> String {
        let h = substratus_core::names::hex(&Md5::digest(
            format!("{}|{}|{principal_id}", self.scope, self.role).as_bytes(),
        ));
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// The body of the role assignment's PUT.
    pub fn body(&self, scopes: &Scopes, principal_id: &str, namespace: &str) -> Value {
        json!({"properties": {
            "roleDefinitionId": scopes.role_definition(self.role),
            "principalId": principal_id,
            // Set, so that Azure does not look the new identity up in a directory that may
            // not have replicated it yet.
            "principalType": "ServicePrincipal",
            "condition": self.condition,
            "conditionVersion": "2.0",
            "description": format!("Substratus: namespace {namespace} reaches only its own folder and repositories"),
        }})
    }

    /// Whether an existing assignment (ARM's answer) is this grant for `principal_id`.
    pub fn is_met_by(&self, existing: &Value, scopes: &Scopes, principal_id: &str) -> bool {
        let p = &existing["properties"];
        p["principalId"] == principal_id
            && p["condition"] == self.condition.as_str()
            && p["roleDefinitionId"]
                .as_str()
                .is_some_and(|r| r.eq_ignore_ascii_case(&scopes.role_definition(self.role)))
    }
}

/// What `namespace`'s identity is granted: its folder of the container (`folder` is the
/// folder's path inside the container) and its repositories.
pub fn grants(scopes: &Scopes, namespace: &str, folder: &str) -> [Grant; 2] {
    [
        Grant {
            scope: scopes.container_scope(),
            role: BLOB_DATA_CONTRIBUTOR,
            condition: blob_condition(&scopes.container, folder),
        },
        Grant {
            scope: scopes.registry_scope(),
            role: REPOSITORY_WRITER,
            condition: repository_condition(&scopes.repository_prefix(namespace)),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes() -> Scopes {
        let (registry, repository) = Scopes::registry_of("subx.azurecr.io/substratus").unwrap();
        Scopes {
            subscription: "sub-1".into(),
            resource_group: "rg-1".into(),
            storage_account: "acct".into(),
            container: "artifacts".into(),
            registry,
            repository,
        }
    }

    #[test]
    fn a_namespace_is_granted_its_folder_and_its_repositories_only() {
        let s = scopes();
        let [blob, acr] = grants(&s, "team-a", "root/namespaces/team-a");
        assert_eq!(
            blob.scope,
            "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Storage/storageAccounts/acct/blobServices/default/containers/artifacts"
        );
        assert_eq!(blob.role, BLOB_DATA_CONTRIBUTOR);
        // Reads, writes, deletes and lists each name the folder with its trailing slash.
        assert_eq!(
            blob.condition
                .matches("StringStartsWith 'root/namespaces/team-a/'")
                .count(),
            2,
            "{}",
            blob.condition
        );
        for action in ["/delete'", "/read'", "/write'", "/add/action'", "Blob.List"] {
            assert!(blob.condition.contains(action), "{action}");
        }
        assert!(!blob.condition.contains("team-a'"), "no prefix without '/'");
        assert_eq!(
            acr.scope,
            "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.ContainerRegistry/registries/subx"
        );
        assert_eq!(acr.role, REPOSITORY_WRITER);
        assert!(
            acr.condition
                .ends_with("@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'substratus/team-a/'))"),
            "{}",
            acr.condition
        );
        let body = acr.body(&s, "pid-a", "team-a");
        assert_eq!(
            body["properties"]["roleDefinitionId"],
            "/subscriptions/sub-1/providers/Microsoft.Authorization/roleDefinitions/2a1e307c-b015-4ebd-883e-5b7698a07328"
        );
        assert_eq!(body["properties"]["conditionVersion"], "2.0");
        assert_eq!(body["properties"]["principalType"], "ServicePrincipal");
        assert!(acr.is_met_by(&body, &s, "pid-a"));
        assert!(!acr.is_met_by(&body, &s, "pid-b"));
        let [_, acr_b] = grants(&s, "team-b", "root/namespaces/team-b");
        assert!(!acr_b.is_met_by(&body, &s, "pid-a"), "another condition");
    }

    #[test]
    fn names_are_stable_distinct_and_valid() {
        let s = scopes();
        let [blob, acr] = grants(&s, "team-a", "namespaces/team-a");
        let name = blob.name("pid-a");
        assert_eq!(name, blob.name("pid-a"));
        assert_ne!(name, blob.name("pid-b"));
        assert_ne!(name, acr.name("pid-a"));
        assert_eq!(name.len(), 36);
        assert_eq!(name.matches('-').count(), 4);
        assert_eq!(identity_name("substratus", "team-a"), "substratus-team-a");
        let long = identity_name(&"b".repeat(70), &"n".repeat(63));
        assert!(long.len() <= MAX_IDENTITY_NAME, "{long}");
        assert_ne!(long, identity_name(&"b".repeat(70), &"n".repeat(62)));
        assert!(is_ours(&json!({"tags": identity_tags("team-a")}), "team-a"));
        assert!(!is_ours(
            &json!({"tags": identity_tags("team-a")}),
            "team-b"
        ));
        assert!(!is_ours(&json!({"tags": {}}), "team-a"));
    }

    #[test]
    fn only_an_acr_login_server_is_a_registry() {
        assert_eq!(
            Scopes::registry_of("subx.azurecr.io").unwrap(),
            ("subx".into(), String::new())
        );
        assert_eq!(scopes().repository_prefix("a"), "substratus/a/");
        for bad in [
            "gcr.io/p/r",
            "azurecr.io/x",
            "a.b.azurecr.io/x",
            ".azurecr.io",
        ] {
            let err = Scopes::registry_of(bad).unwrap_err();
            assert!(err.starts_with("REGISTRY_URL:"), "{err}");
        }
    }
}
