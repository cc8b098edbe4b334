-- Billing's read model (docs/billing.md, "Tables"): what the ledger settled, per customer, fed
-- by the ledger's committed stream (GET /v1/changes). Portable SQL: the same file runs on SQLite
-- and PostgreSQL. Money is TEXT holding an exact decimal (never a float); times are UTC seconds
-- or milliseconds since 1970 in BIGINT columns; JSON documents are TEXT, exactly as the ledger
-- gave them.

-- The ledger position the model reflects: one row. The anchors are the first and the last change
-- the model took (index, transaction id and leader time): a ledger that does not hold them there
-- is another ledger (or one that lost its history), and the model is rebuilt from it.
CREATE TABLE feed_position (
    id INTEGER PRIMARY KEY,
    ledger_index BIGINT NOT NULL,
    as_of_ms BIGINT NOT NULL,
    first_tx_id TEXT,
    first_index BIGINT,
    first_time_ms BIGINT,
    anchor_tx_id TEXT,
    anchor_index BIGINT,
    anchor_time_ms BIGINT
);
INSERT INTO feed_position (id, ledger_index, as_of_ms) VALUES (1, 0, 0);

-- A customer's account on the ledger: all-time interval charges (full precision).
CREATE TABLE accounts (
    customer_id TEXT PRIMARY KEY,
    currency TEXT NOT NULL,
    energy_import_wh BIGINT NOT NULL,
    energy_export_wh BIGINT NOT NULL,
    amount TEXT NOT NULL,
    intervals_settled BIGINT NOT NULL,
    ledger_index BIGINT NOT NULL
);

-- Usage and cost per settled 15-minute interval.
CREATE TABLE intervals (
    customer_id TEXT NOT NULL,
    start_s BIGINT NOT NULL,
    local_start TEXT NOT NULL,
    import_wh BIGINT NOT NULL,
    export_wh BIGINT NOT NULL,
    quality TEXT NOT NULL,
    complete BIGINT NOT NULL,
    tariff TEXT NOT NULL,
    charge TEXT NOT NULL,
    lines_json TEXT NOT NULL,
    meters TEXT NOT NULL,
    PRIMARY KEY (customer_id, start_s)
);

-- Statements: the open period as its close would state it now, and the closed ones.
CREATE TABLE statements (
    customer_id TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end BIGINT NOT NULL,
    status TEXT NOT NULL,
    total TEXT NOT NULL,
    currency TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (customer_id, period_start)
);

-- Issued invoices: the document exactly as the ledger's claims digest covers it.
CREATE TABLE invoices (
    number TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end BIGINT NOT NULL,
    issued_at TEXT NOT NULL,
    total TEXT NOT NULL,
    currency TEXT NOT NULL,
    tx_id TEXT NOT NULL,
    ledger_index BIGINT NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX invoices_by_customer ON invoices (customer_id, period_start);
