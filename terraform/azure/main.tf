# AKS with OIDC issuer, workload identity and the Blob CSI driver, GPU pools tainted
# sku=gpu:NoSchedule, the NVIDIA device plugin, a storage account with the artifacts
# container, an Azure Container Registry, the managed identities Substratus needs, and the
# operator.
#
# tenancy = "namespace" (the default): the operator makes a managed identity per namespace in
# a resource group of its own, federates it with that namespace's role accounts, and grants it,
# under ABAC conditions, only the namespace's folder of the artifacts container and its
# repositories of the registry (which runs in ABAC repository-permissions mode). The operator
# may create identities only in that group and may assign only those two roles, to service
# principals (constrained delegation).
#
# tenancy = "shared": one workload identity for every namespace. Federated identity
# credentials: Azure allows 20 per managed identity. The operator adds one per (namespace, role
# service account) it runs workloads in, so one workload identity serves at most 20 such pairs
# (four namespaces with all five roles). Beyond that, the object shows a condition naming the
# limit.

locals {
  resource_group    = var.create_cluster ? azurerm_resource_group.substratus[0].name : data.azurerm_resource_group.existing[0].name
  location          = var.create_cluster ? azurerm_resource_group.substratus[0].location : data.azurerm_resource_group.existing[0].location
  oidc_issuer_url   = var.create_cluster ? azurerm_kubernetes_cluster.substratus[0].oidc_issuer_url : data.azurerm_kubernetes_cluster.existing[0].oidc_issuer_url
  kubelet_object_id = var.create_cluster ? azurerm_kubernetes_cluster.substratus[0].kubelet_identity[0].object_id : data.azurerm_kubernetes_cluster.existing[0].kubelet_identity[0].object_id
  cluster_name      = var.create_cluster ? azurerm_kubernetes_cluster.substratus[0].name : data.azurerm_kubernetes_cluster.existing[0].name
  kube_host         = var.create_cluster ? azurerm_kubernetes_cluster.substratus[0].kube_config[0].host : data.azurerm_kubernetes_cluster.existing[0].kube_config[0].host
  kube_client_cert  = var.create_cluster ? azurerm_kubernetes_cluster.substratus[0].kube_config[0].client_certificate : data.azurerm_kubernetes_cluster.existing[0].kube_config[0].client_certificate
  kube_client_key   = var.create_cluster ? azurerm_kubernetes_cluster.substratus[0].kube_config[0].client_key : data.azurerm_kubernetes_cluster.existing[0].kube_config[0].client_key
  kube_cluster_ca   = var.create_cluster ? azurerm_kubernetes_cluster.substratus[0].kube_config[0].cluster_ca_certificate : data.azurerm_kubernetes_cluster.existing[0].kube_config[0].cluster_ca_certificate
  kube_config_raw   = var.create_cluster ? azurerm_kubernetes_cluster.substratus[0].kube_config_raw : data.azurerm_kubernetes_cluster.existing[0].kube_config_raw
}

locals {
  namespaced = var.tenancy == "namespace"
  # Built-in roles the operator assigns to namespaces' identities, and may assign nothing else.
  blob_data_contributor = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
  repository_writer     = "2a1e307c-b015-4ebd-883e-5b7698a07328"
}

locals {
  gpu_pools = merge(var.gpu_pools, var.enable_h100 ? { "nvidia-h100" = { vm_size = "Standard_NC40ads_H100_v5", min_count = 0, max_count = 2 } } : {})
  helm_values = {
    cloud             = "azure"
    clusterName       = var.cluster_name
    artifactBucketURL = "az://${azurerm_storage_container.artifacts.name}"
    registryURL       = "${azurerm_container_registry.substratus.login_server}/substratus"
    principal         = local.namespaced ? "" : azurerm_user_assigned_identity.workloads[0].client_id
    tenancy           = var.tenancy
    azure = {
      storageAccount = azurerm_storage_account.artifacts.name
      # With namespace tenancy, the base of each namespace's identity name.
      identityName          = local.namespaced ? "${var.cluster_name}-substratus" : azurerm_user_assigned_identity.workloads[0].name
      oidcIssuer            = local.oidc_issuer_url
      subscriptionID        = data.azurerm_client_config.current.subscription_id
      resourceGroup         = local.resource_group
      blobVolumes           = local.namespaced ? "inline" : "claims"
      location              = local.namespaced ? local.location : ""
      identityResourceGroup = local.namespaced ? azurerm_resource_group.tenants[0].name : ""
    }
    image = {
      repository = var.operator_image_repository
      tag        = var.operator_image_tag
    }
    serviceAccount = {
      name = "substratus-operator"
      annotations = {
        "azure.workload.identity/client-id" = azurerm_user_assigned_identity.operator.client_id
      }
    }
    podLabels = {
      "azure.workload.identity/use" = "true"
    }
  }
}

data "azurerm_client_config" "current" {}

# An existing cluster and its resource group (create_cluster = false), found by name.
data "azurerm_resource_group" "existing" {
  count = var.create_cluster ? 0 : 1
  name  = var.resource_group_name
}

data "azurerm_kubernetes_cluster" "existing" {
  count               = var.create_cluster ? 0 : 1
  name                = var.cluster_name
  resource_group_name = var.resource_group_name
}

resource "azurerm_resource_group" "substratus" {
  count    = var.create_cluster ? 1 : 0
  tags     = var.tags
  name     = var.resource_group_name
  location = var.location
}

resource "azurerm_kubernetes_cluster" "substratus" {
  count                     = var.create_cluster ? 1 : 0
  tags                      = var.tags
  name                      = var.cluster_name
  location                  = local.location
  resource_group_name       = local.resource_group
  dns_prefix                = var.cluster_name
  oidc_issuer_enabled       = true
  workload_identity_enabled = true

  default_node_pool {
    name                 = "cpu"
    vm_size              = var.cpu_vm_size
    auto_scaling_enabled = true
    min_count            = 1
    max_count            = 5
  }
  identity {
    type = "SystemAssigned"
  }
  storage_profile {
    blob_driver_enabled = true
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "gpu" {
  tags                  = var.tags
  for_each              = var.create_cluster ? local.gpu_pools : {}
  name                  = replace(replace(each.key, "nvidia-", ""), "-", "")
  kubernetes_cluster_id = azurerm_kubernetes_cluster.substratus[0].id
  vm_size               = each.value.vm_size
  auto_scaling_enabled  = true
  min_count             = each.value.min_count
  max_count             = each.value.max_count
  node_taints           = ["sku=gpu:NoSchedule"]
  node_labels = {
    "kubernetes.azure.com/accelerator" = "nvidia"
  }
}

resource "azurerm_storage_account" "artifacts" {
  tags                            = var.tags
  name                            = "substratus${var.name_suffix}"
  resource_group_name             = local.resource_group
  location                        = local.location
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = false
}

resource "azurerm_storage_container" "artifacts" {
  name                  = "artifacts"
  storage_account_id    = azurerm_storage_account.artifacts.id
  container_access_type = "private"
}

resource "azurerm_container_registry" "substratus" {
  tags                = var.tags
  name                = "substratus${var.name_suffix}"
  resource_group_name = local.resource_group
  location            = local.location
  sku                 = "Standard"
  # ABAC mode evaluates the repository conditions of the namespaces' role assignments; in it
  # AcrPull and AcrPush are not honoured (the kubelet gets Repository Reader below).
  role_assignment_mode = local.namespaced ? "AbacRepositoryPermissions" : "LegacyRegistryPermissions"
}

# tenancy = "namespace": the namespaces' identities, made by the operator, live here.
resource "azurerm_resource_group" "tenants" {
  count    = local.namespaced ? 1 : 0
  tags     = var.tags
  name     = "${var.cluster_name}-substratus-namespaces"
  location = local.location
}

# tenancy = "shared": the identity workloads of every namespace run as; the operator adds its
# federated credentials.
resource "azurerm_user_assigned_identity" "workloads" {
  count               = local.namespaced ? 0 : 1
  tags                = var.tags
  name                = "${var.cluster_name}-substratus-workloads"
  resource_group_name = local.resource_group
  location            = local.location
}

# The operator's own identity: blob access for uploads (user-delegation SAS) and md5 checks,
# and the right to add federated credentials to the workload identity.
resource "azurerm_user_assigned_identity" "operator" {
  tags                = var.tags
  name                = "${var.cluster_name}-substratus-operator"
  resource_group_name = local.resource_group
  location            = local.location
}

resource "azurerm_federated_identity_credential" "operator" {
  name                = "substratus-operator"
  resource_group_name = local.resource_group
  parent_id           = azurerm_user_assigned_identity.operator.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = local.oidc_issuer_url
  subject             = "system:serviceaccount:${var.operator_namespace}:substratus-operator"
}

resource "azurerm_role_assignment" "blob_workloads" {
  count                = local.namespaced ? 0 : 1
  scope                = azurerm_storage_account.artifacts.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.workloads[0].principal_id
}

resource "azurerm_role_assignment" "blob_operator" {
  scope                = azurerm_storage_account.artifacts.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.operator.principal_id
}

# User-delegation SAS for signed uploads.
resource "azurerm_role_assignment" "delegator" {
  scope                = azurerm_storage_account.artifacts.id
  role_definition_name = "Storage Blob Delegator"
  principal_id         = azurerm_user_assigned_identity.operator.principal_id
}

resource "azurerm_role_assignment" "federated_credentials" {
  scope                = local.namespaced ? azurerm_resource_group.tenants[0].id : azurerm_user_assigned_identity.workloads[0].id
  role_definition_name = "Managed Identity Contributor"
  principal_id         = azurerm_user_assigned_identity.operator.principal_id
}

# tenancy = "namespace": the operator may assign Storage Blob Data Contributor on the storage
# account and Container Registry Repository Writer on the registry, to service principals
# (the namespaces' identities), and nothing else (constrained delegation).
resource "azurerm_role_assignment" "delegate_blob" {
  count                = local.namespaced ? 1 : 0
  scope                = azurerm_storage_account.artifacts.id
  role_definition_name = "Role Based Access Control Administrator"
  principal_id         = azurerm_user_assigned_identity.operator.principal_id
  condition_version    = "2.0"
  condition            = <<-EOT
    (
     (
      !(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})
     )
     OR
     (
      @Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${local.blob_data_contributor}}
      AND
      @Request[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'ServicePrincipal'}
     )
    )
    AND
    (
     (
      !(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})
     )
     OR
     (
      @Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${local.blob_data_contributor}}
     )
    )
  EOT
}

resource "azurerm_role_assignment" "delegate_registry" {
  count                = local.namespaced ? 1 : 0
  scope                = azurerm_container_registry.substratus.id
  role_definition_name = "Role Based Access Control Administrator"
  principal_id         = azurerm_user_assigned_identity.operator.principal_id
  condition_version    = "2.0"
  condition            = <<-EOT
    (
     (
      !(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})
     )
     OR
     (
      @Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${local.repository_writer}}
      AND
      @Request[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'ServicePrincipal'}
     )
    )
    AND
    (
     (
      !(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})
     )
     OR
     (
      @Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${local.repository_writer}}
     )
    )
  EOT
}

resource "azurerm_role_assignment" "acr_push" {
  count                = local.namespaced ? 0 : 1
  scope                = azurerm_container_registry.substratus.id
  role_definition_name = "AcrPush"
  principal_id         = azurerm_user_assigned_identity.workloads[0].principal_id
}

# Nodes pull every namespace's images (AcrPull is not honoured in ABAC mode).
resource "azurerm_role_assignment" "acr_pull" {
  scope                = azurerm_container_registry.substratus.id
  role_definition_name = local.namespaced ? "Container Registry Repository Reader" : "AcrPull"
  principal_id         = local.kubelet_object_id
}

resource "helm_release" "nvidia_device_plugin" {
  count      = var.install_nvidia_device_plugin ? 1 : 0
  name       = "nvidia-device-plugin"
  namespace  = "kube-system"
  repository = "https://nvidia.github.io/k8s-device-plugin"
  chart      = "nvidia-device-plugin"
  values = [yamlencode({
    tolerations = [
      { key = "sku", operator = "Equal", value = "gpu", effect = "NoSchedule" },
      { key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" },
    ]
  })]
}

resource "helm_release" "substratus" {
  name             = "substratus"
  namespace        = var.operator_namespace
  create_namespace = true
  chart            = var.chart_path
  values           = [yamlencode(local.helm_values)]
  depends_on       = [azurerm_federated_identity_credential.operator]
}
