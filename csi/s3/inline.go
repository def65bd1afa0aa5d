package main

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Inline (ephemeral) volumes name an object, not a location: the kind backend writes the
// object's kind and name and which folder of its prefix to mount, and the driver derives the
// prefix from them and the namespace of the pod the kubelet publishes for, exactly as the
// operator does (md5 of clusters/<cluster>/namespaces/<namespace>/<kind>s/<name>). A pod can
// therefore mount only prefixes of objects of its own namespace, whatever it writes in its
// volume attributes. With the attribute tenancy=namespace (the operator's TENANCY), the
// prefix sits in the namespace's own folder, namespaces/<namespace>/, as on the clouds where
// each namespace has an identity allowed only that folder. The credentials are the driver's own (InlineConfig.CredentialsDir),
// never a Secret of the pod's namespace.

// Volume context keys the kubelet sets for inline volumes (the CSIDriver has
// podInfoOnMount: true and lists the Ephemeral lifecycle mode).
const (
	ephemeralKey    = "csi.storage.k8s.io/ephemeral"
	podNamespaceKey = "csi.storage.k8s.io/pod.namespace"
)

// InlineConfig holds what the driver trusts for inline volumes.
type InlineConfig struct {
	// A directory holding the files endpoint, accessKeyID, secretAccessKey and optionally
	// region: the layout of a Secret mounted as a volume. Read at each publish.
	CredentialsDir string
	// When set, the only cluster name and bucket inline volumes may name.
	Cluster, Bucket string
}

var (
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	kinds        = map[string]string{"Model": "models", "Dataset": "datasets", "Server": "servers", "Notebook": "notebooks"}
	folders      = map[string]bool{"artifacts": true, "uploads": true}
)

// IsInline tells whether the kubelet publishes an inline volume.
func IsInline(attrs map[string]string) bool {
	return attrs[ephemeralKey] == "true"
}

// InlinePrefix derives the bucket and prefix of an inline volume from its attributes and
// the pod's namespace, refusing anything that does not name one object's folder.
func (c InlineConfig) InlinePrefix(attrs map[string]string) (bucket, prefix string, err error) {
	namespace := attrs[podNamespaceKey]
	if namespace == "" {
		return "", "", fmt.Errorf("inline volume: no %s in the volume context (the CSIDriver needs podInfoOnMount: true)", podNamespaceKey)
	}
	bucket, cluster := attrs["bucket"], attrs["cluster"]
	kind, name, folder, root := attrs["kind"], attrs["name"], attrs["folder"], strings.Trim(attrs["root"], "/")
	if bucket == "" || strings.Contains(bucket, "/") {
		return "", "", fmt.Errorf("inline volume attribute bucket: %q is not a bucket name", bucket)
	}
	if c.Bucket != "" && bucket != c.Bucket {
		return "", "", fmt.Errorf("inline volume attribute bucket: %q is not the bucket this driver mounts (%s)", bucket, c.Bucket)
	}
	if cluster == "" || strings.Contains(cluster, "/") {
		return "", "", fmt.Errorf("inline volume attribute cluster: %q is not a cluster name", cluster)
	}
	if c.Cluster != "" && cluster != c.Cluster {
		return "", "", fmt.Errorf("inline volume attribute cluster: %q is not this cluster (%s)", cluster, c.Cluster)
	}
	plural, ok := kinds[kind]
	if !ok {
		return "", "", fmt.Errorf("inline volume attribute kind: %q is not Model, Dataset, Server or Notebook", kind)
	}
	if len(name) > 253 || !dnsSubdomain.MatchString(name) {
		return "", "", fmt.Errorf("inline volume attribute name: %q is not an object name", name)
	}
	if !folders[folder] {
		return "", "", fmt.Errorf("inline volume attribute folder: %q is not artifacts or uploads", folder)
	}
	if root != "" {
		for _, part := range strings.Split(root, "/") {
			if part == "" || part == "." || part == ".." {
				return "", "", fmt.Errorf("inline volume attribute root: %q has an empty, . or .. component", root)
			}
		}
	}
	sum := md5.Sum([]byte(fmt.Sprintf("clusters/%s/namespaces/%s/%s/%s", cluster, namespace, plural, name)))
	prefix = hex.EncodeToString(sum[:]) + "/" + folder
	switch attrs["tenancy"] {
	case "", "shared":
	case "namespace":
		prefix = "namespaces/" + namespace + "/" + prefix
	default:
		return "", "", fmt.Errorf("inline volume attribute tenancy: %q is not namespace or shared", attrs["tenancy"])
	}
	if root != "" {
		prefix = root + "/" + prefix
	}
	return bucket, prefix, nil
}

// Credentials reads the driver's own S3 credentials for inline volumes.
func (c InlineConfig) Credentials() (map[string]string, error) {
	if c.CredentialsDir == "" {
		return nil, fmt.Errorf("inline volumes are not served: the driver was started without --inline-credentials")
	}
	out := map[string]string{}
	for _, key := range []string{"endpoint", "accessKeyID", "secretAccessKey", "region"} {
		b, err := os.ReadFile(filepath.Join(c.CredentialsDir, key))
		if os.IsNotExist(err) && key == "region" {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("inline volume credentials: %v", err)
		}
		out[key] = strings.TrimSpace(string(b))
	}
	return out, nil
}
