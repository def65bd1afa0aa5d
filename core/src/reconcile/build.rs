//! The build step every kind runs before its workload: the upload handshake against storage,
//! the build Job, and `spec.image` once the image is built.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use substratus_crds::{Build, BuildUpload, UploadStatus};

use super::{Context, Error, FIELD_MANAGER, kube_err};
use crate::conditions::{Desired, reasons, types};
use crate::names;
use crate::plan::build::{self, BuildInput, ObservedBuildJob};
use crate::plan::job::JobOutcome;
use crate::plan::storage::artifact_prefix;
use crate::plan::upload::{self, UploadNext};
use crate::plan::{Child, Parent};

/// What the build step leaves for the kind's own reconcile.
#[derive(Debug, Default)]
pub struct BuildOutcome {
    /// The image to run; `None` while building.
    pub image: Option<String>,
    /// `Uploaded` and `Built`, for builds.
    pub conditions: Vec<Desired>,
    /// Why the workload waits, for the `Ready` condition.
    pub blocking: Option<Desired>,
    /// `status.buildUpload`.
    pub upload: Option<UploadStatus>,
    /// Look again after this long at the latest.
    pub requeue: Option<Duration>,
    /// The object's generation after the step wrote the built image into `spec.image`:
    /// the workload planned next belongs to it.
    pub written_generation: Option<i64>,
}

impl BuildOutcome {
    /// The generation the kind's own plan is for: the one the build step wrote, else the
    /// object's.
    pub fn generation(&self, parent: &Parent) -> Option<i64> {
        self.written_generation.or(parent.generation)
    }

    /// Replaces the `Ready` condition of `conditions` by the build's blocking reason.
    pub fn explain_ready(&self, conditions: &mut [Desired]) {
        if let Some(b) = &self.blocking {
            for c in conditions.iter_mut().filter(|c| c.type_ == types::READY) {
                c.status = false;
                c.reason = b.reason;
                c.message = b.message.clone();
            }
        }
    }

    /// The sooner of `soon` and the build's own next look.
    pub fn sooner(&self, soon: Option<Duration>) -> Option<Duration> {
        match (self.requeue, soon) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn cloud_blocked(what: &str, e: &crate::cloud::CloudError) -> Desired {
    Desired::new(
        types::UPLOADED,
        false,
        reasons::CLOUD_ERROR,
        format!("{what}: {e}; retrying"),
    )
}

/// Where the upload handshake stands.
struct Handshake {
    /// The archive with the declared checksum is in storage.
    uploaded: bool,
    /// The `Uploaded` condition, when it changes.
    condition: Option<Desired>,
    /// `status.buildUpload`.
    status: Option<UploadStatus>,
    /// Look again after this long (to renew the URL, or to look for the upload).
    requeue: Option<Duration>,
}

impl Handshake {
    /// A cloud call failed: not uploaded, the condition says why, retried soon.
    fn blocked(condition: Desired, status: Option<&UploadStatus>) -> Handshake {
        Handshake {
            uploaded: false,
            condition: Some(condition),
            status: status.cloned(),
            requeue: Some(Duration::from_secs(5)),
        }
    }
}

/// The upload handshake.
async fn handshake(
    ctx: &Context,
    parent: &Parent,
    upload: &BuildUpload,
    status: Option<&UploadStatus>,
) -> Handshake {
    let prefix = artifact_prefix(parent, ctx.cloud.as_ref());
    let key = prefix.upload_key();
    if !upload::upload_needs_storage(upload, status) {
        // Recorded already: the Uploaded condition written then stays as it is.
        return Handshake {
            uploaded: true,
            condition: None,
            status: status.cloned(),
            requeue: None,
        };
    }
    let stored = {
        let call = ctx.cloud.stored_md5(&key);
        match crate::cloud::within("reading the upload's checksum", ctx.cloud_timeout, call).await {
            Ok(s) => s,
            Err(e) => {
                let blocked = cloud_blocked("cannot read the upload from storage", &e);
                return Handshake::blocked(blocked, status);
            }
        }
    };
    let mut next = upload::upload_next(
        upload,
        status,
        stored.as_deref(),
        now_unix(),
        ctx.build.renew_margin_secs(),
    );
    let new_status = match &next {
        UploadNext::Uploaded { status, .. } | UploadNext::Waiting { status, .. } => status.clone(),
        UploadNext::Sign => {
            let call =
                ctx.cloud
                    .signed_upload_url(&key, &upload.md5_checksum, ctx.build.upload_url_ttl);
            match crate::cloud::within("signing an upload URL", ctx.cloud_timeout, call).await {
                Ok(url) => {
                    let s = upload::signed_status(upload, url.url, url.expires_at_unix);
                    next = UploadNext::Waiting {
                        status: s.clone(),
                        mismatch: None,
                    };
                    s
                }
                Err(e) => {
                    let blocked = cloud_blocked("cannot sign an upload URL", &e);
                    return Handshake::blocked(blocked, status);
                }
            }
        }
    };
    let condition = upload::uploaded_condition(upload, &new_status, &next);
    let uploaded = matches!(next, UploadNext::Uploaded { .. });
    // Renew the URL when it expires, so that a late client still finds a valid one; until
    // the upload arrives, look for it in storage.
    let renew = new_status.expiration.as_ref().map(|t| {
        let secs = t.0.as_second() - now_unix() - ctx.build.renew_margin_secs() + 1;
        Duration::from_secs(secs.clamp(1, 3600) as u64)
    });
    let requeue = if uploaded {
        renew
    } else {
        Some(renew.map_or(super::UPLOAD_POLL, |r| r.min(super::UPLOAD_POLL)))
    };
    Handshake {
        uploaded,
        condition: Some(condition),
        status: Some(new_status),
        requeue,
    }
}

async fn observe_job(ctx: &Context, parent: &Parent) -> Result<(Option<Job>, Vec<Pod>), Error> {
    let name = names::build_job(parent.kind, &parent.name);
    let job = ctx.caches().job(&parent.namespace, &name);
    let explain = job.as_ref().is_some_and(|j| {
        let o = ObservedBuildJob::from_job(j);
        let s = j.status.clone().unwrap_or_default();
        matches!(o.outcome, JobOutcome::Failed { .. })
            || (o.outcome == JobOutcome::Running && s.ready.unwrap_or(0) == 0)
    });
    let pods = if !explain {
        Vec::new()
    } else {
        ctx.caches().pods_with(
            &parent.namespace,
            &[
                (parent.kind.lower(), parent.name.as_str()),
                ("role", "build"),
            ],
        )
    };
    Ok((job, pods))
}

/// Runs the build step of `obj`. When the build completes, `spec.image` is written and the
/// outcome carries the generation that write made (see [`BuildOutcome::generation`]).
pub async fn reconcile_build<K>(
    ctx: &Context,
    obj: &K,
    parent: &Parent,
    image: Option<&str>,
    build: Option<&Build>,
    upload_status: Option<&UploadStatus>,
) -> Result<BuildOutcome, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let Some(build) = build else {
        return Ok(BuildOutcome {
            image: image.map(str::to_owned),
            upload: upload_status.cloned(),
            ..Default::default()
        });
    };
    let cloud = ctx.cloud.as_ref();
    let mut out = BuildOutcome {
        upload: upload_status.cloned(),
        ..Default::default()
    };
    let built = build::effective_image(parent, image, Some(build), cloud).is_some();
    let mut uploaded = true;
    if let (Some(upload), false) = (&build.upload, built) {
        let h = handshake(ctx, parent, upload, upload_status).await;
        uploaded = h.uploaded;
        if let Some(c) = h.condition {
            if !h.uploaded {
                out.blocking = Some(c.clone());
            }
            out.conditions.push(c);
        }
        out.upload = h.status;
        out.requeue = h.requeue;
    }
    let (job, pods) = if built || !uploaded {
        (None, Vec::new())
    } else {
        observe_job(ctx, parent).await?
    };
    let input = BuildInput {
        parent,
        build,
        spec_image: image,
        uploaded,
        job: job.as_ref().map(ObservedBuildJob::from_job),
        pods: &pods,
        settings: &ctx.build,
    };
    let plan = build::plan(&input, cloud);
    if plan.create.iter().any(|c| matches!(c, Child::Job(_))) {
        // The repository must take the push before the builder makes it.
        let target = build::target_image(parent, build, cloud);
        let call = cloud.prepare_image(&target);
        crate::cloud::within("preparing the image repository", ctx.cloud_timeout, call)
            .await
            .map_err(|source| Error::Cloud {
                step: "preparing the image repository",
                object: format!("{}/{}", parent.namespace, parent.name),
                source,
            })?;
    }
    super::pipeline::apply(ctx, &parent.namespace, &plan).await?;
    if let Some(target) = &plan.extra.set_image {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &parent.namespace);
        let patch = serde_json::json!({"spec": {"image": target}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let written = api
            .patch(&parent.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(kube_err(
                "writing the built image into spec.image of",
                format!("{} {}/{}", K::kind(&()), parent.namespace, obj.name_any()),
            ))?;
        out.written_generation = written.meta().generation;
    }
    if plan.next_look.is_some() {
        out.requeue = plan.next_look;
    }
    if out.blocking.is_none() {
        out.blocking = plan.extra.blocking;
    }
    out.conditions.extend(plan.conditions);
    out.image = plan.extra.image;
    Ok(out)
}
