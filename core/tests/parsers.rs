//! Properties of the parsers the operator applies to user input: bucket URLs, secret
//! references and image tags. Any input: no panic; well-formed input: read back exactly.

use proptest::prelude::*;
use substratus_core::cloud::BucketUrl;
use substratus_core::env::secret_reference;
use substratus_core::plan::build::image_tag;
use substratus_crds::{Build, BuildGit, BuildUpload};

fn segment() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,20}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_bucket_url_reads_back_what_it_prints(s in any::<String>()) {
        if let Ok(url) = BucketUrl::parse(&s) {
            prop_assert!(!url.bucket.is_empty() && !url.scheme.is_empty());
            prop_assert!(!url.path.starts_with('/') && !url.path.ends_with('/'));
            prop_assert_eq!(BucketUrl::parse(&url.to_string()), Ok(url));
        }
    }

    #[test]
    fn a_well_formed_bucket_url_parses_to_its_parts(
        scheme in "(gs|s3|az|fake)",
        bucket in segment(),
        path in proptest::collection::vec(segment(), 0..4),
        slashes in 0usize..3,
    ) {
        let path = path.join("/");
        let text = format!("{scheme}://{bucket}/{path}{}", "/".repeat(slashes));
        let url = BucketUrl::parse(&text).unwrap();
        prop_assert_eq!((url.scheme.as_str(), url.bucket.as_str(), url.path.as_str()), (scheme.as_str(), bucket.as_str(), path.as_str()));
        // Joining stays inside the location.
        let joined = url.join("artifacts");
        prop_assert!(joined.to_string().starts_with(&url.to_string()));
    }

    #[test]
    fn a_secret_reference_is_read_only_from_its_exact_form(s in any::<String>()) {
        if let Some((name, key)) = secret_reference(&s) {
            prop_assert!(!name.is_empty() && !key.is_empty());
            prop_assert!(!key.contains('.'), "the key is after the last dot");
            prop_assert!(s.contains(name) && s.contains(key));
            prop_assert!(s.trim().starts_with("${{") && s.trim().ends_with("}}"));
        }
    }

    #[test]
    fn a_secret_reference_names_its_secret_and_key(
        name in "[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?",
        key in "[-_A-Za-z0-9]{1,20}",
        (a, b, c) in (0usize..3, 0usize..3, 0usize..2),
    ) {
        let value = format!("{}${{{{{}secrets.{name}.{key}{}}}}}", " ".repeat(c), " ".repeat(a), " ".repeat(b));
        prop_assert_eq!(secret_reference(&value), Some((name.as_str(), key.as_str())));
        // Anything else around it makes it a literal.
        let literal = format!("x{value}");
        prop_assert_eq!(secret_reference(&literal), None);
    }

    #[test]
    fn image_tags_are_valid_and_follow_the_whole_source(
        url in any::<String>(),
        path in proptest::option::of(any::<String>()),
        branch in proptest::option::of(any::<String>()),
        tag in proptest::option::of(any::<String>()),
        other_url in any::<String>(),
    ) {
        let git = BuildGit { url, path, branch, tag, credentials_secret: None };
        let build = Build { git: Some(git.clone()), upload: None };
        let t = image_tag(&build);
        let valid = t.len() <= 128
            && t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        prop_assert!(valid, "{t:?} is not a valid image tag");
        prop_assert_eq!(image_tag(&build), t.clone(), "the same source, the same tag");
        if other_url != git.url {
            let moved = Build { git: Some(BuildGit { url: other_url, ..git }), upload: None };
            prop_assert_ne!(image_tag(&moved), t, "another url, another tag");
        }
    }

    #[test]
    fn an_upload_is_tagged_with_its_md5(md5 in "[0-9a-fA-F]{32}") {
        let build = Build { git: None, upload: Some(BuildUpload { md5_checksum: md5.clone(), request_id: "r".into() }) };
        prop_assert_eq!(image_tag(&build), md5.to_ascii_lowercase());
    }
}
