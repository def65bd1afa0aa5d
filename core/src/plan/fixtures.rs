//! What the planners' tests share: a parent and build sources.

use substratus_crds::{Build, BuildGit, BuildUpload};

use super::Parent;

/// The `artifacts/` folder of a referenced Model at `url`.
pub fn folder(url: &str) -> crate::cloud::PrefixFolder {
    crate::cloud::PrefixFolder {
        kind: crate::names::Kind::Model,
        namespace: "ns".into(),
        name: "ref".into(),
        folder: "artifacts",
        url: crate::cloud::BucketUrl::parse(url).unwrap(),
    }
}

pub const MD5: &str = "0123456789abcdef0123456789ABCDEF";

pub fn parent() -> Parent {
    Parent {
        kind: crate::names::Kind::Model,
        name: "m".into(),
        namespace: "ns".into(),
        uid: "u".into(),
        generation: Some(3),
    }
}

pub fn upload(request: &str) -> Build {
    Build {
        git: None,
        upload: Some(BuildUpload {
            md5_checksum: MD5.into(),
            request_id: request.into(),
        }),
    }
}

pub fn git(tag: Option<&str>, branch: Option<&str>, path: Option<&str>) -> Build {
    Build {
        git: Some(BuildGit {
            url: "https://example.com/r.git".into(),
            path: path.map(Into::into),
            branch: branch.map(Into::into),
            tag: tag.map(Into::into),
            credentials_secret: None,
        }),
        upload: None,
    }
}
