output "cluster_name" {
  description = "Name of the AKS cluster."
  value       = local.cluster_name
}

output "kube_config" {
  description = "Raw kubeconfig of the cluster."
  value       = local.kube_config_raw
  sensitive   = true
}

output "get_credentials" {
  description = "Command that points kubectl at the cluster."
  value       = "az aks get-credentials --resource-group ${local.resource_group} --name ${local.cluster_name}"
}

output "oidc_issuer_url" {
  description = "The cluster's OIDC issuer, used by federated identity credentials."
  value       = local.oidc_issuer_url
}

output "artifact_bucket_url" {
  description = "Container that holds artifacts and uploads (account in storage_account)."
  value       = "az://${azurerm_storage_container.artifacts.name}"
}

output "storage_account" {
  description = "Storage account of the artifacts container."
  value       = azurerm_storage_account.artifacts.name
}

output "registry_url" {
  description = "Registry built images are pushed to."
  value       = "${azurerm_container_registry.substratus.login_server}/substratus"
}

output "principal" {
  description = "Client id of the managed identity workloads run as (tenancy = shared; empty with namespace tenancy, where each namespace gets its own)."
  value       = local.namespaced ? "" : azurerm_user_assigned_identity.workloads[0].client_id
}

output "namespace_identities_resource_group" {
  description = "Resource group of the managed identities the operator makes per namespace (tenancy = namespace)."
  value       = local.namespaced ? azurerm_resource_group.tenants[0].name : ""
}

output "kube_host" {
  description = "API server URL."
  value       = local.kube_host
  sensitive   = true
}

output "kube_client_certificate" {
  description = "Base64 client certificate for the API server."
  value       = local.kube_client_cert
  sensitive   = true
}

output "kube_client_key" {
  description = "Base64 client key for the API server."
  value       = local.kube_client_key
  sensitive   = true
}

output "kube_cluster_ca_certificate" {
  description = "Base64 CA certificate of the API server."
  value       = local.kube_cluster_ca
  sensitive   = true
}
