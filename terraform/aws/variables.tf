variable "region" {
  description = "AWS region of the cluster, bucket and registry."
  type        = string
  default     = "us-west-2"
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
  description = "Private subnets (at least two, in different availability zones) for the cluster and its nodes."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "EKS needs subnets in at least two availability zones."
  }
}

variable "gpu_node_groups" {
  description = "GPU node groups by Substratus GPU type; min_size 0 lets a group scale from zero."
  type = map(object({
    instance_types = list(string)
    gpu_name       = string
    gpu_memory_mib = optional(string, "")
    min_size       = optional(number, 0)
    max_size       = optional(number, 3)
    capacity_type  = optional(string, "ON_DEMAND")
  }))
  default = {
    "nvidia-l4"   = { instance_types = ["g6.12xlarge"], gpu_name = "l4" }
    "nvidia-a100" = { instance_types = ["p4d.24xlarge"], gpu_name = "a100", gpu_memory_mib = "40960" }
    "nvidia-t4"   = { instance_types = ["g4dn.xlarge"], gpu_name = "t4" }
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

variable "operator_image_tag" {
  description = "Tag of the operator image; empty uses the chart's appVersion."
  type        = string
  default     = ""
}
