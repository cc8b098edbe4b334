//! Private reads need an entitled caller (issue 15). On the sandbox's authenticated cluster every
//! endpoint that shows a household's data — account, statements, intervals, a transaction's
//! claims, the history — is refused without credentials (401), with a stranger's key (403
//! `not_entitled`), and with a signature made for another customer's path (401); it is served to
//! billing's registered reader key and to a member's key. Billing, signing with its key, serves
//! the running bill; once governance revokes billing as a reader, the ledger refuses it.

use std::time::Duration;

use anyhow::Context;
use ed25519_dalek::SigningKey;

use crate::support::{poll_until, Sandbox, CLUSTER_SERIAL};

async fn get(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    key: Option<&SigningKey>,
    signed_path: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut request = http.get(format!("{url}{path}"));
    if let Some(key) = key {
        let now_ms = domain::clock::wall_clock_now().0;
        for (name, value) in domain::client_read::sign_request(key, "GET", signed_path.unwrap_or(path), now_ms) {
            request = request.header(name, value);
        }
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_reads_are_served_only_to_entitled_callers() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let sandbox = Sandbox::start(dir.path(), "sandbox", 2, &[]).await?;
    let data = sandbox.data.clone();
    let banner = std::fs::read_to_string(&sandbox.terminal)?;
    let billing_url = banner
        .lines()
        .find(|line| line.trim_start().starts_with("billing "))
        .and_then(|line| line.split_whitespace().nth(1))
        .context("the banner names billing's address")?
        .to_string();
    let url = sandbox.node_url(1);
    // Trusts the nodes the service key endorses, as any client of the TLS ledger must.
    let http = sandbox.ledger_client()?;
    let customer = firmware_sim::customer_id(0);
    let other = firmware_sim::customer_id(1);

    // A settled readings transaction, for its claims.
    let tx_id = poll_until("a settled readings transaction", Duration::from_secs(60), || async {
        let page = crate::support::get_json(&http, &format!("{url}/v1/transactions?from=0")).await?;
        let found = page["transactions"].as_array()?.iter().find(|t| t["kind"] == "readings")?.clone();
        Some(found["tx_id"].as_str()?.to_string())
    })
    .await?;
    let billing = ledger::node::read_signing_key(&data.join("billing.key"))?;
    let member = ledger::node::read_signing_key(&data.join("supplier.key"))?;
    let stranger = SigningKey::from_bytes(&[77; 32]);
    let private = [
        format!("/v1/customers/{customer}/account"),
        format!("/v1/customers/{customer}/statements"),
        format!("/v1/customers/{customer}/intervals"),
        format!("/v1/transactions/{tx_id}/claims"),
        "/v1/history?from=0&limit=1".to_string(),
    ];
    for path in &private {
        let (status, body) = get(&http, &url, path, None, None).await?;
        assert_eq!((status, body["code"].as_str()), (401, Some("missing_client_credentials")), "{path}: {body}");
        let (status, body) = get(&http, &url, path, Some(&stranger), None).await?;
        assert_eq!((status, body["code"].as_str()), (403, Some("not_entitled")), "{path}: {body}");
        let (status, body) = get(&http, &url, path, Some(&billing), None).await?;
        assert_eq!(status, 200, "billing's reader key on {path}: {body}");
        let (status, body) = get(&http, &url, path, Some(&member), None).await?;
        assert_eq!(status, 200, "a member's key on {path}: {body}");
    }
    // A signature is for one path: billing's read of one customer does not open another's.
    let signed_for = format!("/v1/customers/{customer}/account");
    let (status, body) =
        get(&http, &url, &format!("/v1/customers/{other}/account"), Some(&billing), Some(&signed_for)).await?;
    assert_eq!((status, body["code"].as_str()), (401, Some("bad_client_signature")), "{body}");
    // The meter registry stays public (gateways verify with it), but names households only by
    // keyed-hash ids unless the caller is entitled.
    let (status, anonymous) = get(&http, &url, "/v1/meters", None, None).await?;
    assert_eq!(status, 200, "{anonymous}");
    let customers = |listing: &serde_json::Value| -> Vec<String> {
        listing.as_array().into_iter().flatten().filter_map(|m| m["customer_id"].as_str().map(String::from)).collect()
    };
    let hidden = customers(&anonymous);
    assert!(!hidden.is_empty() && hidden.iter().all(|id| id.starts_with("h-") && id.len() == 32), "{anonymous}");
    assert!(!hidden.contains(&customer.to_string()), "an anonymous meter listing names a customer: {anonymous}");
    let (_, signed) = get(&http, &url, "/v1/meters", Some(&billing), None).await?;
    assert!(customers(&signed).contains(&customer.to_string()), "billing's listing lacks {customer}: {signed}");
    // Governance records are public, the households they name are not: the sandbox's
    // configuration proposal registered and bound this customer's meters.
    let (status, proposals) = get(&http, &url, "/v1/gov/proposals", None, None).await?;
    assert_eq!(status, 200, "{proposals}");
    let text = proposals.to_string();
    assert!(text.contains("register meter") && text.contains("h-"), "{proposals}");
    assert!(
        !text.contains(&customer.to_string()) && !text.contains("WTL000000000"),
        "an anonymous reader sees households: {text}"
    );
    let (_, for_member) = get(&http, &url, "/v1/gov/proposals", Some(&member), None).await?;
    assert!(
        for_member.to_string().contains(&customer.to_string()),
        "a member sees the households it decided on: {for_member}"
    );
    // Public reads stay public: the transaction list and receipts name no household.
    assert_eq!(get(&http, &url, "/v1/transactions?from=0", None, None).await?.0, 200);

    // Billing signs its reads with its key: the running bill is served.
    let billing_http = sandbox.billing_client()?;
    let (status, body) =
        get(&billing_http, &billing_url, &format!("/v1/customers/{customer}/bill"), None, None).await?;
    assert_eq!(status, 200, "billing's bill: {body}");

    // Governance revokes billing as a reader: from then on the ledger refuses it.
    sandbox
        .pass(&url, "title = \"revoke billing\"\n[[action]]\nkind = \"revoke_reader\"\nreader_id = \"billing\"\n")?;
    let path = &private[0];
    poll_until("billing's key refused after its revocation", Duration::from_secs(20), || async {
        let (status, body) = get(&http, &url, path, Some(&billing), None).await.ok()?;
        (status == 403 && body["code"] == "not_entitled").then_some(())
    })
    .await?;
    // Billing's feed hears the refusal on its next read of the stream; from then on it shows nothing.
    let bill_path = format!("/v1/customers/{customer}/bill");
    poll_until("billing answers ledger_refused", Duration::from_secs(20), || async {
        let (status, body) = get(&billing_http, &billing_url, &bill_path, None, None).await.ok()?;
        (status == 502 && body["code"] == "ledger_refused").then_some(())
    })
    .await?;
    let metrics = http.get(format!("{url}/metrics")).send().await?.text().await?;
    assert!(metrics.contains("wattle_ledger_private_reads_refused_total{reason=\"not_entitled\"}"), "{metrics}");
    // The nodes' log lines name the customer by its keyed-hash id, never its id.
    let log = std::fs::read_to_string(sandbox.data.join("sandbox.log"))?;
    let node_lines: Vec<&str> = log.lines().filter(|line| line.contains("private read")).collect();
    assert!(node_lines.iter().any(|line| line.contains("/v1/customers/h-")), "{node_lines:?}");
    assert!(node_lines.iter().all(|line| !line.contains(&customer.to_string())), "{node_lines:?}");
    sandbox.stop().await
}
