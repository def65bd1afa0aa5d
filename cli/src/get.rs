//! `sub get`: objects as a table (`-o wide` adds the Ready message), or as JSON or YAML the way
//! kubectl prints them; `-A` across namespaces; `--watch` prints each change as it happens.

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::client::Cluster;
use crate::manifest::{self, Kind};
use crate::objects;

/// `-o`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    Wide,
}

/// `sub get` flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GetArgs {
    /// What to list: all kinds, a kind (models), or one object (models/NAME).
    pub scope: Option<String>,
    /// Output format: json or yaml (as stored, without managedFields), or wide (a table with
    /// the Ready message).
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Output>,
    /// List across all namespaces.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// After the list, print a row for every change until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

impl Row {
    pub fn of(kind: Kind, o: &DynamicObject) -> Row {
        let ready = objects::conditions(o)
            .into_iter()
            .find(|c| c.type_ == "Ready");
        Row {
            namespace: o.metadata.namespace.clone().unwrap_or_default(),
            kind: kind.lower().to_owned(),
            name: o.metadata.name.clone().unwrap_or_default(),
            ready: objects::is_ready(o),
            reason: ready.as_ref().map(|c| c.reason.clone()).unwrap_or_default(),
            message: ready.map(|c| c.message).unwrap_or_default(),
        }
    }
}

/// The table of `rows`, columns padded like kubectl's: NAMESPACE first with `-A`, MESSAGE
/// last with `-o wide`.
pub fn table(rows: &[Row], all_namespaces: bool, wide: bool) -> String {
    let cells = |r: &Row| -> Vec<String> {
        let mut c = Vec::new();
        if all_namespaces {
            c.push(r.namespace.clone());
        }
        c.push(r.kind.clone());
        c.push(r.name.clone());
        c.push(if r.ready { "True" } else { "False" }.to_owned());
        c.push(r.reason.clone());
        if wide {
            c.push(r.message.replace('\n', " "));
        }
        c
    };
    let mut header: Vec<String> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE".into());
    }
    header.extend(["KIND", "NAME", "READY", "REASON"].map(String::from));
    if wide {
        header.push("MESSAGE".into());
    }
    let lines: Vec<Vec<String>> = std::iter::once(header)
        .chain(rows.iter().map(cells))
        .collect();
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let mut line = String::new();
        for (i, cell) in l.iter().enumerate() {
            if i + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:w$}   ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// An object as `kubectl get -o json` prints it: apiVersion and kind first, no managedFields.
pub fn printable(kind: Kind, o: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    let mut out = json!({"apiVersion": substratus_crds::API_VERSION, "kind": kind.name()});
    if let (Some(out), Some(rest)) = (out.as_object_mut(), v.as_object()) {
        for (k, val) in rest {
            if k != "apiVersion" && k != "kind" && k != "types" {
                out.insert(k.clone(), val.clone());
            }
        }
    }
    out
}

fn api(cluster: &Cluster, kind: Kind, all: bool, ns: &str) -> Api<DynamicObject> {
    if all {
        Api::all_with(cluster.client.clone(), &kind.api_resource())
    } else {
        objects::api(&cluster.client, kind, ns)
    }
}

/// `sub get`.
pub async fn get(cluster: &Cluster, args: &GetArgs) -> Result<()> {
    let (kinds, only) = match args.scope.as_deref() {
        Some(s) if !s.is_empty() => {
            let (k, n) = manifest::parse_scope(s)?;
            (vec![k], n)
        }
        _ => (Kind::ALL.to_vec(), None),
    };
    let ns = cluster.namespace_for(None)?;
    let all = args.all_namespaces && only.is_none();
    let mut found: Vec<(Kind, DynamicObject)> = Vec::new();
    for &kind in &kinds {
        let api = api(cluster, kind, all, &ns);
        match &only {
            Some(n) => found.push((
                kind,
                api.get(n)
                    .await
                    .with_context(|| format!("getting {} {n}", kind.name()))?,
            )),
            None => found.extend(
                api.list(&ListParams::default())
                    .await
                    .with_context(|| format!("listing {}s", kind.lower()))?
                    .items
                    .into_iter()
                    .map(|o| (kind, o)),
            ),
        }
    }
    match args.output {
        Some(format @ (Output::Json | Output::Yaml)) => {
            let value = match (&only, found.as_slice()) {
                (Some(_), [(kind, o)]) => printable(*kind, o),
                _ => json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": found.iter().map(|(k, o)| printable(*k, o)).collect::<Vec<_>>(),
                }),
            };
            if format == Output::Json {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", serde_saphyr::to_string(&value)?);
            }
        }
        wide => {
            let rows: Vec<Row> = found.iter().map(|(k, o)| Row::of(*k, o)).collect();
            if rows.is_empty() && !args.watch {
                let place = if all {
                    "any namespace".to_owned()
                } else {
                    format!("namespace {ns}")
                };
                eprintln!("No resources found in {place}.");
            } else {
                print!("{}", table(&rows, all, wide == Some(Output::Wide)));
            }
        }
    }
    if args.watch {
        let shown = found
            .iter()
            .map(|(k, o)| (key(*k, o), o.metadata.resource_version.clone()))
            .collect();
        watch(cluster, &kinds, only.as_deref(), all, &ns, args, shown).await?;
    }
    Ok(())
}

type Key = (Kind, Option<String>, Option<String>);

fn key(kind: Kind, o: &DynamicObject) -> Key {
    (kind, o.metadata.namespace.clone(), o.metadata.name.clone())
}

/// Prints a row (or an object, with `-o json|yaml`) per change of the objects in scope, until
/// the process is interrupted. `shown`: the version of each object already printed.
async fn watch(
    cluster: &Cluster,
    kinds: &[Kind],
    only: Option<&str>,
    all: bool,
    ns: &str,
    args: &GetArgs,
    mut shown: std::collections::HashMap<Key, Option<String>>,
) -> Result<()> {
    use std::io::Write;
    let mut config = watcher::Config::default();
    if let Some(n) = only {
        config = config.fields(&format!("metadata.name={n}"));
    }
    let streams = kinds.iter().map(|&kind| {
        watcher(api(cluster, kind, all, ns), config.clone())
            .default_backoff()
            .touched_objects()
            .map_ok(move |o| (kind, o))
            .boxed()
    });
    let mut changes = futures::stream::select_all(streams);
    while let Some(change) = changes.next().await {
        let (kind, o) = change.context("watching")?;
        let rv = o.metadata.resource_version.clone();
        // The watch starts with the objects as listed: those were printed already.
        if shown.insert(key(kind, &o), rv.clone()) != Some(rv) {
            let mut out = std::io::stdout().lock();
            match args.output {
                Some(Output::Json) => {
                    writeln!(out, "{}", serde_json::to_string(&printable(kind, &o))?)?
                }
                Some(Output::Yaml) => write!(
                    out,
                    "---\n{}",
                    serde_saphyr::to_string(&printable(kind, &o))?
                )?,
                wide => {
                    let t = table(&[Row::of(kind, &o)], all, wide == Some(Output::Wide));
                    // Without the header line.
                    write!(out, "{}", t.split_once('\n').map_or("", |(_, rows)| rows))?
                }
            }
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ns: &str, name: &str, ready: bool, reason: &str, message: &str) -> Row {
        Row {
            namespace: ns.into(),
            kind: "model".into(),
            name: name.into(),
            ready,
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn tables_align_and_grow_columns_for_all_namespaces_and_wide() {
        let rows = [
            row("team-a", "opt-125m", true, "JobComplete", "Job done"),
            row("b", "x", false, "Unschedulable", "0/3 nodes are available"),
        ];
        assert_eq!(
            table(&rows, false, false),
            "KIND    NAME       READY   REASON\n\
             model   opt-125m   True    JobComplete\n\
             model   x          False   Unschedulable\n"
        );
        let t = table(&rows, true, true);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "NAMESPACE   KIND    NAME       READY   REASON          MESSAGE"
        );
        assert_eq!(
            lines[2],
            "b           model   x          False   Unschedulable   0/3 nodes are available"
        );
    }

    #[test]
    fn printed_objects_lead_with_their_type_and_carry_no_managed_fields() {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "substratus.ai/v1", "kind": "Model",
            "metadata": {"name": "m", "namespace": "ns", "managedFields": [{"manager": "sub"}]},
            "spec": {"image": "i"}
        }))
        .unwrap();
        let v = printable(Kind::Model, &o);
        assert_eq!(v["kind"], "Model");
        assert_eq!(v["apiVersion"], "substratus.ai/v1");
        assert!(v["metadata"].get("managedFields").is_none());
        assert_eq!(v["spec"]["image"], "i");
        let text = serde_json::to_string(&v).unwrap();
        assert!(text.starts_with("{\"apiVersion\""), "{text}");
    }
}
