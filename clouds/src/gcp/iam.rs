//! Workload Identity on GKE: `roles/iam.workloadIdentityUser` on the Google service account
//! for `serviceAccount:<project>.svc.id.goog[<ns>/<ksa>]`, through the IAM API's
//! `getIamPolicy` / `setIamPolicy` with the policy's etag (a concurrent writer makes the set
//! fail with 409 ABORTED; we read again and retry). A member already bound makes no write.

use serde_json::{Value, json};

/// The role that lets a Kubernetes service account act as a Google service account.
pub const WORKLOAD_IDENTITY_USER: &str = "roles/iam.workloadIdentityUser";

/// The IAM member of a Kubernetes service account.
pub fn member(project: &str, namespace: &str, ksa: &str) -> String {
    format!("serviceAccount:{project}.svc.id.goog[{namespace}/{ksa}]")
}

/// The policy with `member` added to `role`, or `None` when it is bound already. Other roles,
/// other members, conditions and the etag are kept as they were.
pub fn with_member(policy: &Value, role: &str, member: &str) -> Option<Value> {
    with_binding(policy, role, member, None)
}

/// Like [`with_member`], for the binding of `role` under `condition` (the same expression);
/// a policy with a condition is of version 3, which the API requires for conditions.
pub fn with_binding(
    policy: &Value,
    role: &str,
    member: &str,
    condition: Option<&Value>,
) -> Option<Value> {
    let mut policy = if policy.is_object() {
        policy.clone()
    } else {
        json!({})
    };
    let bindings = policy
        .as_object_mut()?
        .entry("bindings")
        .or_insert_with(|| json!([]));
    if !bindings.is_array() {
        *bindings = json!([]);
    }
    let list = bindings.as_array_mut()?;
    // Only an unconditional binding grants the role always; a conditional one counts only
    // under the same expression.
    let expression = condition.map(|c| &c["expression"]);
    let binding = list
        .iter_mut()
        .find(|b| b["role"] == role && b.get("condition").map(|c| &c["expression"]) == expression);
    match binding {
        Some(b) => {
            let members = b
                .as_object_mut()?
                .entry("members")
                .or_insert_with(|| json!([]));
            if members
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x == member))
            {
                return None;
            }
            match members.as_array_mut() {
                Some(m) => m.push(json!(member)),
                None => *members = json!([member]),
            }
        }
        None => {
            let mut b = json!({"role": role, "members": [member]});
            if let Some(c) = condition {
                b["condition"] = c.clone();
            }
            list.push(b);
        }
    }
    if condition.is_some() {
        policy["version"] = json!(3);
    }
    Some(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_added_once_and_nothing_else_changes() {
        let m = member("p", "ns", "modeller");
        assert_eq!(m, "serviceAccount:p.svc.id.goog[ns/modeller]");
        let policy = json!({
            "version": 1,
            "etag": "BwX=",
            "bindings": [
                {"role": "roles/viewer", "members": ["user:a@x"]},
                {"role": WORKLOAD_IDENTITY_USER, "members": ["serviceAccount:p.svc.id.goog[other/x]"]},
            ],
        });
        let next = with_member(&policy, WORKLOAD_IDENTITY_USER, &m).unwrap();
        assert_eq!(next["etag"], "BwX=");
        assert_eq!(next["bindings"][0], policy["bindings"][0]);
        assert_eq!(
            next["bindings"][1]["members"],
            json!(["serviceAccount:p.svc.id.goog[other/x]", m])
        );
        assert_eq!(with_member(&next, WORKLOAD_IDENTITY_USER, &m), None);
    }

    #[test]
    fn an_empty_policy_gets_the_binding() {
        let next = with_member(&json!({"etag": "ACAB"}), WORKLOAD_IDENTITY_USER, "m").unwrap();
        assert_eq!(
            next["bindings"],
            json!([{"role": WORKLOAD_IDENTITY_USER, "members": ["m"]}])
        );
    }

    #[test]
    fn a_conditional_binding_counts_only_under_its_own_expression() {
        let folder = json!({"title": "t", "expression": "resource.name.startsWith(\"a/\")"});
        let other = json!({"title": "t", "expression": "resource.name.startsWith(\"b/\")"});
        let policy = json!({"version": 1, "bindings": [
            {"role": "r", "members": ["m"], "condition": other},
        ]});
        let next = with_binding(&policy, "r", "m", Some(&folder)).unwrap();
        assert_eq!(next["version"], 3);
        assert_eq!(next["bindings"][1]["condition"], folder);
        assert_eq!(next["bindings"][0]["condition"], other);
        assert_eq!(with_binding(&next, "r", "m", Some(&folder)), None);
        // Bound under a condition is not bound always.
        assert!(with_member(&next, "r", "m").is_some());
    }

    #[test]
    fn a_conditional_binding_does_not_count() {
        let policy = json!({"bindings": [
            {"role": WORKLOAD_IDENTITY_USER, "members": ["m"], "condition": {"expression": "false"}},
        ]});
        let next = with_member(&policy, WORKLOAD_IDENTITY_USER, "m").unwrap();
        assert_eq!(next["bindings"].as_array().unwrap().len(), 2);
        assert!(next["bindings"][1].get("condition").is_none());
    }
}
