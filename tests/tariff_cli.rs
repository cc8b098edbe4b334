//! `wattle tariff check` and `wattle tariff publish` (issue 13): every documented example tariff
//! is valid and summarised with the digest of its canonical form; a broken one is refused with
//! the field and the reason; a published one is listed by the ledger under the same digest, and
//! the ledger refuses a second version from the same time and a document that is not canonical.

use std::time::Duration;

use domain::tx::{AdminAction, SignedAdmin};

use crate::support::{configure_ledger, start_single_ledger, wattle, CLUSTER_SERIAL};

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

fn digest_of(text: &str) -> Option<String> {
    text.split("canonical sha256 ")
        .nth(1)
        .or_else(|| text.split("canonical sha256: ").nth(1))
        .map(|rest| rest.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_tariff_is_listed_and_a_second_one_from_the_same_time_is_refused() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    configure_ledger(dir.path(), 2, 7, "0.30")?;
    let (_node, url) = start_single_ledger(dir.path(), &[]).await?;
    let key = dir.path().join("operator.key");
    let tou = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tariffs/tou.toml");
    let publish = || {
        wattle()
            .args(["tariff", "publish"])
            .arg(&tou)
            .args(["--ledger", &url, "--operator-key"])
            .arg(&key)
            .env("RUST_BACKTRACE", "0")
            .output()
    };
    let output = publish()?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "publish failed: {text}");
    let (_, checked) = check(&[tou.to_str().expect("UTF-8")])?;
    let digest = digest_of(&checked).expect("check prints the digest");
    assert_eq!(digest_of(&text).as_deref(), Some(digest.as_str()), "{text}");

    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    let listed: Vec<serde_json::Value> = http.get(format!("{url}/v1/tariffs")).send().await?.json().await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], "de-tou-2026");
    assert_eq!(listed[0]["sha256"], digest.as_str());

    // The same version again: refused by the state machine's rule, before the log.
    let output = publish()?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "a second version from the same time was published: {text}");
    assert!(text.contains("tariff_version_exists"), "{text}");

    // A valid tariff in another spelling (not canonical JSON) is refused with its reason.
    let (_, canonical) = check(&[tou.to_str().expect("UTF-8"), "--json"])?;
    let pretty = serde_json::to_vec_pretty(&serde_json::from_str::<serde_json::Value>(canonical.trim())?)?;
    let config: serde_json::Value = http.get(format!("{url}/v1/config")).send().await?.json().await?;
    let nonce = config["admin_nonce"].as_u64().expect("a nonce") + 1;
    let operator = ledger::node::read_signing_key(&key)?;
    let admin = SignedAdmin::sign(nonce, AdminAction::PublishTariff { tariff_json: pretty }, &operator);
    let refused = ledger::node::submit_admin_to(&http, &url, &admin).await.expect_err("not canonical");
    assert!(refused.to_string().contains("bad_tariff"), "{refused}");
    let listed: Vec<serde_json::Value> = http.get(format!("{url}/v1/tariffs")).send().await?.json().await?;
    assert_eq!(listed.len(), 1, "a refused tariff was listed: {listed:?}");
    Ok(())
}
