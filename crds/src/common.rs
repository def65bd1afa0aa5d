//! Types shared by all four kinds: build sources, resources, references and status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the container image of an object is built from. Exactly one of `git` or `upload`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("has(self.git) != has(self.upload)")
    .message("spec.build must set exactly one of spec.build.git or spec.build.upload"))]
pub struct Build {
    /// Build from a git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<BuildGit>,
    /// Build from a tar.gz archive uploaded through a signed URL (see `status.buildUpload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<BuildUpload>,
}

/// A git repository to build an image from. `tag` wins over `branch`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("!self.url.matches('^(https?://[^/@]+@|[a-zA-Z][a-zA-Z0-9+.-]*://[^/@]*:[^/@]*@)')")
    .message("spec.build.git.url must not hold credentials (they would show in the build Job): put them in a Secret and name it in spec.build.git.credentialsSecret"))]
pub struct BuildGit {
    /// Repository URL, e.g. `https://github.com/substratusai/images` (at most 2,048
    /// characters). No password in it: see `credentialsSecret`.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// A Secret of this namespace whose key `.git-credentials` holds git's credential store
    /// lines (`https://<user>:<token>@github.com`), for a private repository. It is mounted
    /// into the clone step only; the operator never reads it.
    #[serde(
        rename = "credentialsSecret",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub credentials_secret: Option<ObjectRef>,
    /// Sub-directory of the repository used as the build context (at most 1,024 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    /// Branch to check out; also the image tag when no `tag` is given (at most 255 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: Option<String>,
    /// Tag to check out; also the image tag (at most 255 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub tag: Option<String>,
}

/// An upload of the build context through a signed URL.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BuildUpload {
    /// Hex MD5 of the tar.gz the client uploads (32 hexadecimal characters).
    #[serde(rename = "md5Checksum")]
    #[schemars(regex(pattern = r"^[a-fA-F0-9]{32}$"))]
    pub md5_checksum: String,
    /// Identifies one upload request; a new value asks for a fresh signed URL.
    #[serde(rename = "requestID")]
    #[schemars(length(min = 1, max = 256))]
    pub request_id: String,
}

/// A reference to another object of the same namespace. References across namespaces are
/// refused: a workload could otherwise read another tenant's artifacts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("!has(self.__namespace__)")
    .message("references are to objects of the same namespace: remove the reference's namespace"))]
pub struct ObjectRef {
    /// Name of the referenced object (a Kubernetes object name, in this namespace).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Not supported: declared only so that setting it is refused rather than dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// GPU models an object may ask for. Each cloud maps a type to its node pools; a type the
/// chosen cloud does not offer is reported on the object as a condition.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum GpuType {
    #[serde(rename = "nvidia-l4")]
    NvidiaL4,
    #[serde(rename = "nvidia-a100")]
    NvidiaA100,
    #[serde(rename = "nvidia-a100-80gb")]
    NvidiaA100_80Gb,
    #[serde(rename = "nvidia-t4")]
    NvidiaT4,
    #[serde(rename = "nvidia-h100")]
    NvidiaH100,
    #[serde(rename = "nvidia-a10g")]
    NvidiaA10G,
}

impl GpuType {
    /// Every supported type, in a stable order.
    pub const ALL: [GpuType; 6] = [
        GpuType::NvidiaL4,
        GpuType::NvidiaA100,
        GpuType::NvidiaA100_80Gb,
        GpuType::NvidiaT4,
        GpuType::NvidiaH100,
        GpuType::NvidiaA10G,
    ];

    /// The API spelling, e.g. `nvidia-l4`.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuType::NvidiaL4 => "nvidia-l4",
            GpuType::NvidiaA100 => "nvidia-a100",
            GpuType::NvidiaA100_80Gb => "nvidia-a100-80gb",
            GpuType::NvidiaT4 => "nvidia-t4",
            GpuType::NvidiaH100 => "nvidia-h100",
            GpuType::NvidiaA10G => "nvidia-a10g",
        }
    }
}

impl std::fmt::Display for GpuType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// GPUs for the container. `count` without `type` means any GPU the cluster offers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("!has(self.type) || has(self.count)")
    .message("spec.resources.gpu.count is required when spec.resources.gpu.type is set"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.type) || !has(self.count) || self.count >= 1")
    .message("spec.resources.gpu.count must be at least 1 when spec.resources.gpu.type is set: a type with no GPUs would be ignored"))]
pub struct GpuResources {
    /// GPU model; absent means any GPU type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(transform = without_null_in_enum)]
    pub gpu_type: Option<GpuType>,
    /// Number of GPUs (request and limit of `nvidia.com/gpu`), 0 to 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub count: Option<i64>,
}

/// An optional enum lists `null` among its values; the API server would print it as a
/// supported value, so it is dropped (`nullable` already allows an explicit null).
fn without_null_in_enum(schema: &mut schemars::Schema) {
    if let Some(serde_json::Value::Array(values)) = schema.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
}

impl GpuResources {
    /// Number of GPUs asked for (0 when `count` is absent).
    pub fn count(&self) -> i64 {
        self.count.unwrap_or(0)
    }
}

fn default_cpu() -> i64 {
    2
}
fn default_memory() -> i64 {
    10
}
fn default_disk() -> i64 {
    10
}

/// Compute requests of the container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Resources {
    /// CPU cores requested (0 to 1,024).
    #[serde(default = "default_cpu")]
    #[schemars(range(min = 0, max = 1024))]
    pub cpu: i64,
    /// Memory requested, in GiB (0 to 65,536).
    #[serde(default = "default_memory")]
    #[schemars(range(min = 0, max = 65536))]
    pub memory: i64,
    /// Ephemeral storage requested, in GiB (0 to 65,536).
    #[serde(default = "default_disk")]
    #[schemars(range(min = 0, max = 65536))]
    pub disk: i64,
    /// GPUs requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuResources>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: default_cpu(),
            memory: default_memory(),
            disk: default_disk(),
            gpu: None,
        }
    }
}

/// Parameters written as JSON to `/content/params.json`: a map of names to strings or
/// integers, kept as one sorted slice. The operator holds every object in memory, and a
/// `BTreeMap` costs a 600-byte node for even one parameter; this costs its entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(Box<[(String, IntOrString)]>);

impl Params {
    pub fn new() -> Params {
        Params::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The value of a parameter.
    pub fn get(&self, name: &str) -> Option<&IntOrString> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Parameters in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &IntOrString)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl From<BTreeMap<String, IntOrString>> for Params {
    fn from(m: BTreeMap<String, IntOrString>) -> Params {
        Params(m.into_iter().collect())
    }
}

impl FromIterator<(String, IntOrString)> for Params {
    /// A later value of the same name wins, as in a JSON object.
    fn from_iter<I: IntoIterator<Item = (String, IntOrString)>>(iter: I) -> Params {
        Params::from(iter.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl Serialize for Params {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Params, D::Error> {
        BTreeMap::<String, IntOrString>::deserialize(d).map(Params::from)
    }
}

impl JsonSchema for Params {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        BTreeMap::<String, IntOrString>::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        BTreeMap::<String, IntOrString>::schema_id()
    }

    /// A map of int-or-string values; a string value has at most 65,536 characters.
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = BTreeMap::<String, IntOrString>::json_schema(generator);
        if let Some(serde_json::Value::Object(value)) = schema.get_mut("additionalProperties") {
            value.insert("maxLength".into(), 65536.into());
        }
        schema
    }
}

/// Location of an object's artifacts in the bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ArtifactsStatus {
    /// Bucket URL of the object's storage prefix, e.g. `gs://bucket/<hash>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The controller's answer to `spec.build.upload`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct UploadStatus {
    /// Short-lived URL to PUT the tar.gz to.
    #[serde(rename = "signedURL", default, skip_serializing_if = "Option::is_none")]
    pub signed_url: Option<String>,
    /// The `spec.build.upload.requestID` this status answers.
    #[serde(rename = "requestID", default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When `signedURL` stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Time>,
    /// MD5 of the upload as read back from storage.
    #[serde(
        rename = "storedMD5Checksum",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stored_md5_checksum: Option<String>,
}

/// Status of a Model, Dataset or Notebook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactObjectStatus {
    /// True when the object has done its work (artifacts written, or notebook serving).
    #[serde(default)]
    pub ready: bool,
    /// Conditions: `Uploaded`, `Built`, `Complete` or `Serving`, and the aggregate `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Where the object's artifacts live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<ArtifactsStatus>,
    /// Signed URL and stored checksum for upload builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_upload: Option<Box<UploadStatus>>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status of a Server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// True when at least one replica serves.
    #[serde(default)]
    pub ready: bool,
    /// Conditions: `Uploaded`, `Built`, `Serving`, and the aggregate `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Signed URL and stored checksum for upload builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_upload: Option<Box<UploadStatus>>,
    /// Replicas that are ready (the scale subresource reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The label selector of the Server's pods (`server=<name>,role=run`), read through the
    /// scale subresource by `kubectl scale`, the HorizontalPodAutoscaler and KEDA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The adapters the replicas can load: each one's artifacts, copied into the Server's
    /// own storage, at `path` in every replica. The gateway loads them there through the
    /// engine's run-time adapter API; an adapter of `spec.adapters` not listed yet is still
    /// being copied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub adapters: Vec<AdapterStatus>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One adapter a Server's replicas can load.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdapterStatus {
    /// The adapter's name (`spec.adapters[].name`).
    pub name: String,
    /// The Model it was copied from.
    pub model: String,
    /// The run of that Model whose artifacts were copied (its `metadata.generation`).
    pub generation: i64,
    /// Where replicas find it: `/content/adapters/<name>/<generation>`.
    pub path: String,
}

/// Status of a Notebook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotebookStatus {
    /// True when Jupyter is up and ready.
    #[serde(default)]
    pub ready: bool,
    /// Conditions: `Uploaded`, `Built`, `Serving`, and the aggregate `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Where the notebook's own artifacts live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<ArtifactsStatus>,
    /// Signed URL and stored checksum for upload builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_upload: Option<Box<UploadStatus>>,
    /// Name of the Secret (key `token`) holding the Jupyter token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_read_and_write_as_a_json_object_in_name_order() {
        let p: Params = serde_json::from_value(json!({"b": 2, "a": "x", "c": "3"})).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.get("a"), Some(&IntOrString::String("x".into())));
        assert_eq!(p.get("b"), Some(&IntOrString::Int(2)));
        assert_eq!(p.get("z"), None);
        assert_eq!(
            p.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"a":"x","b":2,"c":"3"}"#
        );
        // A later value of the same name wins, as in a JSON object.
        let dup: Params = [
            ("k".to_owned(), IntOrString::Int(1)),
            ("k".to_owned(), IntOrString::Int(2)),
        ]
        .into_iter()
        .collect();
        assert_eq!((dup.len(), dup.get("k")), (1, Some(&IntOrString::Int(2))));
        // Not an object, or a value neither string nor integer: an error.
        assert!(serde_json::from_value::<Params>(json!(["a"])).is_err());
        assert!(serde_json::from_value::<Params>(json!({"a": [1]})).is_err());
        assert!(Params::new().is_empty());
    }

    #[test]
    fn params_have_the_schema_of_a_map_of_int_or_string_with_bounded_strings() {
        let mut ours = schemars::SchemaGenerator::default().into_root_schema_for::<Params>();
        let map = schemars::SchemaGenerator::default()
            .into_root_schema_for::<BTreeMap<String, IntOrString>>();
        let values = ours.get_mut("additionalProperties").unwrap();
        assert_eq!(
            values.as_object_mut().unwrap().remove("maxLength"),
            Some(json!(65536))
        );
        assert_eq!(ours, map);
        assert_eq!(ours.get("type"), Some(&json!("object")));
    }
}

/// A fine-tuned Model a Server serves next to its base: mounted read-only at
/// `/content/adapters/<name>`, and answering at the gateway to `<server>/<name>`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Adapter {
    /// The adapter's name: the directory under `/content/adapters` and the part after `/`
    /// in a request's `model`. A DNS label of at most 40 characters.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The Model holding the adapter: one trained from the Server's Model (its
    /// `spec.model.name` names the Server's Model).
    pub model: ObjectRef,
}

/// How the gateway scales a Server with the requests it holds and forwards.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas")
    .message("spec.autoscaling.minReplicas must not exceed spec.autoscaling.maxReplicas"))]
pub struct Autoscaling {
    /// Fewest replicas (default 1). 0 scales the Server to zero when idle: the gateway starts
    /// a replica on the next request and holds the request until it is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: Option<i32>,
    /// Most replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// In-flight requests one replica is sized for (default 8): the gateway asks for
    /// ceil(in-flight / target) replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_requests: Option<i32>,
    /// Seconds the load must stay lower before replicas are removed (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: Option<i32>,
}

impl Autoscaling {
    pub const DEFAULT_TARGET_REQUESTS: i32 = 8;
    pub const DEFAULT_SCALE_DOWN_DELAY_SECONDS: i32 = 300;

    pub fn min_replicas(&self) -> i32 {
        self.min_replicas.unwrap_or(1)
    }

    pub fn target_requests(&self) -> i32 {
        self.target_requests
            .unwrap_or(Self::DEFAULT_TARGET_REQUESTS)
            .max(1)
    }

    pub fn scale_down_delay_seconds(&self) -> i32 {
        self.scale_down_delay_seconds
            .unwrap_or(Self::DEFAULT_SCALE_DOWN_DELAY_SECONDS)
            .max(0)
    }
}

/// How the gateway picks a replica for a request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RoutingStrategy {
    /// The replica with the fewest requests in flight.
    #[default]
    LeastLoad,
    /// Requests that share a prompt prefix go to the same replica (its KV cache holds the
    /// prefix), unless that replica carries more than `loadFactor` percent of the mean load.
    PrefixHash,
}

/// Routing of requests among a Server's replicas.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// `LeastLoad` (default) or `PrefixHash`.
    #[serde(default)]
    pub strategy: RoutingStrategy,
    /// Characters of the prompt (or of the first message) hashed by `PrefixHash` (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub prefix_length: Option<i32>,
    /// Under `PrefixHash`, the most a replica may carry, in percent of the mean in-flight load
    /// (default 125): beyond it the request goes to the next replica on the ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 10000))]
    pub load_factor: Option<i32>,
}

impl Routing {
    pub fn prefix_length(&self) -> usize {
        self.prefix_length.unwrap_or(100).max(1) as usize
    }

    pub fn load_factor(&self) -> u32 {
        self.load_factor.unwrap_or(125).max(100) as u32
    }
}
