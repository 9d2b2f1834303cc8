-- Amounts are integers, never floats: SQLite would store an integer that overflowed 2^63-1 as a
-- REAL and carry on. These triggers refuse any amount whose type is not integer (the effect of a
-- CHECK (typeof(amount) = 'integer'), which SQLite cannot add to an existing table), so such a
-- write fails and its transaction rolls back. PostgreSQL's BIGINT columns already refuse it.

CREATE TRIGGER balances_amount_integer_on_insert BEFORE INSERT ON balances
WHEN typeof(NEW.amount) != 'integer'
BEGIN SELECT RAISE(ABORT, 'balances.amount must be an integer number of base units'); END;
CREATE TRIGGER balances_amount_integer_on_update BEFORE UPDATE ON balances
WHEN typeof(NEW.amount) != 'integer'
BEGIN SELECT RAISE(ABORT, 'balances.amount must be an integer number of base units'); END;

CREATE TRIGGER ledger_entries_amount_integer_on_insert BEFORE INSERT ON ledger_entries
WHEN typeof(NEW.amount) != 'integer'
BEGIN SELECT RAISE(ABORT, 'ledger_entries.amount must be an integer number of base units'); END;
CREATE TRIGGER ledger_entries_amount_integer_on_update BEFORE UPDATE ON ledger_entries
WHEN typeof(NEW.amount) != 'integer'
BEGIN SELECT RAISE(ABORT, 'ledger_entries.amount must be an integer number of base units'); END;

CREATE TRIGGER stakes_amount_integer_on_insert BEFORE INSERT ON stakes
WHEN typeof(NEW.amount) != 'integer'
BEGIN SELECT RAISE(ABORT, 'stakes.amount must be an integer number of base units'); END;
CREATE TRIGGER stakes_amount_integer_on_update BEFORE UPDATE ON stakes
WHEN typeof(NEW.amount) != 'integer'
BEGIN SELECT RAISE(ABORT, 'stakes.amount must be an integer number of base units'); END;

CREATE TRIGGER stakes_payout_integer_on_insert BEFORE INSERT ON stakes
WHEN typeof(NEW.payout) != 'integer' AND NEW.payout IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'stakes.payout must be an integer number of base units'); END;
CREATE TRIGGER stakes_payout_integer_on_update BEFORE UPDATE ON stakes
WHEN typeof(NEW.payout) != 'integer' AND NEW.payout IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'stakes.payout must be an integer number of base units'); END;

CREATE TRIGGER deposits_amount_integer_on_insert BEFORE INSERT ON deposits
WHEN typeof(NEW.amount) != 'integer'
BEGIN SELECT RAISE(ABORT, 'deposits.amount must be an integer number of base units'); END;
CREATE TRIGGER deposits_amount_integer_on_update BEFORE UPDATE ON deposits
WHEN typeof(NEW.amount) != 'integer'
BEGIN SELECT RAISE(ABORT, 'deposits.amount must be an integer number of base units'); END;

CREATE TRIGGER withdrawals_amount_integer_on_insert BEFORE INSERT ON withdrawals
WHEN typeof(NEW.amount) != 'integer'
BEGIN SELECT RAISE(ABORT, 'withdrawals.amount must be an integer number of base units'); END;
CREATE TRIGGER withdrawals_amount_integer_on_update BEFORE UPDATE ON withdrawals
WHEN typeof(NEW.amount) != 'integer'
BEGIN SELECT RAISE(ABORT, 'withdrawals.amount must be an integer number of base units'); END;
