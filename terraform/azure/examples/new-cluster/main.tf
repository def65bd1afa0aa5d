# Example root: AKS with A100 and T4 pools and Substratus installed.
#   terraform init && terraform apply -var name_suffix=abc123

variable "name_suffix" {
  description = "Suffix making the storage account and registry names globally unique."
  type        = string
}

provider "azurerm" {
  features {}
}

provider "helm" {
  kubernetes = {
    host                   = module.substratus.kube_host
    client_certificate     = base64decode(module.substratus.kube_client_certificate)
    client_key             = base64decode(module.substratus.kube_client_key)
    cluster_ca_certificate = base64decode(module.substratus.kube_cluster_ca_certificate)
  }
}

module "substratus" {
  source      = "../../"
  name_suffix = var.name_suffix
  chart_path  = "../../../../deploy/helm/substratus"
}

output "get_credentials" {
  description = "Command that points kubectl at the cluster."
  value       = module.substratus.get_credentials
}
