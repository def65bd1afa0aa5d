# Example root: Substratus on a GKE cluster you already run (with Workload Identity and the
# GCS FUSE CSI driver enabled). Only what Substratus adds is created: the bucket, the
# registry, the Google service account and its bindings, and the operator.
#   terraform init && terraform apply -var project_id=my-project -var cluster_name=my-cluster

variable "project_id" {
  description = "GCP project of the cluster."
  type        = string
}

variable "cluster_name" {
  description = "Name of the existing GKE cluster (regional, in us-central1)."
  type        = string
}

provider "google" {
  project = var.project_id
  region  = "us-central1"
}

data "google_client_config" "current" {}

provider "helm" {
  kubernetes = {
    host                   = "https://${module.substratus.cluster_endpoint}"
    token                  = data.google_client_config.current.access_token
    cluster_ca_certificate = base64decode(module.substratus.cluster_ca_certificate)
  }
}

module "substratus" {
  source         = "../../"
  project_id     = var.project_id
  create_cluster = false
  cluster_name   = var.cluster_name
  chart_path     = "../../../../deploy/helm/substratus"
  labels         = { "part-of" = "substratus" }
}

output "principal" {
  description = "Google service account the workloads act as."
  value       = module.substratus.principal
}
