//! `wattle token`: the bearer tokens billing admits (`billing/src/auth.rs`), kept in billing's
//! token file as hashes; `wattle gateway token`: the operators' tokens of a gateway
//! (`gateway/src/access.rs`), in the gateway's token file. Both files are `domain::token`'s.
//! Issue prints the token once; revoke takes effect on the service's next request (it re-reads
//! the file when it changes); list shows records, never tokens.

use std::path::PathBuf;

use billing::auth::{Role, TokenStore};
use domain::ids::CustomerId;
use domain::token::TokenRecord;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Issue a token and print it on standard output (the only time it is shown): a customer's
    /// (`--customer ID`, reads that customer's bill, usage and invoices) or an operator's
    /// (`--operator`, reads every customer, issues and revokes tokens through billing's API).
    Issue {
        /// Billing's token file (its `--tokens`; created 0600 if missing).
        #[arg(long)]
        tokens: PathBuf,
        /// The customer the token reads.
        #[arg(long, conflicts_with = "operator", required_unless_present = "operator")]
        customer: Option<String>,
        /// An operator's token instead.
        #[arg(long)]
        operator: bool,
        /// Who or what holds it (shown by `list`, at most 200 bytes).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a token by its id (the middle part of wtk_<id>_<secret>, or from `list`).
    Revoke {
        #[arg(long)]
        tokens: PathBuf,
        id: String,
    },
    /// List every token's record: id, role, label, issued and revoked times.
    List {
        #[arg(long)]
        tokens: PathBuf,
    },
}

pub(crate) fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Issue { tokens, customer, operator, label } => {
            let store = TokenStore::open(&tokens)?;
            let role = match customer {
                Some(customer) if !operator => Role::Customer { customer_id: CustomerId::new(customer)? },
                _ => Role::Operator,
            };
            let (token, record) = store.issue(role, &label)?;
            print_issued(&token, &record);
        }
        TokenCommand::Revoke { tokens, id } => print_revoked(&TokenStore::open(&tokens)?.revoke(&id)?),
        TokenCommand::List { tokens } => {
            for record in TokenStore::open(&tokens)?.list()? {
                let role = match &record.role {
                    Role::Operator => "operator".to_string(),
                    Role::Customer { customer_id } => format!("customer {customer_id}"),
                };
                print_record(&record, &role);
            }
        }
    }
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum GatewayTokenCommand {
    /// Issue an operator's token (lists and releases the quarantine, `/v1/quarantine`) and print
    /// it on standard output (the only time it is shown).
    Issue {
        /// The gateway's token file (its `--tokens`; created 0600 if missing).
        #[arg(long)]
        tokens: PathBuf,
        /// Who or what holds it (shown by `list`, at most 200 bytes).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a token by its id (the middle part of wtk_<id>_<secret>, or from `list`).
    Revoke {
        #[arg(long)]
        tokens: PathBuf,
        id: String,
    },
    /// List every token's record: id, role, label, issued and revoked times.
    List {
        #[arg(long)]
        tokens: PathBuf,
    },
}

pub(crate) fn run_gateway(command: GatewayTokenCommand) -> anyhow::Result<()> {
    use gateway::access::{Role, TokenStore};
    match command {
        GatewayTokenCommand::Issue { tokens, label } => {
            let (token, record) = TokenStore::open(&tokens)?.issue(Role::Operator, &label)?;
            print_issued(&token, &record);
        }
        GatewayTokenCommand::Revoke { tokens, id } => print_revoked(&TokenStore::open(&tokens)?.revoke(&id)?),
        GatewayTokenCommand::List { tokens } => {
            for record in TokenStore::open(&tokens)?.list()? {
                print_record(&record, "operator");
            }
        }
    }
    Ok(())
}

fn print_issued<R: std::fmt::Debug>(token: &str, record: &TokenRecord<R>) {
    eprintln!("issued token {} ({:?}); it is shown once:", record.id, record.role);
    println!("{token}");
}

fn print_revoked<R>(record: &TokenRecord<R>) {
    println!("revoked token {} at {}", record.id, record.revoked_at.as_deref().unwrap_or_default());
}

fn print_record<R>(record: &TokenRecord<R>, role: &str) {
    let state = record.revoked_at.as_ref().map_or("active".to_string(), |at| format!("revoked {at}"));
    println!("{}  {role}  issued {}  {state}  {}", record.id, record.issued_at, record.label);
}
