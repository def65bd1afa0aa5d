# Example root: Substratus on an EKS cluster you already run. Only what Substratus adds is
# created: the bucket, the registry, the IRSA roles and the operator (set the add-on variables
# to false for what the cluster has already).
#   terraform init && terraform apply -var cluster_name=my-cluster \
#     -var oidc_provider_arn=arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/ABC

variable "cluster_name" {
  description = "Name of the existing EKS cluster."
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (empty: one is created)."
  type        = string
  default     = ""
}

provider "aws" {
  region = "us-west-2"
}

data "aws_eks_cluster_auth" "substratus" {
  name = var.cluster_name
}

provider "helm" {
  kubernetes = {
    host                   = module.substratus.cluster_endpoint
    cluster_ca_certificate = base64decode(module.substratus.cluster_ca_certificate)
    token                  = data.aws_eks_cluster_auth.substratus.token
  }
}

module "substratus" {
  source                       = "../../"
  create_cluster               = false
  cluster_name                 = var.cluster_name
  oidc_provider_arn            = var.oidc_provider_arn
  install_nvidia_device_plugin = false
  chart_path                   = "../../../../deploy/helm/substratus"
  tags                         = { "app.kubernetes.io/part-of" = "substratus" }
}

output "principal" {
  description = "Role the workloads assume."
  value       = module.substratus.principal
}
