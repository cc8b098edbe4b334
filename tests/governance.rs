//! Consortium governance through the member CLI and the API, on a real node (issue 14). The
//! admin configuration hands the ledger to four members at genesis; from then on the operator
//! key is refused, and each rule kind decides exactly when the constitution says: a majority on
//! its second approval, unanimity on its last, M of N (auditors voting) on its M-th, a veto holder
//! stops what the majority wanted. Forged, non-member, second and expired ballots are refused
//! with their reasons; a constitution change decides only the proposals made after it; a meter
//! registered by governance is accepted end to end; `wattle audit` replays every act.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use domain::api::{OutcomeStatus, SubmitReadings, SubmitReadingsResponse};
use domain::ids::{GatewayId, KeyId, MeterId, Sequence, UnixSeconds};
use domain::reading::Reading;
use ledger::gov_api::{ConstitutionView, ProposalView};
use ledger::governance::Status;

use crate::support::{clock_args, configure_ledger, poll_until, start_single_ledger, wattle, CLUSTER_SERIAL};
use crate::verifiable::{audit_stopped_node, run};

const SEED: u64 = 41;

/// Members: three parties that vote and the regulator, an auditor. By default a majority of the
/// three passes; customers need all three; meters need three of the four with the regulator
/// voting; a flat price needs the regulator's consent; the constitution changes unanimously.
const GOVERNANCE: &str = r#"
[governance.constitution.default]
threshold = "majority"

[governance.constitution.rules.register_customer]
threshold = "unanimity"

[governance.constitution.rules.register_meter]
threshold = { at_least = 3 }
auditors_vote = true

[governance.constitution.rules.set_flat_price]
threshold = "majority"
veto = ["regulator"]

[governance.constitution.rules.set_constitution]
threshold = "unanimity"
"#;

const MEMBERS: [(&str, &str); 4] =
    [("supplier", "member"), ("grid", "member"), ("supplier-b", "member"), ("regulator", "auditor")];

/// A member's CLI against one ledger, keys in `dir`.
pub(crate) struct Gov {
    pub(crate) dir: PathBuf,
    pub(crate) url: String,
}

impl Gov {
    /// `wattle gov ARGS --ledger URL --json` as `member`; (success, output).
    fn run(&self, member: Option<&str>, args: &[&str]) -> anyhow::Result<(bool, String)> {
        let mut command = wattle();
        command.arg("gov").args(args).args(["--ledger", &self.url, "--json"]);
        if let Some(member) = member {
            command.arg("--member-key").arg(self.dir.join(format!("{member}.key")));
        }
        run(&mut command)
    }

    pub(crate) fn propose(&self, member: &str, name: &str, body: &str) -> anyhow::Result<ProposalView> {
        let file = self.dir.join(format!("{name}.toml"));
        std::fs::write(&file, body)?;
        let (ok, output) = self.run(Some(member), &["propose", file.to_str().context("utf-8 path")?])?;
        anyhow::ensure!(ok, "propose {name} failed: {output}");
        proposal_of(&output)
    }

    pub(crate) fn vote(&self, member: &str, id: &str, approve: bool) -> anyhow::Result<ProposalView> {
        let (ok, output) = self.run(Some(member), &["vote", id, if approve { "--approve" } else { "--reject" }])?;
        anyhow::ensure!(ok, "{member}'s vote on {id} failed: {output}");
        proposal_of(&output)
    }

    /// A vote the ledger must refuse; returns the refusal text.
    pub(crate) fn refused_vote(&self, member: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
        let (ok, output) = self.run(member, args)?;
        anyhow::ensure!(!ok, "the ledger accepted what it should refuse: {args:?}: {output}");
        Ok(output)
    }
}

/// The proposal in a `--json` answer of `propose` or `vote` (the last JSON document printed).
pub(crate) fn proposal_of(output: &str) -> anyhow::Result<ProposalView> {
    let start = output.find("{\n").context("no JSON in the output")?;
    let response: serde_json::Value =
        serde_json::Deserializer::from_str(&output[start..]).into_iter().next().context("no JSON")??;
    serde_json::from_value(response["proposal"].clone()).with_context(|| format!("no proposal in {output}"))
}

fn tariff(id: &str) -> String {
    format!(
        "id = \"{id}\"\ncurrency = \"EUR\"\nsupplier = \"supplier-a\"\ntime_zone = \"Europe/Berlin\"\n\
         valid_from = \"2027-01-01T00:00:00\"\n[energy]\nkind = \"flat\"\nper_kwh = \"0.3000\"\n"
    )
}

fn publish_tariff(id: &str) -> String {
    format!("title = \"tariff {id}\"\n[[action]]\nkind = \"publish_tariff\"\nfile = \"{id}.tariff.toml\"\n")
}

/// A running single node whose admin configuration hands it to `members` under `constitution`
/// (TOML of `[governance.constitution...]`), endorsed by a voted proposal of the first two
/// members (the default rule must let two pass it).
pub(crate) struct Governed {
    pub(crate) node: crate::support::Process,
    pub(crate) url: String,
    pub(crate) gov: Gov,
    /// The service public key that endorsed the node, hex.
    pub(crate) service: String,
    /// The public key of `stranger.key`, which belongs to no member, hex.
    pub(crate) stranger: String,
}

pub(crate) async fn start_governed(
    dir: &Path,
    members: &[(&str, &str)],
    constitution: &str,
    clock: &[String],
) -> anyhow::Result<Governed> {
    let path = |name: &str| dir.join(name);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    configure_ledger(dir, 1, SEED, "0.25")?;
    let mut config = std::fs::read_to_string(path("ledger.toml"))?;
    for (name, role) in members {
        let (ok, public) = run(wattle().arg("keygen").arg("--out").arg(path(&format!("{name}.key"))))?;
        anyhow::ensure!(ok, "keygen failed: {public}");
        config.push_str(&format!(
            "[[governance.members]]\nid = \"{name}\"\nrole = \"{role}\"\npublic_key = \"{}\"\n",
            public.trim()
        ));
    }
    config.push_str(constitution);
    std::fs::write(path("ledger.toml"), config)?;
    let (ok, stranger) = run(wattle().arg("keygen").arg("--out").arg(path("stranger.key")))?;
    anyhow::ensure!(ok, "keygen failed: {stranger}");
    let (node, url) = start_single_ledger(dir, clock).await?;
    let gov = Gov { dir: dir.to_path_buf(), url: url.clone() };
    poll_until("governance started", Duration::from_secs(60), || async {
        let view: ConstitutionView =
            http.get(format!("{url}/v1/gov/constitution")).send().await.ok()?.json().await.ok()?;
        view.governed.then_some(())
    })
    .await?;
    // Endorsing the node is a voted action too (receipts and the audit need it).
    let (ok, service) = run(wattle().arg("keygen").arg("--out").arg(path("service.key")))?;
    anyhow::ensure!(ok, "keygen failed: {service}");
    let health: serde_json::Value = http.get(format!("{url}/healthz")).send().await?.json().await?;
    let endorse = format!(
        "title = \"endorse node 1\"\n[[action]]\nkind = \"endorse_node\"\nnode_id = {}\nnode_key = {}\n\
         service_key_file = \"service.key\"\n",
        health["node_id"], health["node_key"]
    );
    let endorsement = gov.propose(members[1].0, "endorse", &endorse)?;
    let passed = gov.vote(members[0].0, &endorsement.record.id, true)?;
    anyhow::ensure!(passed.record.status == Status::Accepted, "the endorsement did not pass: {passed:?}");
    Ok(Governed { node, url, gov, service: service.trim().to_string(), stranger: stranger.trim().to_string() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_decide_by_the_constitution_and_the_operator_key_is_retired() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    for id in ["t-one", "t-two", "t-three", "t-four"] {
        std::fs::write(path(&format!("{id}.tariff.toml")), tariff(id))?;
    }
    // Simulated time at 3,600×: a proposal expiring after one day expires 24 real seconds on.
    let clock = clock_args("2026-11-01T00:00:00Z", 3_600, domain::clock::wall_clock_now().0);
    let Governed { mut node, url, gov, service, stranger } =
        start_governed(dir.path(), &MEMBERS, GOVERNANCE, &clock).await?;
    let view: ConstitutionView = http.get(format!("{url}/v1/gov/constitution")).send().await?.json().await?;
    assert_eq!(view.members.len(), 4);
    assert_eq!(view.version, Some(1));

    // Made early, so it has expired by the end.
    let expiring =
        gov.propose("supplier", "expiring", &format!("expires_in_days = 1\n{}", publish_tariff("t-four")))?;

    // The operator key signs nothing more.
    let (ok, output) = run(wattle()
        .args(["tariff", "publish"])
        .arg(path("t-one.tariff.toml"))
        .args(["--ledger", &url])
        .arg("--operator-key")
        .arg(path("operator.key")))?;
    assert!(!ok && output.contains("governed"), "the operator published after genesis: {output}");

    // Majority (default rule): open after the proposer's approval, passed on the second.
    let majority = gov.propose("supplier", "majority", &publish_tariff("t-one"))?;
    assert_eq!(majority.record.status, Status::Open);
    let id = majority.record.id.clone();
    assert_eq!(gov.vote("grid", &id, true)?.record.status, Status::Accepted);
    let tariffs: Vec<serde_json::Value> = http.get(format!("{url}/v1/tariffs")).send().await?.json().await?;
    assert!(tariffs.iter().any(|tariff| tariff["id"] == "t-one"), "{tariffs:?}");
    assert!(gov.refused_vote(Some("supplier-b"), &["vote", &id, "--reject"])?.contains("already_decided"));

    // Unanimity: open after two of three, passed on the third.
    let customer = "title = \"customer c-gov\"\n[[action]]\nkind = \"register_customer\"\n\
                    customer_id = \"c-gov\"\ncurrency = \"EUR\"\n";
    let unanimous = gov.propose("supplier", "customer", customer)?;
    let id = unanimous.record.id.clone();
    assert_eq!(gov.vote("grid", &id, true)?.record.status, Status::Open);
    assert_eq!(gov.vote("supplier-b", &id, true)?.record.status, Status::Accepted);

    // Three of four with the auditor voting: open after two, passed on the third.
    let meter_key = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
    let meter = format!(
        "title = \"meter WTLG00000001\"\n[[action]]\nkind = \"register_meter\"\nmeter_id = \"WTLG00000001\"\n\
         key_id = 1\npublic_key = \"{}\"\ncustomer_id = \"c-gov\"\n",
        hex::encode(meter_key.verifying_key().to_bytes())
    );
    let m_of_n = gov.propose("grid", "meter", &meter)?;
    let id = m_of_n.record.id.clone();
    assert_eq!(gov.vote("supplier", &id, true)?.record.status, Status::Open);
    // Refusals, each with its reason, none of which counts as a ballot.
    let forged = gov.refused_vote(Some("supplier-b"), &["vote", &id, "--approve", "--member", "regulator"])?;
    assert!(forged.contains("401") && forged.contains("bad_signature"), "{forged}");
    let outsider = gov.refused_vote(Some("stranger"), &["vote", &id, "--approve", "--member", "mallory"])?;
    assert!(outsider.contains("401") && outsider.contains("not_member"), "{outsider}");
    let unknown_key = gov.refused_vote(Some("stranger"), &["vote", &id, "--approve"])?;
    assert!(unknown_key.contains("not the key of any member"), "{unknown_key}");
    let second = gov.refused_vote(Some("supplier"), &["vote", &id, "--reject"])?;
    assert!(second.contains("409") && second.contains("already_voted"), "{second}");
    let shown: ProposalView = http.get(format!("{url}/v1/gov/proposals/{id}")).send().await?.json().await?;
    assert_eq!(shown.record.ballots.len(), 2, "{shown:?}");
    assert_eq!(gov.vote("regulator", &id, true)?.record.status, Status::Accepted);

    // The meter governance registered is accepted end to end.
    let start = chrono::DateTime::parse_from_rfc3339("2026-10-31T10:00:00Z")?.timestamp();
    let reading = Reading::import_interval(
        MeterId::new("WTLG00000001")?,
        KeyId(1),
        Sequence(1),
        UnixSeconds(start),
        5_000,
        1_000,
    );
    let request = SubmitReadings {
        gateway_id: GatewayId::new("gw-gov")?,
        readings: vec![reading.sign(&meter_key)?.to_envelope(false)],
        gateway_signature: None,
    };
    let response: SubmitReadingsResponse =
        http.post(format!("{url}/v1/readings")).json(&request).send().await?.error_for_status()?.json().await?;
    assert_eq!(response.outcomes[0].status, OutcomeStatus::Accepted, "{response:?}");

    // A veto: the majority approves a flat price, the regulator rejects it.
    let price =
        "title = \"flat price\"\n[[action]]\nkind = \"set_flat_price\"\ncurrency = \"EUR\"\nper_kwh = \"0.99\"\n";
    let vetoed = gov.propose("supplier", "price", price)?;
    let id = vetoed.record.id.clone();
    let open = gov.vote("grid", &id, true)?;
    assert_eq!(open.record.status, Status::Open, "the veto holder has not approved: {open:?}");
    let rejected = gov.vote("regulator", &id, false)?;
    assert_eq!(rejected.record.status, Status::Rejected);
    assert!(rejected.record.reason.as_deref().unwrap_or_default().starts_with("vetoed: regulator"), "{rejected:?}");

    // A constitution change decides the proposals after it, not the ones before.
    let before = gov.propose("supplier", "before", &publish_tariff("t-two"))?;
    std::fs::write(path("unanimous.toml"), "[default]\nthreshold = \"unanimity\"\n")?;
    let change =
        "title = \"unanimity for everything\"\n[[action]]\nkind = \"set_constitution\"\nfile = \"unanimous.toml\"\n";
    let changed = gov.propose("supplier", "change", change)?;
    gov.vote("grid", &changed.record.id, true)?;
    assert_eq!(gov.vote("supplier-b", &changed.record.id, true)?.record.status, Status::Accepted);
    let after = gov.propose("supplier", "after", &publish_tariff("t-three"))?;
    assert_eq!(after.record.constitution_version, 2);
    assert_eq!(gov.vote("grid", &before.record.id, true)?.record.status, Status::Accepted);
    assert_eq!(gov.vote("grid", &after.record.id, true)?.record.status, Status::Open);

    // The early proposal expired: it can no longer pass.
    let id = expiring.record.id.clone();
    poll_until("the early proposal expired", Duration::from_secs(60), || async {
        let shown: ProposalView =
            http.get(format!("{url}/v1/gov/proposals/{id}")).send().await.ok()?.json().await.ok()?;
        shown.expired.then_some(())
    })
    .await?;
    let expired = gov.refused_vote(Some("grid"), &["vote", &id, "--approve"])?;
    assert!(expired.contains("409") && expired.contains("expired"), "{expired}");
    let (ok, listing) = gov.run(None, &["list"])?;
    assert!(ok, "{listing}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&listing)?["proposals"].as_array().map(Vec::len), Some(9));

    // Replayed from the history alone, every proposal, ballot and outcome comes out the same.
    let (ok, output) = audit_stopped_node(&mut node, dir.path(), &service).await?;
    assert!(ok, "the audit of a governed ledger failed: {output}");
    assert!(output.contains("6 proposals accepted"), "{output}");
    // An auditor trusting another service key is told the voted endorsement is not its key's.
    let data_dir = path("node-1");
    let operator = crate::verifiable::operator_public_key(&path("operator.key"))?;
    let (ok, output) =
        run(wattle().arg("audit").arg(&data_dir).args(["--operator-key", &operator, "--service-key", &stranger]))?;
    assert!(!ok && output.contains("foreign_service_key"), "a voted endorsement under a foreign key passed: {output}");
    Ok(())
}
