//! `upload-bench`: uploading a build context the way `sub` does (pack with `.dockerignore`,
//! md5 while streaming, PUT to a signed URL) against the shell pipeline
//! `tar czf - DIR | tee OUT | md5sum` followed by `curl -T OUT` to a signed URL, on the same
//! directory of mixed files and the same local S3 server. Prints wall time and peak memory
//! side by side (each measured by `/usr/bin/time` around its own processes); passes or fails
//! on nothing.
//!
//! ```sh
//! cargo build --release -p substratus-bench
//! target/release/upload-bench --size-gib 2
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use substratus_clouds::gpu::GpuCatalog;
use substratus_clouds::kind::{KindCloud, KindSettings};
use substratus_core::Cloud;
use substratus_core::cloud::{BucketUrl, CloudConfig};
use substratus_devcluster::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

#[derive(Parser)]
#[command(
    name = "upload-bench",
    about = "sub's upload against tar | md5sum + curl"
)]
struct Args {
    /// Size of the generated directory in GiB (about 2/3 incompressible weights, 1/3 text).
    #[arg(long, default_value_t = 2.0)]
    size_gib: f64,
    /// Where to generate it (reused when it exists with the same size).
    #[arg(long, default_value = "/tmp/substratus-upload-bench")]
    dir: PathBuf,
    /// Internal: pack DIR and PUT it as `sub` does, against ENDPOINT.
    #[arg(long, hide = true, num_args = 2, value_names = ["DIR", "ENDPOINT"])]
    child: Option<Vec<String>>,
}

fn cloud(endpoint: &str) -> Result<KindCloud> {
    KindCloud::new(
        CloudConfig {
            cluster_name: "bench".into(),
            artifact_bucket: BucketUrl::parse("s3://bench").map_err(anyhow::Error::msg)?,
            registry: "registry.local".into(),
            principal: None,
            tenancy: Default::default(),
        },
        KindSettings {
            endpoint: endpoint.into(),
            public_endpoint: None,
            region: "us-east-1".into(),
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            csi_driver: "unused".into(),
            csi_secret: ("unused".into(), "unused".into()),
            registry_mirror: None,
            volumes: Default::default(),
        },
        GpuCatalog::kind(),
    )
    .map_err(anyhow::Error::msg)
}

/// Cheap pseudo-random bytes (xorshift): incompressible like model weights.
fn noise(seed: u64, out: &mut [u8]) {
    let mut x = seed | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Generates the directory: a Dockerfile, a few large weight files, many small text files.
fn generate(dir: &Path, size_gib: f64) -> Result<u64> {
    let marker = dir.join(".bench-size");
    let want = format!("{size_gib}");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return dir_size(dir);
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("weights"))?;
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM python:3.11-slim\nCOPY . /content/\n",
    )?;
    std::fs::write(dir.join(".dockerignore"), "*.tmp\n")?;
    let total = (size_gib * (1u64 << 30) as f64) as u64;
    let weights = total * 2 / 3;
    let per = weights / 4;
    let mut buf = vec![0u8; 8 << 20];
    for i in 0..4u64 {
        let mut f = std::io::BufWriter::new(std::fs::File::create(
            dir.join(format!("weights/shard-{i}.safetensors")),
        )?);
        let mut left = per;
        let mut seed = 0x9e3779b97f4a7c15 ^ i;
        while left > 0 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            noise(seed, &mut buf);
            let n = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
    }
    let text_total = total - weights;
    let file_size = 64 * 1024;
    let files = text_total / file_size as u64;
    let line = "def layer(x, weight, bias):\n    return activation(x @ weight + bias)  # sample\n";
    let body: String = line.repeat(file_size / line.len() + 1)[..file_size].to_owned();
    for i in 0..files {
        let sub = dir.join(format!("src/pkg{:03}", i % 200));
        std::fs::create_dir_all(&sub)?;
        std::fs::write(sub.join(format!("module_{i}.py")), format!("# {i}\n{body}"))?;
    }
    std::fs::write(&marker, want)?;
    dir_size(dir)
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

/// Runs `cmd` under `/usr/bin/time`: (wall seconds, peak RSS MiB) of it and its children.
fn timed(cmd: &[&str]) -> Result<(f64, f64)> {
    let out_file = tempfile_path("time");
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%e %M", "-o"])
        .arg(&out_file)
        .args(cmd)
        .status()
        .with_context(|| format!("running {cmd:?} under /usr/bin/time"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    let text = std::fs::read_to_string(&out_file)?;
    let _ = std::fs::remove_file(&out_file);
    let last = text.lines().last().unwrap_or("");
    let mut parts = last.split_whitespace();
    let wall: f64 = parts.next().context("no time")?.parse()?;
    let kib: f64 = parts.next().context("no rss")?.parse()?;
    Ok((wall, kib / 1024.0))
}

fn tempfile_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("upload-bench-{what}-{}", std::process::id()))
}

fn md5_base64(md5_hex: &str) -> String {
    substratus_cli::upload::content_md5(md5_hex)
}

async fn child(dir: &str, endpoint: &str) -> Result<()> {
    let out = tempfile_path("sub.tar.gz");
    let archive = substratus_cli::archive::pack(Path::new(dir), &out)?;
    let url = cloud(endpoint)?
        .signed_upload_url(
            "sub/uploads/latest.tar.gz",
            &archive.md5_hex,
            Duration::from_secs(600),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bar = indicatif::ProgressBar::hidden();
    substratus_cli::upload::put_file(&url.url, &archive.path, &archive.md5_hex, &bar).await?;
    let _ = std::fs::remove_file(&out);
    println!("{} {}", archive.md5_hex, archive.size);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    if let Some(c) = &args.child {
        return child(&c[0], &c[1]).await;
    }
    let bins = substratus_devcluster::locate_binaries()?;
    let s3 = S3Server::start(&bins, "bench")?;
    let endpoint = s3.endpoint();
    eprintln!(
        "generating {} GiB in {} ...",
        args.size_gib,
        args.dir.display()
    );
    let bytes = generate(&args.dir, args.size_gib)?;
    let dir = args.dir.display().to_string();
    let mib = bytes as f64 / (1 << 20) as f64;
    eprintln!("{mib:.0} MiB of input; warming the page cache ...");
    timed(&["sh", "-c", &format!("tar cf - -C {dir} . > /dev/null")])?;

    // The pipeline: archive + md5, then the PUT.
    let archive = tempfile_path("pipe.tar.gz");
    let md5_file = tempfile_path("pipe.md5");
    let (t1, m1) = timed(&[
        "sh",
        "-c",
        &format!(
            "tar czf - -C {dir} . | tee {} | md5sum > {}",
            archive.display(),
            md5_file.display()
        ),
    ])?;
    let md5 = std::fs::read_to_string(&md5_file)?
        .split_whitespace()
        .next()
        .context("no md5")?
        .to_owned();
    let url = cloud(&endpoint)?
        .signed_upload_url("pipe/uploads/latest.tar.gz", &md5, Duration::from_secs(600))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (t2, m2) = timed(&[
        "curl",
        "-sS",
        "-f",
        "-o",
        "/dev/null",
        "-T",
        &archive.display().to_string(),
        "-H",
        &format!("Content-MD5: {}", md5_base64(&md5)),
        &url.url,
    ])?;
    let pipe_size = std::fs::metadata(&archive)?.len();
    let _ = std::fs::remove_file(&archive);
    let _ = std::fs::remove_file(&md5_file);

    // sub's code path, in a process of its own.
    let me = std::env::current_exe()?;
    let me = me.display().to_string();
    let (ts, ms) = timed(&[&me, "--child", &dir, &endpoint])?;

    println!();
    println!(
        "upload of {mib:.0} MiB ({} files), local S3 server, {} cores",
        count_files(&args.dir)?,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<44} {:>10} {:>14} {:>12}",
        "", "wall (s)", "peak RSS (MiB)", "tar.gz (MiB)"
    );
    println!(
        "{:<44} {:>10.1} {:>14.1} {:>12.0}",
        "tar czf - | tee | md5sum, then curl -T",
        t1 + t2,
        m1.max(m2),
        pipe_size as f64 / (1 << 20) as f64
    );
    println!("{:<44} {:>10.1} {:>14.1}", "  (tar | md5sum)", t1, m1);
    println!("{:<44} {:>10.1} {:>14.1}", "  (curl PUT)", t2, m2);
    println!("{:<44} {:>10.1} {:>14.1}", "sub (pack + md5 + PUT)", ts, ms);
    println!("ratio sub / pipeline: {:.2}", ts / (t1 + t2));
    Ok(())
}

fn count_files(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        n += if e.file_type()?.is_dir() {
            count_files(&e.path())?
        } else {
            1
        };
    }
    Ok(n)
}
