-- The payments service's ledger lives in a database of its own, never glassbox's
-- (docs/payments.md). Run once, when the postgres volume is first initialised.
CREATE DATABASE payments OWNER glassbox;
