# EKS with IRSA, CPU and GPU node groups (NVIDIA AMIs, nvidia.com/gpu taint), the Mountpoint
# for S3 CSI add-on, the NVIDIA device plugin, the artifacts bucket, an ECR repository, the
# roles Substratus needs, and the operator.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id   = data.aws_caller_identity.current.account_id
  bucket_name  = "${local.account_id}-${var.cluster_name}-substratus-artifacts"
  oidc_issuer  = replace(aws_eks_cluster.substratus.identity[0].oidc[0].issuer, "https://", "")
  registry_url = "${local.account_id}.dkr.ecr.${var.region}.amazonaws.com/${aws_ecr_repository.substratus.name}"
  helm_values = {
    cloud             = "aws"
    clusterName       = var.cluster_name
    artifactBucketURL = "s3://${local.bucket_name}"
    registryURL       = local.registry_url
    principal         = aws_iam_role.workloads.arn
    aws = {
      region       = var.region
      accountID    = local.account_id
      identityMode = "irsa"
      oidcIssuer   = aws_eks_cluster.substratus.identity[0].oidc[0].issuer
    }
    image = {
      repository = "docker.io/substratusai/substratus-operator"
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
  name               = "${var.cluster_name}-eks-cluster"
  assume_role_policy = data.aws_iam_policy_document.eks_assume.json
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_eks_cluster" "substratus" {
  name     = var.cluster_name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn
  vpc_config {
    subnet_ids = var.subnet_ids
  }
  access_config {
    authentication_mode = "API_AND_CONFIG_MAP"
  }
  depends_on = [aws_iam_role_policy_attachment.cluster]
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
  name               = "${var.cluster_name}-eks-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
  ])
  role       = aws_iam_role.node.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.value}"
}

resource "aws_eks_node_group" "cpu" {
  cluster_name    = aws_eks_cluster.substratus.name
  node_group_name = "cpu"
  node_role_arn   = aws_iam_role.node.arn
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
  for_each        = var.gpu_node_groups
  cluster_name    = aws_eks_cluster.substratus.name
  node_group_name = each.key
  node_role_arn   = aws_iam_role.node.arn
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
  labels = merge(
    { "karpenter.k8s.aws/instance-gpu-name" = each.value.gpu_name },
    each.value.gpu_memory_mib == "" ? {} : { "karpenter.k8s.aws/instance-gpu-memory" = each.value.gpu_memory_mib },
  )
  taint {
    key    = "nvidia.com/gpu"
    effect = "NO_SCHEDULE"
  }
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }
  depends_on = [aws_iam_role_policy_attachment.node]
}

data "tls_certificate" "oidc" {
  url = aws_eks_cluster.substratus.identity[0].oidc[0].issuer
}

resource "aws_iam_openid_connect_provider" "eks" {
  url             = aws_eks_cluster.substratus.identity[0].oidc[0].issuer
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = [data.tls_certificate.oidc.certificates[0].sha1_fingerprint]
}

resource "aws_s3_bucket" "artifacts" {
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
  name                 = "${var.cluster_name}-substratus"
  image_tag_mutability = "MUTABLE"
}

data "aws_iam_policy_document" "artifacts" {
  statement {
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.artifacts.arn]
  }
  statement {
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.artifacts.arn}/*"]
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
    resources = [aws_ecr_repository.substratus.arn]
  }
}

resource "aws_iam_policy" "artifacts" {
  name   = "${var.cluster_name}-substratus-artifacts"
  policy = data.aws_iam_policy_document.artifacts.json
}

# The role workloads assume. Its trust policy is managed by the operator, which adds each
# namespace's role service accounts as subjects (never removing others).
resource "aws_iam_role" "workloads" {
  name = "${var.cluster_name}-substratus-workloads"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = aws_iam_openid_connect_provider.eks.arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = { StringEquals = { "${local.oidc_issuer}:aud" = "sts.amazonaws.com" } }
    }]
  })
  lifecycle {
    ignore_changes = [assume_role_policy]
  }
}

resource "aws_iam_role_policy_attachment" "workloads" {
  role       = aws_iam_role.workloads.name
  policy_arn = aws_iam_policy.artifacts.arn
}

# The operator's own role (IRSA): S3 for uploads and md5 checks, and editing the workload
# role's trust policy.
data "aws_iam_policy_document" "operator_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.eks.arn]
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
    resources = [aws_eks_cluster.substratus.arn]
  }
}

resource "aws_iam_role_policy" "operator" {
  role   = aws_iam_role.operator.name
  policy = data.aws_iam_policy_document.operator.json
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
      identifiers = [aws_iam_openid_connect_provider.eks.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:kube-system:s3-csi-driver-sa"]
    }
  }
}

resource "aws_iam_role" "mountpoint" {
  name               = "${var.cluster_name}-mountpoint-s3"
  assume_role_policy = data.aws_iam_policy_document.mountpoint_trust.json
}

resource "aws_iam_role_policy_attachment" "mountpoint" {
  role       = aws_iam_role.mountpoint.name
  policy_arn = aws_iam_policy.artifacts.arn
}

resource "aws_eks_addon" "mountpoint_s3" {
  cluster_name             = aws_eks_cluster.substratus.name
  addon_name               = "aws-mountpoint-s3-csi-driver"
  service_account_role_arn = aws_iam_role.mountpoint.arn
  depends_on               = [aws_eks_node_group.cpu]
}

resource "helm_release" "nvidia_device_plugin" {
  name       = "nvidia-device-plugin"
  namespace  = "kube-system"
  repository = "https://nvidia.github.io/k8s-device-plugin"
  chart      = "nvidia-device-plugin"
  values = [yamlencode({
    tolerations = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
  })]
  depends_on = [aws_eks_node_group.cpu]
}

resource "helm_release" "substratus" {
  name             = "substratus"
  namespace        = var.operator_namespace
  create_namespace = true
  chart            = var.chart_path
  values           = [yamlencode(local.helm_values)]
  depends_on       = [aws_eks_node_group.cpu, aws_eks_addon.mountpoint_s3]
}
