# GKE with Workload Identity and the GCS FUSE CSI driver, GPU node pools, the artifacts
# bucket, an Artifact Registry repository, the identities Substratus needs, and the operator.
# With create_cluster = false, only what Substratus adds to an existing cluster (which must
# have Workload Identity and the GCS FUSE CSI driver): the bucket, the registry, the
# identities and the operator.

# An existing cluster (create_cluster = false), found by name.
data "google_container_cluster" "existing" {
  count    = var.create_cluster ? 0 : 1
  project  = var.project_id
  name     = var.cluster_name
  location = var.region
}

locals {
  cluster_name     = var.create_cluster ? google_container_cluster.substratus[0].name : data.google_container_cluster.existing[0].name
  cluster_endpoint = var.create_cluster ? google_container_cluster.substratus[0].endpoint : data.google_container_cluster.existing[0].endpoint
  cluster_ca       = var.create_cluster ? google_container_cluster.substratus[0].master_auth[0].cluster_ca_certificate : data.google_container_cluster.existing[0].master_auth[0].cluster_ca_certificate
  bucket_name      = "${var.project_id}-substratus-artifacts"
  registry_url     = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.substratus.repository_id}"
  principal        = google_service_account.substratus.email
  helm_values = {
    cloud             = "gcp"
    clusterName       = var.cluster_name
    artifactBucketURL = "gs://${local.bucket_name}"
    registryURL       = local.registry_url
    principal         = local.principal
    tenancy           = var.tenancy
    gcp = {
      projectID       = var.project_id
      clusterLocation = var.region
    }
    image = {
      repository = var.operator_image_repository
      tag        = var.operator_image_tag
    }
    serviceAccount = {
      name = "substratus-operator"
      annotations = {
        "iam.gke.io/gcp-service-account" = google_service_account.operator.email
      }
    }
  }
}

resource "google_container_cluster" "substratus" {
  count           = var.create_cluster ? 1 : 0
  resource_labels = var.labels
  project         = var.project_id
  name            = var.cluster_name
  location        = var.region
  node_locations  = var.zones

  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = false

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }
  addons_config {
    gcs_fuse_csi_driver_config {
      enabled = true
    }
  }
  release_channel {
    channel = "REGULAR"
  }
}

resource "google_container_node_pool" "cpu" {
  count    = var.create_cluster ? 1 : 0
  project  = var.project_id
  name     = "cpu"
  cluster  = google_container_cluster.substratus[0].id
  location = var.region

  autoscaling {
    min_node_count = var.cpu_nodes.min
    max_node_count = var.cpu_nodes.max
  }
  node_config {
    resource_labels = var.labels
    machine_type    = var.cpu_machine_type
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "gpu" {
  for_each = var.create_cluster ? var.gpu_pools : {}
  project  = var.project_id
  name     = each.key
  cluster  = google_container_cluster.substratus[0].id
  location = var.region

  autoscaling {
    min_node_count = each.value.min_nodes
    max_node_count = each.value.max_nodes
  }
  node_config {
    resource_labels = var.labels
    machine_type    = each.value.machine_type
    spot            = each.value.spot
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    guest_accelerator {
      type  = each.value.accelerator_type
      count = each.value.accelerator_count
      # GKE installs the driver; its device plugin exposes nvidia.com/gpu.
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_storage_bucket" "artifacts" {
  labels                      = var.labels
  project                     = var.project_id
  name                        = local.bucket_name
  location                    = var.region
  uniform_bucket_level_access = true
  force_destroy               = false
}

resource "google_artifact_registry_repository" "substratus" {
  labels        = var.labels
  project       = var.project_id
  location      = var.region
  repository_id = "substratus"
  format        = "DOCKER"
}

# Two Google service accounts. The workloads' (`substratus`, the PRINCIPAL): every role KSA
# of every namespace acts as it, so it holds the bucket and the registry and no IAM role at
# all — a container can neither rewrite an IAM policy nor mint another account's tokens.
# The operator's (`substratus-operator`): only the operator pod acts as it; it manages the
# Workload Identity bindings on the workloads' account, signs upload URLs as it, and reads
# upload checksums. hack/terraform_check.py fails if the workloads' account gains an iam.* role.
resource "google_service_account" "substratus" {
  project      = var.project_id
  account_id   = "substratus"
  display_name = "Substratus workloads"
}

resource "google_service_account" "operator" {
  project      = var.project_id
  account_id   = "substratus-operator"
  display_name = "Substratus operator"
}

resource "google_storage_bucket_iam_member" "artifacts" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.substratus.email}"
}

# With tenancy = "namespace" the workloads do not act as this account (each namespace's pods
# act as themselves, and each namespace pushes to a repository of its own), so it keeps only
# the bucket, for the upload URLs the operator signs as it.
resource "google_artifact_registry_repository_iam_member" "push" {
  count      = var.tenancy == "shared" ? 1 : 0
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.substratus.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.substratus.email}"
}

# The operator reads an upload's md5 (object metadata, or the bytes of a composite object).
resource "google_storage_bucket_iam_member" "operator_reads_uploads" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.operator.email}"
}

# Signed upload URLs without a key file: the operator calls signBlob as the workloads' account
# (the URL then writes as it), through the IAM Credentials API.
resource "google_service_account_iam_member" "operator_signs_uploads" {
  service_account_id = google_service_account.substratus.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.operator.email}"
}

# The operator adds roles/iam.workloadIdentityUser bindings on the workloads' account for the
# role KSAs of each namespace (get/set IAM policy on that account, nothing wider).
resource "google_service_account_iam_member" "operator_manages_bindings" {
  count              = var.tenancy == "shared" ? 1 : 0
  service_account_id = google_service_account.substratus.name
  role               = "roles/iam.serviceAccountAdmin"
  member             = "serviceAccount:${google_service_account.operator.email}"
}

# tenancy = "namespace": the operator grants each namespace's principal set its folder of the
# bucket (a conditional binding in the bucket's IAM policy) and creates the namespace's
# Artifact Registry repository with a writer binding. It needs the bucket's IAM policy and
# repository administration; no role here reaches beyond the bucket and Artifact Registry.
resource "google_storage_bucket_iam_member" "operator_grants_folders" {
  count  = var.tenancy == "namespace" ? 1 : 0
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.admin"
  member = "serviceAccount:${google_service_account.operator.email}"
}

resource "google_project_iam_member" "operator_creates_repositories" {
  count   = var.tenancy == "namespace" ? 1 : 0
  project = var.project_id
  role    = "roles/artifactregistry.admin"
  member  = "serviceAccount:${google_service_account.operator.email}"
}

resource "google_service_account_iam_member" "operator_workload_identity" {
  service_account_id = google_service_account.operator.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.operator_namespace}/substratus-operator]"
  # The workload pool exists once the cluster does.
  depends_on = [google_container_cluster.substratus, data.google_container_cluster.existing]
}

resource "helm_release" "substratus" {
  name             = "substratus"
  namespace        = var.operator_namespace
  create_namespace = true
  chart            = var.chart_path
  values           = [yamlencode(local.helm_values)]
  depends_on = [
    google_container_node_pool.cpu,
    google_service_account_iam_member.operator_workload_identity,
  ]
}
