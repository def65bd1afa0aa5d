//! Server: a Deployment and a Service serving a Ready Model on port 8080.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use substratus_crds::{AdapterStatus, ServerSpec};

use super::serving;
use super::storage::{artifact_prefix, owned_prefix_objects};
use super::{
    Child, Mount, Parent, Plan, RefState, ServingPort, Workload, params_config_map, pod_problem,
    pod_progress, pod_template, stamp_hash,
};
use crate::cloud::{Access, BucketUrl, Cloud, PrefixFolder};
use crate::conditions::reasons;
use crate::names::{self, Kind, KindChildren};

/// The serving port: `http-serve` 8080, ready when `/` answers.
pub const SERVE_PORT: ServingPort = ServingPort {
    name: "http-serve",
    port: 8080,
    readiness_path: "/",
};

/// The Server's Deployment as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedDeployment {
    pub ready_replicas: i32,
}

/// An entry of `spec.adapters` as found.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterInput {
    /// The entry's `name`.
    pub name: String,
    /// The Model it names.
    pub model: String,
    pub state: RefState,
    /// That Model's own base (`spec.model.name`), when it exists.
    pub base: Option<String>,
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct ServerInput<'a> {
    pub parent: Parent,
    pub spec: &'a ServerSpec,
    pub model: RefState,
    /// `spec.adapters`, in order.
    pub adapters: Vec<AdapterInput>,
    pub deployment: Option<ObservedDeployment>,
    pub pods: &'a [Pod],
    /// `status.adapters`: the adapters copied so far.
    pub copied: &'a [AdapterStatus],
}

/// Where the replicas see the Server's copies of its adapters.
pub const ADAPTERS_DIR: &str = "/content/adapters";

/// One adapter's artifacts to copy into the Server's own storage before replicas can load
/// it: the operator does the copy, then records `status` among `status.adapters`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterCopy {
    /// The adapter Model's `artifacts/` folder (derived from the Model, never a status).
    pub from: BucketUrl,
    /// `<the Server's prefix>/artifacts/<name>/<generation>`.
    pub to: BucketUrl,
    pub status: AdapterStatus,
}

/// What a Server's status adds to the plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerExtra {
    pub ready_replicas: i32,
    /// The pods' label selector, for the scale subresource.
    pub selector: String,
    /// `status.adapters`: the adapters copied already (the reconciler adds each copy it
    /// makes).
    pub adapters: Vec<AdapterStatus>,
    /// Copies to make.
    pub copies: Vec<AdapterCopy>,
}

/// What to do for a Server.
pub type ServerPlan = Plan<ServerExtra>;

/// Plans a Server.
pub fn plan(input: &ServerInput<'_>, cloud: &dyn Cloud) -> ServerPlan {
    let parent = &input.parent;
    let selector = names::run_labels(Kind::Server, &parent.name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut plan = Plan::new(ServerExtra {
        ready_replicas: 0,
        selector,
        // Until the adapters are planned below, what is copied stays recorded: a Server
        // waiting on its Model or image keeps its copies.
        adapters: input.copied.to_vec(),
        ..Default::default()
    });
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
    let (artifacts, model_generation) = match &input.model {
        RefState::NotFound => {
            plan.conditions = serving(
                false,
                reasons::MODEL_NOT_FOUND,
                "Model spec.model.name not found",
            );
            return plan;
        }
        RefState::NotReady => {
            plan.conditions = serving(
                false,
                reasons::MODEL_NOT_READY,
                "waiting for the Model to be ready",
            );
            return plan;
        }
        RefState::Ready {
            artifacts,
            generation,
        } => (artifacts.clone(), *generation),
    };

    let mut mounts = vec![Mount {
        subdir: "model".into(),
        folder: artifacts,
        access: Access::ReadOnly,
        generation: Some(model_generation),
    }];
    let sources = adapter_sources(input);
    if sources.is_ok() {
        plan.extra.adapters.clear();
    }
    match sources {
        Ok(sources) if !sources.is_empty() => {
            // One volume, the Server's own `artifacts/`, holds a copy of each adapter: adding,
            // removing or rerunning an adapter changes what is in it, not the pod template,
            // so replicas load adapters at run time instead of rolling.
            let own = artifact_prefix(parent, cloud);
            plan.children
                .extend(owned_prefix_objects(parent, &own, cloud));
            let own = own.artifacts();
            for AdapterSource {
                name,
                model,
                artifacts: from,
                generation,
            } in sources
            {
                let status = AdapterStatus {
                    path: format!("{ADAPTERS_DIR}/{name}/{generation}"),
                    name: name.to_owned(),
                    model: model.to_owned(),
                    generation,
                };
                if input.copied.contains(&status) {
                    plan.extra.adapters.push(status);
                } else {
                    plan.extra.copies.push(AdapterCopy {
                        from: from.url.clone(),
                        to: own.url.join(&format!("{name}/{generation}")),
                        status,
                    });
                }
            }
            mounts.push(Mount {
                subdir: "adapters".into(),
                folder: own,
                access: Access::ReadOnly,
                generation: None,
            });
        }
        Ok(_) => {}
        Err((reason, message)) => {
            plan.conditions = serving(false, reason, message);
            return plan;
        }
    }

    let name = Kind::Server.workload_name(&parent.name);
    let workload = Workload {
        parent,
        image,
        command: &input.spec.command,
        env: &input.spec.env,
        extra_env: Vec::new(),
        resources: input.spec.resources.as_ref(),
        mounts,
        port: Some(SERVE_PORT),
        restart_policy: "Always",
    };
    // The image pull policy is Kubernetes' default (pull `:latest` and untagged images, else
    // when missing), not the original's `Always`: a fixed tag pulled on every start fails for
    // images loaded into the node (kind's `kind load`, the local cluster) and costs a
    // registry round trip per replica.
    let template = match pod_template(&workload, cloud) {
        Ok(t) => t,
        Err(b) => {
            plan.conditions = serving(false, b.reason, b.message);
            return plan;
        }
    };
    let selector = names::run_labels(Kind::Server, &parent.name);
    let deployment = Deployment {
        metadata: parent.child_meta(name.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(input.spec.replicas()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            template,
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        metadata: parent.child_meta(name.clone()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(BTreeMap::from_iter(selector)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 8080,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::String(SERVE_PORT.name.into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    plan.children.push(Child::Service(stamp_hash(
        |s: &mut Service| &mut s.metadata,
        service,
    )));
    // The Deployment is applied, not created, yet it starts the workload: its pods run as
    // the role's ServiceAccount.
    plan.account = Some(Kind::Server.run_role());
    plan.children.push(Child::Deployment(stamp_hash(
        |d: &mut Deployment| &mut d.metadata,
        deployment,
    )));

    let ready_replicas = input
        .deployment
        .as_ref()
        .map(|d| d.ready_replicas)
        .unwrap_or(0);
    plan.extra.ready_replicas = ready_replicas;
    plan.ready = ready_replicas >= 1;
    plan.conditions = if plan.ready {
        serving(
            true,
            reasons::DEPLOYMENT_READY,
            format!(
                "{ready_replicas} of {} replicas ready",
                input.spec.replicas()
            ),
        )
    } else if input.spec.replicas() == 0
        && input
            .spec
            .autoscaling
            .as_ref()
            .is_some_and(|a| a.min_replicas() == 0)
    {
        serving(
            false,
            reasons::SCALED_TO_ZERO,
            "scaled to zero while idle: the gateway starts a replica on the next request",
        )
    } else if input.spec.replicas() == 0 {
        serving(false, reasons::DEPLOYMENT_NOT_READY, "spec.replicas is 0")
    } else if let Some(b) = pod_problem(input.pods) {
        serving(false, b.reason, b.message)
    } else {
        serving(
            false,
            reasons::DEPLOYMENT_NOT_READY,
            match pod_progress(input.pods) {
                Some(at) => format!("waiting for Deployment {name} to have a ready replica: {at}"),
                None => format!("waiting for Deployment {name} to have a ready replica"),
            },
        )
    };
    plan
}

/// A Ready adapter Model trained from the Server's Model.
struct AdapterSource<'i> {
    name: &'i str,
    model: &'i str,
    artifacts: &'i PrefixFolder,
    generation: i64,
}

/// Each adapter's source, or why the Server must wait (or cannot serve them): every adapter
/// is a Ready Model trained from the Server's Model.
fn adapter_sources<'i>(
    input: &'i ServerInput<'_>,
) -> Result<Vec<AdapterSource<'i>>, (&'static str, String)> {
    let base = input.spec.model_name().unwrap_or_default();
    let mut sources = Vec::new();
    for (i, a) in input.adapters.iter().enumerate() {
        let field = format!("spec.adapters[{i}] ({})", a.name);
        let (artifacts, generation) = match &a.state {
            RefState::NotFound => {
                return Err((
                    reasons::ADAPTER_NOT_FOUND,
                    format!("Model {} of {field} not found", a.model),
                ));
            }
            RefState::NotReady => {
                return Err((
                    reasons::ADAPTER_NOT_READY,
                    format!("waiting for Model {} of {field} to be ready", a.model),
                ));
            }
            RefState::Ready {
                artifacts,
                generation,
            } => (artifacts, *generation),
        };
        if a.base.as_deref() != Some(base) {
            let trained_from = match &a.base {
                Some(b) => format!("was trained from Model {b}"),
                None => "names no base Model".to_owned(),
            };
            return Err((
                reasons::ADAPTER_NOT_OF_BASE,
                format!(
                    "Model {} of {field} {trained_from}, not from this Server's Model {base}",
                    a.model
                ),
            ));
        }
        sources.push(AdapterSource {
            name: &a.name,
            model: &a.model,
            artifacts,
            generation,
        });
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::types;
    use crate::fake::FakeCloud;
    use substratus_crds::ObjectRef;

    fn spec() -> ServerSpec {
        ServerSpec {
            image: Some("substratusai/model-server-basaran".into()),
            model: Some(ObjectRef {
                name: "falcon".into(),
                namespace: None,
            }),
            env: BTreeMap::from([("MODEL_LOAD_IN_4BIT".into(), "true".into())]),
            ..Default::default()
        }
    }

    fn input(
        spec: &ServerSpec,
        model: RefState,
        deployment: Option<ObservedDeployment>,
    ) -> ServerInput<'_> {
        ServerInput {
            parent: Parent {
                kind: Kind::Server,
                name: "falcon".into(),
                namespace: "ns".into(),
                uid: "u".into(),
                generation: Some(1),
            },
            spec,
            model,
            adapters: Vec::new(),
            deployment,
            pods: &[],
            copied: &[],
        }
    }

    fn adapter(name: &str, state: RefState, base: Option<&str>) -> AdapterInput {
        AdapterInput {
            name: name.into(),
            model: format!("{name}-model"),
            state,
            base: base.map(Into::into),
        }
    }

    fn adapter_at(name: &str, generation: i64) -> RefState {
        RefState::Ready {
            artifacts: crate::plan::fixtures::folder(&format!("fake://artifacts/{name}/artifacts")),
            generation,
        }
    }

    fn template_of(p: &ServerPlan) -> k8s_openapi::api::core::v1::PodTemplateSpec {
        p.children
            .iter()
            .find_map(|c| match c {
                Child::Deployment(d) => Some(d.spec.as_ref().unwrap().template.clone()),
                _ => None,
            })
            .expect("a Deployment")
    }

    #[test]
    fn adapters_are_copied_into_the_servers_own_folder_mounted_once_at_content_adapters() {
        let s = spec();
        let mut i = input(&s, ready_model(), None);
        i.adapters = vec![
            adapter("sql", adapter_at("sql", 1), Some("falcon")),
            adapter("chat", adapter_at("chat", 3), Some("falcon")),
        ];
        let cloud = FakeCloud::default();
        let p = plan(&i, &cloud);
        let own = artifact_prefix(&i.parent, &cloud).artifacts();
        assert_eq!(
            p.extra.copies,
            vec![
                AdapterCopy {
                    from: BucketUrl::parse("fake://artifacts/sql/artifacts").unwrap(),
                    to: own.url.join("sql/1"),
                    status: AdapterStatus {
                        name: "sql".into(),
                        model: "sql-model".into(),
                        generation: 1,
                        path: "/content/adapters/sql/1".into(),
                    },
                },
                AdapterCopy {
                    from: BucketUrl::parse("fake://artifacts/chat/artifacts").unwrap(),
                    to: own.url.join("chat/3"),
                    status: AdapterStatus {
                        name: "chat".into(),
                        model: "chat-model".into(),
                        generation: 3,
                        path: "/content/adapters/chat/3".into(),
                    },
                },
            ]
        );
        assert!(
            p.extra.adapters.is_empty(),
            "nothing is loadable before its copy"
        );
        let template = template_of(&p);
        let pod = template.spec.clone().unwrap();
        let mounts: Vec<(String, String, Option<bool>)> = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
            .collect();
        assert!(
            mounts.contains(&("adapters".into(), "/content/adapters".into(), Some(true))),
            "{mounts:?}"
        );
        assert_eq!(
            mounts
                .iter()
                .filter(|m| m.1.starts_with("/content/adapters"))
                .count(),
            1,
            "{mounts:?}"
        );
        let annotations = template
            .metadata
            .clone()
            .unwrap()
            .annotations
            .unwrap_or_default();
        assert!(
            !annotations.keys().any(|k| k.contains("adapters")),
            "{annotations:?}"
        );

        // Once copied, an adapter is loadable and not copied again; a rerun is a new copy in
        // a folder of its own. None of it changes the pod template: no replica rolls.
        let copied = vec![p.extra.copies[0].status.clone()];
        i.copied = &copied;
        i.adapters[1] = adapter("chat", adapter_at("chat", 4), Some("falcon"));
        let next = plan(&i, &cloud);
        assert_eq!(next.extra.adapters, copied);
        assert_eq!(next.extra.copies.len(), 1);
        assert_eq!(next.extra.copies[0].status.path, "/content/adapters/chat/4");
        assert_eq!(next.extra.copies[0].to, own.url.join("chat/4"));
        assert_eq!(template_of(&next), template);
        i.adapters.pop();
        assert_eq!(template_of(&plan(&i, &cloud)), template);

        // A copy recorded for an adapter no longer listed is dropped from the status.
        i.adapters.clear();
        let none = plan(&i, &cloud);
        assert!(none.extra.adapters.is_empty() && none.extra.copies.is_empty());
        assert!(
            !template_of(&none)
                .spec
                .unwrap()
                .volumes
                .iter()
                .flatten()
                .any(|v| v.name == "adapters"),
            "a Server without adapters mounts nothing for them"
        );
    }

    #[test]
    fn a_missing_unready_or_foreign_adapter_holds_the_server_naming_the_entry() {
        let s = spec();
        for (a, reason, says) in [
            (
                adapter("sql", RefState::NotFound, None),
                reasons::ADAPTER_NOT_FOUND,
                "Model sql-model of spec.adapters[1] (sql) not found",
            ),
            (
                adapter("sql", RefState::NotReady, Some("falcon")),
                reasons::ADAPTER_NOT_READY,
                "spec.adapters[1] (sql)",
            ),
            (
                adapter("sql", adapter_at("sql", 1), Some("llama")),
                reasons::ADAPTER_NOT_OF_BASE,
                "was trained from Model llama, not from this Server's Model falcon",
            ),
            (
                adapter("sql", adapter_at("sql", 1), None),
                reasons::ADAPTER_NOT_OF_BASE,
                "names no base Model",
            ),
        ] {
            let mut i = input(&s, ready_model(), None);
            i.adapters = vec![adapter("chat", adapter_at("chat", 1), Some("falcon")), a];
            let p = plan(&i, &FakeCloud::default());
            let ready = p
                .conditions
                .iter()
                .find(|c| c.type_ == types::READY)
                .unwrap();
            assert_eq!(ready.reason, reason);
            assert!(ready.message.contains(says), "{}", ready.message);
            assert!(
                !p.children.iter().any(|c| matches!(c, Child::Deployment(_))),
                "no replica starts without its adapters"
            );
        }
    }

    fn ready_model() -> RefState {
        RefState::Ready {
            artifacts: crate::plan::fixtures::folder("fake://artifacts/h/artifacts"),
            generation: 1,
        }
    }

    #[test]
    fn waits_for_the_model() {
        let s = spec();
        let p = plan(&input(&s, RefState::NotReady, None), &FakeCloud::default());
        assert_eq!(p.children.len(), 1, "only the params ConfigMap");
        assert_eq!(p.conditions[0].reason, reasons::MODEL_NOT_READY);
        let p = plan(&input(&s, RefState::NotFound, None), &FakeCloud::default());
        assert_eq!(p.conditions[0].reason, reasons::MODEL_NOT_FOUND);
    }

    #[test]
    fn serves_the_model_through_a_deployment_and_service() {
        let s = spec();
        let p = plan(&input(&s, ready_model(), None), &FakeCloud::default());
        let Child::Service(svc) = &p.children[1] else {
            panic!("Service")
        };
        assert_eq!(svc.metadata.name.as_deref(), Some("falcon-server"));
        let port = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
        assert_eq!(
            port.target_port,
            Some(IntOrString::String("http-serve".into()))
        );
        let Child::Deployment(d) = &p.children[2] else {
            panic!("Deployment")
        };
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.name, "serve");
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/")
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("model-server"));
        // Kubernetes' default policy: an image loaded into the node runs without a registry.
        assert_eq!(c.image_pull_policy, None);
        assert!(
            c.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.mount_path == "/content/model" && m.read_only == Some(true))
        );
        assert!(!p.ready);
        assert_eq!(p.conditions[0].reason, reasons::DEPLOYMENT_NOT_READY);
    }

    #[test]
    fn at_zero_replicas_the_status_says_whether_the_gateway_will_start_one() {
        let mut s = spec();
        s.replicas = Some(0);
        let p = plan(&input(&s, ready_model(), None), &FakeCloud::default());
        assert_eq!(p.conditions[0].reason, reasons::DEPLOYMENT_NOT_READY);
        assert!(p.conditions[0].message.contains("spec.replicas is 0"));
        s.autoscaling = Some(substratus_crds::Autoscaling {
            min_replicas: Some(0),
            max_replicas: 2,
            target_requests: None,
            scale_down_delay_seconds: None,
        });
        let p = plan(&input(&s, ready_model(), None), &FakeCloud::default());
        assert!(!p.ready);
        assert_eq!(p.conditions[0].reason, reasons::SCALED_TO_ZERO);
        let Child::Deployment(d) = &p.children[2] else {
            panic!("Deployment")
        };
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(0));
        // A floor above zero: zero replicas is not the gateway's doing.
        s.autoscaling.as_mut().unwrap().min_replicas = Some(1);
        let p = plan(&input(&s, ready_model(), None), &FakeCloud::default());
        assert_eq!(p.conditions[0].reason, reasons::DEPLOYMENT_NOT_READY);
    }

    #[test]
    fn ready_with_one_ready_replica() {
        let s = spec();
        let p = plan(
            &input(
                &s,
                ready_model(),
                Some(ObservedDeployment { ready_replicas: 1 }),
            ),
            &FakeCloud::default(),
        );
        assert!(p.ready);
        assert_eq!(p.extra.ready_replicas, 1);
        assert_eq!(p.extra.selector, "role=run,server=falcon");
        assert_eq!(
            (p.conditions[0].reason, p.conditions[0].status),
            (reasons::DEPLOYMENT_READY, true)
        );
        assert_eq!(p.conditions[1].type_, types::READY);
    }

    #[test]
    fn a_model_that_ran_again_rolls_the_servers_pods() {
        let s = spec();
        let template_of = |generation| {
            let model = RefState::Ready {
                artifacts: crate::plan::fixtures::folder("fake://artifacts/h/artifacts"),
                generation,
            };
            let p = plan(&input(&s, model, None), &FakeCloud::default());
            let Child::Deployment(d) = &p.children[2] else {
                panic!("Deployment")
            };
            let meta = d.spec.as_ref().unwrap().template.metadata.clone().unwrap();
            let hash =
                d.metadata.annotations.as_ref().unwrap()[crate::plan::SPEC_HASH_ANNOTATION].clone();
            (meta.annotations.unwrap_or_default(), hash)
        };
        let key = "substratus.ai/model-generation";
        // A first run: no marker (servers running before it existed are not restarted).
        let (first, first_hash) = template_of(1);
        assert!(!first.contains_key(key));
        let (second, second_hash) = template_of(2);
        assert_eq!(second[key], "2");
        assert_ne!(
            first_hash, second_hash,
            "a new run of the model is a new template"
        );
        assert_eq!(template_of(2).1, second_hash, "and the same run the same");
    }

    #[test]
    fn replicas_follow_the_spec() {
        let mut s = spec();
        s.replicas = Some(3);
        let p = plan(&input(&s, ready_model(), None), &FakeCloud::default());
        let Child::Deployment(d) = &p.children[2] else {
            panic!("Deployment")
        };
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    }
}
