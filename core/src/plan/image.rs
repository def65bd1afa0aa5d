//! The image a build pushes: named after the object and tagged after its source, so that
//! a change of source is a new image and the image in `spec.image` says which source it is.

use substratus_crds::Build;

use super::Parent;
use crate::cloud::Cloud;

/// The image tag of a source. An upload: its md5. Git: the tag, else the branch, else
/// `latest`, made a valid tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`: a branch `feature/x`
/// reads `feature-x`), then `-` and 8 hex digits of the whole git source (url, path,
/// branch, tag): a change of any of them, or two branches that read alike, is a new tag and
/// so a new build.
pub fn image_tag(build: &Build) -> String {
    let (raw, source) = match (&build.git, &build.upload) {
        (Some(g), _) => (
            g.tag
                .as_deref()
                .filter(|t| !t.is_empty())
                .or(g.branch.as_deref().filter(|b| !b.is_empty()))
                .unwrap_or("latest")
                .to_owned(),
            Some(super::spec_hash(g)),
        ),
        (None, Some(u)) => (u.md5_checksum.to_ascii_lowercase(), None),
        (None, None) => ("latest".to_owned(), None),
    };
    let room = if source.is_some() { 128 - 9 } else { 128 };
    let mut tag: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    if tag.starts_with(['.', '-']) {
        tag.replace_range(0..1, "_");
    }
    if let Some(hash) = source {
        tag.push('-');
        tag.extend(hash.chars().filter(char::is_ascii_hexdigit).take(8));
    }
    tag
}

/// The image a build of `parent` from `build` pushes.
pub fn target_image(parent: &Parent, build: &Build, cloud: &dyn Cloud) -> String {
    cloud.image_url(
        parent.kind,
        &parent.namespace,
        &parent.name,
        &image_tag(build),
    )
}

/// The source a build Job builds, as recorded on it: changes of it rebuild.
pub fn source_id(build: &Build) -> String {
    match (&build.git, &build.upload) {
        (Some(g), _) => super::spec_hash(g),
        (None, Some(u)) => format!("upload-{}", u.md5_checksum.to_ascii_lowercase()),
        (None, None) => "none".into(),
    }
}

/// The image the workload runs: `spec.image` when there is no build, or when it is the image
/// built from the current source.
pub fn effective_image<'a>(
    parent: &Parent,
    image: Option<&'a str>,
    build: Option<&Build>,
    cloud: &dyn Cloud,
) -> Option<&'a str> {
    match build {
        None => image,
        Some(b) => image.filter(|i| *i == target_image(parent, b, cloud)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeCloud;

    use crate::plan::fixtures::{MD5, git, parent, upload};

    #[test]
    fn image_tags_follow_the_source_and_are_valid_tags() {
        // The readable part, then 8 hex digits of the whole source.
        let readable = |b: &Build| {
            let t = image_tag(b);
            let (head, hash) = t.rsplit_once('-').unwrap();
            assert!(
                hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit()),
                "{t}"
            );
            head.to_owned()
        };
        assert_eq!(readable(&git(Some("v1.2"), Some("main"), None)), "v1.2");
        assert_eq!(readable(&git(None, Some("feature/x"), None)), "feature-x");
        assert_eq!(readable(&git(None, Some("-x"), None)), "_x");
        assert_eq!(readable(&git(None, None, None)), "latest");
        assert_eq!(image_tag(&upload("r")), MD5.to_ascii_lowercase());
        assert_eq!(image_tag(&Build::default()), "latest");
        let long = "b".repeat(300);
        assert_eq!(image_tag(&git(None, Some(&long), None)).len(), 128);
        // Any change of the source is a new tag: branches that read alike, another path,
        // another repository.
        let tag = |b: Build| image_tag(&b);
        assert_ne!(
            tag(git(None, Some("feature/x"), None)),
            tag(git(None, Some("feature-x"), None))
        );
        assert_ne!(
            tag(git(None, Some("main"), Some("a"))),
            tag(git(None, Some("main"), Some("b")))
        );
        let mut other = git(None, Some("main"), None);
        other.git.as_mut().unwrap().url = "https://example.com/fork.git".into();
        assert_ne!(tag(git(None, Some("main"), None)), tag(other));
        // The same source, the same tag.
        assert_eq!(
            tag(git(Some("v1"), None, None)),
            tag(git(Some("v1"), None, None))
        );
        let cloud = FakeCloud::default();
        let v1 = git(Some("v1"), None, None);
        assert_eq!(
            target_image(&parent(), &v1, &cloud),
            format!(
                "registry.test/substratus/test-cluster-model-ns__m:{}",
                image_tag(&v1)
            )
        );
    }

    #[test]
    fn only_the_image_of_the_current_source_runs() {
        let cloud = FakeCloud::default();
        let b = git(Some("v2"), None, None);
        let old = target_image(&parent(), &git(Some("v1"), None, None), &cloud);
        let new = target_image(&parent(), &b, &cloud);
        assert_eq!(
            effective_image(&parent(), Some(&old), Some(&b), &cloud),
            None
        );
        assert_eq!(
            effective_image(&parent(), Some(&new), Some(&b), &cloud),
            Some(new.as_str())
        );
        assert_eq!(
            effective_image(&parent(), Some("x"), None, &cloud),
            Some("x")
        );
    }
}
