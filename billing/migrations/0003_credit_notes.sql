-- Credit notes (issue 16): an issued invoice never changes; the ledger corrects it by credit notes
-- (part of its lines, or all of it: a void), numbered per issuer like invoices, each with a receipt
-- binding its document. A void may ask for a reissue: the replacement invoice names the invoice
-- it replaces. Invoices issued before this migration replace nothing, and no credit note existed,
-- so nothing is rebuilt.
CREATE TABLE credit_notes (
    number TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    invoice_number TEXT NOT NULL,
    kind TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end BIGINT NOT NULL,
    issued_at TEXT NOT NULL,
    total TEXT NOT NULL,
    currency TEXT NOT NULL,
    tx_id TEXT NOT NULL,
    ledger_index BIGINT NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX credit_notes_by_customer ON credit_notes (customer_id, ledger_index);
CREATE INDEX credit_notes_by_invoice ON credit_notes (invoice_number);
ALTER TABLE invoices ADD COLUMN replaces TEXT;
