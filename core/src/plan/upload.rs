//! The upload handshake of `spec.build.upload`, as a state machine: sign a URL, hand it out
//! until it nears expiry, and find the declared md5 in storage. Pure: the reconciler reads
//! the stored md5 and signs URLs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use substratus_crds::{BuildUpload, UploadStatus};

use super::build::BuildSettings;
use crate::conditions::{Desired, reasons, types};

/// Whether the upload handshake needs the stored md5: not when the status already records
/// the md5 the spec asks for (nothing changed, so no storage call).
pub fn upload_needs_storage(upload: &BuildUpload, status: Option<&UploadStatus>) -> bool {
    !status
        .and_then(|s| s.stored_md5_checksum.as_deref())
        .is_some_and(|m| m.eq_ignore_ascii_case(&upload.md5_checksum))
}

/// What the upload handshake does next.
#[derive(Clone, Debug, PartialEq)]
pub enum UploadNext {
    /// The archive in storage has the md5 of the spec.
    Uploaded {
        status: UploadStatus,
        /// Found without an upload answering this request (a re-created object).
        reused: bool,
    },
    /// A (fresh) signed URL is needed: a new request, none yet, or the old one expired.
    Sign,
    /// The URL in status is valid; the client has not uploaded (or uploaded other bytes).
    Waiting {
        status: UploadStatus,
        /// The md5 of what is stored, when it is not the declared one.
        mismatch: Option<String>,
    },
}

impl BuildSettings {
    /// A URL this close to its expiry is replaced rather than handed out: a tenth of its
    /// lifetime, at most 30 s (never the whole lifetime, which would renew in a loop).
    pub fn renew_margin_secs(&self) -> i64 {
        (self.upload_url_ttl.as_secs() / 10).min(30) as i64
    }
}

/// The upload handshake after reading the stored md5 (`None`: nothing stored).
pub fn upload_next(
    upload: &BuildUpload,
    status: Option<&UploadStatus>,
    stored: Option<&str>,
    now_unix: i64,
    renew_margin_secs: i64,
) -> UploadNext {
    let declared = upload.md5_checksum.to_ascii_lowercase();
    if stored.is_some_and(|s| s.eq_ignore_ascii_case(&declared)) {
        let answered = status.is_some_and(|s| s.request_id.as_deref() == Some(&upload.request_id));
        return UploadNext::Uploaded {
            status: UploadStatus {
                signed_url: None,
                request_id: Some(upload.request_id.clone()),
                expiration: None,
                stored_md5_checksum: Some(declared),
            },
            reused: !answered,
        };
    }
    let current = status.filter(|s| {
        s.request_id.as_deref() == Some(&upload.request_id)
            && s.signed_url.is_some()
            && s.expiration
                .as_ref()
                .is_some_and(|t| t.0.as_second() > now_unix + renew_margin_secs)
    });
    match current {
        None => UploadNext::Sign,
        Some(s) => UploadNext::Waiting {
            status: UploadStatus {
                stored_md5_checksum: None,
                ..s.clone()
            },
            mismatch: stored.map(str::to_owned),
        },
    }
}

/// The status answering a request with a freshly signed URL.
pub fn signed_status(upload: &BuildUpload, url: String, expires_at_unix: i64) -> UploadStatus {
    UploadStatus {
        signed_url: Some(url),
        request_id: Some(upload.request_id.clone()),
        expiration: jiff::Timestamp::from_second(expires_at_unix).ok().map(Time),
        stored_md5_checksum: None,
    }
}

/// The `Uploaded` condition of a handshake state.
pub fn uploaded_condition(
    upload: &BuildUpload,
    status: &UploadStatus,
    next: &UploadNext,
) -> Desired {
    let md5 = upload.md5_checksum.to_ascii_lowercase();
    match next {
        UploadNext::Uploaded { reused: true, .. } => Desired::new(
            types::UPLOADED,
            true,
            reasons::UPLOAD_FOUND,
            format!("an upload with md5 {md5} already in storage is reused"),
        ),
        UploadNext::Uploaded { reused: false, .. } => Desired::new(
            types::UPLOADED,
            true,
            reasons::UPLOAD_FOUND,
            format!("upload with md5 {md5} found in storage"),
        ),
        UploadNext::Waiting {
            mismatch: Some(stored),
            ..
        } => Desired::new(
            types::UPLOADED,
            false,
            reasons::UPLOAD_MISMATCH,
            format!(
                "the stored archive has md5 {stored}, not spec.build.upload.md5Checksum {md5}; upload it again to status.buildUpload.signedURL"
            ),
        ),
        UploadNext::Waiting { .. } | UploadNext::Sign => Desired::new(
            types::UPLOADED,
            false,
            reasons::AWAITING_UPLOAD,
            format!(
                "waiting for an upload with md5 {md5}: PUT the tar.gz to status.buildUpload.signedURL{}",
                status
                    .expiration
                    .as_ref()
                    .map(|t| format!(" before {}", t.0))
                    .unwrap_or_default()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "0123456789abcdef0123456789ABCDEF";

    fn upload(request: &str) -> BuildUpload {
        BuildUpload {
            md5_checksum: MD5.into(),
            request_id: request.into(),
        }
    }

    fn status(request: &str, url: Option<&str>, expires: i64) -> UploadStatus {
        UploadStatus {
            signed_url: url.map(Into::into),
            request_id: Some(request.into()),
            expiration: jiff::Timestamp::from_second(expires).ok().map(Time),
            stored_md5_checksum: None,
        }
    }

    #[test]
    fn the_upload_handshake() {
        let up = upload("r1");
        let now = 1_000_000;
        // Nothing stored, no status: sign.
        assert_eq!(upload_next(&up, None, None, now, 30), UploadNext::Sign);
        // A valid URL for this request: wait, without signing again.
        let s = status("r1", Some("https://u"), now + 200);
        assert!(matches!(
            upload_next(&up, Some(&s), None, now, 30),
            UploadNext::Waiting { mismatch: None, .. }
        ));
        // Expired (or about to): a fresh URL.
        let old = status("r1", Some("https://u"), now + 10);
        assert_eq!(
            upload_next(&up, Some(&old), None, now, 30),
            UploadNext::Sign
        );
        // A new request: a fresh URL.
        let other = status("r0", Some("https://u"), now + 200);
        assert_eq!(
            upload_next(&up, Some(&other), None, now, 30),
            UploadNext::Sign
        );
        // Other bytes stored: a mismatch, named.
        let next = upload_next(
            &up,
            Some(&s),
            Some("ffffffffffffffffffffffffffffffff"),
            now,
            30,
        );
        let UploadNext::Waiting {
            mismatch: Some(m), ..
        } = &next
        else {
            panic!("{next:?}")
        };
        assert_eq!(m, "ffffffffffffffffffffffffffffffff");
        let c = uploaded_condition(&up, &s, &next);
        assert_eq!((c.status, c.reason), (false, reasons::UPLOAD_MISMATCH));
        // The declared bytes stored in answer to this request: uploaded.
        let next = upload_next(&up, Some(&s), Some(&MD5.to_ascii_lowercase()), now, 30);
        let UploadNext::Uploaded {
            status: done,
            reused,
        } = &next
        else {
            panic!("{next:?}")
        };
        assert!(!reused);
        assert_eq!(done.signed_url, None);
        assert_eq!(
            done.stored_md5_checksum.as_deref(),
            Some(MD5.to_ascii_lowercase().as_str())
        );
        assert!(!upload_needs_storage(&up, Some(done)));
        assert!(upload_needs_storage(&up, Some(&s)));
        // Already in storage before any request (a re-created object): reused.
        assert!(matches!(
            upload_next(&up, None, Some(MD5), now, 30),
            UploadNext::Uploaded { reused: true, .. }
        ));
    }
}
