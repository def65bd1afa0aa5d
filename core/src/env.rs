//! Container environment from `spec.env`: literal values, and `${{ secrets.NAME.KEY }}`
//! references to a Secret's key. Output is sorted by name, so a reconcile that changes
//! nothing renders byte-identical pods (no needless rollouts).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};

/// A `${{ secrets.NAME.KEY }}` reference, spaces inside the braces optional. As in the
/// original, a dotted secret name is split at the last dot.
pub fn secret_reference(value: &str) -> Option<(&str, &str)> {
    let inner = value.trim().strip_prefix("${{")?.strip_suffix("}}")?.trim();
    let path = inner.strip_prefix("secrets.")?;
    let (name, key) = path.rsplit_once('.')?;
    if name.is_empty()
        || key.is_empty()
        || name.contains(char::is_whitespace)
        || key.contains(char::is_whitespace)
    {
        return None;
    }
    Some((name, key))
}

/// Renders `spec.env` as container env vars, sorted by name.
pub fn container_env(env: &BTreeMap<String, String>) -> Vec<EnvVar> {
    env.iter()
        .map(|(name, value)| match secret_reference(value) {
            Some((secret, key)) => EnvVar {
                name: name.clone(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.to_owned(),
                        key: key.to_owned(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            None => EnvVar {
                name: name.clone(),
                value: Some(value.clone()),
                ..Default::default()
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references_parse_with_or_without_spaces() {
        assert_eq!(
            secret_reference("${{ secrets.ai.HF_TOKEN }}"),
            Some(("ai", "HF_TOKEN"))
        );
        assert_eq!(
            secret_reference("${{secrets.ai.HF_TOKEN}}"),
            Some(("ai", "HF_TOKEN"))
        );
        assert_eq!(
            secret_reference("${{ secrets.my.dotted.KEY }}"),
            Some(("my.dotted", "KEY"))
        );
    }

    #[test]
    fn other_values_are_literals() {
        for v in [
            "plain",
            "${{ secrets.nokey }}",
            "${{ env.X.Y }}",
            "$X",
            "${{ secrets..K }}",
            "x ${{ secrets.a.b }}",
        ] {
            assert_eq!(secret_reference(v), None, "{v}");
        }
    }

    #[test]
    fn env_is_sorted_and_secret_values_become_references() {
        let env = BTreeMap::from([
            ("ZED".to_owned(), "1".to_owned()),
            ("ALPHA".to_owned(), "${{ secrets.ai.TOKEN }}".to_owned()),
        ]);
        let out = container_env(&env);
        assert_eq!(out[0].name, "ALPHA");
        let r = out[0]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("ai", "TOKEN"));
        assert_eq!(out[1].value.as_deref(), Some("1"));
    }
}
