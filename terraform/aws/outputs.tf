output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = local.cluster_name
}

output "cluster_endpoint" {
  description = "Endpoint of the cluster's API server."
  value       = local.cluster_endpoint
}

output "cluster_ca_certificate" {
  description = "Base64 CA certificate of the cluster's API server."
  value       = local.cluster_ca
}

output "update_kubeconfig" {
  description = "Command that points kubectl at the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${local.cluster_name}"
}

output "artifact_bucket_url" {
  description = "Bucket that holds artifacts and uploads."
  value       = "s3://${aws_s3_bucket.artifacts.bucket}"
}

output "registry_url" {
  description = "Registry built images are pushed to."
  value       = local.registry_url
}

output "principal" {
  description = "Role the workloads assume (its trust policy is managed by the operator)."
  value       = aws_iam_role.workloads.arn
}

output "oidc_provider_arn" {
  description = "The cluster's IAM OIDC provider."
  value       = local.oidc_provider_arn
}
