# With create_cluster = false, only what Substratus adds to an existing cluster: the bucket,
# the registry, the identities, the storage driver and device plugin (each optional) and the
# operator.
#
# EKS with IRSA, CPU and GPU node groups (NVIDIA AMIs, nvidia.com/gpu taint) scaled by
# cluster-autoscaler (GPU groups from zero), the Mountpoint for S3 CSI add-on, the NVIDIA
# device plugin, the artifacts bucket, an ECR repository, the roles Substratus needs, and the
# operator.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  # The labels Substratus's AWS GPU catalogue selects on (as Karpenter sets them), per group.
  gpu_labels = {
    for name, g in var.gpu_node_groups : name => merge(
      { "karpenter.k8s.aws/instance-gpu-name" = g.gpu_name },
      g.gpu_memory_mib == "" ? {} : { "karpenter.k8s.aws/instance-gpu-memory" = g.gpu_memory_mib },
    )
  }
  # What cluster-autoscaler must know of a GPU group at size 0, which has no node to read it
  # from: its labels, its taint and its GPUs per node, as node-template tags of its Auto
  # Scaling group.
  gpu_node_template_tags = merge([
    for name, g in var.gpu_node_groups : merge(
      {
        for k, v in local.gpu_labels[name] : "${name}/label/${k}" => {
          group = name
          key   = "k8s.io/cluster-autoscaler/node-template/label/${k}"
          value = v
        }
      },
      {
        "${name}/taint" = {
          group = name
          key   = "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"
          value = "true:NoSchedule"
        }
        "${name}/gpus" = {
          group = name
          key   = "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"
          value = tostring(g.gpus_per_node)
        }
      },
    )
  ]...)
  account_id  = data.aws_caller_identity.current.account_id
  bucket_name = "${local.account_id}-${var.cluster_name}-substratus-artifacts"
  # The cluster, made here or found by name.
  cluster_name      = var.create_cluster ? aws_eks_cluster.substratus[0].name : data.aws_eks_cluster.existing[0].name
  cluster_arn       = var.create_cluster ? aws_eks_cluster.substratus[0].arn : data.aws_eks_cluster.existing[0].arn
  cluster_endpoint  = var.create_cluster ? aws_eks_cluster.substratus[0].endpoint : data.aws_eks_cluster.existing[0].endpoint
  cluster_ca        = var.create_cluster ? aws_eks_cluster.substratus[0].certificate_authority[0].data : data.aws_eks_cluster.existing[0].certificate_authority[0].data
  oidc_issuer_url   = var.create_cluster ? aws_eks_cluster.substratus[0].identity[0].oidc[0].issuer : data.aws_eks_cluster.existing[0].identity[0].oidc[0].issuer
  oidc_provider_arn = var.oidc_provider_arn != "" ? var.oidc_provider_arn : aws_iam_openid_connect_provider.eks[0].arn
  oidc_issuer       = replace(local.oidc_issuer_url, "https://", "")
  registry_url      = "${local.account_id}.dkr.ecr.${var.region}.amazonaws.com/${aws_ecr_repository.substratus.name}"
  helm_values = {
    cloud             = "aws"
    clusterName       = var.cluster_name
    artifactBucketURL = "s3://${local.bucket_name}"
    registryURL       = local.registry_url
    principal         = aws_iam_role.workloads.arn
    tenancy           = var.tenancy
    aws = {
      region    = var.region
      accountID = local.account_id
      # Namespace tenancy needs the session tags EKS Pod Identity sets.
      identityMode = var.tenancy == "namespace" ? "pod-identity" : "irsa"
      oidcIssuer   = local.oidc_issuer_url
    }
    image = {
      repository = var.operator_image_repository
      tag        = var.operator_image_tag
    }
    serviceAccount = {
      name = "substratus-operator"
      annotations = {
        "eks.amazonaws.com/role-arn" = aws_iam_role.operator.arn
      }
    }
  }
}

data "aws_iam_policy_document" "eks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster" {
  count              = var.create_cluster ? 1 : 0
  tags               = var.tags
  name               = "${var.cluster_name}-eks-cluster"
  assume_role_policy = data.aws_iam_policy_document.eks_assume.json
}

resource "aws_iam_role_policy_attachment" "cluster" {
  count      = var.create_cluster ? 1 : 0
  role       = aws_iam_role.cluster[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_eks_cluster" "substratus" {
  count    = var.create_cluster ? 1 : 0
  tags     = var.tags
  name     = var.cluster_name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster[0].arn
  vpc_config {
    subnet_ids = var.subnet_ids
  }
  access_config {
    authentication_mode = "API_AND_CONFIG_MAP"
  }
  depends_on = [aws_iam_role_policy_attachment.cluster]
}

# An existing cluster (create_cluster = false), found by name.
data "aws_eks_cluster" "existing" {
  count = var.create_cluster ? 0 : 1
  name  = var.cluster_name
}

data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  count              = var.create_cluster ? 1 : 0
  tags               = var.tags
  name               = "${var.cluster_name}-eks-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = var.create_cluster ? toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
  ]) : toset([])
  role       = aws_iam_role.node[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.value}"
}

resource "aws_eks_node_group" "cpu" {
  count           = var.create_cluster ? 1 : 0
  tags            = var.tags
  cluster_name    = local.cluster_name
  node_group_name = "cpu"
  node_role_arn   = aws_iam_role.node[0].arn
  subnet_ids      = var.subnet_ids
  instance_types  = var.cpu_instance_types
  scaling_config {
    min_size     = 1
    desired_size = 1
    max_size     = 5
  }
  depends_on = [aws_iam_role_policy_attachment.node]
}

resource "aws_eks_node_group" "gpu" {
  tags            = var.tags
  for_each        = var.gpu_node_groups
  cluster_name    = local.cluster_name
  node_group_name = each.key
  node_role_arn   = aws_iam_role.node[0].arn
  subnet_ids      = var.subnet_ids
  instance_types  = each.value.instance_types
  capacity_type   = each.value.capacity_type
  ami_type        = "AL2023_x86_64_NVIDIA"
  scaling_config {
    min_size     = each.value.min_size
    desired_size = each.value.min_size
    max_size     = each.value.max_size
  }
  # The labels Substratus's AWS GPU catalogue selects on (as Karpenter sets them).
  labels = local.gpu_labels[each.key]
  taint {
    key    = "nvidia.com/gpu"
    effect = "NO_SCHEDULE"
  }
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }
  depends_on = [aws_iam_role_policy_attachment.node]
}

resource "aws_autoscaling_group_tag" "gpu_node_template" {
  for_each               = var.create_cluster ? local.gpu_node_template_tags : {}
  autoscaling_group_name = aws_eks_node_group.gpu[each.value.group].resources[0].autoscaling_groups[0].name
  tag {
    key                 = each.value.key
    value               = each.value.value
    propagate_at_launch = false
  }
}

# An existing cluster's OIDC provider (oidc_provider_arn), else one made here.
data "tls_certificate" "oidc" {
  count = var.oidc_provider_arn == "" ? 1 : 0
  url   = local.oidc_issuer_url
}

resource "aws_iam_openid_connect_provider" "eks" {
  count           = var.oidc_provider_arn == "" ? 1 : 0
  url             = local.oidc_issuer_url
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = [data.tls_certificate.oidc[0].certificates[0].sha1_fingerprint]
}

resource "aws_s3_bucket" "artifacts" {
  tags   = var.tags
  bucket = local.bucket_name
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket                  = aws_s3_bucket.artifacts.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_ecr_repository" "substratus" {
  tags                 = var.tags
  name                 = "${var.cluster_name}-substratus"
  image_tag_mutability = "MUTABLE"
}

# The whole bucket: for the operator (upload checksums, signed uploads) and the Mountpoint
# driver (the operator's mounts). Workloads get aws_iam_policy.workloads instead.
data "aws_iam_policy_document" "artifacts" {
  statement {
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.artifacts.arn]
  }
  statement {
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.artifacts.arn}/*"]
  }
}

# What the workloads' role may do. shared: the whole bucket and every repository under the
# Substratus one. namespace: only what the session's kubernetes-namespace tag (set by EKS Pod
# Identity from the pod's namespace) names: the bucket folder namespaces/<ns>/ and the
# repositories under <repository>/<ns>/.
locals {
  own_namespace = "$${aws:PrincipalTag/kubernetes-namespace}"
}

data "aws_iam_policy_document" "workloads" {
  statement {
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.artifacts.arn]
    dynamic "condition" {
      for_each = var.tenancy == "namespace" ? [1] : []
      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["namespaces/${local.own_namespace}/*"]
      }
    }
  }
  statement {
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [var.tenancy == "namespace" ? "${aws_s3_bucket.artifacts.arn}/namespaces/${local.own_namespace}/*" : "${aws_s3_bucket.artifacts.arn}/*"]
  }
  statement {
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    actions = [
      "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage",
    ]
    # Each built object's image has a repository of its own under the Substratus one, which
    # the operator creates before the build.
    resources = var.tenancy == "namespace" ? ["${aws_ecr_repository.substratus.arn}/${local.own_namespace}/*"] : [aws_ecr_repository.substratus.arn, "${aws_ecr_repository.substratus.arn}/*"]
  }
}

resource "aws_iam_policy" "workloads" {
  tags   = var.tags
  name   = "${var.cluster_name}-substratus-workloads"
  policy = data.aws_iam_policy_document.workloads.json
}

resource "aws_iam_policy" "artifacts" {
  tags   = var.tags
  name   = "${var.cluster_name}-substratus-artifacts"
  policy = data.aws_iam_policy_document.artifacts.json
}

# The role workloads assume. Its trust policy is managed by the operator, which adds each
# namespace's role service accounts as subjects (never removing others).
resource "aws_iam_role" "workloads" {
  tags = var.tags
  name = "${var.cluster_name}-substratus-workloads"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = local.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = { StringEquals = { "${local.oidc_issuer}:aud" = "sts.amazonaws.com" } }
      }, {
      # EKS Pod Identity (tenancy = "namespace"): only pods with an association the operator
      # made assume it, and their sessions carry the namespace as a tag.
      Effect    = "Allow"
      Principal = { Service = "pods.eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
  lifecycle {
    ignore_changes = [assume_role_policy]
  }
}

resource "aws_iam_role_policy_attachment" "workloads" {
  role       = aws_iam_role.workloads.name
  policy_arn = aws_iam_policy.workloads.arn
}

# The operator's own role (IRSA): S3 for uploads and md5 checks, and editing the workload
# role's trust policy.
data "aws_iam_policy_document" "operator_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.operator_namespace}:substratus-operator"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "operator" {
  tags               = var.tags
  name               = "${var.cluster_name}-substratus-operator"
  assume_role_policy = data.aws_iam_policy_document.operator_trust.json
}

data "aws_iam_policy_document" "operator" {
  statement {
    actions   = ["iam:GetRole", "iam:UpdateAssumeRolePolicy"]
    resources = [aws_iam_role.workloads.arn]
  }
  statement {
    actions   = ["eks:DescribeCluster"]
    resources = [local.cluster_arn]
  }
  # ECR takes pushes only into repositories that exist: the operator creates each build's
  # repository (tagged, hence TagResource) under the Substratus repository, nowhere else.
  statement {
    actions   = ["ecr:CreateRepository", "ecr:TagResource"]
    resources = ["${aws_ecr_repository.substratus.arn}/*"]
  }
}

resource "aws_iam_role_policy" "operator" {
  role   = aws_iam_role.operator.name
  policy = data.aws_iam_policy_document.operator.json
}

# tenancy = "namespace": the operator makes one EKS Pod Identity association per role
# account, each naming the workloads' role (hence PassRole on that role only).
data "aws_iam_policy_document" "operator_pod_identity" {
  statement {
    actions   = ["eks:ListPodIdentityAssociations", "eks:CreatePodIdentityAssociation"]
    resources = [local.cluster_arn]
  }
  statement {
    actions   = ["eks:DescribePodIdentityAssociation"]
    resources = ["arn:${data.aws_partition.current.partition}:eks:${var.region}:${local.account_id}:podidentityassociation/${local.cluster_name}/*"]
  }
  statement {
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.workloads.arn]
  }
}

resource "aws_iam_role_policy" "operator_pod_identity" {
  count  = var.tenancy == "namespace" ? 1 : 0
  role   = aws_iam_role.operator.name
  policy = data.aws_iam_policy_document.operator_pod_identity.json
}

resource "aws_eks_addon" "pod_identity_agent" {
  count        = var.tenancy == "namespace" && var.create_cluster ? 1 : 0
  cluster_name = local.cluster_name
  addon_name   = "eks-pod-identity-agent"
  depends_on   = [aws_eks_node_group.cpu]
}

resource "aws_iam_role_policy_attachment" "operator_artifacts" {
  role       = aws_iam_role.operator.name
  policy_arn = aws_iam_policy.artifacts.arn
}

# Mountpoint for S3 CSI driver, with its own IRSA role limited to the bucket.
data "aws_iam_policy_document" "mountpoint_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:kube-system:s3-csi-driver-sa"]
    }
  }
}

resource "aws_iam_role" "mountpoint" {
  tags               = var.tags
  name               = "${var.cluster_name}-mountpoint-s3"
  assume_role_policy = data.aws_iam_policy_document.mountpoint_trust.json
}

resource "aws_iam_role_policy_attachment" "mountpoint" {
  role       = aws_iam_role.mountpoint.name
  policy_arn = aws_iam_policy.artifacts.arn
}

resource "aws_eks_addon" "mountpoint_s3" {
  count                    = var.install_mountpoint_s3_driver ? 1 : 0
  cluster_name             = local.cluster_name
  addon_name               = "aws-mountpoint-s3-csi-driver"
  service_account_role_arn = aws_iam_role.mountpoint.arn
  depends_on               = [aws_eks_node_group.cpu]
}

resource "helm_release" "nvidia_device_plugin" {
  count      = var.install_nvidia_device_plugin ? 1 : 0
  name       = "nvidia-device-plugin"
  namespace  = "kube-system"
  repository = "https://nvidia.github.io/k8s-device-plugin"
  chart      = "nvidia-device-plugin"
  values = [yamlencode({
    tolerations = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
  })]
  depends_on = [aws_eks_node_group.cpu]
}

# cluster-autoscaler: adds a node to the group a pending pod fits (GPU groups from zero, by
# their node-template tags) and removes idle ones. Its IRSA role may scale only this
# cluster's groups (tag-scoped).
data "aws_iam_policy_document" "autoscaler_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:kube-system:cluster-autoscaler"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "autoscaler" {
  count              = var.create_cluster ? 1 : 0
  tags               = var.tags
  name               = "${var.cluster_name}-cluster-autoscaler"
  assume_role_policy = data.aws_iam_policy_document.autoscaler_trust.json
}

data "aws_iam_policy_document" "autoscaler" {
  statement {
    actions = [
      "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
      "eks:DescribeNodegroup",
    ]
    resources = ["*"]
  }
  statement {
    actions   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/eks:cluster-name"
      values   = [local.cluster_name]
    }
  }
}

resource "aws_iam_role_policy" "autoscaler" {
  count  = var.create_cluster ? 1 : 0
  role   = aws_iam_role.autoscaler[0].name
  policy = data.aws_iam_policy_document.autoscaler.json
}

resource "helm_release" "cluster_autoscaler" {
  count      = var.create_cluster ? 1 : 0
  name       = "cluster-autoscaler"
  namespace  = "kube-system"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = var.cluster_autoscaler_chart_version
  values = [yamlencode({
    cloudProvider = "aws"
    awsRegion     = var.region
    autoDiscovery = { clusterName = local.cluster_name }
    rbac = {
      serviceAccount = {
        name        = "cluster-autoscaler"
        annotations = { "eks.amazonaws.com/role-arn" = aws_iam_role.autoscaler[0].arn }
      }
    }
    extraArgs = {
      "balance-similar-node-groups"   = true
      "skip-nodes-with-local-storage" = false
      "expander"                      = "least-waste"
    }
  })]
  depends_on = [aws_eks_node_group.cpu, aws_iam_role_policy.autoscaler]
}

resource "helm_release" "substratus" {
  name             = "substratus"
  namespace        = var.operator_namespace
  create_namespace = true
  chart            = var.chart_path
  values           = [yamlencode(local.helm_values)]
  depends_on       = [aws_eks_node_group.cpu, aws_eks_addon.mountpoint_s3]
}
