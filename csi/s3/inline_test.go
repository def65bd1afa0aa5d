package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func credentialsDir(t *testing.T) string {
	dir := t.TempDir()
	for k, v := range map[string]string{"endpoint": "http://127.0.0.1:9000\n", "accessKeyID": "ak", "secretAccessKey": "sk"} {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// An inline volume as the kubelet publishes it for a pod of namespace ns.
func inlineRequest(t *testing.T, ns string, attrs map[string]string, readonly bool) *csi.NodePublishVolumeRequest {
	ctx := map[string]string{
		ephemeralKey: "true", podNamespaceKey: ns, "csi.storage.k8s.io/pod.name": "p",
		"bucket": "artifacts", "root": "", "cluster": "my-cluster", "kind": "Model", "name": "my-model",
		"folder": "artifacts", "options": "--dir-mode 0777 --file-mode 0666",
	}
	for k, v := range attrs {
		ctx[k] = v
	}
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "csi-0123456789abcdef",
		TargetPath: filepath.Join(t.TempDir(), "mount"),
		Readonly:   readonly,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: ctx,
	}
}

func TestAnInlineVolumeMountsThePrefixTheOperatorComputesForThePodsNamespace(t *testing.T) {
	f := &fakeMounter{mounted: map[string]MountSpec{}}
	d := &Driver{StateDir: t.TempDir(), Mounter: f, Inline: InlineConfig{CredentialsDir: credentialsDir(t)}}
	req := inlineRequest(t, "my-ns", nil, true)
	if _, err := d.NodePublishVolume(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	m := f.mounted[req.TargetPath]
	// The operator's storage_prefix("my-cluster", "my-ns", Model, "my-model").
	if m.Bucket != "artifacts" || m.Prefix != "93ea94b18012ca14d84e1468d65e8709/artifacts" {
		t.Fatalf("mounted %s/%s", m.Bucket, m.Prefix)
	}
	if !m.ReadOnly || m.Endpoint != "http://127.0.0.1:9000" || m.AccessKey != "ak" || m.SecretKey != "sk" || m.Region != "us-east-1" {
		t.Fatalf("mounted %+v", m)
	}
	// The same attributes in another namespace name that namespace's object, and a root
	// and the uploads folder are honoured.
	other := inlineRequest(t, "other-ns", map[string]string{"root": "team/a", "folder": "uploads"}, false)
	if _, err := d.NodePublishVolume(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	o := f.mounted[other.TargetPath]
	if !strings.HasPrefix(o.Prefix, "team/a/") || !strings.HasSuffix(o.Prefix, "/uploads") || strings.Contains(o.Prefix, "93ea94b1") || o.ReadOnly {
		t.Fatalf("another namespace mounted %s", o.Prefix)
	}
	// With namespace tenancy the prefix lives in the folder of the pod's namespace, whatever
	// namespace the attributes might name.
	own := inlineRequest(t, "my-ns", map[string]string{"root": "team/a", "tenancy": "namespace", "namespace": "other-ns"}, true)
	if _, err := d.NodePublishVolume(context.Background(), own); err != nil {
		t.Fatal(err)
	}
	if p := f.mounted[own.TargetPath].Prefix; p != "team/a/namespaces/my-ns/93ea94b18012ca14d84e1468d65e8709/artifacts" {
		t.Fatalf("namespace tenancy mounted %s", p)
	}
}

func TestInlineVolumesThatNameNoObjectOrComeWithoutCredentialsAreRefused(t *testing.T) {
	creds := credentialsDir(t)
	d := &Driver{StateDir: t.TempDir(), Mounter: &fakeMounter{mounted: map[string]MountSpec{}},
		Inline: InlineConfig{CredentialsDir: creds, Cluster: "my-cluster", Bucket: "artifacts"}}
	for name, c := range map[string]struct {
		ns    string
		attrs map[string]string
		want  string
	}{
		"no pod info":       {"", nil, "podInfoOnMount"},
		"path as name":      {"ns", map[string]string{"name": "../other"}, "attribute name"},
		"unknown kind":      {"ns", map[string]string{"kind": "Secret"}, "attribute kind"},
		"other folder":      {"ns", map[string]string{"folder": "."}, "attribute folder"},
		"climbing root":     {"ns", map[string]string{"root": "a/../b"}, "attribute root"},
		"bucket with a key": {"ns", map[string]string{"bucket": "artifacts/x"}, "attribute bucket"},
		"another bucket":    {"ns", map[string]string{"bucket": "secrets"}, "not the bucket"},
		"another cluster":   {"ns", map[string]string{"cluster": "prod"}, "not this cluster"},
		"unknown tenancy":   {"ns", map[string]string{"tenancy": "none"}, "attribute tenancy"},
	} {
		_, err := d.NodePublishVolume(context.Background(), inlineRequest(t, c.ns, c.attrs, false))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want InvalidArgument naming %q", name, err, c.want)
		}
	}
	// A secret in the request is never used for an inline volume.
	noCreds := &Driver{StateDir: t.TempDir(), Mounter: &fakeMounter{mounted: map[string]MountSpec{}}}
	req := inlineRequest(t, "ns", nil, false)
	req.Secrets = map[string]string{"endpoint": "http://127.0.0.1:9", "accessKeyID": "a", "secretAccessKey": "s"}
	if _, err := noCreds.NodePublishVolume(context.Background(), req); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("without --inline-credentials: got %v, want FailedPrecondition", err)
	}
}
