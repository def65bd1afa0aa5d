//! Node-pool profiles that mirror real clusters: the labels, taints and capacity that GKE,
//! EKS (Karpenter), AKS and kind put on their nodes. kwok keeps these nodes alive.

use serde_json::{Map, Value, json};

/// A cloud whose node pools a profile mirrors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Gcp,
    Aws,
    Azure,
    Kind,
}

impl Profile {
    pub const ALL: [Profile; 4] = [Profile::Gcp, Profile::Aws, Profile::Azure, Profile::Kind];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Gcp => "gcp",
            Profile::Aws => "aws",
            Profile::Azure => "azure",
            Profile::Kind => "kind",
        }
    }

    pub fn parse(s: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The pools of this profile.
    pub fn pools(self) -> Vec<Pool> {
        match self {
            Profile::Gcp => gcp_pools(),
            Profile::Aws => aws_pools(),
            Profile::Azure => azure_pools(),
            Profile::Kind => kind_pools(),
        }
    }
}

/// One node pool: `count` identical nodes.
#[derive(Clone, Debug)]
pub struct Pool {
    /// Node names are `<prefix>-<index>`.
    pub prefix: &'static str,
    pub count: usize,
    pub instance_type: &'static str,
    pub cpu: u32,
    pub memory_gib: u32,
    pub gpus: u32,
    pub labels: Vec<(&'static str, &'static str)>,
    /// (key, value, effect)
    pub taints: Vec<(&'static str, &'static str, &'static str)>,
}

/// Label every simulated node carries; `kwok` manages nodes that have it.
pub const SIMULATED_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Label naming the profile a simulated node belongs to.
pub const PROFILE_LABEL: &str = "devcluster.substratus.ai/profile";

fn gcp_pools() -> Vec<Pool> {
    let gke = |pool: &'static str| vec![("cloud.google.com/gke-nodepool", pool)];
    vec![
        Pool {
            prefix: "gke-cpu",
            count: 2,
            instance_type: "e2-standard-8",
            cpu: 8,
            memory_gib: 32,
            gpus: 0,
            labels: gke("cpu"),
            taints: vec![],
        },
        Pool {
            prefix: "gke-l4",
            count: 2,
            instance_type: "g2-standard-48",
            cpu: 48,
            memory_gib: 192,
            gpus: 4,
            labels: [
                gke("l4"),
                vec![("cloud.google.com/gke-accelerator", "nvidia-l4")],
            ]
            .concat(),
            taints: vec![("nvidia.com/gpu", "present", "NoSchedule")],
        },
        Pool {
            prefix: "gke-a100",
            count: 1,
            instance_type: "a2-highgpu-1g",
            cpu: 12,
            memory_gib: 85,
            gpus: 1,
            labels: [
                gke("a100"),
                vec![("cloud.google.com/gke-accelerator", "nvidia-tesla-a100")],
            ]
            .concat(),
            taints: vec![("nvidia.com/gpu", "present", "NoSchedule")],
        },
        Pool {
            prefix: "gke-t4",
            count: 1,
            instance_type: "n1-standard-8",
            cpu: 8,
            memory_gib: 30,
            gpus: 1,
            labels: [
                gke("t4"),
                vec![("cloud.google.com/gke-accelerator", "nvidia-tesla-t4")],
            ]
            .concat(),
            taints: vec![("nvidia.com/gpu", "present", "NoSchedule")],
        },
    ]
}

fn aws_pools() -> Vec<Pool> {
    let karpenter =
        |family: &'static str, gpu: &'static str, count: &'static str, memory: &'static str| {
            vec![
                ("karpenter.sh/nodepool", "gpu"),
                ("karpenter.k8s.aws/instance-family", family),
                ("karpenter.k8s.aws/instance-gpu-name", gpu),
                ("karpenter.k8s.aws/instance-gpu-manufacturer", "nvidia"),
                ("karpenter.k8s.aws/instance-gpu-count", count),
                ("karpenter.k8s.aws/instance-gpu-memory", memory),
            ]
        };
    let gpu_taint = vec![("nvidia.com/gpu", "", "NoSchedule")];
    vec![
        Pool {
            prefix: "eks-cpu",
            count: 2,
            instance_type: "m5.2xlarge",
            cpu: 8,
            memory_gib: 32,
            gpus: 0,
            labels: vec![("eks.amazonaws.com/nodegroup", "cpu")],
            taints: vec![],
        },
        Pool {
            prefix: "eks-l4",
            count: 2,
            instance_type: "g6.12xlarge",
            cpu: 48,
            memory_gib: 192,
            gpus: 4,
            labels: karpenter("g6", "l4", "4", "22888"),
            taints: gpu_taint.clone(),
        },
        Pool {
            prefix: "eks-a100",
            count: 1,
            instance_type: "p4d.24xlarge",
            cpu: 96,
            memory_gib: 1152,
            gpus: 8,
            labels: karpenter("p4d", "a100", "8", "40960"),
            taints: gpu_taint.clone(),
        },
        Pool {
            prefix: "eks-t4",
            count: 1,
            instance_type: "g4dn.xlarge",
            cpu: 4,
            memory_gib: 16,
            gpus: 1,
            labels: karpenter("g4dn", "t4", "1", "15360"),
            taints: gpu_taint,
        },
    ]
}

fn azure_pools() -> Vec<Pool> {
    let aks = |pool: &'static str| {
        vec![
            ("kubernetes.azure.com/agentpool", pool),
            ("agentpool", pool),
        ]
    };
    let gpu = |pool: &'static str| {
        [
            aks(pool),
            vec![("kubernetes.azure.com/accelerator", "nvidia")],
        ]
        .concat()
    };
    let sku_taint = vec![("sku", "gpu", "NoSchedule")];
    vec![
        Pool {
            prefix: "aks-cpu",
            count: 2,
            instance_type: "Standard_D8s_v5",
            cpu: 8,
            memory_gib: 32,
            gpus: 0,
            labels: aks("cpu"),
            taints: vec![],
        },
        Pool {
            prefix: "aks-a100",
            count: 1,
            instance_type: "Standard_ND96asr_v4",
            cpu: 96,
            memory_gib: 900,
            gpus: 8,
            labels: gpu("a100"),
            taints: sku_taint.clone(),
        },
        Pool {
            prefix: "aks-t4",
            count: 1,
            instance_type: "Standard_NC4as_T4_v3",
            cpu: 4,
            memory_gib: 28,
            gpus: 1,
            labels: gpu("t4"),
            taints: sku_taint.clone(),
        },
        Pool {
            prefix: "aks-h100",
            count: 1,
            instance_type: "Standard_NC40ads_H100_v5",
            cpu: 40,
            memory_gib: 320,
            gpus: 1,
            labels: gpu("h100"),
            taints: sku_taint,
        },
    ]
}

fn kind_pools() -> Vec<Pool> {
    vec![
        Pool {
            prefix: "kind-worker",
            count: 1,
            instance_type: "kind",
            cpu: 8,
            memory_gib: 32,
            gpus: 0,
            labels: vec![],
            taints: vec![],
        },
        Pool {
            prefix: "kind-gpu-worker",
            count: 1,
            instance_type: "kind",
            cpu: 8,
            memory_gib: 32,
            gpus: 1,
            labels: vec![],
            taints: vec![],
        },
    ]
}

/// The Node objects of a profile, with status (kept by the API server on create).
/// `scale` multiplies every pool's node count (1 for tests; larger for benchmarks).
pub fn nodes(profile: Profile, scale: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for pool in profile.pools() {
        for i in 0..pool.count * scale.max(1) {
            out.push(node(profile, &pool, i));
        }
    }
    out
}

/// Whether a simulated node (as [`nodes`] makes it) has `nvidia.com/gpu` capacity.
pub fn has_gpus(node: &Value) -> bool {
    node["status"]["capacity"]["nvidia.com/gpu"]
        .as_str()
        .is_some_and(|n| n != "0")
}

/// Adds the `nvidia.com/gpu` NoSchedule taint to a node that has no such taint yet.
pub fn taint_for_gpu_pods_only(node: &mut Value) {
    let taints = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !taints.iter().any(|t| t["key"] == "nvidia.com/gpu") {
        let mut taints = taints;
        taints.push(json!({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}));
        node["spec"]["taints"] = json!(taints);
    }
}

fn node(profile: Profile, pool: &Pool, index: usize) -> Value {
    let name = format!("{}-{index}", pool.prefix);
    let mut labels = Map::new();
    for (k, v) in [
        ("kubernetes.io/hostname", name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("node.kubernetes.io/instance-type", pool.instance_type),
        ("type", "kwok"),
        (PROFILE_LABEL, profile.name()),
    ] {
        labels.insert(k.to_owned(), json!(v));
    }
    for (k, v) in &pool.labels {
        labels.insert((*k).to_owned(), json!(v));
    }
    let taints: Vec<Value> = pool
        .taints
        .iter()
        .map(|(k, v, e)| {
            if v.is_empty() {
                json!({"key": k, "effect": e})
            } else {
                json!({"key": k, "value": v, "effect": e})
            }
        })
        .collect();
    // Allocatable leaves room for the system reservations real nodes have.
    let capacity = resources(pool.cpu * 1000, pool.memory_gib * 1024, pool.gpus, 100);
    let allocatable = resources(
        pool.cpu * 1000 - (pool.cpu * 1000 / 16).max(100),
        pool.memory_gib * 1024 - (pool.memory_gib * 1024 / 10).max(512),
        pool.gpus,
        90,
    );
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {SIMULATED_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints},
        "status": {"capacity": capacity, "allocatable": allocatable},
    })
}

fn resources(milli_cpu: u32, memory_mib: u32, gpus: u32, disk_gib: u32) -> Value {
    let mut r = json!({
        "cpu": format!("{milli_cpu}m"),
        "memory": format!("{memory_mib}Mi"),
        "ephemeral-storage": format!("{disk_gib}Gi"),
        "pods": "110",
    });
    if gpus > 0 {
        r["nvidia.com/gpu"] = json!(gpus.to_string());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beside_a_real_node_only_gpu_pods_fit_a_simulated_node() {
        let kind = nodes(Profile::Kind, 1);
        let gpu: Vec<Value> = kind.iter().filter(|n| has_gpus(n)).cloned().collect();
        assert_eq!(gpu.len(), 1, "the kind profile has one GPU node");
        assert!(kind.iter().any(|n| !has_gpus(n)), "and a CPU node");
        let mut n = gpu[0].clone();
        taint_for_gpu_pods_only(&mut n);
        taint_for_gpu_pods_only(&mut n);
        let taints = n["spec"]["taints"].as_array().unwrap();
        assert_eq!(taints.len(), 1, "{taints:?}");
        assert_eq!(taints[0]["key"], "nvidia.com/gpu");
        // A GKE GPU node keeps the taint it has.
        let mut l4 = nodes(Profile::Gcp, 1).into_iter().find(has_gpus).unwrap();
        let before = l4["spec"]["taints"].clone();
        taint_for_gpu_pods_only(&mut l4);
        assert_eq!(l4["spec"]["taints"], before);
    }

    fn label<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
        node["metadata"]["labels"][key].as_str()
    }

    #[test]
    fn gke_l4_pool_has_four_gpus_on_g2_standard_48() {
        let nodes = nodes(Profile::Gcp, 1);
        let l4: Vec<_> = nodes
            .iter()
            .filter(|n| label(n, "cloud.google.com/gke-accelerator") == Some("nvidia-l4"))
            .collect();
        assert!(!l4.is_empty());
        for n in l4 {
            assert_eq!(
                label(n, "node.kubernetes.io/instance-type"),
                Some("g2-standard-48")
            );
            assert_eq!(n["status"]["capacity"]["nvidia.com/gpu"], "4");
            assert_eq!(n["status"]["allocatable"]["nvidia.com/gpu"], "4");
        }
    }

    #[test]
    fn azure_has_no_l4_and_taints_gpu_pools() {
        for n in nodes(Profile::Azure, 1) {
            assert!(!n["metadata"]["name"].as_str().unwrap().contains("l4"));
            if n["status"]["capacity"].get("nvidia.com/gpu").is_some() {
                assert_eq!(
                    n["spec"]["taints"][0],
                    json!({"key": "sku", "value": "gpu", "effect": "NoSchedule"})
                );
            }
        }
    }

    #[test]
    fn scale_multiplies_every_pool_and_names_stay_unique() {
        let one = nodes(Profile::Aws, 1).len();
        let many = nodes(Profile::Aws, 10);
        assert_eq!(many.len(), one * 10);
        let mut names: Vec<_> = many
            .iter()
            .map(|n| n["metadata"]["name"].as_str().unwrap())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), one * 10);
    }

    #[test]
    fn cpu_pools_have_no_gpu_capacity() {
        for p in Profile::ALL {
            for n in nodes(p, 1) {
                let name = n["metadata"]["name"].as_str().unwrap();
                if name.contains("-cpu-") || name == "kind-worker-0" {
                    assert!(
                        n["status"]["capacity"].get("nvidia.com/gpu").is_none(),
                        "{name}"
                    );
                }
            }
        }
    }
}
