//! The Helm chart: lints, renders for every cloud, refuses bad values with a message naming
//! them, ships the same CRDs as the types generate, and runs the operator hardened.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use substratus_tests::manifests::repo_root;

fn chart() -> PathBuf {
    repo_root().join("deploy/helm/substratus")
}

fn helm() -> Command {
    let bin = substratus_devcluster::locate_binaries()
        .expect("test binaries")
        .join("helm");
    Command::new(bin)
}

/// Renders the chart with `--set` values; Ok(documents) or Err(helm's message).
fn render(sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut cmd = helm();
    cmd.args(["template", "substratus"])
        .arg(chart())
        .args(["--namespace", "substratus"]);
    for s in sets {
        // `string:` marks a value that must stay a string ("true" would become a boolean).
        match s.strip_prefix("string:") {
            Some(v) => cmd.args(["--set-string", v]),
            None => cmd.args(["--set", s]),
        };
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_saphyr::from_multiple(&text).map_err(|e| e.to_string())
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

const GCP: &[&str] = &[
    "cloud=gcp",
    "clusterName=prod",
    "artifactBucketURL=gs://my-project-substratus-artifacts",
    "registryURL=us-central1-docker.pkg.dev/my-project/substratus",
    "principal=substratus@my-project.iam.gserviceaccount.com",
    "tenancy=namespace",
];

#[test]
fn the_chart_lints() {
    let out = helm().arg("lint").arg(chart()).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_chart_renders_for_every_cloud() {
    let kind = render(&[]).unwrap();
    let config = &find(&kind, "ConfigMap")["data"];
    assert_eq!(config["CLOUD"], "kind");
    assert_eq!(
        config["TENANCY"], "shared",
        "kind: only the operator's mounts"
    );
    assert!(config["S3_ENDPOINT"].as_str().unwrap().starts_with("http"));
    assert_eq!(config["RESYNC_SECONDS"], "600");
    // The chart runs the images the operator defaults to: pinned, and one source of truth.
    use substratus_core::plan::build::{DEFAULT_BUILDER_IMAGE, DEFAULT_GIT_IMAGE};
    assert_eq!(config["BUILDER_IMAGE"], DEFAULT_BUILDER_IMAGE);
    assert_eq!(config["GIT_IMAGE"], DEFAULT_GIT_IMAGE);
    assert_eq!(
        config["S3_CSI_VOLUMES"], "claims",
        "any S3 CSI driver by default"
    );
    let inline = render(&["kind.volumes=inline"]).unwrap();
    assert_eq!(
        find(&inline, "ConfigMap")["data"]["S3_CSI_VOLUMES"],
        "inline"
    );

    let gcp = render(GCP).unwrap();
    let config = &find(&gcp, "ConfigMap")["data"];
    assert_eq!(config["CLOUD"], "gcp");
    assert_eq!(config["TENANCY"], "namespace");
    assert_eq!(
        config["ARTIFACT_BUCKET_URL"],
        "gs://my-project-substratus-artifacts"
    );
    assert!(
        config.get("S3_ENDPOINT").is_none(),
        "no kind settings on GCP"
    );

    let aws = render(&[
        "cloud=aws",
        "clusterName=prod",
        "artifactBucketURL=s3://123456789012-substratus-artifacts",
        "registryURL=123456789012.dkr.ecr.us-west-2.amazonaws.com/substratus",
        "principal=arn:aws:iam::123456789012:role/substratus",
        "tenancy=shared",
    ])
    .unwrap();
    assert_eq!(find(&aws, "ConfigMap")["data"]["CLOUD"], "aws");
    assert_eq!(find(&aws, "ConfigMap")["data"]["AWS_IDENTITY_MODE"], "irsa");
    let azure_sets = [
        "cloud=azure",
        "clusterName=prod",
        "artifactBucketURL=az://artifacts",
        "registryURL=substratus.azurecr.io/substratus",
        "principal=00000000-0000-0000-0000-000000000000",
        "tenancy=shared",
        "string:podLabels.azure\\.workload\\.identity/use=true",
        "azure.storageAccount=substratusart",
        "azure.identityName=substratus-workloads",
        "azure.oidcIssuer=https://eastus.oic.prod-aks.azure.com/t/c/",
    ];
    let azure = render(&azure_sets).unwrap();
    let labels = &find(&azure, "Deployment")["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["azure.workload.identity/use"], "true");
    let config = &find(&azure, "ConfigMap")["data"];
    assert_eq!(config["AZURE_STORAGE_ACCOUNT"], "substratusart");
    assert_eq!(config["AZURE_IDENTITY_NAME"], "substratus-workloads");
    let err = render(&azure_sets[..8]).unwrap_err();
    assert!(err.contains("azure.identityName is required"), "{err}");
}

#[test]
fn the_operator_runs_hardened_with_leader_election() {
    let docs = render(&[]).unwrap();
    let d = find(&docs, "Deployment");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(find(&docs, "ConfigMap")["data"]["LEADER_ELECT"], "true");
    // No ServiceMonitor unless asked for.
    assert!(!docs.iter().any(|d| d["kind"] == "ServiceMonitor"));
    let with_monitor = render(&["metrics.serviceMonitor.enabled=true"]).unwrap();
    assert_eq!(
        find(&with_monitor, "ServiceMonitor")["spec"]["endpoints"][0]["port"],
        "metrics"
    );
}

#[test]
fn the_cluster_role_grants_no_wildcards_and_no_cluster_admin() {
    let docs = render(&[]).unwrap();
    let role = find(&docs, "ClusterRole");
    for rule in role["rules"].as_array().unwrap() {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(
                !rule[field].as_array().unwrap().iter().any(|v| v == "*"),
                "wildcard in {rule}"
            );
        }
    }
    let binding = find(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
}

#[test]
fn bad_values_are_refused_naming_them() {
    for (sets, expected) in [
        (vec!["cloud=mars"], "cloud"),
        (
            vec!["cloud=gcp"],
            "clusterName is required when cloud is gcp",
        ),
        (
            vec!["leaderElection.enabled=false", "replicaCount=2"],
            "leaderElection.enabled must be true",
        ),
        (vec!["logFormat=xml"], "logFormat"),
        (vec!["kind.volumes=pvc"], "kind/volumes"),
        (vec!["resyncSeconds=5"], "resyncSeconds"),
        (
            vec!["gpuCatalogOverrides.nvidia-v100.nodeSelector.a=b"],
            "nvidia-v100",
        ),
    ] {
        let err = render(&sets).expect_err(&format!("{sets:?} was accepted"));
        assert!(
            err.contains(expected),
            "{sets:?}: expected {expected:?} in {err}"
        );
    }
    // Whether namespaces share one cloud identity is said, never assumed.
    let err = render(&GCP[..5]).unwrap_err();
    assert!(
        err.contains("tenancy is required when cloud is gcp"),
        "{err}"
    );
    let mut aws_namespace = GCP[..5].to_vec();
    aws_namespace.extend(["cloud=aws", "artifactBucketURL=s3://b", "tenancy=namespace"]);
    let err = render(&aws_namespace).unwrap_err();
    assert!(
        err.contains("tenancy=namespace on aws needs aws.identityMode=pod-identity"),
        "{err}"
    );
    aws_namespace.push("aws.identityMode=pod-identity");
    let docs = render(&aws_namespace).unwrap();
    let config = &find(&docs, "ConfigMap")["data"];
    assert_eq!(config["TENANCY"], "namespace");
    assert_eq!(config["AWS_IDENTITY_MODE"], "pod-identity");
    let mut azure_namespace = GCP[..5].to_vec();
    azure_namespace.extend([
        "cloud=azure",
        "artifactBucketURL=az://b",
        "tenancy=namespace",
    ]);
    let err = render(&azure_namespace).unwrap_err();
    assert!(
        err.contains("azure.location is required with tenancy=namespace"),
        "{err}"
    );
    azure_namespace.extend([
        "azure.storageAccount=acct",
        "azure.identityName=substratus-workloads",
        "azure.oidcIssuer=https://issuer/",
        "azure.location=eastus",
        "azure.blobVolumes=claims",
    ]);
    let err = render(&azure_namespace).unwrap_err();
    assert!(
        err.contains("azure.blobVolumes=claims cannot serve"),
        "{err}"
    );
    azure_namespace.pop();
    azure_namespace.retain(|s| !s.starts_with("principal="));
    azure_namespace.push("azure.identityResourceGroup=rg-tenants");
    let docs = render(&azure_namespace).expect("no principal needed: each namespace gets one");
    let config = &find(&docs, "ConfigMap")["data"];
    assert_eq!(config["TENANCY"], "namespace");
    assert_eq!(config["AZURE_LOCATION"], "eastus");
    assert_eq!(config["AZURE_IDENTITY_RESOURCE_GROUP"], "rg-tenants");
    assert!(config.get("PRINCIPAL").is_none());
    let mut wrong_scheme = GCP.to_vec();
    wrong_scheme[2] = "artifactBucketURL=s3://bucket";
    let err = render(&wrong_scheme).unwrap_err();
    assert!(
        err.contains("artifactBucketURL must start with gs://"),
        "{err}"
    );
}

#[test]
fn the_chart_ships_the_generated_crds_kept_on_uninstall() {
    let shipped = std::fs::read_to_string(chart().join("files/crds.yaml")).unwrap();
    let generated = substratus_crds::crds_yaml_for_helm().unwrap();
    assert!(
        shipped == generated,
        "deploy/helm/substratus/files/crds.yaml is stale: cargo run -p substratus-operator -- crd --helm > deploy/helm/substratus/files/crds.yaml"
    );
    // Rendered as templates, so that `helm upgrade` upgrades them (Helm never upgrades a
    // chart's crds/ folder), and kept when the release goes.
    assert!(
        !chart().join("crds").exists(),
        "no crds/ folder: Helm would never upgrade it"
    );
    let docs = render(&[]).unwrap();
    let crds: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), 4);
    for crd in crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    let without = render(&["crds.enabled=false"]).unwrap();
    assert!(
        !without
            .iter()
            .any(|d| d["kind"] == "CustomResourceDefinition")
    );
}

#[test]
fn the_chart_follows_the_conventions_of_well_kept_operators() {
    let docs = render(&[]).unwrap();
    // Two replicas spread over nodes, one at a time through a drain.
    let pdb = find(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let pod = &find(&docs, "Deployment")["spec"]["template"];
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        pod["metadata"]["labels"]
    );
    let spread = &pod["spec"]["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        spread["labelSelector"]["matchLabels"],
        pod["metadata"]["labels"]
    );
    assert!(
        !render(&["replicaCount=1"])
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "PodDisruptionBudget")
    );
    // The kinds join the built-in view, edit and admin roles.
    let roles: Vec<_> = docs.iter().filter(|d| d["kind"] == "ClusterRole").collect();
    let aggregated = |to: &str| {
        roles
            .iter()
            .filter(|r| {
                r["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{to}")]
                    == "true"
            })
            .flat_map(|r| {
                r["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|rule| rule["verbs"].as_array().unwrap().clone())
            })
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    assert!(aggregated("view").contains(&"list".to_owned()));
    assert!(
        !aggregated("view").contains(&"create".to_owned()),
        "view only reads"
    );
    assert!(aggregated("edit").contains(&"create".to_owned()));
    assert!(aggregated("admin").contains(&"delete".to_owned()));
    // Pinned by digest; pull secrets, annotations and environment passed through.
    let digest = format!("sha256:{}", "a".repeat(64));
    let docs = render(&[
        &format!("image.digest={digest}"),
        "imagePullSecrets[0].name=regcred",
        "podAnnotations.a=b",
        "extraEnv[0].name=RUST_LOG",
        "extraEnv[0].value=debug",
    ])
    .unwrap();
    let pod = &find(&docs, "Deployment")["spec"]["template"];
    let c = &pod["spec"]["containers"][0];
    assert_eq!(
        c["image"],
        format!("ghcr.io/substratusai/substratus-operator@{digest}")
    );
    assert_eq!(pod["spec"]["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(pod["metadata"]["annotations"]["a"], "b");
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "RUST_LOG" && e["value"] == "debug")
    );
    assert!(
        render(&["image.digest=latest"])
            .unwrap_err()
            .contains("digest")
    );
    // Alerts and a dashboard on request.
    let docs = render(&[
        "metrics.prometheusRule.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
    ])
    .unwrap();
    let alerts: Vec<_> = find(&docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        alerts,
        [
            "SubstratusReconcileErrors",
            "SubstratusNoLeader",
            "SubstratusOperatorDown"
        ]
    );
    let dashboard = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .ends_with("-dashboard")
        })
        .expect("the dashboard ConfigMap");
    let json: Value =
        serde_json::from_str(dashboard["data"]["substratus.json"].as_str().unwrap()).unwrap();
    let exprs: String = json["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned())
        })
        .collect();
    for metric in [
        "substratus_reconciles_total",
        "substratus_reconcile_errors_total",
        "substratus_reconcile_duration_seconds_bucket",
        "substratus_cached_objects",
        "process_resident_memory_bytes",
        "substratus_leader",
        "substratus_gateway_requests_total",
        "substratus_gateway_in_flight",
        "substratus_gateway_held",
        "substratus_gateway_time_to_first_byte_seconds_bucket",
        "substratus_gateway_queue_wait_seconds_bucket",
        "substratus_gateway_desired_replicas",
        "substratus_gateway_scale_total",
    ] {
        assert!(exprs.contains(metric), "the dashboard shows {metric}");
    }
}

#[test]
fn the_chart_readme_documents_every_value() {
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v.as_object() {
            Some(m)
                if !m.is_empty()
                    && !prefix.ends_with("labels")
                    && !prefix.ends_with("Overrides") =>
            {
                for (k, child) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, child, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut keys = Vec::new();
    leaves("", &values, &mut keys);
    // A key is documented by its own row, by a row of a map or list holding it, or by a row
    // of its siblings (`metrics.serviceMonitor.interval`, `.labels`).
    let documented = |k: &str| {
        let mut prefix = k;
        loop {
            if readme.contains(&format!("`{prefix}`")) {
                return true;
            }
            match prefix.rsplit_once('.') {
                Some((parent, _)) => prefix = parent,
                None => break,
            }
        }
        match k.rsplit_once('.') {
            Some((parent, last)) => {
                readme.contains(&format!("`{parent}.")) && readme.contains(&format!("`.{last}`"))
            }
            None => false,
        }
    };
    let missing: Vec<_> = keys.iter().filter(|k| !documented(k)).collect();
    assert!(
        missing.is_empty(),
        "values without a row in the chart's README: {missing:?}"
    );
}

#[test]
fn gpu_catalogue_overrides_reach_the_operator_as_a_file() {
    let docs = render(&["gpuCatalogOverrides.nvidia-l4.nodeSelector.pool=my-l4"]).unwrap();
    let cm = find(&docs, "ConfigMap");
    assert_eq!(
        cm["data"]["GPU_CATALOG_FILE"],
        "/etc/substratus/gpu-catalog.yaml"
    );
    let file: Value =
        serde_saphyr::from_str(cm["data"]["gpu-catalog.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(file["nvidia-l4"]["nodeSelector"]["pool"], "my-l4");
    let pod = &find(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"],
        "/etc/substratus"
    );
}

#[test]
fn the_kind_install_values_render_and_its_manifests_parse() {
    let mut cmd = helm();
    cmd.args(["template", "substratus"])
        .arg(chart())
        .args(["--namespace", "substratus", "-f"]);
    cmd.arg(repo_root().join("deploy/kind/values.yaml"));
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("S3_PUBLIC_ENDPOINT: \"http://localhost:30900\""),
        "{text}"
    );

    let docs = substratus_tests::manifests::documents(&repo_root().join("deploy/kind/minio.yaml"))
        .unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "Secret",
            "Deployment",
            "Service",
            "Job",
            "Deployment",
            "Service"
        ]
    );
    // The NodePorts are the ones the kind cluster maps to localhost.
    let cluster: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/kind/cluster.yaml")).unwrap(),
    )
    .unwrap();
    let mapped: Vec<i64> = cluster["nodes"][0]["extraPortMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["containerPort"].as_i64().unwrap())
        .collect();
    for svc in docs.iter().filter(|d| d["kind"] == "Service") {
        let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!(
            mapped.contains(&node_port),
            "NodePort {node_port} is not mapped by deploy/kind/cluster.yaml"
        );
    }
}

#[test]
fn the_gateway_is_off_by_default_and_when_on_runs_hardened_with_the_rights_it_needs() {
    let off = render(&[]).unwrap();
    assert!(
        !off.iter()
            .any(|d| d["metadata"]["name"] == "substratus-gateway"),
        "the gateway is rendered only when gateway.enabled"
    );
    let docs = render(&["gateway.enabled=true", "gateway.holdTimeoutSeconds=120"]).unwrap();
    let named = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == "substratus-gateway")
            .unwrap_or_else(|| panic!("no gateway {kind}"))
    };
    let d = named("Deployment");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["gateway"]));
    assert_eq!(pod["serviceAccountName"], "substratus-gateway");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(env("HOLD_TIMEOUT_SECONDS"), Some("120".into()));
    assert_eq!(env("WATCH_NAMESPACE"), None);
    assert_eq!(env("PEERS_SERVICE"), None, "one replica has no peers");
    // The operator's selectors (its Service, PDB) never count the gateway's pods.
    let operator = docs
        .iter()
        .find(|x| x["kind"] == "Deployment" && x["metadata"]["name"] == "substratus")
        .unwrap();
    let gateway_labels = &d["spec"]["template"]["metadata"]["labels"];
    let operator_selector = operator["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    assert!(
        operator_selector
            .iter()
            .any(|(k, v)| &gateway_labels[k] != v),
        "{gateway_labels} matches the operator's selector {operator_selector:?}"
    );
    assert_eq!(
        named("Service")["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
    // Rights: read Servers and slices, write only the scale subresource.
    let rules = named("ClusterRole")["rules"].as_array().unwrap().clone();
    let verbs = |resource: &str| {
        rules
            .iter()
            .find(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource)
            })
            .map(|r| r["verbs"].clone())
            .unwrap_or_else(|| panic!("no rule for {resource}"))
    };
    assert_eq!(
        verbs("servers"),
        serde_json::json!(["get", "list", "watch"])
    );
    assert_eq!(verbs("servers/scale"), serde_json::json!(["get", "patch"]));
    assert_eq!(
        verbs("endpointslices"),
        serde_json::json!(["list", "watch"])
    );
    assert_eq!(
        named("ClusterRoleBinding")["roleRef"]["name"],
        "substratus-gateway"
    );

    // One namespace: a RoleBinding there, and the gateway routes only it.
    let docs = render(&["gateway.enabled=true", "gateway.watchNamespace=team"]).unwrap();
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["name"] == "substratus-gateway")
        .expect("a RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], "team");
    assert!(!docs.iter().any(
        |d| d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == "substratus-gateway"
    ));
    // Two replicas add up their loads: each finds the other through the gateway's Service.
    let docs = render(&[
        "gateway.enabled=true",
        "gateway.replicaCount=2",
        "gateway.watchNamespace=team",
    ])
    .unwrap();
    let d = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "substratus-gateway")
        .unwrap();
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let value = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    assert_eq!(
        value("PEERS_SERVICE").unwrap()["value"],
        "substratus-gateway"
    );
    assert_eq!(
        value("POD_IP").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    let peers = docs
        .iter()
        .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["name"] == "substratus-gateway-peers")
        .expect("rights to the gateway's own EndpointSlices");
    assert_eq!(peers["metadata"]["namespace"], "substratus");
    let err = render(&["gateway.enabled=true", "gateway.service.type=Ingress"]).unwrap_err();
    assert!(
        err.contains("gateway.service.type") || err.contains("type"),
        "{err}"
    );
}
