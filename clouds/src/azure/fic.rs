//! Federated identity credentials: AKS workload identity lets a Kubernetes service account
//! act as a user-assigned managed identity when the identity has a federated credential with
//! issuer = the cluster's OIDC issuer and subject = `system:serviceaccount:<ns>:<ksa>`.
//!
//! Azure allows at most 20 federated credentials per managed identity: the 21st service
//! account cannot be bound to the same identity. We make one credential per namespace and
//! service account, so that is about 20 namespaces × roles in use per identity; past it the
//! bind is a permanent error naming the limit (use another identity for more namespaces).

use md5::{Digest, Md5};
use serde_json::Value;

/// The limit Azure documents per managed identity.
pub const MAX_PER_IDENTITY: usize = 20;
/// The audience AKS workload identity tokens carry.
pub const AUDIENCE: &str = "api://AzureADTokenExchange";

/// A credential name for `ns/ksa`: 3–120 characters of letters, digits, `-` and `_`, starting
/// with a letter or digit; stable, so a retried create writes the same object.
pub fn credential_name(namespace: &str, ksa: &str) -> String {
    let id = substratus_core::names::hex(&Md5::digest(format!("{namespace}/{ksa}").as_bytes()));
    let readable: String = format!("substratus-{namespace}-{ksa}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    format!("{readable}-{}", &id[..12])
}

/// What to do given the identity's current credentials (`value` of the list answer).
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// A credential with this issuer and subject exists.
    Bound,
    /// Create this credential.
    Create { name: String },
    /// The identity holds the maximum already.
    Full { count: usize },
}

pub fn plan(existing: &[Value], issuer: &str, subject: &str, name: String) -> Plan {
    let bound = existing.iter().any(|c| {
        c["properties"]["issuer"]
            .as_str()
            .map(|i| i.trim_end_matches('/'))
            == Some(issuer.trim_end_matches('/'))
            && c["properties"]["subject"] == subject
    });
    if bound {
        Plan::Bound
    } else if existing.len() >= MAX_PER_IDENTITY {
        Plan::Full {
            count: existing.len(),
        }
    } else {
        Plan::Create { name }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cred(issuer: &str, subject: &str) -> Value {
        json!({"name": "x", "properties": {"issuer": issuer, "subject": subject, "audiences": [AUDIENCE]}})
    }

    #[test]
    fn an_existing_credential_is_found_and_the_limit_is_respected() {
        let issuer = "https://eastus.oic.prod-aks.azure.com/t/c/";
        let subject = "system:serviceaccount:ns:modeller";
        let name = credential_name("ns", "modeller");
        assert_eq!(
            plan(&[cred(issuer, subject)], issuer, subject, name.clone()),
            Plan::Bound
        );
        // The issuer matches with or without its trailing slash.
        assert_eq!(
            plan(
                &[cred(issuer.trim_end_matches('/'), subject)],
                issuer,
                subject,
                name.clone()
            ),
            Plan::Bound
        );
        assert_eq!(
            plan(
                &[cred(issuer, "system:serviceaccount:other:modeller")],
                issuer,
                subject,
                name.clone()
            ),
            Plan::Create { name: name.clone() }
        );
        let full: Vec<Value> = (0..20)
            .map(|i| cred(issuer, &format!("system:serviceaccount:n{i}:modeller")))
            .collect();
        assert_eq!(plan(&full, issuer, subject, name), Plan::Full { count: 20 });
    }

    #[test]
    fn credential_names_are_valid_and_distinct() {
        let a = credential_name("team.a", "modeller");
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{a}"
        );
        assert!(a.len() <= 120 && a.len() >= 3);
        assert_ne!(a, credential_name("team-a", "modeller"));
        assert!(credential_name(&"n".repeat(63), &"s".repeat(253)).len() <= 120);
    }
}
