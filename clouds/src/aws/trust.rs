//! IRSA trust policies: the role's `AssumeRolePolicyDocument` must let the cluster's OIDC
//! provider federate `system:serviceaccount:<ns>:<ksa>`. We add the subject to the statement
//! that trusts the provider and keep every other subject and statement, so binding a second
//! namespace never unbinds the first.
//!
//! IAM limits a trust policy to 2,048 characters (raisable to 4,096 by quota): with this
//! layout that is a few dozen service accounts per role. Past it IAM refuses the update
//! (`LimitExceeded`) and the error names EKS Pod Identity, which has no such limit.

use serde_json::{Value, json};

pub const WEB_IDENTITY_ACTION: &str = "sts:AssumeRoleWithWebIdentity";

/// The subject of a Kubernetes service account in an EKS projected token.
pub fn subject(namespace: &str, ksa: &str) -> String {
    format!("system:serviceaccount:{namespace}:{ksa}")
}

/// The issuer without its scheme, as IAM names condition keys and OIDC providers.
pub fn issuer_host(issuer: &str) -> &str {
    issuer
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
}

/// `arn:aws:iam::<account>:oidc-provider/<issuer host and path>`.
pub fn provider_arn(partition: &str, account: &str, issuer: &str) -> String {
    format!(
        "arn:{partition}:iam::{account}:oidc-provider/{}",
        issuer_host(issuer)
    )
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => vec![],
        other => vec![other.clone()],
    }
}

fn trusts(statement: &Value, provider: &str) -> bool {
    statement["Effect"] == "Allow"
        && as_list(&statement["Action"])
            .iter()
            .any(|a| a == WEB_IDENTITY_ACTION)
        && as_list(&statement["Principal"]["Federated"])
            .iter()
            .any(|p| p == provider)
}

/// The document with `subject` trusted through `provider`, or `None` when it is already.
pub fn with_subject(
    document: &Value,
    provider: &str,
    issuer: &str,
    subject: &str,
) -> Option<Value> {
    let mut doc = if document.is_object() {
        document.clone()
    } else {
        json!({"Version": "2012-10-17"})
    };
    let sub_key = format!("{}:sub", issuer_host(issuer));
    let aud_key = format!("{}:aud", issuer_host(issuer));
    let statements = as_list(&doc["Statement"]);
    // Bound already by any statement (StringEquals or StringLike listing it exactly).
    let bound = statements.iter().any(|s| {
        trusts(s, provider)
            && ["StringEquals", "StringLike"].iter().any(|op| {
                as_list(&s["Condition"][*op][&sub_key])
                    .iter()
                    .any(|x| x == subject)
            })
    });
    if bound {
        return None;
    }
    let mut statements = statements;
    match statements
        .iter_mut()
        .find(|s| trusts(s, provider) && !s["Condition"]["StringEquals"][&sub_key].is_null())
    {
        Some(s) => {
            let mut subs = as_list(&s["Condition"]["StringEquals"][&sub_key]);
            subs.push(json!(subject));
            s["Condition"]["StringEquals"][&sub_key] = Value::Array(subs);
        }
        None => statements.push(json!({
            "Effect": "Allow",
            "Principal": {"Federated": provider},
            "Action": WEB_IDENTITY_ACTION,
            "Condition": {"StringEquals": {
                sub_key: [subject],
                aud_key: "sts.amazonaws.com",
            }},
        })),
    }
    doc["Statement"] = Value::Array(statements);
    Some(doc)
}

/// The role name of a role ARN (`arn:aws:iam::1:role/path/name` → `name`).
pub fn role_name(arn: &str) -> Option<&str> {
    let (_, resource) = arn.split_once(":role/")?;
    resource.rsplit('/').next().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://oidc.eks.us-west-2.amazonaws.com/id/ABC";

    fn provider() -> String {
        provider_arn("aws", "123456789012", ISSUER)
    }

    #[test]
    fn a_subject_joins_the_existing_statement_and_keeps_the_others() {
        let key = "oidc.eks.us-west-2.amazonaws.com/id/ABC:sub";
        let doc = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"},
            {"Effect": "Allow", "Principal": {"Federated": provider()}, "Action": WEB_IDENTITY_ACTION,
             "Condition": {"StringEquals": {key: "system:serviceaccount:substratus:substratus"}}},
        ]});
        let next = with_subject(&doc, &provider(), ISSUER, &subject("team-a", "modeller")).unwrap();
        assert_eq!(next["Statement"][0], doc["Statement"][0]);
        assert_eq!(
            next["Statement"][1]["Condition"]["StringEquals"][key],
            json!([
                "system:serviceaccount:substratus:substratus",
                "system:serviceaccount:team-a:modeller"
            ])
        );
        assert_eq!(next["Statement"].as_array().unwrap().len(), 2);
        assert_eq!(
            with_subject(&next, &provider(), ISSUER, &subject("team-a", "modeller")),
            None
        );
    }

    #[test]
    fn a_role_without_a_web_identity_statement_gets_one_with_the_audience() {
        let doc = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": ["sts:AssumeRole", "sts:TagSession"]}});
        let next = with_subject(&doc, &provider(), ISSUER, "system:serviceaccount:a:b").unwrap();
        let s = &next["Statement"][1];
        assert_eq!(s["Principal"]["Federated"], provider());
        assert_eq!(
            s["Condition"]["StringEquals"]["oidc.eks.us-west-2.amazonaws.com/id/ABC:aud"],
            "sts.amazonaws.com"
        );
        assert_eq!(next["Statement"][0], doc["Statement"]);
    }

    #[test]
    fn another_providers_statement_is_not_ours() {
        let other = provider_arn(
            "aws",
            "123456789012",
            "https://oidc.eks.eu-west-1.amazonaws.com/id/X",
        );
        let doc = json!({"Statement": [{"Effect": "Allow", "Principal": {"Federated": other},
            "Action": WEB_IDENTITY_ACTION, "Condition": {"StringEquals": {
                "oidc.eks.us-west-2.amazonaws.com/id/ABC:sub": "system:serviceaccount:a:b"}}}]});
        let next = with_subject(&doc, &provider(), ISSUER, "system:serviceaccount:a:b").unwrap();
        assert_eq!(next["Statement"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn role_names_come_from_arns() {
        assert_eq!(
            role_name("arn:aws:iam::1:role/substratus"),
            Some("substratus")
        );
        assert_eq!(role_name("arn:aws:iam::1:role/path/to/r"), Some("r"));
        assert_eq!(role_name("arn:aws:iam::1:user/u"), None);
    }
}
