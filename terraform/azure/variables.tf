variable "create_cluster" {
  description = "Create the resource group, the AKS cluster and its node pools; false installs onto the existing cluster cluster_name of resource_group_name (which must have the OIDC issuer, workload identity and the Blob CSI driver): storage, registry, identities and the chart only."
  type        = bool
  default     = true
}

variable "install_nvidia_device_plugin" {
  description = "Install the NVIDIA device plugin (false when the cluster has one)."
  type        = bool
  default     = true
}

variable "location" {
  description = "Azure region (e.g. eastus)."
  type        = string
  default     = "eastus"
}

variable "resource_group_name" {
  description = "Resource group to create for the cluster, storage, registry and identities."
  type        = string
  default     = "substratus"
}

variable "cluster_name" {
  description = "Name of the AKS cluster; also Substratus's CLUSTER_NAME (part of storage prefixes)."
  type        = string
  default     = "substratus"
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name must be a lower-case DNS label of at most 40 characters."
  }
}

variable "name_suffix" {
  description = "Lower-case letters and digits appended to the globally unique storage account and registry names."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]{3,10}$", var.name_suffix))
    error_message = "name_suffix must be 3 to 10 lower-case letters or digits."
  }
}

variable "gpu_pools" {
  description = "GPU node pools by Substratus GPU type (Azure has no L4 or A10G). min_count 0 lets a pool scale from zero."
  type = map(object({
    vm_size   = string
    min_count = optional(number, 0)
    max_count = optional(number, 3)
  }))
  default = {
    "nvidia-a100" = { vm_size = "Standard_ND96asr_v4" }
    "nvidia-t4"   = { vm_size = "Standard_NC4as_T4_v3" }
  }
  validation {
    condition     = alltrue([for k, p in var.gpu_pools : contains(["nvidia-a100", "nvidia-a100-80gb", "nvidia-t4", "nvidia-h100"], k)])
    error_message = "gpu_pools keys must be GPU types Azure offers: nvidia-a100, nvidia-a100-80gb, nvidia-t4, nvidia-h100."
  }
  validation {
    condition     = alltrue([for p in var.gpu_pools : p.min_count >= 0 && p.max_count >= p.min_count])
    error_message = "Each GPU pool needs 0 <= min_count <= max_count."
  }
}

variable "enable_h100" {
  description = "Add an H100 pool (Standard_NC40ads_H100_v5) beside gpu_pools."
  type        = bool
  default     = false
}

variable "cpu_vm_size" {
  description = "VM size of the system (CPU) pool."
  type        = string
  default     = "Standard_D8s_v5"
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

variable "tags" {
  description = "Tags on every Azure resource the module creates that takes them."
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
  description = "namespace: the operator makes a managed identity per namespace, granted only the container folder namespaces/<ns>/ and the repositories under <repository>/<ns>/ (Azure ABAC conditions; the registry runs in ABAC repository-permissions mode); shared: every namespace acts as one workload identity that reaches the whole container and registry (one trust domain)."
  type        = string
  default     = "namespace"
  validation {
    condition     = contains(["namespace", "shared"], var.tenancy)
    error_message = "tenancy must be namespace or shared."
  }
}
