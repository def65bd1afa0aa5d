# Example root: GKE with L4, A100 and T4 pools and Substratus installed.
#   terraform init && terraform apply -var project_id=my-project

variable "project_id" {
  description = "GCP project to install into."
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
  source     = "../../"
  project_id = var.project_id
  chart_path = "../../../../deploy/helm/substratus"
}

output "get_credentials" {
  description = "Command that points kubectl at the cluster."
  value       = module.substratus.get_credentials
}
