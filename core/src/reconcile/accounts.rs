//! Role ServiceAccounts deleted by someone else.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PartialObjectMeta;

use super::Context;
use crate::watch::caches::Deletions;

/// Re-creates a role's ServiceAccount deleted by someone while Substratus objects remain in
/// its namespace (their next pods would fail to start without it), and forgets every one
/// deleted, so that a namespace deleted and created again gets its accounts again.
pub async fn restore_accounts(
    ctx: Arc<Context>,
    mut deleted: Deletions<PartialObjectMeta<ServiceAccount>>,
    in_use: impl Fn(&str) -> bool,
) {
    while let Some(sa) = deleted.next().await {
        let (Some(namespace), Some(name)) = (sa.metadata.namespace, sa.metadata.name) else {
            continue;
        };
        ctx.forget_account(&namespace, &name);
        let Some(role) = crate::names::Role::of_service_account(&name) else {
            continue;
        };
        if !in_use(&namespace) {
            continue;
        }
        match ctx.ensure_service_account(&namespace, role).await {
            Ok(()) => {
                tracing::info!(%namespace, %name, "ServiceAccount deleted by someone; created again")
            }
            // A namespace being deleted refuses new objects: nothing to restore there.
            Err(e) => tracing::debug!(%namespace, %name, error = %e, "ServiceAccount not restored"),
        }
    }
}
