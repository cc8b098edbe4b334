//! The gateway reaches a real broker over mutual TLS (issue 15): mosquitto with a TLS listener
//! that requires client certificates signed by the test's CA (made with `openssl`), next to the
//! plain loopback listener the simulated fleet publishes on. The gateway, given the CA and its
//! client certificate, subscribes over TLS and every reading is settled; a client without a
//! certificate, or trusting another CA, gets no session.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, MqttOptions, Transport};

use crate::support::{
    clock_args, configure_ledger, free_port, get_json, poll_until, spawn_sim, start_gateway_with, start_single_ledger,
    Mosquitto, CLUSTER_SERIAL,
};

const METERS: u32 = 3;
const SEED: u64 = 43;
const INTERVALS: u64 = 8;
const EPOCH: &str = "2026-12-01T00:00:00Z";
const SPEED: u32 = 3_600;

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl").current_dir(dir).args(args).output().context("running openssl")?;
    anyhow::ensure!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// A CA (`NAME-ca.crt`), and certificates it signed: the broker's for 127.0.0.1 (`server.*`) and a
/// client's (`client.*`). P-256 keys, PKCS#8.
fn make_pki(dir: &Path, name: &str) -> anyhow::Result<()> {
    let ca_key = format!("{name}-ca.key");
    let ca_crt = format!("{name}-ca.crt");
    openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &format!("{name}-ca.ec")])?;
    openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", &format!("{name}-ca.ec"), "-out", &ca_key])?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &ca_key,
            "-out",
            &ca_crt,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    for (leaf, extensions) in [
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"),
        ("client", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"),
    ] {
        let (ec, key, csr, crt, ext) = (
            format!("{name}-{leaf}.ec"),
            format!("{name}-{leaf}.key"),
            format!("{name}-{leaf}.csr"),
            format!("{name}-{leaf}.crt"),
            format!("{name}-{leaf}.ext"),
        );
        std::fs::write(dir.join(&ext), extensions)?;
        openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &ec])?;
        openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", &ec, "-out", &key])?;
        openssl(dir, &["req", "-new", "-key", &key, "-out", &csr, "-subj", &format!("/CN={name}-{leaf}")])?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        )?;
    }
    Ok(())
}

/// Whether an MQTT client with `transport` gets a CONNACK from the TLS listener within 10 s; why
/// not, if it does not.
async fn connects(port: u16, transport: Transport) -> Result<(), String> {
    let mut options = MqttOptions::new(format!("probe-{}", rand::random::<u32>()), "127.0.0.1", port);
    options.set_transport(transport);
    let (_client, mut event_loop) = AsyncClient::new(options, 8);
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match event_loop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
    })
    .await;
    outcome.unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_subscribes_over_mutual_tls_and_every_reading_is_settled() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    make_pki(dir.path(), "wattle")?;
    make_pki(dir.path(), "other")?;
    let tls_port = free_port();
    // Run as root (CI), mosquitto drops to its own user before it reads the key files, which the
    // test's private temporary directory hides from it: `user root` keeps it as it was started
    // (ignored when not started as root).
    let tls_listener = format!(
        "user root\nlistener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        path("wattle-ca.crt").display(),
        path("wattle-server.crt").display(),
        path("wattle-server.key").display()
    );
    let broker = Mosquitto::start(dir.path(), &tls_listener).await?;

    // Refused: no client certificate; a broker certificate from a CA the client does not trust.
    let read = |name: &str| std::fs::read(path(name));
    let refused = connects(tls_port, Transport::tls(read("wattle-ca.crt")?, None, None)).await;
    assert!(refused.is_err(), "no client certificate: connected");
    let other_client = Some((read("wattle-client.crt")?, read("wattle-client.key")?));
    let refused = connects(tls_port, Transport::tls(read("other-ca.crt")?, other_client, None)).await;
    assert!(refused.is_err(), "another CA: connected");
    let wattle_client = Some((read("wattle-client.crt")?, read("wattle-client.key")?));
    let accepted = connects(tls_port, Transport::tls(read("wattle-ca.crt")?, wattle_client, None)).await;
    assert_eq!(accepted, Ok(()), "the CA and a client certificate it signed\nbroker log:\n{}", broker.log_tail());

    // The platform with the gateway on the TLS listener; the fleet publishes on the plain one.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let clock = clock_args(EPOCH, SPEED, domain::clock::wall_clock_now().0);
    configure_ledger(dir.path(), METERS, SEED, "0.25")?;
    let (_node, ledger_url) = start_single_ledger(dir.path(), &clock).await?;
    let mut extra = Vec::new();
    for (flag, file) in [
        ("--broker-ca-file", "wattle-ca.crt"),
        ("--broker-cert-file", "wattle-client.crt"),
        ("--broker-key-file", "wattle-client.key"),
    ] {
        extra.push(flag.to_string());
        extra.push(path(file).display().to_string());
    }
    let (gateway, _gateway_url) =
        start_gateway_with(dir.path(), "gw-tls", tls_port, std::slice::from_ref(&ledger_url), &clock, &extra).await?;
    anyhow::ensure!(std::fs::read_to_string(path("gw-tls.log"))?.contains("MQTT over TLS"), "{}", gateway.log_tail());
    let _sim = spawn_sim(dir.path(), broker.port, (METERS, SEED, INTERVALS), EPOCH, &clock)?;
    poll_until("every reading settled over TLS", Duration::from_secs(120), || async {
        for meter in 0..METERS {
            let customer = firmware_sim::customer_id(meter);
            let account = get_json(&http, &format!("{ledger_url}/v1/customers/{customer}/account")).await?;
            (account["intervals_settled"].as_u64() == Some(INTERVALS)).then_some(())?;
        }
        Some(())
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\ngateway log:\n{}", gateway.log_tail()))?;
    Ok(())
}
