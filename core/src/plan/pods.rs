//! Why a workload's pods do not run, read from their status: the reason a plan shows in
//! `Ready` while its Job, Deployment or Pod waits or fails.

use k8s_openapi::api::core::v1::Pod;

use super::Blocked;
use crate::conditions::reasons;

/// Why a workload's pods do not run, read from the pods: unschedulable, an image that
/// cannot be pulled, a container that cannot be created (a missing Secret or ConfigMap), or
/// one that keeps failing (out of memory, or another exit).
pub fn pod_problem(pods: &[Pod]) -> Option<Blocked> {
    for pod in pods {
        let Some(status) = &pod.status else { continue };
        let pod_name = pod.metadata.name.as_deref().unwrap_or("");
        for c in status.conditions.iter().flatten() {
            // A claim the PV controller has not bound yet is a moment's wait, not a problem.
            let transient = c
                .message
                .as_deref()
                .is_some_and(|m| m.contains("unbound immediate PersistentVolumeClaims"));
            if c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && !transient
            {
                return Some(Blocked {
                    reason: reasons::UNSCHEDULABLE,
                    message: format!(
                        "pod {pod_name} cannot be scheduled: {}",
                        c.message.as_deref().unwrap_or("")
                    ),
                });
            }
        }
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for cs in containers {
            if let Some(b) = container_problem(pod_name, cs) {
                return Some(b);
            }
        }
    }
    None
}

/// Where the first pod that is not ready stands, for a message while it starts: not yet
/// scheduled, a container being created (its volumes mounted, its image pulled), an init
/// container running, or a running container whose readiness probe has not passed. Only
/// states, never times, so the message changes when the pod moves on and not otherwise.
pub fn pod_progress(pods: &[Pod]) -> Option<String> {
    for pod in pods {
        let pod_name = pod.metadata.name.as_deref().unwrap_or("");
        let Some(status) = &pod.status else {
            return Some(format!("pod {pod_name} has no status yet"));
        };
        let scheduled = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True");
        if !scheduled {
            return Some(format!("pod {pod_name} is not scheduled yet"));
        }
        let init = status.init_container_statuses.iter().flatten();
        for cs in init {
            let Some(state) = &cs.state else { continue };
            if state.terminated.as_ref().is_some_and(|t| t.exit_code == 0) {
                continue;
            }
            if state.running.is_some() {
                return Some(format!(
                    "init container {} of pod {pod_name} is running",
                    cs.name
                ));
            }
            if let Some(w) = &state.waiting {
                return Some(waiting_progress(pod_name, "init container", &cs.name, w));
            }
        }
        for cs in status.container_statuses.iter().flatten() {
            if cs.ready {
                continue;
            }
            let Some(state) = &cs.state else { continue };
            // The operator's pod cache drops `running` (its start time): a state that is
            // neither waiting nor terminated is running.
            if state.running.is_some() || (state.waiting.is_none() && state.terminated.is_none()) {
                return Some(format!(
                    "container {} of pod {pod_name} is running; its readiness probe has not passed yet",
                    cs.name
                ));
            }
            if let Some(w) = &state.waiting {
                return Some(waiting_progress(pod_name, "container", &cs.name, w));
            }
        }
        if status.container_statuses.as_ref().is_none_or(Vec::is_empty) {
            return Some(format!(
                "pod {pod_name} is scheduled; its containers are not created yet"
            ));
        }
    }
    None
}

fn waiting_progress(
    pod_name: &str,
    what: &str,
    name: &str,
    w: &k8s_openapi::api::core::v1::ContainerStateWaiting,
) -> String {
    let reason = w.reason.as_deref().unwrap_or("waiting");
    let detail = match reason {
        "ContainerCreating" | "PodInitializing" => " (mounting its volumes, pulling its image)",
        _ => "",
    };
    let said = w
        .message
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    format!("{what} {name} of pod {pod_name} is {reason}{detail}{said}")
}

/// Why one container does not run, if its state says.
/// How a container ended: `code N (Reason): message`, reason and message when known.
pub fn exit_of(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> String {
    format!(
        "code {}{}{}",
        t.exit_code,
        t.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        t.message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    )
}

fn container_problem(
    pod_name: &str,
    cs: &k8s_openapi::api::core::v1::ContainerStatus,
) -> Option<Blocked> {
    let waiting = cs.state.as_ref()?.waiting.as_ref()?;
    let said = waiting.message.as_deref().unwrap_or("");
    match waiting.reason.as_deref()? {
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" => Some(Blocked {
            reason: reasons::IMAGE_PULL_FAILED,
            message: format!("image {} cannot be pulled: {said}", cs.image),
        }),
        "CreateContainerConfigError" | "CreateContainerError" => Some(Blocked {
            reason: reasons::CONTAINER_CONFIG_ERROR,
            message: format!(
                "container {} of pod {pod_name} cannot be created: {said}",
                cs.name
            ),
        }),
        "CrashLoopBackOff" => {
            let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let oom = last.is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
            let exit = last.map_or_else(String::new, |t| format!(": last exit {}", exit_of(t)));
            Some(Blocked {
                reason: if oom {
                    reasons::OOM_KILLED
                } else {
                    reasons::CRASH_LOOP_BACK_OFF
                },
                message: format!(
                    "container {} of pod {pod_name} keeps failing after {} restarts{exit}{}",
                    cs.name,
                    cs.restart_count,
                    if oom {
                        "; give it more spec.resources.memory"
                    } else {
                        ""
                    }
                ),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pending(message: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ]}
        }))
        .unwrap()
    }

    fn waiting(reason: &str, message: &str, last: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "serve", "image": "img", "imageID": "", "ready": false,
                "restartCount": 4,
                "state": {"waiting": {"reason": reason, "message": message}},
                "lastState": last,
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn containers_that_cannot_start_or_keep_failing_are_named_with_why() {
        let oom = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}});
        let p = pod_problem(&[waiting("CrashLoopBackOff", "back-off 40s", oom)]).unwrap();
        assert_eq!(p.reason, reasons::OOM_KILLED);
        assert!(
            p.message.contains("exit code 137 (OOMKilled)"),
            "{}",
            p.message
        );
        assert!(p.message.contains("spec.resources.memory"), "{}", p.message);
        let exit =
            json!({"terminated": {"exitCode": 3, "reason": "Error", "message": "no weights"}});
        let p = pod_problem(&[waiting("CrashLoopBackOff", "back-off", exit)]).unwrap();
        assert_eq!(p.reason, reasons::CRASH_LOOP_BACK_OFF);
        assert!(
            p.message
                .contains("4 restarts: last exit code 3 (Error): no weights"),
            "{}",
            p.message
        );
        let p = pod_problem(&[waiting(
            "CreateContainerConfigError",
            "secret \"hub\" not found",
            json!({}),
        )])
        .unwrap();
        assert_eq!(p.reason, reasons::CONTAINER_CONFIG_ERROR);
        assert!(
            p.message.contains("secret \"hub\" not found"),
            "{}",
            p.message
        );
        let p = pod_problem(&[waiting("ImagePullBackOff", "not found", json!({}))]).unwrap();
        assert_eq!(p.reason, reasons::IMAGE_PULL_FAILED);
        // Starting up is no problem.
        assert!(pod_problem(&[waiting("ContainerCreating", "", json!({}))]).is_none());
    }

    #[test]
    fn a_starting_pod_says_where_it_stands() {
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
        };
        let scheduled = json!([{"type": "PodScheduled", "status": "True"}]);
        let at = |s: serde_json::Value| pod_progress(&[pod(s)]).unwrap();
        assert_eq!(
            at(json!({"phase": "Pending"})),
            "pod p is not scheduled yet"
        );
        let creating = at(json!({"conditions": scheduled, "containerStatuses": [{
            "name": "nb", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
        assert_eq!(
            creating,
            "container nb of pod p is ContainerCreating (mounting its volumes, pulling its image)"
        );
        let init = at(json!({"conditions": scheduled,
            "initContainerStatuses": [{"name": "context", "image": "i", "imageID": "",
                "ready": false, "restartCount": 0, "state": {"running": {}}}],
            "containerStatuses": [{"name": "nb", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}));
        assert_eq!(init, "init container context of pod p is running");
        let probing = at(json!({"conditions": scheduled, "containerStatuses": [{
            "name": "nb", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}));
        assert_eq!(
            probing,
            "container nb of pod p is running; its readiness probe has not passed yet"
        );
        assert!(!probing.contains("2026"), "no times in the message");
        // As the operator's cache holds it: the running state without its start time.
        let mut cached = pod(json!({"conditions": scheduled, "containerStatuses": [{
            "name": "nb", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}));
        crate::watch::slim::pod_status(cached.status.as_mut().unwrap());
        assert_eq!(pod_progress(&[cached]).as_deref(), Some(probing.as_str()));
        let ready = pod(json!({"conditions": scheduled, "containerStatuses": [{
            "name": "nb", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}}}]}));
        assert_eq!(pod_progress(&[ready]), None);
    }

    #[test]
    fn unschedulable_pods_are_a_problem_but_unbound_claims_are_not() {
        let p = pod_problem(&[pending(
            "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        )])
        .unwrap();
        assert_eq!(p.reason, reasons::UNSCHEDULABLE);
        assert!(p.message.contains("Insufficient nvidia.com/gpu"));
        assert!(
            pod_problem(&[pending(
                "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims."
            )])
            .is_none()
        );
    }
}
