//! Properties of the parsers `sub` applies to user input and to what a pod prints:
//! durations, `.dockerignore` rules and notebook file listings. Any input: no panic;
//! well-formed input: read back exactly.

use std::time::Duration;

use proptest::prelude::*;
use substratus_cli::archive::DockerIgnore;
use substratus_cli::commands::parse_duration;
use substratus_cli::sync::{diff, parse_listing, safe_relative};

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_duration_is_read_with_its_unit(n in 0u64..1_000_000, unit in "(ms|s|m|h|)") {
        let d = parse_duration(&format!("{n}{unit}")).unwrap();
        let want = match unit.as_str() {
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => Duration::from_secs(n),
        };
        prop_assert_eq!(d, want);
    }

    #[test]
    fn anything_else_is_an_error_naming_the_input(s in any::<String>()) {
        // Never a panic; an error quotes what was given.
        if let Err(e) = parse_duration(&s) {
            prop_assert!(e.contains(&format!("{:?}", s.trim())), "{e}");
        }
    }

    #[test]
    fn a_dockerignore_never_panics_and_its_last_matching_rule_decides(
        text in any::<String>(),
        path in "[a-z]{1,8}(/[a-z]{1,8}){0,3}",
    ) {
        if let Ok(rules) = DockerIgnore::parse(&text) {
            let _ = rules.excludes(&path);
        }
        // `x` then `!x`: included; `!x` then `x`: excluded; a parent excludes its children.
        let first = path.split('/').next().unwrap();
        let excluded_then_included = DockerIgnore::parse(&format!("{first}\n!{path}\n")).unwrap();
        prop_assert!(!excluded_then_included.excludes(&path));
        let included_then_excluded = DockerIgnore::parse(&format!("!{path}\n{path}\n")).unwrap();
        prop_assert!(included_then_excluded.excludes(&path));
        let parent = DockerIgnore::parse(&format!("/{first}/\n")).unwrap();
        prop_assert!(parent.excludes(&path));
        let sibling = format!("other{first}");
        prop_assert!(!parent.excludes(&sibling));
    }

    #[test]
    fn a_listing_keeps_only_paths_inside_the_directory(out in any::<String>()) {
        for path in parse_listing(&out).keys() {
            prop_assert!(safe_relative(path), "{path:?} escapes the directory");
            prop_assert!(!path.split('/').any(|c| c == ".."));
        }
    }

    #[test]
    fn a_listing_reads_back_what_find_printed(
        files in proptest::collection::btree_map("[a-z0-9_ .-]{0,8}[a-z0-9](/[a-z0-9_]{1,8}){0,2}", (0u64..2_000_000_000, 0u64..1 << 40), 0..20),
    ) {
        let printed: String = files
            .iter()
            .map(|(p, (t, size))| format!("{t}.0000000000 {size} {p}\n"))
            .collect();
        let listing = parse_listing(&printed);
        prop_assert_eq!(listing.len(), files.len());
        for (p, (t, size)) in &files {
            prop_assert_eq!(&listing[p], &(format!("{t}.0000000000"), *size));
        }
        // Nothing changed: nothing to copy or remove; one file grew: only it is copied.
        prop_assert_eq!(diff(&listing, &listing), (vec![], vec![]));
        if let Some((p, _)) = files.iter().next() {
            let mut grown = listing.clone();
            grown.get_mut(p).unwrap().1 += 1;
            prop_assert_eq!(diff(&listing, &grown), (vec![p.clone()], vec![]));
        }
    }
}
