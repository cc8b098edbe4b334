//! Customers signed in with JWTs of the utility's OpenID Connect provider (issue 17): a billing
//! started with `--oidc-issuer/--oidc-audience/--oidc-jwks` against a running sandbox's ledger.
//! The JWTs are built here by hand (header, claims, Ed25519 or RSA signature), not by the library
//! billing verifies them with. Called from `customer_page.rs`, which has the sandbox running.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use ed25519_dalek::Signer;
use rsa::signature::SignatureEncoding;
use rsa::traits::PublicKeyParts;

use crate::process::{poll_until, Process};
use crate::support::{wattle, Sandbox};

const ISSUER: &str = "https://id.utility.example";
const AUDIENCE: &str = "wattle-billing";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT: `header.claims.signature`, signed by `sign` over the first two parts.
fn jwt(alg: &str, kid: &str, claims: &serde_json::Value, sign: &dyn Fn(&[u8]) -> Vec<u8>) -> String {
    let header = serde_json::json!({ "alg": alg, "typ": "JWT", "kid": kid });
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

fn now_s() -> i64 {
    domain::clock::wall_clock_now().0 / 1000
}

/// Claims of a customer's token valid for the next hour.
fn claims(customer: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": format!("user-{customer}"), "customer_id": customer,
        "iat": now_s(), "nbf": now_s() - 60, "exp": now_s() + 3600,
    })
}

async fn status(billing: &str, path: &str, jwt: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = reqwest::Client::new().get(format!("{billing}{path}")).bearer_auth(jwt).send().await?;
    Ok((response.status().as_u16(), response.json().await.unwrap_or_default()))
}

/// Starts a second billing on the sandbox's ledger that trusts the provider whose keys are in
/// `jwks`, and checks what it admits and refuses.
pub async fn jwt_sign_in(dir: &Path, sandbox: &Sandbox, customer: &str, api_total: &str) -> anyhow::Result<()> {
    let ed_key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let rsa_key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
    let jwks = serde_json::json!({ "keys": [
        { "kty": "OKP", "crv": "Ed25519", "x": b64(ed_key.verifying_key().as_bytes()), "kid": "ed-1",
          "alg": "EdDSA", "use": "sig" },
        { "kty": "RSA", "n": b64(&rsa_key.n().to_bytes_be()), "e": b64(&rsa_key.e().to_bytes_be()), "kid": "rsa-1",
          "alg": "RS256", "use": "sig" },
    ]});
    let jwks_path = dir.join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string())?;
    let ready = dir.join("billing-oidc.ready");
    let mut command = wattle();
    command
        .args(["billing", "--listen", "127.0.0.1:0", "--ledger", &sandbox.node_url(1)])
        .args(["--ledger-service-key", &sandbox.service_public])
        .arg("--ledger-key")
        .arg(sandbox.data.join("billing.key"))
        .args(["--database", &format!("sqlite://{}?mode=rwc", dir.join("billing-oidc.sqlite").display())])
        .arg("--tokens")
        .arg(dir.join("billing-oidc-tokens.json"))
        .args(["--oidc-issuer", ISSUER, "--oidc-audience", AUDIENCE, "--oidc-jwks"])
        .arg(&jwks_path)
        .arg("--ready-file")
        .arg(&ready);
    let mut process = Process::spawn("billing-oidc", dir, command)?;
    let billing = format!("http://{}", process.ready_address(&ready).await?);

    let ed = |input: &[u8]| ed_key.sign(input).to_bytes().to_vec();
    let rs = |input: &[u8]| rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa_key.clone()).sign(input).to_vec();
    let bill_path = format!("/v1/customers/{customer}/bill");
    let ed_token = jwt("EdDSA", "ed-1", &claims(customer), &ed);
    let bill = poll_until("the OIDC billing's bill", Duration::from_secs(60), || async {
        let (code, bill) = status(&billing, &bill_path, &ed_token).await.ok()?;
        (code == 200 && bill["total"] == api_total).then_some(bill)
    })
    .await
    .with_context(|| process.log_tail())?;
    assert_eq!(bill["customer_id"], customer);
    let (code, me) = status(&billing, "/v1/me", &ed_token).await?;
    assert_eq!((code, me["role"].as_str(), me["customer_id"].as_str()), (200, Some("customer"), Some(customer)));
    let rsa_token = jwt("RS256", "rsa-1", &claims(customer), &rs);
    assert_eq!(status(&billing, &bill_path, &rsa_token).await?.0, 200, "an RS256 token of the provider");

    let refused = |token: String, path: String, code: &'static str, status_code: u16| {
        let billing = billing.clone();
        async move {
            let (got, body) = status(&billing, &path, &token).await?;
            assert_eq!((got, body["code"].as_str().unwrap_or_default()), (status_code, code), "{body}");
            anyhow::Ok(())
        }
    };
    let other = firmware_sim::customer_id(1).to_string();
    refused(ed_token.clone(), format!("/v1/customers/{other}/bill"), "not_your_customer", 403).await?;
    let mut expired = claims(customer);
    expired["exp"] = (now_s() - 3600).into();
    refused(jwt("EdDSA", "ed-1", &expired, &ed), bill_path.clone(), "expired_token", 401).await?;
    let mut foreign = claims(customer);
    foreign["iss"] = "https://id.another-utility.example".into();
    let stranger = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let stranger_signs = |input: &[u8]| stranger.sign(input).to_bytes().to_vec();
    refused(jwt("EdDSA", "ed-1", &foreign, &stranger_signs), bill_path.clone(), "foreign_issuer", 401).await?;
    refused(jwt("EdDSA", "ed-1", &claims(customer), &stranger_signs), bill_path.clone(), "bad_signature", 401).await?;
    let mut audience = claims(customer);
    audience["aud"] = "another-service".into();
    refused(jwt("EdDSA", "ed-1", &audience, &ed), bill_path.clone(), "wrong_audience", 401).await?;
    let mut early = claims(customer);
    early["nbf"] = (now_s() + 3600).into();
    refused(jwt("EdDSA", "ed-1", &early, &ed), bill_path.clone(), "token_not_yet_valid", 401).await?;
    refused(jwt("none", "ed-1", &claims(customer), &|_| Vec::new()), bill_path.clone(), "malformed_token", 401).await?;
    refused(jwt("EdDSA", "ed-9", &claims(customer), &ed), bill_path.clone(), "unknown_key", 401).await?;
    let mut nameless = claims(customer);
    nameless.as_object_mut().context("claims")?.remove("customer_id");
    refused(jwt("EdDSA", "ed-1", &nameless, &ed), bill_path.clone(), "missing_claim", 401).await?;
    process.signal("INT")?;
    let _ = process.wait(Duration::from_secs(10)).await;
    Ok(())
}
