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
  gpu_pools = merge(var.gpu_pools, var.enable_h100 ? { "nvidia-h100" = { vm_size = "Standard_NC40ads_H100_v5", min_count = 0, max_count = 2 } } : {})
  helm_values = {
    cloud             = "azure"
    clusterName       = var.cluster_name
    artifactBucketURL = "az://${azurerm_storage_container.artifacts.name}"
    registryURL       = "${azurerm_container_registry.substratus.login_server}/substratus"
    principal         = azurerm_user_assigned_identity.workloads.client_id
    azure = {
      storageAccount = azurerm_storage_account.artifacts.name
      identityName   = azurerm_user_assigned_identity.workloads.name
      oidcIssuer     = azurerm_kubernetes_cluster.substratus.oidc_issuer_url
      subscriptionID = data.azurerm_client_config.current.subscription_id
      resourceGroup  = azurerm_resource_group.substratus.name
    }
    image = {
      repository = "docker.io/substratusai/substratus-operator"
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

resource "azurerm_resource_group" "substratus" {
  name     = var.resource_group_name
  location = var.location
}

resource "azurerm_kubernetes_cluster" "substratus" {
  name                      = var.cluster_name
  location                  = azurerm_resource_group.substratus.location
  resource_group_name       = azurerm_resource_group.substratus.name
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
  for_each              = local.gpu_pools
  name                  = replace(replace(each.key, "nvidia-", ""), "-", "")
  kubernetes_cluster_id = azurerm_kubernetes_cluster.substratus.id
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
  name                            = "substratus${var.name_suffix}"
  resource_group_name             = azurerm_resource_group.substratus.name
  location                        = azurerm_resource_group.substratus.location
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
  name                = "substratus${var.name_suffix}"
  resource_group_name = azurerm_resource_group.substratus.name
  location            = azurerm_resource_group.substratus.location
  sku                 = "Standard"
}

# The identity workloads run as; the operator adds its federated credentials.
resource "azurerm_user_assigned_identity" "workloads" {
  name                = "${var.cluster_name}-substratus-workloads"
  resource_group_name = azurerm_resource_group.substratus.name
  location            = azurerm_resource_group.substratus.location
}

# The operator's own identity: blob access for uploads (user-delegation SAS) and md5 checks,
# and the right to add federated credentials to the workload identity.
resource "azurerm_user_assigned_identity" "operator" {
  name                = "${var.cluster_name}-substratus-operator"
  resource_group_name = azurerm_resource_group.substratus.name
  location            = azurerm_resource_group.substratus.location
}

resource "azurerm_federated_identity_credential" "operator" {
  name                = "substratus-operator"
  resource_group_name = azurerm_resource_group.substratus.name
  parent_id           = azurerm_user_assigned_identity.operator.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.substratus.oidc_issuer_url
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
  principal_id         = azurerm_kubernetes_cluster.substratus.kubelet_identity[0].object_id
}

resource "helm_release" "nvidia_device_plugin" {
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
