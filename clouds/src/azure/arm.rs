//! The Azure Resource Manager calls of namespace tenancy: a namespace's managed identity
//! (found or created), its federated credentials and its role assignments. Thin: what each
//! request carries is decided in [`super::tenancy`] and [`super::fic`].

use reqwest::StatusCode;
use serde_json::{Value, json};
use substratus_core::cloud::CloudError;
use substratus_core::conditions::reasons;

use super::tenancy::{self, Grant, Scopes};
use crate::rest;

/// API version of managed identities and federated credentials.
pub const IDENTITY_API_VERSION: &str = "2023-01-31";
/// API version of role assignments (the first with conditions on every field used).
pub const ROLE_ASSIGNMENT_API_VERSION: &str = "2022-04-01";

/// A managed identity as the workloads and the blob CSI driver name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The client id (application id) tokens are requested for.
    pub client_id: String,
    /// The object id role assignments name.
    pub principal_id: String,
}

/// ARM as one caller with one token.
pub struct Arm<'a> {
    pub http: &'a reqwest::Client,
    /// `https://management.azure.com`.
    pub endpoint: &'a str,
    pub token: String,
}

fn permanent(message: String) -> CloudError {
    CloudError::Permanent {
        reason: reasons::CLOUD_ERROR,
        message,
    }
}

impl Arm<'_> {
    fn url(&self, path: &str, api_version: &str) -> String {
        format!(
            "{}{path}?api-version={api_version}",
            self.endpoint.trim_end_matches('/')
        )
    }

    /// The managed identity `name` in `group` for `namespace`: found, or created with the
    /// operator's tags in `location`. One of that name someone else made is refused.
    pub async fn namespace_identity(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        location: &str,
        namespace: &str,
    ) -> Result<Identity, CloudError> {
        let path = identity_path(subscription, group, name);
        let url = self.url(&path, IDENTITY_API_VERSION);
        let found = rest::json(
            self.http.get(&url).bearer_auth(&self.token),
            "reading the namespace's managed identity",
        )
        .await?;
        let identity = match found {
            Some(found) if tenancy::is_ours(&found, namespace) => found,
            Some(_) => {
                return Err(permanent(format!(
                    "managed identity {name} in resource group {group} exists and was not \
                     created by Substratus for namespace {namespace} (tags {}={} and {}={namespace}): \
                     it is never taken over; delete or rename it, or tag it so if it is meant for \
                     this namespace",
                    tenancy::MANAGED_BY_TAG,
                    tenancy::MANAGED_BY,
                    tenancy::NAMESPACE_TAG
                )));
            }
            None => {
                rest::json_found(
                    self.http.put(&url).bearer_auth(&self.token).json(
                        &json!({"location": location, "tags": tenancy::identity_tags(namespace)}),
                    ),
                    "creating the namespace's managed identity",
                )
                .await?
            }
        };
        let field = |k: &str| {
            identity["properties"][k]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    CloudError::Transient(format!("managed identity {name}: no properties.{k} yet"))
                })
        };
        Ok(Identity {
            client_id: field("clientId")?,
            principal_id: field("principalId")?,
        })
    }

    /// The federated credentials of the identity at `identity_path`.
    pub async fn credentials(&self, identity_path: &str) -> Result<Vec<Value>, CloudError> {
        let list = rest::json_found(
            self.http
                .get(self.url(
                    &format!("{identity_path}/federatedIdentityCredentials"),
                    IDENTITY_API_VERSION,
                ))
                .bearer_auth(&self.token),
            "listing the federated credentials of the managed identity",
        )
        .await?;
        Ok(list["value"].as_array().cloned().unwrap_or_default())
    }

    /// Creates the federated credential `name` on the identity at `identity_path`.
    pub async fn create_credential(
        &self,
        identity_path: &str,
        name: &str,
        issuer: &str,
        subject: &str,
    ) -> Result<(), CloudError> {
        rest::json_found(
            self.http
                .put(self.url(
                    &format!(
                        "{identity_path}/federatedIdentityCredentials/{}",
                        rest::segment(name)
                    ),
                    IDENTITY_API_VERSION,
                ))
                .bearer_auth(&self.token)
                .json(&json!({"properties": {
                    "issuer": issuer,
                    "subject": subject,
                    "audiences": [super::fic::AUDIENCE],
                }})),
            "creating a federated credential on the managed identity",
        )
        .await
        .map(drop)
    }

    /// Makes `grant` for `principal_id` exist: read, and written only when missing or
    /// different. Returns whether it wrote.
    pub async fn ensure_grant(
        &self,
        scopes: &Scopes,
        grant: &Grant,
        principal_id: &str,
        namespace: &str,
    ) -> Result<bool, CloudError> {
        let path = format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{}",
            grant.scope,
            grant.name(principal_id)
        );
        let url = self.url(&path, ROLE_ASSIGNMENT_API_VERSION);
        let what = format!("assigning role {} at {}", grant.role, grant.scope);
        let existing = rest::json(self.http.get(&url).bearer_auth(&self.token), &what).await?;
        if existing.is_some_and(|e| grant.is_met_by(&e, scopes, principal_id)) {
            return Ok(false);
        }
        let resp = self
            .http
            .put(&url)
            .bearer_auth(&self.token)
            .json(&grant.body(scopes, principal_id, namespace))
            .send()
            .await
            .map_err(|e| CloudError::Transient(format!("{what}: {e}")))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(true);
        }
        Err(assignment_error(&what, status, &body))
    }
}

/// The error a refused role assignment stands for. A new identity unknown to the directory
/// yet (`PrincipalNotFound`) is worth retrying; an assignment of the same role to the same
/// identity made by someone else (`RoleAssignmentExists`, under another name and maybe
/// without the condition) is not: the namespace could reach more than its folder.
pub fn assignment_error(what: &str, status: StatusCode, body: &str) -> CloudError {
    if body.contains("PrincipalNotFound") {
        return CloudError::Transient(format!(
            "{what}: the new managed identity is not known to the directory yet (retried)"
        ));
    }
    if body.contains("RoleAssignmentExists") {
        return permanent(format!(
            "{what}: the identity already holds this role there through an assignment \
             Substratus did not make, which may grant more than the namespace's own folder or \
             repositories; remove it"
        ));
    }
    rest::status_error(what, status, body)
}

/// `/subscriptions/…/userAssignedIdentities/<name>`.
pub fn identity_path(subscription: &str, group: &str, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
        rest::segment(subscription),
        rest::segment(group),
        rest::segment(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_principal_is_retried_and_a_foreign_assignment_is_not() {
        let e = assignment_error(
            "x",
            StatusCode::BAD_REQUEST,
            r#"{"error":{"code":"PrincipalNotFound"}}"#,
        );
        assert!(matches!(e, CloudError::Transient(_)), "{e}");
        let e = assignment_error(
            "x",
            StatusCode::CONFLICT,
            r#"{"error":{"code":"RoleAssignmentExists"}}"#,
        );
        assert!(matches!(e, CloudError::Permanent { .. }), "{e}");
        assert!(e.to_string().contains("remove it"), "{e}");
        let e = assignment_error("x", StatusCode::FORBIDDEN, "AuthorizationFailed");
        assert!(matches!(e, CloudError::Permanent { .. }), "{e}");
    }
}
