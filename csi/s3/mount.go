package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RcloneMounter mounts prefixes with `rclone mount` (FUSE), one daemon per mount; the
// daemon ends when its mount is unmounted.
type RcloneMounter struct {
	Binary string
}

// Args are rclone's arguments for a spec; the credentials go in its environment (Env), not
// on a command line every user of the node can read.
func (r *RcloneMounter) Args(m MountSpec) []string {
	args := []string{
		"mount", ":s3:" + m.Bucket + "/" + m.Prefix, m.Target,
		"--config", "/dev/null",
		"--daemon", "--daemon-wait", "20s",
		"--allow-other",
		"--dir-perms", fmt.Sprintf("%04o", m.DirMode),
		"--file-perms", fmt.Sprintf("%04o", m.FileMode),
		"--vfs-cache-mode", "writes",
		"--cache-dir", m.CacheDir,
		"--s3-provider", "Other",
		"--s3-endpoint", m.Endpoint,
		"--s3-region", m.Region,
		"--s3-force-path-style=true",
		"--s3-env-auth=false",
	}
	if m.UID >= 0 {
		args = append(args, "--uid", strconv.Itoa(m.UID))
	}
	if m.GID >= 0 {
		args = append(args, "--gid", strconv.Itoa(m.GID))
	}
	if m.ReadOnly {
		args = append(args, "--read-only")
	}
	return args
}

// Env is rclone's environment for a spec.
func (r *RcloneMounter) Env(m MountSpec) []string {
	return append(os.Environ(),
		"RCLONE_S3_ACCESS_KEY_ID="+m.AccessKey,
		"RCLONE_S3_SECRET_ACCESS_KEY="+m.SecretKey,
	)
}

func (r *RcloneMounter) Mount(m MountSpec) error {
	if err := os.MkdirAll(m.CacheDir, 0o700); err != nil {
		return err
	}
	cmd := exec.Command(r.Binary, r.Args(m)...)
	cmd.Env = r.Env(m)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("rclone mount: %v: %s", err, strings.TrimSpace(string(out)))
	}
	// --daemon returns once the mount is up; make sure.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := r.IsMounted(m.Target)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rclone mount: %s is not mounted after 10s: %s", m.Target, strings.TrimSpace(string(out)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *RcloneMounter) Unmount(target string) error {
	if err := syscall.Unmount(target, 0); err != nil {
		// A mount still in use is detached now and goes once unused.
		return syscall.Unmount(target, syscall.MNT_DETACH)
	}
	return nil
}

func (r *RcloneMounter) IsMounted(target string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	return mountedIn(bufio.NewScanner(f), target)
}

// mountedIn tells whether mountinfo lines list target as a mount point.
func mountedIn(s *bufio.Scanner, target string) (bool, error) {
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && unescape(fields[4]) == target {
			return true, nil
		}
	}
	return false, s.Err()
}

// unescape decodes mountinfo's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
