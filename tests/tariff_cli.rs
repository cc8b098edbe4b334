//! `wattle tariff check` (issue 13): every documented example tariff is valid and summarised with
//! the digest of its canonical form; a broken one is refused with the field and the reason.

use crate::support::wattle;

fn check(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let output = wattle().arg("tariff").arg("check").args(args).env("RUST_BACKTRACE", "0").output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}

#[test]
fn every_example_tariff_checks_and_a_broken_one_names_its_field() -> anyhow::Result<()> {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tariffs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples)? {
        let path = entry?.path();
        let file = path.to_str().expect("a UTF-8 path");
        let (ok, text) = check(&[file])?;
        assert!(ok, "{file}: {text}");
        assert!(text.contains("canonical sha256: "), "{file}: {text}");
        // The canonical JSON is stable: the same file gives the same bytes twice.
        let (_, first) = check(&[file, "--json"])?;
        let (_, second) = check(&[file, "--json"])?;
        assert_eq!(first, second);
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} examples in {}", examples.display());
    let dir = tempfile::tempdir()?;
    let broken = dir.path().join("broken.toml");
    let tou = std::fs::read_to_string(examples.join("flat.toml"))?;
    std::fs::write(&broken, tou.replace("currency = \"EUR\"", "currency = \"XYZ\""))?;
    let (ok, text) = check(&[broken.to_str().expect("UTF-8")])?;
    assert!(!ok, "an unknown currency passed: {text}");
    assert!(text.contains("currency") && text.contains("XYZ"), "{text}");
    Ok(())
}
