//! The API reference in Markdown, generated from the CRD schemas, so that what the docs say a
//! field accepts is what the API server enforces.

use serde_json::Value;

/// One documented field.
struct Field {
    path: String,
    kind: String,
    description: String,
}

/// `docs/api.md`: every kind's fields with their types, bounds and descriptions, and the
/// rules (CEL) the API server checks, with their messages.
pub fn api_reference() -> String {
    let mut out = String::from(
        "# API reference: `substratus.ai/v1`\n\n\
         Generated from the CRD schemas by `substratus-operator api-reference`; a test fails \
         when this file differs. Every bound and rule below is enforced by the API server: \
         `kubectl apply` refuses an object that breaks one, naming the field.\n",
    );
    for crd in crate::crds() {
        let Ok(crd) = serde_json::to_value(&crd) else {
            continue;
        };
        let names = &crd["spec"]["names"];
        let kind = names["kind"].as_str().unwrap_or_default();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        out.push_str(&format!("\n## {kind}\n\n"));
        if let Some(d) = schema["description"].as_str() {
            out.push_str(&format!("{}\n\n", one_line(d)));
        }
        let short: Vec<String> = names["shortNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(|s| format!("`{s}`")))
            .collect();
        out.push_str(&format!(
            "`kubectl get {}`{}; category `{}`.\n",
            names["plural"].as_str().unwrap_or_default(),
            if short.is_empty() {
                String::new()
            } else {
                format!(" (short: {})", short.join(", "))
            },
            names["categories"][0].as_str().unwrap_or_default()
        ));
        let mut rules = Vec::new();
        collect_rules("", schema, &mut rules);
        for part in ["spec", "status"] {
            let mut fields = Vec::new();
            let required = required_of(schema);
            walk(
                part,
                &schema["properties"][part],
                required.contains(&part),
                &mut fields,
                &mut rules,
            );
            out.push_str(&format!(
                "\n### {kind} {part}\n\n| field | type | description |\n|---|---|---|\n"
            ));
            for f in fields {
                out.push_str(&format!(
                    "| `{}` | {} | {} |\n",
                    f.path, f.kind, f.description
                ));
            }
        }
        if !rules.is_empty() {
            out.push_str(&format!("\n### {kind} rules\n\n"));
            for (path, rule, message) in rules {
                let at = if path.is_empty() {
                    "the object".to_owned()
                } else {
                    format!("`{path}`")
                };
                out.push_str(&format!("- {at}: {message} (`{rule}`)\n"));
            }
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn required_of(schema: &Value) -> Vec<&str> {
    schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The rules of `schema` itself, at `path`.
fn collect_rules(path: &str, schema: &Value, rules: &mut Vec<(String, String, String)>) {
    for r in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        rules.push((
            path.to_owned(),
            r["rule"].as_str().unwrap_or_default().replace('|', "\\|"),
            r["message"].as_str().unwrap_or_default().to_owned(),
        ));
    }
}

/// A type with bounds in brackets, so that the bounds of a list or map stay apart.
fn grouped(kind: String) -> String {
    if kind.contains(", ") {
        format!("({kind})")
    } else {
        kind
    }
}

/// The type of a schema node with its bounds, in words.
fn kind_of(s: &Value, required: bool) -> String {
    let mut kind = if s["x-kubernetes-int-or-string"] == true {
        "integer or string".to_owned()
    } else {
        match s["type"].as_str() {
            Some("array") => format!("list of {}", grouped(kind_of(&s["items"], false))),
            Some("object") if s["additionalProperties"].is_object() => {
                format!(
                    "map of {}",
                    grouped(kind_of(&s["additionalProperties"], false))
                )
            }
            Some(t) => t.to_owned(),
            None => "any".to_owned(),
        }
    };
    let mut bounds = Vec::new();
    let num = |k: &str| s[k].as_f64().map(|v| v as i64);
    match (num("minLength"), num("maxLength")) {
        (Some(a), Some(b)) => bounds.push(format!("{a} to {b} characters")),
        (None, Some(b)) => bounds.push(format!("at most {b} characters")),
        (Some(a), None) => bounds.push(format!("at least {a} characters")),
        (None, None) => {}
    }
    match (num("minimum"), num("maximum")) {
        (Some(a), Some(b)) => bounds.push(format!("{a} to {b}")),
        (None, Some(b)) => bounds.push(format!("at most {b}")),
        (Some(a), None) => bounds.push(format!("at least {a}")),
        (None, None) => {}
    }
    if let Some(n) = num("maxItems") {
        bounds.push(format!("at most {n} items"));
    }
    if let Some(n) = num("maxProperties") {
        bounds.push(format!("at most {n} entries"));
    }
    if let Some(p) = s["pattern"].as_str() {
        bounds.push(format!("pattern `{}`", p.replace('|', "\\|")));
    }
    if let Some(values) = s["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .filter_map(|v| v.as_str().map(|v| format!("`{v}`")))
            .collect();
        bounds.push(format!("one of {}", values.join(", ")));
    }
    if !bounds.is_empty() {
        kind = format!("{kind}, {}", bounds.join(", "));
    }
    if required {
        kind = format!("**required** {kind}");
    }
    kind
}

fn walk(
    path: &str,
    s: &Value,
    required: bool,
    fields: &mut Vec<Field>,
    rules: &mut Vec<(String, String, String)>,
) {
    if !path.contains('.') && !path.contains('[') {
        // The top of spec or status: its rules, not a row.
    } else {
        fields.push(Field {
            path: path.to_owned(),
            kind: kind_of(s, required),
            description: s["description"].as_str().map(one_line).unwrap_or_default(),
        });
    }
    collect_rules(path, s, rules);
    let required = required_of(s);
    if let Some(props) = s["properties"].as_object() {
        for (name, child) in props {
            walk(
                &format!("{path}.{name}"),
                child,
                required.contains(&name.as_str()),
                fields,
                rules,
            );
        }
    }
    if s["items"]["properties"].is_object() {
        let items = &s["items"];
        let item_required = required_of(items);
        collect_rules(&format!("{path}[]"), items, rules);
        for (name, child) in items["properties"].as_object().into_iter().flatten() {
            walk(
                &format!("{path}[].{name}"),
                child,
                item_required.contains(&name.as_str()),
                fields,
                rules,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reference_lists_fields_with_their_bounds_and_the_rules_with_their_messages() {
        let r = super::api_reference();
        for kind in ["Model", "Dataset", "Server", "Notebook"] {
            assert!(r.contains(&format!("\n## {kind}\n")), "{kind}");
            assert!(r.contains(&format!("### {kind} spec")), "{kind} spec");
        }
        assert!(
            r.contains("| `spec.image` | string, 1 to 1024 characters, pattern `^\\S+$` |"),
            "{r}"
        );
        assert!(r.contains("| `spec.resources.cpu` | integer, 0 to 1024 |"));
        assert!(r.contains("| `spec.build.git.url` | **required** string, 1 to 2048 characters |"));
        assert!(r.contains("spec.model.name must name another Model"));
        assert!(r.contains("`spec.resources.gpu`: spec.resources.gpu.count must be at least 1"));
        assert!(r.contains("| `status.conditions[].reason` |"));
    }
}
