//! Why a reconcile could not finish.

use std::time::Duration;

use crate::cloud::CloudError;

/// A reconcile that could not finish; the object is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step} {object}: {source}")]
    Kube {
        step: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("{step} {object}: {source}")]
    Cloud {
        step: &'static str,
        object: String,
        #[source]
        source: CloudError,
    },
    #[error("{0}")]
    Invalid(String),
    /// A role's ServiceAccount exists and is not the operator's: it is never taken over.
    #[error(
        "ServiceAccount {0} exists and is not managed by Substratus (no label app.kubernetes.io/managed-by=substratus); pods of this role would run as it, so nothing runs until it is renamed or deleted, or labelled to be managed"
    )]
    AccountNotManaged(String),
    #[error("the reconcile did not finish within {0:?}")]
    Timeout(Duration),
    /// Models that name each other as their base: none can ever start.
    #[error("spec.model makes a cycle of base Models: {}; none of them can start until one names another base", .0.join(" -> "))]
    ReferenceCycle(Vec<String>),
}

impl Error {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { step, .. } | Error::Cloud { step, .. } => step,
            Error::Invalid(_) => "invalid",
            Error::AccountNotManaged(_) => "service account not managed",
            Error::Timeout(_) => "timeout",
            Error::ReferenceCycle(_) => "reference cycle",
        }
    }
}

pub(crate) fn kube_err(
    step: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(kube::Error) -> Error {
    let object = object.into();
    move |source| Error::Kube {
        step,
        object,
        source,
    }
}
