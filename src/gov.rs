//! `wattle gov`: the member's command line (issue 14). Propose a list of actions from a TOML
//! file, vote, withdraw, and read proposals and the constitution; every write is signed with the
//! member's key file, every refusal printed with the ledger's reason code. `docs/governance.md`
//! documents the proposal file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use domain::gov::{Constitution, GovAct, Member, MemberId, Proposal, ProposalId, Role, SignedGov};
use domain::ids::{CustomerId, GatewayId, KeyId, MeterId, ReaderId, UnixSeconds};
use domain::money::{Currency, UnitPrice};
use domain::tx::AdminAction;
use ledger::gov_api::{ConstitutionView, ProposalPage, ProposalView, SubmitGov, SubmitGovResponse};
use serde::Deserialize;

/// How long a proposal stays open unless its file says otherwise.
const EXPIRES_IN_DAYS_DEFAULT: i64 = 7;

#[derive(Debug, clap::Args)]
pub struct GovArgs {
    #[command(subcommand)]
    command: GovCommand,
    /// Any ledger node's client API base URL (followers forward writes to the leader).
    #[arg(long, global = true, default_value = "http://127.0.0.1:7000")]
    ledger: String,
    /// Print the ledger's JSON answer instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

/// Who signs: the key file, and the member id (looked up by the key's public half if omitted).
#[derive(Debug, clap::Args)]
struct Signer {
    /// The member's secret key file (`wattle keygen --out FILE`).
    #[arg(long)]
    member_key: PathBuf,
    /// The member id; default: the member whose registered key this is.
    #[arg(long)]
    member: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum GovCommand {
    /// Propose the actions in FILE (TOML, docs/governance.md). Proposing counts as your approval.
    Propose {
        file: PathBuf,
        #[command(flatten)]
        signer: Signer,
    },
    /// Vote on an open proposal.
    Vote {
        /// The proposal id (32 hex digits, from `propose` or `list`).
        id: String,
        #[arg(long, conflicts_with = "reject", required_unless_present = "reject")]
        approve: bool,
        #[arg(long)]
        reject: bool,
        #[command(flatten)]
        signer: Signer,
    },
    /// Withdraw your own open proposal.
    Withdraw {
        id: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// List proposals, newest first. The households actions name (customers, meters, supply
    /// points) show as keyed-hash ids unless the request is signed with a member's key.
    List {
        /// Sign the request with this member key file to see the households' ids.
        #[arg(long)]
        member_key: Option<PathBuf>,
    },
    /// Show one proposal: its actions, ballots, tally and outcome (`--member-key`: as for `list`).
    Show {
        id: String,
        #[arg(long)]
        member_key: Option<PathBuf>,
    },
    /// Show the members and the constitution in force.
    Constitution,
}

/// A proposal file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposalFile {
    title: String,
    #[serde(default)]
    expires_in_days: Option<i64>,
    #[serde(rename = "action")]
    actions: Vec<ActionFile>,
}

/// One action of a proposal file; paths are relative to the file.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ActionFile {
    RegisterCustomer {
        customer_id: CustomerId,
        currency: Currency,
    },
    RegisterMeter {
        meter_id: MeterId,
        key_id: u32,
        public_key: String,
        customer_id: CustomerId,
    },
    /// An unsigned (legacy) meter whose readings the gateway attests with its key.
    RegisterAttestedMeter {
        meter_id: MeterId,
        gateway_id: GatewayId,
        key_id: u32,
        gateway_key: String,
        customer_id: CustomerId,
    },
    SetFlatPrice {
        currency: Currency,
        per_kwh: String,
    },
    PublishTariff {
        file: PathBuf,
    },
    PublishPrices {
        file: PathBuf,
    },
    Bind {
        binding: domain::settle::Binding,
    },
    AddNode {
        node_id: u64,
        address: String,
    },
    SetVoters {
        voters: Vec<u64>,
    },
    /// The CLI signs the endorsement with the service key file, for `valid_days` days from the
    /// ledger's time (default a year), or without a period with `no_expiry = true`.
    EndorseNode {
        node_id: u64,
        node_key: String,
        service_key_file: PathBuf,
        #[serde(default)]
        valid_days: Option<u32>,
        #[serde(default)]
        no_expiry: bool,
    },
    AddMember {
        id: MemberId,
        role: Role,
        public_key: String,
    },
    RemoveMember {
        id: MemberId,
    },
    SetConstitution {
        file: PathBuf,
    },
    /// A new key for the meter from an interval on (RFC 3339, on the 15-minute grid).
    RotateMeterKey {
        meter_id: MeterId,
        key_id: u32,
        public_key: String,
        effective_from: chrono::DateTime<chrono::Utc>,
    },
    RevokeMeterKey {
        meter_id: MeterId,
        key_id: u32,
        from: chrono::DateTime<chrono::Utc>,
    },
    RegisterGateway {
        gateway_id: GatewayId,
        public_key: String,
    },
    RevokeGateway {
        gateway_id: GatewayId,
    },
    RevokeNode {
        node_id: u64,
        node_key: String,
    },
    /// `measurement`: 64 hex characters, as `wattle node measurement` prints it.
    AcceptMeasurement {
        measurement: String,
    },
    RevokeMeasurement {
        measurement: String,
    },
    /// A service that reads every customer's private data (billing): `reader_id`, `public_key`.
    RegisterReader {
        reader_id: String,
        public_key: String,
    },
    RevokeReader {
        reader_id: String,
    },
    /// Take some lines of an issued invoice back (a partial credit note): `invoice`, `reason`,
    /// `lines = [{ line = 0, amount = "2.50" }]` (line positions from 0, amounts in the line's sign).
    CreditInvoice {
        invoice: String,
        reason: String,
        lines: Vec<domain::settle::LineCredit>,
    },
    /// Void an issued invoice (a credit note for all of it); `reissue = true` invoices its
    /// period again under a new number.
    VoidInvoice {
        invoice: String,
        reason: String,
        #[serde(default)]
        reissue: bool,
    },
    /// Rotate the ledger secret (no fields): the leader draws the next version.
    RotateLedgerSecret {},
}

fn public_key(hex_text: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(hex_text).ok().and_then(|bytes| bytes.try_into().ok()).context("a public key is 64 hex digits")
}

/// A `CreditInvoice` action, checked as the ledger will check it before anything is sent.
fn credit_order(invoice: String, reason: String, scope: domain::settle::CreditScope) -> anyhow::Result<AdminAction> {
    let order = domain::settle::CreditOrder { invoice, reason, scope }.to_canonical_json();
    domain::settle::CreditOrder::parse(&order).map_err(|error| anyhow::anyhow!("{}: {error}", error.code()))?;
    Ok(AdminAction::CreditInvoice { order_json: order })
}

impl ActionFile {
    fn into_action(self, base: &Path, ledger_time_s: i64) -> anyhow::Result<AdminAction> {
        let read = |file: &Path| {
            let path = base.join(file);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(match self {
            ActionFile::RegisterCustomer { customer_id, currency } => {
                AdminAction::RegisterCustomer { customer_id, currency }
            }
            ActionFile::RegisterMeter { meter_id, key_id, public_key: key, customer_id } => {
                AdminAction::RegisterMeter {
                    meter_id,
                    key_id: KeyId(key_id),
                    public_key: public_key(&key)?,
                    customer_id,
                }
            }
            ActionFile::RegisterAttestedMeter { meter_id, gateway_id, key_id, gateway_key, customer_id } => {
                AdminAction::RegisterAttestedMeter {
                    meter_id,
                    gateway_id,
                    key_id: KeyId(key_id),
                    gateway_key: public_key(&gateway_key)?,
                    customer_id,
                }
            }
            ActionFile::SetFlatPrice { currency, per_kwh } => {
                AdminAction::SetFlatPrice(UnitPrice { per_kwh: per_kwh.parse().context("per_kwh")?, currency })
            }
            ActionFile::PublishTariff { file } => {
                let tariff = domain::tariff::parse_toml(&read(&file)?)
                    .with_context(|| format!("{} is not a valid tariff", file.display()))?;
                AdminAction::PublishTariff { tariff_json: tariff.to_canonical_json() }
            }
            ActionFile::PublishPrices { file } => {
                let series: domain::tariff::PriceSeries = serde_json::from_str(&read(&file)?)
                    .with_context(|| format!("{} is not a price series", file.display()))?;
                AdminAction::PublishPrices { prices_json: series.to_canonical_json() }
            }
            ActionFile::Bind { binding } => AdminAction::Bind { binding_json: binding.to_canonical_json() },
            ActionFile::AddNode { node_id, address } => AdminAction::AddNode { node_id, address },
            ActionFile::SetVoters { voters } => AdminAction::SetVoters { voters },
            ActionFile::EndorseNode { node_id, node_key, service_key_file, valid_days, no_expiry } => {
                let service = ledger::node::read_signing_key(&base.join(service_key_file))?;
                let node_key = public_key(&node_key)?;
                if no_expiry && valid_days.is_some() {
                    bail!("endorse_node takes valid_days or no_expiry, not both");
                }
                let days = valid_days.unwrap_or(ledger::endorsements::VALID_DAYS_DEFAULT);
                let validity =
                    (!no_expiry).then(|| ledger::endorsements::period_from(ledger_time_s.saturating_mul(1_000), days));
                AdminAction::EndorseNode {
                    node_id,
                    node_key,
                    service_key: service.verifying_key().to_bytes(),
                    endorsement: domain::receipt::endorse_for(&service, node_id, &node_key, validity),
                    validity,
                }
            }
            ActionFile::AddMember { id, role, public_key: key } => {
                let member = Member { id, role, public_key: public_key(&key)? };
                AdminAction::AddMember { member_json: member.to_canonical_json() }
            }
            ActionFile::RemoveMember { id } => AdminAction::RemoveMember { member_id: id },
            ActionFile::SetConstitution { file } => {
                let constitution = Constitution::from_toml(&read(&file)?)
                    .with_context(|| format!("{} is not a constitution", file.display()))?;
                AdminAction::SetConstitution { constitution_json: constitution.to_canonical_json() }
            }
            ActionFile::RotateMeterKey { meter_id, key_id, public_key: key, effective_from } => {
                AdminAction::RotateMeterKey {
                    meter_id,
                    key_id: KeyId(key_id),
                    public_key: public_key(&key)?,
                    effective_from: UnixSeconds(effective_from.timestamp()),
                }
            }
            ActionFile::RevokeMeterKey { meter_id, key_id, from } => {
                AdminAction::RevokeMeterKey { meter_id, key_id: KeyId(key_id), from: UnixSeconds(from.timestamp()) }
            }
            ActionFile::RegisterGateway { gateway_id, public_key: key } => {
                AdminAction::RegisterGateway { gateway_id, public_key: public_key(&key)? }
            }
            ActionFile::RevokeGateway { gateway_id } => AdminAction::RevokeGateway { gateway_id },
            ActionFile::RevokeNode { node_id, node_key } => {
                AdminAction::RevokeNode { node_id, node_key: public_key(&node_key)? }
            }
            ActionFile::AcceptMeasurement { measurement } => {
                AdminAction::AcceptMeasurement { measurement: public_key(&measurement)? }
            }
            ActionFile::RevokeMeasurement { measurement } => {
                AdminAction::RevokeMeasurement { measurement: public_key(&measurement)? }
            }
            ActionFile::RegisterReader { reader_id, public_key: key } => {
                AdminAction::RegisterReader { reader_id: ReaderId::new(reader_id)?, public_key: public_key(&key)? }
            }
            ActionFile::RevokeReader { reader_id } => {
                AdminAction::RevokeReader { reader_id: ReaderId::new(reader_id)? }
            }
            ActionFile::CreditInvoice { invoice, reason, lines } => {
                credit_order(invoice, reason, domain::settle::CreditScope::Lines { lines })?
            }
            ActionFile::VoidInvoice { invoice, reason, reissue } => {
                credit_order(invoice, reason, domain::settle::CreditScope::Void { reissue })?
            }
            ActionFile::RotateLedgerSecret {} => AdminAction::RotateLedgerSecret,
        })
    }
}

/// Reads a proposal file into a proposal expiring `expires_in_days` after `ledger_time_s`.
pub fn read_proposal(file: &Path, ledger_time_s: i64, nonce: u64) -> anyhow::Result<Proposal> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let parsed: ProposalFile = toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let actions = parsed
        .actions
        .into_iter()
        .enumerate()
        .map(|(index, action)| action.into_action(base, ledger_time_s).with_context(|| format!("action {}", index + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let days = parsed.expires_in_days.unwrap_or(EXPIRES_IN_DAYS_DEFAULT);
    if !(1..=90).contains(&days) {
        bail!("expires_in_days is 1 to 90, not {days}");
    }
    Ok(Proposal { title: parsed.title, nonce, expires_at: UnixSeconds(ledger_time_s + days * 86_400), actions })
}

struct Client {
    http: reqwest::Client,
    ledger: String,
    /// Signs reads (`domain::client_read`), so the ledger shows a member private ids.
    key: Option<ed25519_dalek::SigningKey>,
}

impl Client {
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let mut request = self.http.get(format!("{}{path}", self.ledger));
        if let Some(key) = &self.key {
            let now_ms = domain::clock::wall_clock_now().0;
            for (name, value) in domain::client_read::sign_request(key, "GET", path, now_ms) {
                request = request.header(name, value);
            }
        }
        answer(request.send().await?).await
    }

    async fn submit(&self, gov: &SignedGov) -> anyhow::Result<SubmitGovResponse> {
        let request = SubmitGov { gov: hex::encode(gov.to_bytes()) };
        let response = self.http.post(format!("{}/v1/gov", self.ledger)).json(&request).send().await?;
        answer(response).await
    }
}

/// Submits a signed act to `ledger_url`; a refusal is an error naming its code and reason.
pub async fn submit_to(http: &reqwest::Client, ledger_url: &str, gov: &SignedGov) -> anyhow::Result<SubmitGovResponse> {
    Client { http: http.clone(), ledger: ledger_url.trim_end_matches('/').to_string(), key: None }.submit(gov).await
}

/// The body of a success, or the ledger's refusal as an error naming its code and reason.
async fn answer<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
    let status = response.status();
    let text = response.text().await?;
    if status.is_success() {
        return serde_json::from_str(&text).with_context(|| format!("unexpected answer: {text}"));
    }
    match serde_json::from_str::<domain::api::ErrorBody>(&text) {
        Ok(body) => bail!("refused ({} {}): {}", status.as_u16(), body.code, body.message),
        Err(_) => bail!("the ledger answered {status}: {text}"),
    }
}

/// Runs a `wattle gov` command.
pub async fn run(args: GovArgs) -> anyhow::Result<()> {
    let reader_key = match &args.command {
        GovCommand::List { member_key: Some(file) } | GovCommand::Show { member_key: Some(file), .. } => {
            Some(ledger::node::read_signing_key(file)?)
        }
        _ => None,
    };
    let client = Client {
        http: crate::cli::ledger_client(&args.ledger, None, std::time::Duration::from_secs(30))?,
        ledger: args.ledger.trim_end_matches('/').to_string(),
        key: reader_key,
    };
    let json = args.json;
    match args.command {
        GovCommand::Propose { file, signer } => {
            let view: ConstitutionView = client.get("/v1/gov/constitution").await?;
            // Any fresh number: it only makes a repeated proposal of the same actions a new one.
            let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
            let proposal = read_proposal(&file, view.ledger_time_ms.div_euclid(1_000), nonce)?;
            let gov = sign(&signer, &view, GovAct::Propose(proposal))?;
            report(client.submit(&gov).await?, json)
        }
        GovCommand::Vote { id, approve, reject, signer } => {
            debug_assert!(approve != reject);
            let view: ConstitutionView = client.get("/v1/gov/constitution").await?;
            let proposal: ProposalId = id.parse().map_err(anyhow::Error::msg)?;
            let gov = sign(&signer, &view, GovAct::Vote { proposal, approve })?;
            report(client.submit(&gov).await?, json)
        }
        GovCommand::Withdraw { id, signer } => {
            let view: ConstitutionView = client.get("/v1/gov/constitution").await?;
            let proposal: ProposalId = id.parse().map_err(anyhow::Error::msg)?;
            let gov = sign(&signer, &view, GovAct::Withdraw { proposal })?;
            report(client.submit(&gov).await?, json)
        }
        GovCommand::List { .. } => {
            let page: ProposalPage = client.get("/v1/gov/proposals").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                for proposal in &page.proposals {
                    println!("{}", headline(proposal));
                }
                if page.proposals.is_empty() {
                    println!("no proposals");
                }
            }
            Ok(())
        }
        GovCommand::Show { id, .. } => {
            let proposal: ProposalView = client.get(&format!("/v1/gov/proposals/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&proposal)?);
            } else {
                print_proposal(&proposal);
            }
            Ok(())
        }
        GovCommand::Constitution => {
            let view: ConstitutionView = client.get("/v1/gov/constitution").await?;
            if json || view.constitution.is_none() {
                println!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(());
            }
            println!("constitution version {}", view.version.unwrap_or_default());
            for member in &view.members {
                println!("  member {} ({:?}) key {}", member.id, member.role, hex::encode(member.public_key));
            }
            let constitution = view.constitution.expect("checked above");
            println!("  default: {}", rule_text(&constitution.default));
            for (kind, rule) in &constitution.rules {
                println!("  {}: {}", kind.name(), rule_text(rule));
            }
            Ok(())
        }
    }
}

fn sign(signer: &Signer, view: &ConstitutionView, act: GovAct) -> anyhow::Result<SignedGov> {
    let key = ledger::node::read_signing_key(&signer.member_key)?;
    let member = match &signer.member {
        Some(id) => MemberId::new(id.as_str())?,
        None => view
            .members
            .iter()
            .find(|member| member.public_key == key.verifying_key().to_bytes())
            .map(|member| member.id.clone())
            .with_context(|| {
                format!(
                    "{} is not the key of any member of this ledger (pass --member to try anyway)",
                    signer.member_key.display()
                )
            })?,
    };
    Ok(SignedGov::sign(member, act, &key))
}

fn report(response: SubmitGovResponse, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return Ok(());
    }
    if let Some(reason) = &response.refused {
        bail!("refused at log index {}: {reason}", response.log_index);
    }
    println!("committed at log index {}{}", response.log_index, if response.retried { " (earlier)" } else { "" });
    if let Some(proposal) = &response.proposal {
        print_proposal(proposal);
    }
    Ok(())
}

fn headline(proposal: &ProposalView) -> String {
    let record = &proposal.record;
    let status = if proposal.expired { "expired".to_string() } else { format!("{:?}", record.status).to_lowercase() };
    format!("{} {status:<9} {:?} by {}, {} action(s)", record.id, record.title, record.proposer, record.actions.len())
}

fn print_proposal(proposal: &ProposalView) {
    let record = &proposal.record;
    println!("{}", headline(proposal));
    println!(
        "  proposed at log index {} under constitution version {}",
        record.proposed_at, record.constitution_version
    );
    for action in &record.actions {
        println!("  action {}: {}", action.proposal_index + 1, action.summary);
    }
    for (member, ballot) in &record.ballots {
        let verb = if ballot.approve { "approved" } else { "rejected" };
        println!("  {member} {verb} at log index {}", ballot.log_index);
    }
    for tally in &proposal.tally.tallies {
        let pending = if tally.veto_pending.is_empty() {
            String::new()
        } else {
            format!(
                ", waiting for veto holder(s) {}",
                tally.veto_pending.iter().map(|id| id.as_str()).collect::<Vec<_>>().join(", ")
            )
        };
        println!(
            "  {}: {} of {} approvals needed, {} approved, {} rejected{pending}",
            tally.kind.name(),
            tally.required,
            tally.eligible,
            tally.approvals,
            tally.rejections
        );
    }
    if record.status == ledger::governance::Status::Open && !proposal.expired {
        let until = chrono::DateTime::from_timestamp(record.expires_at, 0)
            .map_or(record.expires_at.to_string(), |at| at.to_rfc3339());
        println!("  quorum not met yet: open until {until}");
    }
    if let Some(reason) = &record.reason {
        println!("  {reason}");
    }
}

fn rule_text(rule: &domain::gov::Rule) -> String {
    let threshold = match rule.threshold {
        domain::gov::Threshold::Majority => "majority".to_string(),
        domain::gov::Threshold::Unanimity => "unanimity".to_string(),
        domain::gov::Threshold::AtLeast(count) => format!("at least {count}"),
    };
    let veto = if rule.veto.is_empty() {
        String::new()
    } else {
        format!(", veto: {}", rule.veto.iter().map(|id| id.as_str()).collect::<Vec<_>>().join(", "))
    };
    let auditors = if rule.auditors_vote { ", auditors vote" } else { "" };
    format!("{threshold}{veto}{auditors}")
}
