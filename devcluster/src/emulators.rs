//! Storage emulators on loopback ports for the cloud backends' tests: fake-gcs-server (GCS)
//! and Azurite (Azure Blob), installed by `hack/install-emulators.sh` (which prints their
//! paths; the tests read `FAKE_GCS_SERVER` / `AZURITE_BLOB`, else the script is run).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Azurite's well-known development account and key (public, documented by Microsoft).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Path of an emulator binary: `$var`, else what `hack/install-emulators.sh` installs.
fn binary(var: &str) -> Result<PathBuf> {
    if let Ok(p) = std::env::var(var)
        && !p.is_empty()
    {
        return Ok(PathBuf::from(p));
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hack/install-emulators.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed", script.display());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{var}=")).map(PathBuf::from))
        .with_context(|| format!("{} printed no {var}", script.display()))
}

fn wait_listening(name: &str, port: u16, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited before listening: {status}");
        }
        if Instant::now() > deadline {
            bail!("{name} did not listen on 127.0.0.1:{port} within 30s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A running emulator; killed and its data removed on drop.
pub struct Emulator {
    child: Child,
    pub port: u16,
    root: PathBuf,
}

impl Emulator {
    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// fake-gcs-server over plain HTTP with `bucket` created.
    pub fn fake_gcs(bucket: &str) -> Result<Emulator> {
        let bin = binary("FAKE_GCS_SERVER")?;
        let port = crate::ports::free_loopback_port()?;
        let root =
            std::env::temp_dir().join(format!("substratus-gcs-{}-{port}", std::process::id()));
        std::fs::create_dir_all(root.join("data").join(bucket))?;
        let host = format!("127.0.0.1:{port}");
        let mut child = Command::new(&bin)
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-backend",
                "memory",
            ])
            .args(["-port", &port.to_string(), "-public-host", &host])
            .args([
                "-external-url",
                &format!("http://{host}"),
                "-log-level",
                "error",
            ])
            .arg("-data")
            .arg(root.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        wait_listening("fake-gcs-server", port, &mut child)?;
        Ok(Emulator { child, port, root })
    }

    /// Azurite's Blob service (account [`AZURITE_ACCOUNT`]); it checks shared-key and SAS
    /// signatures and `Content-MD5`.
    pub fn azurite() -> Result<Emulator> {
        let bin = binary("AZURITE_BLOB")?;
        let port = crate::ports::free_loopback_port()?;
        let root =
            std::env::temp_dir().join(format!("substratus-azurite-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&root)?;
        let mut child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--silent", "--skipApiVersionCheck", "--inMemoryPersistence"])
            .current_dir(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        wait_listening("azurite", port, &mut child)?;
        Ok(Emulator { child, port, root })
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
