//! The real node's network namespace and the two doors between it and the host's loopback.
//!
//! The node (kubelet, containerd, kube-proxy, the DNS server and every pod) lives in a network
//! namespace of its own, linked to nothing outside: its addresses exist only there, so no
//! packet of the node can reach another machine, and its iptables rules and sysctls vanish
//! with it. The control plane stays on the host's 127.0.0.1. Two doors join them, both
//! user-space relays in this process:
//!
//! - [`forward_into`]: a port inside the namespace (all its addresses) relayed to the same
//!   port on the host's loopback: the kubelet, kube-proxy and pods reach the API server.
//! - [`EgressProxy`]: the API server's egress selector for cluster traffic (logs, exec,
//!   port-forward, proxy): an HTTP CONNECT proxy on a unix socket that dials node and pod
//!   addresses from inside the namespace and loopback addresses from the host, and refuses
//!   every other destination.
//!
//! A socket belongs to the namespace of the thread that created it, so each relay thread
//! enters the namespace (`setns`) before it creates its socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A network namespace made with `ip netns add`, deleted on [`NetNs::delete`].
#[derive(Clone, Debug)]
pub struct NetNs {
    pub name: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl NetNs {
    /// The path `ip netns` binds the namespace to.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Creates the namespace with loopback up and `node_ip/prefix` on a veth pair whose both
    /// ends stay inside (this kernel has no dummy links): the kubelet needs a non-loopback
    /// address, and nothing outside can be reached through it.
    pub fn create(name: &str, node_ip: Ipv4Addr, prefix: u8) -> Result<NetNs> {
        let ns = NetNs {
            name: name.to_owned(),
        };
        if ns.exists() {
            ns.delete()?;
        }
        ip(&["netns", "add", name])?;
        let steps: [&[&str]; 6] = [
            &["-n", name, "link", "set", "lo", "up"],
            &[
                "-n",
                name,
                "link",
                "add",
                "node0",
                "type",
                "veth",
                "peer",
                "name",
                "node0-end",
            ],
            &["-n", name, "link", "set", "node0", "up"],
            &["-n", name, "link", "set", "node0-end", "up"],
            &[
                "-n",
                name,
                "addr",
                "add",
                &format!("{node_ip}/{prefix}"),
                "dev",
                "node0",
            ],
            &["-n", name, "route", "add", "default", "dev", "node0"],
        ];
        for args in steps {
            if let Err(e) = ip(args) {
                let _ = ns.delete();
                return Err(e);
            }
        }
        Ok(ns)
    }

    /// Deletes the namespace (its links, addresses, routes and iptables rules go with it).
    pub fn delete(&self) -> Result<()> {
        if self.exists() {
            ip(&["netns", "delete", &self.name])?;
        }
        Ok(())
    }

    /// Moves the calling thread into the namespace.
    fn enter(&self) -> Result<()> {
        let f = std::fs::File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        // SAFETY: setns on an fd we own; it changes only the calling thread's namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("setns into the node namespace");
        }
        Ok(())
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let ns = self.clone();
        std::thread::spawn(move || {
            ns.enter()?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread in the node namespace panicked"))?
    }
}

/// Copies bytes both ways until either side closes.
fn pump<A, B>(a: A, b: B)
where
    A: Read + Write + Send + TryCloneShut + 'static,
    B: Read + Write + Send + TryCloneShut + 'static,
{
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone_box(), b.try_clone_box()) else {
        return;
    };
    let (mut a, mut b) = (a, b);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b2);
        b2.shut();
    });
    let _ = std::io::copy(&mut b, &mut a2);
    a2.shut();
    let _ = up.join();
}

/// The streams [`pump`] joins.
trait TryCloneShut: Sized {
    fn try_clone_box(&self) -> std::io::Result<Self>;
    fn shut(&self);
}

impl TryCloneShut for TcpStream {
    fn try_clone_box(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl TryCloneShut for UnixStream {
    fn try_clone_box(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// A relay that stops accepting once dropped.
pub struct Relay {
    stop: Arc<AtomicBool>,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        (self.wake)();
    }
}

/// Listens on `0.0.0.0:port` inside `ns` and relays each connection to `127.0.0.1:port` on
/// the host.
pub fn forward_into(ns: &NetNs, port: u16) -> Result<Relay> {
    let listener = ns.run(move || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .with_context(|| format!("listening on port {port} in the node namespace"))
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let ns_wake = ns.clone();
    std::thread::Builder::new()
        .name(format!("relay-{port}"))
        .spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(inside) = conn else { continue };
                std::thread::spawn(move || {
                    if let Ok(host) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
                        pump(inside, host);
                    }
                });
            }
        })?;
    Ok(Relay {
        stop,
        wake: Box::new(move || {
            // A connection from inside wakes the accept loop so that it sees the flag.
            let _ = ns_wake.run(move || {
                let _ = TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    Duration::from_secs(1),
                );
                Ok(())
            });
        }),
    })
}

/// Where the egress proxy may connect: which destinations are inside the node namespace.
#[derive(Clone, Debug)]
pub struct EgressRules {
    /// Networks (address, prefix length) that exist only inside the namespace: the node's
    /// and the pods'.
    pub inside: Vec<(Ipv4Addr, u8)>,
}

/// Where a CONNECT target is dialled from, if anywhere.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Host,
    Namespace,
    Refused,
}

fn in_net(ip: Ipv4Addr, (net, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

impl EgressRules {
    pub fn route(&self, target: &SocketAddr) -> Route {
        match target.ip() {
            IpAddr::V4(v4) if v4.is_loopback() => Route::Host,
            IpAddr::V4(v4) if self.inside.iter().any(|n| in_net(v4, *n)) => Route::Namespace,
            IpAddr::V6(v6) if v6.is_loopback() => Route::Host,
            _ => Route::Refused,
        }
    }
}

/// The API server's egress proxy for cluster traffic (see the module doc).
pub struct EgressProxy {
    pub socket: PathBuf,
    _relay: Relay,
}

impl EgressProxy {
    pub fn start(socket: &Path, ns: &NetNs, rules: EgressRules) -> Result<EgressProxy> {
        if socket.exists() {
            std::fs::remove_file(socket)?;
        }
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("listening on {}", socket.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.clone();
        std::thread::Builder::new()
            .name("egress-proxy".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (ns, rules) = (ns.clone(), rules.clone());
                    std::thread::spawn(move || {
                        let _ = serve_connect(conn, &ns, &rules);
                    });
                }
            })?;
        let path = socket.to_owned();
        Ok(EgressProxy {
            socket: socket.to_owned(),
            _relay: Relay {
                stop,
                wake: Box::new(move || {
                    let _ = UnixStream::connect(&path);
                    let _ = std::fs::remove_file(&path);
                }),
            },
        })
    }
}

/// Reads a CONNECT request's target (`host:port`) and skips its headers.
fn read_connect(reader: &mut impl BufRead) -> Result<SocketAddr> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        bail!("not a CONNECT request: {line:?}");
    };
    let target: SocketAddr = target
        .parse()
        .with_context(|| format!("CONNECT target {target:?} is not an address:port"))?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    Ok(target)
}

fn serve_connect(conn: UnixStream, ns: &NetNs, rules: &EgressRules) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let target = read_connect(&mut reader)?;
    let mut conn = conn;
    let dialled = match rules.route(&target) {
        Route::Host => TcpStream::connect_timeout(&target, Duration::from_secs(10))
            .map_err(anyhow::Error::from),
        Route::Namespace => ns.run(move || {
            Ok(TcpStream::connect_timeout(
                &target,
                Duration::from_secs(10),
            )?)
        }),
        Route::Refused => {
            conn.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n")?;
            bail!("refused CONNECT to {target}");
        }
    };
    let upstream = match dialled {
        Ok(s) => s,
        Err(e) => {
            conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")?;
            return Err(e);
        }
    };
    conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    conn.set_read_timeout(None)?;
    // Bytes the client sent after its headers were read into the buffer: pass them on.
    let pending = reader.buffer().to_vec();
    if !pending.is_empty() {
        (&upstream).write_all(&pending)?;
    }
    pump(conn, upstream);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_the_node_networks_are_reachable() {
        let rules = EgressRules {
            inside: vec![
                (Ipv4Addr::new(10, 254, 0, 0), 24),
                (Ipv4Addr::new(10, 244, 0, 0), 24),
            ],
        };
        let r = |s: &str| rules.route(&s.parse().unwrap());
        assert_eq!(r("127.0.0.1:10250"), Route::Host);
        assert_eq!(r("[::1]:10250"), Route::Host);
        assert_eq!(r("10.254.0.2:10250"), Route::Namespace);
        assert_eq!(r("10.244.0.17:8080"), Route::Namespace);
        assert_eq!(r("10.244.1.17:8080"), Route::Refused);
        assert_eq!(r("10.254.1.2:10250"), Route::Refused);
        assert_eq!(r("192.168.1.1:22"), Route::Refused);
        assert_eq!(r("8.8.8.8:53"), Route::Refused);
    }

    #[test]
    fn a_connect_request_names_its_target_and_keeps_what_follows() {
        let req = b"CONNECT 10.254.0.2:10250 HTTP/1.1\r\nHost: 10.254.0.2:10250\r\n\r\nGET / HTTP/1.1\r\n";
        let mut reader = BufReader::new(&req[..]);
        let target = read_connect(&mut reader).unwrap();
        assert_eq!(target, "10.254.0.2:10250".parse().unwrap());
        assert_eq!(reader.buffer(), b"GET / HTTP/1.1\r\n");
        let mut bad = BufReader::new(&b"GET http://x/ HTTP/1.1\r\n\r\n"[..]);
        assert!(read_connect(&mut bad).is_err());
        let mut named = BufReader::new(&b"CONNECT node-a:10250 HTTP/1.1\r\n\r\n"[..]);
        assert!(read_connect(&mut named).is_err());
    }
}
