variable "project_id" {
  description = "GCP project that holds the cluster, bucket and registry."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid GCP project id."
  }
}

variable "create_cluster" {
  description = "Create the GKE cluster and its node pools; false installs onto the existing cluster cluster_name in region (bucket, registry, identities and the chart only)."
  type        = bool
  default     = true
}

variable "region" {
  description = "Region of the cluster, the bucket and the registry (e.g. us-central1)."
  type        = string
  default     = "us-central1"
}

variable "zones" {
  description = "Zones of the node pools; GPU types are offered in some zones only."
  type        = list(string)
  default     = ["us-central1-a"]
}

variable "cluster_name" {
  description = "Name of the GKE cluster; also Substratus's CLUSTER_NAME (part of storage prefixes)."
  type        = string
  default     = "substratus"
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name must be a lower-case DNS label of at most 40 characters."
  }
}

variable "gpu_pools" {
  description = "GPU node pools to create, by Substratus GPU type. Each scales from min_nodes (0 allows scale from zero)."
  type = map(object({
    machine_type      = string
    accelerator_type  = string
    accelerator_count = number
    min_nodes         = optional(number, 0)
    max_nodes         = optional(number, 3)
    spot              = optional(bool, false)
  }))
  default = {
    "nvidia-l4" = {
      machine_type      = "g2-standard-48"
      accelerator_type  = "nvidia-l4"
      accelerator_count = 4
    }
    "nvidia-a100" = {
      machine_type      = "a2-highgpu-1g"
      accelerator_type  = "nvidia-tesla-a100"
      accelerator_count = 1
    }
    "nvidia-t4" = {
      machine_type      = "n1-standard-8"
      accelerator_type  = "nvidia-tesla-t4"
      accelerator_count = 1
    }
  }
  validation {
    condition     = alltrue([for k, p in var.gpu_pools : contains(["nvidia-l4", "nvidia-a100", "nvidia-a100-80gb", "nvidia-t4", "nvidia-h100"], k)])
    error_message = "gpu_pools keys must be Substratus GPU types GKE offers: nvidia-l4, nvidia-a100, nvidia-a100-80gb, nvidia-t4, nvidia-h100."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : p.min_nodes >= 0 && p.max_nodes >= p.min_nodes])
    error_message = "Each GPU pool needs 0 <= min_nodes <= max_nodes."
  }
}

variable "cpu_machine_type" {
  description = "Machine type of the CPU pool that runs the operator and CPU workloads."
  type        = string
  default     = "e2-standard-8"
}

variable "cpu_nodes" {
  description = "Size range of the CPU pool."
  type        = object({ min = number, max = number })
  default     = { min = 1, max = 5 }
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

variable "labels" {
  description = "Labels on the cluster (resource labels), its node pools, the bucket and the registry."
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
  description = "namespace: each namespace's workloads act as their own Kubernetes accounts, allowed only the namespace's folder of the bucket and a registry repository of its own; shared: every namespace acts as one Google service account (one trust domain)."
  type        = string
  default     = "namespace"
  validation {
    condition     = contains(["namespace", "shared"], var.tenancy)
    error_message = "tenancy must be namespace or shared."
  }
}
