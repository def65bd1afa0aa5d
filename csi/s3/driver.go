package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Driver serves the CSI Identity and Node services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer
	Name, Version, NodeID, StateDir string
	Mounter                         Mounter
	Inline                          InlineConfig
	// One publish or unpublish at a time per target path.
	locks sync.Map
}

// Mounter mounts and unmounts prefixes; S3fsMounter is the real one.
type Mounter interface {
	Mount(m MountSpec) error
	Unmount(target string) error
	IsMounted(target string) (bool, error)
}

// MountSpec is one prefix mounted at one target.
type MountSpec struct {
	Bucket, Prefix, Target string
	Endpoint, Region       string
	AccessKey, SecretKey   string
	ReadOnly               bool
	DirMode, FileMode      os.FileMode
	UID, GID               int
	CacheDir               string
}

func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.Name, VendorVersion: d.Version}, nil
}

func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	// No controller service: static volumes only.
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.NodeID}, nil
}

func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	// Publish only: no staging, no stats, no expansion.
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

func (d *Driver) lock(target string) func() {
	m, _ := d.locks.LoadOrStore(target, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// SplitHandle reads a volume handle `bucket/prefix` (the prefix may be empty only when
// explicitly allowed: mounting a whole bucket is refused).
func SplitHandle(handle string) (bucket, prefix string, err error) {
	bucket, prefix, _ = strings.Cut(handle, "/")
	prefix = strings.Trim(prefix, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("volume handle %q: no bucket (expected bucket/prefix)", handle)
	}
	if prefix == "" {
		return "", "", fmt.Errorf("volume handle %q: no prefix; a whole bucket is never mounted", handle)
	}
	for _, part := range strings.Split(prefix, "/") {
		if part == ".." || part == "." || part == "" {
			return "", "", fmt.Errorf("volume handle %q: prefix has an empty, . or .. component", handle)
		}
	}
	return bucket, prefix, nil
}

// ParseOptions reads the mount options of the `options` volume attribute (the flags the
// kind backend writes for geesefs, which the same flags of this mounter honour):
// --dir-mode, --file-mode, --uid, --gid; --memory-limit is accepted and has no effect here.
func ParseOptions(options string) (dirMode, fileMode os.FileMode, uid, gid int, err error) {
	dirMode, fileMode, uid, gid = 0o755, 0o644, -1, -1
	fields := strings.Fields(options)
	for i := 0; i < len(fields); i++ {
		name, value, inline := strings.Cut(fields[i], "=")
		if !inline {
			if i+1 >= len(fields) {
				return 0, 0, 0, 0, fmt.Errorf("options: %s has no value", name)
			}
			i++
			value = fields[i]
		}
		switch name {
		case "--dir-mode", "--file-mode":
			m, perr := strconv.ParseUint(value, 8, 32)
			if perr != nil || m > 0o777 {
				return 0, 0, 0, 0, fmt.Errorf("options: %s %q is not an octal mode", name, value)
			}
			if name == "--dir-mode" {
				dirMode = os.FileMode(m)
			} else {
				fileMode = os.FileMode(m)
			}
		case "--uid", "--gid":
			n, perr := strconv.Atoi(value)
			if perr != nil || n < 0 {
				return 0, 0, 0, 0, fmt.Errorf("options: %s %q is not a user or group id", name, value)
			}
			if name == "--uid" {
				uid = n
			} else {
				gid = n
			}
		case "--memory-limit":
		default:
			return 0, 0, 0, 0, fmt.Errorf("options: unknown option %s", name)
		}
	}
	return dirMode, fileMode, uid, gid, nil
}

func (d *Driver) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if req.GetVolumeId() == "" || target == "" || req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume id, target path and capability are required")
	}
	if req.GetVolumeCapability().GetMount() == nil {
		return nil, status.Error(codes.InvalidArgument, "only filesystem volumes are served")
	}
	attrs := req.GetVolumeContext()
	var bucket, prefix string
	var err error
	secrets := req.GetSecrets()
	if IsInline(attrs) {
		// The volume id is the kubelet's own; the prefix comes from the object and the pod.
		if bucket, prefix, err = d.Inline.InlinePrefix(attrs); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if secrets, err = d.Inline.Credentials(); err != nil {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
	} else if bucket, prefix, err = SplitHandle(req.GetVolumeId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// The kind backend names geesefs (k8s-csi-s3's mounter); s3fs serves the same mounts.
	if m := attrs["mounter"]; m != "" && m != "geesefs" && m != "s3fs" {
		return nil, status.Errorf(codes.InvalidArgument, "volume attribute mounter: %q is not served (geesefs, s3fs)", m)
	}
	dirMode, fileMode, uid, gid, err := ParseOptions(attrs["options"])
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	endpoint := secrets["endpoint"]
	if endpoint == "" || secrets["accessKeyID"] == "" || secrets["secretAccessKey"] == "" {
		return nil, status.Error(codes.InvalidArgument, "the node-publish Secret (or the inline credentials) needs endpoint, accessKeyID and secretAccessKey")
	}
	region := secrets["region"]
	if region == "" {
		region = "us-east-1"
	}
	mode := req.GetVolumeCapability().GetAccessMode().GetMode()
	readOnly := req.GetReadonly() ||
		mode == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY ||
		mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY

	defer d.lock(target)()
	mounted, err := d.Mounter.IsMounted(target)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if mounted {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	sum := sha256.Sum256([]byte(target))
	spec := MountSpec{
		Bucket: bucket, Prefix: prefix, Target: target,
		Endpoint: endpoint, Region: region,
		AccessKey: secrets["accessKeyID"], SecretKey: secrets["secretAccessKey"],
		ReadOnly: readOnly, DirMode: dirMode, FileMode: fileMode, UID: uid, GID: gid,
		CacheDir: filepath.Join(d.StateDir, "cache", hex.EncodeToString(sum[:8])),
	}
	if err := d.Mounter.Mount(spec); err != nil {
		return nil, status.Errorf(codes.Internal, "mounting %s/%s: %v", bucket, prefix, err)
	}
	log.Printf("published %s/%s at %s (read-only %v)", bucket, prefix, target, readOnly)
	return &csi.NodePublishVolumeResponse{}, nil
}

func (d *Driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if req.GetVolumeId() == "" || target == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id and target path are required")
	}
	defer d.lock(target)()
	mounted, err := d.Mounter.IsMounted(target)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if mounted {
		if err := d.Mounter.Unmount(target); err != nil {
			return nil, status.Errorf(codes.Internal, "unmounting %s: %v", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !os.IsNotExist(err) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	sum := sha256.Sum256([]byte(target))
	_ = os.RemoveAll(filepath.Join(d.StateDir, "cache", hex.EncodeToString(sum[:8])))
	log.Printf("unpublished %s", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}
