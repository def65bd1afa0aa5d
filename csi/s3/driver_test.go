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
		args := (&S3fsMounter{}).Args(f.mounted[req.TargetPath])
		opts := strings.Split(args[len(args)-1], ",")
		if slices.Contains(opts, "ro") != c.want {
			t.Errorf("s3fs args %v", args)
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

func TestS3fsGetsThePrefixTheModesAndNoCredentialsOnItsCommandLine(t *testing.T) {
	r := &S3fsMounter{}
	m := MountSpec{Bucket: "b", Prefix: "p/artifacts", Target: "/t", Endpoint: "http://127.0.0.1:9000", Region: "us-east-1",
		AccessKey: "AKIDSECRET", SecretKey: "verysecret", DirMode: 0o777, FileMode: 0o666, UID: -1, GID: 1000, CacheDir: "/c"}
	args := r.Args(m)
	joined := strings.Join(args, " ")
	if strings.Contains(joined, "AKIDSECRET") || strings.Contains(joined, "verysecret") {
		t.Fatalf("credentials in argv: %s", joined)
	}
	if args[0] != "b:/p/artifacts" || args[1] != "/t" {
		t.Fatalf("source and target: %v", args)
	}
	opts := strings.Split(args[3], ",")
	for _, want := range []string{"url=http://127.0.0.1:9000", "umask=0000", "gid=1000", "passwd_file=/c/passwd", "use_path_request_style"} {
		if !slices.Contains(opts, want) {
			t.Errorf("option %s missing from %v", want, opts)
		}
	}
	if slices.ContainsFunc(opts, func(o string) bool { return strings.HasPrefix(o, "uid=") }) {
		t.Errorf("no --uid asked, yet %v", opts)
	}
	m.DirMode, m.FileMode = 0o755, 0o644
	if got := strings.Split(r.Args(m)[3], ","); !slices.Contains(got, "umask=0022") {
		t.Errorf("modes 0755/0644 give %v", got)
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
