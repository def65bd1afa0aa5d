# Example root: Substratus on an AKS cluster you already run (with the OIDC issuer, workload
# identity and the Blob CSI driver enabled). Only what Substratus adds is created: the storage
# account, the registry, the managed identities and the operator.
#   terraform init && terraform apply -var cluster_name=my-cluster -var resource_group_name=my-rg -var name_suffix=abc123

variable "cluster_name" {
  description = "Name of the existing AKS cluster."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group of the existing cluster; Substratus's resources go there too."
  type        = string
}

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
  source              = "../../"
  create_cluster      = false
  cluster_name        = var.cluster_name
  resource_group_name = var.resource_group_name
  name_suffix         = var.name_suffix
  chart_path          = "../../../../deploy/helm/substratus"
  tags                = { "part-of" = "substratus" }
}

output "principal" {
  description = "Client id of the managed identity the workloads run as."
  value       = module.substratus.principal
}
