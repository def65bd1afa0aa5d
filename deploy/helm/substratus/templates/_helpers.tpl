{{- define "substratus.fullname" -}}
{{- if contains "substratus" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-substratus" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "substratus.labels" -}}
app.kubernetes.io/name: substratus
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "substratus.selector" -}}
app.kubernetes.io/name: substratus
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* The gateway's pods: a name of their own, so that the operator's Service, PodDisruptionBudget
and ServiceMonitor (which select app.kubernetes.io/name: substratus) never count them. */ -}}
{{- define "substratus.gatewaySelector" -}}
app.kubernetes.io/name: substratus-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "substratus.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "substratus.serviceAccountName" -}}
{{ .Values.serviceAccount.name }}
{{- end -}}

{{- define "substratus.validate" -}}
{{- if ne .Values.cloud "kind" -}}
{{- if not .Values.clusterName -}}{{ fail (printf "clusterName is required when cloud is %s" .Values.cloud) }}{{- end -}}
{{- if not .Values.artifactBucketURL -}}{{ fail (printf "artifactBucketURL is required when cloud is %s" .Values.cloud) }}{{- end -}}
{{- if not .Values.registryURL -}}{{ fail (printf "registryURL is required when cloud is %s" .Values.cloud) }}{{- end -}}
{{- if and (not .Values.principal) (not (and (eq .Values.cloud "azure") (eq .Values.tenancy "namespace"))) -}}{{ fail (printf "principal is required when cloud is %s (the identity workloads run as)" .Values.cloud) }}{{- end -}}
{{- if not .Values.tenancy -}}{{ fail (printf "tenancy is required when cloud is %s: namespace (each namespace's workloads get a cloud identity of their own, allowed only the namespace's bucket folder and registry repository) or shared (one identity for every namespace: one trust domain); see the README's Security model" .Values.cloud) }}{{- end -}}
{{- if and (eq .Values.tenancy "namespace") (eq .Values.cloud "azure") -}}
{{- if not .Values.azure.location -}}{{ fail "azure.location is required with tenancy=namespace on azure: the region of the managed identity the operator makes for each namespace" }}{{- end -}}
{{- if eq .Values.azure.blobVolumes "claims" -}}{{ fail "azure.blobVolumes=claims cannot serve tenancy=namespace: the blob CSI driver mounts inline volumes with each pod's own identity, a static volume with one identity for good" }}{{- end -}}
{{- end -}}
{{- if and (eq .Values.tenancy "namespace") (eq .Values.cloud "aws") (ne .Values.aws.identityMode "pod-identity") -}}{{ fail "tenancy=namespace on aws needs aws.identityMode=pod-identity: EKS Pod Identity tags each session with the pod's namespace, which the role's policy matches" }}{{- end -}}
{{- if eq .Values.cloud "azure" -}}
{{- if not .Values.azure.storageAccount -}}{{ fail "azure.storageAccount is required when cloud is azure" }}{{- end -}}
{{- if not .Values.azure.identityName -}}{{ fail "azure.identityName is required when cloud is azure (the managed identity workloads run as)" }}{{- end -}}
{{- if not .Values.azure.oidcIssuer -}}{{ fail "azure.oidcIssuer is required when cloud is azure (az aks show --query oidcIssuerProfile.issuerUrl)" }}{{- end -}}
{{- end -}}
{{- $scheme := dict "gcp" "gs://" "aws" "s3://" "azure" "az://" -}}
{{- if not (hasPrefix (get $scheme .Values.cloud) .Values.artifactBucketURL) -}}{{ fail (printf "artifactBucketURL must start with %s when cloud is %s" (get $scheme .Values.cloud) .Values.cloud) }}{{- end -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{ fail "leaderElection.enabled must be true with more than one replica" }}
{{- end -}}
{{- end -}}
