-- Amounts are integers, never floats. PostgreSQL's BIGINT amount columns already refuse anything
-- else (an overflow is an error, not a float); the SQLite tree adds triggers for the same rule.
SELECT 1;
