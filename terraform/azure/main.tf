# AKS with OIDC issuer, workload identity and the Blob CSI driver, GPU pools tainted
# sku=gpu:NoSchedule, the NVIDIA device plugin, a storage account with the artifacts
# container, an Azure Container Registry, the managed identities Substratus needs, and the
# operator.
#
# Federated identity credentials: Azure allows 20 per managed identity. The operator adds one
# per (namespace, role service account) it runs workloads in, so one workload identity serves
# at most 20 such pairs (four namespaces with all five roles). Beyond that, the object shows a
# condition naming the limit; add identities per namespace group.

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
  gpu_pools = merge(var.gpu_pools, var.enable_h100 ? { "nvidia-h100" = { vm_size = "Standard_NC40ads_H100_v5", min_count = 0, max_count = 2 } } : {})
  helm_values = {
    cloud             = "azure"
    clusterName       = var.cluster_name
    artifactBucketURL = "az://${azurerm_storage_container.artifacts.name}"
    registryURL       = "${azurerm_container_registry.substratus.login_server}/substratus"
    principal         = azurerm_user_assigned_identity.workloads.client_id
    tenancy           = "shared"
    azure = {
      storageAccount = azurerm_storage_account.artifacts.name
      identityName   = azurerm_user_assigned_identity.workloads.name
      oidcIssuer     = local.oidc_issuer_url
      subscriptionID = data.azurerm_client_config.current.subscription_id
      resourceGroup  = local.resource_group
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
}

# The identity workloads run as; the operator adds its federated credentials.
resource "azurerm_user_assigned_identity" "workloads" {
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
  scope                = azurerm_storage_account.artifacts.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.workloads.principal_id
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
  scope                = azurerm_user_assigned_identity.workloads.id
  role_definition_name = "Managed Identity Contributor"
  principal_id         = azurerm_user_assigned_identity.operator.principal_id
}

resource "azurerm_role_assignment" "acr_push" {
  scope                = azurerm_container_registry.substratus.id
  role_definition_name = "AcrPush"
  principal_id         = azurerm_user_assigned_identity.workloads.principal_id
}

resource "azurerm_role_assignment" "acr_pull" {
  scope                = azurerm_container_registry.substratus.id
  role_definition_name = "AcrPull"
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
