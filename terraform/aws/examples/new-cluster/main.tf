# Example root: EKS with L4, A100 and T4 node groups and Substratus installed.
#   cd terraform/aws/examples/new-cluster && terraform init && terraform apply -var 'subnet_ids=["subnet-a","subnet-b"]'

variable "subnet_ids" {
  description = "Private subnets in two or more availability zones."
  type        = list(string)
}

provider "aws" {
  region = "us-west-2"
}

data "aws_eks_cluster_auth" "substratus" {
  name = module.substratus.cluster_name
}

provider "helm" {
  kubernetes = {
    host                   = module.substratus.cluster_endpoint
    cluster_ca_certificate = base64decode(module.substratus.cluster_ca_certificate)
    token                  = data.aws_eks_cluster_auth.substratus.token
  }
}

module "substratus" {
  source     = "../../"
  subnet_ids = var.subnet_ids
  chart_path = "../../../../deploy/helm/substratus"
}

output "update_kubeconfig" {
  description = "Command that points kubectl at the cluster."
  value       = module.substratus.update_kubeconfig
}
