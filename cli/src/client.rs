//! Connecting to the cluster like kubectl: `--kubeconfig` (else every file of `$KUBECONFIG`
//! merged, else `~/.kube/config`, else in-cluster), `--context` (else the current context),
//! and the namespace from `-n`, else the manifest, else the context's, else `default`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Flags every command shares.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Path to the kubeconfig file (default: the files of $KUBECONFIG merged, else
    /// ~/.kube/config, else the in-cluster account).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the manifest's, else the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// A client and the namespace of the current context.
pub struct Cluster {
    pub client: Client,
    pub context_namespace: String,
    pub flag_namespace: Option<String>,
}

/// Installs the one TLS crypto provider of the process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

impl Cluster {
    pub async fn connect(args: &ClusterArgs) -> Result<Cluster> {
        install_crypto_provider();
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..Default::default()
        };
        let kubeconfig = match &args.kubeconfig {
            Some(path) => Some(
                Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?,
            ),
            // Every file of KUBECONFIG, merged as kubectl merges them (the first to name a
            // context, cluster or user wins), else ~/.kube/config.
            None => match Kubeconfig::read() {
                Ok(kc) => Some(kc),
                Err(_) if std::env::var_os("KUBECONFIG").is_none() && args.context.is_none() => {
                    None
                }
                Err(e) => {
                    return Err(e).context("reading the kubeconfig (KUBECONFIG or ~/.kube/config)");
                }
            },
        };
        let config = match kubeconfig {
            Some(kc) => Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| match &args.context {
                    Some(c) => format!("using context {c:?} of the kubeconfig"),
                    None => "using the kubeconfig's current context".to_owned(),
                })?,
            None => Config::incluster()
                .context("no kubeconfig found (--kubeconfig, KUBECONFIG or ~/.kube/config) and not running in a cluster")?,
        };
        let context_namespace = config.default_namespace.clone();
        let client = Client::try_from(config).context("creating the Kubernetes client")?;
        Ok(Cluster {
            client,
            context_namespace,
            flag_namespace: args.namespace.clone(),
        })
    }

    /// The namespace for an object whose manifest names `manifest_ns`.
    pub fn namespace_for(&self, manifest_ns: Option<&str>) -> Result<String> {
        resolve_namespace(
            self.flag_namespace.as_deref(),
            manifest_ns,
            &self.context_namespace,
        )
    }
}

/// kubectl's rule: the flag wins, but a manifest naming another namespace is an error.
pub fn resolve_namespace(
    flag: Option<&str>,
    manifest: Option<&str>,
    context: &str,
) -> Result<String> {
    match (flag, manifest) {
        (Some(f), Some(m)) if f != m => bail!(
            "the namespace from the manifest ({m}) does not match the namespace of -n/--namespace ({f})"
        ),
        (Some(f), _) => Ok(f.to_owned()),
        (None, Some(m)) if !m.is_empty() => Ok(m.to_owned()),
        _ => Ok(if context.is_empty() {
            "default".to_owned()
        } else {
            context.to_owned()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_resolve_like_kubectl() {
        assert_eq!(resolve_namespace(None, None, "ctx").unwrap(), "ctx");
        assert_eq!(resolve_namespace(None, None, "").unwrap(), "default");
        assert_eq!(resolve_namespace(None, Some("m"), "ctx").unwrap(), "m");
        assert_eq!(resolve_namespace(Some("f"), None, "ctx").unwrap(), "f");
        assert_eq!(resolve_namespace(Some("f"), Some("f"), "ctx").unwrap(), "f");
        let e = resolve_namespace(Some("f"), Some("m"), "ctx").unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
    }
}
