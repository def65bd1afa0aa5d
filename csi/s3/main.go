// Command substratus-csi-s3 is a CSI node plugin that mounts a prefix of an S3 bucket into
// pods, for local clusters (kind, the devcluster's real node) whose operator uses the kind
// backend. It registers itself with the kubelet through the plugin-registration socket, so
// no node-driver-registrar sidecar is needed, and serves the CSI Identity and Node services.
// It has no controller service: volumes are static PersistentVolumes or inline volumes
// naming an object (inline.go), attach is not required.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	registration "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// version is set at build time with -ldflags -X main.version=...
var version = "dev"

func main() {
	driverName := flag.String("driver-name", "s3.csi.substratus.ai", "the CSI driver name PersistentVolumes name")
	kubeletRoot := flag.String("kubelet-root", "/var/lib/kubelet", "the kubelet's --root-dir")
	nodeID := flag.String("node-id", "", "the node's name (default: the host name)")
	stateDir := flag.String("state-dir", "/var/lib/substratus-csi-s3", "where mount caches live")
	s3fs := flag.String("s3fs", "s3fs", "the s3fs binary that mounts prefixes")
	inlineCredentials := flag.String("inline-credentials", "", "directory with endpoint, accessKeyID, secretAccessKey and region files: the S3 credentials of inline volumes (none: inline volumes are refused)")
	inlineCluster := flag.String("inline-cluster", "", "the only cluster name inline volumes may name (default: any)")
	inlineBucket := flag.String("inline-bucket", "", "the only bucket inline volumes may name (default: any the credentials reach)")
	flag.Parse()
	if *nodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			log.Fatalf("--node-id: %v", err)
		}
		*nodeID = h
	}
	d := &Driver{
		Name:     *driverName,
		Version:  version,
		NodeID:   *nodeID,
		StateDir: *stateDir,
		Mounter:  &S3fsMounter{Binary: *s3fs},
		Inline:   InlineConfig{CredentialsDir: *inlineCredentials, Cluster: *inlineCluster, Bucket: *inlineBucket},
	}
	pluginDir := filepath.Join(*kubeletRoot, "plugins", *driverName)
	csiSocket := filepath.Join(pluginDir, "csi.sock")
	regSocket := filepath.Join(*kubeletRoot, "plugins_registry", *driverName+"-reg.sock")

	csiServer := grpc.NewServer()
	csi.RegisterIdentityServer(csiServer, d)
	csi.RegisterNodeServer(csiServer, d)
	regServer := grpc.NewServer()
	registration.RegisterRegistrationServer(regServer, &Registrar{Name: *driverName, Endpoint: csiSocket})

	for _, s := range []struct {
		path string
		srv  *grpc.Server
	}{{csiSocket, csiServer}, {regSocket, regServer}} {
		l, err := listen(s.path)
		if err != nil {
			log.Fatal(err)
		}
		go func(srv *grpc.Server, l net.Listener) {
			if err := srv.Serve(l); err != nil {
				log.Printf("serving %s: %v", l.Addr(), err)
			}
		}(s.srv, l)
	}
	log.Printf("%s %s serving on %s (node %s)", *driverName, version, csiSocket, *nodeID)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	// Mounts stay: pods still running keep their volumes; the kubelet unpublishes them.
	regServer.Stop()
	csiServer.GracefulStop()
	_ = os.Remove(regSocket)
	_ = os.Remove(csiSocket)
}

func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("removing the old socket %s: %w", path, err)
	}
	return net.Listen("unix", path)
}

// Registrar answers the kubelet's plugin watcher.
type Registrar struct {
	registration.UnimplementedRegistrationServer
	Name, Endpoint string
}

func (r *Registrar) GetInfo(context.Context, *registration.InfoRequest) (*registration.PluginInfo, error) {
	return &registration.PluginInfo{
		Type:              registration.CSIPlugin,
		Name:              r.Name,
		Endpoint:          r.Endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *Registrar) NotifyRegistrationStatus(_ context.Context, s *registration.RegistrationStatus) (*registration.RegistrationStatusResponse, error) {
	if s.PluginRegistered {
		log.Printf("registered with the kubelet")
	} else {
		log.Printf("the kubelet refused the registration: %s", s.Error)
	}
	return &registration.RegistrationStatusResponse{}, nil
}
