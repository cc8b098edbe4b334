//! Billing's read model in SQL (sqlx, one code path for SQLite and PostgreSQL through sqlx's `Any`
//! driver; migrations in `billing/migrations/`). The feed (`feed.rs`) writes what the ledger
//! settled; the API reads it. Money stays exact: decimals are TEXT, parsed with `rust_decimal`.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use domain::api::{CustomerAccount, CustomerInterval, CustomerStatements, IssuedInvoice};
use domain::settle::{CreditNoteDocument, InvoiceDocument, Statement};
use rust_decimal::Decimal;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::AnyPool;
use sqlx::Row;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Most connections the pool opens.
pub const CONNECTIONS_MAX: u32 = 8;
/// How long a query waits for a connection (or, on SQLite, for the write lock) before failing.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the model stands: the last ledger index it reflects and that entry's leader time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub ledger_index: u64,
    pub as_of_ms: i64,
}

/// A change the model took: a ledger that holds the transaction `tx_id`, stamped by its leader at
/// `time_ms`, at `index` is the ledger the model was built from. (Transaction ids alone may not
/// tell ledgers apart: an admin transaction's id is derived from its signed bytes, so two ledgers
/// configured from the same file with the same operator key carry the same ids.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub tx_id: String,
    pub index: u64,
    pub time_ms: i64,
}

/// Every table the feed fills, emptied by [`ReadModel::reset`].
const FED_TABLES: [&str; 5] = ["accounts", "intervals", "statements", "invoices", "credit_notes"];

/// What the ledger holds for one customer, fetched by the feed.
#[derive(Debug, Clone)]
pub struct CustomerData {
    pub account: CustomerAccount,
    pub intervals: Vec<CustomerInterval>,
    pub statements: CustomerStatements,
    pub invoices: Vec<IssuedInvoice>,
    /// The customer's credit notes (the same record as an invoice's).
    pub credit_notes: Vec<IssuedInvoice>,
}

/// One stored interval (`GET /v1/customers/{id}/usage` groups these).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntervalRow {
    pub start_s: i64,
    pub local_start: String,
    pub import_wh: u64,
    pub export_wh: u64,
    pub quality: String,
    pub complete: bool,
    pub charge: Decimal,
    /// The tariff window that priced the imported energy (`flat`, `dynamic`, `SEASON.WINDOW`).
    pub energy_window: Option<String>,
    /// Its price per kWh.
    pub energy_price: Option<Decimal>,
    /// The ledger position at which billing wrote the row.
    pub ledger_index: u64,
}

/// One stored invoice (or credit note: the same columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRow {
    pub number: String,
    pub customer_id: String,
    pub period_start: i64,
    pub period_end: i64,
    pub issued_at: String,
    pub total: String,
    pub currency: String,
    pub tx_id: String,
    pub ledger_index: u64,
    pub document: String,
}

/// The SQL database behind billing.
#[derive(Debug, Clone)]
pub struct ReadModel {
    pool: AnyPool,
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl ReadModel {
    /// Opens (creating if needed) and migrates the database at `url`: `sqlite://PATH?mode=rwc`,
    /// `sqlite::memory:` or `postgres://USER@HOST:PORT/DB`.
    pub async fn open(url: &str) -> anyhow::Result<ReadModel> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let mut options = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        if sqlite {
            // One in-memory database is one connection's; a file is shared. WAL lets readers
            // read while the feed writes; busy_timeout makes a writer wait, not fail.
            let connections = if url.contains(":memory:") { 1 } else { CONNECTIONS_MAX };
            options = options.max_connections(connections).after_connect(|connection, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *connection).await?;
                    sqlx::query("PRAGMA busy_timeout=10000").execute(&mut *connection).await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(CONNECTIONS_MAX);
        }
        let pool = options.connect(url).await.with_context(|| format!("opening billing's database {}", redact(url)))?;
        MIGRATOR.run(&pool).await.context("migrating billing's database")?;
        Ok(ReadModel { pool })
    }

    pub async fn position(&self) -> anyhow::Result<Position> {
        let row = sqlx::query("SELECT ledger_index, as_of_ms FROM feed_position WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .context("reading the feed position")?;
        Ok(Position { ledger_index: row.try_get::<i64, _>(0)?.max(0) as u64, as_of_ms: row.try_get(1)? })
    }

    /// The first and the last change the model took, if it took any.
    pub async fn anchors(&self) -> anyhow::Result<Option<(Anchor, Anchor)>> {
        let row = sqlx::query(
            "SELECT first_tx_id, first_index, first_time_ms, anchor_tx_id, anchor_index, anchor_time_ms \
             FROM feed_position WHERE id = 1",
        )
        .fetch_one(&self.pool)
        .await
        .context("reading the feed's anchors")?;
        let anchor = |column: usize| -> anyhow::Result<Option<Anchor>> {
            let tx_id: Option<String> = row.try_get(column)?;
            let index: Option<i64> = row.try_get(column + 1)?;
            let time_ms: Option<i64> = row.try_get(column + 2)?;
            Ok(tx_id.zip(index).zip(time_ms).map(|((tx_id, index), time_ms)| Anchor {
                tx_id,
                index: index.max(0) as u64,
                time_ms,
            }))
        };
        Ok(anchor(0)?.zip(anchor(3)?))
    }

    /// Empties every table the feed fills and moves the position back to the ledger's start, in
    /// one transaction: the model is then rebuilt from the ledger it follows.
    pub async fn reset(&self) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in FED_TABLES {
            sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE feed_position SET ledger_index = 0, as_of_ms = 0, first_tx_id = NULL, first_index = NULL, \
             first_time_ms = NULL, anchor_tx_id = NULL, anchor_index = NULL, anchor_time_ms = NULL WHERE id = 1",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await.context("resetting billing's read model")?;
        Ok(())
    }

    /// Every customer the model knows.
    pub async fn customers(&self) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT customer_id FROM accounts ORDER BY customer_id").fetch_all(&self.pool).await?;
        rows.iter().map(|row| Ok(row.try_get::<String, _>(0)?)).collect()
    }

    /// Writes what the ledger holds for `customers` and moves the position, in one transaction:
    /// a reader sees the model before or after the whole page, never half of it. `anchor`: the
    /// page's last change (`None` keeps the anchor the model has); the model's first anchor is
    /// the first it is given.
    pub async fn apply(
        &self,
        customers: &[CustomerData],
        position: Position,
        anchor: Option<&Anchor>,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for data in customers {
            let customer = data.account.customer_id.as_str();
            let account = &data.account;
            sqlx::query(
                "INSERT INTO accounts (customer_id, currency, energy_import_wh, energy_export_wh, amount, \
                 intervals_settled, ledger_index) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (customer_id) DO UPDATE SET currency = excluded.currency, \
                 energy_import_wh = excluded.energy_import_wh, energy_export_wh = excluded.energy_export_wh, \
                 amount = excluded.amount, intervals_settled = excluded.intervals_settled, \
                 ledger_index = excluded.ledger_index",
            )
            .bind(customer)
            .bind(account.currency.code())
            .bind(to_i64(account.energy_import_wh))
            .bind(to_i64(account.energy_export_wh))
            .bind(account.amount.to_string())
            .bind(to_i64(account.intervals_settled))
            .bind(to_i64(account.applied_index))
            .execute(&mut *tx)
            .await?;
            for interval in &data.intervals {
                let quality = serde_json::to_value(interval.quality)?;
                let meters: Vec<&str> = interval.meters.iter().map(|meter| meter.as_str()).collect();
                let energy = energy_price(&interval.lines);
                sqlx::query(
                    "INSERT INTO intervals (customer_id, start_s, local_start, import_wh, export_wh, quality, \
                     complete, tariff, charge, lines_json, meters, energy_window, energy_price, ledger_index) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                     ON CONFLICT (customer_id, start_s) DO UPDATE SET local_start = excluded.local_start, \
                     import_wh = excluded.import_wh, export_wh = excluded.export_wh, quality = excluded.quality, \
                     complete = excluded.complete, tariff = excluded.tariff, charge = excluded.charge, \
                     lines_json = excluded.lines_json, meters = excluded.meters, \
                     energy_window = excluded.energy_window, energy_price = excluded.energy_price, \
                     ledger_index = excluded.ledger_index",
                )
                .bind(customer)
                .bind(interval.start)
                .bind(interval.local_start.format("%Y-%m-%dT%H:%M:%S").to_string())
                .bind(to_i64(interval.import_wh))
                .bind(to_i64(interval.export_wh))
                .bind(quality.as_str().unwrap_or("actual").to_string())
                .bind(i64::from(interval.complete))
                .bind(interval.tariff.as_str())
                .bind(interval.charge.to_string())
                .bind(serde_json::to_string(&interval.lines)?)
                .bind(meters.join(","))
                .bind(energy.map(|(window, _)| window))
                .bind(energy.map(|(_, price)| price.to_string()))
                .bind(to_i64(position.ledger_index))
                .execute(&mut *tx)
                .await?;
            }
            let statements = data.statements.open.iter().map(|statement| ("open", statement));
            let closed = data.statements.closed.iter().map(|statement| ("closed", statement));
            for (status, statement) in statements.chain(closed) {
                sqlx::query(
                    "INSERT INTO statements (customer_id, period_start, period_end, status, total, currency, document) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (customer_id, period_start) DO UPDATE SET \
                     period_end = excluded.period_end, status = excluded.status, total = excluded.total, \
                     currency = excluded.currency, document = excluded.document",
                )
                .bind(customer)
                .bind(statement.period.start.0)
                .bind(statement.period.end.0)
                .bind(status)
                .bind(statement.total.to_string())
                .bind(statement.currency.code())
                .bind(serde_json::to_string(statement)?)
                .execute(&mut *tx)
                .await?;
            }
            for invoice in &data.invoices {
                let document = InvoiceDocument::parse(invoice.document.as_bytes())
                    .with_context(|| format!("invoice {} from the ledger does not parse", invoice.number))?;
                // Issued invoices are immutable: a second write of the same number changes nothing.
                sqlx::query(
                    "INSERT INTO invoices (number, customer_id, issuer, sequence, period_start, period_end, issued_at, \
                     total, currency, tx_id, ledger_index, document, replaces) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (number) DO NOTHING",
                )
                .bind(invoice.number.as_str())
                .bind(customer)
                .bind(invoice.issuer.as_str())
                .bind(to_i64(invoice.sequence))
                .bind(document.period.start.0)
                .bind(document.period.end.0)
                .bind(document.issued_at.as_str())
                .bind(document.total.to_string())
                .bind(document.currency.code())
                .bind(invoice.tx_id.as_str())
                .bind(to_i64(invoice.ledger_index))
                .bind(invoice.document.as_str())
                .bind(document.replaces.as_deref())
                .execute(&mut *tx)
                .await?;
            }
            for note in &data.credit_notes {
                let document = CreditNoteDocument::parse(note.document.as_bytes())
                    .with_context(|| format!("credit note {} from the ledger does not parse", note.number))?;
                let kind = serde_json::to_value(document.kind)?.as_str().unwrap_or_default().to_string();
                // Immutable like invoices.
                sqlx::query(
                    "INSERT INTO credit_notes (number, customer_id, issuer, sequence, invoice_number, kind, \
                     period_start, period_end, issued_at, total, currency, tx_id, ledger_index, document) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (number) DO NOTHING",
                )
                .bind(note.number.as_str())
                .bind(customer)
                .bind(note.issuer.as_str())
                .bind(to_i64(note.sequence))
                .bind(document.invoice.as_str())
                .bind(kind)
                .bind(document.period.start.0)
                .bind(document.period.end.0)
                .bind(document.issued_at.as_str())
                .bind(document.total.to_string())
                .bind(document.currency.code())
                .bind(note.tx_id.as_str())
                .bind(to_i64(note.ledger_index))
                .bind(note.document.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("UPDATE feed_position SET ledger_index = $1, as_of_ms = $2 WHERE id = 1")
            .bind(to_i64(position.ledger_index))
            .bind(position.as_of_ms)
            .execute(&mut *tx)
            .await?;
        if let Some(anchor) = anchor {
            sqlx::query(
                "UPDATE feed_position SET anchor_tx_id = $1, anchor_index = $2, anchor_time_ms = $3 WHERE id = 1",
            )
            .bind(anchor.tx_id.as_str())
            .bind(to_i64(anchor.index))
            .bind(anchor.time_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE feed_position SET first_tx_id = $1, first_index = $2, first_time_ms = $3 \
                 WHERE id = 1 AND first_tx_id IS NULL",
            )
            .bind(anchor.tx_id.as_str())
            .bind(to_i64(anchor.index))
            .bind(anchor.time_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A customer's account, if the model knows the customer.
    pub async fn account(&self, customer: &str) -> anyhow::Result<Option<CustomerAccount>> {
        let row = sqlx::query(
            "SELECT currency, energy_import_wh, energy_export_wh, amount, intervals_settled, ledger_index \
             FROM accounts WHERE customer_id = $1",
        )
        .bind(customer)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(CustomerAccount {
            customer_id: domain::ids::CustomerId::new(customer)?,
            currency: domain::money::Currency::new(&row.try_get::<String, _>(0)?)?,
            energy_import_wh: row.try_get::<i64, _>(1)?.max(0) as u64,
            energy_export_wh: row.try_get::<i64, _>(2)?.max(0) as u64,
            amount: Decimal::from_str(&row.try_get::<String, _>(3)?)?,
            intervals_settled: row.try_get::<i64, _>(4)?.max(0) as u64,
            as_of_ms: 0,
            applied_index: row.try_get::<i64, _>(5)?.max(0) as u64,
        }))
    }

    /// The customer's latest open statement (the running bill), if any.
    pub async fn open_statement(&self, customer: &str) -> anyhow::Result<Option<Statement>> {
        let row = sqlx::query(
            "SELECT document FROM statements WHERE customer_id = $1 AND status = 'open' \
             ORDER BY period_start DESC LIMIT 1",
        )
        .bind(customer)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok(serde_json::from_str::<Statement>(&row.try_get::<String, _>(0)?)?)).transpose()
    }

    /// The customer's intervals with `from <= start < to`, in start order, at most `limit`.
    pub async fn intervals(&self, customer: &str, from: i64, to: i64, limit: u64) -> anyhow::Result<Vec<IntervalRow>> {
        let rows = sqlx::query(&format!(
            "{INTERVAL_SELECT} WHERE customer_id = $1 AND start_s >= $2 AND start_s < $3 ORDER BY start_s LIMIT $4"
        ))
        .bind(customer)
        .bind(from)
        .bind(to)
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(interval_row).collect()
    }

    /// The customer's intervals the model wrote after ledger position `after`, in start order, at
    /// most `limit` (a live stream resumed from `after`).
    pub async fn intervals_changed(&self, customer: &str, after: u64, limit: u64) -> anyhow::Result<Vec<IntervalRow>> {
        let rows = sqlx::query(&format!(
            "{INTERVAL_SELECT} WHERE customer_id = $1 AND ledger_index > $2 ORDER BY start_s LIMIT $3"
        ))
        .bind(customer)
        .bind(to_i64(after))
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(interval_row).collect()
    }

    /// The customer's invoices, oldest period first.
    pub async fn invoices_of(&self, customer: &str) -> anyhow::Result<Vec<InvoiceRow>> {
        let rows = sqlx::query(&format!("{INVOICE_SELECT} WHERE customer_id = $1 ORDER BY period_start, sequence"))
            .bind(customer)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(invoice_row).collect()
    }

    /// One invoice by number.
    pub async fn invoice(&self, number: &str) -> anyhow::Result<Option<InvoiceRow>> {
        let row =
            sqlx::query(&format!("{INVOICE_SELECT} WHERE number = $1")).bind(number).fetch_optional(&self.pool).await?;
        row.as_ref().map(invoice_row).transpose()
    }

    /// The customer's credit notes, in the order the ledger issued them.
    pub async fn credit_notes_of(&self, customer: &str) -> anyhow::Result<Vec<InvoiceRow>> {
        let rows = sqlx::query(&format!("{CREDIT_NOTE_SELECT} WHERE customer_id = $1 ORDER BY ledger_index"))
            .bind(customer)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(invoice_row).collect()
    }

    /// One credit note by number.
    pub async fn credit_note(&self, number: &str) -> anyhow::Result<Option<InvoiceRow>> {
        let row = sqlx::query(&format!("{CREDIT_NOTE_SELECT} WHERE number = $1"))
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(invoice_row).transpose()
    }
}

const INVOICE_SELECT: &str = "SELECT number, customer_id, period_start, period_end, issued_at, total, currency, \
                              tx_id, ledger_index, document FROM invoices";
/// A credit note is read as an [`InvoiceRow`]: the same columns.
const CREDIT_NOTE_SELECT: &str = "SELECT number, customer_id, period_start, period_end, issued_at, total, currency, \
                                  tx_id, ledger_index, document FROM credit_notes";

/// The columns [`interval_row`] reads.
const INTERVAL_SELECT: &str = "SELECT start_s, local_start, import_wh, export_wh, quality, complete, charge, \
    energy_window, energy_price, ledger_index FROM intervals";

fn interval_row(row: &AnyRow) -> anyhow::Result<IntervalRow> {
    Ok(IntervalRow {
        start_s: row.try_get(0)?,
        local_start: row.try_get(1)?,
        import_wh: row.try_get::<i64, _>(2)?.max(0) as u64,
        export_wh: row.try_get::<i64, _>(3)?.max(0) as u64,
        quality: row.try_get(4)?,
        complete: row.try_get::<i64, _>(5)? != 0,
        charge: Decimal::from_str(&row.try_get::<String, _>(6)?)?,
        energy_window: row.try_get(7)?,
        energy_price: row.try_get::<Option<String>, _>(8)?.map(|price| Decimal::from_str(&price)).transpose()?,
        ledger_index: row.try_get::<i64, _>(9)?.max(0) as u64,
    })
}

/// The window and unit price of an interval's imported energy: its energy line (an interval is
/// priced by one window; `None` if it has no energy line).
fn energy_price(lines: &[domain::tariff::Line]) -> Option<(&str, Decimal)> {
    lines.iter().find_map(|line| match &line.component {
        domain::tariff::Component::Energy { window } => Some((window.as_str(), line.unit_price)),
        _ => None,
    })
}

fn invoice_row(row: &AnyRow) -> anyhow::Result<InvoiceRow> {
    Ok(InvoiceRow {
        number: row.try_get(0)?,
        customer_id: row.try_get(1)?,
        period_start: row.try_get(2)?,
        period_end: row.try_get(3)?,
        issued_at: row.try_get(4)?,
        total: row.try_get(5)?,
        currency: row.try_get(6)?,
        tx_id: row.try_get(7)?,
        ledger_index: row.try_get::<i64, _>(8)?.max(0) as u64,
        document: row.try_get(9)?,
    })
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact("postgres://billing:s3cret@127.0.0.1:5432/db"),
            "postgres://billing:***@127.0.0.1:5432/db"
        );
        assert_eq!(super::redact("sqlite://billing.sqlite?mode=rwc"), "sqlite://billing.sqlite?mode=rwc");
    }
}
