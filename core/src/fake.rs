//! An in-memory [`Cloud`] for tests: every call is logged, identity bindings are counted
//! (a duplicate would show), objects live in a map, and failures can be injected.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{CSIVolumeSource, Toleration, Volume};
use substratus_crds::GpuType;

use crate::cloud::{
    Access, BucketUrl, BucketVolume, Cloud, CloudConfig, CloudError, DefaultResources,
    GpuPlacement, PrefixFolder, SignedUrl,
};
use crate::names::Role;

/// Node label the fake cloud selects GPU types with.
pub const FAKE_GPU_LABEL: &str = "fake.substratus.ai/gpu";

/// A cloud that offers L4, A100 and T4 GPUs and keeps objects in memory.
pub struct FakeCloud {
    config: CloudConfig,
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<String>,
    bindings: BTreeMap<(String, String), usize>,
    objects: BTreeMap<String, String>,
    fail_next: Option<CloudError>,
}

impl Default for FakeCloud {
    fn default() -> Self {
        FakeCloud::new(CloudConfig {
            cluster_name: "test-cluster".into(),
            artifact_bucket: BucketUrl {
                scheme: "fake".into(),
                bucket: "artifacts".into(),
                path: String::new(),
            },
            registry: "registry.test/substratus".into(),
            principal: Some("principal@test".into()),
            tenancy: Default::default(),
        })
    }
}

impl FakeCloud {
    pub fn new(config: CloudConfig) -> FakeCloud {
        FakeCloud {
            config,
            state: Mutex::new(FakeState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A poisoned lock only means another test thread panicked; the data is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every async call made so far, e.g. `bind_identity ns/modeller`.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// How many times `namespace/service_account` was bound (a correct caller binds once).
    pub fn binding_count(&self, namespace: &str, service_account: &str) -> usize {
        self.state()
            .bindings
            .get(&(namespace.to_owned(), service_account.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Stores an object with the given md5, as an upload would.
    pub fn put_object(&self, key: &str, md5_hex: &str) {
        self.state()
            .objects
            .insert(key.to_owned(), md5_hex.to_owned());
    }

    /// Makes the next async call fail with `err`.
    pub fn fail_next(&self, err: CloudError) {
        self.state().fail_next = Some(err);
    }

    fn record(&self, call: String) -> Result<(), CloudError> {
        let mut s = self.state();
        s.calls.push(call);
        match s.fail_next.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Cloud for FakeCloud {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn config(&self) -> &CloudConfig {
        &self.config
    }

    fn default_resources(&self) -> DefaultResources {
        DefaultResources {
            cpu: 2,
            memory_gib: 4,
            disk_gib: 100,
        }
    }

    fn bucket_volume(
        &self,
        folder: &PrefixFolder,
        access: Access,
    ) -> Result<BucketVolume, CloudError> {
        Ok(BucketVolume {
            sub_path: None,
            volume: Volume {
                csi: Some(CSIVolumeSource {
                    driver: "fake.csi.substratus.ai".into(),
                    read_only: Some(access == Access::ReadOnly),
                    volume_attributes: Some(BTreeMap::from([(
                        "url".to_owned(),
                        folder.url.to_string(),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pod_annotations: BTreeMap::new(),
        })
    }

    fn gpu_placement(
        &self,
        gpu_type: Option<GpuType>,
        count: i64,
    ) -> Result<GpuPlacement, CloudError> {
        let toleration = Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        let label = match gpu_type {
            None => {
                return Ok(GpuPlacement {
                    tolerations: vec![toleration],
                    ..Default::default()
                });
            }
            Some(GpuType::NvidiaL4) => "l4",
            Some(GpuType::NvidiaA100) => "a100",
            Some(GpuType::NvidiaT4) => "t4",
            Some(other) => return Err(CloudError::gpu_unavailable(self.name(), other)),
        };
        let _ = count;
        Ok(GpuPlacement {
            node_selector: BTreeMap::from([(FAKE_GPU_LABEL.to_owned(), label.to_owned())]),
            affinity: None,
            tolerations: vec![toleration],
        })
    }

    fn service_account_annotations(
        &self,
        _namespace: &str,
        _role: Role,
    ) -> Result<BTreeMap<String, String>, CloudError> {
        Ok(match &self.config.principal {
            Some(p) => BTreeMap::from([("fake.substratus.ai/principal".to_owned(), p.clone())]),
            None => BTreeMap::new(),
        })
    }

    async fn bind_identity(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<Option<String>, CloudError> {
        self.record(format!("bind_identity {namespace}/{service_account}"))?;
        let mut s = self.state();
        *s.bindings
            .entry((namespace.to_owned(), service_account.to_owned()))
            .or_default() += 1;
        Ok(self.config.principal.clone())
    }

    async fn prepare_image(&self, image: &str) -> Result<(), CloudError> {
        self.record(format!("prepare_image {image}"))
    }

    async fn copy_folder(&self, from: &BucketUrl, to: &BucketUrl) -> Result<usize, CloudError> {
        self.record(format!("copy_folder {from} {to}"))?;
        let mut state = self.state();
        let copies: Vec<(String, String)> = state
            .objects
            .iter()
            .filter_map(|(k, v)| Some((crate::cloud::mirrored_key(from, to, k)?, v.clone())))
            .collect();
        let n = copies.len();
        state.objects.extend(copies);
        Ok(n)
    }

    async fn stored_md5(&self, key: &str) -> Result<Option<String>, CloudError> {
        self.record(format!("stored_md5 {key}"))?;
        Ok(self.state().objects.get(key).cloned())
    }

    async fn signed_upload_url(
        &self,
        key: &str,
        md5_hex: &str,
        ttl: Duration,
    ) -> Result<SignedUrl, CloudError> {
        self.record(format!("signed_upload_url {key} {md5_hex}"))?;
        let now = jiff::Timestamp::now().as_second();
        Ok(SignedUrl {
            url: format!("https://fake.test/{key}?md5={md5_hex}"),
            expires_at_unix: now + ttl.as_secs() as i64,
        })
    }
}

impl FakeCloud {
    /// Keys of every stored object.
    pub fn object_keys(&self) -> BTreeSet<String> {
        self.state().objects.keys().cloned().collect()
    }
}
