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
            prop_assert!(!path.split('/').any(|c| c == ".." || c.starts_with('.')));
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
        // Hidden names (`.git/…`, `.bashrc`) are never read back: the image writes the listing.
        let hidden = |p: &str| p.split('/').any(|c| c.starts_with('.'));
        let shown: Vec<_> = files.iter().filter(|(p, _)| !hidden(p)).collect();
        prop_assert_eq!(listing.len(), shown.len());
        for (p, (t, size)) in &shown {
            prop_assert_eq!(&listing[*p], &(format!("{t}.0000000000"), *size));
        }
        // Nothing changed: nothing to copy or remove; one file grew: only it is copied.
        prop_assert_eq!(diff(&listing, &listing), (vec![], vec![]));
        if let Some(&(p, _)) = shown.first() {
            let mut grown = listing.clone();
            grown.get_mut(p).unwrap().1 += 1;
            prop_assert_eq!(diff(&listing, &grown), (vec![p.clone()], vec![]));
        }
    }
}

#[test]
fn notebook_files_are_listed_and_copied_with_busybox_tools() {
    use std::process::Command;
    let applets = substratus_tests::kubelet::busybox_applets(&["sh", "find", "stat", "tar"]);
    let bin = applets.path();
    let sh = bin.join("sh");
    let content = tempfile::tempdir().unwrap();
    for (rel, body) in [
        ("nb.ipynb", "{}"),
        ("src/x.py", "print(1)"),
        ("with space.txt", "s"),
        ("data/big.bin", "mounted"),
        ("model/w.bin", "mounted"),
        ("artifacts/out.bin", "mounted"),
        (".git/HEAD", "hidden"),
        ("src/.ipynb_checkpoints/x.py", "hidden"),
    ] {
        let p = content.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    // GNU find's -printf, which the listing once used, is not there.
    let gnu = Command::new(&sh)
        .args(["-c", "find . -printf '%P\\n'"])
        .env("PATH", bin)
        .current_dir(content.path())
        .output()
        .unwrap();
    assert!(!gnu.status.success(), "busybox find has no -printf");

    let out = Command::new(&sh)
        .args(["-c", substratus_cli::sync::LIST])
        .env("PATH", bin)
        .current_dir(content.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = parse_listing(&String::from_utf8_lossy(&out.stdout));
    let names: Vec<&str> = listing.keys().map(String::as_str).collect();
    assert_eq!(names, ["nb.ipynb", "src/x.py", "with space.txt"]);
    assert_eq!(listing["src/x.py"].1, 8);

    let wanted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let tar = Command::new(&sh)
        .args(["-c", substratus_cli::sync::COPY, "sh"])
        .args(&wanted)
        .env("PATH", bin)
        .current_dir(content.path())
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let local = tempfile::tempdir().unwrap();
    substratus_cli::sync::unpack_into(&tar.stdout[..], &wanted, local.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(local.path().join("src/x.py")).unwrap(),
        "print(1)"
    );
    assert_eq!(
        std::fs::read_to_string(local.path().join("with space.txt")).unwrap(),
        "s"
    );
    assert!(!local.path().join("data").exists());
}
