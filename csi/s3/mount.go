package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// S3fsMounter mounts prefixes with s3fs (FUSE). s3fs keeps a file being written in a local
// temporary file and uploads it when the file is closed, before close returns: once a
// container has closed what it wrote, the bytes are in the bucket. That is what lets a Job's
// completion mean its artifacts are stored. Random writes work (the temporary file is seeked,
// not the object), and a prefix that does not exist yet mounts as an empty directory.
type S3fsMounter struct {
	Binary string
}

// passwdFile is where the credentials of a mount live (mode 0600, never on a command line).
func passwdFile(m MountSpec) string {
	return filepath.Join(m.CacheDir, "passwd")
}

// Args are s3fs's arguments for a spec.
func (r *S3fsMounter) Args(m MountSpec) []string {
	// s3fs has one umask for files and directories: grant what either mode grants.
	umask := 0o777 &^ (m.DirMode | m.FileMode)
	opts := []string{
		"url=" + m.Endpoint,
		"endpoint=" + m.Region,
		"use_path_request_style",
		"passwd_file=" + passwdFile(m),
		"allow_other",
		fmt.Sprintf("umask=%04o", umask),
		"use_cache=" + filepath.Join(m.CacheDir, "cache"),
		"del_cache",
	}
	if m.UID >= 0 {
		opts = append(opts, "uid="+strconv.Itoa(m.UID))
	}
	if m.GID >= 0 {
		opts = append(opts, "gid="+strconv.Itoa(m.GID))
	}
	if m.ReadOnly {
		opts = append(opts, "ro")
	}
	return []string{m.Bucket + ":/" + m.Prefix, m.Target, "-o", strings.Join(opts, ",")}
}

func (r *S3fsMounter) Mount(m MountSpec) error {
	if err := os.MkdirAll(filepath.Join(m.CacheDir, "cache"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(passwdFile(m), []byte(m.AccessKey+":"+m.SecretKey+"\n"), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(r.Binary, r.Args(m)...)
	// Only what s3fs needs: no AWS_* or proxy setting of the plugin's environment applies.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + m.CacheDir}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("s3fs: %v: %s", err, strings.TrimSpace(string(out)))
	}
	// s3fs returns once it has forked its daemon; wait for the mount to be there.
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
			return fmt.Errorf("s3fs: %s is not mounted after 10s: %s", m.Target, strings.TrimSpace(string(out)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *S3fsMounter) Unmount(target string) error {
	if err := syscall.Unmount(target, 0); err != nil {
		// A mount still in use is detached now and goes once unused.
		return syscall.Unmount(target, syscall.MNT_DETACH)
	}
	return nil
}

func (r *S3fsMounter) IsMounted(target string) (bool, error) {
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
