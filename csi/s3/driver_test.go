package main

import (
	"bufio"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeMounter records mounts in memory; the real mounts are tested on the real node.
type fakeMounter struct {
	mounted map[string]MountSpec
	calls   int
}

func (f *fakeMounter) Mount(m MountSpec) error {
	f.calls++
	f.mounted[m.Target] = m
	return nil
}
func (f *fakeMounter) Unmount(t string) error           { delete(f.mounted, t); return nil }
func (f *fakeMounter) IsMounted(t string) (bool, error) { _, ok := f.mounted[t]; return ok, nil }

func request(t *testing.T, handle string, mode csi.VolumeCapability_AccessMode_Mode, readonly bool) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:   handle,
		TargetPath: filepath.Join(t.TempDir(), "mount"),
		Readonly:   readonly,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		},
		VolumeContext: map[string]string{"mounter": "geesefs", "options": "--memory-limit 1000 --dir-mode 0777 --file-mode 0666"},
		Secrets:       map[string]string{"endpoint": "http://127.0.0.1:9000", "accessKeyID": "ak", "secretAccessKey": "sk"},
	}
}

func TestPublishMountsThePrefixOnceAndHonoursTheAttributes(t *testing.T) {
	f := &fakeMounter{mounted: map[string]MountSpec{}}
	d := &Driver{Name: "s3.csi.substratus.ai", StateDir: t.TempDir(), Mounter: f}
	req := request(t, "artifacts/93ea94b1/artifacts", csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, false)
	for range 2 {
		if _, err := d.NodePublishVolume(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if f.calls != 1 {
		t.Fatalf("a second publish of a mounted target mounted again (%d mounts)", f.calls)
	}
	m := f.mounted[req.TargetPath]
	if m.Bucket != "artifacts" || m.Prefix != "93ea94b1/artifacts" || m.ReadOnly {
		t.Fatalf("mounted %+v", m)
	}
	if m.DirMode != 0o777 || m.FileMode != 0o666 || m.Region != "us-east-1" {
		t.Fatalf("attributes not honoured: %+v", m)
	}
	if _, err := d.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
		t.Fatal(err)
	}
	if len(f.mounted) != 0 {
		t.Fatal("still mounted after unpublish")
	}
	// Unpublishing what is gone succeeds: the kubelet retries.
	if _, err := d.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
		t.Fatal(err)
	}
}

func TestReadOnlyComesFromTheFlagOrTheAccessMode(t *testing.T) {
	for _, c := range []struct {
		mode     csi.VolumeCapability_AccessMode_Mode
		readonly bool
		want     bool
	}{
		{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, true, true},
		{csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, false, true},
		{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, false, false},
	} {
		f := &fakeMounter{mounted: map[string]MountSpec{}}
		d := &Driver{StateDir: t.TempDir(), Mounter: f}
		req := request(t, "b/p", c.mode, c.readonly)
		if _, err := d.NodePublishVolume(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if got := f.mounted[req.TargetPath].ReadOnly; got != c.want {
			t.Errorf("mode %v readonly %v: read-only %v, want %v", c.mode, c.readonly, got, c.want)
		}
		args := (&RcloneMounter{}).Args(f.mounted[req.TargetPath])
		if slices.Contains(args, "--read-only") != c.want {
			t.Errorf("rclone args %v", args)
		}
	}
}

func TestBadHandlesOptionsAndSecretsAreRefusedNamingTheField(t *testing.T) {
	d := &Driver{StateDir: t.TempDir(), Mounter: &fakeMounter{mounted: map[string]MountSpec{}}}
	cases := map[string]func(r *csi.NodePublishVolumeRequest){
		"whole bucket":  func(r *csi.NodePublishVolumeRequest) { r.VolumeId = "artifacts" },
		"climbing":      func(r *csi.NodePublishVolumeRequest) { r.VolumeId = "artifacts/a/../b" },
		"bad mode":      func(r *csi.NodePublishVolumeRequest) { r.VolumeContext["options"] = "--dir-mode 999" },
		"unknown flag":  func(r *csi.NodePublishVolumeRequest) { r.VolumeContext["options"] = "--allow-root" },
		"no secret":     func(r *csi.NodePublishVolumeRequest) { r.Secrets = nil },
		"other mounter": func(r *csi.NodePublishVolumeRequest) { r.VolumeContext["mounter"] = "goofys" },
	}
	for name, mutate := range cases {
		req := request(t, "artifacts/p", csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, false)
		mutate(req)
		_, err := d.NodePublishVolume(context.Background(), req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: got %v, want InvalidArgument", name, err)
		}
	}
}

func TestCredentialsStayOffTheCommandLine(t *testing.T) {
	r := &RcloneMounter{}
	m := MountSpec{Bucket: "b", Prefix: "p", Target: "/t", AccessKey: "AKIDSECRET", SecretKey: "verysecret", UID: -1, GID: -1}
	args := strings.Join(r.Args(m), " ")
	if strings.Contains(args, "AKIDSECRET") || strings.Contains(args, "verysecret") {
		t.Fatalf("credentials in argv: %s", args)
	}
	env := strings.Join(r.Env(m), "\n")
	if !strings.Contains(env, "RCLONE_S3_SECRET_ACCESS_KEY=verysecret") {
		t.Fatal("credentials missing from the environment")
	}
}

func TestMountinfoIsReadWithItsEscapes(t *testing.T) {
	info := "36 35 98:0 / /var/lib/kubelet/pods/x/volumes/a\\040b rw,noatime - fuse.rclone :s3: rw\n"
	ok, err := mountedIn(bufio.NewScanner(strings.NewReader(info)), "/var/lib/kubelet/pods/x/volumes/a b")
	if err != nil || !ok {
		t.Fatalf("got %v %v", ok, err)
	}
	ok, _ = mountedIn(bufio.NewScanner(strings.NewReader(info)), "/var/lib/kubelet/pods/x/volumes/a")
	if ok {
		t.Fatal("a prefix of a mount point is not a mount point")
	}
}
