//! Notebook: a Jupyter Pod on 8888 with a random token kept in a Secret; suspend deletes the
//! Pod, resume recreates it, and a change a Pod cannot take in place replaces it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Pod, PodSpec, Secret, SecretKeySelector};
use substratus_crds::NotebookSpec;

use super::serving;
use super::{
    Child, Deletable, Deletion, Parent, Plan, RefState, SOON, SPEC_HASH_ANNOTATION, ServingPort,
    Workload, params_config_map, pod_problem, pod_progress, pod_template, stamp_hash,
};
use crate::cloud::Cloud;
use crate::conditions::reasons;
use crate::names::{self, Kind, KindChildren};
use crate::plan::storage::{artifact_prefix, foreign_location, owned_prefix_objects};

/// Jupyter's port, ready when `/api` answers.
pub const NOTEBOOK_PORT: ServingPort = ServingPort {
    name: "notebook",
    port: 8888,
    readiness_path: "/api",
};
/// Key of the token in the notebook's Secret.
pub const TOKEN_KEY: &str = "token";

/// The command run when the Notebook sets none.
pub fn default_command() -> Vec<String> {
    [
        "jupyter",
        "lab",
        "--allow-root",
        "--ip=0.0.0.0",
        "--NotebookApp.token=$(NOTEBOOK_TOKEN)",
        "--notebook-dir=/content",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The Notebook's Pod as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedPod {
    pub spec_hash: Option<String>,
    pub deleting: bool,
    pub running_and_ready: bool,
    pub failed: bool,
}

impl ObservedPod {
    pub fn from_pod(pod: &Pod) -> ObservedPod {
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ObservedPod {
            spec_hash: pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SPEC_HASH_ANNOTATION))
                .cloned(),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            running_and_ready: phase == Some("Running") && ready,
            failed: phase == Some("Failed"),
        }
    }
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct NotebookInput<'a> {
    pub parent: Parent,
    pub spec: &'a NotebookSpec,
    pub artifacts_url: Option<&'a str>,
    pub model: Option<RefState>,
    pub dataset: Option<RefState>,
    /// A fresh random token, for the Secret created with each new Pod: the operator may not
    /// read Secrets, so a Secret that exists already answers 409 and is kept as it is.
    pub new_token: &'a str,
    pub pod: Option<ObservedPod>,
    pub pods: &'a [Pod],
}

/// What a Notebook's status adds to the plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NotebookExtra {
    pub artifacts_url: String,
    pub token_secret: String,
}

/// What to do for a Notebook.
pub type NotebookPlan = Plan<NotebookExtra>;

/// Plans a Notebook.
pub fn plan(input: &NotebookInput<'_>, cloud: &dyn Cloud) -> NotebookPlan {
    let parent = &input.parent;
    let prefix = artifact_prefix(parent, cloud);
    let token_secret = names::notebook_token_secret(&parent.name);
    let pod_name = Kind::Notebook.workload_name(&parent.name);
    let mut plan = Plan::new(NotebookExtra {
        artifacts_url: prefix.url.to_string(),
        token_secret: token_secret.clone(),
    });
    if let Some(why) = foreign_location(input.artifacts_url, &prefix) {
        // Kept as recorded, so that what was there is not lost; no child, no Pod.
        plan.extra.artifacts_url = input.artifacts_url.unwrap_or_default().to_owned();
        plan.conditions = serving(false, reasons::FOREIGN_ARTIFACTS_URL, why);
        return plan;
    }
    let Some(image) = input.spec.image.as_deref() else {
        plan.conditions = serving(
            false,
            reasons::AWAITING_IMAGE,
            "waiting for the image build of spec.build",
        );
        return plan;
    };
    plan.children.push(Child::ConfigMap(params_config_map(
        parent,
        &input.spec.params,
    )));
    plan.children
        .extend(owned_prefix_objects(parent, &prefix, cloud));

    if input.spec.is_suspended() {
        if input.pod.is_some() {
            plan.delete.push(Deletion {
                kind: Deletable::Pod,
                name: pod_name,
            });
        }
        plan.conditions = serving(
            false,
            reasons::SUSPENDED,
            "spec.suspend is true; artifacts are kept in the bucket",
        );
        return plan;
    }

    let blocked = match (&input.model, &input.dataset) {
        (Some(RefState::NotFound), _) => {
            Some((reasons::MODEL_NOT_FOUND, "Model spec.model.name not found"))
        }
        (Some(RefState::NotReady), _) => Some((
            reasons::MODEL_NOT_READY,
            "waiting for the Model to be ready",
        )),
        (_, Some(RefState::NotFound)) => Some((
            reasons::DATASET_NOT_FOUND,
            "Dataset spec.dataset.name not found",
        )),
        (_, Some(RefState::NotReady)) => Some((
            reasons::DATASET_NOT_READY,
            "waiting for the Dataset to be ready",
        )),
        _ => None,
    };
    if let Some((reason, message)) = blocked {
        plan.conditions = serving(false, reason, message);
        return plan;
    }

    let mounts = super::content_mounts(prefix.artifacts(), &input.dataset, &input.model);
    let command = if input.spec.command.is_empty() {
        default_command()
    } else {
        input.spec.command.clone()
    };
    let token_env = EnvVar {
        name: "NOTEBOOK_TOKEN".into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: token_secret.clone(),
                key: TOKEN_KEY.into(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let workload = Workload {
        parent,
        image,
        command: &command,
        env: &input.spec.env,
        extra_env: vec![token_env],
        resources: input.spec.resources.as_ref(),
        mounts,
        port: Some(NOTEBOOK_PORT),
        restart_policy: "Always",
    };
    let template = match pod_template(&workload, cloud) {
        Ok(t) => t,
        Err(b) => {
            plan.conditions = serving(false, b.reason, b.message);
            return plan;
        }
    };
    let mut meta = template.metadata.unwrap_or_default();
    let child_meta = parent.child_meta(pod_name.clone());
    meta.name = child_meta.name;
    meta.namespace = child_meta.namespace;
    meta.owner_references = child_meta.owner_references;
    let pod = stamp_hash(
        |p: &mut Pod| &mut p.metadata,
        Pod {
            metadata: meta,
            spec: Some(template.spec.unwrap_or_else(PodSpec::default)),
            ..Default::default()
        },
    );
    let desired_hash = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SPEC_HASH_ANNOTATION))
        .cloned();

    match &input.pod {
        None => {
            // The token first, then the Pod that reads it.
            plan.create.push(Child::Secret(Secret {
                metadata: parent.child_meta(token_secret.clone()),
                string_data: Some(BTreeMap::from([(
                    TOKEN_KEY.to_owned(),
                    input.new_token.to_owned(),
                )])),
                type_: Some("Opaque".into()),
                ..Default::default()
            }));
            plan.start(Kind::Notebook.run_role(), Child::Pod(pod));
            plan.conditions = serving(
                false,
                reasons::POD_NOT_READY,
                format!("starting Pod {pod_name}"),
            );
        }
        Some(p) if p.deleting => {
            plan.conditions = serving(
                false,
                reasons::POD_NOT_READY,
                format!("waiting for the old Pod {pod_name} to be deleted"),
            );
            plan.next_look = Some(SOON);
        }
        Some(p) if p.spec_hash != desired_hash => {
            plan.replace(Deletable::Pod, pod_name.clone());
            plan.conditions = serving(
                false,
                reasons::POD_NOT_READY,
                format!("replacing Pod {pod_name}: its spec changed"),
            );
        }
        Some(p) if p.running_and_ready => {
            plan.ready = true;
            plan.conditions = serving(
                true,
                reasons::POD_READY,
                format!("Pod {pod_name} is ready; the token is in Secret {token_secret}"),
            );
        }
        Some(p) if p.failed => {
            plan.replace(Deletable::Pod, pod_name.clone());
            plan.conditions = serving(
                false,
                reasons::POD_FAILED,
                format!("Pod {pod_name} failed; replacing it"),
            );
        }
        Some(_) => {
            // Look again soon while the pod starts: its readiness is read from the cache,
            // and the status follows it within a second even if a pod event is missed.
            plan.next_look = Some(SOON);
            plan.conditions = match pod_problem(input.pods) {
                Some(b) => serving(false, b.reason, b.message),
                None => serving(
                    false,
                    reasons::POD_NOT_READY,
                    match pod_progress(input.pods) {
                        Some(at) => format!("waiting for Pod {pod_name} to be ready: {at}"),
                        None => format!("waiting for Pod {pod_name} to be ready"),
                    },
                ),
            };
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeCloud;

    fn spec(suspend: Option<bool>) -> NotebookSpec {
        NotebookSpec {
            image: Some("substratusai/base".into()),
            suspend,
            ..Default::default()
        }
    }

    fn input(spec: &NotebookSpec, pod: Option<ObservedPod>) -> NotebookInput<'_> {
        NotebookInput {
            parent: Parent {
                kind: Kind::Notebook,
                name: "nb".into(),
                namespace: "ns".into(),
                uid: "u".into(),
                generation: Some(1),
            },
            spec,
            artifacts_url: None,
            model: None,
            dataset: None,
            new_token: "0123abcd",
            pod,
            pods: &[],
        }
    }

    fn created_pod(p: &NotebookPlan) -> Pod {
        p.create
            .iter()
            .find_map(|c| {
                if let Child::Pod(p) = c {
                    Some(p.clone())
                } else {
                    None
                }
            })
            .expect("a Pod")
    }

    #[test]
    fn a_recorded_location_not_its_own_gets_no_pod_no_volume_and_says_so() {
        let s = spec(None);
        let cloud = FakeCloud::default();
        let own = plan(&input(&s, None), &cloud).extra.artifacts_url;
        let forged = format!("{},rw", own.rsplit_once('/').unwrap().0);
        let mut i = input(&s, None);
        i.artifacts_url = Some(&forged);
        let p = plan(&i, &cloud);
        assert!(p.children.is_empty() && p.create.is_empty(), "{p:?}");
        assert_eq!(p.extra.artifacts_url, forged);
        let c = p
            .conditions
            .iter()
            .find(|c| c.type_ == crate::conditions::types::SERVING)
            .unwrap();
        assert_eq!(
            (c.reason, c.status),
            (reasons::FOREIGN_ARTIFACTS_URL, false)
        );
        i.artifacts_url = Some(&own);
        assert!(
            !plan(&i, &cloud).create.is_empty(),
            "its own location is accepted"
        );
    }

    #[test]
    fn a_running_notebook_gets_a_pod_with_its_token_from_a_secret() {
        let s = spec(None);
        let p = plan(&input(&s, None), &FakeCloud::default());
        let secret = p
            .create
            .iter()
            .find_map(|c| {
                if let Child::Secret(s) = c {
                    Some(s.clone())
                } else {
                    None
                }
            })
            .unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("nb-notebook-token"));
        assert_eq!(secret.string_data.unwrap()[TOKEN_KEY], "0123abcd");
        let pod = created_pod(&p);
        assert_eq!(pod.metadata.name.as_deref(), Some("nb-notebook"));
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.name, "notebook");
        assert_eq!(c.command.as_ref().unwrap(), &default_command());
        let env = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "NOTEBOOK_TOKEN")
            .unwrap();
        assert!(
            env.value.is_none(),
            "the token never appears in the Pod spec"
        );
        assert_eq!(
            env.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "nb-notebook-token"
        );
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/api")
        );
        assert_eq!(p.extra.token_secret, "nb-notebook-token");
        // The Secret is created with each new Pod, before it (one that exists answers 409
        // and is kept: the operator never reads Secrets); a running Pod needs none.
        let secrets_first: Vec<bool> = p
            .create
            .iter()
            .map(|c| matches!(c, Child::Secret(_)))
            .collect();
        assert_eq!(secrets_first, [true, false]);
        let observed = ObservedPod::from_pod(&pod);
        let p = plan(&input(&s, Some(observed)), &FakeCloud::default());
        assert!(p.create.is_empty(), "{:?}", p.create);
    }

    #[test]
    fn suspend_deletes_the_pod_and_resume_recreates_it() {
        let running = ObservedPod {
            spec_hash: None,
            deleting: false,
            running_and_ready: true,
            failed: false,
        };
        let s = spec(Some(true));
        let p = plan(&input(&s, Some(running)), &FakeCloud::default());
        assert_eq!(
            p.delete,
            vec![Deletion {
                kind: Deletable::Pod,
                name: "nb-notebook".into()
            }]
        );
        assert_eq!(
            (p.conditions[0].reason, p.conditions[0].status),
            (reasons::SUSPENDED, false)
        );
        let s = spec(Some(false));
        let p = plan(&input(&s, None), &FakeCloud::default());
        created_pod(&p);
    }

    #[test]
    fn a_changed_spec_replaces_the_pod_and_an_unchanged_one_keeps_it() {
        let s = spec(None);
        let first = created_pod(&plan(&input(&s, None), &FakeCloud::default()));
        let observed = ObservedPod::from_pod(&first);
        let p = plan(&input(&s, Some(observed.clone())), &FakeCloud::default());
        assert!(p.delete.is_empty() && p.create.is_empty());
        let mut changed = spec(None);
        changed.image = Some("substratusai/base:v2".into());
        let p = plan(&input(&changed, Some(observed)), &FakeCloud::default());
        assert_eq!(
            p.delete,
            vec![Deletion {
                kind: Deletable::Pod,
                name: "nb-notebook".into()
            }]
        );
        assert!(p.next_look.is_some());
    }

    #[test]
    fn ready_when_the_pod_is_ready() {
        let s = spec(None);
        let first = created_pod(&plan(&input(&s, None), &FakeCloud::default()));
        let mut observed = ObservedPod::from_pod(&first);
        // Starting: not ready, and looked at again soon rather than only on pod events.
        let starting = plan(&input(&s, Some(observed.clone())), &FakeCloud::default());
        assert!(!starting.ready);
        assert_eq!(starting.next_look, Some(SOON));
        observed.running_and_ready = true;
        let p = plan(&input(&s, Some(observed)), &FakeCloud::default());
        assert!(p.ready);
        assert_eq!(p.next_look, None, "a ready notebook waits for news");
        assert_eq!(p.conditions[0].reason, reasons::POD_READY);
        assert!(!p.conditions[0].message.contains("0123abcd"));
    }
}
