//! What a real node is confined to — its cgroup subtree, its directories and mounts, its
//! network namespace — and the sweep that removes all of it, whatever state the node was left
//! in (see [`crate::node`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::NetNs;
use crate::node::{CGROUP, NETNS, ROOT, RUN};

use crate::node::CGROUP_FS;

/// Every mount point of this process's mount namespace (octal escapes decoded).
pub fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(unescape_mount_point(p)))
        .collect()
}

/// The cgroup v1 hierarchies mounted under `/sys/fs/cgroup` (cpu, memory, …, name=systemd).
pub(crate) fn hierarchies() -> Result<Vec<PathBuf>> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mounts
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount_point = left.split_whitespace().nth(4)?;
            (fstype == "cgroup" && mount_point.starts_with(CGROUP_FS))
                .then(|| PathBuf::from(mount_point))
        })
        .collect())
}

/// Creates `/substratus-node/system` in every hierarchy; cpusets get their parent's CPUs and
/// memory nodes, which a new cpuset lacks.
pub(crate) fn make_cgroups() -> Result<()> {
    for h in hierarchies()? {
        let mut dir = h.clone();
        for part in [CGROUP, "system"] {
            let parent = dir.clone();
            dir = dir.join(part);
            if !dir.is_dir() {
                std::fs::create_dir(&dir)
                    .with_context(|| format!("creating cgroup {}", dir.display()))?;
            }
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if parent.join(f).is_file() {
                    let v = std::fs::read_to_string(parent.join(f))?;
                    std::fs::write(dir.join(f), v.trim())
                        .with_context(|| format!("writing {}", dir.join(f).display()))?;
                }
            }
        }
    }
    Ok(())
}

/// Mount points (from `/proc/self/mountinfo`, octal escapes decoded) that the node made:
/// below [`ROOT`] or [`RUN`], or a sandbox namespace under `/run/netns/cni-`.
pub fn node_mounts() -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            p.starts_with(ROOT)
                || p.starts_with(RUN)
                || p.starts_with("/run/containerd")
                || s.starts_with("/run/netns/cni-")
                || s.starts_with("/var/run/netns/cni-")
        })
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

fn unescape_mount_point(s: &str) -> String {
    let mut out = String::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v as char);
            i += 4;
            continue;
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// The node's cgroups, deepest first.
pub fn node_cgroups() -> Vec<PathBuf> {
    let mut all = Vec::new();
    for h in hierarchies().unwrap_or_default() {
        collect_dirs(&h.join(CGROUP), &mut all);
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    all
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Processes in the node's cgroups.
pub fn node_processes() -> Vec<libc::pid_t> {
    let mut pids: Vec<libc::pid_t> = node_cgroups()
        .iter()
        .filter_map(|c| std::fs::read_to_string(c.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes everything a real node makes (see the module doc), whatever state it was left in.
pub fn sweep() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = node_processes();
        if pids.is_empty() {
            break;
        }
        for pid in &pids {
            // SAFETY: kill(2) of processes in the node's own cgroups.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} in the node's cgroups did not exit");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for m in node_mounts() {
        let c = std::ffi::CString::new(m.to_string_lossy().into_owned())?;
        // SAFETY: umount2 on a path string we own.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
    let left = node_mounts();
    if !left.is_empty() {
        bail!("mounts left after unmounting: {left:?}");
    }
    for c in node_cgroups() {
        // Control files vanish with the directory; rmdir is the only way to remove one.
        let _ = std::fs::remove_dir(&c);
    }
    let left = node_cgroups();
    if !left.is_empty() {
        bail!("cgroups left: {left:?}");
    }
    for dir in [ROOT, RUN] {
        if Path::new(dir).exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {dir}"))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("cni-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // Symbolic links the kubelet made to its pods' logs.
    if let Ok(entries) = std::fs::read_dir("/var/log/containers") {
        for e in entries.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(ROOT)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // The shims' socket directory (fixed by containerd); nothing else runs containerd here.
    let _ = std::fs::remove_dir_all("/run/containerd/s");
    let _ = std::fs::remove_dir("/run/containerd");
    let ns = NetNs { name: NETNS.into() };
    ns.delete()?;
    // Fixed paths of the kubelet and `ip netns`, removed when nothing else uses them.
    let _ = std::fs::remove_file("/var/lib/kubelet/device-plugins/kubelet.sock");
    for dir in [
        "/var/lib/kubelet/device-plugins",
        "/var/lib/kubelet",
        "/var/log/containers",
    ] {
        let _ = std::fs::remove_dir(dir);
    }
    if std::fs::read_dir("/run/netns").is_ok_and(|mut d| d.next().is_none()) {
        let c = std::ffi::CString::new("/run/netns")?;
        // SAFETY: umount2 on a constant path; it fails harmlessly when not a mount point.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
        let _ = std::fs::remove_dir("/run/netns");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(
            unescape_mount_point("/var/lib/a\\040b\\011c"),
            "/var/lib/a b\tc"
        );
        assert_eq!(unescape_mount_point("/plain"), "/plain");
    }
}
