//! Arbitrary specs and observations through every planner: no input makes one panic, and for
//! every object whose name and namespace the API server would accept, the plan keeps the
//! invariants users rely on: child names fit in 63 characters, no child lands in another
//! namespace, nothing is mounted read-write outside the object's own bucket prefix, and the
//! same input gives the same plan (hashes included). `PLANNER_CASES` sets the number of cases
//! (default 160,000: about 100,000 with admissible names and an accepted spec, about
//! 400,000 plans checked).

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use substratus_core::cloud::{BucketUrl, PrefixFolder};
use substratus_core::fake::FakeCloud;
use substratus_core::names::Kind;
use substratus_core::plan::batch::{self, BatchInput, BatchSpec};
use substratus_core::plan::build::{self, BuildInput, BuildSettings, ObservedBuildJob};
use substratus_core::plan::job::ObservedJob;
use substratus_core::plan::notebook::{self, NotebookInput, ObservedPod};
use substratus_core::plan::server::{self, AdapterInput, ObservedDeployment, ServerInput};
use substratus_core::plan::upload;
use substratus_core::plan::{Child, Parent, RefState};
use substratus_crds::{ModelSpec, NotebookSpec, ServerSpec, UploadStatus};

fn text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        "[a-z0-9-]{0,70}",
        any::<String>(),
        Just("${{ secrets.s.k }}".to_owned()),
        "\\$\\{\\{ ?secrets\\.[a-z.]{0,8} ?\\}\\}",
        "[0-9a-f]{32}",
        "(\\.\\./)*[a-z/]{0,20}",
        Just(String::new()),
    ]
}

/// Object names: mostly ones the API server accepts (a DNS label), sometimes anything.
fn name() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        19 => "[a-z]([-a-z0-9]{0,45}[a-z0-9])?",
        1 => text(),
    ]
}

fn int() -> impl Strategy<Value = i64> + Clone {
    prop_oneof![any::<i64>(), -3i64..20]
}

fn gpu() -> impl Strategy<Value = Value> {
    let ty = prop_oneof![
        Just(json!("nvidia-l4")),
        Just(json!("nvidia-a100")),
        Just(json!("nvidia-a100-80gb")),
        Just(json!("nvidia-t4")),
        Just(json!("nvidia-h100")),
        Just(json!("nvidia-a10g")),
        Just(Value::Null),
    ];
    (ty, proptest::option::of(int())).prop_map(|(t, c)| {
        let mut g = json!({"type": t, "count": c});
        g.as_object_mut().unwrap().retain(|_, v| !v.is_null());
        g
    })
}

fn resources() -> impl Strategy<Value = Value> {
    proptest::option::of((int(), int(), int(), proptest::option::of(gpu()))).prop_map(|r| match r {
        None => Value::Null,
        Some((cpu, memory, disk, gpu)) => {
            let mut r = json!({"cpu": cpu, "memory": memory, "disk": disk, "gpu": gpu});
            r.as_object_mut().unwrap().retain(|_, v| !v.is_null());
            r
        }
    })
}

fn build() -> impl Strategy<Value = Value> {
    let git = (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(|(url, path, branch, tag)| {
            let mut g = json!({"url": url, "path": path, "branch": branch, "tag": tag});
            g.as_object_mut().unwrap().retain(|_, v| !v.is_null());
            g
        });
    let upload = (text(), text()).prop_map(|(m, r)| json!({"md5Checksum": m, "requestID": r}));
    prop_oneof![
        Just(Value::Null),
        Just(json!({})),
        git.clone().prop_map(|g| json!({"git": g})),
        upload.clone().prop_map(|u| json!({"upload": u})),
        (git, upload).prop_map(|(g, u)| json!({"git": g, "upload": u})),
    ]
}

fn params() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(
        text(),
        prop_oneof![int().prop_map(|i| json!(i)), text().prop_map(|s| json!(s))],
        0..4,
    )
    .prop_map(|m| json!(m))
}

fn spec() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(text()),
        build(),
        proptest::collection::vec(text(), 0..3),
        proptest::collection::btree_map(text(), text(), 0..4),
        params(),
        resources(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(-2i32..5),
        proptest::collection::vec((text(), text()), 0..3),
    )
        .prop_map(
            |(
                image,
                build,
                command,
                env,
                params,
                resources,
                model,
                dataset,
                suspend,
                replicas,
                adapters,
            )| {
                // A Server's adapters (other kinds have no such field and ignore it).
                let adapters: Vec<Value> = adapters
                    .into_iter()
                    .map(|(a, m)| json!({"name": a, "model": {"name": m}}))
                    .collect();
                let mut s = json!({
                    "image": image, "build": build, "command": command, "env": env,
                    "params": params, "resources": resources,
                    "model": model.map(|n| json!({"name": n})),
                    "dataset": dataset.map(|n| json!({"name": n})),
                    "suspend": suspend, "replicas": replicas, "adapters": adapters,
                });
                // Absent, not null, as the API server would store it.
                s.as_object_mut().unwrap().retain(|_, v| !v.is_null());
                s
            },
        )
}

fn ref_state() -> impl Strategy<Value = Option<RefState>> {
    prop_oneof![
        Just(None),
        Just(Some(RefState::NotFound)),
        Just(Some(RefState::NotReady)),
        (text(), any::<i64>()).prop_map(|(p, generation)| Some(RefState::Ready {
            artifacts: PrefixFolder {
                kind: Kind::Model,
                namespace: "ns".into(),
                name: "ref".into(),
                folder: "artifacts",
                url: BucketUrl {
                    scheme: "s3".into(),
                    bucket: "b".into(),
                    path: p,
                },
            },
            generation,
        })),
    ]
}

fn job(outcome: u8, annotations: Vec<(String, String)>, deleting: bool) -> Job {
    let cond = match outcome % 3 {
        0 => None,
        1 => Some(("Complete", None)),
        _ => Some(("Failed", Some("BackoffLimitExceeded"))),
    };
    Job {
        metadata: ObjectMeta {
            name: Some("j".into()),
            annotations: Some(annotations.into_iter().collect()),
            deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        },
        status: Some(JobStatus {
            conditions: cond.map(|(t, r)| {
                vec![JobCondition {
                    type_: t.into(),
                    status: "True".into(),
                    reason: r.map(Into::into),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn observed() -> impl Strategy<Value = Option<Job>> {
    let keys = prop_oneof![
        Just("substratus.ai/generation".to_owned()),
        Just(build::IMAGE_ANNOTATION.to_owned()),
        Just(build::SOURCE_ANNOTATION.to_owned()),
        Just(build::ATTEMPT_ANNOTATION.to_owned()),
    ];
    proptest::option::of((
        any::<u8>(),
        proptest::collection::vec((keys, text()), 0..4),
        any::<bool>(),
    ))
    .prop_map(|j| j.map(|(o, a, d)| job(o, a, d)))
}

type Upload = (Option<String>, Option<String>, Option<i64>, Option<String>);

#[derive(Debug, Clone)]
struct Case {
    name: String,
    namespace: String,
    generation: Option<i64>,
    spec: Value,
    artifacts_url: Option<String>,
    model: Option<RefState>,
    dataset: Option<RefState>,
    job: Option<Job>,
    upload: Option<Upload>,
    flag: bool,
    stored: Option<String>,
    now: i64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (name(), name(), proptest::option::of(int())),
        spec(),
        proptest::option::of(text()),
        (ref_state(), ref_state()),
        observed(),
        proptest::option::of((
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(-1_000_000_000i64..4_000_000_000),
            proptest::option::of(text()),
        )),
        (
            any::<bool>(),
            proptest::option::of(text()),
            0i64..4_000_000_000,
        ),
    )
        .prop_map(
            |(
                (name, namespace, generation),
                spec,
                artifacts_url,
                (model, dataset),
                job,
                upload,
                (flag, stored, now),
            )| Case {
                name,
                namespace,
                generation,
                spec,
                artifacts_url,
                model,
                dataset,
                job,
                upload,
                flag,
                stored,
                now,
            },
        )
}

/// The longest name of each kind the schema admits.
fn max_name(kind: Kind) -> usize {
    match kind {
        Kind::Model => 50,
        Kind::Dataset => 48,
        Kind::Server => 49,
        Kind::Notebook => 47,
    }
}

/// Whether the API server would accept an object of `kind` named `name` in `namespace`.
fn admissible(kind: Kind, name: &str, namespace: &str) -> bool {
    let label = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    label(name, max_name(kind)) && label(namespace, 63)
}

/// A plan's children and the Job it creates, as JSON.
fn with_job(children: &[Child], job: Option<&Job>) -> Vec<Value> {
    let job = job.map(|j| Child::Job(j.clone()));
    children.iter().chain(&job).map(Child::to_value).collect()
}

/// The invariants of one plan's children for `parent`, whose own prefix is `own` (a
/// Server has none: it mounts nothing read-write).
fn check(parent: &Parent, own: Option<&str>, children: &[Value]) {
    for child in children {
        let meta = &child["metadata"];
        let name = meta["name"].as_str().unwrap_or_default();
        assert!(
            !name.is_empty() && name.len() <= 63,
            "{:?} {}: child name {name:?} ({} characters)",
            parent.kind,
            parent.name,
            name.len()
        );
        if let Some(ns) = meta["namespace"].as_str() {
            assert_eq!(ns, parent.namespace, "child {name} in another namespace");
        }
        let pod = child["spec"]["template"]["spec"].clone();
        let pod = if pod.is_null() {
            child["spec"].clone()
        } else {
            pod
        };
        if pod["containers"].is_array() {
            assert_eq!(
                pod["automountServiceAccountToken"],
                json!(false),
                "{name}: a pod with an API token"
            );
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{name}: a pod without the runtime's seccomp profile"
            );
            let containers = pod["containers"].as_array().into_iter().flatten();
            let init = pod["initContainers"].as_array().into_iter().flatten();
            for c in containers.chain(init) {
                assert_eq!(
                    c["securityContext"]["allowPrivilegeEscalation"],
                    json!(false),
                    "{name}: container {} may escalate privileges",
                    c["name"]
                );
            }
        }
        for volume in pod["volumes"].as_array().into_iter().flatten() {
            let csi = &volume["csi"];
            if csi.is_null() || csi["readOnly"] == json!(true) {
                continue;
            }
            let url = csi["volumeAttributes"]["url"].as_str().unwrap_or_default();
            let own = own.unwrap_or_else(|| {
                panic!("{name}: a read-write mount of {url} in a {:?}", parent.kind)
            });
            assert!(
                url == own || url.starts_with(&format!("{own}/")),
                "{name}: read-write mount of {url} outside the object's prefix {own}"
            );
        }
    }
}

/// Runs every planner that applies, twice (the plans must be equal); checks the invariants
/// when the object's name and namespace are admissible. Returns how many planners ran and
/// how many plans were checked.
fn run(c: &Case, cloud: &FakeCloud) -> (u32, u32) {
    let settings = BuildSettings::default();
    let mut planned = 0;
    let mut checked = 0;
    for kind in Kind::ALL {
        let parent = Parent {
            kind,
            name: c.name.clone(),
            namespace: c.namespace.clone(),
            uid: "uid".into(),
            generation: c.generation,
        };
        match kind {
            Kind::Model | Kind::Dataset => {
                let Ok(spec) = serde_json::from_value::<ModelSpec>(c.spec.clone()) else {
                    continue;
                };
                let input = BatchInput {
                    parent: parent.clone(),
                    spec: BatchSpec {
                        image: spec.image.as_deref(),
                        command: &spec.command,
                        env: &spec.env,
                        params: &spec.params,
                        resources: spec.resources.as_ref(),
                    },
                    conditions: &[],
                    artifacts_url: c.artifacts_url.as_deref(),
                    base_model: c.model.clone(),
                    dataset: c.dataset.clone(),
                    job: c.job.as_ref().map(ObservedJob::from_job),
                    pods: &[],
                };
                let p = batch::plan(&input, cloud);
                assert_eq!(
                    p,
                    batch::plan(&input, cloud),
                    "the same input, another plan"
                );
                planned += 1;
                if admissible(kind, &c.name, &c.namespace) {
                    let children = with_job(&p.children, p.job());
                    check(&parent, Some(&p.extra.artifacts_url), &children);
                    checked += 1;
                }
                if let Some(b) = &spec.build {
                    let status = c
                        .upload
                        .as_ref()
                        .map(|(url, req, exp, stored)| UploadStatus {
                            signed_url: url.clone(),
                            request_id: req.clone(),
                            expiration: exp
                                .and_then(|e| jiff::Timestamp::from_second(e).ok())
                                .map(Time),
                            stored_md5_checksum: stored.clone(),
                        });
                    if let Some(u) = &b.upload {
                        let _ = upload::upload_needs_storage(u, status.as_ref());
                        let next = upload::upload_next(
                            u,
                            status.as_ref(),
                            c.stored.as_deref(),
                            c.now,
                            settings.renew_margin_secs(),
                        );
                        let s = status.clone().unwrap_or_default();
                        let _ = upload::uploaded_condition(u, &s, &next);
                    }
                    let input = BuildInput {
                        parent: &parent,
                        build: b,
                        spec_image: spec.image.as_deref(),
                        uploaded: c.flag,
                        job: c.job.as_ref().map(ObservedBuildJob::from_job),
                        pods: &[],
                        settings: &settings,
                    };
                    let p = build::plan(&input, cloud);
                    assert_eq!(
                        p,
                        build::plan(&input, cloud),
                        "the same input, another plan"
                    );
                    if admissible(kind, &c.name, &c.namespace) {
                        let children = with_job(&p.children, p.job());
                        check(&parent, None, &children);
                    }
                }
            }
            Kind::Server => {
                let Ok(spec) = serde_json::from_value::<ServerSpec>(c.spec.clone()) else {
                    continue;
                };
                // The adapters' Models: in the sampled state, trained from the base or not.
                let adapters = spec
                    .adapters
                    .iter()
                    .enumerate()
                    .map(|(i, a)| AdapterInput {
                        name: a.name.clone(),
                        model: a.model.name.clone(),
                        state: c.dataset.clone().unwrap_or(RefState::NotFound),
                        base: (i % 2 == 0)
                            .then(|| spec.model_name().unwrap_or_default().to_owned()),
                    })
                    .collect();
                let input = ServerInput {
                    parent,
                    spec: &spec,
                    model: c.model.clone().unwrap_or(RefState::NotFound),
                    adapters,
                    deployment: c.generation.map(|g| ObservedDeployment {
                        ready_replicas: (g % 3) as i32,
                    }),
                    pods: &[],
                    copied: &[],
                };
                let p = server::plan(&input, cloud);
                assert_eq!(
                    p,
                    server::plan(&input, cloud),
                    "the same input, another plan"
                );
                planned += 1;
                if admissible(kind, &c.name, &c.namespace) {
                    let children: Vec<Value> = p.children.iter().map(Child::to_value).collect();
                    check(&input.parent, None, &children);
                    checked += 1;
                }
            }
            Kind::Notebook => {
                let Ok(spec) = serde_json::from_value::<NotebookSpec>(c.spec.clone()) else {
                    continue;
                };
                let input = NotebookInput {
                    parent,
                    spec: &spec,
                    artifacts_url: c.artifacts_url.as_deref(),
                    model: c.model.clone(),
                    dataset: c.dataset.clone(),
                    new_token: "0123456789abcdef0123456789abcdef",
                    pod: c.job.as_ref().map(|_| ObservedPod {
                        spec_hash: c.stored.clone(),
                        deleting: c.flag,
                        running_and_ready: !c.flag,
                        failed: false,
                    }),
                    pods: &[],
                };
                let p = notebook::plan(&input, cloud);
                assert_eq!(
                    p,
                    notebook::plan(&input, cloud),
                    "the same input, another plan"
                );
                planned += 1;
                if admissible(kind, &c.name, &c.namespace) {
                    let children: Vec<Value> = p
                        .children
                        .iter()
                        .chain(&p.create)
                        .map(Child::to_value)
                        .collect();
                    check(&input.parent, Some(&p.extra.artifacts_url), &children);
                    checked += 1;
                }
            }
        }
    }
    (planned, checked)
}

#[test]
fn the_invariant_check_refuses_what_it_must() {
    let parent = Parent {
        kind: Kind::Model,
        name: "m".into(),
        namespace: "ns".into(),
        uid: "u".into(),
        generation: Some(1),
    };
    let fails = |children: Vec<Value>, own: Option<&str>| {
        let parent = parent.clone();
        std::panic::catch_unwind(move || check(&parent, own, &children)).is_err()
    };
    let volume = |url: &str, read_only: bool| {
        json!({"metadata": {"name": "j", "namespace": "ns"}, "spec": {"template": {"spec": {"volumes": [
            {"name": "v", "csi": {"driver": "d", "readOnly": read_only, "volumeAttributes": {"url": url}}}]}}}})
    };
    assert!(!fails(
        vec![volume("s3://b/own/artifacts", false)],
        Some("s3://b/own")
    ));
    assert!(!fails(
        vec![volume("s3://b/other/artifacts", true)],
        Some("s3://b/own")
    ));
    assert!(fails(
        vec![volume("s3://b/other/artifacts", false)],
        Some("s3://b/own")
    ));
    assert!(fails(
        vec![volume("s3://b/owner/artifacts", false)],
        Some("s3://b/own")
    ));
    assert!(fails(vec![volume("s3://b/own/artifacts", false)], None));
    assert!(fails(
        vec![json!({"metadata": {"name": "x".repeat(64)}})],
        None
    ));
    assert!(fails(
        vec![json!({"metadata": {"name": "c", "namespace": "other"}})],
        None
    ));
    assert!(!fails(
        vec![json!({"metadata": {"name": "pv-cluster-scoped"}})],
        None
    ));
    let pod = |automount: bool, seccomp: &str, escalate: bool| {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {
            "automountServiceAccountToken": automount,
            "securityContext": {"seccompProfile": {"type": seccomp}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": escalate}}]}})
    };
    assert!(!fails(vec![pod(false, "RuntimeDefault", false)], None));
    assert!(fails(vec![pod(true, "RuntimeDefault", false)], None));
    assert!(fails(vec![pod(false, "Unconfined", false)], None));
    assert!(fails(vec![pod(false, "RuntimeDefault", true)], None));
}

#[test]
fn no_spec_or_observation_makes_a_planner_panic() {
    // The generated strategy types nest deeply; debug builds need a larger stack to build them.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(fuzz)
        .unwrap()
        .join()
        .unwrap();
}

fn fuzz() {
    let cases: u32 = std::env::var("PLANNER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160_000);
    let cloud = FakeCloud::default();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let ran = std::cell::Cell::new(0u32);
    let planned = std::cell::Cell::new(0u32);
    let checked = std::cell::Cell::new(0u32);
    let admitted = std::cell::Cell::new(0u32);
    runner
        .run(&case(), |c| {
            ran.set(ran.get() + 1);
            let (p, k) = run(&c, &cloud);
            planned.set(planned.get() + p);
            checked.set(checked.get() + k);
            if k > 0 {
                admitted.set(admitted.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "{} cases, {} planner runs, {} plans checked for invariants ({} cases with admissible names)",
        ran.get(),
        planned.get(),
        checked.get(),
        admitted.get()
    );
    // The invariants must be checked on most cases, not only a few.
    assert!(
        u64::from(admitted.get()) * 10 >= u64::from(cases) * 6,
        "only {} of {cases} cases had admissible names",
        admitted.get()
    );
    assert!(ran.get() >= cases, "ran {} of {cases}", ran.get());
    // The generator must reach the planners, not only fail to deserialise.
    assert!(
        planned.get() > cases,
        "only {} planner runs for {} cases",
        planned.get(),
        ran.get()
    );
}
