//! Named limits of the ledger, each with its reason.

use std::time::Duration;

/// Most envelopes in one `POST /v1/readings`: one transaction's worth (the domain's
/// `BATCH_READINGS_MAX`), so a request maps to at most one raft entry.
pub const SUBMIT_READINGS_MAX: usize = domain::limits::BATCH_READINGS_MAX;

/// Largest HTTP request body: a full reading batch as JSON (~400 bytes per envelope).
pub const REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most transactions returned by one `GET /v1/transactions` page.
pub const TRANSACTION_PAGE_MAX: u64 = 1_000;

/// How long a client write may wait for commit before the API answers 503.
pub const COMMIT_WAIT_MAX: Duration = Duration::from_secs(10);

/// Timeout of one raft RPC to a peer (snapshot chunks included).
pub const RAFT_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a TLS handshake may take (`tls.rs`): a client that connects and stays silent is
/// dropped, not waited for.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TLS handshakes in progress at once per port; further connections wait in the kernel's
/// backlog until one finishes.
pub const TLS_HANDSHAKES_IN_FLIGHT_MAX: usize = 256;

/// Heartbeat and election timeouts, generous for a loaded 2-core machine.
pub const HEARTBEAT_INTERVAL_MS: u64 = 250;
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 1_000;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 2_000;

/// Default: build a snapshot after this many applied entries (CCF: every 10,000 transactions).
pub const SNAPSHOT_AFTER_ENTRIES_DEFAULT: u64 = 10_000;

/// How long start-up waits for this node to become leader before loading admin configuration.
pub const LEADER_WAIT_MAX: Duration = Duration::from_secs(30);

/// How long the initialising node waits for the other initial members to accept connections.
pub const INIT_PEERS_WAIT_MAX: Duration = Duration::from_secs(10);

/// Default interval of signature transactions while entries are unsigned (CCF: 1 s; DESIGN.md: 50 ms).
pub const SIGNATURE_INTERVAL_DEFAULT: Duration = Duration::from_millis(50);

/// Sign sooner than the interval once this many entries are unsigned.
pub const SIGNATURE_EVERY_ENTRIES: u64 = 1_000;

/// How often the leader's signature loop looks at the log.
pub const SIGNATURE_POLL: Duration = Duration::from_millis(5);

/// How often a node missing older history (it joined from a snapshot) tries to fetch it.
pub const HISTORY_FETCH_INTERVAL: Duration = Duration::from_secs(1);

/// History records `wattle audit` reads per page: bounds its memory per step, not the ledger.
pub const AUDIT_PAGE_ENTRIES: u64 = 1_000;

/// `wattle audit` reports progress every this many entries (a million-entry ledger prints 100 lines).
pub const AUDIT_PROGRESS_ENTRIES: u64 = 10_000;

/// Most snapshot records written in one batch while installing a snapshot: the install streams
/// from the file, so memory stays bounded by this (records are small: a meter, a customer, an
/// account, a meter summary) however many meters the state holds.
pub const SNAPSHOT_INSTALL_BATCH_RECORDS: usize = 10_000;

/// Most reading submissions (`POST /v1/readings`, `?wait=false` ones until their proposal is
/// settled) in flight at one node from one gateway id. A gateway forwards one batch at a time, so
/// 16 leaves room for retries after timeouts and for a benchmark's parallel clients, while one
/// noisy gateway cannot take the whole node.
pub const SUBMISSIONS_IN_FLIGHT_PER_GATEWAY_MAX: usize = 16;

/// Most reading submissions in flight at one node from all clients together. Each holds at most
/// one batch (`SUBMIT_READINGS_MAX` readings, under 1 MB decoded), so this bounds the memory and
/// the tasks a flood can take to ~64 MB; gateway ids are self-declared until the consortium issue
/// authenticates clients, so this global bound is what holds against a client that invents ids.
pub const SUBMISSIONS_IN_FLIGHT_MAX: usize = 64;

/// `Retry-After` (seconds) of a `429` answer: long enough for in-flight batches to commit
/// (a few signature intervals), short enough that a gateway's outbox does not stall.
pub const BUSY_RETRY_AFTER_S: u64 = 1;

/// Most proposals on one page of `GET /v1/gov/proposals`.
pub const PROPOSALS_PER_PAGE_MAX: usize = 100;
