//! Running the controllers in-process against the test cluster, under an identity of their
//! own (a ServiceAccount token), so the audit log tells their requests apart.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use futures::FutureExt;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use substratus_clouds::gpu::GpuCatalog;
use substratus_clouds::kind::{KindCloud, KindSettings, KindVolumes};
use substratus_core::Cloud;
use substratus_core::cloud::{BucketUrl, CloudConfig};
use substratus_core::controllers::{self, ControllerOptions};
use substratus_core::metrics::Metrics;
use substratus_core::plan::build::BuildSettings;
use substratus_core::reconcile::Context;
use substratus_core::watch::Watches;
use tokio::sync::watch;

use crate::cluster::{kubectl, shared};

/// Namespace and name of the operator's ServiceAccount in the test cluster.
pub const OPERATOR_NAMESPACE: &str = "substratus-system";
pub const OPERATOR_SERVICE_ACCOUNT: &str = "substratus-operator";
/// The user the API server sees for the operator.
pub const OPERATOR_USER: &str = "system:serviceaccount:substratus-system:substratus-operator";

static KUBECONFIG: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn run(args: &[&str]) -> Result<String, String> {
    let out = kubectl().args(args).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn make_identity() -> Result<PathBuf, String> {
    let c = shared();
    let apply = |yaml: String| -> Result<(), String> {
        let mut child = kubectl()
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        use std::io::Write;
        child
            .stdin
            .take()
            .ok_or("stdin")?
            .write_all(yaml.as_bytes())
            .map_err(|e| e.to_string())?;
        let status = child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err("kubectl apply failed".into())
        }
    };
    // The operator's permissions are the Helm chart's RBAC, so a missing permission fails the
    // cluster tests.
    apply(format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OPERATOR_NAMESPACE}}}\n"
    ))?;
    let chart = crate::manifests::repo_root().join("deploy/helm/substratus");
    let rendered = std::process::Command::new(c.bin_dir.join("helm"))
        .args(["template", "substratus"])
        .arg(&chart)
        .args([
            "--namespace",
            OPERATOR_NAMESPACE,
            "--set",
            &format!("serviceAccount.name={OPERATOR_SERVICE_ACCOUNT}"),
        ])
        .args([
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ])
        .output()
        .map_err(|e| format!("running helm: {e}"))?;
    if !rendered.status.success() {
        return Err(format!(
            "helm template: {}",
            String::from_utf8_lossy(&rendered.stderr)
        ));
    }
    apply(String::from_utf8_lossy(&rendered.stdout).into_owned())?;
    let token = run(&[
        "create",
        "token",
        OPERATOR_SERVICE_ACCOUNT,
        "-n",
        OPERATOR_NAMESPACE,
        "--duration=6h",
    ])?;
    let admin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&c.kubeconfig).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let cluster = admin["clusters"][0]["cluster"].clone();
    let kc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token.trim()}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": "operator"}}],
        "current-context": "operator",
    });
    let path = c
        .kubeconfig
        .with_file_name(format!("operator-{}.kubeconfig", std::process::id()));
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&kc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    Ok(path)
}

/// A kubeconfig for the operator's identity.
pub fn operator_kubeconfig() -> PathBuf {
    match KUBECONFIG.get_or_init(make_identity) {
        Ok(p) => p.clone(),
        Err(e) => panic!("no operator identity: {e}"),
    }
}

/// A client acting as the operator.
pub async fn operator_client() -> Client {
    crate::cluster::install_crypto_provider();
    let kc = Kubeconfig::read_from(operator_kubeconfig()).expect("operator kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("operator config");
    Client::try_from(config).expect("operator client")
}

/// The kind backend as the operator would build it, placing GPUs with `catalog`'s table.
/// Its S3 endpoint is a closed loopback port: the flows tested with it make no S3 calls,
/// and one that did would fail loudly.
pub fn kind_cloud(catalog: &str) -> Arc<dyn Cloud> {
    kind_cloud_at(catalog, "http://127.0.0.1:9", "test", "test")
}

/// The kind backend on a running S3 server (uploads, stored md5s).
pub fn kind_cloud_on(catalog: &str, s3: &substratus_devcluster::s3::S3Server) -> Arc<dyn Cloud> {
    kind_cloud_at(
        catalog,
        &s3.endpoint(),
        substratus_devcluster::s3::ACCESS_KEY,
        substratus_devcluster::s3::SECRET_KEY,
    )
}

/// The kind backend as the local cluster with a real node runs it: prefixes mounted by the
/// node's own S3 CSI plugin as inline volumes, with the credentials the node was given
/// ([`substratus_devcluster::node::write_csi_credentials`]).
/// Built images go to the node's registry, which also serves Docker Hub images to the
/// builder (its registry mirror).
pub fn kind_cloud_on_real_node(s3: &substratus_devcluster::s3::S3Server) -> Arc<dyn Cloud> {
    let settings = real_node_settings(s3, KindVolumes::Inline);
    kind_cloud_with("kind", substratus_devcluster::node::REGISTRY_HOST, settings)
}

/// The kind backend's settings on the real node: its S3 CSI plugin and registry (mirror).
fn real_node_settings(
    s3: &substratus_devcluster::s3::S3Server,
    volumes: KindVolumes,
) -> KindSettings {
    let mut settings = kind_settings(
        &s3.endpoint(),
        substratus_devcluster::s3::ACCESS_KEY,
        substratus_devcluster::s3::SECRET_KEY,
    );
    settings.csi_driver = substratus_devcluster::node::CSI_DRIVER.into();
    settings.registry_mirror = Some(substratus_devcluster::node::REGISTRY_HOST.into());
    settings.volumes = volumes;
    settings
}

/// [`kind_cloud_on_real_node`] with a static volume and claim per namespace of the
/// namespace's own folder (`TENANCY=namespace`), which pods mount their objects' folders of
/// by `subPath`: the node's S3 CSI plugin mounts it with the credentials of the
/// [`csi_secret`].
pub fn kind_cloud_on_real_node_by_namespace(
    s3: &substratus_devcluster::s3::S3Server,
) -> Arc<dyn Cloud> {
    kind_cloud_in(
        "kind",
        substratus_devcluster::node::REGISTRY_HOST,
        real_node_settings(s3, KindVolumes::Namespace),
        substratus_core::cloud::Tenancy::Namespace,
    )
}

/// [`kind_cloud`] mounting prefixes with substratus-csi-s3's inline volumes.
pub fn kind_cloud_inline(catalog: &str) -> Arc<dyn Cloud> {
    let mut settings = kind_settings("http://127.0.0.1:9", "test", "test");
    settings.csi_driver = substratus_devcluster::node::CSI_DRIVER.into();
    settings.volumes = KindVolumes::Inline;
    kind_cloud_with(catalog, "registry.test:5000", settings)
}

/// The Secret the S3 CSI plugin mounts static volumes with: the S3 server's endpoint (a
/// loopback port the real node's namespace relays to the host) and its credentials.
pub fn csi_secret(s3: &substratus_devcluster::s3::S3Server) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "csi-s3-secret", "namespace": "kube-system"},
        "stringData": {
            "endpoint": s3.endpoint(),
            "region": "us-east-1",
            "accessKeyID": substratus_devcluster::s3::ACCESS_KEY,
            "secretAccessKey": substratus_devcluster::s3::SECRET_KEY,
        },
    })
}

fn kind_cloud_at(catalog: &str, endpoint: &str, access: &str, secret: &str) -> Arc<dyn Cloud> {
    kind_cloud_with(
        catalog,
        "registry.test:5000",
        kind_settings(endpoint, access, secret),
    )
}

/// The kind backend's settings for an S3 server: k8s-csi-s3's static volumes and claims.
fn kind_settings(endpoint: &str, access: &str, secret: &str) -> KindSettings {
    KindSettings {
        endpoint: endpoint.into(),
        public_endpoint: None,
        region: "us-east-1".into(),
        access_key_id: access.into(),
        secret_access_key: secret.into(),
        csi_driver: "ru.yandex.s3.csi".into(),
        csi_secret: ("kube-system".into(), "csi-s3-secret".into()),
        registry_mirror: None,
        volumes: KindVolumes::Claims,
    }
}

fn kind_cloud_with(catalog: &str, registry: &str, settings: KindSettings) -> Arc<dyn Cloud> {
    kind_cloud_in(catalog, registry, settings, Default::default())
}

fn kind_cloud_in(
    catalog: &str,
    registry: &str,
    settings: KindSettings,
    tenancy: substratus_core::cloud::Tenancy,
) -> Arc<dyn Cloud> {
    crate::cluster::install_crypto_provider();
    let config = CloudConfig {
        cluster_name: "test".into(),
        artifact_bucket: BucketUrl::parse("s3://substratus-artifacts").expect("bucket URL"),
        registry: registry.into(),
        principal: None,
        tenancy,
    };
    let gpus = GpuCatalog::builtin(catalog).expect("a built-in GPU catalogue");
    Arc::new(KindCloud::new(config, settings, gpus).expect("kind backend"))
}

/// Controllers running in this process, watching one namespace.
pub struct RunningOperator {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
    pub metrics: Arc<Metrics>,
}

impl RunningOperator {
    pub async fn start(namespace: &str, cloud: Arc<dyn Cloud>) -> RunningOperator {
        RunningOperator::start_with(namespace, cloud, BuildSettings::default()).await
    }

    /// Like [`RunningOperator::start`], with these build settings.
    pub async fn start_with(
        namespace: &str,
        cloud: Arc<dyn Cloud>,
        build: BuildSettings,
    ) -> RunningOperator {
        let client = operator_client().await;
        let metrics = Arc::new(Metrics::default());
        let watches = Watches::new(&client, Some(namespace));
        let caches = watches.caches().clone();
        let ctx = Arc::new(Context::new(client, cloud, metrics.clone(), caches).with_build(build));
        let (stop, rx) = watch::channel(false);
        let shutdown = {
            let mut rx = rx;
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
            .boxed()
            .shared()
        };
        let opts = ControllerOptions {
            concurrency: 4,
            namespace: Some(namespace.to_owned()),
            sweep_every: std::time::Duration::from_secs(2),
            ..Default::default()
        };
        let handle = tokio::spawn(controllers::run(ctx, watches, opts, shutdown));
        RunningOperator {
            stop,
            handle,
            metrics,
        }
    }

    /// Stops the controllers as on SIGTERM.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.handle).await;
    }

    /// Stops the controllers at once, mid-work, as on SIGKILL.
    pub fn kill(self) {
        self.handle.abort();
    }
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The audit log of the shared cluster.
pub fn audit_log() -> PathBuf {
    substratus_devcluster::audit_log_of(&shared().kubeconfig)
}

/// The AWS backend of account 123456789012 in us-west-2 (IRSA with `issuer`, workloads as
/// the role `substratus`), its S3 and IAM calls sent to the given endpoints.
pub fn aws_cloud(
    bucket: &str,
    issuer: &str,
    s3: Option<String>,
    iam: Option<String>,
) -> substratus_clouds::aws::AwsCloud {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-west-2"))
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
            aws_sdk_s3::config::Credentials::new("AKID", "secret", None, None, "test"),
        ))
        .build();
    substratus_clouds::aws::AwsCloud::new(
        substratus_core::cloud::CloudConfig {
            cluster_name: "eks-1".into(),
            artifact_bucket: substratus_core::cloud::BucketUrl::parse(bucket).unwrap(),
            registry: "123456789012.dkr.ecr.us-west-2.amazonaws.com/substratus".into(),
            principal: Some("arn:aws:iam::123456789012:role/substratus".into()),
            tenancy: Default::default(),
        },
        substratus_clouds::aws::AwsSettings {
            region: "us-west-2".into(),
            account_id: "123456789012".into(),
            partition: "aws".into(),
            identity: substratus_clouds::aws::IdentityMode::Irsa {
                oidc_issuer: issuer.into(),
            },
            s3_endpoint: s3,
            iam_endpoint: iam.clone(),
            eks_endpoint: None,
            ecr_endpoint: iam.clone(),
            force_path_style: true,
        },
        substratus_clouds::gpu::GpuCatalog::aws(),
        &sdk,
    )
    .unwrap()
}
