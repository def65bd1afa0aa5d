//! Image builds of `spec.build`: the build Job (the upload handshake before it is in
//! [`super::upload`]). Pure: the reconciler reads storage and the Job, and applies what this
//! asks for.
//!
//! The built image is `<registry>/<cluster>-<kind>-<ns>-<name>:<tag>`, the tag being the git
//! tag, else the git branch, else the upload's md5, else `latest`. An object whose
//! `spec.image` is that image is built; any other `spec.image` of an object with a `build`
//! is the image of an earlier source and is not run while the new one builds.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, KeyToPath, Pod, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use substratus_crds::{Build, BuildGit};

pub use super::image::{effective_image, image_tag, source_id, target_image};
use super::job::JobOutcome;
pub use super::job::ObservedBuildJob;
use super::storage::own_objects;
use super::{Child, Deletable, Parent, Plan, SOON, pod_problem, stamp_hash};
use crate::cloud::{ArtifactPrefix, Cloud};
use crate::conditions::{Desired, reasons, types};
use crate::names::{self, MANAGED_BY, MANAGED_BY_LABEL, Role};

/// Annotation of a build Job: the image it pushes.
pub const IMAGE_ANNOTATION: &str = "substratus.ai/image";
/// Annotation of a build Job: the source it builds (git location or upload md5).
pub const SOURCE_ANNOTATION: &str = "substratus.ai/build-source";
/// Annotation of a build Job: the attempt it is (upload requestID, or the generation of a git
/// build); a failed build is retried by a new attempt of the same source.
pub const ATTEMPT_ANNOTATION: &str = "substratus.ai/build-attempt";

/// Why a `build` with neither or both sources cannot be built (the schema refuses it too).
const NO_SOURCE: &str = "spec.build must set exactly one of spec.build.git or spec.build.upload";

/// The default builder: kaniko's last release (v1.24.0), pinned by the digest of its image
/// index, so what runs cannot change under a tag. Upload contexts never reach kaniko's own
/// archive extraction: the operator's image checks and unpacks them first
/// ([`BuildSettings::context_image`]).
pub const DEFAULT_BUILDER_IMAGE: &str = "gcr.io/kaniko-project/executor:v1.24.0@sha256:4e7a52dd1f14872430652bb3b027405b8dfd17c4538751c620ac005741ef9698";
/// The default git image (git 2.49.1), pinned by digest.
pub const DEFAULT_GIT_IMAGE: &str =
    "alpine/git:v2.49.1@sha256:c0280cf9572316299b08544065d3bf35db65043d5e3963982ec50647d2746e26";

/// The builder and its helpers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSettings {
    /// Image of the builder: a kaniko executor (`--context`, `--destination` flags).
    pub builder_image: String,
    /// Image with `git`, to clone git sources.
    pub git_image: String,
    /// Lifetime of a signed upload URL.
    pub upload_url_ttl: std::time::Duration,
    /// Image whose `unpack-context` command checks a mounted upload before the builder reads
    /// it (the operator's own image): the bytes must have the declared md5, and no entry may
    /// leave the context (`..`, absolute paths, links out, hard links, devices). kaniko's own
    /// unpacking follows such entries. `None` hands the archive to the builder as it is.
    pub context_image: Option<String>,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            builder_image: DEFAULT_BUILDER_IMAGE.into(),
            git_image: DEFAULT_GIT_IMAGE.into(),
            upload_url_ttl: std::time::Duration::from_secs(300),
            context_image: None,
        }
    }
}

/// What a build reconcile reads.
#[derive(Clone, Debug)]
pub struct BuildInput<'a> {
    pub parent: &'a Parent,
    pub build: &'a Build,
    pub spec_image: Option<&'a str>,
    /// For upload builds: whether the archive with the declared md5 is in storage.
    pub uploaded: bool,
    pub job: Option<ObservedBuildJob>,
    /// Pods of the build Job, to explain a wait or a failure.
    pub pods: &'a [Pod],
    pub settings: &'a BuildSettings,
}

/// What the build step adds to the plan (whose conditions are `Built`; for uploads, the
/// caller adds `Uploaded`, and whose children are those the build needs, e.g. the upload's
/// volume claim).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuildExtra {
    /// The image to run, when built.
    pub image: Option<String>,
    /// Write this image into `spec.image` (the build just completed).
    pub set_image: Option<String>,
    /// Why the workload cannot run yet, for the `Ready` condition.
    pub blocking: Option<Desired>,
}

/// What the build step does.
pub type BuildPlan = Plan<BuildExtra>;

fn built(status: bool, reason: &'static str, message: impl Into<String>) -> Desired {
    Desired::new(types::BUILT, status, reason, message)
}

/// Plans the build of `input.build` (after the upload handshake, for uploads).
pub fn plan(input: &BuildInput<'_>, cloud: &dyn Cloud) -> BuildPlan {
    let parent = input.parent;
    let target = target_image(parent, input.build, cloud);
    let job_name = names::build_job(parent.kind, &parent.name);
    let mut plan = BuildPlan::default();
    let block = |plan: &mut BuildPlan, c: Desired| {
        plan.extra.blocking = Some(c.clone());
        plan.conditions.push(c);
    };

    if input.spec_image == Some(target.as_str()) {
        plan.extra.image = Some(target.clone());
        plan.conditions.push(built(
            true,
            reasons::JOB_COMPLETE,
            format!("image {target} built"),
        ));
        return plan;
    }
    if input.build.git.is_none() && input.build.upload.is_none() {
        block(&mut plan, built(false, reasons::INVALID_SPEC, NO_SOURCE));
        return plan;
    }
    if input.build.upload.is_some() && !input.uploaded {
        // The caller's Uploaded condition says what is awaited.
        plan.extra.blocking = Some(Desired::new(
            types::READY,
            false,
            reasons::AWAITING_UPLOAD,
            "waiting for the build context to be uploaded (see the Uploaded condition)",
        ));
        plan.conditions.push(built(
            false,
            reasons::AWAITING_UPLOAD,
            "the build starts once the upload is in storage",
        ));
        return plan;
    }

    let source = source_id(input.build);
    let attempt = attempt_id(input.build, parent.generation);
    match &input.job {
        Some(j) if j.deleting => {
            plan.next_look = Some(SOON);
            block(
                &mut plan,
                built(
                    false,
                    reasons::JOB_NOT_COMPLETE,
                    format!(
                        "waiting for the build Job {job_name} of an earlier source to be deleted"
                    ),
                ),
            );
        }
        Some(j)
            if j.source.as_deref() != Some(&source)
                || j.image.as_deref() != Some(&target)
                || (matches!(j.outcome, JobOutcome::Failed { .. })
                    && j.attempt.as_deref() != Some(&attempt)) =>
        {
            plan.replace(Deletable::Job, job_name.clone());
            block(
                &mut plan,
                built(
                    false,
                    reasons::JOB_NOT_COMPLETE,
                    format!("the source changed: replacing the build Job {job_name}"),
                ),
            );
        }
        Some(j) => match &j.outcome {
            JobOutcome::Complete => {
                plan.extra.image = Some(target.clone());
                plan.extra.set_image = Some(target.clone());
                plan.conditions.push(built(
                    true,
                    reasons::JOB_COMPLETE,
                    format!("image {target} built"),
                ));
            }
            JobOutcome::Failed { message } => {
                let retry = if input.build.upload.is_some() {
                    "upload again (a new spec.build.upload.requestID) to retry"
                } else {
                    "change the spec to retry"
                };
                let detail = build_failure_detail(input.pods)
                    .map(|d| format!("; {d}"))
                    .unwrap_or_default();
                block(
                    &mut plan,
                    built(
                        false,
                        reasons::BUILD_FAILED,
                        format!("{message}{detail}; {retry}"),
                    ),
                );
            }
            JobOutcome::Running => {
                let c = match pod_problem(input.pods) {
                    Some(b) => built(false, b.reason, b.message),
                    None => built(
                        false,
                        reasons::JOB_NOT_COMPLETE,
                        format!("Waiting for builder Job {job_name} to complete ({target})"),
                    ),
                };
                block(&mut plan, c);
            }
        },
        None => {
            let prefix = super::storage::artifact_prefix(parent, cloud);
            match build_job(input, &prefix, &target, &source, &attempt, cloud) {
                Ok((job, objects)) => {
                    plan.children = objects;
                    plan.start(Role::ContainerBuilder, Child::Job(job));
                    block(
                        &mut plan,
                        built(
                            false,
                            reasons::JOB_NOT_COMPLETE,
                            format!("Waiting for builder Job {job_name} to complete ({target})"),
                        ),
                    );
                }
                Err(b) => block(&mut plan, built(false, b.reason, b.message)),
            }
        }
    }
    plan
}

fn attempt_id(build: &Build, generation: Option<i64>) -> String {
    match &build.upload {
        Some(u) => u.request_id.clone(),
        None => format!("generation-{}", generation.unwrap_or(0)),
    }
}

/// The message of the builder's failed container, when its pod says it.
fn build_failure_detail(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|p| {
        let statuses = p.status.as_ref()?;
        statuses
            .init_container_statuses
            .iter()
            .flatten()
            .chain(statuses.container_statuses.iter().flatten())
            .find_map(|cs| {
                let t = cs.state.as_ref()?.terminated.as_ref()?;
                (t.exit_code != 0).then(|| {
                    format!(
                        "container {} exited with code {}{}",
                        cs.name,
                        t.exit_code,
                        t.message
                            .as_deref()
                            .map(|m| format!(": {}", m.chars().take(500).collect::<String>()))
                            .unwrap_or_default()
                    )
                })
            })
    })
}

const WORKSPACE: &str = "/workspace";

/// The git clone init container: arguments only, no shell, and `--` before the URL so that
/// no part of the spec is read as an option.
fn clone_container(git: &BuildGit, image: &str) -> Container {
    let mut args = vec!["clone".to_owned(), "--depth=1".to_owned()];
    if let Some(r) = git
        .tag
        .as_deref()
        .filter(|t| !t.is_empty())
        .or(git.branch.as_deref().filter(|b| !b.is_empty()))
    {
        args.push(format!("--branch={r}"));
    }
    args.extend(["--".to_owned(), git.url.clone(), WORKSPACE.to_owned()]);
    let mut mounts = vec![VolumeMount {
        name: "workspace".into(),
        mount_path: WORKSPACE.into(),
        ..Default::default()
    }];
    let env_var = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    };
    // Never wait for a password on a terminal that is not there.
    let mut env = vec![env_var("GIT_TERMINAL_PROMPT", "0")];
    if git.credentials_secret.is_some() {
        // git's own credential store, read from the mounted Secret: no shell, and the
        // token is in no argument, environment value or message.
        mounts.push(VolumeMount {
            name: GIT_CREDENTIALS_VOLUME.into(),
            mount_path: GIT_CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        env.extend([
            env_var("GIT_CONFIG_COUNT", "1"),
            env_var("GIT_CONFIG_KEY_0", "credential.helper"),
            env_var(
                "GIT_CONFIG_VALUE_0",
                &format!("store --file={GIT_CREDENTIALS_DIR}/{GIT_CREDENTIALS_KEY}"),
            ),
        ]);
    }
    Container {
        name: "git-clone".into(),
        image: Some(image.to_owned()),
        command: Some(vec!["git".into()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

const GIT_CREDENTIALS_VOLUME: &str = "git-credentials";
const GIT_CREDENTIALS_DIR: &str = "/etc/substratus/git";
/// The key of a `credentialsSecret`: git's credential store file.
pub const GIT_CREDENTIALS_KEY: &str = ".git-credentials";

/// The volume of a git build's `credentialsSecret`: its one key, readable by its owner only.
fn git_credentials_volume(secret: &str) -> Volume {
    Volume {
        name: GIT_CREDENTIALS_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: Some(vec![KeyToPath {
                key: GIT_CREDENTIALS_KEY.into(),
                path: GIT_CREDENTIALS_KEY.into(),
                mode: Some(0o400),
            }]),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn requests(cloud: &dyn Cloud) -> Option<BTreeMap<String, Quantity>> {
    let r = cloud.builder_resources();
    let mut m = BTreeMap::new();
    if r.cpu > 0 {
        m.insert("cpu".to_owned(), Quantity(r.cpu.to_string()));
    }
    if r.memory_gib > 0 {
        m.insert("memory".to_owned(), Quantity(format!("{}Gi", r.memory_gib)));
    }
    if r.disk_gib > 0 {
        m.insert(
            "ephemeral-storage".to_owned(),
            Quantity(format!("{}Gi", r.disk_gib)),
        );
    }
    (!m.is_empty()).then_some(m)
}

/// The build Job `<name>-<kind>-bld` and the objects its volumes need.
fn build_job(
    input: &BuildInput<'_>,
    prefix: &ArtifactPrefix,
    target: &str,
    source: &str,
    attempt: &str,
    cloud: &dyn Cloud,
) -> Result<(Job, Vec<Child>), super::Blocked> {
    let parent = input.parent;
    let job_name = names::build_job(parent.kind, &parent.name);
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut init_containers = Vec::new();
    let mut objects = Vec::new();
    let mut pod_annotations = BTreeMap::from([(
        names::DEFAULT_CONTAINER_ANNOTATION.to_owned(),
        "builder".to_owned(),
    )]);
    let mut args = Vec::new();
    match (&input.build.git, &input.build.upload) {
        (Some(git), _) => {
            volumes.push(Volume {
                name: "workspace".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "workspace".into(),
                mount_path: WORKSPACE.into(),
                ..Default::default()
            });
            if let Some(secret) = &git.credentials_secret {
                volumes.push(git_credentials_volume(&secret.name));
            }
            init_containers.push(clone_container(git, &input.settings.git_image));
            args.push(format!("--context=dir://{WORKSPACE}"));
            if let Some(path) = git
                .path
                .as_deref()
                .map(|p| p.trim_matches('/'))
                .filter(|p| !p.is_empty())
            {
                if path.split('/').any(|c| c == "..") {
                    return Err(super::Blocked {
                        reason: reasons::INVALID_SPEC,
                        message: format!(
                            "spec.build.git.path {path:?} must stay inside the repository"
                        ),
                    });
                }
                args.push(format!("--context-sub-path={path}"));
            }
        }
        (None, Some(upload)) => {
            let mut ctx = cloud.upload_context(prefix)?;
            pod_annotations.extend(std::mem::take(&mut ctx.pod_annotations));
            let archive = ctx.context.strip_prefix("tar://").map(str::to_owned);
            let sub_path = ctx.sub_path.take();
            match (ctx.mount, archive, &input.settings.context_image) {
                (Some((mut volume, dir)), Some(archive), Some(image)) => {
                    volume.name = "upload".into();
                    volumes.push(volume);
                    volumes.push(Volume {
                        name: "workspace".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    });
                    let workspace = VolumeMount {
                        name: "workspace".into(),
                        mount_path: WORKSPACE.into(),
                        ..Default::default()
                    };
                    init_containers.push(Container {
                        name: "context".into(),
                        image: Some(image.clone()),
                        args: Some(vec![
                            "unpack-context".into(),
                            format!("--archive={archive}"),
                            format!("--md5={}", upload.md5_checksum),
                            format!("--into={WORKSPACE}"),
                        ]),
                        volume_mounts: Some(vec![
                            VolumeMount {
                                name: "upload".into(),
                                mount_path: dir,
                                read_only: Some(true),
                                sub_path,
                                ..Default::default()
                            },
                            workspace.clone(),
                        ]),
                        ..Default::default()
                    });
                    mounts.push(workspace);
                    args.push(format!("--context=dir://{WORKSPACE}"));
                }
                (mount, _, _) => {
                    args.push(format!("--context={}", ctx.context));
                    if let Some((mut volume, dir)) = mount {
                        volume.name = "upload".into();
                        volumes.push(volume);
                        mounts.push(VolumeMount {
                            name: "upload".into(),
                            mount_path: dir,
                            read_only: Some(true),
                            sub_path,
                            ..Default::default()
                        });
                    }
                }
            }
            objects = own_objects(parent, ctx.objects);
        }
        (None, None) => {
            return Err(super::Blocked {
                reason: reasons::INVALID_SPEC,
                message: NO_SOURCE.into(),
            });
        }
    }
    args.extend([
        format!("--destination={target}"),
        "--cache=true".into(),
        "--compressed-caching=false".into(),
        "--log-format=text".into(),
        "--log-timestamp=false".into(),
    ]);
    args.extend(cloud.builder_args());

    let mut labels = BTreeMap::from([
        (parent.kind.lower().to_owned(), parent.name.clone()),
        ("role".to_owned(), "build".to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
    ]);
    labels.extend(cloud.pod_identity_labels());
    let mut builder = Container {
        name: "builder".into(),
        image: Some(input.settings.builder_image.clone()),
        args: Some(args),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        resources: Some(ResourceRequirements {
            requests: requests(cloud),
            ..Default::default()
        }),
        ..Default::default()
    };
    super::harden(&mut builder);
    init_containers.iter_mut().for_each(super::harden);
    let mut meta = parent.child_meta(job_name);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert("role".into(), "build".into());
    meta.annotations = Some(BTreeMap::from([
        (IMAGE_ANNOTATION.to_owned(), target.to_owned()),
        (SOURCE_ANNOTATION.to_owned(), source.to_owned()),
        (ATTEMPT_ANNOTATION.to_owned(), attempt.to_owned()),
    ]));
    let job = Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(1),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    containers: vec![builder],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    service_account_name: Some(Role::ContainerBuilder.service_account().into()),
                    automount_service_account_token: Some(false),
                    restart_policy: Some("Never".into()),
                    // The builder unpacks base images as root; it runs in its own pod with
                    // no access to the workloads' storage.
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(0),
                        run_as_group: Some(0),
                        fs_group: Some(super::CONTENT_FS_GROUP),
                        seccomp_profile: Some(super::runtime_default_seccomp()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok((stamp_hash(|j: &mut Job| &mut j.metadata, job), objects))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeCloud;
    use k8s_openapi::api::batch::v1::JobCondition;
    use k8s_openapi::api::batch::v1::JobStatus;

    use crate::plan::fixtures::{git, parent, upload};

    fn settings() -> BuildSettings {
        BuildSettings::default()
    }

    fn input<'a>(p: &'a Parent, b: &'a Build, s: &'a BuildSettings) -> BuildInput<'a> {
        BuildInput {
            parent: p,
            build: b,
            spec_image: None,
            uploaded: true,
            job: None,
            pods: &[],
            settings: s,
        }
    }

    fn job_with(outcome: &str, image: &str, source: &str, attempt: &str) -> ObservedBuildJob {
        let job = Job {
            metadata: ObjectMeta {
                name: Some("m-model-bld".into()),
                annotations: Some(BTreeMap::from([
                    (IMAGE_ANNOTATION.to_owned(), image.to_owned()),
                    (SOURCE_ANNOTATION.to_owned(), source.to_owned()),
                    (ATTEMPT_ANNOTATION.to_owned(), attempt.to_owned()),
                ])),
                ..Default::default()
            },
            status: Some(JobStatus {
                conditions: (!outcome.is_empty()).then(|| {
                    vec![JobCondition {
                        type_: outcome.into(),
                        status: "True".into(),
                        reason: Some("BackoffLimitExceeded".into()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        ObservedBuildJob::from_job(&job)
    }

    #[test]
    fn the_default_builder_and_git_images_are_pinned_by_digest() {
        for image in [DEFAULT_BUILDER_IMAGE, DEFAULT_GIT_IMAGE] {
            let (name, digest) = image.split_once("@sha256:").expect("a digest");
            assert!(name.contains(':') && !name.ends_with(":latest"), "{image}");
            assert_eq!(digest.len(), 64, "{image}");
            assert!(
                digest
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        let d = BuildSettings::default();
        assert_eq!(
            (d.builder_image.as_str(), d.git_image.as_str()),
            (DEFAULT_BUILDER_IMAGE, DEFAULT_GIT_IMAGE)
        );
    }

    #[test]
    fn a_private_repository_s_credentials_reach_the_clone_step_only_as_a_mounted_file() {
        let cloud = FakeCloud::default();
        let (p, s) = (parent(), settings());
        let mut b = git(Some("v1"), None, None);
        b.git.as_mut().unwrap().credentials_secret = Some(substratus_crds::ObjectRef {
            name: "repo-token".into(),
            ..Default::default()
        });
        let job = plan(&input(&p, &b, &s), &cloud).job().cloned().unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == GIT_CREDENTIALS_VOLUME)
            .expect("the credentials volume");
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("repo-token"));
        let item = &secret.items.as_ref().unwrap()[0];
        assert_eq!(
            (item.key.as_str(), item.mode),
            (GIT_CREDENTIALS_KEY, Some(0o400))
        );
        let clone = &pod.init_containers.as_ref().unwrap()[0];
        let mount = clone
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == GIT_CREDENTIALS_VOLUME)
            .unwrap();
        assert_eq!(mount.read_only, Some(true));
        let env: BTreeMap<_, _> = clone
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["GIT_CONFIG_KEY_0"], "credential.helper");
        assert_eq!(
            env["GIT_CONFIG_VALUE_0"],
            format!("store --file={GIT_CREDENTIALS_DIR}/{GIT_CREDENTIALS_KEY}")
        );
        assert_eq!(env["GIT_TERMINAL_PROMPT"], "0");
        // The builder, which runs the repository's Dockerfile, never sees them.
        assert!(
            pod.containers[0]
                .volume_mounts
                .iter()
                .flatten()
                .all(|m| m.name != GIT_CREDENTIALS_VOLUME)
        );
        // Without a Secret, no volume and no helper.
        let b = git(Some("v1"), None, None);
        let job = plan(&input(&p, &b, &s), &cloud).job().cloned().unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert!(
            pod.volumes
                .iter()
                .flatten()
                .all(|v| v.name != GIT_CREDENTIALS_VOLUME)
        );
        let env = pod.init_containers.unwrap()[0].env.clone().unwrap();
        assert!(env.iter().all(|e| e.name != "GIT_CONFIG_COUNT"));
    }

    #[test]
    fn a_git_build_job_follows_the_contract() {
        let cloud = FakeCloud::default();
        let (p, s) = (parent(), settings());
        let b = git(None, Some("--upload-pack=evil"), Some("/models/x/"));
        let plan = plan(&input(&p, &b, &s), &cloud);
        let job = plan.job().cloned().expect("a build Job");
        assert_eq!(job.metadata.name.as_deref(), Some("m-model-bld"));
        let t = job.spec.unwrap().template;
        let labels = t.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["model"], "m");
        assert_eq!(labels["role"], "build");
        let pod = t.spec.unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("container-builder")
        );
        let clone = &pod.init_containers.unwrap()[0];
        let args = clone.args.clone().unwrap();
        // The branch is one `--branch=` argument and the URL follows `--`.
        assert!(
            args.contains(&"--branch=--upload-pack=evil".to_owned()),
            "{args:?}"
        );
        let dash = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(args[dash + 1], "https://example.com/r.git");
        let builder = &pod.containers[0];
        assert_eq!(builder.name, "builder");
        let args = builder.args.clone().unwrap();
        assert!(args.contains(&"--context=dir:///workspace".to_owned()));
        assert!(args.contains(&"--context-sub-path=models/x".to_owned()));
        // The tag is made safe: no leading '-' reaches kaniko.
        let destination =
            "--destination=registry.test/substratus/test-cluster-model-ns__m:_-upload-pack-evil-";
        assert!(args.iter().any(|a| a.starts_with(destination)), "{args:?}");
        assert_eq!(
            plan.extra.blocking.unwrap().reason,
            reasons::JOB_NOT_COMPLETE
        );
    }

    #[test]
    fn a_git_path_may_not_leave_the_repository() {
        let cloud = FakeCloud::default();
        let (p, s) = (parent(), settings());
        let b = git(None, None, Some("a/../../etc"));
        let plan = plan(&input(&p, &b, &s), &cloud);
        assert!(plan.job().is_none());
        let c = plan.extra.blocking.unwrap();
        assert_eq!(c.reason, reasons::INVALID_SPEC);
        assert!(c.message.contains("spec.build.git.path"));
    }

    #[test]
    fn an_empty_build_is_a_condition_not_a_panic() {
        let cloud = FakeCloud::default();
        let (p, s) = (parent(), settings());
        let b = Build::default();
        let plan = plan(&input(&p, &b, &s), &cloud);
        assert!(plan.job().is_none());
        assert_eq!(plan.extra.blocking.unwrap().reason, reasons::INVALID_SPEC);
    }

    #[test]
    fn an_upload_build_waits_for_the_upload_then_reads_it_from_storage() {
        let cloud = FakeCloud::default();
        let (p, s) = (parent(), settings());
        let b = upload("r1");
        let mut i = input(&p, &b, &s);
        i.uploaded = false;
        let waiting = plan(&i, &cloud);
        assert!(waiting.job().is_none());
        assert_eq!(
            waiting.extra.blocking.unwrap().reason,
            reasons::AWAITING_UPLOAD
        );
        i.uploaded = true;
        let job = plan(&i, &cloud).job().cloned().unwrap();
        let annotations = job.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[ATTEMPT_ANNOTATION], "r1");
        assert_eq!(annotations[SOURCE_ANNOTATION], source_id(&b));
        let args = job.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        let expected = format!(
            "--context=fake://artifacts/{}/uploads/latest.tar.gz",
            crate::names::storage_prefix("test-cluster", "ns", crate::names::Kind::Model, "m")
        );
        assert!(args.contains(&expected), "{args:?}");
    }

    #[test]
    fn job_outcomes() {
        let cloud = FakeCloud::default();
        let (p, s) = (parent(), settings());
        let b = upload("r1");
        let target = target_image(&p, &b, &cloud);
        let src = source_id(&b);
        let mut i = input(&p, &b, &s);

        i.job = Some(job_with("", &target, &src, "r1"));
        let running = plan(&i, &cloud);
        assert!(running.job().is_none() && running.delete.is_empty());
        assert_eq!(
            running.extra.blocking.unwrap().reason,
            reasons::JOB_NOT_COMPLETE
        );

        i.job = Some(job_with("Complete", &target, &src, "r1"));
        let done = plan(&i, &cloud);
        assert_eq!(done.extra.set_image.as_deref(), Some(target.as_str()));
        assert_eq!(done.extra.image.as_deref(), Some(target.as_str()));
        assert!(done.extra.blocking.is_none());

        i.job = Some(job_with("Failed", &target, &src, "r1"));
        let failed = plan(&i, &cloud);
        let c = failed.extra.blocking.unwrap();
        assert_eq!(c.reason, reasons::BUILD_FAILED);
        assert!(c.message.contains("BackoffLimitExceeded"), "{}", c.message);
        assert!(
            failed.delete.is_empty(),
            "a failed build is not retried in a loop"
        );

        // A new request for the same bytes retries the failed build.
        i.job = Some(job_with("Failed", &target, &src, "r0"));
        assert!(!plan(&i, &cloud).delete.is_empty());
        // A Job of another source is replaced, even when complete.
        i.job = Some(job_with("Complete", "other:tag", "upload-other", "r1"));
        let replaced = plan(&i, &cloud);
        assert!(!replaced.delete.is_empty() && replaced.extra.set_image.is_none());

        // Once spec.image is the target, nothing is looked at.
        i.spec_image = Some(&target);
        i.job = None;
        let built = plan(&i, &cloud);
        assert!(built.job().is_none() && built.extra.blocking.is_none());
        assert_eq!(built.extra.image.as_deref(), Some(target.as_str()));
    }
}
