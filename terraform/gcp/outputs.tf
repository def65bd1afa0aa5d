output "cluster_name" {
  description = "Name of the GKE cluster."
  value       = local.cluster_name
}

output "cluster_endpoint" {
  description = "Endpoint of the cluster's API server."
  value       = local.cluster_endpoint
  sensitive   = true
}

output "get_credentials" {
  description = "Command that points kubectl at the cluster."
  value       = "gcloud container clusters get-credentials ${local.cluster_name} --region ${var.region} --project ${var.project_id}"
}

output "artifact_bucket_url" {
  description = "Bucket that holds artifacts and uploads."
  value       = "gs://${google_storage_bucket.artifacts.name}"
}

output "registry_url" {
  description = "Registry built images are pushed to."
  value       = local.registry_url
}

output "principal" {
  description = "Google service account the workloads act as (no IAM role)."
  value       = google_service_account.substratus.email
}

output "operator_service_account" {
  description = "Google service account the operator acts as."
  value       = google_service_account.operator.email
}

output "cluster_ca_certificate" {
  description = "Base64 CA certificate of the cluster's API server."
  value       = local.cluster_ca
  sensitive   = true
}
