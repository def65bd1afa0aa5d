variable "region" {
  description = "AWS region of the cluster, bucket and registry."
  type        = string
  default     = "us-west-2"
}

variable "create_cluster" {
  description = "Create the EKS cluster, its node groups and cluster-autoscaler; false installs onto the existing cluster cluster_name (bucket, registry, identities, add-ons and the chart only)."
  type        = bool
  default     = true
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's existing IAM OIDC provider; empty creates one (an existing cluster that has one must name it)."
  type        = string
  default     = ""
}

variable "install_mountpoint_s3_driver" {
  description = "Install the Mountpoint for S3 CSI driver add-on (false when the cluster has it)."
  type        = bool
  default     = true
}

variable "install_nvidia_device_plugin" {
  description = "Install the NVIDIA device plugin (false when the cluster has one, e.g. the GPU operator)."
  type        = bool
  default     = true
}

variable "cluster_name" {
  description = "Name of the EKS cluster; also Substratus's CLUSTER_NAME (part of storage prefixes)."
  type        = string
  default     = "substratus"
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name must be a lower-case DNS label of at most 40 characters."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes version of the EKS control plane."
  type        = string
  default     = "1.33"
}

variable "subnet_ids" {
  description = "Private subnets (at least two, in different availability zones) for a new cluster and its nodes."
  type        = list(string)
  default     = []
  validation {
    condition     = !var.create_cluster || length(var.subnet_ids) >= 2
    error_message = "A new EKS cluster needs subnets in at least two availability zones."
  }
}

variable "gpu_node_groups" {
  description = "GPU node groups by Substratus GPU type. With min_size 0 a group scales from zero: cluster-autoscaler learns its labels, taint and GPUs per node (gpus_per_node) from node-template tags."
  type = map(object({
    instance_types = list(string)
    gpu_name       = string
    gpu_memory_mib = optional(string, "")
    gpus_per_node  = optional(number, 1)
    min_size       = optional(number, 0)
    max_size       = optional(number, 3)
    capacity_type  = optional(string, "ON_DEMAND")
  }))
  default = {
    "nvidia-l4"   = { instance_types = ["g6.12xlarge"], gpu_name = "l4", gpus_per_node = 4 }
    "nvidia-a100" = { instance_types = ["p4d.24xlarge"], gpu_name = "a100", gpu_memory_mib = "40960", gpus_per_node = 8 }
    "nvidia-t4"   = { instance_types = ["g4dn.xlarge"], gpu_name = "t4", gpus_per_node = 1 }
  }
  validation {
    condition     = alltrue([for k, g in var.gpu_node_groups : contains(["nvidia-l4", "nvidia-a100", "nvidia-a100-80gb", "nvidia-t4", "nvidia-h100", "nvidia-a10g"], k)])
    error_message = "gpu_node_groups keys must be Substratus GPU types."
  }
  validation {
    condition     = alltrue([for g in var.gpu_node_groups : contains(["ON_DEMAND", "SPOT"], g.capacity_type) && g.min_size >= 0 && g.max_size >= g.min_size])
    error_message = "capacity_type must be ON_DEMAND or SPOT, and 0 <= min_size <= max_size."
  }
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group."
  type        = list(string)
  default     = ["m5.2xlarge"]
}

variable "operator_namespace" {
  description = "Namespace the operator is installed into."
  type        = string
  default     = "substratus"
}

variable "chart_path" {
  description = "Path or repository URL of the Substratus Helm chart."
  type        = string
  default     = "../../deploy/helm/substratus"
}

variable "cluster_autoscaler_chart_version" {
  description = "Version of the cluster-autoscaler Helm chart that scales the node groups (from zero for GPU groups)."
  type        = string
  default     = "9.43.2"
}

variable "tags" {
  description = "Tags on every AWS resource the module creates that takes them."
  type        = map(string)
  default     = {}
}

variable "operator_image_repository" {
  description = "Repository of the operator image (the release workflow publishes it to ghcr.io)."
  type        = string
  default     = "ghcr.io/substratusai/substratus-operator"
}

variable "operator_image_tag" {
  description = "Tag of the operator image; empty uses the chart's appVersion."
  type        = string
  default     = ""
}

variable "tenancy" {
  description = "namespace: each namespace's workloads reach only the bucket folder namespaces/<ns>/ and the repositories under <repository>/<ns>/ (EKS Pod Identity session tags; an existing cluster needs the eks-pod-identity-agent add-on); shared: every namespace reaches the whole bucket and registry (one trust domain, IRSA)."
  type        = string
  default     = "namespace"
  validation {
    condition     = contains(["namespace", "shared"], var.tenancy)
    error_message = "tenancy must be namespace or shared."
  }
}
