//! GPU catalogues: for each provider, where each GPU type's nodes are and which taints they
//! carry. They are data: the built-in tables below can be replaced type by type with a YAML
//! or JSON file (`GPU_CATALOG_FILE`), so a cluster with custom node-pool labels, or a new GPU
//! type mapping, needs no release.
//!
//! File format (every key optional; `null` removes a type):
//! ```yaml
//! nvidia-l4:
//!   nodeSelector: {cloud.google.com/gke-accelerator: nvidia-l4}
//!   instanceTypes: [g2-standard-48]      # node.kubernetes.io/instance-type In [...]
//!   tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
//! any:                                   # count without a type
//!   tolerations: [...]
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Toleration,
};
use serde::{Deserialize, Serialize};
use substratus_core::cloud::{CloudError, GpuPlacement};
use substratus_crds::GpuType;

/// Where the nodes of one GPU type are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuPool {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Instance types any of which will do (a node affinity on
    /// `node.kubernetes.io/instance-type`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// A provider's GPU types.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuCatalog {
    pub provider: &'static str,
    pub types: BTreeMap<GpuType, GpuPool>,
    /// For a count without a type.
    pub any: GpuPool,
}

fn toleration(key: &str, value: Option<&str>) -> Toleration {
    Toleration {
        key: Some(key.to_owned()),
        operator: Some(if value.is_some() { "Equal" } else { "Exists" }.to_owned()),
        value: value.map(str::to_owned),
        effect: Some("NoSchedule".to_owned()),
        ..Default::default()
    }
}

fn selector(key: &str, value: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(key.to_owned(), value.to_owned())])
}

impl GpuCatalog {
    /// GKE: the `cloud.google.com/gke-accelerator` node label. GKE adds the `nvidia.com/gpu`
    /// toleration itself; the spot toleration lets pods use spot GPU pools.
    pub fn gcp() -> GpuCatalog {
        const LABEL: &str = "cloud.google.com/gke-accelerator";
        let spot = || vec![toleration("cloud.google.com/gke-spot", Some("true"))];
        let pool = |accel: &str| GpuPool {
            node_selector: selector(LABEL, accel),
            instance_types: vec![],
            tolerations: spot(),
        };
        GpuCatalog {
            provider: "gcp",
            types: BTreeMap::from([
                (GpuType::NvidiaL4, pool("nvidia-l4")),
                (GpuType::NvidiaA100, pool("nvidia-tesla-a100")),
                (GpuType::NvidiaA100_80Gb, pool("nvidia-a100-80gb")),
                (GpuType::NvidiaT4, pool("nvidia-tesla-t4")),
                (GpuType::NvidiaH100, pool("nvidia-h100-80gb")),
            ]),
            any: GpuPool {
                tolerations: spot(),
                ..Default::default()
            },
        }
    }

    /// EKS with Karpenter: `karpenter.k8s.aws/instance-gpu-name`; GPU nodes are tainted
    /// `nvidia.com/gpu:NoSchedule`.
    pub fn aws() -> GpuCatalog {
        const NAME: &str = "karpenter.k8s.aws/instance-gpu-name";
        let taint = || vec![toleration("nvidia.com/gpu", None)];
        let pool = |gpu: &str| GpuPool {
            node_selector: selector(NAME, gpu),
            instance_types: vec![],
            tolerations: taint(),
        };
        // A100 40 GB and 80 GB share a name; the GPU memory (MiB) tells them apart.
        let a100 = |memory: &str| GpuPool {
            node_selector: BTreeMap::from([
                (NAME.to_owned(), "a100".to_owned()),
                (
                    "karpenter.k8s.aws/instance-gpu-memory".to_owned(),
                    memory.to_owned(),
                ),
            ]),
            instance_types: vec![],
            tolerations: taint(),
        };
        GpuCatalog {
            provider: "aws",
            types: BTreeMap::from([
                (GpuType::NvidiaL4, pool("l4")),
                (GpuType::NvidiaA100, a100("40960")),
                (GpuType::NvidiaA100_80Gb, a100("81920")),
                (GpuType::NvidiaT4, pool("t4")),
                (GpuType::NvidiaH100, pool("h100")),
                (GpuType::NvidiaA10G, pool("a10g")),
            ]),
            any: GpuPool {
                tolerations: taint(),
                ..Default::default()
            },
        }
    }

    /// AKS: GPU pools are chosen by VM size and tainted `sku=gpu:NoSchedule` as AKS's docs
    /// recommend. Azure offers no L4 and no A10G.
    pub fn azure() -> GpuCatalog {
        let taint = || vec![toleration("sku", Some("gpu"))];
        let pool = |sizes: &[&str]| GpuPool {
            node_selector: BTreeMap::new(),
            instance_types: sizes.iter().map(|s| (*s).to_owned()).collect(),
            tolerations: taint(),
        };
        GpuCatalog {
            provider: "azure",
            types: BTreeMap::from([
                (GpuType::NvidiaA100, pool(&["Standard_ND96asr_v4"])),
                (
                    GpuType::NvidiaA100_80Gb,
                    pool(&[
                        "Standard_NC24ads_A100_v4",
                        "Standard_NC48ads_A100_v4",
                        "Standard_NC96ads_A100_v4",
                        "Standard_ND96amsr_A100_v4",
                    ]),
                ),
                (
                    GpuType::NvidiaT4,
                    pool(&[
                        "Standard_NC4as_T4_v3",
                        "Standard_NC8as_T4_v3",
                        "Standard_NC16as_T4_v3",
                        "Standard_NC64as_T4_v3",
                    ]),
                ),
                (
                    GpuType::NvidiaH100,
                    pool(&[
                        "Standard_NC40ads_H100_v5",
                        "Standard_NC80adis_H100_v5",
                        "Standard_ND96isr_H100_v5",
                    ]),
                ),
            ]),
            any: GpuPool {
                tolerations: taint(),
                ..Default::default()
            },
        }
    }

    /// kind: any node with `nvidia.com/gpu` capacity, whatever the type.
    pub fn kind() -> GpuCatalog {
        GpuCatalog {
            provider: "kind",
            types: GpuType::ALL
                .iter()
                .map(|t| (*t, GpuPool::default()))
                .collect(),
            any: GpuPool::default(),
        }
    }

    /// The built-in catalogue of a provider.
    pub fn builtin(provider: &str) -> Option<GpuCatalog> {
        match provider {
            "gcp" => Some(GpuCatalog::gcp()),
            "aws" => Some(GpuCatalog::aws()),
            "azure" => Some(GpuCatalog::azure()),
            "kind" => Some(GpuCatalog::kind()),
            _ => None,
        }
    }

    /// Replaces entries with those of a YAML/JSON document (see the module docs).
    pub fn with_overrides(mut self, document: &str) -> Result<GpuCatalog, String> {
        let parsed: BTreeMap<String, Option<GpuPool>> =
            serde_saphyr::from_str(document).map_err(|e| format!("GPU catalogue: {e}"))?;
        for (key, pool) in parsed {
            if key == "any" {
                self.any = pool.unwrap_or_default();
                continue;
            }
            let t = GpuType::ALL
                .into_iter()
                .find(|t| t.as_str() == key)
                .ok_or_else(|| {
                    format!(
                        "GPU catalogue: unknown GPU type {key:?}; known: {}",
                        GpuType::ALL.map(|t| t.as_str()).join(", ")
                    )
                })?;
            match pool {
                Some(p) => self.types.insert(t, p),
                None => self.types.remove(&t),
            };
        }
        Ok(self)
    }

    /// Placement for `count` GPUs of `gpu_type` (any type when `None`).
    pub fn placement(&self, gpu_type: Option<GpuType>) -> Result<GpuPlacement, CloudError> {
        let pool = match gpu_type {
            None => &self.any,
            Some(t) => self
                .types
                .get(&t)
                .ok_or_else(|| CloudError::gpu_unavailable(self.provider, t))?,
        };
        let affinity = (!pool.instance_types.is_empty()).then(|| Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "node.kubernetes.io/instance-type".into(),
                            operator: "In".into(),
                            values: Some(pool.instance_types.clone()),
                        }]),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        Ok(GpuPlacement {
            node_selector: pool.node_selector.clone(),
            affinity,
            tolerations: pool.tolerations.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gke_selects_by_accelerator_label() {
        let p = GpuCatalog::gcp()
            .placement(Some(GpuType::NvidiaL4))
            .unwrap();
        assert_eq!(
            p.node_selector["cloud.google.com/gke-accelerator"],
            "nvidia-l4"
        );
        let p = GpuCatalog::gcp()
            .placement(Some(GpuType::NvidiaA100))
            .unwrap();
        assert_eq!(
            p.node_selector["cloud.google.com/gke-accelerator"],
            "nvidia-tesla-a100"
        );
    }

    #[test]
    fn a_type_the_provider_lacks_is_a_permanent_error_naming_it() {
        for (cat, t) in [
            (GpuCatalog::azure(), GpuType::NvidiaL4),
            (GpuCatalog::gcp(), GpuType::NvidiaA10G),
        ] {
            match cat.placement(Some(t)) {
                Err(CloudError::Permanent { reason, message }) => {
                    assert_eq!(reason, "GPUTypeUnavailable");
                    assert!(
                        message.contains(t.as_str()) && message.contains(cat.provider),
                        "{message}"
                    );
                }
                other => panic!("expected a permanent error, got {other:?}"),
            }
        }
    }

    #[test]
    fn azure_tolerates_the_sku_taint_and_selects_vm_sizes() {
        let p = GpuCatalog::azure()
            .placement(Some(GpuType::NvidiaT4))
            .unwrap();
        assert_eq!(p.tolerations[0].key.as_deref(), Some("sku"));
        assert_eq!(p.tolerations[0].value.as_deref(), Some("gpu"));
        let terms = p
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        let values = terms[0].match_expressions.as_ref().unwrap()[0]
            .values
            .clone()
            .unwrap();
        assert!(values.contains(&"Standard_NC4as_T4_v3".to_owned()));
    }

    #[test]
    fn any_gpu_has_no_type_selector() {
        for cat in [
            GpuCatalog::gcp(),
            GpuCatalog::aws(),
            GpuCatalog::azure(),
            GpuCatalog::kind(),
        ] {
            assert!(
                cat.placement(None).unwrap().node_selector.is_empty(),
                "{}",
                cat.provider
            );
        }
    }

    #[test]
    fn overrides_replace_add_and_remove_types() {
        let doc = "nvidia-l4:\n  nodeSelector: {pool: my-l4}\nnvidia-t4: null\n";
        let cat = GpuCatalog::gcp().with_overrides(doc).unwrap();
        assert_eq!(
            cat.placement(Some(GpuType::NvidiaL4))
                .unwrap()
                .node_selector["pool"],
            "my-l4"
        );
        assert!(cat.placement(Some(GpuType::NvidiaT4)).is_err());
        let err = GpuCatalog::gcp()
            .with_overrides("nvidia-v100: {}\n")
            .unwrap_err();
        assert!(err.contains("nvidia-v100"), "{err}");
        // A type Azure lacks can be added by configuration.
        let cat = GpuCatalog::azure()
            .with_overrides("nvidia-a10g:\n  instanceTypes: [Standard_NV36ads_A10_v5]\n")
            .unwrap();
        assert!(cat.placement(Some(GpuType::NvidiaA10G)).is_ok());
    }
}
